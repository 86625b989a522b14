"""The one decision step: `decide(queue, network, capacity, policy, clock) -> decisions`.

The live scheduling pass, quotes (a what-if on one task), the digital twin's tick and
`suanli schedule` all call this function, with inputs made by one builder each side of the
I/O line, so the twin describes the live system ("one scheduler, two clocks").

For every queued task it returns exactly one `Decision`:

* `PLACE`: start now on a pool (with the engine's placement: breakdown, score, runner-up);
* `WAIT`: deferred: the engine found that starting at `not_before_s` (a whole number of hours
  later, within the task's deadline) is cheaper or greener under the policy; the task stays in
  the queue, holds nothing, and is decided again once the clock reaches that time (it is then no
  longer deferrable, so it never waits twice);
* `QUEUE`: not placeable now (no capacity, no pool passing its constraints yet): stays queued
  with the engine's reason;
* `REJECT`: ended: the task waited longer than `max_wait_s`, or the engine cannot read it at
  all (the reason says which); one bad task never stops the others.

Order of decision: tasks pinned to a pool (accepted quotes: their money is in escrow) first,
each on its pool alone; then the rest grouped by policy (in name order, then weights), each
group placed by the engine on the capacity the earlier groups left. Within one call, a deferred
task's devices are not offered to later tasks (conservative, and the same in every caller).
The engine is handed only the tasks that could start now (room on a pool they may use, in
time for their deadline), and of those the first `window` (DEFAULT_WINDOW) in queue order: the
caller's queue order is its priority order, and a pass costs what the free devices can take.

Capacity: a pool may take `PoolCapacity.free` devices now, its engine's queue included; the
engine sees the pool with `count + queue_depth` devices (so that its occupancy, the `load`
objective, is measured against what may be placed, as the live pass always did).

Pure: no I/O, no clock of its own (`clock` is given, seconds on the scheduler clock).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

import numpy as np

from suanli import checks
from suanli.catalog import Pool
from suanli.errors import InvalidValue, SuanliError
from suanli.scheduler.arrays import CACHED_NETWORKS, BoolArray, open_pools
from suanli.scheduler.engine import place
from suanli.scheduler.model import (
    Booking,
    FloatArray,
    Placement,
    Plan,
    Policy,
    Snapshot,
    Task,
)

NO_POOLS = "no pool is registered yet; waiting for providers"
BLOCKED = "no pool it may use has {devices} free devices now with time to end by its deadline"
BEHIND = "behind {window} earlier tasks that may start now: each pass looks at the first {window}"
DEFAULT_MAX_WAIT_S = 7 * 86400.0
# the engine is handed at most this many of the tasks that could start now, in queue order (as
# Slurm's scheduler looks only at the first `default_queue_depth` jobs): a pass then costs what
# the free devices can take, not what the queue holds, when a burst queues thousands of them
DEFAULT_WINDOW = 1000


class Action(StrEnum):
    PLACE = "place"
    WAIT = "wait"
    QUEUE = "queue"
    REJECT = "reject"


@dataclass(frozen=True, slots=True)
class PoolCapacity:
    """What one pool can take now: its devices, those suanli's tasks hold, those its engine
    reports busy with other work, and the engine's own queue (Slurm's pending jobs) that
    placement may fill beyond the free devices."""

    count: int
    held: int = 0
    unavailable: int = 0
    queue_depth: int = 0

    @property
    def free(self) -> int:
        return max(0, self.count - self.held - self.unavailable + self.queue_depth)


@dataclass(frozen=True)
class Capacity:
    """Pool id -> `PoolCapacity`: one picture of capacity for every caller; `booked`: devices
    known to be held ahead (running work until its expected end, deferred work from its hour),
    which a deferral must leave room for (`engine._with_room`)."""

    pools: Mapping[str, PoolCapacity] = field(default_factory=dict)
    booked: tuple[Booking, ...] = ()

    def free(self, pool: str) -> int:
        found = self.pools.get(pool)
        return 0 if found is None else found.free

    def queue_depth(self, pool: str) -> int:
        found = self.pools.get(pool)
        return 0 if found is None else max(0, found.queue_depth)

    def with_held(self, more: Mapping[str, int]) -> Capacity:
        """This capacity with `more` devices held per pool (what an earlier round placed)."""
        if not more:
            return self
        pools = dict(self.pools)
        for pool, devices in more.items():
            found = pools.get(pool)
            if found is not None:
                pools[pool] = replace(found, held=found.held + devices)
        return Capacity(pools, self.booked)


@dataclass(frozen=True, slots=True)
class QueuedTask:
    """A task in the queue: the engine's task and what the queue knows about it."""

    task: Task
    submitted_s: float  # when it entered the queue (for `max_wait_s`)
    policy: Policy | None = None  # None: the caller's default policy
    not_before_s: float | None = None  # deferred until then by an earlier decision
    pinned_pool: str | None = None  # an accepted quote's pool: placed there or nowhere
    booked_pool: str | None = None  # its deferral's pool: tried first when its hour comes


