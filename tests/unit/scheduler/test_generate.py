"""The problem generator: deterministic, parseable, realistic in its documented proportions."""

from __future__ import annotations

import json
import math
import re
from collections import Counter

import pytest

from suanli.catalog import find_place, hubs
from suanli.datafiles import read_rows
from suanli.errors import InvalidValue
from suanli.metering import DeviceKind, find_device, match_devices
from suanli.scheduler import POLICIES, place
from suanli.scheduler.generate import (
    DEMAND_HUB_SHARE,
    HUB_CITIES,
    OTHER_CAPITALS,
    capital_fen_per_device_hour,
    device_offers,
    energy_fen_per_device_hour,
    generate_problem,
    reference_device,
    task_shapes,
)
from suanli.scheduler.problem import parse_problem


def _demand_hub_provinces() -> set[str]:
    """English province names of the four demand hubs (京津冀, 长三角, 粤港澳, 成渝)."""
    names: set[str] = set()
    for hub in hubs():
        if hub.scheme_group == "demand_hub":
            names |= {re.sub(r"\s*\(.*\)", "", p).strip() for p in hub.provinces}
    return names


def test_the_same_seed_gives_the_same_document() -> None:
    first = generate_problem(200, 20, seed=7)
    again = generate_problem(200, 20, seed=7)
    assert json.dumps(first, sort_keys=True) == json.dumps(again, sort_keys=True)


def test_different_seeds_give_different_documents() -> None:
    assert generate_problem(200, 20, seed=1) != generate_problem(200, 20, seed=2)


@pytest.mark.parametrize(
    ("n_tasks", "n_pools", "seed"),
    [(0, 1, 0), (1, 1, 1), (50, 3, 2), (300, 40, 3), (1_000, 100, 4), (2_000, 10, 5)],
)
def test_every_generated_document_parses(n_tasks: int, n_pools: int, seed: int) -> None:
    document = generate_problem(n_tasks, n_pools, seed)
    problem = parse_problem(json.loads(json.dumps(document, ensure_ascii=False)))
    assert len(problem.tasks) == n_tasks
    assert len(problem.snapshot.pools) == n_pools
    assert problem.now_s == 0.0


def test_every_named_device_resolves_to_its_kind() -> None:
    document = generate_problem(3_000, 200, seed=11)
    for pool in document["pools"]:
        find_device(pool["device"])
    kinds = {t["device_kind"] for t in document["tasks"]}
    assert kinds == {"gpu", "npu", "cpu"}
    constrained = [t for t in document["tasks"] if "device_models" in t]
    assert constrained
    for task in constrained:
        allowed = [d for name in task["device_models"] for d in match_devices(name)]
        assert any(d.kind.value == task["device_kind"] for d in allowed)
    for kind, offers in device_offers().items():
        for offer in offers:
            assert find_device(offer.device).kind is kind


def test_origins_are_concentrated_in_the_demand_hubs() -> None:
    # 2,000 tasks at p = 0.8: the standard deviation of the share is 0.0089; allow 4.5 of them
    provinces = _demand_hub_provinces()
    problem = parse_problem(generate_problem(2_000, 50, seed=3))
    share = sum(t.origin.province_en in provinces for t in problem.tasks) / len(problem.tasks)
    assert abs(share - DEMAND_HUB_SHARE) < 0.04
    assert all(find_place(city).province_en in provinces for city in HUB_CITIES)
    assert not any(find_place(city).province_en in provinces for city in OTHER_CAPITALS)


def test_latency_tiers_and_kinds_follow_the_documented_shares() -> None:
    tasks = generate_problem(5_000, 100, seed=5)["tasks"]
    tiers = Counter(t["latency_tier"] for t in tasks)
    assert abs(tiers["interactive"] / 5_000 - 0.10) < 0.02
    assert abs(tiers["batch"] / 5_000 - 0.60) < 0.03
    batch = [t for t in tasks if t["latency_tier"] == "batch"]
    assert abs(sum(t.get("deferrable", False) for t in batch) / len(batch) - 0.5) < 0.05
    assert all(not t.get("deferrable", False) for t in tasks if t["latency_tier"] != "batch")
    assert abs(sum("deadline_s" in t for t in tasks) / 5_000 - 0.30) < 0.03


