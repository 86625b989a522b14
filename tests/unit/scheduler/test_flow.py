"""The flow solver on the generator's instances: as good as the MILP where both run, better
than greedy, a proved bound on every plan, and above its size the same plan from arcs priced
in."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from suanli.scheduler import POLICIES, place, pricing
from suanli.scheduler import flow as flow_module
from suanli.scheduler.arrays import pool_arrays
from suanli.scheduler.engine import choose_solver
from suanli.scheduler.generate import generate_problem
from suanli.scheduler.problem import parse_problem


@pytest.fixture(scope="module")
def problem():
    return parse_problem(generate_problem(300, 30, 2026))


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_within_half_a_percent_of_the_milp_on_every_policy(problem, policy: str) -> None:
    flow = place(problem.tasks, problem.snapshot, POLICIES[policy], 0.0, solver="flow")
    optimal = place(
        problem.tasks, problem.snapshot, POLICIES[policy], 0.0, solver="optimal", time_limit_s=60
    )
    greedy = place(problem.tasks, problem.snapshot, POLICIES[policy], 0.0, solver="greedy")
    assert optimal.solver.status == "optimal"
    assert len(flow.placements) == len(optimal.placements) >= len(greedy.placements)
    assert flow.solver.objective <= optimal.solver.objective * 1.005 + 1e-9
    assert flow.solver.lower_bound is not None
    assert flow.solver.lower_bound <= optimal.solver.objective + 1e-6
    if len(flow.placements) == len(greedy.placements):
        assert flow.solver.objective <= greedy.solver.objective + 1e-9


def test_every_placement_names_another_feasible_pool_as_runner_up(problem) -> None:
    plan = place(problem.tasks, problem.snapshot, POLICIES["cost"], 0.0, solver="flow")
    pools = {p.id: p for p in problem.snapshot.pools}
    tasks = {t.id: t for t in problem.tasks}
    named = [p for p in plan.placements if p.runner_up is not None]
    assert len(named) > len(plan.placements) // 2
    for placement in named:
        runner = pools[placement.runner_up]
        assert runner.id != placement.pool
        assert runner.device.kind is tasks[placement.task].device_kind


def test_auto_runs_flow_up_to_its_size_and_greedy_above() -> None:
    limit = flow_module.FLOW_MAX_PAIRS
    assert choose_solver("auto", 1000, 100) == "flow"
    assert choose_solver("auto", limit // 100, 100) == "flow"
    assert choose_solver("auto", limit // 100 + 1, 100) == "greedy"
    assert choose_solver("optimal", 10**6, 10**4) == "optimal"


@pytest.mark.parametrize("policy", ["cost", "green", "green-location", "balanced"])
def test_above_its_size_the_flow_prices_arcs_in_and_proves_its_gap(
    problem, policy: str, monkeypatch
) -> None:
    """Above FLOW_MAX_PAIRS the flow scores only candidate arcs and prices the others in:
    its plan matches the flow on every arc and its bound, over every pool, still holds."""
    exact = place(problem.tasks, problem.snapshot, POLICIES[policy], 0.0, solver="flow")
    monkeypatch.setattr(flow_module, "FLOW_MAX_PAIRS", 1000)
    monkeypatch.setattr(pricing, "CANDIDATES", 3)  # few, so that pricing in has work to do
    priced = place(problem.tasks, problem.snapshot, POLICIES[policy], 0.0, solver="flow")
    assert "priced in" in priced.solver.status
    assert len(priced.placements) == len(exact.placements)
    assert priced.solver.objective <= exact.solver.objective * 1.005 + 1e-9
    bound = priced.solver.lower_bound
    assert bound is not None
    assert bound <= exact.solver.objective + 1e-6 * abs(exact.solver.objective)
    assert priced.solver.objective <= bound + 0.01 * abs(bound)
    free = {pool.id: pool.free for pool in problem.snapshot.pools}
    tasks = {t.id: t for t in problem.tasks}
    for placement in priced.placements:
        free[placement.pool] -= tasks[placement.task].devices
    assert min(free.values()) >= 0


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_prices_of_a_solved_flow_are_its_dual(seed: int) -> None:
    """Strong duality: the Lagrangian of the capacities at the network's prices equals the
    flow's value (each source pays its least arc cost + price, or its penalty)."""
    rng = np.random.default_rng(seed)
    snapshot = parse_problem(generate_problem(60, 8, seed)).snapshot
    p = pool_arrays(snapshot)
    n = 80
    tail = np.repeat(np.arange(n), 4)
    pool = rng.integers(0, p.n_pools, len(tail))
    cost = rng.uniform(1.0, 100.0, len(tail))
    supply = rng.integers(1, 3, n)
    penalty = np.full(n, 1000.0)
    network = flow_module.solve_network(tail, pool, cost, supply, penalty, p, 0.0)
    assert network.status == "optimal"
    pays = penalty.copy()
    np.minimum.at(pays, tail, cost + network.prices[pool])
    lagrangian = float(np.sum(pays * supply) - np.sum(network.prices * p.free))
    assert lagrangian == pytest.approx(network.value, rel=1e-6, abs=1e-3)
    assert (network.prices >= 0).all()