@dataclass(frozen=True, slots=True)
class Decision:
    task: str
    action: Action
    reason: str = ""
    placement: Placement | None = None  # PLACE and WAIT: the engine's placement
    not_before_s: float | None = None  # WAIT: when to decide again
    policy: str = ""
    # QUEUE from the engine: constraint name -> number of pools it ruled out
    reasons: Mapping[str, int] = field(default_factory=dict)

    @property
    def pool(self) -> str | None:
        return None if self.placement is None else self.placement.pool


def _failure(error: Exception) -> str:
    detail = error.one_line() if isinstance(error, SuanliError) else repr(error)
    return f"the scheduler cannot place this task: {detail}"


def _with(pool: Pool, count: int, free: int) -> Pool:
    """`pool` with this count and free count (itself when unchanged: a replay's idle pools
    cost nothing)."""
    if pool.count == count and pool.free == free:
        return pool
    return replace(pool, count=count, free=free)


def _snapshot(
    network: Snapshot,
    free: Mapping[str, int],
    extra: Mapping[str, int],
    only: str | None = None,
    booked: Sequence[Booking] = (),
) -> Snapshot:
    """`network` with each pool's free devices now; `extra`: its engine's queue depth, added to
    its count (so that free never exceeds count); `booked`: the devices held ahead."""
    pools: tuple[Pool, ...] = tuple(
        _with(p, p.count + extra.get(p.id, 0), free.get(p.id, 0))
        for p in network.pools
        if only in (None, p.id)
    )
    return replace(network, pools=pools, booked=tuple(booked))


def _place_each(
    tasks: list[Task],
    network: Snapshot,
    free: dict[str, int],
    extra: Mapping[str, int],
    policy: Policy,
    clock: float,
    explain: bool = True,
    booked: Sequence[Booking] = (),
) -> tuple[list[Plan], dict[str, str]]:
    """The engine's plan for `tasks` on `free` (and `booked` ahead); if the engine fails on the
    batch, each task alone (on what the earlier ones left), so that a task the engine fails on
    is rejected alone."""
    if not tasks:
        return [], {}
    snapshot = _snapshot(network, free, extra, booked=booked)
    try:
        plan = place(tasks, snapshot, policy, clock, solver="greedy", explain_unplaced=explain)
        return [plan], {}
    except Exception:  # a task's data, not the step, is at fault: find the task below
        pass
    plans, failed = [], {}
    left = dict(free)
    for task in tasks:
        try:
            plan = place(
                [task],
                _snapshot(network, left, extra, booked=booked),
                policy,
                clock,
                solver="greedy",
                explain_unplaced=explain,
            )
        except Exception as error:
            failed[task.id] = _failure(error)
            continue
        for placement in plan.placements:
            left[placement.pool] -= task.devices
        plans.append(plan)
    return plans, failed


# Which pools each task may ever use, and the least time it takes there (`arrays.open_pools`),
# do not change while it waits, so they are kept for the Task objects a caller passes again (a
# replay's queue keeps them; the live pass reads its tasks anew each pass and works them out
# each time), per network: its sites (by identity), pools (by id, site and device) and tiers.
_Open = tuple[BoolArray, FloatArray]
_OPEN: list[tuple[object, tuple[Any, ...], dict[int, tuple[Task, _Open | None]]]] = []
_OPEN_LOCK = threading.Lock()
OPEN_TASKS_KEPT = 200_000  # a network's entries are dropped past this many (then built again)
# a task is left out for its deadline only when it misses it everywhere by more than this (s):
# the engine's own test, in its own arithmetic, decides the close cases
DEADLINE_MARGIN_S = 1.0


def _open_rows(tasks: Sequence[Task], network: Snapshot) -> list[_Open | None]:
    """`open_pools` of each task on `network` (a row of each array), from the memo where it
    has them; None for a task the arrays cannot read (the engine then rejects it alone)."""
    key = (
        tuple((p.id, p.site_id, p.device.id) for p in network.pools),
        tuple(sorted(network.tier_rtt_ms.items())),
        network.bandwidth_gbps,
    )
    with _OPEN_LOCK:
        memo = next((m for s, k, m in _OPEN if s is network.sites and k == key), None)
        if memo is None:
            memo = {}
            _OPEN.insert(0, (network.sites, key, memo))
            del _OPEN[CACHED_NETWORKS:]
        elif len(memo) > OPEN_TASKS_KEPT:
            memo.clear()
        found = [memo.get(id(task)) for task in tasks]
    rows: list[_Open | None] = []
    missing: list[int] = []
    for n, (entry, task) in enumerate(zip(found, tasks, strict=True)):
        if entry is not None and entry[0] is task:
            rows.append(entry[1])
        else:
            rows.append(None)
            missing.append(n)
    if missing:
        new = [tasks[n] for n in missing]
        made: list[_Open | None]
        try:
            mask, least = open_pools(new, network)
            made = list(zip(mask, least, strict=True))
        except Exception:  # a task the arrays cannot read: work each out alone
            made = []
            for task in new:
                try:
                    one, time = open_pools([task], network)
                    made.append((one[0], time[0]))
                except Exception:
                    made.append(None)
        with _OPEN_LOCK:
            for n, task, row in zip(missing, new, made, strict=True):
                rows[n] = row
                memo[id(task)] = (task, row)  # the task is kept: its id is never reused
    return rows


