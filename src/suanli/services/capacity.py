"""Capacity: sites, pools, what suanli's tasks hold and what the engines report busy.

A pool's free devices are its count less the devices held by suanli's tasks (queued on it,
initializing, running, paused) and those its engine reports busy with other work
(`unavailable`, from the agent's heartbeat); a Slurm-like engine's own queue (`queue_depth`)
extends what placement may use.

The decision step's inputs are built here too: `step_inputs` (the network and capacity) and
`queued_with_duration` / `queued_task` (a stored task as the engine's: its spec through
`engine_task`, with a duration predicted from completed tasks when it gives none,
`services.runtimes`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from suanli.catalog import Pool, Site, find_place, find_site, latency, provider_site
from suanli.errors import FieldError, InvalidValue, SuanliError
from suanli.metering import (
    DeviceProfile,
    engine_device_ids,
    find_device,
)
from suanli.scheduler import (
    Booking,
    Capacity,
    Policy,
    PoolCapacity,
    QueuedTask,
    Snapshot,
    Task,
    engine_task,
    policy_named,
)
from suanli.scheduler.series import network_series, series_start
from suanli.services import carbon as carbon_service
from suanli.services import runtimes as runtime_service
from suanli.services.commands import PoolCommand, SiteCommand
from suanli.services.core import (
    Actor,
    NotFound,
    Role,
    State,
    append_event,
    aware,
    new_id,
    now,
    require,
)
from suanli.store.models import (
    AgentRow,
    PoolRow,
    SiteRow,
    TaskRow,
)

HOLDING = (State.QUEUED.value, State.INITIALIZING.value, State.RUNNING.value, State.PAUSED.value)


def add_site(session: Session, who: Actor, spec: SiteCommand) -> SiteRow:
    """A provider's site: a catalog cluster (`cluster`) or a province with coordinates."""
    require(who, Role.PROVIDER, Role.OPERATOR)
    cluster = spec.cluster
    if cluster:
        try:
            site = find_site(cluster)
        except SuanliError as error:
            raise FieldError("cluster", cluster, error) from None
        province, lat, lon = site.provinces[0], site.lat, site.lon
        pue = spec.pue or site.pue
        green = site.green_share if spec.green_share is None else spec.green_share
    else:
        where = spec.province
        if not where:
            raise InvalidValue("province", None, "a province (or give cluster)", "省份（或集群）")
        try:
            place_ = find_place(where)
        except SuanliError as error:
            raise FieldError("province", where, error) from None
        province = place_.province_zh
        lat = place_.lat if spec.lat is None else float(spec.lat)
        lon = place_.lon if spec.lon is None else float(spec.lon)
        pue = spec.pue or 1.42
        green = spec.green_share or 0.0
        provider_site("check", province, pue=pue, green_share=green)  # validates the factors
    row = SiteRow(
        id=f"{who.id}/{new_id('site')}",
        owner_id=who.id,
        name=spec.name,
        cluster_id=find_site(cluster).id if cluster else None,
        province=province,
        lat=float(lat),
        lon=float(lon),
        pue=float(pue),
        green_share=float(green),
        created_at=now(session),
        buckets=sorted(set(spec.buckets)) if spec.buckets else None,
    )
    session.add(row)
    append_event(
        session,
        "site.added",
        row.id,
        who.id,
        {
            "name": row.name,
            "province": province,
            "cluster": row.cluster_id,
            "buckets": row.buckets or [],
        },
    )
    return row


def own_site(session: Session, who: Actor, site_id: str) -> SiteRow:
    site = session.get(SiteRow, site_id)
    if site is None or (who.role != Role.OPERATOR.value and site.owner_id != who.id):
        raise NotFound("site", site_id)
    return site


def add_pool(session: Session, who: Actor, spec: PoolCommand) -> PoolRow:
    """A pool of `spec.count` devices at one of `who`'s sites (any site for the operator)."""
    require(who, Role.PROVIDER, Role.OPERATOR)
    site = own_site(session, who, spec.site_id)
    try:
        device = find_device(spec.device)
    except SuanliError as error:
        raise FieldError("device", spec.device, error) from None
    row = PoolRow(
        id=f"{site.id}/{new_id('pool')}",
        site_id=site.id,
        device=device.id,
        count=int(spec.count),
        price_fen_per_device_hour=int(spec.price_fen_per_device_hour),
        queue_depth=int(spec.queue_depth or 0),
        created_at=now(session),
    )
    session.add(row)
    append_event(
        session,
        "pool.added",
        row.id,
        who.id,
        {
            "device": device.id,
            "count": row.count,
            "price_fen_per_device_hour": row.price_fen_per_device_hour,
            "queue_depth": row.queue_depth,
        },
    )
    return row


