"""Placement as a flow: the batch assignment as a transportation problem, solved to near
optimality, with a lower bound on every plan.

Owns `flow_assign`. The model is the MILP's (`scheduler.optimal`): each task goes to one pool
or stays unplaced at a penalty that exceeds any score (so as many tasks as capacity allows are
placed first), every pool holds at most its free devices, and the objective is the sum of the
placements' scores plus, for a policy with a load weight w, the convex load term of every pool

    w x U (U - 1) / (2 x count)        U = devices the plan adds to the pool

(what the greedy solver's dynamic load term adds up to for one-device tasks: the m-th task
placed on a pool pays w x m / count more than its static score).

Steps, each vectorised:

1. **Arcs.** Every task is scored (`arrays.evaluate`, the scores every solver shares) against
   the pools of its class (kind, models, precision, residency) that have room; an arc joins it
   to every pool that passes its constraints and has room for its devices. The classes of one
   precision with the same pools are scored together, or all tasks against the union of their
   pools where fewer, larger calls are cheaper (few pools with room: a pass over new tasks on a
   busy network). Then the arcs that no optimal plan
   needs are left out, exactly (`prune_arcs`: a task keeps its cheapest arcs until their pools
   could hold the whole batch besides it, and all arcs within the load term's reach of those);
   on a busy network that is most of them.
2. **Solve.** A min-cost flow of devices (OR-Tools' `SimpleMinCostFlow`, cost-scaling push-relabel,
   int64 costs): task -> pool along its arcs at score / devices per device, task ->
   "unplaced" at the penalty, pool -> sink up to its free devices; with a load weight, one
   pool -> sink arc per added device of increasing cost (the convex load term, exact; in
   segments on big pools, priced at each segment's first device so that the bound stays a
   bound). One-device tasks come out whole; a task of several devices may be split.
3. **Round.** A task the flow sends whole along one arc takes it. The tasks it splits, with
   the tasks on the pools they were split over (restricted to those pools), are placed again
   together by a small exact MILP (HiGHS) on the capacity left (`_exact_rest`). What is still
   left is placed by the greedy solver on the capacity left (`engine._flow`), and the greedy
   plan of the whole batch is kept instead when it is better (never worse than greedy).
4. **Bound.** The flow's value (less the rounding of its integer costs) is the relaxation's
   optimum: less the penalties of as many tasks as the plan leaves out, it bounds every plan
   that leaves as many out; `gap = objective / bound - 1`.

Runner-up of a placement: its next-cheapest feasible arc. The solver takes batches up to
FLOW_MAX_PAIRS task-pool pairs; `engine.choose_solver` says which solver `auto` runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from suanli.scheduler.arrays import PoolArrays, TaskArrays, evaluate, groups_of, run_starts
from suanli.scheduler.model import Objective, Policy, Snapshot

# the largest batch the flow solver takes (task x pool pairs): scoring every arc and the flow on
# them take a few seconds there on the reference machine; larger batches go to greedy
FLOW_MAX_PAIRS = 2_000_000
LOAD_SEGMENTS = 64  # at most this many load arcs per pool in the LP
CELLS_PER_BLOCK = 1_000_000


@dataclass(frozen=True)
class Arcs:
    """The feasible (task, pool) pairs, grouped by task: task, pool and score per arc."""

    task: np.ndarray
    pool: np.ndarray
    score: np.ndarray

    def subset(self, keep: np.ndarray) -> Arcs:
        return Arcs(self.task[keep], self.pool[keep], self.score[keep])


@dataclass(frozen=True)
class FlowResult:
    assignment: dict[int, tuple[int, int, float]]  # task -> (pool, runner-up or -1, score)
    objective: float  # the model's objective over placed tasks (penalties excluded)
    relaxed: float  # the relaxation's optimum, its penalties included (less cost rounding)
    penalty: float  # per unplaced task
    placeable: float  # tasks the relaxation places: no plan places more
    status: str
    rounding: float = 0.0  # how far integer costs may put the relaxation off its value
    # a Lagrangian bound's parts (`pricing`): each task's least score + price x devices over
    # its open pools (inf: none), and the pools' terms, summed
    least: np.ndarray | None = None
    pools_term: float = 0.0

    def bound(self, n_tasks: int, placed: int) -> float:
        """A lower bound of the objective of every plan that places `placed` of the tasks.

        From a Lagrangian's parts, the best over the penalty q of the bound that relaxation
        gives for the problem with penalty q per unplaced task, less q per task left out:
        sum of min(q, least) + pools' terms - q x (tasks left out), greatest where q is the
        (tasks left out)-th greatest least (tasks with no open pool are left out by all)."""
        if self.least is None:
            return self.relaxed - self.penalty * (n_tasks - placed)
        return lagrangian_bound(self.least, self.pools_term, placed)


def lagrangian_bound(least: np.ndarray, pools_term: float, placed: int) -> float:
    """`FlowResult.bound` from a Lagrangian's parts, for plans placing `placed` tasks."""
    least = least[np.isfinite(least)]
    out = len(least) - placed  # left out among the tasks with an open pool
    if out <= 0:
        return float(np.sum(least)) + pools_term
    q = float(np.partition(least, len(least) - out)[len(least) - out])
    return float(np.sum(np.minimum(least, q))) + pools_term - q * out


