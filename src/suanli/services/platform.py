"""The platform's use cases: sites, pools, tasks, agents, leases and the scheduling pass.

Each public function is one unit of work on an open session: it validates, changes rows, appends
events to the audit chain and returns; `api` commits (or rolls back on error), so nothing is
ever half-written. Ownership: a consumer sees only its tasks, a provider only its sites, pools,
agents and the tasks placed there, the operator everything; anything else is `NotFound` (404),
so ids do not leak. `submit` with an idempotency key creates one task per (owner, key) even
when requests race: the insert runs in a savepoint and the loser returns the winner's task.

Agents act with their provider's token or with an agent token issued for one site
(`issue_agent_token`): such a token registers, heartbeats, leases and reports only for agents of
that site (`site_scope`); anything else is `AgentScope` (403).

Leases: an agent leases tasks placed on its site; a heartbeat renews those it lists as running
(only those: a task the agent dropped keeps its expiry); `expire_leases` puts a task whose lease
ran out back in the queue (counted in `requeues`), so it is never lost and never run by two
agents at once: reports from an agent that no longer holds the lease are refused (409).

Input: every task spec passes the API's task model (`api.schemas.check_task_spec`) before it is
stored, whichever edge built it. The scheduling pass survives any one task all the same (a row
stored before a check existed): a task the engine cannot read or place is ended SYSTEM_ERROR
with the reason, and the rest of the pass goes on.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Collection
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from suanli.api.schemas import check_task_spec
from suanli.catalog import Pool, Site, find_place, find_site, provider_site, zone_provinces
from suanli.errors import FieldError, InvalidValue, SuanliError
from suanli.metering import (
    EFFICIENCY,
    find_device,
    match_devices,
    parse_kind,
    parse_precision,
    parse_workload,
)
from suanli.scheduler import LatencyTier, Plan, Policy, Snapshot, Task, place, policy_named
from suanli.services.core import (
    TERMINAL,
    AgentScope,
    Conflict,
    NotFound,
    Role,
    State,
    append_event,
    aware,
    issue_token,
    new_id,
    now,
    require,
    transition,
)
from suanli.store.models import (
    AgentRow,
    EventRow,
    PoolRow,
    Principal,
    SiteRow,
    TaskRow,
    Token,
)

log = logging.getLogger("suanli.scheduler")
HOLDING = (State.QUEUED.value, State.INITIALIZING.value, State.RUNNING.value, State.PAUSED.value)
REFERENCE_DEVICE = {"gpu": "A100 SXM4", "npu": "Ascend 910B", "cpu": "cpu"}
DEFAULT_DURATION_S = 60.0
DEFAULT_ORIGIN = "北京"
MAX_LIST_WINDOW = 2**31 - 1  # the largest offset or limit list_tasks hands the database


# --- sites and pools ----------------------------------------------------------------------------


def add_site(session: Session, who: Principal, spec: dict[str, Any]) -> SiteRow:
    """A provider's site: a catalog cluster (`cluster`) or a province with coordinates."""
    require(who, Role.PROVIDER, Role.OPERATOR)
    cluster = spec.get("cluster")
    if cluster:
        try:
            site = find_site(cluster)
        except SuanliError as error:
            raise FieldError("cluster", cluster, error) from None
        province, lat, lon = site.provinces[0], site.lat, site.lon
        pue = spec.get("pue") or site.pue
        green = site.green_share if spec.get("green_share") is None else spec["green_share"]
    else:
        where = spec.get("province")
        if not where:
            raise InvalidValue("province", None, "a province (or give cluster)", "省份（或集群）")
        try:
            place_ = find_place(where)
        except SuanliError as error:
            raise FieldError("province", where, error) from None
        province = place_.province_zh
        lat = place_.lat if spec.get("lat") is None else float(spec["lat"])
        lon = place_.lon if spec.get("lon") is None else float(spec["lon"])
        pue = spec.get("pue") or 1.42
        green = spec.get("green_share") or 0.0
        provider_site("check", province, pue=pue, green_share=green)  # validates the factors
    row = SiteRow(
        id=f"{who.id}/{new_id('site')}",
        owner_id=who.id,
        name=spec["name"],
        cluster_id=find_site(cluster).id if cluster else None,
        province=province,
        lat=float(lat),
        lon=float(lon),
        pue=float(pue),
        green_share=float(green),
        created_at=now(),
    )
    session.add(row)
    append_event(
        session,
        "site.added",
        row.id,
        who.id,
        {"name": row.name, "province": province, "cluster": row.cluster_id},
    )
    return row


