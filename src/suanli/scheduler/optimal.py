"""The exact batch assignment: a MILP solved by HiGHS (SciPy's `milp`).

Owns `solve_optimal`. Variables x[t, p] in {0, 1} exist only for statically feasible pairs;
u[t] in {0, 1} marks task t unplaced. Minimise

    sum score[t, p] * x[t, p] + PENALTY * sum u[t]
    s.t. sum_p x[t, p] + u[t] = 1                 for every task
         sum_t devices[t] * x[t, p] <= free[p]     for every pool

plus, for a policy with a load weight w, the convex load term of every pool (w x U (U - 1) /
(2 x count), U the devices the plan adds; `scheduler.flow`) through one continuous variable
per added device of cost w x (its position) / count, filled cheapest first.

PENALTY exceeds any task's worst score, so the optimum places as many tasks as capacity allows
before it lowers the objective. The LP relaxation (x, u in [0, 1]) gives the lower bound used to
report how far greedy is from optimal. The runner-up of each placement is its second-best
feasible pool in the score matrix (the MILP has no "moment of choice").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.optimize import Bounds, LinearConstraint, milp

from suanli.scheduler.arrays import PoolArrays, TaskArrays, evaluate
from suanli.scheduler.flow import load_segments, load_weight
from suanli.scheduler.model import Policy, Snapshot


@dataclass(frozen=True)
class OptimalResult:
    assignment: dict[int, int]  # task index -> pool index
    runner_up: dict[int, int]
    scores: dict[int, float]  # task index -> its score at the chosen pool
    objective: float  # score over placed tasks (penalties excluded)
    lower_bound: float | None  # LP relaxation, same objective (penalties excluded where 0)
    status: str


def solve_optimal(
    t: TaskArrays,
    p: PoolArrays,
    snapshot: Snapshot,
    policy: Policy,
    now: float,
    time_limit_s: float,
) -> OptimalResult:
    ev = evaluate(t, slice(None), p, snapshot, policy, now)
    score = ev.score
    # a pair whose task needs more devices than the pool has free can never be chosen
    fits = t.devices[:, None] <= p.free[None, :]
    tasks, pools = np.nonzero(np.isfinite(score) & fits)
    n_pairs, n_tasks = len(tasks), t.n_tasks
    costs = score[tasks, pools]
    penalty = 10.0 * (float(np.abs(costs).max()) + 1.0) if n_pairs else 1.0
    weight = load_weight(policy)
    seg_pool, seg_len, seg_cost = load_segments(
        p.free, p.count.astype(float), weight, segments=10**9
    )
    n_seg = len(seg_pool) if weight > 0 else 0
    width = n_pairs + n_tasks + n_seg
    c = np.concatenate([costs, np.full(n_tasks, penalty), seg_cost[:n_seg]])
    columns = np.arange(n_pairs + n_tasks)
    assign = sparse.csr_array(
        (np.ones(n_pairs + n_tasks), (np.concatenate([tasks, np.arange(n_tasks)]), columns)),
        shape=(n_tasks, width),
    )
    # devices placed on a pool; with a load weight every one of them is also carried by the
    # pool's load variables (one per added device, of increasing cost: the convex load term)
    capacity = sparse.csr_array(
        (
            np.concatenate([t.devices[tasks].astype(float), -np.ones(n_seg)]),
            (
                np.concatenate([pools, seg_pool[:n_seg]]),
                np.concatenate([np.arange(n_pairs), n_pairs + n_tasks + np.arange(n_seg)]),
            ),
        ),
        shape=(p.n_pools, width),
    )
    upper = p.free.astype(float) if n_seg == 0 else np.zeros(p.n_pools)
    constraints = [
        LinearConstraint(assign, 1.0, 1.0),
        LinearConstraint(capacity, -np.inf, upper),
    ]
    high = np.ones(width)
    high[n_pairs + n_tasks :] = seg_len[:n_seg]
    bounds = Bounds(0.0, high)
    options = {"time_limit": float(time_limit_s), "mip_rel_gap": 1e-6}
    integrality = np.ones_like(c)
    integrality[n_pairs + n_tasks :] = 0  # load variables are continuous
    result = milp(
        c, constraints=constraints, integrality=integrality, bounds=bounds, options=options
    )
    relaxed = milp(
        c,
        constraints=constraints,
        integrality=np.zeros_like(c),
        bounds=bounds,
        options={"time_limit": float(time_limit_s)},
    )
    if result.x is None:
        return OptimalResult({}, {}, {}, 0.0, None, f"no solution: {result.message}")
    chosen = result.x[:n_pairs] > 0.5
    assignment = {int(i): int(j) for i, j in zip(tasks[chosen], pools[chosen], strict=True)}
    runner_up: dict[int, int] = {}
    for i, j in assignment.items():
        row = np.where(np.isfinite(score[i]), score[i], np.inf)
        row[j] = np.inf
        second = int(np.argmin(row))
        if np.isfinite(row[second]):
            runner_up[i] = second
    objective = (
        float(score[list(assignment), list(assignment.values())].sum()) if assignment else 0.0
    )
    # LP <= OPT = objective + penalty x unplaced, so the objective is >= LP - penalty x unplaced
    lower = None
    if relaxed.x is not None:
        lower = float(relaxed.fun) - penalty * (n_tasks - len(assignment))
    status = "optimal" if result.status == 0 else f"time limit ({result.message})"
    scores = {i: float(score[i, j]) for i, j in assignment.items()}
    return OptimalResult(assignment, runner_up, scores, objective, lower, status)
