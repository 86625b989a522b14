"""Read models: every query the web console and `/metrics` run, answered as plain frozen
dataclasses (never ORM rows), so that those edges import nothing from `suanli.store`.

Owns no state and writes nothing. Visibility is the services' own: a task page goes through
`tasks.get_task` (404 for what the principal may not see), the task list through
`tasks.list_tasks`, the money figures through `market`'s accounts of the principal. The
network figures (fleet, flows, busy stretches, finished work) are the operator's and the
providers' (the console checks the role before it asks). Times are timezone-aware UTC.

`Actor` (`services.core.Actor`, a protocol) names the principal a request acts as: the console
receives it from `sessions.resolve` and hands it back to services without reading it; what a page
shows of it is a `Viewer`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from suanli import ledger
from suanli.catalog import Pool, Site
from suanli.metering import find_device
from suanli.services import capacity as capacity_service
from suanli.services import market
from suanli.services import tasks as tasks_service
from suanli.services.core import TERMINAL, Actor, Role, State, aware, now
from suanli.store.models import AgentRow, LedgerPosting, OrderRow, Principal, SiteRow, TaskRow

# states in which an agent holds a task's devices (leased and not yet ended or re-queued)
BUSY = frozenset({"INITIALIZING", "RUNNING", "PAUSED"})
TERMINAL_STATES = frozenset(s.value for s in TERMINAL)


@dataclass(frozen=True)
class Viewer:
    """Who a page is shown to."""

    id: str
    role: str
    name: str


def viewer(who: Actor) -> Viewer:
    return Viewer(who.id, who.role, who.name)


# --- tasks --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskItem:
    """One line of the task list."""

    id: str
    name: str
    state: str
    site_id: str | None
    created_at: datetime


@dataclass(frozen=True)
class TaskDetail:
    """A task as its page shows it (placement and usage are the stored JSON documents)."""

    id: str
    name: str
    state: str
    site_id: str | None
    pool_id: str | None
    devices: int
    exit_code: int | None
    created_at: datetime
    cancel_requested: bool
    placement: Mapping[str, Any] | None
    unplaced_reason: str | None
    usage: Mapping[str, Any] | None
    stdout_tail: str | None
    stderr_tail: str | None


@dataclass(frozen=True)
class TaskEvent:
    """One state change of a task, from the audit chain."""

    at: datetime
    from_state: str | None
    to_state: str
    reason: str
    actor: str


@dataclass(frozen=True)
class OrderView:
    """A task's order: the escrow held and, once settled, the settlement document."""

    id: str
    state: str
    escrow_fen: int
    settlement: Mapping[str, Any] | None


@dataclass(frozen=True)
class TaskPage:
    task: TaskDetail
    events: tuple[TaskEvent, ...]
    order: OrderView | None
    terminal: bool


def task_list(
    session: Session, who: Actor, state: str | None, name_prefix: str | None, limit: int = 200
) -> list[TaskItem]:
    """The tasks `who` may see, newest first (the same query as `GET /v1/tasks`)."""
    rows = tasks_service.list_tasks(session, who, state, limit, name_prefix=name_prefix)
    return [TaskItem(r.id, r.name, r.state, r.site_id, aware(r.created_at)) for r in rows]


def task_page(session: Session, who: Actor, task_id: str) -> TaskPage:
    """One task with its timeline and order; NotFound for a task `who` may not see."""
    row = tasks_service.get_task(session, who, task_id)
    events = tasks_service.task_events(session, [row.id])[row.id]
    order = session.scalars(select(OrderRow).where(OrderRow.task_id == row.id)).first()
    return TaskPage(
        task=TaskDetail(
            id=row.id,
            name=row.name,
            state=row.state,
            site_id=row.site_id,
            pool_id=row.pool_id,
            devices=row.devices,
            exit_code=row.exit_code,
            created_at=aware(row.created_at),
            cancel_requested=bool(row.cancel_requested),
            placement=row.placement,
            unplaced_reason=row.unplaced_reason,
            usage=row.usage,
            stdout_tail=row.stdout_tail,
            stderr_tail=row.stderr_tail,
        ),
        events=tuple(
            TaskEvent(e["at"], e.get("from"), e["to"], e.get("reason", ""), e["actor"])
            for e in events
        ),
        order=None
        if order is None
        else OrderView(order.id, order.state, order.escrow_fen, order.settlement),
        terminal=State(row.state) in TERMINAL,
    )


# --- money --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EscrowHeld:
    held_fen: int
    open_orders: int


def visible_accounts(session: Session, who: Actor) -> list[str]:
    """The accounts the principal may read: its own; the operator also every account posted to."""
    own = market.accounts_of(who)
    if who.role != Role.OPERATOR.value:
        return own
    posted = session.scalars(select(LedgerPosting.account).distinct()).all()
    return own + sorted(set(posted) - set(own))