def _own_site(session: Session, who: Principal, site_id: str) -> SiteRow:
    site = session.get(SiteRow, site_id)
    if site is None or (who.role != Role.OPERATOR.value and site.owner_id != who.id):
        raise NotFound("site", site_id)
    return site


def add_pool(session: Session, who: Principal, spec: dict[str, Any]) -> PoolRow:
    require(who, Role.PROVIDER, Role.OPERATOR)
    site = _own_site(session, who, spec["site_id"])
    try:
        device = find_device(spec["device"])
    except SuanliError as error:
        raise FieldError("device", spec["device"], error) from None
    row = PoolRow(
        id=f"{site.id}/{new_id('pool')}",
        site_id=site.id,
        device=device.id,
        count=int(spec["count"]),
        price_fen_per_device_hour=int(spec["price_fen_per_device_hour"]),
        queue_depth=int(spec.get("queue_depth") or 0),
        created_at=now(),
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
    held = _held(session)
    pools = session.scalars(select(PoolRow).order_by(PoolRow.created_at))
    return [(p, _free(p, held)) for p in pools]


def _free(pool: PoolRow, held: dict[str, int], *, queue: bool = False) -> int:
    """Devices of a pool neither held by suanli's tasks nor busy with the engine's other work;
    with `queue`, plus the pool's `queue_depth` (work that may wait in the engine's own queue,
    for engines that have one, such as Slurm; 0 by default): what placement may use."""
    free = pool.count - held.get(pool.id, 0) - (pool.unavailable or 0)
    return max(0, free + ((pool.queue_depth or 0) if queue else 0))


def _held(session: Session) -> dict[str, int]:
    rows = session.execute(
        select(TaskRow.pool_id, func.sum(TaskRow.devices))
        .where(TaskRow.pool_id.is_not(None), TaskRow.state.in_(HOLDING))
        .group_by(TaskRow.pool_id)
    )
    return {pool_id: int(total) for pool_id, total in rows if pool_id is not None}


# --- tasks --------------------------------------------------------------------------------------


def _check_spec(spec: dict[str, Any]) -> None:
    """A task spec must pass the API's task model (`check_task_spec`: types, bounds, enums, no
    NUL, task paths) whichever edge built it (native, TES, console), and its names must
    resolve; errors name the field."""
    check_task_spec(spec)
    resources = spec["resources"]
    for field, parse, value in (
        ("resources.device_kind", parse_kind, resources["device_kind"]),
        ("resources.precision", parse_precision, resources["precision"]),
        ("resources.workload", parse_workload, resources["workload"]),
    ):
        try:
            parse(value)
        except SuanliError as error:
            raise FieldError(field, value, error) from None
    for n, name in enumerate(resources.get("device_models") or []):
        try:
            match_devices(name)
        except SuanliError as error:
            raise FieldError(f"resources.device_models[{n}]", name, error) from None
    try:
        find_place(spec["origin"])
    except SuanliError as error:
        raise FieldError("origin", spec["origin"], error) from None
    if spec.get("policy"):
        policy_named(spec["policy"])
    for n, zone in enumerate(spec.get("zones") or []):
        try:
            zone_provinces(zone)
        except SuanliError as error:
            raise FieldError(f"zones[{n}]", zone, error) from None


def submit(
    session: Session, who: Principal, spec: dict[str, Any], idempotency_key: str | None
) -> tuple[TaskRow, bool]:
    """A new task (QUEUED), or the one this key already created: (task, created).

    Safe under concurrency: the row is inserted inside a SAVEPOINT, and when a concurrent
    request with the same key wins the unique index (owner, key), the savepoint is rolled back
    and that request's task is returned; only the creator appends `task.submitted`."""
    require(who, Role.CONSUMER, Role.OPERATOR)
    idempotency_key = (idempotency_key or "").strip() or None

    def existing() -> TaskRow | None:
        return session.scalars(
            select(TaskRow).where(
                TaskRow.owner_id == who.id, TaskRow.idempotency_key == idempotency_key
            )
        ).first()

    if idempotency_key:
        found = existing()
        if found is not None:
            return found, False
    spec = {**spec, "origin": spec.get("origin") or DEFAULT_ORIGIN}
    _check_spec(spec)
    moment = now()
    row = TaskRow(
        id=new_id("task"),
        owner_id=who.id,
        idempotency_key=idempotency_key,
        name=spec.get("name") or "",
        state=State.QUEUED.value,
        spec=spec,
        devices=int(spec["resources"]["devices"]),
        policy=spec.get("policy") or "",
        pool_id=None,
        site_id=None,
        placement=None,
        unplaced_reason="waiting for a scheduling pass",
        agent_id=None,
        lease_expires_at=None,
        cancel_requested=False,
        requeues=0,
        exit_code=None,
        stdout_tail=None,
        stderr_tail=None,
        usage=None,
        created_at=moment,
        updated_at=moment,
    )
    if idempotency_key:
        try:
            with session.begin_nested():  # a key conflict undoes only this insert
                session.add(row)
                session.flush()
        except IntegrityError:
            found = existing()  # READ COMMITTED: the winner has committed by now
            if found is None:
                raise
            return found, False
    else:
        session.add(row)
    append_event(
        session,
        "task.submitted",
        row.id,
        who.id,
        {"devices": row.devices, "kind": spec["resources"]["device_kind"]},
    )
    return row, True


def _visible(session: Session, who: Principal, task: TaskRow | None, ident: str) -> TaskRow:
    if task is None:
        raise NotFound("task", ident)
    if who.role == Role.OPERATOR.value or task.owner_id == who.id:
        return task
    if who.role == Role.PROVIDER.value and task.site_id is not None:
        site = session.get(SiteRow, task.site_id)
        if site is not None and site.owner_id == who.id:
            return task
    raise NotFound("task", ident)


def get_task(session: Session, who: Principal, ident: str) -> TaskRow:
    return _visible(session, who, session.get(TaskRow, ident), ident)


def list_tasks(
    session: Session,
    who: Principal,
    state: str | None,
    limit: int | None,
    *,
    name_prefix: str | None = None,
    offset: int = 0,
) -> list[TaskRow]:
    """The tasks `who` may see, newest first; `limit` None means all. Bounds are checked here
    too (an offset or limit beyond 32 bits, a NUL in the prefix), so that no caller can hand
    the database a value it cannot take."""
    for field, number, low in (("offset", offset, 0), ("limit", limit, 1)):
        if number is not None and not low <= number <= MAX_LIST_WINDOW:
            raise InvalidValue(
                field, number, f"{low} to {MAX_LIST_WINDOW}", f"{low} 到 {MAX_LIST_WINDOW}"
            )
    if name_prefix and "\x00" in name_prefix:
        raise InvalidValue(
            "name_prefix", name_prefix, "text without NUL characters", "不含 NUL 字符的文本"
        )
    query = (
        select(TaskRow)
        .order_by(TaskRow.created_at.desc(), TaskRow.id.desc())
        .offset(offset)
        .limit(limit)
    )
    if name_prefix:
        query = query.where(TaskRow.name.startswith(name_prefix, autoescape=True))
    if state:
        try:
            query = query.where(TaskRow.state == State(state.upper()).value)
        except ValueError:
            accepted = ", ".join(s.value for s in State)
            raise InvalidValue("state", state, f"one of {accepted}", f"{accepted} 之一") from None
    if who.role == Role.CONSUMER.value:
        query = query.where(TaskRow.owner_id == who.id)
    elif who.role == Role.PROVIDER.value:
        owned = select(SiteRow.id).where(SiteRow.owner_id == who.id)
        query = query.where(TaskRow.site_id.in_(owned))
    return list(session.scalars(query))


def task_events(session: Session, task_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Each task's state changes from the audit chain, oldest first: `{"at", "from", "to",
    "reason", "actor"}`. The caller has already checked visibility."""
    found: dict[str, list[dict[str, Any]]] = {task_id: [] for task_id in task_ids}
    if not task_ids:
        return found
    events = session.scalars(
        select(EventRow)
        .where(EventRow.kind == "task.state", EventRow.subject.in_(task_ids))
        .order_by(EventRow.seq)
    )
    for event in events:
        found[event.subject].append({"at": aware(event.at), "actor": event.actor, **event.data})
    return found


def task_histories(session: Session, task_ids: list[str]) -> dict[str, list[str]]:
    """Each task's state changes as one line each (`<RFC 3339 time> FROM -> TO: reason`)."""
    return {
        task_id: [
            f"{e['at'].isoformat().replace('+00:00', 'Z')} {e['from']} -> {e['to']}: {e['reason']}"
            for e in events
        ]
        for task_id, events in task_events(session, task_ids).items()
    }


def cancel_task(session: Session, who: Principal, ident: str) -> TaskRow:
    task = session.get(TaskRow, ident, with_for_update=True)
    task = _visible(session, who, task, ident)
    if who.role == Role.PROVIDER.value and task.owner_id != who.id:
        raise NotFound("task", ident)
    state = State(task.state)
    if state in TERMINAL:
        raise Conflict(f"task {ident} already ended ({state.value})", f"任务 {ident} 已结束")
    if state is State.QUEUED:
        transition(session, task, State.CANCELED, "canceled before it started", who.id)
        task.pool_id = None
        _settle(session, task)
    else:  # the agent kills it at its next heartbeat and reports CANCELED
        task.cancel_requested = True
        task.updated_at = now()
        append_event(session, "task.cancel_requested", task.id, who.id, {})
    return task


# --- agents -------------------------------------------------------------------------------------


def issue_agent_token(
    session: Session, who: Principal, site_id: str, name: str, expires_in_s: float | None
) -> tuple[Token, str]:
    """A token for the agents of one of `who`'s sites (the token is returned once): it can
    register, heartbeat, lease and report for that site and nothing else."""
    require(who, Role.PROVIDER, Role.OPERATOR)
    site = _own_site(session, who, site_id)
    owner = session.get(Principal, site.owner_id) if who.id != site.owner_id else who
    if owner is None:
        raise NotFound("site", site_id)
    return issue_token(session, owner, name, who.id, site_id=site.id, expires_in_s=expires_in_s)


def register_agent(
    session: Session, who: Principal, spec: dict[str, Any], site_scope: str | None = None
) -> AgentRow:
    """A new agent of one of `who`'s sites; with an agent token (`site_scope`), only of that
    site (403 for any other)."""
    require(who, Role.PROVIDER, Role.OPERATOR)
    if site_scope is not None and spec["site_id"] != site_scope:
        raise AgentScope(site_scope)
    site = _own_site(session, who, spec["site_id"])
    moment = now()
    row = AgentRow(
        id=new_id("agent"),
        site_id=site.id,
        owner_id=who.id,
        name=spec.get("name") or "agent",
        slots=int(spec.get("slots") or 1),
        backend=spec.get("backend") or "local",
        registered_at=moment,
        last_heartbeat_at=moment,
    )
    session.add(row)
    append_event(session, "agent.registered", row.id, who.id, {"site": site.id})
    return row


def _own_agent(
    session: Session, who: Principal, agent_id: str, site_scope: str | None = None
) -> AgentRow:
    """`who`'s agent (any agent for the operator), else 404; with an agent token
    (`site_scope`), only an agent of that site (403 for another of `who`'s agents)."""
    agent = session.get(AgentRow, agent_id)
    if agent is None or (who.role != Role.OPERATOR.value and agent.owner_id != who.id):
        raise NotFound("agent", agent_id)
    if site_scope is not None and agent.site_id != site_scope:
        raise AgentScope(site_scope)
    return agent


def heartbeat(
    session: Session,
    who: Principal,
    agent_id: str,
    lease_s: float,
    capacity: dict[str, Any] | None = None,
    tails: dict[str, tuple[str, str]] | None = None,
    site_scope: str | None = None,
    running: Collection[str] = (),
) -> list[str]:
    """Renew the leases of the agent's tasks that it lists in `running` (and take its engine's
    capacity, and the output so far of its running tasks, if it sent them); the ids of its tasks
    that should be cancelled. A task the agent holds but no longer lists keeps its expiry, so the
    normal expiry puts it back in the queue: an agent that dropped a task cannot keep it leased."""
    agent = _own_agent(session, who, agent_id, site_scope)
    if capacity is not None:
        apply_capacity(session, agent, capacity)
    moment = now()
    agent.last_heartbeat_at = moment
    tasks = session.scalars(
        select(TaskRow)
        .where(TaskRow.agent_id == agent.id, TaskRow.state.in_(HOLDING[1:]))
        .with_for_update()
    ).all()
    listed = set(running)
    for task in tasks:
        if task.id not in listed:
            continue
        task.lease_expires_at = moment + timedelta(seconds=lease_s)
        if tails and task.id in tails and task.state == State.RUNNING.value:
            task.stdout_tail, task.stderr_tail = tails[task.id]  # live output, not a state change
    return [t.id for t in tasks if t.cancel_requested]


def apply_capacity(session: Session, agent: AgentRow, capacity: dict[str, Any]) -> None:
    """Size the pools of the agent's site from what its engine reports (`sinfo`, Ray's
    resources): a CPU pool gets the engine's CPUs, a GPU or NPU pool the accelerators of its
    model (or all of them when the engine does not name models); devices the engine reports
    busy beyond what suanli's own tasks hold there become `unavailable`. Each change is an
    audit event; an unchanged report writes nothing."""
    held = _held(session)
    by_model = {str(k).lower(): int(v) for k, v in (capacity.get("gpus_by_model") or {}).items()}
    pools = session.scalars(
        select(PoolRow).where(PoolRow.site_id == agent.site_id).order_by(PoolRow.id)
    ).all()
    for pool in pools:
        device = find_device(pool.device)
        if device.kind.value == "cpu":
            total, free = int(capacity["cpus"]), int(capacity["free_cpus"])
        else:
            matched = [n for model, n in by_model.items() if device.id in _device_ids(model)]
            total = sum(matched) if by_model else int(capacity.get("gpus") or 0)
            free = min(total, int(capacity.get("free_gpus") or 0))
        busy_outside = max(0, (total - free) - held.get(pool.id, 0))
        if (pool.count, pool.unavailable) == (total, busy_outside):
            continue
        append_event(
            session,
            "pool.capacity",
            pool.id,
            agent.id,
            {
                "count": [pool.count, total],
                "unavailable": [pool.unavailable, busy_outside],
                "reported": {k: capacity.get(k) for k in ("nodes", "cpus", "free_cpus", "gpus")},
            },
        )
        pool.count, pool.unavailable = total, busy_outside


def _device_ids(name: str) -> set[str]:
    """The catalog devices an engine's accelerator name (a gres type, a Ray resource) means."""
    try:
        return {d.id for d in match_devices(name)}
    except SuanliError:
        return set()


def lease(
    session: Session,
    who: Principal,
    agent_id: str,
    limit: int,
    lease_s: float,
    site_scope: str | None = None,
) -> list[TaskRow]:
    """Up to `limit` tasks placed on the agent's site, now INITIALIZING under its lease."""
    agent = _own_agent(session, who, agent_id, site_scope)
    moment = now()
    agent.last_heartbeat_at = moment
    query = (
        select(TaskRow)
        .where(
            TaskRow.state == State.QUEUED.value,
            TaskRow.site_id == agent.site_id,
            TaskRow.pool_id.is_not(None),
            TaskRow.cancel_requested.is_(False),
        )
        .order_by(TaskRow.created_at)
        .limit(max(0, limit))
        .with_for_update(skip_locked=True)
    )
    leased = list(session.scalars(query))
    for task in leased:
        transition(session, task, State.INITIALIZING, f"leased by {agent.id}", agent.id)
        task.agent_id = agent.id
        task.lease_expires_at = moment + timedelta(seconds=lease_s)
    return leased


def report(
    session: Session,
    who: Principal,
    task_id: str,
    spec: dict[str, Any],
    site_scope: str | None = None,
) -> TaskRow:
    """An agent's report of a task's progress; 409 unless it holds the task's lease."""
    agent = _own_agent(session, who, spec["agent_id"], site_scope)
    task = session.get(TaskRow, task_id, with_for_update=True)
    if task is None or task.site_id != agent.site_id:
        raise NotFound("task", task_id)
    if task.agent_id != agent.id or State(task.state) in TERMINAL:
        raise Conflict(
            f"agent {agent.id} does not hold task {task_id} (it may have been re-queued)",
            f"代理 {agent.id} 不再持有任务 {task_id}（可能已重新排队）",
        )
    to = State(spec["state"])
    if to is State.RUNNING and task.state == State.RUNNING.value:
        return task
    if to in TERMINAL:
        task.exit_code = spec.get("exit_code")
        task.stdout_tail = spec.get("stdout_tail")
        task.stderr_tail = spec.get("stderr_tail")
        task.usage = spec.get("usage")
        task.executor_logs = spec.get("executors") or None
        task.output_logs = spec.get("outputs") or None
    reason = spec.get("reason") or f"reported by {agent.id}"
    transition(session, task, to, reason, agent.id)
    if to in TERMINAL:
        task.lease_expires_at = None
        _settle(session, task)
    return task


def _settle(session: Session, task: TaskRow) -> None:
    """Settle the task's order, if it has one (the market owns the money)."""
    from suanli.services.market import settle_task  # the market builds on this module

    settle_task(session, task)


def expire_leases(session: Session) -> list[str]:
    """Put every task whose lease ran out back in the queue; their ids."""
    moment = now()
    stale = session.scalars(
        select(TaskRow)
        .where(TaskRow.state.in_(HOLDING[1:]), TaskRow.lease_expires_at < moment)
        .with_for_update()
    ).all()
    for task in stale:
        if task.cancel_requested:
            transition(session, task, State.CANCELED, "lease expired while cancelling", "server")
            _settle(session, task)
        else:
            transition(session, task, State.QUEUED, f"lease of {task.agent_id} expired", "server")
            task.requeues += 1
        task.agent_id = None
        task.lease_expires_at = None
        task.pool_id = None
        task.site_id = None
        task.placement = None
        task.unplaced_reason = "re-queued after a lease expired; waiting for a scheduling pass"
    return [t.id for t in stale]


# --- scheduling ---------------------------------------------------------------------------------


def _site(row: SiteRow) -> Site:
    if row.cluster_id:
        base = find_site(row.cluster_id)
        return replace(base, id=row.id, pue=row.pue, green_share=row.green_share)
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


def _latency_tier(value: str) -> LatencyTier:
    try:
        return LatencyTier(value)
    except ValueError:
        accepted = ", ".join(tier.value for tier in LatencyTier)
        raise InvalidValue(
            "latency_tier", value, f"one of {accepted}", f"{accepted} 之一"
        ) from None


def _task(row: TaskRow, created: datetime) -> Task:
    """The engine's view of a task row. Raises for a spec the engine cannot take (a row stored
    before today's validation, say): the pass ends such a task instead of failing."""
    spec, resources = row.spec, row.spec["resources"]
    kind = parse_kind(resources["device_kind"])
    precision = parse_precision(resources["precision"])
    workload = parse_workload(resources["workload"])
    work = resources.get("work_flop")
    if work is None:
        reference = find_device(REFERENCE_DEVICE[kind.value])
        peak = reference.peak_flops[reference.resolve_precision(precision)]
        duration = resources.get("duration_s") or DEFAULT_DURATION_S
        work = duration * row.devices * peak * EFFICIENCY[workload].value
    models = None
    if resources.get("device_models"):
        models = frozenset(d.id for n in resources["device_models"] for d in match_devices(n))
    deadline = None
    if spec.get("deadline_s") is not None:
        deadline = aware(created).timestamp() + float(spec["deadline_s"])
    return Task(
        id=row.id,
        devices=row.devices,
        device_kind=kind,
        precision=precision,
        work_flop=float(work),
        origin=find_place(spec["origin"]),
        latency_tier=_latency_tier(spec.get("latency_tier") or "batch"),
        workload=workload,
        device_models=models,
        memory_gb=float(resources.get("memory_gb") or 0.0),
        data_gb=float(spec.get("data_gb") or 0.0),
        deadline_s=deadline,
        max_price_fen=spec.get("max_price_fen"),
        allowed_provinces=(
            frozenset(p for zone in spec["zones"] for p in zone_provinces(zone))
            if spec.get("zones")
            else None
        ),
        deferrable=False,
    )


@dataclass(frozen=True)
class PassPlan:
    """What a scheduling pass decided, computed outside any write transaction."""

    placements: dict[str, tuple[str, str, dict[str, Any]]]  # task -> (pool, site, placement)
    reasons: dict[str, str]  # task -> why it is not placed
    # task -> why the engine cannot take it at all: `apply_pass` ends it SYSTEM_ERROR
    doomed: dict[str, str] = dataclasses.field(default_factory=dict)


def _doom_reason(error: Exception) -> str:
    detail = error.one_line() if isinstance(error, SuanliError) else repr(error)
    return f"the scheduler cannot place this task: {detail}"


def _place_surviving(
    tasks: list[Task], snapshot: Snapshot, policy: Policy, clock: float, doomed: dict[str, str]
) -> list[Plan]:
    """The engine's plan for `tasks`; if the engine fails on the batch, the tasks are placed one
    at a time (each on the capacity the earlier ones left), and those it fails on alone are
    added to `doomed` with the reason. So no one task stops the pass."""
    try:
        return [place(tasks, snapshot, policy, clock, solver="greedy")]
    except Exception:  # a task's data, not the pass, is at fault: find the task below
        pass
    plans = []
    free = {p.id: p.free for p in snapshot.pools}
    for task in tasks:
        pools = tuple(replace(p, free=free[p.id]) for p in snapshot.pools)
        try:
            plan = place([task], replace(snapshot, pools=pools), policy, clock, solver="greedy")
        except Exception as error:
            doomed[task.id] = _doom_reason(error)
            continue
        for placement in plan.placements:
            free[placement.pool] -= task.devices
        plans.append(plan)
    return plans


def _out_of_range(placement: dict[str, Any]) -> str | None:
    """Why a placement's figures cannot be stored (a cost beyond 64 bits, a non-finite
    number), or None."""
    cost = placement["cost_fen"]
    if not isinstance(cost, int) or not 0 <= cost < 2**63:
        return f"its cost is out of range ({cost} fen)"
    for key in ("energy_kwh", "carbon_kg", "latency_ms", "duration_s"):
        if not math.isfinite(placement[key]):
            return f"its {key} is not a finite number ({placement[key]})"
    return None


def plan_pass(session: Session, default_policy: str, since: datetime | None = None) -> PassPlan:
    """Read the queue and free capacity, and place with the engine (no rows are changed).

    `since`: only tasks submitted or re-queued after it (when capacity has not grown since the
    last pass, older queued tasks cannot have become placeable).
    """
    query = (
        select(TaskRow)
        .where(
            TaskRow.state == State.QUEUED.value,
            TaskRow.pool_id.is_(None),
            TaskRow.cancel_requested.is_(False),
        )
        .order_by(TaskRow.created_at)
    )
    if since is not None:
        query = query.where(TaskRow.updated_at >= since)
    pending = session.scalars(query).all()
    if not pending:
        return PassPlan({}, {})
    held = _held(session)
    sites = {row.id: _site(row) for row in session.scalars(select(SiteRow))}
    pools = tuple(
        Pool(
            p.id,
            p.site_id,
            find_device(p.device),
            p.count + (p.queue_depth or 0),  # the engine's queue extends what may be placed
            _free(p, held, queue=True),
            p.price_fen_per_device_hour,
        )
        for p in session.scalars(select(PoolRow).order_by(PoolRow.id))
    )
    if not pools:
        reason = "no pool is registered yet; waiting for providers"
        return PassPlan({}, {row.id: reason for row in pending if row.unplaced_reason != reason})
    clock = now().timestamp()
    from suanli.services.market import reputation as provider_reputation

    by_owner = provider_reputation(session)
    owners = {row.id: row.owner_id for row in session.scalars(select(SiteRow))}
    reputation = {sid: by_owner[owner] for sid, owner in owners.items() if owner in by_owner}
    by_policy: dict[str, list[TaskRow]] = {}
    for row in pending:
        by_policy.setdefault(row.policy or default_policy, []).append(row)
    free = {p.id: p.free for p in pools}
    placements: dict[str, tuple[str, str, dict[str, Any]]] = {}
    reasons: dict[str, str] = {}
    doomed: dict[str, str] = {}
    for policy_name, rows in sorted(by_policy.items()):
        try:
            policy = policy_named(policy_name)
        except SuanliError as error:
            if policy_name == default_policy:
                raise  # the operator's setting, not a task, is wrong: every pass says so
            doomed.update({row.id: _doom_reason(error) for row in rows})
            continue
        snapshot = Snapshot(
            tuple(replace(p, free=free[p.id]) for p in pools), sites, reputation=reputation
        )
        tasks = []
        for row in rows:
            try:
                tasks.append(_task(row, row.created_at))
            except Exception as error:  # a bad row must not stop the pass
                doomed[row.id] = _doom_reason(error)
        devices = {row.id: row.devices for row in rows}
        for plan in _place_surviving(tasks, snapshot, policy, clock, doomed):
            for placement in plan.placements:
                b = placement.breakdown
                figures = {
                    "pool": placement.pool,
                    "site": placement.site,
                    "cost_fen": b.cost_fen,
                    "energy_kwh": b.energy_kwh,
                    "carbon_kg": b.carbon_kg,
                    "latency_ms": b.latency_ms,
                    "runner_up": placement.runner_up,
                    "policy": policy_name,
                    "duration_s": b.duration_s,
                }
                wrong = _out_of_range(figures)
                if wrong is not None:
                    doomed[placement.task] = f"the scheduler cannot place this task: {wrong}"
                    continue
                placements[placement.task] = (placement.pool, placement.site, figures)
                free[placement.pool] -= devices[placement.task]
            current = {row.id: row.unplaced_reason for row in rows}
            reasons.update(
                {u.task: u.sentence for u in plan.unplaced if current[u.task] != u.sentence}
            )
    return PassPlan(placements, reasons, doomed)


def apply_pass(session: Session, decided: PassPlan) -> int:
    """Write a pass's decisions for the tasks still queued and unplaced; how many were placed.

    Only this pass assigns pools and capacity only grows between its read and its write (leases
    keep their pool; re-queues and completions free devices), so the plan cannot overfill a pool.
    A task the engine cannot take (`decided.doomed`) is ended SYSTEM_ERROR with the reason, its
    order (if any) settled, and logged once.
    """
    ids = list(decided.placements) + list(decided.reasons) + list(decided.doomed)
    if not ids:
        return 0
    rows = session.scalars(
        select(TaskRow)
        .where(
            TaskRow.id.in_(ids),
            TaskRow.state == State.QUEUED.value,
            TaskRow.pool_id.is_(None),
            TaskRow.cancel_requested.is_(False),
        )
        .with_for_update()
    ).all()
    placed = 0
    for row in rows:
        if row.id in decided.doomed:
            reason = decided.doomed[row.id]
            log.error("ending task %s (SYSTEM_ERROR): %s", row.id, reason)
            transition(session, row, State.SYSTEM_ERROR, reason, "scheduler")
            row.unplaced_reason = reason
            _settle(session, row)
        elif row.id in decided.placements:
            pool, site, placement = decided.placements[row.id]
            row.pool_id, row.site_id, row.placement = pool, site, placement
            row.unplaced_reason = None
            append_event(
                session,
                "task.placed",
                row.id,
                "scheduler",
                {
                    "pool": pool,
                    "cost_fen": placement["cost_fen"],
                    "carbon_kg": round(placement["carbon_kg"], 6),
                },
            )
            placed += 1
        elif row.unplaced_reason != decided.reasons[row.id]:
            row.unplaced_reason = decided.reasons[row.id]
    return placed


def task_counts(session: Session) -> dict[str, int]:
    rows = session.execute(select(TaskRow.state, func.count()).group_by(TaskRow.state))
    return {state: int(n) for state, n in rows}


def agent_count(session: Session, within_s: float) -> int:
    since = now() - timedelta(seconds=within_s)
    return int(
        session.scalar(
            select(func.count()).select_from(AgentRow).where(AgentRow.last_heartbeat_at >= since)
        )
        or 0
    )
