"""scheduler leader: whether the holder holds the PostgreSQL advisory lock

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 20:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # a contender that gets the advisory lock may take the lead at once only from a holder that
    # held the lock (whose connection is therefore gone), never from one that led by lease alone
    with op.batch_alter_table("scheduler_leader") as batch:
        batch.add_column(
            sa.Column("locked", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("scheduler_leader") as batch:
        batch.drop_column("locked")
