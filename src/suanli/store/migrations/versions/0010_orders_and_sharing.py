"""every task an order; budgets, groups with quotas and fair share, preemption, vouchers, payout
runs and statements

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 20:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def _orders_without_unique_task(bind: sa.Connection) -> sa.Table | None:
    """SQLite: the reflected `orders` table without its unnamed UNIQUE(task_id) (a batch copy
    rebuilds the table from it). PostgreSQL: None (the named constraint is dropped instead)."""
    if bind.dialect.name != "sqlite":
        return None
    orders = sa.Table("orders", sa.MetaData(), autoload_with=bind)
    for constraint in list(orders.constraints):
        if isinstance(constraint, sa.UniqueConstraint) and [
            column.name for column in constraint.columns
        ] == ["task_id"]:
            orders.constraints.discard(constraint)
    return orders


def upgrade() -> None:
    bind = op.get_bind()

    # --- groups of consumers (organisations): a guaranteed share and a cap per period
    op.create_table(
        "groups",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        # the share of the network's devices guaranteed to the group (basis points of each kind)
        sa.Column("guaranteed_bp", sa.Integer(), nullable=False, server_default="0"),
        # at most this many device-hours per period (None: no cap)
        sa.Column("cap_device_hours", sa.Float(), nullable=True),
        sa.Column("period", sa.String(8), nullable=False, server_default="month"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    with op.batch_alter_table("principals") as batch:
        batch.add_column(sa.Column("group_id", sa.String(64), nullable=True))
        batch.create_foreign_key("fk_principals_group", "groups", ["group_id"], ["id"])
        batch.create_index("ix_principals_group_id", ["group_id"])

    # --- tasks: preemption asked of the agent; how often a task was preempted
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(
            sa.Column("preempt_requested", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("preempt_reason", sa.Text(), nullable=True))
        batch.add_column(sa.Column("preemptions", sa.Integer(), nullable=False, server_default="0"))
        # when the task last entered the queue (None: at its creation): a preempted or
        # re-queued task's wait (`max_queue_wait_s`) starts again then
        batch.add_column(sa.Column("queued_at", sa.DateTime(timezone=True), nullable=True))

    # --- orders: one per admission (a preempted, re-queued task gets a new one when it is
    # admitted again), so task_id is no longer unique; orders made by the pass have no quote;
    # the part of the escrow that vouchers paid
    if bind.dialect.name == "postgresql":
        names = [
            unique["name"]
            for unique in sa.inspect(bind).get_unique_constraints("orders")
            if unique["column_names"] == ["task_id"] and unique["name"]
        ]
        for name in names:
            op.drop_constraint(name, "orders", type_="unique")
    with op.batch_alter_table(
        "orders", copy_from=_orders_without_unique_task(bind), recreate="auto"
    ) as batch:
        batch.alter_column("quote_id", existing_type=sa.String(64), nullable=True)
        batch.add_column(sa.Column("source", sa.String(16), nullable=False, server_default="quote"))
        batch.add_column(
            sa.Column("voucher_fen", sa.BigInteger(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("vouchers", sa.JSON(), nullable=True))  # [[voucher, fen]]
        batch.create_index("ix_orders_task_id", ["task_id"])

    # --- budgets: a consumer's spending limit per period, alerts at thresholds
    op.create_table(
        "budgets",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("principal_id", sa.String(64), sa.ForeignKey("principals.id"), nullable=False),
        sa.Column("period", sa.String(8), nullable=False),  # day | week | month
        sa.Column("limit_fen", sa.BigInteger(), nullable=False),
        sa.Column("alert_bp", sa.JSON(), nullable=False),  # thresholds, e.g. [5000, 8000, 10000]
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("principal_id", "period", name="uq_budgets_principal_period"),
    )
    op.create_table(
        "budget_alerts",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("budget_id", sa.String(64), sa.ForeignKey("budgets.id"), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("threshold_bp", sa.Integer(), nullable=False),
        sa.Column("spent_fen", sa.BigInteger(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint(
            "budget_id", "period_start", "threshold_bp", name="uq_budget_alerts_once"
        ),
    )

    # --- compute vouchers (算力券)
    op.create_table(
        "vouchers",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("issuer_id", sa.String(64), sa.ForeignKey("principals.id"), nullable=False),
        sa.Column("face_fen", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        # {"consumers": [ids], "groups": [ids]}: who may spend it (both empty: nobody)
        sa.Column("eligible", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False, index=True),  # ACTIVE | EXPIRED
        sa.Column("memo", sa.Text(), nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expired_at", sa.DateTime(timezone=True), nullable=True),
    )

    # --- payout runs and per-provider statements
    op.create_table(
        "payout_runs",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("period", sa.String(16), nullable=False, unique=True),  # e.g. 2026-11
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("period_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("total_fen", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("providers", sa.Integer(), nullable=False, server_default="0"),
    )
    op.create_table(
        "payout_statements",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("run_id", sa.String(64), sa.ForeignKey("payout_runs.id"), nullable=False),
        sa.Column("provider_id", sa.String(64), sa.ForeignKey("principals.id"), nullable=False),
        sa.Column("period", sa.String(16), nullable=False),
        sa.Column("opening_fen", sa.BigInteger(), nullable=False),
        sa.Column("earned_fen", sa.BigInteger(), nullable=False),
        sa.Column("paid_fen", sa.BigInteger(), nullable=False),
        sa.Column("closing_fen", sa.BigInteger(), nullable=False),
        sa.Column("lines", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("run_id", "provider_id", name="uq_statements_run_provider"),
    )
    with op.batch_alter_table("payout_statements") as batch:
        batch.create_index("ix_payout_statements_provider_id", ["provider_id"])


def downgrade() -> None:
    op.drop_table("payout_statements")
    op.drop_table("payout_runs")
    op.drop_table("vouchers")
    op.drop_table("budget_alerts")
    op.drop_table("budgets")
    with op.batch_alter_table("orders") as batch:
        batch.drop_index("ix_orders_task_id")
        batch.drop_column("vouchers")
        batch.drop_column("voucher_fen")
        batch.drop_column("source")
        batch.alter_column("quote_id", existing_type=sa.String(64), nullable=False)
        batch.create_unique_constraint("uq_orders_task_id", ["task_id"])
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("queued_at")
        batch.drop_column("preemptions")
        batch.drop_column("preempt_reason")
        batch.drop_column("preempt_requested")
    with op.batch_alter_table("principals") as batch:
        batch.drop_index("ix_principals_group_id")
        batch.drop_constraint("fk_principals_group", type_="foreignkey")
        batch.drop_column("group_id")
    op.drop_table("groups")
