"""Money for the tests' consumers.

Since issue 15 every task is an order: the scheduling pass holds a task's maximum price in
escrow from its consumer's vouchers and wallet, and a consumer who cannot pay stays queued
("insufficient balance"). A test about something else (agents, TES, the console, security)
whose consumer submits tasks therefore needs money in the wallet, as a real consumer would.

`principal_token` is the one place that gives it: it creates a principal and its token, and a
consumer is funded with `FUNDS_FEN` (1e9 yuan, more than any test's tasks cost) by a real
top-up, `services.market.credit` (a balanced ledger transaction from 'external:bank' and its
`money.posted` event, so `audit verify` still holds), made by a transient operator actor named
`FUNDER` (no token is created for it). Tests about money itself pass `funded=0` and top up
exactly what they mean to.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from suanli.services import market
from suanli.services.core import Role, create_token
from suanli.store.models import Principal

FUNDS_FEN = 100_000_000_000  # 1e9 yuan
FUNDER = "test-funding"  # the operator actor of the tests' top-ups (in the audit log)


def fund(session: Session, consumer_id: str, fen: int = FUNDS_FEN) -> int:
    """Top up the consumer's wallet with `fen` (a real `market.credit`); the new balance."""
    operator = Principal(id=FUNDER, name="test funding", role=Role.OPERATOR.value)
    return market.credit(session, operator, consumer_id, fen)


def principal_token(
    session: Session, role: Role, name: str, *, funded: int = FUNDS_FEN
) -> tuple[Principal, str]:
    """`create_token`, and for a consumer a wallet funded with `funded` fen (0: none)."""
    principal, token = create_token(session, role, name)
    if role is Role.CONSUMER and funded > 0:
        session.flush()  # the principal exists before its top-up
        fund(session, principal.id, funded)
    return principal, token
