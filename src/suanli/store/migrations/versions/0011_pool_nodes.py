"""pool nodes: the devices of one node of a pool, from the agent's capacity per node

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 07:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # a gang task (resources.nodes > 1) is placed only on a pool whose nodes hold its share;
    # NULL: the engine has not said (the pool is taken as one node of its count)
    with op.batch_alter_table("pools") as batch:
        batch.add_column(sa.Column("devices_per_node", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("pools") as batch:
        batch.drop_column("devices_per_node")
