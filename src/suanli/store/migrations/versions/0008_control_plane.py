"""control plane: deferred and pinned tasks, the scheduler's leader lease, queued twin runs,
per-stream event chains sealed into roots

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 17:40:00
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# --- EVENT LOG helpers (a migration keeps its own copy of what it computes) ---
_STREAMS = 16  # ordinary streams 1..16; stream 0 carries money
_ZERO = "0" * 64


def _genesis(stream: int) -> str:
    """The `prev_hash` of a stream's first event (as `services.core.stream_genesis`)."""
    return _ZERO if stream == 0 else hashlib.sha256(f"suanli stream {stream}".encode()).hexdigest()


def _chain_hash(
    prev: str, seq: int, at: datetime, kind: str, subject: str, actor: str, data: Any
) -> str:
    """An event's hash as the single chain (and now each stream) computes it."""
    moment = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
    body = json.dumps(
        [prev, seq, moment.isoformat(), kind, subject, actor, data],
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(body.encode()).hexdigest()


# --- END EVENT LOG helpers ---


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
        # the worker's last sign of life: a RUNNING run silent for too long is failed
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
    )

    # --- EVENT LOG (owned by the event-log work): per-stream chains and sealed roots -----------
    # The single chain (and its `chain_head` row, which every write locked) becomes stream 0 as
    # it is: an event's hash covers its seq within its stream, and the old chain's seq is that,
    # so no hash changes. Stream 0 is the money stream from now on (money.* and order.*); other
    # events go to streams 1..16, each with its own head row. Seals chain the heads' roots.
    bind = op.get_bind()
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("stream", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("stream_seq", sa.Integer(), nullable=True))
    op.execute("UPDATE events SET stream_seq = seq")
    with op.batch_alter_table("events") as batch:
        batch.alter_column("stream_seq", existing_type=sa.Integer(), nullable=False)
        batch.create_index("ix_events_stream", ["stream", "stream_seq"], unique=True)
    streams = op.create_table(
        "event_streams",
        sa.Column("stream", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    head = bind.execute(sa.text("SELECT seq, hash FROM chain_head WHERE id = 1")).first()
    rows = [{"stream": 0, "seq": int(head[0]) if head else 0, "hash": head[1] if head else _ZERO}]
    rows += [{"stream": s, "seq": 0, "hash": _genesis(s)} for s in range(1, _STREAMS + 1)]
    op.bulk_insert(streams, rows)
    op.drop_table("chain_head")
    op.create_table(
        "seals",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heads", sa.JSON(), nullable=False),
        sa.Column("prev_root", sa.String(64), nullable=False),
        sa.Column("root", sa.String(64), nullable=False),
    )
    # the old checkpoint names a position in the single chain: the next audit starts afresh
    op.execute("DELETE FROM audit_checkpoint")
    if bind.dialect.name == "postgresql":  # seqs were given explicitly: the sequence lags
        op.execute(
            "SELECT setval(pg_get_serial_sequence('events', 'seq'), "
            "COALESCE((SELECT MAX(seq) FROM events), 0) + 1, false)"
        )
    # --- END EVENT LOG ---


def downgrade() -> None:
    # --- EVENT LOG downgrade ---
    # One chain again: every event, in global seq order, renumbered 1..N and re-hashed as the
    # single chain hashed them (the streams' hashes cannot be kept: they chain differently).
    bind = op.get_bind()
    op.drop_table("seals")
    op.execute("DELETE FROM audit_checkpoint")
    prev, seq = _ZERO, 0
    events = sa.table(
        "events",
        sa.column("seq", sa.Integer()),
        sa.column("prev_hash", sa.String()),
        sa.column("hash", sa.String()),
    )
    rows = bind.execute(
        sa.text("SELECT seq, at, kind, subject, actor, data FROM events ORDER BY seq")
    ).all()
    for old_seq, at, kind, subject, actor, data in rows:
        seq += 1
        if isinstance(data, str):  # SQLite hands back JSON text
            data = json.loads(data)
        if isinstance(at, str):
            at = datetime.fromisoformat(at)
        digest = _chain_hash(prev, seq, at, kind, subject, actor, data)
        bind.execute(
            sa.update(events)
            .where(events.c.seq == old_seq)
            .values(seq=seq, prev_hash=prev, hash=digest)
        )
        prev = digest
    op.drop_table("event_streams")
    with op.batch_alter_table("events") as batch:
        batch.drop_index("ix_events_stream")
        batch.drop_column("stream_seq")
        batch.drop_column("stream")
    head = op.create_table(
        "chain_head",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    op.bulk_insert(head, [{"id": 1, "seq": seq, "hash": prev}])
    # --- END EVENT LOG downgrade ---
    op.drop_table("twin_runs")
    op.drop_table("scheduler_leader")
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("pinned_pool_id")
        batch.drop_column("not_before")
