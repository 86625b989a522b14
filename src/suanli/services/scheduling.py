"""The scheduling pass: read the queue and capacity, call the one decision step, write decisions.

`plan_pass` reads (no rows change): the queued unplaced tasks and, through the one builder
(`capacity.step_inputs`), the network (pools, sites, reputation, the twin's hourly price and
carbon series) and one `Capacity`; then `scheduler.decide` says, per task, PLACE / WAIT /
QUEUE / REJECT. `apply_pass` writes them under `FOR UPDATE`:

* PLACE: the task's pool, site and placement figures (the pass is the only writer of a task's
  pool; an accepted quote's task is pinned to its pool and placed there or nowhere), with where
  its duration came from (`placement.runtime`: given, or predicted from completed tasks like
  it, `services.runtimes`);
* WAIT: deferred to a cheaper or greener hour within its deadline: `tasks.not_before` and the
  reason ("deferred ... until <time>"), an audit event `task.deferred`; the task holds nothing
  now and is decided again once the clock reaches that time (then it starts, never waits
  twice). Its booking (`tasks.booked_pool_id`, `booked_until`: the pool the engine deferred it
  on, to the end of its run there) is held ahead: a later deferral goes only to hours with room
  beside it, and when its hour comes the task takes that pool first, as the twin's deferrals do;
* QUEUE: the engine's reason why not now (`unplaced_reason`); a deferral whose hour came and
  could not start there loses its booking;
* REJECT: ended SYSTEM_ERROR with the reason (a spec or policy the engine cannot read, figures
  it cannot store, or more than `max_wait_s` in the queue), its order settled; the rest of the
  pass goes on.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from suanli.errors import SuanliError
from suanli.scheduler import Action, Decision, Policy, QueuedTask, decide, policy_named
from suanli.scheduler.decide import DEFAULT_MAX_WAIT_S
from suanli.services import admission, preemption, sharing
from suanli.services import runtimes as runtime_service
from suanli.services.capacity import StepInputs, cached_task, queued_with_duration, step_inputs
from suanli.services.core import State, append_event, aware, now, transition
from suanli.services.sharing import Gate
from suanli.services.tasks import settle
from suanli.store.models import TaskRow

log = logging.getLogger("suanli.scheduler")


@dataclass(frozen=True)
class Deferral:
    """A WAIT decision as stored: until when, why, and the booking ahead (pool, end of run)."""

    until: datetime
    reason: str
    pool: str | None
    booked_until: datetime | None


@dataclass(frozen=True)
class PassPlan:
    """What a scheduling pass decided, computed outside any write transaction."""

    placements: dict[str, tuple[str, str, dict[str, Any]]]  # task -> (pool, site, placement)
    reasons: dict[str, str]  # task -> why it is not placed (changed reasons only)
    # task -> why the engine cannot take it at all: `apply_pass` ends it SYSTEM_ERROR
    doomed: dict[str, str] = dataclasses.field(default_factory=dict)
    # task -> its deferral: newly deferred tasks
    deferred: dict[str, Deferral] = dataclasses.field(default_factory=dict)
    decisions: tuple[Decision, ...] = ()  # every decision of the step, in queue order
    # task -> the priced offer its order is opened with (admission), for each placement
    offers: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    # running task -> why the pass asks its agent to preempt it
    preempt: dict[str, str] = dataclasses.field(default_factory=dict)
    # deferred tasks whose hour came and that did not start: their bookings are dropped
    unbooked: frozenset[str] = frozenset()

    @property
    def writes(self) -> bool:
        """Whether `apply_pass` has anything to write."""
        return bool(
            self.placements
            or self.reasons
            or self.doomed
            or self.deferred
            or self.preempt
            or self.unbooked
        )


def _doom_reason(error: Exception) -> str:
    detail = error.one_line() if isinstance(error, SuanliError) else repr(error)
    return f"the scheduler cannot place this task: {detail}"


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


def figures(decision: Decision) -> dict[str, Any]:
    """The stored placement of a PLACE or WAIT decision."""
    placement = decision.placement
    if placement is None:
        raise ValueError(f"decision {decision.action} for {decision.task} has no placement")
    b = placement.breakdown
    return {
        "pool": placement.pool,
        "site": placement.site,
        "cost_fen": b.cost_fen,
        "energy_kwh": b.energy_kwh,
        "carbon_kg": b.carbon_kg,
        "latency_ms": b.latency_ms,
        "runner_up": placement.runner_up,
        "policy": decision.policy,
        "duration_s": b.duration_s,
        # on the scheduler clock: what the pass books the pool for (its run from its start)
        "start_s": placement.start_s,
        "end_s": placement.end_s,
    }


def deferred_reason(decision: Decision, until: datetime) -> str:
    return f"{decision.reason}, until {until.isoformat()}"


QUEUED_COLUMNS = (
    TaskRow.id,
    TaskRow.owner_id,
    TaskRow.devices,
    TaskRow.created_at,
    TaskRow.queued_at,
    TaskRow.policy,
    TaskRow.not_before,
    TaskRow.pinned_pool_id,
    TaskRow.unplaced_reason,
    TaskRow.booked_pool_id,
)


def _specs(session: Session, ids: list[str], chunk: int = 500) -> dict[str, Any]:
    """The stored specs of these tasks (in chunks: a database bounds a statement's parameters)."""
    found: dict[str, Any] = {}
    for start in range(0, len(ids), chunk):
        rows = session.execute(
            select(TaskRow.id, TaskRow.spec).where(TaskRow.id.in_(ids[start : start + chunk]))
        )
        found.update({ident: spec for ident, spec in rows})
    return found


def plan_pass(
    session: Session,
    default_policy: str,
    since: datetime | None = None,
    *,
    moment: datetime | None = None,
    max_wait_s: float = DEFAULT_MAX_WAIT_S,
) -> PassPlan:
    """Read the queue and capacity at `moment` (default: now) and decide (no rows change).

    `since`: only tasks submitted or re-queued after it (when capacity has not grown since the
    last pass, older queued tasks cannot have become placeable), and deferred tasks whose time
    has come. The operator's `default_policy` must name a policy (raises otherwise: every pass
    says so); a task's own unknown policy ends that task alone.
    """
    moment = aware(moment or now(session))
    query = (
        select(*QUEUED_COLUMNS)  # not the spec: each task's is read once (`capacity.queued_task`)
        .where(
            TaskRow.state == State.QUEUED.value,
            TaskRow.pool_id.is_(None),
            TaskRow.cancel_requested.is_(False),
        )
        .order_by(TaskRow.created_at, TaskRow.id)
    )
    if since is not None:
        due = and_(TaskRow.not_before.is_not(None), TaskRow.not_before <= moment)
        query = query.where(or_(TaskRow.updated_at >= since, due))
    pending = session.execute(query).all()
    if not pending:
        return PassPlan({}, {})
    default = policy_named(default_policy)
    runtime = runtime_service.runtimes(session)  # kept between passes; refitted when stale
    specs = _specs(session, [row.id for row in pending if not cached_task(row.id, runtime)])
    policies: dict[str, Policy] = {}
    queue: list[QueuedTask] = []
    durations: dict[str, runtime_service.Duration] = {}
    doomed: dict[str, str] = {}
    for row in pending:
        try:
            queued, durations[row.id] = queued_with_duration(
                row, policies, specs.get(row.id), cache=True, runtime=runtime
            )
            queue.append(queued)
        except Exception as error:  # a bad row must not stop the pass
            doomed[row.id] = _doom_reason(error)
    # the bookings ahead matter only to a deferral: without a deferrable task, none are read
    inputs = step_inputs(session, moment, booked=any(q.task.deferrable for q in queue))
    owners = {row.id: row.owner_id for row in pending}
    decisions, refused, quota, offers = _rounds(
        session, queue, owners, inputs, default, moment, max_wait_s
    )
    rows = {row.id: row for row in pending}
    placements: dict[str, tuple[str, str, dict[str, Any]]] = {}
    reasons: dict[str, str] = {}
    deferred: dict[str, Deferral] = {}
    unbooked: set[str] = set()
    for decision in decisions:
        row = rows[decision.task]
        if decision.action is Action.PLACE:
            placed = {**figures(decision), "runtime": durations[row.id].as_json()}
            wrong = _out_of_range(placed)
            if wrong is not None:
                doomed[row.id] = f"the scheduler cannot place this task: {wrong}"
                continue
            placements[row.id] = (placed["pool"], placed["site"], placed)
        elif decision.action is Action.WAIT:
            if decision.not_before_s is None:
                raise ValueError(f"a WAIT decision for {decision.task} has no time")
            until = datetime.fromtimestamp(decision.not_before_s, UTC)
            if row.not_before is None or aware(row.not_before) != until:
                ahead = decision.placement
                deferred[row.id] = Deferral(
                    until,
                    deferred_reason(decision, until),
                    None if ahead is None else ahead.pool,
                    None if ahead is None else datetime.fromtimestamp(ahead.end_s, UTC),
                )
        elif decision.action is Action.QUEUE:
            if row.unplaced_reason != decision.reason:
                reasons[row.id] = decision.reason
            if row.booked_pool_id is not None:
                unbooked.add(row.id)
        else:
            doomed[row.id] = decision.reason
    for ident, reason in {**quota.waits, **refused}.items():
        if ident in rows and rows[ident].unplaced_reason != reason:
            reasons[ident] = reason
    return PassPlan(
        placements,
        reasons,
        doomed,
        deferred,
        decisions,
        offers={ident: offers[ident] for ident in placements if ident in offers},
        preempt=dict(quota.preempt),
        unbooked=frozenset(unbooked),
    )


MAX_ROUNDS = 4  # decide again for the capacity that refused or quota-held tasks left


def _rounds(
    session: Session,
    queue: list[QueuedTask],
    owners: dict[str, str],
    inputs: StepInputs,
    default: Policy,
    moment: datetime,
    max_wait_s: float,
) -> tuple[tuple[Decision, ...], dict[str, str], Gate, dict[str, dict[str, Any]]]:
    """The decision step in rounds: the gate (quotas, fair share) gives a batch of the queue
    that fits what is free; `decide` places it; admission prices each placement and refuses
    what its consumer cannot pay for (the task stays queued with the reason). The capacity a
    refused task or a quota left is offered to the next batch, up to `MAX_ROUNDS` rounds.
    Returns every decision (a refused placement becomes QUEUE with its reason), the refusals,
    the gate (its waits and preemptions) and the offers of the admitted placements."""
    quota = sharing.gate(session, queue, owners, inputs, moment)
    devices = {q.task.id: q.task.devices for q in queue}
    capacity = inputs.capacity
    decided: dict[str, Decision] = {}
    refused: dict[str, str] = {}
    offers: dict[str, dict[str, Any]] = {}
    for _ in range(MAX_ROUNDS):
        batch = quota.next_batch(capacity)
        if not batch:
            break
        step = decide(
            batch, inputs.network, capacity, default, inputs.clock_s, max_wait_s=max_wait_s
        )
        screened = admission.screen(session, step, owners, inputs, moment)
        quota.refused(screened.refused)  # a task its consumer cannot pay for preempts nothing
        held: dict[str, int] = {}
        admitted: list[str] = []
        for decision in step:
            reason = screened.refused.get(decision.task)
            if decision.action is Action.PLACE and reason is not None:
                refused[decision.task] = reason
                decided[decision.task] = dataclasses.replace(
                    decision, action=Action.QUEUE, reason=reason, placement=None
                )
                continue
            decided[decision.task] = decision
            if decision.action is Action.PLACE and decision.placement is not None:
                pool = decision.placement.pool
                held[pool] = held.get(pool, 0) + devices[decision.task]
                admitted.append(decision.task)
                if decision.task in screened.offers:
                    offers[decision.task] = dict(screened.offers[decision.task])
        quota.placed(admitted)
        capacity = capacity.with_held(held)
    return tuple(decided[q.task.id] for q in queue if q.task.id in decided), refused, quota, offers


def apply_pass(session: Session, decided: PassPlan) -> int:
    """Write a pass's decisions for the tasks still queued and unplaced; how many were placed.

    Only this pass assigns pools and capacity only grows between its read and its write (leases
    keep their pool; re-queues and completions free devices; a deferred task holds nothing), so
    the plan cannot overfill a pool. A task the engine cannot take (`decided.doomed`) is ended
    SYSTEM_ERROR with the reason, its order (if any) settled, and logged once.
    """
    ids = (
        list(decided.placements)
        + list(decided.reasons)
        + list(decided.doomed)
        + list(decided.deferred)
        + list(decided.unbooked)
    )
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
        .order_by(TaskRow.id)
        .with_for_update()
    ).all()
    placed = 0
    for row in rows:
        if row.id not in decided.deferred:  # placed, ended, or its hour came and went
            row.booked_pool_id = row.booked_until = None
        if row.id in decided.doomed:
            reason = decided.doomed[row.id]
            log.error("ending task %s (SYSTEM_ERROR): %s", row.id, reason)
            transition(session, row, State.SYSTEM_ERROR, reason, "scheduler")
            row.unplaced_reason = reason
            settle(session, row)
        elif row.id in decided.placements:
            pool, site, placement = decided.placements[row.id]
            refusal = _open_order(session, row, decided.offers.get(row.id))
            if refusal is not None:  # the money went since the plan: stays queued
                row.unplaced_reason = refusal
                continue
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
        elif row.id in decided.deferred:
            deferral = decided.deferred[row.id]
            row.not_before, row.unplaced_reason = deferral.until, deferral.reason
            row.booked_pool_id, row.booked_until = deferral.pool, deferral.booked_until
            data = {"until": deferral.until.isoformat()}
            if deferral.pool is not None:
                data["pool"] = deferral.pool
            append_event(session, "task.deferred", row.id, "scheduler", data)
        elif row.id in decided.reasons and row.unplaced_reason != decided.reasons[row.id]:
            row.unplaced_reason = decided.reasons[row.id]
    preemption.request(session, decided.preempt, "scheduler")
    return placed


def _open_order(session: Session, row: TaskRow, offer: dict[str, Any] | None) -> str | None:
    """Open the placed task's order (escrow held), in a savepoint: None when done (or when the
    task has its order already), else the reason it stays queued (nothing of it is written)."""
    if offer is None:
        return None
    try:
        with session.begin_nested():
            admission.open_order(session, row, offer)
    except SuanliError as refused:
        return str(refused)
    return None
