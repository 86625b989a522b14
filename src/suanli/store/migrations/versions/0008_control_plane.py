"""control plane: deferred and pinned tasks, the scheduler's leader lease, queued twin runs,
per-stream event chains sealed into roots

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 17:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # --- tasks: the decision step may defer a task (`not_before`), and an accepted quote queues
    # a request pinned to the quoted pool (`pinned_pool_id`) that the pass admits like any other
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("not_before", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("pinned_pool_id", sa.String(160), nullable=True))

    # --- one scheduling loop at a time: the holder of this row's unexpired lease is the leader
    op.create_table(
        "scheduler_leader",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("holder", sa.String(128), nullable=False),
        sa.Column("term", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )

    # --- twin replays queued by the console and run by a worker process
    op.create_table(
        "twin_runs",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("owner_id", sa.String(64), sa.ForeignKey("principals.id"), nullable=False),
        sa.Column("state", sa.String(16), nullable=False, index=True),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("progress", sa.Float(), nullable=False, server_default="0"),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("worker", sa.String(128), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    )

    # --- EVENT LOG (owned by the event-log work): per-stream chains and sealed roots -----------
    # (filled in by that work; keep this section self-contained)
    # --- END EVENT LOG ---


def downgrade() -> None:
    # --- EVENT LOG downgrade ---
    # --- END EVENT LOG downgrade ---
    op.drop_table("twin_runs")
    op.drop_table("scheduler_leader")
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("pinned_pool_id")
        batch.drop_column("not_before")
