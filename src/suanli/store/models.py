"""SQLAlchemy 2 models of the platform's state.

Owns the tables: principals and their hashed tokens, sites, pools, agents, tasks with their
TES state and lease, and the append-only, hash-chained event log (可信、可溯) that records every
state change. Money is integer fen; times are timezone-aware UTC; ids are stable strings.
Invariant: rows change only inside a service's unit of work; the schema changes only through
Alembic migrations (`store/migrations`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: DateTime(timezone=True),
        dict[str, Any]: JSON,
    }


class Principal(Base):
    """An owner of tokens: the operator, a provider or a consumer."""

    __tablename__ = "principals"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]
    # the consumer's group (organisation): its quota and fair share (None: the public share)
    group_id: Mapped[str | None] = mapped_column(ForeignKey("groups.id"), index=True)


class GroupRow(Base):
    """Consumers grouped (an organisation): a guaranteed share of the network's devices and a
    cap of device-hours per period."""

    __tablename__ = "groups"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    guaranteed_bp: Mapped[int] = mapped_column(Integer, default=0)  # of each device kind
    cap_device_hours: Mapped[float | None] = mapped_column(Float)  # per period; None: no cap
    period: Mapped[str] = mapped_column(String(8), default="month")  # day | week | month
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Token(Base):
    """A bearer token, stored only as its SHA-256 hash. It may expire (`expires_at`) and be
    revoked (`revoked_at`); an agent token (`site_id` set) acts for its principal only as an
    agent of that one site."""

    __tablename__ = "tokens"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    principal_id: Mapped[str] = mapped_column(ForeignKey("principals.id"))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    name: Mapped[str] = mapped_column(String(200), default="", server_default="")
    expires_at: Mapped[datetime | None]
    site_id: Mapped[str | None] = mapped_column(String(128))


class ConsoleSession(Base):
    """A signed-in console session: the cookie carries a random id, stored here only hashed,
    with its CSRF token; it ends at `expires_at`, at sign-out (`ended_at`), or when the token it
    was opened with is revoked."""

    __tablename__ = "console_sessions"
    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    principal_id: Mapped[str] = mapped_column(ForeignKey("principals.id"))
    token_id: Mapped[str] = mapped_column(ForeignKey("tokens.id"))
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]


class SiteRow(Base):
    __tablename__ = "sites"
    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("principals.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    cluster_id: Mapped[str | None] = mapped_column(String(32))
    province: Mapped[str] = mapped_column(String(32))
    lat: Mapped[float] = mapped_column(Float)
    lon: Mapped[float] = mapped_column(Float)
    pue: Mapped[float] = mapped_column(Float)
    green_share: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime]
    # the object-storage buckets the site serves (where a task's s3:// data lives), or None
    buckets: Mapped[list[str] | None] = mapped_column(JSON)


class PoolRow(Base):
    __tablename__ = "pools"
    id: Mapped[str] = mapped_column(String(160), primary_key=True)
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.id"), index=True)
    device: Mapped[str] = mapped_column(String(80))
    count: Mapped[int] = mapped_column(Integer)
    price_fen_per_device_hour: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime]
    # devices the site's engine reports busy with work suanli did not place (agent capacity)
    unavailable: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # devices' worth of tasks that may wait in the engine's own queue (Slurm) beyond the free ones
    queue_depth: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # the devices of one node, as the engine reports per node (None: not reported)
    devices_per_node: Mapped[int | None] = mapped_column(Integer, nullable=True, default=None)


class AgentRow(Base):
    __tablename__ = "agents"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.id"), index=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("principals.id"))
    name: Mapped[str] = mapped_column(String(200))
    slots: Mapped[int] = mapped_column(Integer)
    backend: Mapped[str] = mapped_column(String(32))
    registered_at: Mapped[datetime]
    last_heartbeat_at: Mapped[datetime]


class TaskRow(Base):
    __tablename__ = "tasks"
    __table_args__ = (
        Index("ix_tasks_owner_idempotency", "owner_id", "idempotency_key", unique=True),
        Index("ix_tasks_state_pool", "state", "pool_id"),
    )
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("principals.id"), index=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    name: Mapped[str] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(24), index=True)
    spec: Mapped[dict[str, Any]]  # executors, resources, tier, origin, ... as submitted
    devices: Mapped[int] = mapped_column(Integer)
    policy: Mapped[str] = mapped_column(String(32))
    pool_id: Mapped[str | None] = mapped_column(ForeignKey("pools.id"), index=True)
    site_id: Mapped[str | None] = mapped_column(String(128), index=True)
    placement: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    unplaced_reason: Mapped[str | None] = mapped_column(Text)
    agent_id: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None]
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    requeues: Mapped[int] = mapped_column(Integer, default=0)
    exit_code: Mapped[int | None] = mapped_column(Integer)
    stdout_tail: Mapped[str | None] = mapped_column(Text)
    stderr_tail: Mapped[str | None] = mapped_column(Text)
    usage: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    executor_logs: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)  # one per executor
    output_logs: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)  # files copied out
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    not_before: Mapped[datetime | None]  # deferred by the decision step until then
    pinned_pool_id: Mapped[str | None] = mapped_column(String(160))  # an accepted quote's pool
    # the pass asked the agent to preempt the task (why); how often it was preempted
    preempt_requested: Mapped[bool] = mapped_column(default=False)
    preempt_reason: Mapped[str | None] = mapped_column(Text)
    preemptions: Mapped[int] = mapped_column(Integer, default=0)
    # when it last entered the queue (None: at `created_at`); its queue wait counts from then
    queued_at: Mapped[datetime | None]
    # a deferred task's booking: its pool's devices are held ahead from `not_before` until
    # `booked_until`, and it takes that pool first when its hour comes (None: no booking)
    booked_pool_id: Mapped[str | None] = mapped_column(String(160))
    booked_until: Mapped[datetime | None]


class EventStream(Base):
    """The head of one stream of the event log: its last event's `seq` within the stream and
    hash. An append locks only its stream's row (FOR UPDATE), so writers of different streams
    proceed in parallel; stream 0 carries money (and the events logged before streams)."""

    __tablename__ = "event_streams"
    stream: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(64))


class EventRow(Base):
    """One state change: append-only. `seq` is global (the order of appends); within its
    `stream`, each event hashes the previous one (`stream_seq`, `prev_hash`: a tamper-evident
    chain per stream, sealed into periodic roots, `SealRow`)."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_stream", "stream", "stream_seq", unique=True),)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    stream: Mapped[int] = mapped_column(Integer)
    stream_seq: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime]
    kind: Mapped[str] = mapped_column(String(40))
    subject: Mapped[str] = mapped_column(String(160), index=True)
    actor: Mapped[str] = mapped_column(String(64))
    data: Mapped[dict[str, Any]]
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class SealRow(Base):
    """A seal: the head (stream seq, hash) of every stream at one moment (`heads`, {"stream":
    [seq, hash]}), chained to the seal before it (`root` hashes `prev_root`, the id, the time
    and the heads). Removing or editing a sealed event, or a seal, breaks `audit verify`."""

    __tablename__ = "seals"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[datetime]
    heads: Mapped[dict[str, Any]]
    prev_root: Mapped[str] = mapped_column(String(64))
    root: Mapped[str] = mapped_column(String(64))


