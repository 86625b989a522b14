"""Carbon on both bases (issue 17): `green` minimises market-based carbon (a site's declared
green power counted as zero-carbon), `green-location` location-based carbon (the grid's
intensity alone), with every solver, in deferral and in weighted policies."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from suanli.catalog import find_site
from suanli.errors import InvalidValue
from suanli.scheduler import (
    POLICIES,
    Objective,
    SiteSeries,
    Snapshot,
    custom_policy,
    place,
    policy_named,
    pricing,
)
from suanli.scheduler import flow as flow_module
from suanli.scheduler.generate import generate_problem
from suanli.scheduler.problem import parse_problem, plan_document
from tests.builders import a_pool_at, a_snapshot, a_task

GREEN, GREEN_LOCATION = POLICIES["green"], POLICIES["green-location"]
HOUR = 3600.0
# 1 x H800 fp16 general at 4.9475e14 FLOP/s: 1.7811e18 FLOP run one hour
ONE_HOUR_FLOP = 1.7811e18


def test_the_policy_and_its_objective() -> None:
    assert policy_named("green-location") is GREEN_LOCATION
    assert policy_named(" Green-Location ") is GREEN_LOCATION
    assert dict(GREEN_LOCATION.weights) == {Objective.CARBON_LOCATION: 1.0}
    assert GREEN_LOCATION.tie_break is Objective.COST
    assert Objective("carbon_location") is Objective.CARBON_LOCATION
    with pytest.raises(InvalidValue, match="green-location"):
        policy_named("greenest")  # the refusal lists every accepted name


# --- where the declared green share and the grid disagree ---------------------------------------


def hor_and_tianfu(count: int = 64) -> Snapshot:
    """Same device and price at both. HORINGER: grid 0.6849 kg/kWh with 84.57% declared green
    power, PUE 1.2 (market-based 0.6849 x 0.1543 x 1.2 = 0.1268 kg per device-kWh of IT load;
    location-based 0.8219). TIANFU: grid 0.1404, no declared share, PUE 1.25 (0.1755 on
    both bases)."""
    return a_snapshot(
        a_pool_at("hor", "HORINGER", "H800", count, 1000),
        a_pool_at("tianfu", "TIANFU", "H800", count, 1000),
    )


def test_green_takes_the_green_share_and_green_location_the_clean_grid() -> None:
    task = a_task().gpus(8).work(1e20).build()
    green = place([task], hor_and_tianfu(), GREEN, 0.0)
    location = place([task], hor_and_tianfu(), GREEN_LOCATION, 0.0)
    (g,), (loc,) = green.placements, location.placements
    assert (g.pool, loc.pool) == ("hor", "tianfu")
    assert (g.runner_up, loc.runner_up) == ("tianfu", "hor")
    # energy = 8 x 0.7 kW x hours x PUE; location-based = energy x grid; market x (1 - share)
    hours = g.breakdown.duration_s / HOUR
    assert g.breakdown.energy_kwh == pytest.approx(8 * 0.7 * hours * 1.2)
    assert g.breakdown.carbon_location_kg == pytest.approx(g.breakdown.energy_kwh * 0.6849)
    assert g.breakdown.carbon_kg == pytest.approx(g.breakdown.carbon_location_kg * (1 - 0.8457))
    assert loc.breakdown.carbon_kg == loc.breakdown.carbon_location_kg
    assert loc.breakdown.carbon_location_kg == pytest.approx(loc.breakdown.energy_kwh * 0.1404)
    # a single objective scores its raw value, in kg
    assert g.score == pytest.approx(g.breakdown.carbon_kg, rel=1e-6)
    assert loc.score == pytest.approx(loc.breakdown.carbon_location_kg, rel=1e-6)


def _batch():
    # 8-GPU tasks of different sizes: with 16 GPUs a site, the largest two get the better one
    return [a_task(f"t{i}").gpus(8).work(work).build() for i, work in enumerate([3e19, 1e20, 6e19])]


@pytest.mark.parametrize("solver", ["greedy", "flow", "optimal"])
def test_each_policy_has_the_least_of_its_own_carbon(solver: str) -> None:
    snapshot = hor_and_tianfu(count=16)
    green = place(_batch(), snapshot, GREEN, 0.0, solver=solver)
    location = place(_batch(), snapshot, GREEN_LOCATION, 0.0, solver=solver)
    assert len(green.placements) == len(location.placements) == 3
    assert {p.task: p.pool for p in green.placements} == {"t0": "tianfu", "t1": "hor", "t2": "hor"}
    assert {p.task: p.pool for p in location.placements} == {
        "t0": "hor",
        "t1": "tianfu",
        "t2": "tianfu",
    }
    assert green.carbon_kg < location.carbon_kg
    assert location.carbon_location_kg < green.carbon_location_kg
    # each plan's objective is the total of its own carbon
    assert green.solver.objective == pytest.approx(green.carbon_kg, rel=1e-6)
    assert location.solver.objective == pytest.approx(location.carbon_location_kg, rel=1e-6)
    totals = plan_document(location)["totals"]
    assert totals["carbon_location_kg"] == pytest.approx(location.carbon_location_kg)
    assert totals["carbon_kg"] == pytest.approx(location.carbon_kg)


@pytest.mark.parametrize(
    "policy",
    [GREEN_LOCATION, custom_policy({"carbon_location": 0.5, "cost": 0.5})],
    ids=["green-location", "carbon_location+cost"],
)
def test_flow_and_optimal_agree_with_greedy_on_a_small_case(policy) -> None:
    # three sites, prices against carbon: HORINGER dear, ZJK cheap and dirty, TIANFU between
    snapshot = a_snapshot(
        a_pool_at("hor", "HORINGER", "H800", 16, 1500),
        a_pool_at("zjk", "ZJK", "H800", 16, 600),
        a_pool_at("tianfu", "TIANFU", "H800", 8, 1000),
    )
    tasks = [a_task(f"t{i}").gpus(8).work(2e19 * (i + 1)).build() for i in range(4)]
    plans = {
        s: place(tasks, snapshot, policy, 0.0, solver=s) for s in ("greedy", "flow", "optimal")
    }
    objectives = {s: plan.solver.objective for s, plan in plans.items()}
    assert all(len(plan.placements) == 4 for plan in plans.values())
    assert objectives["flow"] == pytest.approx(objectives["optimal"], rel=1e-6, abs=1e-9)
    assert objectives["greedy"] == pytest.approx(objectives["optimal"], rel=1e-6, abs=1e-9)
    # the largest task gets the lowest-intensity grid under both
    chosen = {p.task: p.pool for p in plans["optimal"].placements}
    assert chosen["t3"] == "tianfu"


def test_weights_normalise_location_based_carbon_like_market_based() -> None:
    """A weighted policy normalises carbon_location over the class's range, as carbon: the
    best pool scores 0 on it and the worst 1, so half the weight moves the choice by half."""
    snapshot = hor_and_tianfu()
    task = a_task().gpus(8).work(1e20).build()
    only = place([task], snapshot, custom_policy({"carbon_location": 1.0, "load": 1e-9}), 0.0)
    (p,) = only.placements
    assert p.pool == "tianfu"
    assert p.score == pytest.approx(0.0, abs=1e-6)  # the class's best pool: 0 after normalising
    market = place([task], snapshot, custom_policy({"carbon": 1.0, "load": 1e-9}), 0.0)
    assert market.placements[0].pool == "hor"


def test_the_priced_flow_handles_location_based_carbon(monkeypatch) -> None:
    """Above FLOW_MAX_PAIRS the flow estimates scores from the classes' per-unit carbon (and its
    least over the series): its plan matches the exact flow's, with location-based carbon too."""
    problem = parse_problem(generate_problem(300, 30, 2026))
    for policy in (GREEN_LOCATION, custom_policy({"carbon_location": 0.5, "cost": 0.5})):
        exact = place(problem.tasks, problem.snapshot, policy, 0.0, solver="flow")
        with monkeypatch.context() as patched:
            patched.setattr(flow_module, "FLOW_MAX_PAIRS", 1000)
            patched.setattr(pricing, "CANDIDATES", 3)
            priced = place(problem.tasks, problem.snapshot, policy, 0.0, solver="flow")
        assert "priced in" in priced.solver.status
        assert len(priced.placements) == len(exact.placements)
        assert priced.solver.objective <= exact.solver.objective * 1.005 + 1e-9
        bound = priced.solver.lower_bound
        assert bound is not None
        assert bound <= exact.solver.objective + 1e-6 * abs(exact.solver.objective)


