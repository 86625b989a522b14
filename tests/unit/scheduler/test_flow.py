"""The flow solver on the generator's instances: as good as the MILP where both run, better
than greedy, a proved bound on every plan, and above its size the same plan from arcs priced
in."""

from __future__ import annotations

import numpy as np
import pytest

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


@pytest.mark.parametrize("policy", ["cost", "green", "balanced"])
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
