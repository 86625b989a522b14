"""The flow solver on large batches: arcs pruned by class, column generation by the pools'
prices, and a Lagrangian lower bound over every pool.

Owns `priced_assign`, which `engine` runs for `--solver flow` (and `auto`) on batches above
`flow.FLOW_MAX_PAIRS` task x pool pairs, where scoring every pair exactly costs more than the
whole solve may. The model is the flow solver's (`scheduler.flow`): each task to one pool or
unplaced at a penalty above any score, pools within their free devices, the objective the sum
of static scores plus the convex load term w x U (U - 1) / (2 x count) per pool.

1. **Estimates.** Tasks of a class (`arrays.task_classes`: origin, latency tier, kind,
   precision) share their objectives per unit of work at every pool (`arrays.class_features`),
   so a task's score at a pool is a few multiplications from them: its *estimate*, at the
   hour of the decision (exact where prices and carbon are flat over the task's run), or its
   *low estimate*, with each price and carbon intensity at the least of its series (a lower
   bound of its exact score). Both honour the task's models, residency, memory, size and
   deadline; its price ceiling only the exact score does.
2. **Prices to start from.** The batch aggregated by class (its devices, at the per-device
   estimate of its median task) is solved as a min-cost flow (`flow.solve_network`); its dual
   prices say which pools are scarce.
3. **Candidates.** Each task keeps the CANDIDATES pools of least estimate + price x devices
   among those with room, and only those are scored exactly (`arrays.evaluate`, the scores
   every solver shares).
4. **Solve, then price out.** The flow solver (`flow.flow_assign`) solves on the candidate
   arcs and gives the pools' dual prices pi. One pass over every open pool of every task then
   computes, at those prices, the Lagrangian relaxation of the capacities

       sum over tasks of min(penalty, min over the pools open to it of (score + pi x devices))
       + sum over pools of min over 0 <= u <= free of (w u (u - 1) / (2 count) - pi u),

   which is at most the value of every plan (penalties included), with exact scores on the
   candidate arcs and low estimates elsewhere; and the arcs it leaves out whose low estimate
   + price is below what the task pays now (a column that might improve the plan). Those arcs
   (up to ADDED_PER_TASK a task, ADDED_PER_UNPLACED a task left out: it may need many) are
   scored exactly and added, and the flow solves again, up to GENERATIONS times, or until the
   relaxation on the arcs so far is within GAP of the bound. When no such arc is left, the
   pruned flow is the flow on every arc.
5. **The bound of a plan** that leaves k tasks out: any penalty q defines a relaxation of its
   own, so the bound is the best over q of sum of min(q, least) + the pools' terms - q x k,
   at q = the k-th greatest least (`flow.lagrangian_bound`). A plan is compared with plans
   that place as many tasks, so a plan that leaves a few more out than it must still gets a
   useful bound.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from suanli.scheduler.arrays import (
    FRACTIONS,
    ClassFeatures,
    PoolArrays,
    TaskArrays,
    class_features,
    evaluate,
    groups_of,
)
from suanli.scheduler.flow import (
    Arcs,
    FlowResult,
    flow_assign,
    lagrangian_bound,
    load_weight,
    solve_network,
    solve_tasks,
    spans,
)
from suanli.scheduler.model import Objective, Policy, Snapshot

CANDIDATES = 12  # pools scored exactly per task at first
ADDED_PER_TASK = 4  # arcs added per task and generation
ADDED_PER_UNPLACED = 64  # for a task left out
GENERATIONS = 6  # solves at most
GAP = 1e-3  # the relaxation on the arcs so far, this close to the bound: stop pricing
CELLS_PER_BLOCK = 2_000_000  # task x pool estimates at once (memory bound)
Classes = list[tuple[int, np.ndarray, np.ndarray]]


def _estimates(
    t: TaskArrays,
    rows: np.ndarray,
    c: int,
    cols: np.ndarray,
    f: ClassFeatures,
    p: PoolArrays,
    policy: Policy,
    now: float,
    bandwidth_gbps: float,
    low: bool,
) -> np.ndarray:
    """Scores of tasks `rows` (all of class `c`) at pools `cols`, from the class's features
    (`low`: each price and carbon intensity at the least of its series, a lower bound), inf
    where a task's own models, residency, memory or size rule the pool out."""
    work = (t.work_flop[rows] / t.efficiency[rows])[:, None]
    data = t.data_gb[rows][:, None]
    devices = t.devices[rows][:, None]
    unit_cost = (f.unit_cost_low if low else f.unit_cost)[c, cols][None, :]
    unit_carbon = (f.unit_carbon_low if low else f.unit_carbon)[c, cols][None, :]
    unit_location = (f.unit_carbon_location_low if low else f.unit_carbon_location)[c, cols]
    raw = {
        Objective.COST: lambda: work * unit_cost + data * f.fee_gb[c, cols][None, :],
        Objective.CARBON: lambda: work * unit_carbon,
        Objective.CARBON_LOCATION: lambda: work * unit_location[None, :],
        Objective.LATENCY: lambda: f.rtt_ms[c, cols][None, :],
        Objective.DISTANCE: lambda: f.distance_km[c, cols][None, :],
        Objective.LOAD: lambda: ((p.count - p.free)[cols][None, :] + devices) / p.count[cols],
        Objective.REPUTATION: lambda: 1.0 - p.site_reputation[p.site_of_pool[cols]][None, :],
    }
    total = np.zeros((len(rows), len(cols)))
    single = policy.single
    for objective, weight in policy.weights.items():
        if weight <= 0:
            continue
        value = raw[objective]()
        if single is None and objective not in FRACTIONS:
            assert t.scales is not None
            lo, span = t.scales.bounds(objective)
            value = (value - lo[rows][:, None]) / span[rows][:, None]
        total = total + (value if single is not None else weight * value)
    allowed = ((t.model_bits[rows, None] >> p.device_index[cols][None, :]) & 1) == 1
    bits = t.province_bits[rows, None]
    allowed &= (bits == -1) | ((p.site_province_bits[p.site_of_pool[cols]][None, :] & ~bits) == 0)
    allowed &= p.memory_gb[cols][None, :] >= t.memory_gb[rows, None]
    allowed &= p.count[cols][None, :] >= devices
    deadline = t.deadline_s[rows][:, None]
    if np.isfinite(deadline).any():  # as `evaluate`: transfer, then the run at the pool's peak
        moves = f.moves[c, cols][None, :]
        transfer = np.where(moves, data * (8.0 / bandwidth_gbps), 0.0)
        with np.errstate(divide="ignore"):
            run = work / (p.peak[t.precision[rows[0]], cols][None, :] * devices)
        allowed &= now + transfer + run <= deadline
    return np.where(allowed, total, np.inf)