# --- deferral ------------------------------------------------------------------------------------


def _fully_green_horinger(intensity: np.ndarray) -> Snapshot:
    """One pool at a HORINGER declaring all its power green: market-based carbon is 0 at
    every hour, location-based follows the grid's hourly `intensity`. Compute price flat."""
    site = replace(find_site("HORINGER"), green_share=1.0)
    pool = a_pool_at("hor", "HORINGER", "H800", 8, 1000)
    series = SiteSeries(np.ones(len(intensity)), intensity)
    return Snapshot((pool,), {site.id: site}, series={site.id: series}, max_delay_h=24)


INTENSITY = np.array([0.70] * 7 + [0.30] + [0.70] * 7 + [0.20] + [0.70] * 8)  # least at 15:00


def test_a_deferrable_task_waits_for_the_hour_of_least_grid_intensity() -> None:
    task = a_task().work(ONE_HOUR_FLOP).deferrable().build()
    (placed,) = place([task], _fully_green_horinger(INTENSITY), GREEN_LOCATION, 0.0).placements
    assert placed.waited_s == 15 * HOUR
    assert placed.start_s == 15 * HOUR
    energy = placed.breakdown.energy_kwh  # 0.7 kW x 1 h x PUE 1.2 = 0.84 kWh
    assert energy == pytest.approx(0.84, rel=1e-3)
    assert placed.breakdown.carbon_location_kg == pytest.approx(energy * 0.20)
    assert placed.saved_carbon_location_kg == pytest.approx(energy * (0.70 - 0.20))
    assert placed.saved_carbon_kg == 0.0  # market-based: zero at every hour
    assert placed.saved_fen == 0
    # within its deadline: the least hour it can still finish by is 07:00
    late = a_task().work(ONE_HOUR_FLOP).deferrable().deadline(12 * HOUR).build()
    (placed,) = place([late], _fully_green_horinger(INTENSITY), GREEN_LOCATION, 0.0).placements
    assert placed.waited_s == 7 * HOUR
    assert placed.saved_carbon_location_kg == pytest.approx(energy * (0.70 - 0.30), rel=1e-3)