def test_work_is_the_drawn_runtime_on_the_reference_device() -> None:
    # work / (devices x reference peak x efficiency) is a runtime inside the Philly p1..p99
    from suanli.metering import EFFICIENCY, parse_precision, parse_workload

    low = task_shapes().runtime_percentiles[0][1]
    high = task_shapes().runtime_percentiles[-1][1]
    for task in generate_problem(500, 20, seed=9)["tasks"]:
        kind = DeviceKind(task["device_kind"])
        precision = parse_precision(task["precision"])
        reference = reference_device(kind, precision)
        peak = reference.peak_flops[reference.resolve_precision(precision)]
        efficiency = EFFICIENCY[parse_workload(task["workload"])].value
        runtime = task["work_flop"] / (task["devices"] * peak * efficiency)
        assert low * (1 - 1e-9) <= runtime <= high * (1 + 1e-9)


def test_pool_prices_follow_the_capital_plus_energy_rule() -> None:
    from suanli.catalog import clusters

    sites = {s.id: s for s in clusters()}
    for pool in generate_problem(10, 200, seed=13)["pools"]:
        if pool["site"] not in sites:
            continue  # provider sites: same rule, PUE 1.42
        device = find_device(pool["device"])
        site = sites[pool["site"]]
        base = capital_fen_per_device_hour(device)
        if not pool.get("energy_billed_separately", False):
            base += energy_fen_per_device_hour(device, site.pue, site.price_cny_per_kwh)
        assert 0.9 * base - 0.5 <= pool["price_fen_per_device_hour"] <= 1.3 * base + 0.5
    # an A100 at ZJK: 312 TFLOPS x 2.5 fen + 0.4 kW x 1.25 x 0.57 CNY x 100 = 780 + 28.5 fen
    assert capital_fen_per_device_hour(find_device("A100 SXM4")) == pytest.approx(780.0)
    zjk = sites["ZJK"]
    energy = energy_fen_per_device_hour(find_device("A100 SXM4"), zjk.pue, zjk.price_cny_per_kwh)
    assert energy == pytest.approx(0.4 * zjk.pue * zjk.price_cny_per_kwh * 100)


def test_the_derived_tables_have_a_source_on_every_row() -> None:
    for name in ("device_mix.csv", "task_shapes.csv"):
        rows = read_rows("suanli.scheduler", name)
        assert rows
        assert all(row["source"] for row in rows), name
    for row in read_rows("suanli.scheduler", "device_mix.csv"):
        find_device(row["device"])
        assert int(row["devices_in_trace"]) >= int(row["nodes_in_trace"]) >= 1
    shapes = task_shapes()
    assert dict(shapes.devices) == {1: 6989, 2: 16, 4: 15, 8: 44}
    percents = [p for p, _ in shapes.runtime_percentiles]
    seconds = [s for _, s in shapes.runtime_percentiles]
    assert percents[0] == 1.0 and percents[-1] == 99.0
    assert seconds == sorted(seconds)


@pytest.mark.parametrize("policy", ["balanced", "cost"])
@pytest.mark.parametrize("solver", ["greedy", "auto"])
def test_place_fits_most_tasks_and_never_exceeds_free(policy: str, solver: str) -> None:
    problem = parse_problem(generate_problem(300, 40, seed=21))
    plan = place(problem.tasks, problem.snapshot, POLICIES[policy], problem.now_s, solver=solver)
    assert len(plan.placements) + len(plan.unplaced) == 300
    assert len(plan.placements) >= 0.8 * 300
    assert plan.unplaced  # not trivially feasible
    devices = {t.id: t.devices for t in problem.tasks}
    used: Counter[str] = Counter()
    for placement in plan.placements:
        used[placement.pool] += devices[placement.task]
    for pool in problem.snapshot.pools:
        assert used[pool.id] <= pool.free


def test_supply_scales_with_demand() -> None:
    for n_tasks, n_pools in ((300, 40), (10_000, 100)):
        document = generate_problem(n_tasks, n_pools, seed=1)
        free = sum(p["free"] for p in document["pools"])
        asked = sum(t["devices"] for t in document["tasks"])
        assert 1.0 < free / asked < 1.7
        assert all(0 <= p["free"] <= p["count"] for p in document["pools"])


@pytest.mark.parametrize(
    ("n_tasks", "n_pools", "seed"), [(-1, 1, 0), (1, 0, 0), (1, 1, -1), (True, 1, 0)]
)
def test_bad_sizes_are_refused(n_tasks: int, n_pools: int, seed: int) -> None:
    with pytest.raises(InvalidValue):
        generate_problem(n_tasks, n_pools, seed)


def test_mean_task_devices_matches_the_trace() -> None:
    shapes = task_shapes()
    assert shapes.mean_devices == pytest.approx((6989 + 32 + 60 + 352) / 7064)
    assert math.isclose(sum(n for _, n in shapes.devices), 7064)