def _blocked(
    tasks: Sequence[Task], network: Snapshot, free: Mapping[str, int], clock: float
) -> list[bool]:
    """For each task, whether no pool it may use has its devices free now with time to end by
    its deadline: then no placement in this call can take it (free devices only fall within a
    call, a start only gets later, and the engine's repair moves a task only onto a pool with
    room, which it would have taken itself). A task the arrays cannot read is never blocked
    (the engine rejects it)."""
    if not tasks:
        return []
    room = np.array([free.get(p.id, 0) for p in network.pools], dtype=np.int64)
    rows = _open_rows(tasks, network)
    unread = (np.ones(len(network.pools), dtype=bool), np.zeros(len(network.pools)))
    open_ = np.array([(unread if row is None else row)[0] for row in rows], dtype=bool)
    least = np.array([(unread if row is None else row)[1] for row in rows], dtype=float)
    needs = np.array([task.devices for task in tasks], dtype=np.int64)
    deadline = np.array([np.inf if t.deadline_s is None else t.deadline_s for t in tasks])
    in_time = clock + least <= deadline[:, None] + DEADLINE_MARGIN_S
    fits = (open_ & in_time & (room[None, :] >= needs[:, None])).any(axis=1)
    readable = np.array([row is not None for row in rows], dtype=bool)
    return [bool(x) for x in readable & ~fits]


def _group_key(policy: Policy) -> tuple[str, str]:
    weights = sorted((o.value, w) for o, w in policy.weights.items())
    return policy.name, repr((weights, policy.tie_break.value))


