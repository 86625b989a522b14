"""Double-entry ledger: refusals, hand-computed settlements, and conservation of money."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from suanli.errors import InvalidValue
from suanli.ledger import (
    EXTERNAL,
    NETWORK_OPERATOR,
    PLATFORM_REVENUE,
    SLA_CREDITS,
    MoneyNotConserved,
    Posting,
    Transaction,
    UnbalancedTransaction,
    balances,
    check_conservation,
    escrow,
    hold,
    payout,
    receivable,
    settle,
    top_up,
    wallet,
)
from suanli.market import Outcome, PriceBreakdown, PricingRules, Settlement, price
from suanli.market import settle as settle_order

# --- postings and transactions refuse what is not exact and balanced ----------------------------


@pytest.mark.parametrize("amount", [1.0, 0.5, True, False, Decimal(1), "1", None])
def test_posting_refuses_non_int_amounts(amount: object) -> None:
    with pytest.raises(InvalidValue) as caught:
        Posting("wallet:c1", amount)  # type: ignore[arg-type]
    assert caught.value.field == "amount_fen"


def test_posting_refuses_an_empty_account() -> None:
    with pytest.raises(InvalidValue):
        Posting("", 1)


def test_unbalanced_transaction_names_the_sum_and_the_id() -> None:
    with pytest.raises(UnbalancedTransaction) as caught:
        Transaction("tx-7", "top-up", (Posting("a", 100), Posting("b", -99)))
    assert (caught.value.tx_id, caught.value.sum_fen) == ("tx-7", 1)
    assert "tx-7" in caught.value.one_line() and "1 fen" in caught.value.message_en


@pytest.mark.parametrize(
    "postings",
    [
        (),
        (Posting("a", 0),),
        (Posting("a", 5), Posting("b", 0), Posting("c", -5)),
        (Posting("a", 5, "CNY"), Posting("b", -5, "USD")),
    ],
    ids=["empty", "zero", "zero-leg", "mixed-currency"],
)
def test_transaction_refuses(postings: tuple[Posting, ...]) -> None:
    with pytest.raises(UnbalancedTransaction):
        Transaction("tx", "kind", postings)


def test_transaction_is_frozen_and_keeps_a_tuple() -> None:
    tx = Transaction("tx", "k", [Posting("a", 5), Posting("b", -5)])  # type: ignore[arg-type]
    assert isinstance(tx.postings, tuple)
    with pytest.raises(AttributeError):
        tx.id = "other"  # type: ignore[misc]


def test_check_conservation() -> None:
    check_conservation({"a": 5, "b": -5})
    with pytest.raises(MoneyNotConserved) as caught:
        check_conservation({"a": 5, "b": -4})
    assert caught.value.sum_fen == 1


# --- builders, hand-computed ----------------------------------------------------------------------


@pytest.mark.parametrize("amount", [0, -1, 1.5, True])
def test_builders_refuse_non_positive_or_non_int(amount: object) -> None:
    for build, party in ((top_up, "c1"), (hold, "c1"), (payout, "p1")):
        with pytest.raises(InvalidValue):
            build("tx", party, amount)  # type: ignore[operator]


def test_account_names() -> None:
    assert (wallet("c1"), escrow("c1"), receivable("p1")) == (
        "wallet:c1",
        "escrow:c1",
        "receivable:p1",
    )
    with pytest.raises(InvalidValue):
        wallet("")


def test_an_order_from_top_up_to_payout() -> None:
    # Quote: 8 x 1500 fen/h x 2 h, tou 1.7, utilisation 0.9, 10 GB at 50 fen/GB
    # -> provider 44880, fee 4488, network 500, total 49868 (see tests/unit/market).
    rules = PricingRules(network_fen_per_gb=50)
    quote = price(
        1500,
        8,
        7200,
        tou=Decimal("1.7"),
        utilisation=Decimal("0.9"),
        preemptible=False,
        data_gb=10,
        rules=rules,
    )
    assert quote.total_fen == 49868
    # Half ran, then canceled, deadline missed: charge 24934 = 22440 + 2244 + 250,
    # refund 25066, SLA credit 2493 from the provider to the consumer.
    result = settle_order(50000, quote, 57600, 28800, Outcome.CANCELED, True, rules)
    book = [
        top_up("t1", "c1", 60000),
        hold("t2", "c1", 50000),
        settle("t3", "c1", "p1", result),
        payout("t4", "p1", 10000),
    ]
    assert balances(book) == {
        EXTERNAL: -60000 + 10000,
        NETWORK_OPERATOR: 250,
        PLATFORM_REVENUE: 2244,
        SLA_CREDITS: 0,
        escrow("c1"): 0,
        receivable("p1"): 22440 - 2493 - 10000,
        wallet("c1"): 10000 + 25066 + 2493,
    }
    check_conservation(balances(book))
    assert [tx.kind for tx in book] == ["top-up", "hold", "settle", "payout"]


def test_settle_leaves_out_zero_legs_and_refuses_an_empty_escrow() -> None:
    refund_only = Settlement(0, 0, 0, 0, 0, 300, 300)
    tx = settle("t", "c1", "p1", refund_only)
    assert [(p.account, p.amount_fen) for p in tx.postings] == [
        ("escrow:c1", -300),
        ("wallet:c1", 300),
    ]
    with pytest.raises(InvalidValue):
        settle("t", "c1", "p1", Settlement(0, 0, 0, 0, 0, 0, 0))


def test_balances_refuse_non_cny() -> None:
    usd = Transaction("t", "k", (Posting("a", 1, "USD"), Posting("b", -1, "USD")))
    with pytest.raises(InvalidValue):
        balances([usd])


# --- property: a random history conserves money ---------------------------------------------------

CONSUMERS = ("c1", "c2", "c3")
PROVIDERS = ("p1", "p2")
RULES = PricingRules(network_fen_per_gb=30, platform_fee_bp=1200, sla_credit_bp=2500)


def _breakdown(draw: st.DrawFn) -> PriceBreakdown:
    return price(
        draw(st.integers(0, 5000)),
        draw(st.integers(1, 16)),
        draw(st.floats(0, 36000, allow_nan=False)),
        tou=draw(st.decimals("0.3", "2.5", places=2)),
        utilisation=draw(st.decimals(0, 1, places=2)),
        preemptible=draw(st.booleans()),
        data_gb=draw(st.floats(0, 500, allow_nan=False)),
        rules=RULES,
    )


@settings(max_examples=150)
@given(data=st.data())
def test_random_history_conserves_money(data: st.DataObject) -> None:
    book: list[Transaction] = []
    open_orders: list[tuple[str, int, PriceBreakdown]] = []  # (consumer, escrow, quote)
    topped_up = paid_out = 0
    for step in range(data.draw(st.integers(1, 40))):
        now = balances(book)
        op = data.draw(st.sampled_from(("top-up", "order", "settle", "payout")))
        tx_id = f"tx-{step}"
        if op == "top-up":
            amount = data.draw(st.integers(1, 10**6))
            book.append(top_up(tx_id, data.draw(st.sampled_from(CONSUMERS)), amount))
            topped_up += amount
        elif op == "order":
            consumer = data.draw(st.sampled_from(CONSUMERS))
            quote = data.draw(st.composite(lambda draw: _breakdown(draw))())
            if 0 < quote.total_fen <= now.get(wallet(consumer), 0):  # hold only what is there
                book.append(hold(tx_id, consumer, quote.total_fen))
                open_orders.append((consumer, quote.total_fen, quote))
        elif op == "settle" and open_orders:
            consumer, held, quote = open_orders.pop(data.draw(st.integers(0, len(open_orders) - 1)))
            result = settle_order(
                held,
                quote,
                data.draw(st.floats(1, 1e6, allow_nan=False)),
                data.draw(st.floats(0, 2e6, allow_nan=False)),
                data.draw(st.sampled_from(Outcome)),
                data.draw(st.booleans()),
                RULES,
            )
            book.append(settle(tx_id, consumer, data.draw(st.sampled_from(PROVIDERS)), result))
        elif op == "payout":
            provider = data.draw(st.sampled_from(PROVIDERS))
            owed = now.get(receivable(provider), 0)
            if owed > 0:  # pay out at most what is owed
                amount = data.draw(st.integers(1, owed))
                book.append(payout(tx_id, provider, amount))
                paid_out += amount

        if book and book[-1].id == tx_id:
            event(f"posted {book[-1].kind}")
        after = balances(book)
        check_conservation(after)
        others = sum(v for account, v in after.items() if account != EXTERNAL)
        assert -after.get(EXTERNAL, 0) == topped_up - paid_out == others
        assert all(v >= 0 for account, v in after.items() if account != EXTERNAL)
        assert after.get(SLA_CREDITS, 0) == 0
        held_now = sum(held for consumer, held, _ in open_orders)
        assert sum(v for a, v in after.items() if a.startswith("escrow:")) == held_now
