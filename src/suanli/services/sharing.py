"""Quotas and fair share (issue 15, item 3): which queued tasks the pass may decide now, in
what order, and which running tasks it preempts (the decisions of item 4).

`gate(session, queue, owners, inputs, moment)` reads the groups, their members, what every
group holds now and the device-hours each used this period, and returns a `Gate` over the pure
rule (`scheduler.fairshare`: weighted dominant-resource fairness across device kinds):

* `next_batch(capacity)`: the next queued tasks, in fair-share order, whose devices fit what
  is free (per device kind and pool); all of them when nothing contends (their demand fits, or
  only one group has work queued), so that without groups nothing changes;
* `placed(task_ids)`: the pass placed these (their groups now hold more);
* `refused(task_ids)`: admission refused these placements (they preempt nothing);
* `waits`: task -> why it waits for its group's quota (at its cap) or share (its turn);
* `preempt`: running task -> why it is preempted: borrowed work (a group above its guarantee)
  giving devices back to a group below its guarantee, or preemptible work giving way to
  non-preemptible work, when those queued tasks could not be placed otherwise. Each choice is
  checked with the decision step (the task, pinned to the pool, with the victims' devices
  free, is placed).

Reads (one query each, only what the pass needs): the groups; the grouped consumers; the tasks
holding devices (with their owners' groups, their `preemptible` flag and whether a preemption
was already asked); with groups, the ended tasks of grouped consumers this period (their
`usage.device_s`); when preemption is considered, the `preemptible` flag of the waiting tasks.

Used device-hours this period (for caps and as the tie-break): ended tasks count the
device-seconds their agents reported, at most devices x the time from the period's start to
their end; tasks holding devices count devices x the time since they last changed state (when
they were leased or started) or since the period's start.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select, true
from sqlalchemy.orm import Session

from suanli.scheduler import Action, QueuedTask, decide, policy_named
from suanli.scheduler.decide import Capacity
from suanli.scheduler.fairshare import (
    PUBLIC,
    FairShare,
    Group,
    Holding,
    PoolSlot,
    period_start,
    public_group,
)
from suanli.services.capacity import HOLDING, StepInputs
from suanli.services.core import State, aware
from suanli.store.models import GroupRow, Principal, TaskRow

ENDED = (
    State.COMPLETE.value,
    State.EXECUTOR_ERROR.value,
    State.SYSTEM_ERROR.value,
    State.CANCELED.value,
    State.PREEMPTED.value,
)
RUNNING = (State.INITIALIZING.value, State.RUNNING.value)
VERIFY_POLICY = "cost"  # a pinned task's placement does not depend on the policy's weights


def _preemptible_column() -> Any:
    return TaskRow.spec["preemptible"].as_boolean()


@dataclass
class Gate:
    """The pass's view of quotas and fair share for one pass (see the module docstring)."""

    fair: FairShare
    session: Session | None = None
    inputs: StepInputs | None = None
    loaded: bool = True  # whether `fair` has every holding the preemption rules need
    _free: dict[str, int] = field(default_factory=dict)
    _capacity: Capacity | None = None
    _preempt: dict[str, str] | None = None

    def next_batch(self, capacity: Capacity) -> list[QueuedTask]:
        self._capacity = capacity
        self._free = {pool: capacity.free(pool) for pool in self.fair.pools}
        return self.fair.next_batch(self._free)

    def placed(self, task_ids: Iterable[str]) -> None:
        self.fair.placed(list(task_ids))

    def refused(self, task_ids: Iterable[str]) -> None:
        """Admission refused these placements (the consumer cannot pay): freeing devices for
        them would not place them, so they preempt nothing."""
        self.fair.refused_ids.update(task_ids)

    @property
    def waits(self) -> dict[str, str]:
        return self.fair.waits

    @property
    def preempt(self) -> dict[str, str]:
        """Computed once, after the rounds (the tasks left unplaced are known then)."""
        if self._preempt is None:
            self._preempt = self._preemptions()
        return self._preempt

    def _preemptions(self) -> dict[str, str]:
        fair = self.fair
        if self.session is None or self.inputs is None:
            return {}
        if all(q.task.id in fair.placed_ids for q in fair.queue):
            return {}
        session, inputs = self.session, self.inputs
        if not self.loaded:  # without groups only preemptible running work can give way
            fair.add_holdings([h for h, _, _ in _holdings(session, grouped=False)])
            self.loaded = True
        if not fair.holdings:
            return {}
        free = self._free or {pool: inputs.capacity.free(pool) for pool in fair.pools}
        capacity = self._capacity or inputs.capacity

        def preemptible(ids: Sequence[str]) -> dict[str, bool]:
            spot = fair.preemptible()
            return {ident: ident in spot for ident in ids}

        def verify(q: QueuedTask, pool: str, freed: int) -> bool:
            found = capacity.pools.get(pool)
            if found is None:
                return False
            room = Capacity({pool: dataclasses.replace(found, held=max(0, found.held - freed))})
            pinned = dataclasses.replace(q, pinned_pool=pool)
            policy = q.policy or policy_named(VERIFY_POLICY)
            (decision,) = decide([pinned], inputs.network, room, policy, inputs.clock_s)
            return decision.action in (Action.PLACE, Action.WAIT)

        return fair.preemptions(free, inputs.clock_s, preemptible, verify)