def load_weight(policy: Policy) -> float:
    return float(policy.weights.get(Objective.LOAD, 0.0))


def plan_objective(
    scores: np.ndarray, pools: np.ndarray, devices: np.ndarray, p: PoolArrays, weight: float
) -> float:
    """The objective of a plan: static scores summed, plus the convex load term."""
    total = float(np.sum(scores))
    if weight > 0 and len(pools):
        added = np.bincount(pools, weights=devices, minlength=p.n_pools)
        total += weight * float(np.sum(added * (added - 1) / (2.0 * p.count)))
    return total


PRUNE_WORTH = 0.3  # prune when the tasks that can lose arcs hold this share of them
CALL_CELLS = 2_000  # what one more call of `evaluate` costs, in cells scored


def _score_groups(
    class_of: np.ndarray, columns: list[np.ndarray], precision: np.ndarray
) -> list[tuple[np.ndarray, np.ndarray, bool]]:
    """How `build_arcs` scores the batch: (tasks, pools, whether the SAME_CLASS constraints
    pass on every cell) groups. The classes of one precision with the same pools are scored
    together; or, where those calls cost more than the cells they save, every task against
    the union of the classes' pools (the constraints checked cell by cell then)."""
    together: dict[tuple[int, bytes], list[np.ndarray]] = {}
    for members in groups_of(class_of):
        if len(cols := columns[int(class_of[members[0]])]):
            key = (int(precision[members[0]]), cols.tobytes())
            together.setdefault(key, []).append(members)
    if not together:
        return []
    groups = [
        (np.concatenate(parts), np.frombuffer(key[1], dtype=np.int64), True)
        for key, parts in together.items()
    ]
    union = np.unique(np.concatenate([cols for _, cols, _ in groups]))
    by_group = sum(len(rows) * len(cols) + CALL_CELLS for rows, cols, _ in groups)
    if len(class_of) * len(union) + CALL_CELLS < by_group:
        return [(np.concatenate([rows for rows, _, _ in groups]), union, False)]
    return groups


def build_arcs(
    t: TaskArrays,
    p: PoolArrays,
    snapshot: Snapshot,
    policy: Policy,
    now: float,
    classes: tuple[np.ndarray, list[np.ndarray]],
) -> Arcs:
    """Every task's statically feasible pools of its class with room for its devices, scored;
    `classes` is (class of each task, columns of each class), as the greedy solver has them."""
    class_of, columns = classes
    tasks, pools, scores = [], [], []
    for rows, cols, same_class in _score_groups(class_of, columns, t.precision):
        step = max(1, CELLS_PER_BLOCK // len(cols))
        for start in range(0, len(rows), step):
            block = rows[start : start + step]
            ev = evaluate(
                t, block, p, snapshot, policy, now, cols=cols[None, :], same_class=same_class
            )
            ok = np.isfinite(ev.score) & (t.devices[block, None] <= p.free[cols][None, :])
            r, c = np.nonzero(ok)
            tasks.append(block[r])
            pools.append(cols[c])
            scores.append(ev.score[r, c])
    if not tasks:
        return Arcs(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0))
    task = np.concatenate(tasks)
    by_task = np.argsort(task, kind="stable")
    return Arcs(task[by_task], np.concatenate(pools)[by_task], np.concatenate(scores)[by_task])


