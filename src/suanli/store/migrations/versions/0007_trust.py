"""trust: account balances kept under lock, the audit checkpoint, token lifecycle and scope,
server-side console sessions, 64-bit money columns

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 15:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # one row per ledger account, updated with every posting under a row lock: the balance a
    # movement of money checks is read FOR UPDATE (PostgreSQL) or inside the single writer
    # (SQLite), so two movements can never both spend the same fen
    op.create_table(
        "account_balances",
        sa.Column("account", sa.String(160), primary_key=True),
        sa.Column("balance_fen", sa.BigInteger(), nullable=False, server_default="0"),
    )
    op.execute(
        "INSERT INTO account_balances (account, balance_fen) "
        "SELECT account, SUM(amount_fen) FROM ledger_postings GROUP BY account"
    )
    # where `audit verify` stopped last time: the chain up to `seq` (ending in `hash`) and the
    # ledger replay's state then (balances, settled orders), so a check costs only what follows
    op.create_table(
        "audit_checkpoint",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("state", sa.JSON(), nullable=False),
        sa.Column("verified_at", sa.DateTime(timezone=True), nullable=False),
    )
    with op.batch_alter_table("tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("name", sa.String(200), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
        # an agent token: usable only by agents of this one site (register, heartbeat, lease,
        # report); NULL for a principal's own token
        batch_op.add_column(sa.Column("site_id", sa.String(128), nullable=True))
    op.create_table(
        "console_sessions",
        sa.Column("id_hash", sa.String(64), primary_key=True),  # SHA-256 of the cookie's id
        sa.Column("principal_id", sa.String(64), sa.ForeignKey("principals.id"), nullable=False),
        sa.Column("token_id", sa.String(64), sa.ForeignKey("tokens.id"), nullable=False),
        sa.Column("csrf", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
    )
    # money in 64 bits: a large order must be refused by validation, never overflow a column.
    # SQLite's INTEGER is 64-bit already, and a batch type change there recreates the table,
    # which a populated database refuses (DROP TABLE pools breaks tasks' foreign key)
    if op.get_bind().dialect.name == "sqlite":
        return
    op.alter_column(
        "ledger_postings", "amount_fen", type_=sa.BigInteger(), existing_type=sa.Integer()
    )
    op.alter_column("orders", "escrow_fen", type_=sa.BigInteger(), existing_type=sa.Integer())
    op.alter_column(
        "pools", "price_fen_per_device_hour", type_=sa.BigInteger(), existing_type=sa.Integer()
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":  # see upgrade(): SQLite's were never changed
        op.alter_column(
            "pools", "price_fen_per_device_hour", type_=sa.Integer(), existing_type=sa.BigInteger()
        )
        op.alter_column("orders", "escrow_fen", type_=sa.Integer(), existing_type=sa.BigInteger())
        op.alter_column(
            "ledger_postings", "amount_fen", type_=sa.Integer(), existing_type=sa.BigInteger()
        )
    op.drop_table("console_sessions")
    with op.batch_alter_table("tokens", schema=None) as batch_op:
        batch_op.drop_column("site_id")
        batch_op.drop_column("expires_at")
        batch_op.drop_column("name")
    op.drop_table("audit_checkpoint")
    op.drop_table("account_balances")