def list_sites(session: Session) -> list[SiteRow]:
    return list(session.scalars(select(SiteRow).order_by(SiteRow.created_at)))


def list_pools(session: Session) -> list[tuple[PoolRow, int]]:
    """Every pool with its free device count now."""
    held = held_devices(session)
    pools = session.scalars(select(PoolRow).order_by(PoolRow.created_at))
    return [(p, free_devices(p, held)) for p in pools]


def free_devices(pool: PoolRow, held: dict[str, int], *, queue: bool = False) -> int:
    """Devices of a pool neither held by suanli's tasks nor busy with the engine's other work;
    with `queue`, plus the pool's `queue_depth` (work that may wait in the engine's own queue,
    for engines that have one, such as Slurm; 0 by default): what placement may use."""
    free = pool.count - held.get(pool.id, 0) - (pool.unavailable or 0)
    return max(0, free + ((pool.queue_depth or 0) if queue else 0))


def held_devices(session: Session) -> dict[str, int]:
    rows = session.execute(
        select(TaskRow.pool_id, func.sum(TaskRow.devices))
        .where(TaskRow.pool_id.is_not(None), TaskRow.state.in_(HOLDING))
        .group_by(TaskRow.pool_id)
    )
    return {pool_id: int(total) for pool_id, total in rows if pool_id is not None}


def apply_capacity(session: Session, agent: AgentRow, capacity: dict[str, Any]) -> None:
    """Size the pools of the agent's site from what its engine reports (`sinfo`, Ray's
    resources): a CPU pool gets the engine's CPUs, a GPU or NPU pool the accelerators of its
    model (or all of them when the engine does not name models); devices the engine reports
    busy beyond what suanli's own tasks hold there become `unavailable`. Each change is an
    audit event; an unchanged report writes nothing."""
    held = held_devices(session)
    by_model = {str(k).lower(): int(v) for k, v in (capacity.get("gpus_by_model") or {}).items()}
    nodes = [n for n in capacity.get("per_node") or () if isinstance(n, dict)]
    pools = session.scalars(
        select(PoolRow).where(PoolRow.site_id == agent.site_id).order_by(PoolRow.id)
    ).all()
    for pool in pools:
        device = find_device(pool.device)
        if device.kind.value == "cpu":
            total, free = int(capacity["cpus"]), int(capacity["free_cpus"])
        else:
            matched = [n for model, n in by_model.items() if device.id in engine_device_ids(model)]
            total = sum(matched) if by_model else int(capacity.get("gpus") or 0)
            free = min(total, int(capacity.get("free_gpus") or 0))
        busy_outside = max(0, (total - free) - held.get(pool.id, 0))
        per_node = _devices_per_node(nodes, device, bool(by_model), total)
        if (pool.count, pool.unavailable, pool.devices_per_node) == (
            total,
            busy_outside,
            per_node,
        ):
            continue
        append_event(
            session,
            "pool.capacity",
            pool.id,
            agent.id,
            {
                "count": [pool.count, total],
                "unavailable": [pool.unavailable, busy_outside],
                "devices_per_node": [pool.devices_per_node, per_node],
                "reported": {k: capacity.get(k) for k in ("nodes", "cpus", "free_cpus", "gpus")},
            },
        )
        pool.count, pool.unavailable = total, busy_outside
        pool.devices_per_node = per_node


def _devices_per_node(
    nodes: list[dict[str, Any]], device: DeviceProfile, named: bool, total: int
) -> int | None:
    """The most devices of a pool's model that one node of the engine holds (`per_node` of the
    agent's capacity: CPUs for a CPU pool, accelerators of the model, or of any model when the
    engine names none); None when the engine does not report nodes or none holds any."""
    most = 0
    for node in nodes:
        if device.kind.value == "cpu":
            n = int(node.get("cpus") or 0)
        else:
            models = {str(k).lower(): int(v) for k, v in (node.get("gpus_by_model") or {}).items()}
            n = sum(v for k, v in models.items() if not named or device.id in engine_device_ids(k))
        most = max(most, n)
    return min(most, total) if most and total else None


def engine_site(row: SiteRow) -> Site:
    if row.cluster_id:
        base = find_site(row.cluster_id)
        # its place stays the cluster's: the catalog's published latencies apply, as in the twin
        return replace(base, id=row.id, pue=row.pue, green_share=row.green_share, place_id=base.id)
    return provider_site(
        row.id,
        row.province,
        pue=row.pue,
        green_share=row.green_share,
        lat=row.lat,
        lon=row.lon,
        name_en=row.name,
        name_zh=row.name,
    )