def prune_arcs(
    arcs: Arcs, devices: np.ndarray, free: np.ndarray, count: np.ndarray, weight: float
) -> Arcs:
    """`arcs` (grouped by task) less those no optimal plan needs, exactly.

    Let D be the batch's devices. A task i of d devices keeps its cheapest arcs K until
    sum over K of max(0, free - d + 1) >= D - d + 1, and every arc cheaper than the dearest
    of K + w x d x f (w the load weight, f the greatest free / count over K). In a plan
    where i takes an arc left out, the others hold at most D - d devices of K's pools, so
    one of them has room for i; moving i there lowers its score by at least w x d x f and
    raises the load term by at most that much (the plan's u-th added device of a pool costs
    w x (u - 1) / count, and u <= free). Each such move keeps the plan's tasks and does not
    raise its value, so some optimal plan uses only the arcs kept, and a bound of the pruned
    problem bounds every plan. Every task keeps at least two arcs (its runner-up)."""
    m = len(arcs.task)
    if not m:
        return arcs
    d = devices.astype(np.int64)
    room = np.maximum(0, free[arcs.pool] - d[arcs.task] + 1)
    need = int(d.sum()) - d + 1
    can = np.bincount(arcs.task, weights=room, minlength=len(d)) >= need
    if np.count_nonzero(can[arcs.task]) < PRUNE_WORTH * m:
        return arcs  # capacity is plentiful: too few arcs could go to pay for the sort
    # by task (the arcs are grouped so already), cheapest first within a task
    starts = run_starts(arcs.task)
    sizes = np.diff(np.r_[starts, m])
    low = np.repeat(np.minimum.reduceat(arcs.score, starts), sizes)
    span = np.repeat(np.maximum.reduceat(arcs.score, starts), sizes) - low
    within = np.where(span > 0, (arcs.score - low) / np.where(span > 0, span, 1.0), 0.0)
    order = np.argsort(np.repeat(np.arange(len(starts)), sizes) + 0.5 * within, kind="stable")
    task, score, room = arcs.task[order], arcs.score[order], room[order]
    total = np.cumsum(room)
    before = total - room - np.repeat(total[starts] - room[starts], sizes)
    rank = np.arange(m) - np.repeat(starts, sizes)
    core = (before < need[task]) | (rank < 2)
    dearest = np.maximum.reduceat(np.where(core, score, -np.inf), starts)
    share = free[arcs.pool[order]] / count[arcs.pool[order]]
    fullest = np.maximum.reduceat(np.where(core, share, 0.0), starts)
    limit = np.repeat(dearest + weight * fullest * d[task[starts]], sizes)
    keep = core | (score < limit)
    if keep.all():
        return arcs
    return arcs.subset(np.sort(order[keep]))  # back in the arcs' own order


def _penalty(arcs: Arcs) -> float:
    """Above any task's score: the flow places as many tasks as it can first."""
    return 10.0 * (float(np.abs(arcs.score).max()) + 1.0) if len(arcs.score) else 1.0


def load_segments(
    free: np.ndarray, count: np.ndarray, weight: float, segments: int = LOAD_SEGMENTS
) -> tuple[np.ndarray, ...]:
    """Load arcs: (pool, length in devices, cost per device), each pool's added devices cut
    into at most `segments` pieces, priced at each piece's first device (one per device,
    exact, when a pool has at most `segments` free)."""
    pools = np.flatnonzero(free > 0)
    f = free[pools].astype(np.int64)
    k = np.minimum(f, segments)
    pool = np.repeat(pools, k)
    piece = np.arange(int(k.sum())) - np.repeat(np.cumsum(k) - k, k)
    f, k = np.repeat(f, k), np.repeat(k, k)
    starts, ends = piece * f // k, (piece + 1) * f // k
    return pool, (ends - starts).astype(float), weight * starts / count[pool]


# the penalty in integer cost units of the network: OR-Tools' costs are int64, and its cost
# scaling multiplies them by about the number of nodes, which must stay far from 2**63
COST_UNITS = 1e12


