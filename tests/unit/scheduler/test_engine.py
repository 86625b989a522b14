"""Placement on hand-built snapshots where the right answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from suanli.errors import InvalidValue
from suanli.scheduler import POLICIES, SiteSeries, custom_policy, place, policy_named
from tests.builders import a_pool_at, a_snapshot, a_task

BALANCED = POLICIES["balanced"]


def _only(plan):
    (placement,) = plan.placements
    return placement


def _reasons(plan) -> dict[str, int]:
    (unplaced,) = plan.unplaced
    return dict(unplaced.reasons)


# --- each constraint rules out exactly what it should ------------------------------------------


def test_device_kind() -> None:
    snap = a_snapshot(
        a_pool_at("gpu", "ZJK", "H800", 8, 1000), a_pool_at("cpu", "ZJK", "EPYC 9654", 8, 50)
    )
    plan = place([a_task().cpus(2).precision("fp64").build()], snap, BALANCED, 0.0)
    assert _only(plan).pool == "cpu"
    plan = place([a_task().cpus(16).precision("fp64").build()], snap, BALANCED, 0.0)
    assert _reasons(plan) == {"device kind": 1, "pool size": 1}


def test_device_model() -> None:
    snap = a_snapshot(
        a_pool_at("h800", "ZJK", "H800", 8, 1000), a_pool_at("a800", "ZJK", "A800", 8, 3000)
    )
    task = a_task().gpus(8).models("A800").build()
    assert _only(place([task], snap, POLICIES["cost"], 0.0)).pool == "a800"
    task = a_task().gpus(8).models("NVIDIA").build()
    assert _only(place([task], snap, POLICIES["cost"], 0.0)).pool == "h800"
    task = a_task().gpus(8).models("H20").build()
    assert _reasons(place([task], snap, BALANCED, 0.0)) == {"device model": 2}


def test_precision_with_the_widening_fallback() -> None:
    snap = a_snapshot(
        a_pool_at("t4", "ZJK", "T4", 8, 100), a_pool_at("v100", "ZJK", "V100", 8, 300)
    )
    # T4 has no FP64 figure: only the V100 can take fp64 work
    assert _only(place([a_task().precision("fp64").build()], snap, BALANCED, 0.0)).pool == "v100"
    # bf16 on V100 falls back to FP32; on T4 to FP32 as well: both feasible, T4 cheaper per hour
    placed = _only(place([a_task().precision("bf16").build()], snap, POLICIES["cost"], 0.0))
    assert placed.breakdown.precision_used.value == "fp32"


def test_memory() -> None:
    snap = a_snapshot(
        a_pool_at("h800", "ZJK", "H800", 8, 1000), a_pool_at("h20", "ZJK", "H20", 8, 2000)
    )
    task = a_task().gpus(1).memory(90).build()  # H800 has 80 GB, H20 96 GB
    assert _only(place([task], snap, POLICIES["cost"], 0.0)).pool == "h20"
    assert _reasons(place([a_task().memory(100).build()], snap, BALANCED, 0.0)) == {"memory": 2}


def test_latency_tier_is_rtt_from_the_origin() -> None:
    snap = a_snapshot(
        a_pool_at("yrd", "YRD_DEMO", "H800", 8, 3000), a_pool_at("zjk", "ZJK", "H800", 8, 1000)
    )
    interactive = a_task().from_("上海").tier("interactive").build()  # 5 ms RTT: YRD only
    assert _only(place([interactive], snap, POLICIES["cost"], 0.0)).pool == "yrd"
    far = a_task().from_("乌鲁木齐").tier("standard").build()  # > 20 ms RTT from both
    assert _reasons(place([far], snap, BALANCED, 0.0)) == {"latency tier": 2}
    assert (
        _only(place([a_task().from_("乌鲁木齐").build()], snap, POLICIES["cost"], 0.0)).pool
        == "zjk"
    )


def test_residency() -> None:
    snap = a_snapshot(
        a_pool_at("zjk", "ZJK", "H800", 8, 1000), a_pool_at("nx", "ZHONGWEI", "H800", 8, 3000)
    )
    task = a_task().only_in("宁夏").build()
    assert _only(place([task], snap, POLICIES["cost"], 0.0)).pool == "nx"
    # a cluster spanning 上海/江苏/浙江 needs all three allowed
    yrd = a_snapshot(a_pool_at("yrd", "YRD_DEMO", "H800", 8, 1000))
    assert _reasons(place([a_task().only_in("上海").build()], yrd, BALANCED, 0.0)) == {
        "residency": 1
    }
    ok = a_task().only_in("上海", "江苏", "浙江").build()
    assert _only(place([ok], yrd, BALANCED, 0.0)).pool == "yrd"


def test_deadline_counts_transfer_and_run_time() -> None:
    # 1 x H800 fp16 general: 989.5e12 x 0.5 = 4.9475e14 FLOP/s; 4.9475e16 FLOP -> 100 s.
    # 1,000 GB at 10 Gbit/s -> 800 s of transfer to a remote site, none on the spot.
    snap = a_snapshot(
        a_pool_at("zjk", "ZJK", "H800", 8, 1000), a_pool_at("nx", "ZHONGWEI", "H800", 8, 3000)
    )
    task = a_task().work(4.9475e16).data(1000).from_("ZHONGWEI").deadline(500).build()
    placed = _only(place([task], snap, POLICIES["cost"], 0.0))
    assert placed.pool == "nx"
    assert placed.breakdown.duration_s == pytest.approx(100.0)
    assert placed.breakdown.transfer_s == 0.0
    assert placed.end_s == pytest.approx(100.0)
    late = a_task().work(4.9475e16).data(1000).from_("ZHONGWEI").deadline(50).build()
    assert _reasons(place([late], snap, BALANCED, 0.0)) == {"deadline": 2}
    # starting later (now = 450) leaves no time either
    assert _reasons(place([task], snap, BALANCED, 450.0)) == {"deadline": 2}


@pytest.mark.parametrize("solver", ["greedy", "flow", "optimal"])
def test_a_task_lands_near_its_data_when_moving_it_costs_more(solver: str) -> None:
    # ZJK is 10 fen/device-hour cheaper; 1,000 GB at 1 fen/GB moved costs 1,000 fen, more than
    # 8 x 10 fen x 100 s of compute saves. Data at the origin (北京) moves to either site: ZJK
    # wins; data in the bucket at ZHONGWEI moves only to ZJK: ZHONGWEI wins, with no transfer.
    snap = a_snapshot(
        a_pool_at("zjk", "ZJK", "H800", 8, 1000),
        a_pool_at("nx", "ZHONGWEI", "H800", 8, 1010),
        transfer_fen_per_gb=1.0,
    )
    task = a_task().gpus(8).work(8 * 4.9475e16).data(1000).from_("北京")
    at_origin = _only(place([task.build()], snap, POLICIES["cost"], 0.0, solver=solver))
    assert at_origin.pool == "zjk"
    assert at_origin.breakdown.transfer_s == pytest.approx(800.0)
    near = task.data_at("ZHONGWEI").build()
    placed = _only(place([near], snap, POLICIES["cost"], 0.0, solver=solver))
    assert placed.pool == "nx"
    assert placed.breakdown.transfer_s == 0.0
    assert placed.breakdown.transfer_fen == 0
    # its latency is still measured from where it was submitted (北京), not from its data
    assert placed.breakdown.latency_ms > 0


def test_price_ceiling() -> None:
    # 8 x H800 bf16 training, 3.1664e19 FLOP -> 10,000 s; at 2,000 fen/device-hour:
    # 8 x 2000 x 10000/3600 = 44,444.4 fen
    snap = a_snapshot(a_pool_at("zjk", "ZJK", "H800", 8, 2000))
    task = a_task().gpus(8).precision("bf16").training().work(3.1664e19)
    assert (
        _only(place([task.max_price(44_445).build()], snap, BALANCED, 0.0)).breakdown.cost_fen
        == 44_444
    )
    assert _reasons(place([task.max_price(44_000).build()], snap, BALANCED, 0.0)) == {
        "price ceiling": 1
    }


def test_free_capacity_is_checked_as_the_plan_fills() -> None:
    snap = a_snapshot(a_pool_at("zjk", "ZJK", "H800", 16, 1000, free=12))
    tasks = [a_task("a").gpus(8).build(), a_task("b").gpus(8).build()]
    plan = place(tasks, snap, BALANCED, 0.0, solver="greedy")
    assert [p.task for p in plan.placements] == ["a"]
    assert plan.unplaced[0].reasons == {"free capacity": 1}


def test_the_unplaced_sentence_reads_well() -> None:
    snap = a_snapshot(
        a_pool_at("zjk", "ZJK", "H800", 16, 1000, free=4),
        a_pool_at("nx", "ZHONGWEI", "H800", 16, 900),
    )
    task = a_task().gpus(8).models("H800").from_("上海").tier("interactive").build()
    (unplaced,) = place([task], snap, BALANCED, 0.0).unplaced
    assert unplaced.sentence.startswith("no pool within 5 ms RTT of 上海 has 8 free gpu")
    assert "latency tier ruled out 2" in unplaced.sentence
    assert "nearest candidates: zjk at ZJK (" in unplaced.sentence


# --- each policy picks the pool it must ---------------------------------------------------------


@pytest.fixture
def three_sites():
    # Same device everywhere. YRD_DEMO is next to 上海; ZJK is cheapest; HORINGER has 84.57%
    # contracted green power (its market-based carbon is lowest) but the highest price.
    return a_snapshot(
        a_pool_at("yrd", "YRD_DEMO", "H800", 64, 1800),
        a_pool_at("zjk", "ZJK", "H800", 64, 1000),
        a_pool_at("hor", "HORINGER", "H800", 64, 2500),
    )


@pytest.mark.parametrize(
    ("policy", "pool"),
    [
        ("nearest", "yrd"),
        ("latency", "yrd"),
        ("cost", "zjk"),
        ("green", "hor"),
        # the grid alone: YRD_DEMO 0.55 x PUE 1.25 < HORINGER 0.6849 x 1.2 < ZJK 0.7252 x 1.25
        ("green-location", "yrd"),
    ],
)
def test_each_policy_picks_its_pool(three_sites, policy: str, pool: str) -> None:
    task = a_task().gpus(8).precision("bf16").training().work(1e20).from_("上海").build()
    placed = _only(place([task], three_sites, policy_named(policy), 0.0))
    assert placed.pool == pool
    assert placed.runner_up is not None and placed.runner_up != pool


def test_balanced_prefers_the_less_loaded_of_equal_pools() -> None:
    snap = a_snapshot(
        a_pool_at("busy", "ZJK", "H800", 64, 1000, free=8),
        a_pool_at("idle", "ZJK", "H800", 64, 1000, free=64),
    )
    assert _only(place([a_task().gpus(8).build()], snap, BALANCED, 0.0)).pool == "idle"
    # cost alone cannot tell them apart: the earlier pool wins the tie
    assert _only(place([a_task().gpus(8).build()], snap, POLICIES["cost"], 0.0)).pool == "busy"


def test_custom_weights_equal_the_named_policy() -> None:
    snap = a_snapshot(
        a_pool_at("zjk", "ZJK", "H800", 64, 1000), a_pool_at("hor", "HORINGER", "H800", 64, 900)
    )
    task = a_task().gpus(8).build()
    assert (
        _only(place([task], snap, custom_policy({"cost": 1.0}), 0.0)).pool
        == _only(place([task], snap, POLICIES["cost"], 0.0)).pool
        == "hor"
    )
    with pytest.raises(InvalidValue, match="weights"):
        custom_policy({"speed": 1.0})


def test_breakdown_by_hand() -> None:
    # 8 x H800 bf16 training: 10,000 s; energy 8 x 0.7 x 2.7778 h x 1.25 = 19.444 kWh at ZJK;
    # compute 8 x 2000 x 2.7778 = 44,444.4 fen; energy billed: 19.444 x 0.57 CNY = 1,108.3 fen;
    # carbon 19.444 x 0.7252 = 14.101 kg (no green share at ZJK).
    snap = a_snapshot(a_pool_at("zjk", "ZJK", "H800", 8, 2000, energy_billed=True))
    task = a_task().gpus(8).precision("bf16").training().work(3.1664e19).build()
    b = _only(place([task], snap, BALANCED, 0.0)).breakdown
    assert b.duration_s == pytest.approx(10_000)
    assert b.energy_kwh == pytest.approx(19.444444, rel=1e-6)
    assert (b.compute_fen, b.energy_fen, b.cost_fen) == (44_444, 1_108, 45_553)
    assert b.carbon_kg == pytest.approx(19.444444 * 0.7252, rel=1e-6)
    assert b.load_after == 1.0


# --- temporal shifting ---------------------------------------------------------------------------


def _cheap_night_snapshot(max_delay_h: int = 24):
    # energy billed separately; hours 3-5 cost half, the rest double
    series = np.array([2.0] * 3 + [0.5] * 3 + [2.0] * 18)
    pool = a_pool_at("zjk", "ZJK", "H800", 8, 0, energy_billed=True)
    site_series = SiteSeries(series, np.full(24, 0.7252))
    return a_snapshot(pool, series={"ZJK": site_series}, max_delay_h=max_delay_h)


def test_a_deferrable_task_waits_for_the_cheap_hours() -> None:
    # 1 x H800 fp16 general at 4.9475e14 FLOP/s: 1.781e18 FLOP = 3,600 s = one hour
    task = a_task().work(1.7811e18).deferrable().build()
    placed = _only(place([task], _cheap_night_snapshot(), POLICIES["cost"], 0.0))
    assert placed.waited_s == 3 * 3600
    assert placed.start_s == 3 * 3600
    # energy 0.7 x 1 h x 1.25 = 0.875 kWh x 0.57 CNY = 49.9 fen flat: x2 now, x0.5 at 03:00
    assert placed.breakdown.energy_fen == 25
    assert placed.saved_fen == 100 - 25


def test_waiting_never_breaks_the_deadline() -> None:
    task = a_task().work(1.7811e18).deferrable().deadline(3 * 3600).build()
    placed = _only(place([task], _cheap_night_snapshot(), POLICIES["cost"], 0.0))
    assert placed.waited_s == 0
    task = a_task().work(1.7811e18).build()  # not deferrable
    assert _only(place([task], _cheap_night_snapshot(), POLICIES["cost"], 0.0)).waited_s == 0


# --- inputs ---------------------------------------------------------------------------------------


def test_duplicate_task_ids_and_unknown_solver_are_refused() -> None:
    snap = a_snapshot(a_pool_at("zjk", "ZJK", "H800", 8, 1000))
    with pytest.raises(InvalidValue, match=r"tasks\.id"):
        place([a_task("x").build(), a_task("x").build()], snap, BALANCED, 0.0)
    with pytest.raises(InvalidValue, match="solver"):
        place([a_task().build()], snap, BALANCED, 0.0, solver="magic")
    with pytest.raises(InvalidValue, match="policy"):
        policy_named("fastest")


def test_balanced_spreads_load_as_the_plan_fills() -> None:
    snap = a_snapshot(
        a_pool_at("a", "ZJK", "H800", 16, 1000), a_pool_at("b", "ZJK", "H800", 16, 1000)
    )
    tasks = [a_task(f"t{i}").gpus(1).build() for i in range(12)]
    plan = place(tasks, snap, BALANCED, 0.0, solver="greedy")
    pools = [p.pool for p in plan.placements]
    assert pools.count("a") == pools.count("b") == 6
    # load_after is the occupancy each placement leaves, in decision order
    loads = sorted(p.breakdown.load_after for p in plan.placements if p.pool == "a")
    assert loads == pytest.approx([n / 16 for n in range(1, 7)])


def test_greedy_gives_the_best_pool_to_the_longest_task() -> None:
    # one cheap device and one dear one: the longer task must get the cheap one
    snap = a_snapshot(
        a_pool_at("cheap", "ZJK", "H800", 1, 1000), a_pool_at("dear", "ZJK", "H800", 1, 3000)
    )
    tasks = [a_task("short").work(1e18).build(), a_task("long").work(1e20).build()]
    plan = place(tasks, snap, POLICIES["cost"], 0.0, solver="greedy")
    assert {p.task: p.pool for p in plan.placements} == {"long": "cheap", "short": "dear"}
    optimal = place(tasks, snap, POLICIES["cost"], 0.0, solver="optimal")
    assert optimal.solver.objective == pytest.approx(plan.solver.objective)


def test_an_empty_snapshot_explains_itself() -> None:
    from suanli.scheduler import Snapshot

    plan = place([a_task().build()], Snapshot((), {}), BALANCED, 0.0)
    assert plan.placements == ()
    assert plan.unplaced[0].sentence == "the snapshot has no pools"
    assert plan.unplaced[0].reasons == {}
    assert place([], Snapshot((), {}), BALANCED, 0.0).unplaced == ()
