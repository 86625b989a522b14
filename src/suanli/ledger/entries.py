"""Account names and the builders of the platform's transactions (see `suanli.ledger`).

Each builder returns a balanced `Transaction`; none reads a balance, so the caller keeps the
documented preconditions (hold at most the wallet, pay out at most the receivable, settle an
escrow that was held). Zero legs are left out, so every posting is non-zero. `never_negative`
names the accounts that must never go below zero (wallets, escrow, receivables); the services
refuse a transaction that would, and the audit replays the ledger to prove none ever did.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from suanli.errors import InvalidValue
from suanli.ledger.book import Posting, Transaction
from suanli.ledger.book import fen as fen_amount

PLATFORM_REVENUE = "platform:revenue"
NETWORK_OPERATOR = "network:operator"
SLA_CREDITS = "platform:sla-credits"
EXTERNAL = "external:bank"


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


NEVER_NEGATIVE = ("wallet:", "escrow:", "receivable:")  # party accounts; see `never_negative`


def never_negative(account: str) -> bool:
    """True for the accounts whose balance may never drop below zero: wallets, escrow and
    receivables (money a party owns or is owed). The platform's, the network operator's, the SLA
    clearing and the external accounts are whatever the double entry makes them."""
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


def hold(tx_id: str, consumer_id: str, fen: int) -> Transaction:
    """Reserve an accepted order's price: wallet -fen, escrow +fen (at most the wallet's
    balance: the caller checks)."""
    amount = fen_amount("fen", fen, positive=True)
    return _transaction(
        tx_id, "hold", [(wallet(consumer_id), -amount), (escrow(consumer_id), amount)], "hold"
    )


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


def settle(tx_id: str, consumer_id: str, provider_id: str, settlement: Settlement) -> Transaction:
    """Empty the order's escrow (`settlement.escrow_fen`, held earlier by `hold`):

    escrow -escrow; receivable +provider; PLATFORM_REVENUE +platform; NETWORK_OPERATOR +network;
    wallet +refund; then the SLA credit passes from the provider to the consumer through
    SLA_CREDITS: receivable -credit, SLA_CREDITS +credit, SLA_CREDITS -credit, wallet +credit.
    SLA_CREDITS therefore always balances to 0 and its positive postings total the credits paid.
    """
    if not isinstance(settlement, Settlement):
        raise InvalidValue("settlement", settlement, "a market.Settlement", "market.Settlement")
    fen_amount("settlement.escrow_fen", settlement.escrow_fen, positive=True)
    credit = settlement.sla_credit_fen
    legs = [
        (escrow(consumer_id), -settlement.escrow_fen),
        (receivable(provider_id), settlement.provider_fen),
        (PLATFORM_REVENUE, settlement.platform_fen),
        (NETWORK_OPERATOR, settlement.network_fen),
        (wallet(consumer_id), settlement.refund_fen),
        (receivable(provider_id), -credit),
        (SLA_CREDITS, credit),
        (SLA_CREDITS, -credit),
        (wallet(consumer_id), credit),
    ]
    return _transaction(tx_id, "settle", legs, f"charge {settlement.charge_fen} fen")