class LedgerTransaction(Base):
    """A balanced set of postings (double entry); written once, never updated."""

    __tablename__ = "ledger_transactions"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    memo: Mapped[str] = mapped_column(Text)
    order_id: Mapped[str | None] = mapped_column(String(64), index=True)
    at: Mapped[datetime]


class LedgerPosting(Base):
    __tablename__ = "ledger_postings"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    transaction_id: Mapped[str] = mapped_column(ForeignKey("ledger_transactions.id"), index=True)
    account: Mapped[str] = mapped_column(String(160), index=True)
    amount_fen: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))


class AccountBalance(Base):
    """An account's balance, kept with its postings: every movement of money locks the rows
    of the accounts it touches (FOR UPDATE) before it reads them, so balances that must not go
    negative (wallets, escrow, receivables) cannot be spent twice by concurrent requests."""

    __tablename__ = "account_balances"
    account: Mapped[str] = mapped_column(String(160), primary_key=True)
    balance_fen: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class AuditCheckpoint(Base):
    """Where the last audit stopped (one row, id 1): `seq` events verified in all, `hash` a
    digest of the stream heads reached; `state` holds those heads, the last verified seal and
    the ledger replay's state then, so the next check starts from there."""

    __tablename__ = "audit_checkpoint"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(64))
    state: Mapped[dict[str, Any]]
    verified_at: Mapped[datetime]


class QuoteRow(Base):
    __tablename__ = "quotes"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("principals.id"), index=True)
    spec: Mapped[dict[str, Any]]
    options: Mapped[dict[str, Any]]  # {"options": [...]} priced offers
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    order_id: Mapped[str | None] = mapped_column(String(64))


class OrderRow(Base):
    __tablename__ = "orders"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("principals.id"), index=True)
    provider_id: Mapped[str] = mapped_column(ForeignKey("principals.id"), index=True)
    quote_id: Mapped[str | None] = mapped_column(String(64))  # None: made by the pass
    # one order per admission: a preempted, re-queued task gets a new one when admitted again
    task_id: Mapped[str] = mapped_column(ForeignKey("tasks.id"), index=True)
    state: Mapped[str] = mapped_column(String(16))  # OPEN | SETTLED
    escrow_fen: Mapped[int] = mapped_column(BigInteger)
    offer: Mapped[dict[str, Any]]
    settlement: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime]
    settled_at: Mapped[datetime | None]
    source: Mapped[str] = mapped_column(String(16), default="quote")  # quote | admission
    voucher_fen: Mapped[int] = mapped_column(BigInteger, default=0)  # of escrow_fen
    vouchers: Mapped[list[list[Any]] | None] = mapped_column(JSON)  # [[voucher id, fen]]