def escrow_held(session: Session, who: Actor) -> EscrowHeld:
    """Fen held in escrow and open orders as the principal sees them: a consumer its escrow
    account, a provider the escrow of its open orders, the operator every escrow account."""
    if who.role == Role.CONSUMER.value:
        held = market.balance(session, ledger.escrow(who.id))
        open_orders = session.scalar(
            select(func.count())
            .select_from(OrderRow)
            .where(OrderRow.owner_id == who.id, OrderRow.state == "OPEN")
        )
        return EscrowHeld(held, int(open_orders or 0))
    if who.role == Role.PROVIDER.value:
        row = session.execute(
            select(func.coalesce(func.sum(OrderRow.escrow_fen), 0), func.count()).where(
                OrderRow.provider_id == who.id, OrderRow.state == "OPEN"
            )
        ).one()
        return EscrowHeld(int(row[0] or 0), int(row[1] or 0))
    total = session.scalar(
        select(func.coalesce(func.sum(LedgerPosting.amount_fen), 0)).where(
            LedgerPosting.account.like("escrow:%")
        )
    )
    orders = session.scalar(
        select(func.count()).select_from(OrderRow).where(OrderRow.state == "OPEN")
    )
    return EscrowHeld(int(total or 0), int(orders or 0))


# --- the network --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SiteView:
    id: str
    owner_id: str
    name: str
    cluster_id: str | None
    province: str
    lat: float
    lon: float
    pue: float
    green_share: float


@dataclass(frozen=True)
class PoolView:
    id: str
    site_id: str
    device: str
    count: int
    unavailable: int
    queue_depth: int
    price_fen_per_device_hour: int


@dataclass(frozen=True)
class PoolState:
    """A pool with what it holds now: free devices (as the scheduler counts them) and the
    devices held by tasks."""

    pool: PoolView
    free: int
    held: int


@dataclass(frozen=True)
class Fleet:
    """The registered sites and pools with what they hold now, and the same as the engine's
    `Site` and catalog `Pool` values (the console shows exactly what the scheduler sees)."""

    rows: tuple[SiteView, ...]
    sites: Mapping[str, Site]
    pools: Mapping[str, tuple[PoolState, ...]]  # site id -> its pools
    catalog_pools: tuple[Pool, ...] = field(default_factory=tuple)

    def devices(self, site_ids: list[str]) -> tuple[int, int]:
        """(total, held) devices over the pools of these sites."""
        total = held = 0
        for sid in site_ids:
            for state in self.pools.get(sid, ()):
                total += state.pool.count
                held += state.held
        return total, held


def _site_view(row: SiteRow) -> SiteView:
    return SiteView(
        row.id,
        row.owner_id,
        row.name,
        row.cluster_id,
        row.province,
        row.lat,
        row.lon,
        row.pue,
        row.green_share,
    )


def sites(session: Session) -> tuple[SiteView, ...]:
    """Every registered site, in the order they were registered (any principal may list them,
    as `GET /v1/sites`)."""
    return tuple(_site_view(r) for r in capacity_service.list_sites(session))


def fleet(session: Session, only_owner: str | None = None) -> Fleet:
    """Every site (or one provider's) with its pools, free and held devices now."""
    rows = [r for r in capacity_service.list_sites(session) if only_owner in (None, r.owner_id)]
    visible = {r.id for r in rows}
    held = capacity_service.held_devices(session)
    pools: dict[str, list[PoolState]] = {r.id: [] for r in rows}
    catalog_pools: list[Pool] = []
    for pool, free in capacity_service.list_pools(session):
        if pool.site_id not in visible:
            continue
        view = PoolView(
            pool.id,
            pool.site_id,
            pool.device,
            pool.count,
            pool.unavailable or 0,
            pool.queue_depth or 0,
            pool.price_fen_per_device_hour,
        )
        pools[pool.site_id].append(PoolState(view, free, held.get(pool.id, 0)))
        catalog_pools.append(
            Pool(pool.id, pool.site_id, find_device(pool.device), pool.count, free)
        )
    return Fleet(
        tuple(_site_view(r) for r in rows),
        {r.id: capacity_service.engine_site(r) for r in rows},
        {sid: tuple(states) for sid, states in pools.items()},
        tuple(catalog_pools),
    )


def placed_origins(session: Session, since: datetime) -> list[tuple[str, str]]:
    """(origin, site id) of every task placed on a site and created since `since`; a task
    without an origin counts from the platform's default origin."""
    rows = session.execute(
        select(TaskRow.spec, TaskRow.site_id).where(
            TaskRow.site_id.is_not(None), TaskRow.created_at >= since
        )
    )
    return [
        (str((spec or {}).get("origin") or tasks_service.DEFAULT_ORIGIN), str(site_id))
        for spec, site_id in rows
    ]


@dataclass(frozen=True)
class BusyStretch:
    """A stretch of time a task held devices on a site."""

    site_id: str
    start: datetime
    end: datetime
    devices: int