def _queued_preemptible(session: Session) -> set[str]:
    """The queued, unplaced tasks that are preemptible (one query, no list of ids)."""
    return set(
        session.scalars(
            select(TaskRow.id).where(
                TaskRow.state == State.QUEUED.value,
                TaskRow.pool_id.is_(None),
                _preemptible_column().is_(true()),
            )
        )
    )


def _groups(session: Session) -> dict[str, GroupRow]:
    return {row.id: row for row in session.scalars(select(GroupRow).order_by(GroupRow.id))}


def _holdings(session: Session, grouped: bool) -> list[tuple[Holding, datetime, str]]:
    """Every task holding devices now: (holding, since when, state). Without groups, only
    preemptible running ones matter (the victims of rule (b))."""
    query = (
        select(
            TaskRow.id,
            Principal.group_id,
            TaskRow.pool_id,
            TaskRow.devices,
            TaskRow.updated_at,
            TaskRow.state,
            TaskRow.preempt_requested,
            TaskRow.cancel_requested,
            _preemptible_column(),
        )
        .join(Principal, Principal.id == TaskRow.owner_id)
        .where(TaskRow.pool_id.is_not(None), TaskRow.state.in_(HOLDING))
    )
    if not grouped:
        query = query.where(TaskRow.state.in_(RUNNING), _preemptible_column().is_(true()))
    found = []
    for ident, group, pool, devices, since, state, asked, canceling, flag in session.execute(query):
        running = state in RUNNING and not canceling
        holding = Holding(
            ident,
            group or PUBLIC,
            pool,
            int(devices),
            aware(since).timestamp(),
            bool(flag),
            running,
            bool(asked),
        )
        found.append((holding, aware(since), str(state)))
    return found


def _used_hours(
    session: Session,
    rows: Mapping[str, GroupRow],
    holdings: Sequence[tuple[Holding, datetime, str]],
    moment: datetime,
) -> dict[str, float]:
    """Device-hours each group used in its current period (see the module docstring)."""
    starts = {ident: period_start(row.period, moment) for ident, row in rows.items()}
    used = dict.fromkeys(rows, 0.0)
    if not starts:
        return used
    earliest = min(starts.values())
    ended = session.execute(
        select(Principal.group_id, TaskRow.devices, TaskRow.usage, TaskRow.updated_at)
        .join(Principal, Principal.id == TaskRow.owner_id)
        .where(
            Principal.group_id.is_not(None),
            TaskRow.state.in_(ENDED),
            TaskRow.updated_at >= earliest,
        )
    )
    for group, devices, usage, at in ended:
        start = starts.get(group)
        if start is None or aware(at) < start:
            continue
        device_s = float((usage or {}).get("device_s") or 0.0)
        bound = int(devices) * (aware(at) - start).total_seconds()
        used[group] += min(device_s, max(0.0, bound)) / 3600
    for holding, since, state in holdings:
        start = starts.get(holding.group)
        if start is None or state == State.QUEUED.value:
            continue
        held_s = (moment - max(since, start)).total_seconds()
        used[holding.group] += holding.devices * max(0.0, held_s) / 3600
    return used


def gate(
    session: Session,
    queue: Sequence[QueuedTask],
    owners: Mapping[str, str],
    inputs: StepInputs,
    moment: datetime,
) -> Gate:
    """The pass's gate (see the module docstring); `owners`: task -> owner id."""
    moment = aware(moment)
    rows = _groups(session)
    pools = {
        p.id: PoolSlot(p.id, p.device.kind.value, p.device.id, p.count)
        for p in inputs.network.pools
    }
    task_group: dict[str, str] = {}
    if rows:
        members: dict[str, str | None] = {
            ident: group
            for ident, group in session.execute(
                select(Principal.id, Principal.group_id).where(Principal.group_id.is_not(None))
            )
        }
        task_group = {task: members.get(owner) or PUBLIC for task, owner in owners.items()}
    held = _holdings(session, grouped=True) if rows else []  # without groups: when needed
    used = _used_hours(session, rows, held, moment)
    groups = {
        ident: Group(
            ident,
            row.name,
            int(row.guaranteed_bp),
            row.cap_device_hours,
            used.get(ident, 0.0),
            row.period,
        )
        for ident, row in rows.items()
    }
    groups[PUBLIC] = public_group(groups.values())
    fair = FairShare(
        groups,
        pools,
        [h for h, _, _ in held],
        list(queue),
        task_group,
        spot=lambda: _queued_preemptible(session),
    )
    return Gate(fair, session, inputs, loaded=bool(rows))