def data_moves(spec: Mapping[str, Any], site: SiteRow) -> bool:
    """Whether a task's data must move to reach `site`: its place (`data_location`, else its
    `origin`) is not the site's, by the engine's own rule (a distance above zero)."""
    where = spec.get("data_location") or spec.get("origin")
    if not where:
        return False
    return latency(find_place(where), engine_site(site).place).distance_km > 0


# --- the decision step's inputs ------------------------------------------------------------


@dataclass(frozen=True)
class StepInputs:
    """What `scheduler.decide` needs from the store, read at one moment: the network (pools
    with their device count, sites, provider reputation, the hourly price and carbon series
    from local midnight), one `Capacity` (count, held by suanli's tasks, unavailable, the
    engine's queue depth per pool) and the clock in seconds."""

    network: Snapshot
    capacity: Capacity
    clock_s: float


def bookings(session: Session, clock: float) -> tuple[Booking, ...]:
    """The devices known to be held ahead, as the twin keeps them (`Capacity.booked`): each task
    holding a pool's devices, from its placement's start until its expected end (one running
    past it books nothing ahead: it holds its devices now, `held_devices`), and each deferred
    task's booking, from its hour until the end of its run on the pool it was deferred on."""
    found: list[Booking] = []
    holding = session.execute(
        select(TaskRow.pool_id, TaskRow.devices, TaskRow.placement).where(
            TaskRow.pool_id.is_not(None), TaskRow.state.in_(HOLDING)
        )
    )
    for pool, devices, placement in holding:
        figures = placement if isinstance(placement, dict) else {}
        end = figures.get("end_s")
        if pool is None or not isinstance(end, int | float):
            continue  # placed before placements kept their span: held now, not booked ahead
        start = figures.get("start_s")
        found.append(
            Booking(pool, int(devices), float(start if start is not None else clock), float(end))
        )
    deferred = session.execute(
        select(TaskRow.booked_pool_id, TaskRow.devices, TaskRow.not_before, TaskRow.booked_until)
        .where(
            TaskRow.state == State.QUEUED.value,
            TaskRow.pool_id.is_(None),
            TaskRow.booked_pool_id.is_not(None),
            TaskRow.not_before.is_not(None),
            TaskRow.booked_until.is_not(None),
        )
        .order_by(TaskRow.id)
    )
    for pool, devices, start, end in deferred:
        if pool is None or start is None or end is None:
            continue  # (the query leaves these out; for the type checker)
        found.append(Booking(pool, int(devices), aware(start).timestamp(), aware(end).timestamp()))
    return tuple(found)


def step_inputs(session: Session, moment: datetime, *, booked: bool = True) -> StepInputs:
    """The ONE builder of the decision step's network and capacity (the pass and quotes use it;
    the twin builds the same shapes from its own model). Series: `scheduler.series`, the twin's
    construction, from the local (UTC+8) midnight at or before `moment`, with the carbon of
    provinces whose intensity is observed from their observations and forecast
    (`services.carbon.observed_series`). `booked`: with the
    devices held ahead (`bookings`), which only a deferral reads."""
    from suanli.services.market import pricing_rules  # market imports us
    from suanli.services.market import reputation as provider_reputation

    clock = aware(moment).timestamp()
    site_rows = list(session.scalars(select(SiteRow).order_by(SiteRow.id)))
    sites = {row.id: engine_site(row) for row in site_rows}
    by_owner = provider_reputation(session)
    reputation = {row.id: by_owner[row.owner_id] for row in site_rows if row.owner_id in by_owner}
    held = held_devices(session)
    pools: list[Pool] = []
    capacity: dict[str, PoolCapacity] = {}
    for p in session.scalars(select(PoolRow).order_by(PoolRow.id)):
        if p.count < 1:
            continue  # an engine that reports no devices: the pool can take nothing now
        # `decide` adds the engine's queue (`queue_depth`) to the count the engine sees
        pools.append(
            Pool(
                p.id,
                p.site_id,
                find_device(p.device),
                p.count,
                0,  # ignored by decide: `capacity` says what is free
                p.price_fen_per_device_hour,
                devices_per_node=(
                    None if p.devices_per_node is None else min(p.devices_per_node, p.count)
                ),
            )
        )
        capacity[p.id] = PoolCapacity(
            p.count, held.get(p.id, 0), p.unavailable or 0, p.queue_depth or 0
        )
    start_s, local_hour, month = series_start(clock)
    # carbon: observed and forecast where the operator feeds a province's intensity, else the
    # documented daily shape
    series = carbon_service.observed_series(session, sites, network_series(sites, month), start_s)
    network = Snapshot(
        tuple(pools),
        sites,
        reputation=reputation,
        series=series,
        series_start_s=start_s,
        local_hour_at_start=local_hour,
        # the market's network price of data moved to a site (`data_moves`): the engine weighs
        # what the order will be charged
        transfer_fen_per_gb=float(pricing_rules(session).network_fen_per_gb),
    )
    ahead = bookings(session, clock) if booked else ()
    return StepInputs(network, Capacity(capacity, ahead), clock)