def _by_class(f: ClassFeatures, p: PoolArrays) -> Classes:
    """(class, its tasks, its open pools) for every class."""
    result = []
    for members in groups_of(f.class_of):
        c = int(f.class_of[members[0]])
        result.append((c, members, np.flatnonzero(f.open_[c])))
    return result


def _blocks(classes: Classes) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(class, some of its tasks, its open pools): blocks of at most CELLS_PER_BLOCK pairs."""
    for c, members, cols in classes:
        if len(cols):
            step = max(1, CELLS_PER_BLOCK // len(cols))
            for start in range(0, len(members), step):
                yield c, members[start : start + step], cols


def _least(values: np.ndarray, k: int) -> np.ndarray:
    """Per row, the columns of its k least values (all columns where there are at most k), in
    no particular order."""
    if values.shape[1] > k:
        return np.argpartition(values, k - 1, axis=1)[:, :k]
    return np.broadcast_to(np.arange(values.shape[1]), values.shape)


def _start_prices(
    t: TaskArrays,
    p: PoolArrays,
    policy: Policy,
    now: float,
    bandwidth: float,
    f: ClassFeatures,
    classes: Classes,
    weight: float,
) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """Pool prices per device from the batch aggregated by class (module docstring, 2), and
    the pools the aggregated flow sends each class to."""
    tails: list[np.ndarray] = []
    pools: list[np.ndarray] = []
    costs: list[np.ndarray] = []
    demand: list[int] = []
    served: list[int] = []
    for c, members, cols in classes:
        if not len(cols):
            continue
        served.append(c)
        work = t.work_flop[members] / t.efficiency[members]
        median = members[np.argsort(work, kind="stable")[[len(members) // 2]]]
        estimate = _estimates(t, median, c, cols, f, p, policy, now, bandwidth, low=False)[0]
        ok = np.isfinite(estimate) & (p.free[cols] > 0)
        tails.append(np.full(int(ok.sum()), len(demand)))
        pools.append(cols[ok])
        costs.append(estimate[ok] / float(t.devices[median[0]]))
        demand.append(int(t.devices[members].sum()))
    if not demand:
        return np.zeros(p.n_pools), {}
    tail, pool, cost = np.concatenate(tails), np.concatenate(pools), np.concatenate(costs)
    top = 10.0 * (float(np.abs(cost).max()) + 1.0) if len(cost) else 1.0
    need = np.array(demand, dtype=np.int64)
    network = solve_network(tail, pool, cost, need, np.full(len(need), top), p, weight)
    used = network.units > 0
    support: dict[int, np.ndarray] = {}
    for k, c in enumerate(served):
        support[c] = np.unique(pool[used & (tail == k)])
    return network.prices, support


def _exact(
    t: TaskArrays,
    p: PoolArrays,
    snapshot: Snapshot,
    policy: Policy,
    now: float,
    task: np.ndarray,
    pool: np.ndarray,
) -> Arcs:
    """The arcs (`task`, `pool`), each once, by task, with their exact scores (inf where
    the task cannot run there: kept, so that the bound knows)."""
    order = np.lexsort((pool, task))
    task, pool = task[order], pool[order]
    fresh = np.r_[True, (task[1:] != task[:-1]) | (pool[1:] != pool[:-1])]
    task, pool = task[fresh], pool[fresh]
    scores = np.full(len(task), np.inf)
    if len(task):
        rows, first, per = np.unique(task, return_index=True, return_counts=True)
        width = int(per.max())
        # (rows, width) columns, padded with the row's first pool (scored, then dropped)
        slot = np.arange(len(task)) - np.repeat(first, per)
        cols = np.repeat(pool[first][:, None], width, axis=1)
        where = np.repeat(np.arange(len(rows)), per)
        cols[where, slot] = pool
        step = max(1, CELLS_PER_BLOCK // width)
        for start in range(0, len(rows), step):
            block = slice(start, start + step)
            ev = evaluate(t, rows[block], p, snapshot, policy, now, cols=cols[block])
            mine = (where >= start) & (where < start + step)
            scores[mine] = ev.score[where[mine] - start, slot[mine]]
    return Arcs(task, pool, scores)


def _candidates(
    t: TaskArrays,
    p: PoolArrays,
    snapshot: Snapshot,
    policy: Policy,
    now: float,
    f: ClassFeatures,
    classes: Classes,
    price: np.ndarray,
    support: dict[int, np.ndarray],
) -> Arcs:
    """Each task's CANDIDATES pools with room of least estimate + price x devices, and the
    pools the aggregated flow sends its class to, scored exactly."""
    tasks, pools = [], []
    bandwidth = snapshot.bandwidth_gbps
    for c, rows, cols in _blocks(classes):
        estimate = _estimates(t, rows, c, cols, f, p, policy, now, bandwidth, low=False)
        estimate = np.where(t.devices[rows, None] <= p.free[cols][None, :], estimate, np.inf)
        estimate = estimate + price[cols][None, :] * t.devices[rows, None]
        best = _least(estimate, CANDIDATES)
        ok = np.isfinite(np.take_along_axis(estimate, best, axis=1))
        r, j = np.nonzero(ok)
        tasks.append(rows[r])
        pools.append(cols[best[r, j]])
        extra = support.get(c, np.zeros(0, dtype=np.int64))
        if len(extra):
            tasks.append(np.repeat(rows, len(extra)))
            pools.append(np.tile(extra, len(rows)))
    if not tasks:
        empty = np.zeros(0, dtype=np.int64)
        return Arcs(empty, empty, np.zeros(0))
    return _exact(t, p, snapshot, policy, now, np.concatenate(tasks), np.concatenate(pools))


def _price_out(
    t: TaskArrays,
    p: PoolArrays,
    policy: Policy,
    now: float,
    bandwidth: float,
    f: ClassFeatures,
    classes: Classes,
    arcs: Arcs,
    price: np.ndarray,
    weight: float,
    penalty: float,
) -> tuple[float, np.ndarray, float, np.ndarray, np.ndarray]:
    """The Lagrangian bound at `price` (module docstring, 4), its parts (each task's least
    score + price x devices over its open pools, uncapped; the pools' terms) and the arcs left
    out that might improve the plan: (bound, least, pools' terms, their tasks, their pools)."""
    n = t.n_tasks
    d = t.devices.astype(float)
    reduced = arcs.score + price[arcs.pool] * d[arcs.task]
    paid = np.full(n, penalty)
    np.minimum.at(paid, arcs.task, reduced)  # what each task pays now, at most
    least = np.full(n, np.inf)  # over every open pool, the penalty aside
    np.minimum.at(least, arcs.task, reduced)
    tolerance = 1e-9 * penalty
    add_task, add_pool = [], []
    starts = np.searchsorted(arcs.task, np.arange(n))  # arcs are grouped by task
    ends = np.searchsorted(arcs.task, np.arange(n), side="right")
    for c, rows, cols in _blocks(classes):
        low = _estimates(t, rows, c, cols, f, p, policy, now, bandwidth, low=True)
        low = low + price[cols][None, :] * d[rows, None]
        # an arc in the network counts with its exact score (above)
        mine = spans(starts[rows], ends[rows])
        if len(mine):
            r = np.repeat(np.arange(len(rows)), ends[rows] - starts[rows])
            low[r, np.searchsorted(cols, arcs.pool[mine])] = np.inf
        least[rows] = np.minimum(least[rows], low.min(axis=1))
        better = low < (paid[rows] - tolerance)[:, None]
        if better.any():
            # a task left out may need many arcs to displace others: more of them
            out = paid[rows] >= penalty
            best = _least(low, ADDED_PER_UNPLACED if out.any() else ADDED_PER_TASK)
            values = np.take_along_axis(low, best, axis=1)
            rank = np.argsort(np.argsort(values, axis=1, kind="stable"), axis=1)
            limit = np.where(out, ADDED_PER_UNPLACED, ADDED_PER_TASK)[:, None]
            keep = np.take_along_axis(better, best, axis=1) & (rank < limit)
            r, j = np.nonzero(keep)
            add_task.append(rows[r])
            add_pool.append(cols[best[r, j]])
    free = p.free.astype(float)
    if weight > 0:
        # the best u of w u (u - 1) / (2 count) - pi u on [0, free], u real (a lower value)
        u = np.clip(price * p.count / weight + 0.5, 0.0, free)
        pools = weight * u * (u - 1.0) / (2.0 * p.count) - price * u
    else:
        pools = -price * free
    pools_term = float(np.sum(pools))
    bound = float(np.sum(np.minimum(least, penalty))) + pools_term
    if not add_task:
        empty = np.zeros(0, dtype=np.int64)
        return bound, least, pools_term, empty, empty
    return bound, least, pools_term, np.concatenate(add_task), np.concatenate(add_pool)


def _ceiling(t: TaskArrays, f: ClassFeatures, policy: Policy) -> float:
    """Above every score a task of the batch can have: its estimate at the worst open pool
    of its class, at the dearest hour, times 2 (time-of-use and carbon windows)."""
    c = f.class_of
    opened = np.where(f.open_, 1.0, 0.0)
    worst = {
        Objective.COST: (f.unit_cost * opened).max(axis=1),
        Objective.CARBON: (f.unit_carbon * opened).max(axis=1),
        Objective.CARBON_LOCATION: (f.unit_carbon_location * opened).max(axis=1),
        Objective.LATENCY: (f.rtt_ms * opened).max(axis=1),
        Objective.DISTANCE: (f.distance_km * opened).max(axis=1),
    }
    fee = (f.fee_gb * opened).max(axis=1)
    work = t.work_flop / t.efficiency
    per_task = {
        Objective.COST: work * worst[Objective.COST][c] + t.data_gb * fee[c],
        Objective.CARBON: work * worst[Objective.CARBON][c],
        Objective.CARBON_LOCATION: work * worst[Objective.CARBON_LOCATION][c],
        Objective.LATENCY: worst[Objective.LATENCY][c],
        Objective.DISTANCE: worst[Objective.DISTANCE][c],
    }
    single = policy.single
    if single is not None:
        top = float(np.max(per_task.get(single, np.ones(1)))) if t.n_tasks else 1.0
    else:
        top = float(sum(w for w in policy.weights.values())) * 2.0  # normalised, with margin
    return 2.0 * top + 1.0


def priced_assign(
    t: TaskArrays,
    p: PoolArrays,
    snapshot: Snapshot,
    policy: Policy,
    now: float,
    time_limit_s: float = 10.0,
) -> FlowResult:
    """The flow solver's assignment on a large batch (see the module docstring); its
    `relaxed` is the Lagrangian bound (penalties included) at the final prices."""
    weight = load_weight(policy)
    bandwidth = snapshot.bandwidth_gbps
    f = class_features(t, p, snapshot, now)
    classes = _by_class(f, p)
    start, support = _start_prices(t, p, policy, now, bandwidth, f, classes, weight)
    arcs = _candidates(t, p, snapshot, policy, now, f, classes, start, support)
    finite = np.abs(arcs.score[np.isfinite(arcs.score)])
    penalty = 10.0 * max(_ceiling(t, f, policy), float(finite.max(initial=0.0)) + 1.0)
    added = 0
    devices = t.devices.astype(np.int64)
    d = devices.astype(float)
    for generation in range(1, GENERATIONS + 1):
        solvable = arcs.subset(np.isfinite(arcs.score))
        network = solve_tasks(solvable, devices, penalty, p, weight)
        bound, least, pools_term, more_task, more_pool = _price_out(
            t, p, policy, now, bandwidth, f, classes, arcs, network.prices, weight, penalty
        )
        # proved within GAP of the relaxation over every arc (the penalties of the tasks it
        # leaves out aside): no need to price more in
        sent = np.bincount(solvable.task, weights=network.units, minlength=t.n_tasks) / d
        value = network.value - penalty * float(np.sum(1.0 - sent))  # penalties aside
        placed = int(np.sum(sent > 1.0 - 1e-9))
        floor = lagrangian_bound(least, pools_term, placed)
        close = value - floor <= GAP * max(1.0, abs(floor))
        if close or not len(more_task) or generation == GENERATIONS:
            break
        more = _exact(t, p, snapshot, policy, now, more_task, more_pool)
        added += int(np.isfinite(more.score).sum())
        task = np.concatenate([arcs.task, more.task])
        order = np.argsort(task, kind="stable")
        arcs = Arcs(
            task[order],
            np.concatenate([arcs.pool, more.pool])[order],
            np.concatenate([arcs.score, more.score])[order],
        )
    result = flow_assign(
        t,
        p,
        snapshot,
        policy,
        now,
        None,
        time_limit_s=time_limit_s,
        arcs=solvable,
        penalty=penalty,
        network=network,
    )
    return FlowResult(
        result.assignment,
        result.objective,
        bound,
        penalty,
        float(len(result.assignment)),
        f"{result.status}; {len(solvable.task):,} arcs ({added:,} priced in), "
        f"{generation} solve{'s' if generation > 1 else ''}",
        result.rounding,
        least,
        pools_term,
    )


__all__ = ["CANDIDATES", "priced_assign"]
