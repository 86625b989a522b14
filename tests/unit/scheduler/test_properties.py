"""Invariants of any plan, on random snapshots: capacity, hard constraints, one outcome each."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from suanli.catalog import find_site, latency
from suanli.scheduler import POLICIES, Objective, place
from tests.builders import a_pool_at, a_snapshot, a_task

SITES = ["ZJK", "YRD_DEMO", "HORINGER", "ZHONGWEI", "GUIAN", "SHAOGUAN"]
DEVICES = ["H800", "A800", "T4", "Ascend 910B", "EPYC 9654", "V100"]
ORIGINS = ["上海", "北京", "广州", "成都", "乌鲁木齐", "ZHONGWEI"]
PRECISIONS = ["fp64", "fp32", "bf16", "fp16", "fp8", "int8"]
TIERS = ["interactive", "standard", "batch"]
STATIC_POLICIES = sorted(n for n, p in POLICIES.items() if Objective.LOAD not in p.weights)


@st.composite
def snapshots(draw: st.DrawFn, ample: bool = False):
    n = draw(st.integers(1, 6))
    pools = []
    for j in range(n):
        count = draw(st.integers(32, 64) if ample else st.integers(1, 64))
        free = count if ample else draw(st.integers(0, count))
        pools.append(
            a_pool_at(
                f"p{j}",
                draw(st.sampled_from(SITES)),
                draw(st.sampled_from(DEVICES)),
                count,
                draw(st.integers(0, 3000)),
                free=free,
                energy_billed=draw(st.booleans()),
            )
        )
    return a_snapshot(*pools)


@st.composite
def task_lists(draw: st.DrawFn, ample: bool = False):
    tasks = []
    for i in range(draw(st.integers(1, 12))):
        builder = a_task(f"t{i}").from_(draw(st.sampled_from(ORIGINS)))
        kind = draw(st.sampled_from(["gpu", "npu", "cpu"]))
        devices = draw(st.integers(1, 2 if ample else 16))
        builder = getattr(builder, f"{kind}s")(devices)
        builder = builder.precision(draw(st.sampled_from(PRECISIONS)))
        builder = builder.work(draw(st.floats(1e15, 1e20)))
        builder = builder.tier(draw(st.sampled_from(TIERS)))
        if not ample:
            if draw(st.booleans()):
                builder = builder.deadline(draw(st.floats(10.0, 1e6)))
            if draw(st.booleans()):
                builder = builder.max_price(draw(st.integers(0, 10**6)))
            if draw(st.booleans()):
                builder = builder.only_in(
                    *draw(st.sets(st.sampled_from(["河北", "宁夏", "贵州", "广东"]), min_size=1))
                )
            if draw(st.booleans()):
                builder = builder.memory(draw(st.floats(0, 120)))
            if draw(st.booleans()):
                builder = builder.data(draw(st.floats(0, 5000)))
        if draw(st.booleans()):
            builder = builder.deferrable()
        tasks.append(builder.build())
    return tasks


def _check_plan(plan, tasks, snap) -> None:
    by_id = {t.id: t for t in tasks}
    pools = {p.id: p for p in snap.pools}
    used: dict[str, int] = {}
    for placement in plan.placements:
        task, pool = by_id[placement.task], pools[placement.pool]
        used[pool.id] = used.get(pool.id, 0) + task.devices
        site = find_site(pool.site_id)
        assert pool.device.kind is task.device_kind
        assert task.device_models is None or pool.device.id in task.device_models
        pool.device.resolve_precision(task.precision)  # raises if unsupported
        if pool.device.memory_gb is not None and pool.device.kind.value != "cpu":
            assert task.memory_gb <= pool.device.memory_gb
        assert latency(task.origin, site.place).rtt_ms <= snap.tier_rtt_ms[task.latency_tier]
        if task.allowed_provinces is not None:
            assert set(site.provinces) <= task.allowed_provinces
        if task.deadline_s is not None:
            assert placement.end_s <= task.deadline_s + 1e-6
        if task.max_price_fen is not None:
            # the ceiling is checked on the start-now cost; waiting only ever lowers it
            assert placement.breakdown.cost_fen <= task.max_price_fen + 1
        assert placement.start_s >= 0 and placement.end_s >= placement.start_s
    for pool_id, devices in used.items():
        assert devices <= pools[pool_id].free
    placed = [p.task for p in plan.placements]
    unplaced = [u.task for u in plan.unplaced]
    assert len(placed) == len(set(placed))
    assert sorted(placed + unplaced) == sorted(by_id)
    for u in plan.unplaced:
        assert u.reasons and u.sentence


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    snapshots(),
    task_lists(),
    st.sampled_from(sorted(POLICIES)),
    st.sampled_from(["greedy", "flow", "optimal"]),
)
def test_every_plan_respects_capacity_and_constraints(snap, tasks, policy, solver) -> None:
    plan = place(tasks, snap, POLICIES[policy], 0.0, solver=solver)
    _check_plan(plan, tasks, snap)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(snapshots(ample=True), task_lists(ample=True), st.sampled_from(STATIC_POLICIES))
def test_greedy_equals_optimal_without_contention(snap, tasks, policy) -> None:
    # Every pool can hold every task at once, so each task's best pool is globally optimal:
    # greedy is provably optimal here and must match the MILP exactly. (A policy with a load
    # weight is excluded: greedy updates load as the plan fills, the MILP scores it statically.)
    greedy = place(tasks, snap, POLICIES[policy], 0.0, solver="greedy")
    optimal = place(tasks, snap, POLICIES[policy], 0.0, solver="optimal")
    assert len(greedy.placements) == len(optimal.placements)
    # scores carry a tie-break term of at most ~1e-9 per task, scaled per solver's block
    assert greedy.solver.objective == pytest.approx(optimal.solver.objective, rel=1e-6, abs=1e-7)
    lower = optimal.solver.lower_bound
    assert lower is not None and lower <= optimal.solver.objective + 1e-6 * max(1.0, abs(lower))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(snapshots(), task_lists(), st.sampled_from(["cost", "green"]))
def test_optimal_is_never_worse_than_greedy(snap, tasks, policy) -> None:
    greedy = place(tasks, snap, POLICIES[policy], 0.0, solver="greedy")
    optimal = place(tasks, snap, POLICIES[policy], 0.0, solver="optimal")
    assert len(optimal.placements) >= len(greedy.placements)
    if len(optimal.placements) == len(greedy.placements):
        tolerance = 1e-6 * max(1.0, abs(greedy.solver.objective))
        assert optimal.solver.objective <= greedy.solver.objective + tolerance
    assert not math.isnan(optimal.solver.objective)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(snapshots(), task_lists(), st.sampled_from(sorted(POLICIES)))
def test_flow_is_never_worse_than_greedy_and_its_bound_holds(snap, tasks, policy) -> None:
    greedy = place(tasks, snap, POLICIES[policy], 0.0, solver="greedy")
    flow = place(tasks, snap, POLICIES[policy], 0.0, solver="flow")
    _check_plan(flow, tasks, snap)
    assert len(flow.placements) >= len(greedy.placements)
    tolerance = 1e-6 * max(1.0, abs(greedy.solver.objective))
    if len(flow.placements) == len(greedy.placements):
        assert flow.solver.objective <= greedy.solver.objective + tolerance
    lower = flow.solver.lower_bound
    assert lower is not None and lower <= flow.solver.objective + tolerance


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(snapshots(), task_lists(), st.sampled_from(sorted(POLICIES)))
def test_flow_against_the_milp_on_small_instances(snap, tasks, policy) -> None:
    # the flow's relaxation is exact for one-device tasks: it reaches the MILP's optimum, load
    # term included. Tasks of several devices it rounds, and may then land above the optimum
    # (`balanced`'s load term shows it): never below it, never placing more, and each solver's
    # bound stays below both plans
    one_device = [replace(task, devices=1) for task in tasks]
    flow = place(one_device, snap, POLICIES[policy], 0.0, solver="flow")
    optimal = place(one_device, snap, POLICIES[policy], 0.0, solver="optimal")
    assert len(flow.placements) == len(optimal.placements)
    assert flow.solver.objective == pytest.approx(optimal.solver.objective, rel=1e-6, abs=1e-6)
    flow = place(tasks, snap, POLICIES[policy], 0.0, solver="flow")
    optimal = place(tasks, snap, POLICIES[policy], 0.0, solver="optimal")
    assert len(flow.placements) <= len(optimal.placements)
    tolerance = 1e-6 * max(1.0, abs(optimal.solver.objective))
    if len(flow.placements) == len(optimal.placements):
        assert flow.solver.objective >= optimal.solver.objective - tolerance
    for plan in (flow, optimal):  # both bounds are bounds of the other's plan too
        assert plan.solver.lower_bound is not None
        assert plan.solver.lower_bound <= min(flow.solver.objective, optimal.solver.objective) + (
            tolerance
        )