def _best_plan(arcs: flow_module.Arcs, devices, free, count, weight: float, penalty: float):
    """The least objective of every assignment of the tasks to one of their arcs or to
    nothing (penalty per task left out), by enumeration: pools within their free devices,
    the objective the scores plus the convex load term."""
    import itertools

    options = [[*np.flatnonzero(arcs.task == i).tolist(), -1] for i in range(len(devices))]
    best = np.inf
    for choice in itertools.product(*options):
        added = np.zeros(len(free))
        value = 0.0
        for i, a in enumerate(choice):
            if a < 0:
                value += penalty
            else:
                added[arcs.pool[a]] += devices[i]
                value += arcs.score[a]
        if np.all(added <= free):
            best = min(best, value + weight * float(np.sum(added * (added - 1) / (2 * count))))
    return best


@given(seed=st.integers(0, 10_000), weight=st.sampled_from([0.0, 0.7, 4.0]))
@settings(max_examples=60, deadline=None)
def test_pruning_keeps_an_optimal_plan(seed: int, weight: float) -> None:
    """Arcs left out by `prune_arcs` are never needed: the best plan on the arcs kept is as
    good as the best on all of them (tight pools, tasks of 1 to 3 devices, ties in scores)."""
    rng = np.random.default_rng(seed)
    n_tasks, n_pools = int(rng.integers(2, 6)), int(rng.integers(2, 8))
    devices = rng.integers(1, 4, n_tasks)
    count = rng.integers(3, 9, n_pools)
    free = np.minimum(count, rng.integers(0, 6, n_pools))
    tasks, pools = [], []
    for i in range(n_tasks):
        reach = np.flatnonzero((rng.random(n_pools) < 0.8) & (free >= devices[i]))
        tasks += [i] * len(reach)
        pools += reach.tolist()
    scores = rng.integers(0, 5, len(tasks)).astype(float)  # small integers: many ties
    arcs = flow_module.Arcs(
        np.array(tasks, dtype=np.int64), np.array(pools, dtype=np.int64), scores
    )
    kept = flow_module.prune_arcs(arcs, devices, free, count, weight)
    assert np.all(np.diff(kept.task) >= 0)  # still grouped by task
    for i in range(n_tasks):
        assert np.sum(kept.task == i) >= min(2, np.sum(arcs.task == i))
    penalty = 100.0
    full = _best_plan(arcs, devices, free, count, weight, penalty)
    assert _best_plan(kept, devices, free, count, weight, penalty) == pytest.approx(full)


def test_a_pass_of_new_tasks_on_a_busy_snapshot_scores_only_pools_with_room() -> None:
    """An incremental pass: most pools are full; the flow is still proved optimal, equal to
    the MILP, and scores no pool without room."""
    import dataclasses

    base = parse_problem(generate_problem(400, 40, 7))
    busy = tuple(
        dataclasses.replace(pool, free=pool.free if k % 4 == 0 else 0)
        for k, pool in enumerate(base.snapshot.pools)
    )
    snapshot = dataclasses.replace(base.snapshot, pools=busy)
    tasks = base.tasks[:60]
    flow = place(tasks, snapshot, POLICIES["cost"], 0.0, solver="flow")
    optimal = place(tasks, snapshot, POLICIES["cost"], 0.0, solver="optimal", time_limit_s=60)
    assert len(flow.placements) == len(optimal.placements) > 0
    assert flow.solver.objective == pytest.approx(optimal.solver.objective, rel=1e-6)
    full = {pool.id for pool in busy if pool.free == 0}
    assert not {placement.pool for placement in flow.placements} & full
    assert not {placement.runner_up for placement in flow.placements} & full


def test_pruning_keeps_the_arcs_a_load_weight_needs() -> None:
    """Three one-device tasks, three pools of two; two tasks can only use pools A and B, the
    third also C at a higher score. With a heavy load weight the best plan spreads the tasks
    one per pool, so the third task's dearer arc to C must be kept."""
    arcs = flow_module.Arcs(
        np.array([0, 0, 1, 1, 2, 2, 2]),
        np.array([0, 1, 0, 1, 0, 1, 2]),
        np.array([0, 0, 0, 0, 0, 0, 0.5]),
    )
    devices, free, count = np.ones(3, dtype=np.int64), np.full(3, 2), np.full(3, 2)
    kept = flow_module.prune_arcs(arcs, devices, free, count, 4.0)
    assert _best_plan(kept, devices, free, count, 4.0, 100.0) == pytest.approx(0.5)
    assert len(flow_module.prune_arcs(arcs, devices, free, count, 0.0).task) == 6  # C goes