def busy_stretches(session: Session, since: datetime, moment: datetime) -> list[BusyStretch]:
    """Every stretch a task held devices after `since`, from the audit log's task.state events:
    a stretch starts when a task enters INITIALIZING, RUNNING or PAUSED (leased by an agent)
    and ends when it leaves them (a terminal state, or back to the queue); still open stretches
    end at `moment`. A stretch is put on the site of the agent that leased the task (the
    event's actor), so a task re-queued after a lease expired is counted where it really ran;
    the task's current site is the fallback."""
    tasks = list(
        session.execute(
            select(TaskRow.id, TaskRow.site_id, TaskRow.devices).where(
                or_(TaskRow.updated_at >= since, TaskRow.state.in_(BUSY))
            )
        )
    )
    if not tasks:
        return []
    agent_site = dict(session.execute(select(AgentRow.id, AgentRow.site_id)).tuples().all())
    events = tasks_service.task_events(session, [t.id for t in tasks])
    stretches = []
    for task_id, site_id, devices in tasks:
        start: datetime | None = None
        where: str | None = None
        for event in events[task_id]:
            busy = event["to"] in BUSY
            if busy and start is None:
                start, where = event["at"], agent_site.get(event["actor"]) or site_id
            elif not busy and start is not None:
                if event["at"] > since and where:
                    stretches.append(BusyStretch(where, start, event["at"], devices))
                start = None
        if start is not None and where:
            stretches.append(BusyStretch(where, start, moment, devices))
    return stretches


@dataclass(frozen=True)
class Finished:
    """Energy and carbon of a site's finished tasks (placement estimates scaled by the
    device-seconds reported), with the tasks counted and those without a usage report."""

    energy: float
    carbon: float
    tasks: int
    unmetered: int


def metered_share(
    placement: Mapping[str, Any] | None, usage: Mapping[str, Any] | None, devices: int
) -> float | None:
    """The share of its placement's estimate (made for the planned duration) that a task used:
    the device-seconds its agent reported over those planned; None when it has no placement,
    no usage report or no planned duration."""
    used = (usage or {}).get("device_s")
    planned = float((placement or {}).get("duration_s") or 0.0) * devices
    if not placement or not isinstance(used, int | float) or planned <= 0:
        return None
    return float(used) / planned


def finished(session: Session, site_ids: list[str]) -> dict[str, Finished]:
    """Each site's finished work: the placement's estimate (for the planned duration) scaled by
    the device-seconds the agent reported; tasks with no usage report are counted apart, not
    guessed."""
    totals = {sid: {"energy": 0.0, "carbon": 0.0, "tasks": 0, "unmetered": 0} for sid in site_ids}
    if site_ids:
        rows = session.execute(
            select(TaskRow.site_id, TaskRow.devices, TaskRow.placement, TaskRow.usage).where(
                TaskRow.site_id.in_(site_ids), TaskRow.state.in_(TERMINAL_STATES)
            )
        )
        for site_id, devices, placement, usage in rows:
            total = totals[site_id]
            total["tasks"] += 1
            scale = metered_share(placement, usage, devices)
            if scale is None:
                total["unmetered"] += 1
                continue
            total["energy"] += float(placement.get("energy_kwh") or 0.0) * scale
            total["carbon"] += float(placement.get("carbon_kg") or 0.0) * scale
    return {
        sid: Finished(float(t["energy"]), float(t["carbon"]), int(t["tasks"]), int(t["unmetered"]))
        for sid, t in totals.items()
    }


def principal_names(session: Session, ids: set[str]) -> dict[str, str]:
    """Each principal's name (its id when unknown)."""
    found = dict(
        session.execute(select(Principal.id, Principal.name).where(Principal.id.in_(ids)))
        .tuples()
        .all()
    )
    return {i: found.get(i, i) for i in ids}


def earnings(session: Session, owner_ids: set[str]) -> dict[str, int]:
    """Each provider's receivable balance, fen (what the platform owes it)."""
    return {o: market.balance(session, ledger.receivable(o)) for o in owner_ids}


# --- /metrics -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Gauges:
    """What `/metrics` reports of the store: tasks by state, queued tasks with no pool yet,
    agents heard from recently."""

    tasks_by_state: Mapping[str, int]
    unplaced: int
    agents: int


def task_counts(session: Session) -> dict[str, int]:
    """Tasks per state."""
    rows = session.execute(select(TaskRow.state, func.count()).group_by(TaskRow.state))
    return {state: int(n) for state, n in rows}


def gauges(session: Session, agents_within_s: float) -> Gauges:
    """The /metrics gauges; an agent counts when it heartbeat within `agents_within_s` (on the
    unit of work's clock)."""
    moment = now(session)
    unplaced = session.scalar(
        select(func.count())
        .select_from(TaskRow)
        .where(TaskRow.state == "QUEUED", TaskRow.pool_id.is_(None))
    )
    agents = session.scalar(
        select(func.count())
        .select_from(AgentRow)
        .where(AgentRow.last_heartbeat_at >= moment - timedelta(seconds=agents_within_s))
    )
    return Gauges(task_counts(session), int(unplaced or 0), int(agents or 0))