# task id -> its engine task and where its duration came from (`runtimes.Duration`), with the
# version of the run-time model it used (None: its spec gives its work or duration). A stored spec
# and its submission time never change, so the pass converts each queued task once, not at every
# pass, and again only when a predicted duration's model is refitted (bounded: the oldest go
# first)
_ENGINE_TASKS: OrderedDict[str, tuple[Task, runtime_service.Duration, int | None]] = OrderedDict()
ENGINE_TASK_CACHE = 100_000


class QueuedRow(Protocol):
    """What the decision step needs of a queued task row (a `TaskRow`, or a row of its
    columns)."""

    @property
    def id(self) -> str: ...
    @property
    def owner_id(self) -> str: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def queued_at(self) -> datetime | None: ...
    @property
    def policy(self) -> str: ...
    @property
    def not_before(self) -> datetime | None: ...
    @property
    def pinned_pool_id(self) -> str | None: ...
    @property
    def booked_pool_id(self) -> str | None: ...


def _version(runtime: runtime_service.Runtimes | None) -> int:
    return 0 if runtime is None else runtime.version  # 0: no model (the engine's default)


def cached_task(ident: str, runtime: runtime_service.Runtimes | None = None) -> bool:
    """Whether the pass has this task's engine task, converted with this run-time model when
    its duration depends on one."""
    found = _ENGINE_TASKS.get(ident)
    return found is not None and found[2] in (None, _version(runtime))


def queued_task(
    row: QueuedRow,
    policies: dict[str, Policy],
    spec: Mapping[str, Any] | None,
    *,
    cache: bool = False,
    runtime: runtime_service.Runtimes | None = None,
) -> QueuedTask:
    """The decision step's view of a queued task row: `queued_with_duration` without the
    duration's source."""
    return queued_with_duration(row, policies, spec, cache=cache, runtime=runtime)[0]


def queued_with_duration(
    row: QueuedRow,
    policies: dict[str, Policy],
    spec: Mapping[str, Any] | None,
    *,
    cache: bool = False,
    runtime: runtime_service.Runtimes | None = None,
) -> tuple[QueuedTask, runtime_service.Duration]:
    """The decision step's view of a queued task row, and where its duration came from (raises
    `SuanliError` or a lookup error for a spec or policy the engine cannot read: the pass
    rejects such a task with the reason). THE place a stored spec becomes the engine's task
    for the pass and for quotes: a spec without `resources.work_flop` or `duration_s` gets the
    duration `runtimes.duration` predicts with `runtime` (the database's run-time model; None:
    the engine's default, as on an empty platform), handed to `engine_task` in a copy of the
    spec. `policies` caches the named policies between rows. With `cache` (the pass: stored
    tasks only, never a quote's probe), the engine task is converted once per task id (and
    model, for a predicted duration); `spec` may then be None for a task converted before
    (`cached_task`)."""
    created = aware(row.created_at).timestamp()
    policy = None
    if row.policy:
        if row.policy not in policies:
            policies[row.policy] = policy_named(row.policy)
        policy = policies[row.policy]
    found = _ENGINE_TASKS.get(row.id) if cache else None
    if found is not None and not cached_task(row.id, runtime):
        found = None
    if found is None:
        if spec is None:
            raise ValueError(f"the spec of task {row.id} was not read")
        made = runtime_service.duration(row.owner_id, spec, runtime)
        task = engine_task(row.id, runtime_service.engine_spec(spec, made), created)
        found = (task, made, _version(runtime) if made.from_model else None)
        if cache:
            _ENGINE_TASKS[row.id] = found
            if len(_ENGINE_TASKS) > ENGINE_TASK_CACHE:
                _ENGINE_TASKS.popitem(last=False)
    task, made = found[0], found[1]
    # the wait in the queue (`max_wait_s`, fair share's FIFO) counts from when the task last
    # entered it: a task preempted or re-queued after a week of running is not "waited too long"
    entered = created if row.queued_at is None else aware(row.queued_at).timestamp()
    queued = QueuedTask(
        task=task,
        submitted_s=entered,
        policy=policy,
        not_before_s=None if row.not_before is None else aware(row.not_before).timestamp(),
        pinned_pool=row.pinned_pool_id,
        booked_pool=row.booked_pool_id,
    )
    return queued, made
