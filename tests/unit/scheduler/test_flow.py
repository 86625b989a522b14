"""The flow solver on the generator's instances: as good as the MILP where both run, better
than greedy, a proved bound on every plan, and a clear refusal above its size."""

from __future__ import annotations

import pytest

from suanli.errors import InvalidValue
from suanli.scheduler import POLICIES, place
from suanli.scheduler import flow as flow_module
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


def test_a_batch_above_the_flow_limit_is_refused_with_the_fix(problem, monkeypatch) -> None:
    monkeypatch.setattr(flow_module, "FLOW_MAX_PAIRS", 1000)
    with pytest.raises(InvalidValue) as refused:
        place(problem.tasks, problem.snapshot, POLICIES["cost"], 0.0, solver="flow")
    assert "--solver greedy" in refused.value.message_en
    assert "flow" in refused.value.message_zh
