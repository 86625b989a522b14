"""Placement: `place(tasks, snapshot, policy, now) -> Plan`, greedy and optimal.

Owns the greedy solver, the choice of solver (`auto`), temporal shifting of deferrable work,
the objective breakdown of each placement and the reasons of each unplaced task.

Greedy, precisely: each task is scored against the pools of its class (the pools passing
its kind, model, precision, latency-tier and residency constraints); tasks then choose in
order of largest regret first — the score lost if the best pool were taken (infinite with a
single feasible pool) — ties by earlier deadline, tighter tier, submission order. Each takes
its lowest-score pool that still has enough free devices; the pool's free count drops. The
runner-up is the second-best pool that could also have taken it at that moment. Then, for
policies without a load weight, a bounded repair: tasks left out are placed by moving a task
of the same size elsewhere, and tasks far from their best pool move to a better one, directly
or by moving a same-size task out of it, whenever the total score drops (up to 3 passes).

Temporal shifting ("Let's Wait Awhile"): after its pool is chosen, a deferrable task may start
0..`snapshot.max_delay_h` whole hours later if it still meets its deadline, at the delay that
minimises the policy's cost and carbon weights, market- or location-based (`SHIFTED`; for
`nearest` and `latency`, its tie-break objective) over the hourly price and carbon series, among
the hours its pool has room for all through its run: the pool's count less what is known to be
held then (`snapshot.booked`: running work until its expected end, earlier deferrals; and what
this plan starts or defers, the largest savings first). Without that, every deferrable task
would wait for the same green hour and the later ones, finding no room then, run after it. The
delayed task keeps holding its devices in the plan now, which is conservative. What waiting
saved is reported in fen and in kg on both carbon bases.

Invariants: no I/O, no clock (`now` is given); the plan never exceeds any pool's free count;
every task is either placed exactly once or unplaced with its reasons.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from suanli.errors import InvalidValue
from suanli.metering import Precision
from suanli.scheduler import flow as flow_solver  # its size limit is read at call time
from suanli.scheduler.arrays import (
    CONSTRAINTS,
    FREE_CAPACITY,
    SAME_CLASS,
    Evaluation,
    PoolArrays,
    TaskArrays,
    class_masks,
    evaluate,
    groups_of,
    pool_arrays,
    subset_tasks,
    task_arrays,
    task_scales,
    window_mean,
)
from suanli.scheduler.flow import flow_assign, load_weight, plan_objective
from suanli.scheduler.model import (
    Breakdown,
    Objective,
    Placement,
    Plan,
    Policy,
    Snapshot,
    SolverInfo,
    Task,
    Unplaced,
)
from suanli.scheduler.pricing import priced_assign

SOLVERS = ("greedy", "flow", "optimal", "auto")
CELLS_PER_BLOCK = 1_000_000  # tasks x pools evaluated at once (memory bound)
TOP_K = 4


def _fen(value: float) -> int:
    """Integer fen, half to even (the same rule as `np.rint` in `_breakdowns`)."""
    return int(np.rint(value))


def priority_order(t: TaskArrays, regret: np.ndarray) -> np.ndarray:
    """Indices of tasks in the documented greedy order.

    Largest regret first — the score a task loses if its best pool is taken from it (infinite
    when it has a single feasible pool) — so that tasks with the most at stake, or the fewest
    options, choose first. Ties: earlier deadline, tighter latency tier, submission order.
    """
    keys = (  # np.lexsort: the last key is the primary one
        np.arange(t.n_tasks),
        t.tier_rtt_ms,
        t.deadline_s,
        -regret,
    )
    return np.lexsort(keys)


# Constraints that depend only on a task's class (kind, precision, models, residency): pools
# failing them are never candidates, so each class is scored only on the pools that pass them.
# This prunes the matrices without changing any score.


def _classes(t: TaskArrays) -> tuple[np.ndarray, np.ndarray]:
    """Class id of every task and one representative task per class."""
    keys = np.stack([t.kind, t.precision, t.model_bits, t.province_bits], axis=1)
    _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    return inverse.reshape(-1), first


def _class_columns(t: TaskArrays, p: PoolArrays, representatives: np.ndarray) -> list[np.ndarray]:
    """The pools with room that pass the constraints every task of a class shares, per class
    (`representatives`: one task of each)."""
    masks = class_masks(t, representatives, p, np.arange(p.n_pools)[None, :])
    passing = np.logical_and.reduce([masks[name] for name in SAME_CLASS])
    passing &= p.free > 0  # a full pool takes nothing of this batch
    return [np.flatnonzero(row) for row in passing]


@dataclass(frozen=True)
class _Load:
    """What the dynamic load term needs: its weight and the snapshot's occupancy."""

    weight: float
    free0: np.ndarray
    count: np.ndarray