def decide(
    queue: Sequence[QueuedTask],
    network: Snapshot,
    capacity: Capacity,
    policy: Policy,
    clock: float,
    *,
    max_wait_s: float = DEFAULT_MAX_WAIT_S,
    explain: bool = True,
    window: int = DEFAULT_WINDOW,
) -> tuple[Decision, ...]:
    """One decision per queued task, in queue order (see the module docstring).

    `window`: the engine is handed at most this many tasks that could start now (those with
    room on a pool they may use), the first in queue order across groups; the others stay
    QUEUE, behind them (`BEHIND`), and are not explained by the engine.

    `explain=False`: a QUEUE decision from the engine carries a short reason and no counts per
    constraint (the same actions and placements; for replays, which never show the reasons).

    `network`: the pools (their `count`, device, price), sites, reputation and the hourly price
    and carbon series; its pools' `free` is ignored: `capacity` says what is free now.
    """
    checks.positive("window", window)
    seen: set[str] = set()
    for queued in queue:
        if queued.task.id in seen:
            raise InvalidValue("queue.task.id", queued.task.id, "unique task ids", "唯一的任务 id")
        seen.add(queued.task.id)
    decided: dict[str, Decision] = {}
    free = {p.id: capacity.free(p.id) for p in network.pools}
    extra = {p.id: capacity.queue_depth(p.id) for p in network.pools}
    pools = {p.id for p in network.pools}
    waiting: list[QueuedTask] = []
    for queued in queue:
        task = queued.task
        if clock - queued.submitted_s > max_wait_s:
            decided[task.id] = Decision(
                task.id,
                Action.REJECT,
                f"waited too long: more than {max_wait_s / 3600:g} h in the queue",
            )
        elif queued.not_before_s is not None and clock < queued.not_before_s:
            decided[task.id] = Decision(
                task.id,
                Action.WAIT,
                "deferred to a cheaper or greener hour",
                not_before_s=queued.not_before_s,
            )
        elif not pools:
            decided[task.id] = Decision(task.id, Action.QUEUE, NO_POOLS)
        else:
            if queued.not_before_s is not None and task.deferrable:
                task = replace(task, deferrable=False)  # its hour has come: never wait twice
                queued = replace(queued, task=task)
            waiting.append(queued)

    def record(plan: Plan, name: str) -> None:
        for placement in plan.placements:
            start = placement.start_s
            if start > clock:
                decided[placement.task] = Decision(
                    placement.task,
                    Action.WAIT,
                    f"deferred {placement.waited_s / 3600:g} h to a cheaper or greener hour "
                    f"(saves {placement.saved_fen} fen, {placement.saved_carbon_kg:.3f} kg CO2 "
                    f"market-based, {placement.saved_carbon_location_kg:.3f} kg location-based)",
                    placement,
                    start,
                    name,
                )
            else:
                decided[placement.task] = Decision(
                    placement.task, Action.PLACE, "", placement, None, name
                )
            free[placement.pool] -= devices[placement.task]
            booked.append(Booking(placement.pool, devices[placement.task], start, placement.end_s))
        for unplaced in plan.unplaced:
            decided[unplaced.task] = Decision(
                unplaced.task,
                Action.QUEUE,
                unplaced.sentence,
                policy=name,
                reasons=unplaced.reasons,
            )

    devices = {q.task.id: q.task.devices for q in waiting}
    booked = list(capacity.booked)  # and what this call starts or defers, as it goes

    def alone(queued: QueuedTask, pool: str, explain_unplaced: bool) -> Plan:
        """The engine's plan for one task on one pool (what the calls so far left)."""
        return place(
            [queued.task],
            _snapshot(network, free, extra, pool, booked),
            queued.policy or policy,
            clock,
            solver="greedy",
            explain_unplaced=explain_unplaced,
        )

    for queued in waiting:  # pinned first, each on its own pool
        if queued.pinned_pool is None:
            continue
        chosen = queued.policy or policy
        if queued.pinned_pool not in pools:
            decided[queued.task.id] = Decision(
                queued.task.id,
                Action.QUEUE,
                f"the quoted pool {queued.pinned_pool} is not in the network",
                policy=chosen.name,
            )
            continue
        try:
            plan = alone(queued, queued.pinned_pool, True)
        except Exception as error:
            decided[queued.task.id] = Decision(
                queued.task.id, Action.REJECT, _failure(error), policy=chosen.name
            )
            continue
        record(plan, chosen.name)
    # a deferral whose hour has come takes its booked pool first, where that has room (its
    # deferral was decided on that pool's room ahead); elsewhere it is decided with the others
    for queued in waiting:
        pool = queued.booked_pool
        if queued.pinned_pool is not None or pool is None or pool not in pools:
            continue
        if free.get(pool, 0) < queued.task.devices:
            continue
        try:
            plan = alone(queued, pool, False)
        except Exception:  # decided with the others below (and rejected there, alone)
            continue
        if plan.placements:
            record(plan, (queued.policy or policy).name)
    # two policies of one name (custom weights) are two groups: key by name, then weights
    groups: dict[tuple[str, str], tuple[Policy, list[Task]]] = {}
    keys: dict[int, tuple[str, str]] = {}  # id of a policy -> its group's key (one per policy)
    for queued in waiting:
        if queued.pinned_pool is None and queued.task.id not in decided:
            chosen = queued.policy or policy
            key = keys.get(id(chosen))
            if key is None:
                key = keys[id(chosen)] = _group_key(chosen)
            groups.setdefault(key, (chosen, []))[1].append(queued.task)
    # a task no pool it may use has room for now is left out of the engine's call (its
    # decision is the same: QUEUE); with explanations, the engine explains it after its group
    unpinned = [task for _, tasks in groups.values() for task in tasks]
    out = _blocked(unpinned, network, free, clock)
    blocked = {task.id for task, no_room in zip(unpinned, out, strict=True) if no_room}
    could = [
        q.task.id
        for q in waiting
        if q.pinned_pool is None and q.task.id not in blocked and q.task.id not in decided
    ]
    behind = set(could[window:])  # queue order, across groups
    for key in sorted(groups):
        chosen, tasks = groups[key]
        runnable = [task for task in tasks if task.id not in blocked and task.id not in behind]
        left_out = [task for task in tasks if task.id in blocked]
        for task in tasks:
            if task.id in behind:
                decided[task.id] = Decision(
                    task.id, Action.QUEUE, BEHIND.format(window=window), policy=chosen.name
                )
        plans, failed = _place_each(runnable, network, free, extra, chosen, clock, explain, booked)
        for plan in plans:
            record(plan, chosen.name)
        if left_out and explain:  # the engine says why, on what its group left
            plans, more = _place_each(left_out, network, free, extra, chosen, clock, True, booked)
            for plan in plans:
                record(plan, chosen.name)
            failed |= more
        for task in left_out if not explain else ():
            decided[task.id] = Decision(
                task.id, Action.QUEUE, BLOCKED.format(devices=task.devices), policy=chosen.name
            )
        for ident, reason in failed.items():
            decided[ident] = Decision(ident, Action.REJECT, reason, policy=chosen.name)
    return tuple(decided[q.task.id] for q in queue)