def test_market_based_green_has_nothing_to_wait_for_there() -> None:
    task = a_task().work(ONE_HOUR_FLOP).deferrable().build()
    (placed,) = place([task], _fully_green_horinger(INTENSITY), GREEN, 0.0).placements
    assert placed.waited_s == 0
    assert placed.breakdown.carbon_kg == 0.0
    assert placed.breakdown.carbon_location_kg == pytest.approx(0.84 * 0.70, rel=1e-3)


def test_a_weighted_policy_defers_by_its_location_based_weight() -> None:
    task = a_task().work(ONE_HOUR_FLOP).deferrable().build()
    policy = custom_policy({"carbon_location": 0.5, "cost": 0.5})  # cost flat: carbon decides
    (placed,) = place([task], _fully_green_horinger(INTENSITY), policy, 0.0).placements
    assert placed.waited_s == 15 * HOUR


# --- custom weights ------------------------------------------------------------------------------


def test_a_custom_policy_with_the_location_based_weight_parses() -> None:
    policy = custom_policy({"carbon_location": 0.5, "cost": 0.5})
    assert dict(policy.weights) == {Objective.CARBON_LOCATION: 0.5, Objective.COST: 0.5}
    assert policy.single is None


def test_a_bad_weight_name_is_refused_naming_the_accepted_ones() -> None:
    with pytest.raises(InvalidValue) as refused:
        custom_policy({"carbon_locale": 0.5, "cost": 0.5})
    assert refused.value.field == "weights" and refused.value.value == "carbon_locale"
    for name in ("cost", "carbon", "carbon_location", "latency", "distance", "load"):
        assert name in refused.value.expected