@dataclass
class _Block:
    """Scores of the next tasks of one class against the class's candidate pools."""

    start: int  # position in the class's task list of the first row
    end: int
    cols: np.ndarray  # (M,) global pool indices
    score: np.ndarray  # (rows, M)
    top: np.ndarray  # (rows, K) local column indices, best first
    top_scores: np.ndarray


def _score_block(
    t: TaskArrays,
    p: PoolArrays,
    snapshot: Snapshot,
    policy: Policy,
    now: float,
    tasks: np.ndarray,
    start: int,
    cols: np.ndarray,
) -> _Block:
    ev = evaluate(t, tasks, p, snapshot, policy, now, cols=cols[None, :], same_class=True)
    score = ev.score
    m = score.shape[1]
    k = min(TOP_K, m)
    if k < m:
        top = np.argpartition(score, k - 1, axis=1)[:, :k]
    else:
        top = np.tile(np.arange(m), (score.shape[0], 1))
    top_scores = np.take_along_axis(score, top, axis=1)
    order = np.lexsort((top, top_scores), axis=-1)  # by score, then pool index
    top = np.take_along_axis(top, order, axis=1)
    top_scores = np.take_along_axis(top_scores, order, axis=1)
    return _Block(start, start + len(tasks), cols, score, top, top_scores)


def _decide(
    block: _Block, r: int, need: int, free: np.ndarray, load: _Load | None
) -> tuple[int, int, float] | None:
    """Best and runner-up global pool of row r with `need` free devices, and the best score;
    None if no pool.

    Fast path: the TOP_K best pools usually settle it; when they are full the whole row is
    searched. Ties go to the lower pool index. With a load weight, the occupancy the plan has
    added since the snapshot is added to every score first (so the row is always searched).
    """
    cols = block.cols
    m = len(cols)
    if load is not None:
        row = block.score[r] + load.weight * (load.free0[cols] - free[cols]) / load.count[cols]
        candidates = np.where(free[cols] >= need, row, np.inf)
        two = np.argpartition(candidates, 1)[:2] if m > 1 else np.arange(m)
        ranked = sorted(
            (int(j) for j in two if math.isfinite(candidates[j])), key=lambda j: (candidates[j], j)
        )
        if not ranked:
            return None
        return ranked[0], (ranked[1] if len(ranked) > 1 else -1), float(candidates[ranked[0]])
    k = block.top.shape[1]
    found: list[int] = []
    exhausted = False
    for c in range(k):
        if not math.isfinite(block.top_scores[r, c]):
            exhausted = True
            break
        j = int(block.top[r, c])
        if free[cols[j]] >= need:
            found.append(j)
            if len(found) == 2:
                break
    if len(found) < 2 and not exhausted and k < m:
        candidates = np.where(free[cols] >= need, block.score[r], np.inf)
        two = np.argpartition(candidates, 1)[:2]
        found = sorted(
            (int(j) for j in two if math.isfinite(candidates[j])),
            key=lambda j: (candidates[j], j),
        )
    if not found:
        return None
    return found[0], (found[1] if len(found) > 1 else -1), float(block.score[r, found[0]])