@dataclass(frozen=True)
class Network:
    """A solved min-cost flow of devices from sources (tasks, or classes of tasks) to pools:
    each arc's units, the status, a lower bound of its value (the value less the rounding of
    its integer costs), that rounding, and the pools' dual prices per device."""

    units: np.ndarray
    status: str
    value: float
    rounding: float
    prices: np.ndarray


def solve_network(
    tail: np.ndarray,
    pool: np.ndarray,
    per_device: np.ndarray,
    supply: np.ndarray,
    penalty: np.ndarray,
    p: PoolArrays,
    weight: float,
    with_prices: bool = True,
) -> Network:
    """Min-cost flow of `supply` devices from each source along its arcs (`tail` -> `pool` at
    `per_device` cost, up to the source's supply) or to "unplaced" at `penalty` per device,
    pools up to their free devices; with a load weight, one pool -> sink arc per added device
    of increasing cost (the convex load term, exact; in segments on big pools, priced at each
    segment's first device so that the bound stays a bound). OR-Tools' `SimpleMinCostFlow`
    (cost-scaling push-relabel, int64 costs). `with_prices`: compute the dual prices (else
    zeros)."""
    from ortools.graph.python import min_cost_flow

    top = float(np.max(penalty)) if len(penalty) else 1.0
    scale = COST_UNITS / top
    if weight > 0:
        seg_pool, seg_len, seg_cost = load_segments(p.free, p.count.astype(float), weight)
    else:
        seg_pool = np.arange(p.n_pools)
        seg_len, seg_cost = p.free.astype(float), np.zeros(p.n_pools)
    n = len(supply)
    sink = n + p.n_pools
    s = supply.astype(np.int64)
    m = len(tail)
    tails = np.concatenate([tail, np.arange(n), n + seg_pool])
    heads = np.concatenate([n + pool, np.full(n, sink), np.full(len(seg_pool), sink)])
    capacities = np.concatenate([s[tail], s, seg_len.astype(np.int64)])
    cost = np.concatenate([per_device, penalty, seg_cost])
    network = min_cost_flow.SimpleMinCostFlow()
    network.add_arcs_with_capacity_and_unit_cost(
        tails, heads, capacities, np.rint(cost * scale).astype(np.int64)
    )
    supplies = np.zeros(sink + 1, dtype=np.int64)
    supplies[:n] = s
    supplies[sink] = -int(s.sum())
    network.set_nodes_supplies(np.arange(sink + 1), supplies)
    status = network.solve()
    if status != network.OPTIMAL:
        zero = np.zeros(p.n_pools)
        return Network(np.zeros(m), f"min-cost flow failed: {status}", -math.inf, 0.0, zero)
    units = network.flows(np.arange(len(tails))).astype(float)
    value = float(np.sum(units * cost))
    rounding = float(np.sum(units)) * 0.5 / scale  # each unit's cost was rounded by <= 1/2
    prices = np.zeros(p.n_pools)
    if with_prices:
        seg_open = units[m + n :] < seg_len
        prices = residual_prices(
            tail, pool, per_device, units[:m] > 0, penalty, seg_pool, seg_cost, seg_open, p.n_pools
        )
    return Network(units[:m], "optimal", value - rounding, rounding, prices)


