"""Vouchers in the pure core: the ledger's voucher legs (issue, hold vouchers first, refund,
expire) and the market's split of a refund between vouchers and the wallet; a PREEMPTED task is
charged what ran."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from suanli import ledger, market
from suanli.errors import InvalidValue

RULES = market.PricingRules()


def breakdown(total_compute: int = 1000) -> market.PriceBreakdown:
    return market.price(
        total_compute,
        1,
        3600.0,
        tou=Decimal(1),
        utilisation=Decimal(0),
        preemptible=False,
        data_gb=0.0,
        rules=RULES,
    )


def test_a_voucher_is_issued_from_the_issuer_and_expires_back() -> None:
    issued = ledger.issue_voucher("t1", "v1", 500)
    spent = ledger.hold("t2", "c1", 800, [("v1", 300)])
    expired = ledger.expire_voucher("t3", "v1", 200)
    balances = ledger.balances([issued, spent, expired])
    assert balances == {
        "escrow:c1": 800,
        "voucher:v1": 0,
        "vouchers:issued": -300,
        "wallet:c1": -500,
    }
    ledger.check_conservation(balances)
    assert ledger.never_negative("voucher:v1")
    assert not ledger.never_negative(ledger.VOUCHERS_ISSUED)


def test_a_hold_cannot_draw_more_from_vouchers_than_it_holds() -> None:
    with pytest.raises(InvalidValue, match="vouchers"):
        ledger.hold("t", "c1", 100, [("v1", 60), ("v2", 50)])
    with pytest.raises(InvalidValue):
        ledger.hold("t", "c1", 100, [("v1", 0)])
    whole = ledger.hold("t", "c1", 100, [("v1", 60), ("v2", 40)])
    assert ("wallet:c1", 0) not in [(p.account, p.amount_fen) for p in whole.postings]


def test_a_charge_is_paid_from_the_vouchers_first() -> None:
    drawn = [("a", 60), ("b", 30)]
    assert market.voucher_refunds(70, drawn) == [("b", 20)]
    assert market.voucher_refunds(0, drawn) == [("a", 60), ("b", 30)]
    assert market.voucher_refunds(90, drawn) == []
    assert market.voucher_refunds(120, drawn) == []
    assert market.voucher_refunds(10, []) == []


@given(
    charge=st.integers(0, 2_000),
    parts=st.lists(st.integers(1, 500), max_size=4),
    wallet=st.integers(0, 500),
)
def test_the_settlement_with_vouchers_conserves_money(
    charge: int, parts: list[int], wallet: int
) -> None:
    drawn = [(f"v{i}", fen) for i, fen in enumerate(parts)]
    escrow = sum(parts) + wallet
    if escrow == 0:
        return
    charged = min(charge, escrow)
    settlement = market.Settlement(
        charge_fen=charged,
        provider_fen=charged,
        platform_fen=0,
        network_fen=0,
        sla_credit_fen=0,
        refund_fen=escrow - charged,
        escrow_fen=escrow,
    )
    back = market.voucher_refunds(charged, drawn)
    assert sum(fen for _, fen in back) <= settlement.refund_fen
    hold = ledger.hold("h", "c", escrow, drawn)
    settle = ledger.settle(
        "s", "c", "p", settlement, [(ledger.voucher(ident), fen) for ident, fen in back]
    )
    balances = ledger.balances([hold, settle])
    ledger.check_conservation(balances)
    assert balances.get("escrow:c", 0) == 0
    # the wallet lost only what the vouchers did not pay of the charge
    assert balances.get("wallet:c", 0) == -max(0, charged - sum(parts))
    for ident, fen in drawn:
        assert balances.get(ledger.voucher(ident), 0) <= 0
        assert balances.get(ledger.voucher(ident), 0) >= -fen


def test_a_refund_to_vouchers_cannot_exceed_the_refund() -> None:
    settlement = market.settle(
        1100, breakdown(), 3600.0, 3600.0, market.Outcome.COMPLETE, False, RULES
    )
    assert settlement.refund_fen == 0
    with pytest.raises(InvalidValue, match="refunds"):
        ledger.settle("s", "c", "p", settlement, [("voucher:v1", 1)])


def test_a_preempted_task_is_charged_for_what_ran() -> None:
    price = breakdown()
    assert price.total_fen == 1100  # 1000 compute + 10% fee
    quarter = market.settle(price.total_fen, price, 3600.0, 900.0, "PREEMPTED", False, RULES)
    assert quarter.charge_fen == 275 and quarter.refund_fen == 825
    assert quarter.provider_fen + quarter.platform_fen + quarter.network_fen == 275
    canceled = market.settle(price.total_fen, price, 3600.0, 900.0, "CANCELED", False, RULES)
    assert canceled == quarter