def _blocks(n_tasks: int, n_pools: int) -> int:
    return max(1, min(n_tasks, CELLS_PER_BLOCK // max(1, n_pools)))


def _breakdowns(
    ev: Evaluation,
    pools: np.ndarray,
    t: TaskArrays,
    p: PoolArrays,
    tasks: np.ndarray,
    load_after: np.ndarray,
) -> list[Breakdown]:
    """Breakdowns of an evaluation of `tasks` x one pool each (ev matrices are (n, 1)).

    Money is rounded once per component, half to even (`np.rint`), and the total is the sum of
    the unrounded components, rounded once.
    """
    compute = ev.compute_fen[:, 0]
    energy_fen = ev.energy_fen[:, 0]
    transfer = ev.transfer_fen[:, 0]
    precisions = list(Precision)
    used = p.precision_used[t.precision[tasks], pools]
    columns = zip(
        np.rint(compute + energy_fen + transfer).astype(np.int64).tolist(),
        np.rint(compute).astype(np.int64).tolist(),
        np.rint(energy_fen).astype(np.int64).tolist(),
        np.rint(transfer).astype(np.int64).tolist(),
        ev.energy_kwh[:, 0].tolist(),
        ev.raw[Objective.CARBON][:, 0].tolist(),
        ev.carbon_location_kg[:, 0].tolist(),
        ev.raw[Objective.LATENCY][:, 0].tolist(),
        ev.raw[Objective.DISTANCE][:, 0].tolist(),
        load_after.tolist(),
        p.site_reputation[p.site_of_pool[pools]].tolist(),
        ev.duration_s[:, 0].tolist(),
        ev.transfer_s[:, 0].tolist(),
        [precisions[u] for u in used.tolist()],
        strict=True,
    )
    return [Breakdown(*values) for values in columns]


def breakdowns_of(
    t: TaskArrays,
    p: PoolArrays,
    snapshot: Snapshot,
    policy: Policy,
    now: float,
    pairs: dict[int, int],
) -> dict[int, Breakdown]:
    """The objective breakdown of each task -> pool pair, evaluated in one pass per block.

    `load_after` is the occupancy each placement leaves, counting the pairs in the order given
    (the plan's decision order).
    """
    used = np.zeros(p.n_pools, dtype=np.int64)
    load_after = np.empty(t.n_tasks)
    for i, j in pairs.items():
        used[j] += t.devices[i]
        load_after[i] = (p.count[j] - p.free[j] + used[j]) / p.count[j]
    tasks = np.array(sorted(pairs), dtype=np.int64)
    result: dict[int, Breakdown] = {}
    step = CELLS_PER_BLOCK
    for start in range(0, len(tasks), step):
        rows = tasks[start : start + step]
        pools = np.array([pairs[int(i)] for i in rows], dtype=np.int64)
        ev = evaluate(t, rows, p, snapshot, policy, now, cols=pools[:, None])
        made = _breakdowns(ev, pools, t, p, rows, load_after[rows])
        result.update(zip(rows.tolist(), made, strict=True))
    return result


def greedy_assign(
    t: TaskArrays, p: PoolArrays, snapshot: Snapshot, policy: Policy, now: float
) -> dict[int, tuple[int, int, float]]:
    """task -> (pool, runner-up or -1, score), by the greedy rule in the module docstring."""
    class_of, representatives = _classes(t)
    columns = _class_columns(t, p, representatives)
    # score every task against its class's candidate pools, a block of tasks at a time
    block_of: list[_Block | None] = [None] * t.n_tasks
    row_of = np.zeros(t.n_tasks, dtype=np.int64)
    regret = np.full(t.n_tasks, -np.inf)
    for members in groups_of(class_of):
        cols = columns[int(class_of[members[0]])]
        if len(cols) == 0:
            continue
        step = _blocks(len(members), len(cols))
        for start in range(0, len(members), step):
            rows = members[start : start + step]
            block = _score_block(t, p, snapshot, policy, now, rows, start, cols)
            for i in rows.tolist():
                block_of[i] = block
            row_of[rows] = np.arange(len(rows))
            best = block.top_scores[:, 0]
            second = block.top_scores[:, 1] if block.top_scores.shape[1] > 1 else np.inf
            with np.errstate(invalid="ignore"):  # inf - inf where a task has no pool
                regret[rows] = np.where(np.isfinite(best), second - best, -np.inf)
    order = priority_order(t, regret)
    free = p.free.copy()
    weight = policy.weights.get(Objective.LOAD, 0.0)
    load = _Load(weight, p.free.copy(), p.count.astype(float)) if weight > 0 else None
    assigned: dict[int, tuple[int, int, float]] = {}
    for i in order.tolist():
        block = block_of[i]
        if block is None or regret[i] == -np.inf:
            continue  # no statically feasible pool
        r = int(row_of[i])
        decision = _decide(block, r, int(t.devices[i]), free, load)
        if decision is None:
            continue
        best_col, runner, value = decision
        cols = block.cols
        free[cols[best_col]] -= t.devices[i]
        assigned[i] = (int(cols[best_col]), int(cols[runner]) if runner >= 0 else -1, value)
    if load is None:  # the repair needs static scores; a load weight makes them move
        unplaced = [i for i in order.tolist() if i not in assigned and block_of[i] is not None]
        repair = _Repair(t, assigned, block_of, row_of, free, budget=t.n_tasks // 2 + 1000)
        repair.insert(unplaced)
        for _ in range(REPAIR_PASSES):
            if not repair.improve():
                break
    return assigned


REPAIR_CANDIDATES = 8
REPAIR_EVICTIONS = 16
REPAIR_EPSILON = 1e-9
REPAIR_PASSES = 5


class _Repair:
    """The plan a greedy pass made, and the moves that improve it in place.

    Every step keeps each pool within its free count and lowers the total score (or, for
    `insert`, places one more task); `budget` bounds the row scans, i.e. the work.
    """

    def __init__(
        self,
        t: TaskArrays,
        assigned: dict[int, tuple[int, int, float]],
        block_of: Sequence[_Block | None],
        row_of: np.ndarray,
        free: np.ndarray,
        budget: int,
    ) -> None:
        self.t, self.assigned, self.block_of, self.row_of = t, assigned, block_of, row_of
        self.free, self.budget = free, budget
        self.members: dict[int, set[int]] = {}
        for i, (j, _, _) in assigned.items():
            self.members.setdefault(j, set()).add(i)

    def _row(self, task: int) -> tuple[_Block, np.ndarray]:
        block = self.block_of[task]
        assert block is not None
        return block, block.score[self.row_of[task]]

    def move(self, task: int, to: int, score: float) -> None:
        """Put `task` on pool `to` (taking it off its current pool, if any)."""
        need = int(self.t.devices[task])
        runner = -1
        if task in self.assigned:
            runner = self.assigned[task][0]
            self.free[runner] += need
            self.members[runner].discard(task)
        self.free[to] -= need
        self.members.setdefault(to, set()).add(task)
        self.assigned[task] = (to, runner, score)

    def evict(self, y: int, need: int, leaving: int) -> tuple[float, int, int, float] | None:
        """The cheapest way to free `need` devices of pool y by moving one same-size task out:
        (cost, task, its new pool, its new score), or None. `leaving` is a pool that gets
        `need` devices back in the same step (-1 for none)."""
        best: tuple[float, int, int, float] | None = None
        same_size = [b for b in self.members.get(y, ()) if self.t.devices[b] == need]
        # cheapest to move first: with scores proportional to work, the smallest score here
        for b in heapq.nsmallest(
            REPAIR_EVICTIONS, same_size, key=lambda b: (self.assigned[b][2], b)
        ):
            self.budget -= 1
            block, row = self._row(b)
            room = self.free[block.cols].copy()
            room[block.cols == leaving] += need
            options = np.where((room >= need) & (block.cols != y), row, np.inf)
            z = int(np.argmin(options))
            if not math.isfinite(options[z]):
                continue
            cost = float(options[z]) - self.assigned[b][2]
            if best is None or cost < best[0]:
                best = (cost, b, int(block.cols[z]), float(options[z]))
        return best

    def _try(self, task: int, candidates: np.ndarray, gain_from: float | None) -> bool:
        """Move `task` to the first candidate pool (local indices, best first) that has room,
        or whose same-size occupant can move out cheaply enough; `gain_from` is the task's
        current score (None when it is unplaced: any eviction will do)."""
        block, row = self._row(task)
        need = int(self.t.devices[task])
        leaving = -1 if gain_from is None else self.assigned[task][0]
        for local in candidates.tolist():
            y, score = int(block.cols[local]), float(row[local])
            if self.free[y] >= need:
                self.move(task, y, score)
                return True
            found = self.evict(y, need, leaving)
            if found is None:
                continue
            cost, b, z, s_bz = found
            if gain_from is None or cost < gain_from - score - REPAIR_EPSILON:
                # `task` fills y past its free count; b leaving y settles it at once
                self.move(task, y, score)
                self.move(b, z, s_bz)
                return True
        return False

    def insert(self, unplaced: list[int]) -> None:
        """Place tasks the greedy pass left out, moving a same-size task out where needed."""
        for a in unplaced:
            if self.budget <= 0:
                return
            _, row = self._row(a)
            options = np.flatnonzero(np.isfinite(row))
            best_first = options[np.argsort(row[options], kind="stable")]
            self._try(a, best_first[:REPAIR_CANDIDATES], None)

    def improve(self) -> bool:
        """One pass over the placed tasks, worst off first; True if anything moved."""
        loss = {}
        for i, (_, _, value) in self.assigned.items():
            block, _ = self._row(i)
            loss[i] = value - float(block.top_scores[self.row_of[i], 0])
        changed = False
        for a in sorted((i for i, v in loss.items() if v > REPAIR_EPSILON), key=lambda i: -loss[i]):
            if self.budget <= 0:
                break
            current = self.assigned[a][2]
            _, row = self._row(a)
            better = np.flatnonzero(row < current - REPAIR_EPSILON)
            best_first = better[np.argsort(row[better], kind="stable")]
            changed |= self._try(a, best_first[:REPAIR_CANDIDATES], current)
        return changed


# The objectives that change with the hour a task starts: a deferral weighs these.
SHIFTED = (Objective.COST, Objective.CARBON, Objective.CARBON_LOCATION)


@dataclass(frozen=True)
class _Shifted:
    """A deferrable task's delay, its breakdown then, and what waiting saved against starting
    now: fen, and kg CO2 on both bases (market- and location-based)."""

    delay_h: int
    breakdown: Breakdown
    saved_fen: int
    saved_carbon_kg: float
    saved_carbon_location_kg: float


def _shift(
    t: TaskArrays,
    p: PoolArrays,
    snapshot: Snapshot,
    policy: Policy,
    now: float,
    placed: dict[int, tuple[int, int, float]],
    breakdowns: dict[int, Breakdown],
) -> dict[int, _Shifted]:
    """Best whole-hour delay of each placed deferrable task (only delays that keep the
    deadline): the one that minimises the policy's weights of `SHIFTED` objectives, each
    relative to starting now; a policy with none of them weighs its tie-break (cost when that
    does not change with the hour either)."""
    tasks = np.array([i for i in sorted(placed) if t.deferrable[i]], dtype=np.int64)
    if len(tasks) == 0 or snapshot.max_delay_h <= 0:
        return {}
    weights = {o: policy.weights.get(o, 0.0) for o in SHIFTED}
    if not any(weights.values()):
        fallback = policy.tie_break if policy.tie_break in SHIFTED else Objective.COST
        weights = {fallback: 1.0}
    pools = np.array([placed[i][0] for i in tasks], dtype=np.int64)
    sites = p.site_of_pool[pools]
    b = [breakdowns[i] for i in tasks]
    hours = np.array([x.duration_s for x in b]) / 3600.0
    transfer = np.array([x.transfer_s for x in b])
    energy = np.array([x.energy_kwh for x in b])
    devices = t.devices[tasks].astype(float)
    delays = np.arange(snapshot.max_delay_h + 1, dtype=float)[None, :]  # (1, K)
    start_h = (now - snapshot.series_start_s + transfer[:, None]) / 3600.0 + delays
    shape = start_h.shape
    length = np.broadcast_to(hours[:, None], shape)
    site_rows = np.broadcast_to(sites[:, None], shape)
    compute_multiplier: np.ndarray | float = 1.0
    if p.compute_prefix is not None:
        pool_rows = np.broadcast_to(pools[:, None], shape)
        local = start_h + snapshot.local_hour_at_start
        compute_multiplier = window_mean(p.compute_prefix, pool_rows, local, length)
    compute = np.broadcast_to(
        (p.price_fen_per_device_hour[pools] * devices * hours)[:, None] * compute_multiplier, shape
    )
    energy_fen = np.where(
        p.energy_billed[pools][:, None],
        (energy * p.site_price_cny[sites] * 100.0)[:, None]
        * window_mean(p.energy_prefix, site_rows, start_h, length),
        0.0,
    )
    transfer_fen = np.array([x.transfer_fen for x in b], dtype=float)[:, None]
    cost = compute + energy_fen + transfer_fen
    intensity = window_mean(p.carbon_prefix, site_rows, start_h, length)
    carbon_location = energy[:, None] * intensity
    carbon = carbon_location * (1.0 - p.site_green[sites])[:, None]
    end = now + delays * 3600.0 + (transfer + hours * 3600.0)[:, None]
    ok = end <= t.deadline_s[tasks][:, None]
    ok[:, 0] = True  # starting now was already checked when the pool was chosen
    values = {
        Objective.COST: cost,
        Objective.CARBON: carbon,
        Objective.CARBON_LOCATION: carbon_location,
    }
    with np.errstate(divide="ignore", invalid="ignore"):
        objective = sum(
            w * np.nan_to_num(values[o] / values[o][:, :1], nan=1.0, posinf=1.0)
            for o, w in weights.items()
            if w > 0
        )
    objective = np.where(ok, objective + 1e-12 * delays, np.inf)
    busy = transfer + hours * 3600.0
    best = _with_room(t, p, snapshot, now, placed, breakdowns, tasks, pools, busy, objective)
    result: dict[int, _Shifted] = {}
    for n, task in enumerate(tasks):
        k = int(best[n])
        if k == 0:
            continue
        old = b[n]
        new = replace(
            old,
            compute_fen=_fen(compute[n, k]),
            energy_fen=_fen(energy_fen[n, k]),
            cost_fen=_fen(cost[n, k]),
            carbon_kg=float(carbon[n, k]),
            carbon_location_kg=float(carbon_location[n, k]),
        )
        result[int(task)] = _Shifted(
            k,
            new,
            old.cost_fen - new.cost_fen,
            old.carbon_kg - new.carbon_kg,
            old.carbon_location_kg - new.carbon_location_kg,
        )
    return result


BOOKED_HORIZON_H = 7 * 24  # room ahead is checked this far (a longer run: its first week)


def _with_room(
    t: TaskArrays,
    p: PoolArrays,
    snapshot: Snapshot,
    now: float,
    placed: dict[int, tuple[int, int, float]],
    breakdowns: dict[int, Breakdown],
    tasks: np.ndarray,
    pools: np.ndarray,
    busy_s: np.ndarray,
    objective: np.ndarray,
) -> np.ndarray:
    """The delay (whole hours) each deferrable task in `tasks` takes: its best by `objective`
    (tasks x delays; inf where the deadline forbids) among the delays its pool has room for over
    every hour of its run (`busy_s` seconds from its start), on hourly slots from `now`. A
    slot's use is the most devices that may be held in it: the bookings, every other task this
    plan starts now, then the deferrable ones in order of what their best delay saves (the
    largest first), each booked where it goes. Starting now is always allowed (its room now was
    checked when its pool was chosen)."""
    k_max = objective.shape[1]
    runs = np.ceil(np.maximum(busy_s, 1.0) / 3600.0).astype(np.int64)
    slots = min(k_max + int(runs.max()), k_max + BOOKED_HORIZON_H)
    rows = {int(j): n for n, j in enumerate(np.unique(pools))}
    used = np.zeros((len(rows), slots), dtype=np.int64)

    def book(row: int, first: float, last: float, devices: int) -> None:
        lo = max(0, math.floor((first - now) / 3600.0))
        hi = min(slots, math.ceil((last - now) / 3600.0))
        if hi > lo:
            used[row, lo:hi] += devices

    index = {pid: j for j, pid in enumerate(p.ids)}
    for booking in snapshot.booked:
        row = rows.get(index.get(booking.pool, -1))
        if row is not None:
            book(row, booking.start_s, booking.end_s, booking.devices)
    deferrable = {int(i) for i in tasks}
    for i, (j, _, _) in placed.items():
        if i not in deferrable and int(j) in rows:
            b = breakdowns[i]
            book(rows[int(j)], now, now + b.transfer_s + b.duration_s, int(t.devices[i]))
    counts = np.array([p.count[j] for j in rows], dtype=np.int64)[:, None]
    best = np.zeros(len(tasks), dtype=np.int64)
    finite = np.where(np.isfinite(objective), objective, np.nan)
    gain = objective[:, 0] - np.nanmin(finite, axis=1)
    for n in np.argsort(-gain, kind="stable"):
        row, devices, run = rows[int(pools[n])], int(t.devices[tasks[n]]), int(runs[n])
        for k in np.argsort(objective[n], kind="stable"):
            k = int(k)
            if k == 0 or not np.isfinite(objective[n, k]):
                k = 0
                break
            span = used[row, k : k + run]
            if (span + devices <= counts[row, 0]).all():
                break
        best[n] = k
        used[row, k : k + run] += devices
    return best


UNEXPLAINED = "no pool can take it now (the reasons were not worked out in this replay)"


def _pool_phrase(p: PoolArrays, j: int, rtt: float) -> str:
    site = p.site_ids[p.site_of_pool[j]]
    return f"{p.ids[j]} at {site} ({rtt:.1f} ms RTT, {p.free[j]} free)"


def explain(
    t: TaskArrays,
    p: PoolArrays,
    snapshot: Snapshot,
    policy: Policy,
    now: float,
    tasks: Sequence[Task],
    indices: Sequence[int],
    free_left: np.ndarray,
) -> list[Unplaced]:
    """Reasons per rejected pool, aggregated into one readable sentence per unplaced task."""
    if not indices:
        return []
    result: list[Unplaced] = []
    step = _blocks(len(indices), p.n_pools)
    for start in range(0, len(indices), step):
        rows = np.array(indices[start : start + step], dtype=np.int64)
        ev = evaluate(t, rows, p, snapshot, policy, now)
        result.extend(_explain_block(ev, rows, t, p, snapshot, tasks, free_left))
    return result


def _explain_block(
    ev: Evaluation,
    rows: np.ndarray,
    t: TaskArrays,
    p: PoolArrays,
    snapshot: Snapshot,
    tasks: Sequence[Task],
    free_left: np.ndarray,
) -> list[Unplaced]:
    # pools each constraint rules out first (in CONSTRAINTS order), then those full, per task
    shape = (len(rows), p.n_pools)
    undecided = np.ones(shape, dtype=bool)
    ruled_out: dict[str, np.ndarray] = {}
    for name in CONSTRAINTS:
        ruled_out[name] = np.count_nonzero(undecided & ~ev.masks[name], axis=1)
        undecided &= ev.masks[name]
    ruled_out[FREE_CAPACITY] = np.count_nonzero(
        undecided & (free_left[None, :] < t.devices[rows, None]), axis=1
    )
    rtt = np.broadcast_to(ev.raw[Objective.LATENCY], shape)
    usable = ev.masks["device kind"] & ev.masks["device model"] & ev.masks["precision"]
    by_rtt = np.argsort(np.where(usable, rtt, np.inf), axis=1, kind="stable")[:, :3]
    n_near = np.minimum(np.count_nonzero(usable, axis=1), 3)
    result = []
    for r, i in enumerate(rows):
        task = tasks[int(i)]
        counts = {name: int(n[r]) for name, n in ruled_out.items() if n[r]}
        nearest = by_rtt[r, : n_near[r]].tolist()
        budget = snapshot.tier_rtt_ms[task.latency_tier]
        within = f" within {budget:g} ms RTT" if math.isfinite(budget) else ""
        models = ""
        if task.device_models is not None:
            names = sorted(task.device_models)
            models = f" ({', '.join(names)})" if len(names) <= 3 else f" ({len(names)} models)"
        what = f"{task.devices} free {task.device_kind.value}{models} at {task.precision.value}"
        if task.nodes > 1:
            what += f" on {task.nodes} nodes ({task.devices // task.nodes} each)"
        ruled = "; ".join(f"{name} ruled out {n}" for name, n in counts.items())
        sentence = f"no pool{within} of {task.origin.name_zh} has {what}: {ruled}"
        if nearest:
            sentence += "; nearest candidates: " + ", ".join(
                _pool_phrase(p, j, float(rtt[r, j])) for j in nearest
            )
        elif not p.n_pools:
            sentence = "the snapshot has no pools"
        result.append(Unplaced(task.id, counts, sentence))
    return result


def choose_solver(solver: str, n_tasks: int, n_pools: int) -> str:
    """The solver `auto` means for a batch: the flow solver up to its FLOW_MAX_PAIRS task-pool
    pairs (within 0.2% of the MILP at a fraction of its time, and never worse than greedy:
    it dominates both there, see docs/scheduling.md), greedy above (the flow runs there too,
    on arcs priced in, for a better plan with its proved gap, but slower than greedy). The MILP
    stays for those who ask for a proved optimum (`optimal`)."""
    if solver != "auto":
        return solver
    return "flow" if n_tasks * n_pools <= flow_solver.FLOW_MAX_PAIRS else "greedy"


def _load_term(
    assigned: dict[int, tuple[int, int, float]],
    t: TaskArrays,
    p: PoolArrays,
    weight: float,
    sign: float,
) -> dict[int, tuple[int, int, float]]:
    """Each score plus `sign` x the dynamic load term: w x the devices the plan placed on its
    pool before it (in decision order) / count. sign -1 takes greedy's dynamic scores back to
    static ones; +1 gives a placement's reported score."""
    if weight <= 0:
        return assigned
    added = np.zeros(p.n_pools, dtype=np.int64)
    result = {}
    for i, (j, runner, value) in assigned.items():
        result[i] = (j, runner, value + sign * weight * added[j] / p.count[j])
        added[j] += t.devices[i]
    return result


def _flow(
    t: TaskArrays,
    p: PoolArrays,
    snapshot: Snapshot,
    policy: Policy,
    now: float,
    time_limit_s: float,
) -> tuple[dict[int, tuple[int, int, float]], float | None, str]:
    """The flow solver, then greedy for what it left on the capacity left (static scores).
    Above FLOW_MAX_PAIRS task x pool pairs, the flow on arcs pruned by class and priced in
    (`pricing.priced_assign`)."""
    weight = load_weight(policy)
    large = t.n_tasks * p.n_pools > flow_solver.FLOW_MAX_PAIRS
    if large:
        result = priced_assign(t, p, snapshot, policy, now, time_limit_s)
    else:
        class_of, representatives = _classes(t)
        columns = _class_columns(t, p, representatives)
        result = flow_assign(
            t, p, snapshot, policy, now, (class_of, columns), time_limit_s=time_limit_s
        )
    assigned = dict(result.assignment)
    left = np.array([i for i in range(t.n_tasks) if i not in assigned], dtype=np.int64)
    # the exact relaxation places no more than `placeable`: then greedy places nothing more
    if len(left) and (large or len(assigned) < result.placeable - 1e-6):
        free = p.free.copy()
        for i, (j, _, _) in assigned.items():
            free[j] -= t.devices[i]
        rest = replace(p, free=free)
        sub = subset_tasks(t, left)
        more = _load_term(greedy_assign(sub, rest, snapshot, policy, now), sub, rest, weight, -1)
        for k, (j, runner, value) in more.items():
            # its static load term counted the flow's placements: the snapshot's is wanted
            taken = weight * (p.free[j] - free[j]) / p.count[j]
            assigned[int(left[k])] = (j, runner, value - taken)
    # never worse than greedy: its plan, when it places more or as many for less; unless this
    # plan is proved optimal (it places as many as the relaxation, at the relaxation's value)
    bound = result.bound(t.n_tasks, len(assigned))
    slack = 2.0 * result.rounding + 1e-9 * max(1.0, abs(bound))
    proved = (
        len(assigned) >= result.placeable - 1e-6
        and _objective(assigned, t, p, weight) <= bound + slack
    )
    if not proved and not large:  # large: greedy would take longer than the flow
        greedy = _load_term(greedy_assign(t, p, snapshot, policy, now), t, p, weight, -1)
        if _better(greedy, assigned, t, p, weight):
            return (
                greedy,
                result.bound(t.n_tasks, len(greedy)),
                f"{result.status}; the greedy plan was better",
            )
    return assigned, bound, result.status + ("; proved optimal" if proved else "")


def _objective(
    plan: dict[int, tuple[int, int, float]], t: TaskArrays, p: PoolArrays, weight: float
) -> float:
    """`flow.plan_objective` of a task -> (pool, runner-up, static score) plan."""
    rows = list(plan)
    return plan_objective(
        np.array([plan[i][2] for i in rows]),
        np.array([plan[i][0] for i in rows], dtype=np.int64),
        t.devices[rows].astype(float),
        p,
        weight,
    )


def _better(
    a: dict[int, tuple[int, int, float]],
    b: dict[int, tuple[int, int, float]],
    t: TaskArrays,
    p: PoolArrays,
    weight: float,
) -> bool:
    """Whether plan `a` places more tasks than `b`, or as many at a lower objective."""
    if len(a) != len(b):
        return len(a) > len(b)
    theirs = _objective(b, t, p, weight)
    return _objective(a, t, p, weight) < theirs - 1e-9 * max(1.0, abs(theirs))


def place(
    tasks: Sequence[Task],
    snapshot: Snapshot,
    policy: Policy,
    now: float,
    *,
    solver: str = "auto",
    time_limit_s: float = 10.0,
    explain_unplaced: bool = True,
) -> Plan:
    """Place `tasks` on `snapshot` by `policy` at time `now` (seconds, the snapshot's clock).

    `explain_unplaced=False`: an unplaced task gets UNEXPLAINED and no per-constraint counts
    (for replays, which never show them: the explanation costs more than the placement)."""
    if solver not in SOLVERS:
        raise InvalidValue(
            "solver", solver, f"one of {', '.join(SOLVERS)}", f"{', '.join(SOLVERS)} 之一"
        )
    ids = [task.id for task in tasks]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise InvalidValue("tasks.id", dup, "unique task ids", "唯一的任务 id")
    if not snapshot.pools:
        return Plan(
            placements=(),
            unplaced=tuple(Unplaced(t.id, {}, "the snapshot has no pools") for t in tasks),
            solver=SolverInfo("none", 0.0, None, "no pools"),
            policy=policy.name,
        )
    p = pool_arrays(snapshot)
    t = task_arrays(tasks, snapshot, p)
    if policy.single is None:  # every evaluation below normalises by these
        t = replace(t, scales=task_scales(t, p, snapshot, now))
    name = choose_solver(solver, t.n_tasks, p.n_pools)
    lower_bound: float | None = None
    status = "ok"
    weight = load_weight(policy)
    if name == "optimal" and t.n_tasks and p.n_pools:
        from suanli.scheduler.optimal import solve_optimal

        result = solve_optimal(t, p, snapshot, policy, now, time_limit_s)
        assigned = {
            i: (j, result.runner_up.get(i, -1), result.scores[i])
            for i, j in result.assignment.items()
        }
        lower_bound, status = result.lower_bound, result.status
    elif name == "flow" and t.n_tasks:
        assigned, lower_bound, status = _flow(t, p, snapshot, policy, now, time_limit_s)
    else:
        assigned = _load_term(greedy_assign(t, p, snapshot, policy, now), t, p, weight, -1)
        name = "greedy"
    # every solver hands over static scores; a placement's score adds the load its pool has
    # taken earlier in the plan (the greedy solver's view), the objective the convex load term
    static = assigned
    assigned = _load_term(static, t, p, weight, +1)
    breakdowns = breakdowns_of(t, p, snapshot, policy, now, {i: a[0] for i, a in assigned.items()})
    shifted = _shift(t, p, snapshot, policy, now, assigned, breakdowns)
    free_left = p.free.copy()
    placements = []
    for i in assigned:  # decision order: load_after is the occupancy this placement leaves
        j, runner, score = assigned[i]
        free_left[j] -= t.devices[i]
        wait = shifted.get(i, _Shifted(0, breakdowns[i], 0, 0.0, 0.0))
        breakdown = wait.breakdown
        start = now + wait.delay_h * 3600.0
        placements.append(
            Placement(
                task=t.ids[i],
                pool=p.ids[j],
                site=p.site_ids[p.site_of_pool[j]],
                start_s=start,
                end_s=start + breakdown.transfer_s + breakdown.duration_s,
                breakdown=breakdown,
                score=score,
                runner_up=None if runner < 0 else p.ids[runner],
                waited_s=wait.delay_h * 3600.0,
                saved_fen=wait.saved_fen,
                saved_carbon_kg=wait.saved_carbon_kg,
                saved_carbon_location_kg=wait.saved_carbon_location_kg,
            )
        )
    unplaced_idx = [i for i in range(t.n_tasks) if i not in assigned]
    unplaced = (
        explain(t, p, snapshot, policy, now, tasks, unplaced_idx, free_left)
        if explain_unplaced
        else [Unplaced(t.ids[i], {}, UNEXPLAINED) for i in unplaced_idx]
    )
    objective = _objective(static, t, p, weight)
    return Plan(
        placements=tuple(placements),
        unplaced=tuple(unplaced),
        solver=SolverInfo(name, objective, lower_bound, status),
        policy=policy.name,
    )