def spans(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """The indices start..end-1 of every (start, end) pair, one after the other."""
    size = ends - starts
    within = np.arange(int(size.sum())) - np.repeat(np.cumsum(size) - size, size)
    result: np.ndarray = np.repeat(starts, size) + within
    return result


def solve_tasks(
    arcs: Arcs,
    devices: np.ndarray,
    penalty: float,
    p: PoolArrays,
    weight: float,
    with_prices: bool = True,
) -> Network:
    """`solve_network` with tasks as the sources: each task's devices along its `arcs` at its
    score per device, or unplaced at `penalty` per task."""
    d = devices.astype(float)
    return solve_network(
        arcs.task,
        arcs.pool,
        arcs.score / d[arcs.task],
        devices,
        penalty / d,
        p,
        weight,
        with_prices=with_prices,
    )


MAX_PRICE_ROUNDS = 1_000


def residual_prices(
    tail: np.ndarray,
    pool: np.ndarray,
    cost: np.ndarray,
    used: np.ndarray,
    penalty: np.ndarray,
    seg_pool: np.ndarray,
    seg_cost: np.ndarray,
    seg_open: np.ndarray,
    n_pools: int,
) -> np.ndarray:
    """The pools' dual prices per device of an optimal flow (`solve_network`'s network, its
    arcs grouped by source): each pool's distance to the sink in the residual network.

    A pool's distance is its cheapest load segment with room, or, through a source it serves
    (backwards along that arc), the source's penalty or another arc of that source plus its
    pool's distance. So the distances solve a shortest-path problem on the pools alone, with
    an edge p -> q of length min over sources on p of (their cost to q - their cost to p):
    Bellman-Ford, vectorised, on those edges."""
    room = np.full(n_pools, np.inf)
    np.minimum.at(room, seg_pool[seg_open], seg_cost[seg_open])
    on = np.flatnonzero(used)
    np.minimum.at(room, pool[on], penalty[tail[on]] - cost[on])  # back to staying out
    source = target = cuts = heads = np.zeros(0, dtype=np.int64)
    length = np.zeros(0)
    if len(on):
        starts = np.searchsorted(tail, tail[on])
        ends = np.searchsorted(tail, tail[on], side="right")
        at = np.repeat(on, ends - starts)  # the used arc
        to = spans(starts, ends)  # an arc of the same source
        keep = pool[to] != pool[at]
        at, to = at[keep], to[keep]
        source, target = pool[at], pool[to]
        length = cost[to] - cost[at]
        order = np.argsort(source, kind="stable")
        source, target, length = source[order], target[order], length[order]
        if len(source):
            cuts = run_starts(source)
            heads = source[cuts]
    price = room.copy()
    tolerance = 1e-12 * float(np.max(penalty, initial=1.0))
    for _ in range(MAX_PRICE_ROUNDS if len(source) else 0):
        reach = np.minimum.reduceat(length + price[target], cuts)
        new = price.copy()
        new[heads] = np.minimum(room[heads], np.minimum(price[heads], reach))
        with np.errstate(invalid="ignore"):  # inf - inf where a pool is still unreached
            settled = (new == price) | (np.abs(new - price) <= tolerance)
        price = new
        if settled.all():
            break
    return np.where(np.isfinite(price), np.maximum(price, 0.0), 0.0)


REST_MAX_ARCS = 50_000  # the tasks placed again exactly, at most this many arcs


def _exact_rest(
    arcs: Arcs,
    tasks: np.ndarray,
    devices: np.ndarray,
    left: np.ndarray,
    penalty: float,
    limit: float,
) -> np.ndarray:
    """The arc each of `tasks` takes (-1: none) on the capacity `left` (updated), exactly: a
    small MILP on `arcs` (theirs only)."""
    # scipy is imported here, not with the module: it is most of the package's import time
    # (~0.5 s), and every `suanli` process (agent, CLI) imports the scheduler
    from scipy import sparse
    from scipy.optimize import Bounds, LinearConstraint, milp

    n = len(tasks)
    local = np.searchsorted(tasks, arcs.task)  # tasks are sorted
    m = len(local)
    c = np.concatenate([arcs.score, np.full(n, penalty)])
    assign = sparse.csr_array(
        (np.ones(m + n), (np.concatenate([local, np.arange(n)]), np.arange(m + n))),
        shape=(n, m + n),
    )
    use = sparse.csr_array(
        (devices[arcs.task].astype(float), (arcs.pool, np.arange(m))), shape=(len(left), m + n)
    )
    result = milp(
        c,
        constraints=[
            LinearConstraint(assign, 1.0, 1.0),
            LinearConstraint(use, -np.inf, left.astype(float)),
        ],
        integrality=np.ones_like(c),
        bounds=Bounds(0.0, 1.0),
        options={"time_limit": limit, "mip_rel_gap": 1e-9},
    )
    chosen = np.full(n, -1, dtype=np.int64)
    if result.x is None:
        return chosen
    on = np.flatnonzero(result.x[:m] > 0.5)
    chosen[local[on]] = on
    np.subtract.at(left, arcs.pool[on], devices[arcs.task[on]])
    return chosen


def flow_assign(
    t: TaskArrays,
    p: PoolArrays,
    snapshot: Snapshot,
    policy: Policy,
    now: float,
    classes: tuple[np.ndarray, list[np.ndarray]] | None,
    *,
    time_limit_s: float = 10.0,
    arcs: Arcs | None = None,
    penalty: float | None = None,
    network: Network | None = None,
) -> FlowResult:
    """The flow solver's assignment (see the module docstring); `classes` as in `build_arcs`.
    The caller keeps batches within FLOW_MAX_PAIRS task-pool pairs, or gives the `arcs` to
    solve on (grouped by task; the value is then the relaxation on those arcs only), and the
    `network` already solved on them at `penalty`."""
    if arcs is None:
        assert classes is not None
        arcs = build_arcs(t, p, snapshot, policy, now, classes)
        penalty = _penalty(arcs) if penalty is None else penalty  # over every arc
        arcs = prune_arcs(arcs, t.devices, p.free, p.count, load_weight(policy))
    n = t.n_tasks
    devices = t.devices.astype(np.int64)
    weight = load_weight(policy)
    penalty = _penalty(arcs) if penalty is None else penalty
    d = devices.astype(float)
    if network is None:
        network = solve_tasks(arcs, devices, penalty, p, weight, with_prices=False)
    share = network.units / d[arcs.task]
    status, relaxed, rounding = network.status, network.value, network.rounding
    chosen = np.full(n, -1, dtype=np.int64)  # the arc each task takes
    whole = np.flatnonzero(share > 1.0 - 1e-6)
    chosen[arcs.task[whole]] = whole
    left = p.free.astype(np.int64).copy()
    np.subtract.at(left, arcs.pool[whole], devices[arcs.task[whole]])
    part = (share > 1e-9) & (share <= 1.0 - 1e-6)
    split = np.unique(arcs.task[part])
    if len(split):
        # the split tasks, and the whole ones on the pools they were split over (moving among
        # those pools only), are placed again together, exactly; they are few
        touched = np.unique(arcs.pool[part])
        on_touched = np.isin(arcs.pool, touched)
        again = np.unique(arcs.task[whole[on_touched[whole]]])
        keep = np.isin(arcs.task, split) | (np.isin(arcs.task, again) & on_touched)
        if int(keep.sum()) > REST_MAX_ARCS:  # too many to move: the split tasks alone
            again = again[:0]
            keep = np.isin(arcs.task, split)
        back = chosen[again]
        np.add.at(left, arcs.pool[back], devices[again])
        redo = np.union1d(split, again)
        sub = arcs.subset(keep)
        picked = _exact_rest(sub, redo, devices, left, penalty, time_limit_s)
        chosen[redo] = np.where(picked >= 0, np.flatnonzero(keep)[np.maximum(picked, 0)], -1)
    rows = np.flatnonzero(chosen >= 0)
    taken = chosen[rows]
    pools, scores = arcs.pool[taken], arcs.score[taken]
    runner = _runners_up(arcs, n, chosen)
    assignment = {
        i: (j, r, value)
        for i, j, r, value in zip(
            rows.tolist(), pools.tolist(), runner[rows].tolist(), scores.tolist(), strict=True
        )
    }
    objective = plan_objective(scores, pools, devices[rows], p, weight)
    placeable = float(np.sum(share))
    return FlowResult(
        assignment,
        objective,
        relaxed,
        penalty,
        placeable,
        f"flow {status}",
        rounding,
    )


def _runners_up(arcs: Arcs, n: int, chosen: np.ndarray) -> np.ndarray:
    """Each task's cheapest arc other than the one it takes: its pool (-1: none)."""
    runner = np.full(n, -1, dtype=np.int64)
    score = arcs.score.copy()
    score[chosen[chosen >= 0]] = np.inf
    if not len(score):
        return runner
    starts = run_starts(arcs.task)
    best = np.minimum.reduceat(score, starts)
    at_best = np.isfinite(score) & (score == np.repeat(best, np.diff(np.r_[starts, len(score)])))
    first = np.unique(arcs.task[at_best], return_index=True)
    runner[first[0]] = arcs.pool[np.flatnonzero(at_best)[first[1]]]
    return runner


__all__ = [
    "FLOW_MAX_PAIRS",
    "Arcs",
    "FlowResult",
    "build_arcs",
    "flow_assign",
    "load_segments",
    "load_weight",
    "plan_objective",
]
