"""deferral bookings (the pool a deferred task is booked on, and until when); the buckets a site's
object storage serves

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03 17:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # a task the decision step deferred holds its pool's devices ahead, from `not_before` until
    # `booked_until` (a later deferral goes only to hours with room beside it), and takes that
    # pool first when its hour comes; NULL: not deferred, or its hour came and went
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("booked_pool_id", sa.String(160), nullable=True))
        batch.add_column(sa.Column("booked_until", sa.DateTime(timezone=True), nullable=True))
    # the object-storage buckets a site serves: a task whose s3:// inputs are in one of them has
    # its data there (its transfer is timed and charged to sites elsewhere); NULL: none declared
    with op.batch_alter_table("sites") as batch:
        batch.add_column(sa.Column("buckets", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sites") as batch:
        batch.drop_column("buckets")
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("booked_until")
        batch.drop_column("booked_pool_id")
