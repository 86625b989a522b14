"""Account names and the builders of the platform's transactions (see `suanli.ledger`).

Each builder returns a balanced `Transaction`; none reads a balance, so the caller keeps the
documented preconditions (hold at most the wallet, pay out at most the receivable, settle an
escrow that was held). Zero legs are left out, so every posting is non-zero. `never_negative`
names the accounts that must never go below zero (wallets, escrow, receivables, vouchers); the
services refuse a transaction that would, and the audit replays the ledger to prove none ever did.

Compute vouchers (算力券): `voucher(id)` = 'voucher:<id>' holds what is left of one voucher
(never negative); `VOUCHERS_ISSUED` = 'vouchers:issued' is the issuer's side, like `EXTERNAL`:
issuing moves the face value from it to the voucher (so it goes negative by what is out), an
expiry returns what is left to it, and `-balance(VOUCHERS_ISSUED)` is what the issuer has
funded: the vouchers' balances plus what they paid for (in escrow or already settled).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from suanli.errors import InvalidValue
from suanli.ledger.book import Posting, Transaction
from suanli.ledger.book import fen as fen_amount

PLATFORM_REVENUE = "platform:revenue"
NETWORK_OPERATOR = "network:operator"
SLA_CREDITS = "platform:sla-credits"
EXTERNAL = "external:bank"
VOUCHERS_ISSUED = "vouchers:issued"


def _party(field: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidValue(field, value, "a non-empty id", "非空 id")
    return value


def wallet(consumer_id: str) -> str:
    """The consumer's spendable money on the platform: 'wallet:<consumer_id>'."""
    return f"wallet:{_party('consumer_id', consumer_id)}"


def escrow(consumer_id: str) -> str:
    """The consumer's money held for accepted orders: 'escrow:<consumer_id>'."""
    return f"escrow:{_party('consumer_id', consumer_id)}"


def receivable(provider_id: str) -> str:
    """What the platform owes the provider until paid out: 'receivable:<provider_id>'."""
    return f"receivable:{_party('provider_id', provider_id)}"


def voucher(voucher_id: str) -> str:
    """What is left of one compute voucher: 'voucher:<voucher_id>'."""
    return f"voucher:{_party('voucher_id', voucher_id)}"


# party accounts and vouchers; see `never_negative`
NEVER_NEGATIVE = ("wallet:", "escrow:", "receivable:", "voucher:")


def never_negative(account: str) -> bool:
    """True for the accounts whose balance may never drop below zero: wallets, escrow,
    receivables (money a party owns or is owed) and vouchers. The platform's, the network
    operator's, the SLA clearing, the external and the voucher issuer's (`VOUCHERS_ISSUED`)
    accounts are whatever the double entry makes them."""
    return account.startswith(NEVER_NEGATIVE)


def _transaction(tx_id: str, kind: str, legs: list[tuple[str, int]], memo: str) -> Transaction:
    postings = tuple(Posting(account, amount) for account, amount in legs if amount != 0)
    return Transaction(id=tx_id, kind=kind, postings=postings, memo=memo)


def top_up(tx_id: str, consumer_id: str, fen: int) -> Transaction:
    """Money in from the bank: EXTERNAL -fen, wallet +fen."""
    amount = fen_amount("fen", fen, positive=True)
    return _transaction(
        tx_id, "top-up", [(EXTERNAL, -amount), (wallet(consumer_id), amount)], "top-up"
    )


def payout(tx_id: str, provider_id: str, fen: int) -> Transaction:
    """Money out to the provider's bank: receivable -fen, EXTERNAL +fen (at most the
    receivable's balance: the caller checks)."""
    amount = fen_amount("fen", fen, positive=True)
    return _transaction(
        tx_id, "payout", [(receivable(provider_id), -amount), (EXTERNAL, amount)], "payout"
    )


def _parts(field: str, parts: Sequence[tuple[str, int]], bound: int) -> list[tuple[str, int]]:
    """(account, fen) parts, each > 0, summing to at most `bound`."""
    checked = [(_party(field, a), fen_amount(field, f, positive=True)) for a, f in parts]
    total = sum(f for _, f in checked)
    if total > bound:
        raise InvalidValue(field, total, f"at most {bound} fen in all", f"合计不超过 {bound} 分")
    return checked


