"""The scheduling pass: read the queue and capacity, decide with the engine, write the decisions.

The pass is the only writer of a task's pool. It survives any one task: a task the engine cannot
read or place is ended SYSTEM_ERROR with the reason, and the rest of the pass goes on.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from suanli.catalog import Pool, find_place, zone_provinces
from suanli.errors import InvalidValue, SuanliError
from suanli.metering import (
    EFFICIENCY,
    find_device,
    match_devices,
    parse_kind,
    parse_precision,
    parse_workload,
)
from suanli.scheduler import LatencyTier, Plan, Policy, Snapshot, Task, place, policy_named
from suanli.services.capacity import REFERENCE_DEVICE, engine_site, free_devices, held_devices
from suanli.services.core import (
    State,
    append_event,
    aware,
    now,
    transition,
)
from suanli.services.tasks import DEFAULT_DURATION_S, settle
from suanli.store.models import (
    PoolRow,
    SiteRow,
    TaskRow,
)

log = logging.getLogger("suanli.scheduler")


def _latency_tier(value: str) -> LatencyTier:
    try:
        return LatencyTier(value)
    except ValueError:
        accepted = ", ".join(tier.value for tier in LatencyTier)
        raise InvalidValue(
            "latency_tier", value, f"one of {accepted}", f"{accepted} 之一"
        ) from None


def engine_task(row: TaskRow, created: datetime) -> Task:
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
    held = held_devices(session)
    sites = {row.id: engine_site(row) for row in session.scalars(select(SiteRow))}
    pools = tuple(
        Pool(
            p.id,
            p.site_id,
            find_device(p.device),
            p.count + (p.queue_depth or 0),  # the engine's queue extends what may be placed
            free_devices(p, held, queue=True),
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
                tasks.append(engine_task(row, row.created_at))
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
            settle(session, row)
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
