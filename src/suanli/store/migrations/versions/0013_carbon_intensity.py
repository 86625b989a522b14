"""observed hourly carbon intensity per province (what the pass forecasts carbon from)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04 11:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # one row per province and whole UTC hour: the grid's location-based intensity observed
    # then, kg CO2 per kWh, and where it came from; replaced when the hour is fed again
    op.create_table(
        "carbon_intensity",
        sa.Column("province", sa.String(32), primary_key=True),
        sa.Column("hour", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("kg_per_kwh", sa.Float(), nullable=False),
        sa.Column("source", sa.String(200), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("carbon_intensity")