class BudgetRow(Base):
    """A consumer's spending limit per period, with alert thresholds (basis points)."""

    __tablename__ = "budgets"
    __table_args__ = (
        UniqueConstraint("principal_id", "period", name="uq_budgets_principal_period"),
    )
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    principal_id: Mapped[str] = mapped_column(ForeignKey("principals.id"))
    period: Mapped[str] = mapped_column(String(8))  # day | week | month
    limit_fen: Mapped[int] = mapped_column(BigInteger)
    alert_bp: Mapped[list[int]] = mapped_column(JSON)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class BudgetAlertRow(Base):
    """A threshold of a budget crossed in one period (once)."""

    __tablename__ = "budget_alerts"
    __table_args__ = (
        UniqueConstraint("budget_id", "period_start", "threshold_bp", name="uq_budget_alerts_once"),
    )
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    budget_id: Mapped[str] = mapped_column(ForeignKey("budgets.id"))
    period_start: Mapped[datetime]
    threshold_bp: Mapped[int] = mapped_column(Integer)
    spent_fen: Mapped[int] = mapped_column(BigInteger)
    at: Mapped[datetime]


class VoucherRow(Base):
    """A compute voucher (算力券): an amount the issuer funds, spendable by eligible consumers
    or groups before their wallets until it expires; what is left then returns to the issuer.
    Its balance is the ledger account `voucher:<id>`."""

    __tablename__ = "vouchers"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    issuer_id: Mapped[str] = mapped_column(ForeignKey("principals.id"))
    face_fen: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[datetime]
    eligible: Mapped[dict[str, Any]]  # {"consumers": [ids], "groups": [ids]}
    state: Mapped[str] = mapped_column(String(16), index=True)  # ACTIVE | EXPIRED
    memo: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime]
    expired_at: Mapped[datetime | None]


class PayoutRunRow(Base):
    """One payout run per period: every provider's receivable paid, a statement each."""

    __tablename__ = "payout_runs"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    period: Mapped[str] = mapped_column(String(16), unique=True)  # e.g. 2026-11
    period_start: Mapped[datetime]
    period_end: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    total_fen: Mapped[int] = mapped_column(BigInteger, default=0)
    providers: Mapped[int] = mapped_column(Integer, default=0)


class PayoutStatementRow(Base):
    """A provider's statement of one payout run."""

    __tablename__ = "payout_statements"
    __table_args__ = (UniqueConstraint("run_id", "provider_id", name="uq_statements_run_provider"),)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("payout_runs.id"))
    provider_id: Mapped[str] = mapped_column(ForeignKey("principals.id"), index=True)
    period: Mapped[str] = mapped_column(String(16))
    opening_fen: Mapped[int] = mapped_column(BigInteger)
    earned_fen: Mapped[int] = mapped_column(BigInteger)
    paid_fen: Mapped[int] = mapped_column(BigInteger)
    closing_fen: Mapped[int] = mapped_column(BigInteger)
    lines: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    created_at: Mapped[datetime]


class CarbonRow(Base):
    """An observed hourly carbon intensity of a province's grid (location-based), as the
    operator feeds it (`services.carbon`): the hour's start (UTC) and kg CO2 per kWh."""

    __tablename__ = "carbon_intensity"
    province: Mapped[str] = mapped_column(String(32), primary_key=True)
    hour: Mapped[datetime] = mapped_column(primary_key=True)
    kg_per_kwh: Mapped[float] = mapped_column(Float)
    source: Mapped[str] = mapped_column(String(200))
    recorded_at: Mapped[datetime]


class RatingRow(Base):
    __tablename__ = "ratings"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id"), unique=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("principals.id"))
    provider_id: Mapped[str] = mapped_column(ForeignKey("principals.id"), index=True)
    stars: Mapped[int] = mapped_column(Integer)
    comment: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime]


class SchedulerLeader(Base):
    """The one row whose unexpired lease names the process that runs the scheduling loop."""

    __tablename__ = "scheduler_leader"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    term: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[datetime]
    # the holder held the PostgreSQL advisory lock at its last renewal
    locked: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class TwinRunRow(Base):
    """A digital-twin replay queued by the console; a worker process runs it."""

    __tablename__ = "twin_runs"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("principals.id"))
    state: Mapped[str] = mapped_column(String(16), index=True)  # QUEUED RUNNING DONE FAILED
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    progress: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    message: Mapped[str | None] = mapped_column(Text)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    worker: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]  # the worker's last sign of life while RUNNING