def hold(
    tx_id: str, consumer_id: str, fen: int, vouchers: Sequence[tuple[str, int]] = ()
) -> Transaction:
    """Reserve an order's maximum price: escrow +fen, funded by `vouchers` first ((voucher id,
    fen) pairs: voucher:<id> -fen each) and the wallet for the rest (wallet -rest); at most the
    balances (the caller checks)."""
    amount = fen_amount("fen", fen, positive=True)
    drawn = _parts("vouchers", vouchers, amount)
    rest = amount - sum(f for _, f in drawn)
    legs = [(voucher(ident), -part) for ident, part in drawn]
    legs += [(wallet(consumer_id), -rest), (escrow(consumer_id), amount)]
    memo = "hold" if not drawn else f"hold ({amount - rest} fen from vouchers)"
    return _transaction(tx_id, "hold", legs, memo)


def issue_voucher(tx_id: str, voucher_id: str, fen: int) -> Transaction:
    """A voucher issued: VOUCHERS_ISSUED -fen, voucher +fen."""
    amount = fen_amount("fen", fen, positive=True)
    legs = [(VOUCHERS_ISSUED, -amount), (voucher(voucher_id), amount)]
    return _transaction(tx_id, "voucher-issue", legs, "voucher issued")


def expire_voucher(tx_id: str, voucher_id: str, fen: int) -> Transaction:
    """What is left of an expired voucher returns to the issuer: voucher -fen,
    VOUCHERS_ISSUED +fen."""
    amount = fen_amount("fen", fen, positive=True)
    legs = [(voucher(voucher_id), -amount), (VOUCHERS_ISSUED, amount)]
    return _transaction(tx_id, "voucher-expire", legs, "voucher expired")


@runtime_checkable
class Settlement(Protocol):
    """How an order's escrow is divided (`market.Settlement` is one; the ledger imports nothing
    from the market): the shares in fen, which sum to the escrow."""

    @property
    def charge_fen(self) -> int: ...
    @property
    def provider_fen(self) -> int: ...
    @property
    def platform_fen(self) -> int: ...
    @property
    def network_fen(self) -> int: ...
    @property
    def sla_credit_fen(self) -> int: ...
    @property
    def refund_fen(self) -> int: ...
    @property
    def escrow_fen(self) -> int: ...


def settle(
    tx_id: str,
    consumer_id: str,
    provider_id: str,
    settlement: Settlement,
    refunds: Sequence[tuple[str, int]] = (),
) -> Transaction:
    """Empty the order's escrow (`settlement.escrow_fen`, held earlier by `hold`):

    escrow -escrow; receivable +provider; PLATFORM_REVENUE +platform; NETWORK_OPERATOR +network;
    the refund to `refunds` ((account, fen): a voucher's part back to voucher:<id>, or to
    VOUCHERS_ISSUED when it expired) and the rest of it to the wallet; then the SLA credit
    passes from the provider to the consumer through SLA_CREDITS: receivable -credit,
    SLA_CREDITS +credit, SLA_CREDITS -credit, wallet +credit. SLA_CREDITS therefore always
    balances to 0 and its positive postings total the credits paid.
    """
    if not isinstance(settlement, Settlement):
        raise InvalidValue("settlement", settlement, "a market.Settlement", "market.Settlement")
    fen_amount("settlement.escrow_fen", settlement.escrow_fen, positive=True)
    back = _parts("refunds", refunds, settlement.refund_fen)
    credit = settlement.sla_credit_fen
    legs = [
        (escrow(consumer_id), -settlement.escrow_fen),
        (receivable(provider_id), settlement.provider_fen),
        (PLATFORM_REVENUE, settlement.platform_fen),
        (NETWORK_OPERATOR, settlement.network_fen),
        *back,
        (wallet(consumer_id), settlement.refund_fen - sum(f for _, f in back)),
        (receivable(provider_id), -credit),
        (SLA_CREDITS, credit),
        (SLA_CREDITS, -credit),
        (wallet(consumer_id), credit),
    ]
    return _transaction(tx_id, "settle", legs, f"charge {settlement.charge_fen} fen")
