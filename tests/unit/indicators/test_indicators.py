"""Indicators on a hand-built fleet where every figure is computed by hand."""

from __future__ import annotations

import pytest

from suanli.catalog import find_site
from suanli.catalog.fleet import demo_fleet
from suanli.indicators import Status, national, per_hub, published_progress
from tests.builders import a_pool

ZJK, HORINGER = find_site("ZJK"), find_site("HORINGER")
POOLS = (
    a_pool("h800", "ZJK", "H800", 10),  # FP32 67, FP16 989.5 TFLOPS, 700 W
    a_pool("epyc", "HORINGER", "EPYC 9654", 100),  # FP32 7372.8 GFLOPS, 360 W
    a_pool("910", "HORINGER", "Ascend 910", 20),  # FP16 256, no FP32 figure, 310 W
)


def test_national_by_hand() -> None:
    ind = national((ZJK, HORINGER), POOLS)
    assert ind.devices == 130
    # FP32: 10 x 67e12 + 100 x 7372.8e9 = 1.40728e15; Ascend 910 left out (20 devices)
    assert ind.capacity_fp32_eflops == pytest.approx(1.40728e-3)
    assert ind.fp32_excluded_devices == 20
    # FP16: 10 x 989.5e12 + 20 x 256e12 = 1.5015e16; the CPUs left out (100 devices)
    assert ind.capacity_fp16_eflops == pytest.approx(1.5015e-2)
    assert ind.fp16_excluded_devices == 100
    # headline: accelerators at FP16 + CPUs at FP32 = 1.5015e16 + 7.3728e14
    assert ind.headline_eflops == pytest.approx(1.575228e-2)
    assert ind.intelligent_share == pytest.approx(1.5015e16 / 1.575228e16)
    # IT power: ZJK 7,000 W; HORINGER 36,000 + 6,200 = 42,200 W
    assert ind.weighted_pue == pytest.approx((1.25 * 7000 + 1.2 * 42200) / 49200)
    assert ind.green_share == pytest.approx(0.8457 * 42200 / 49200)
    assert ind.rack_utilization is None and ind.rack_sites_known == 0


def test_national_targets() -> None:
    status = {c.target.metric: c.status for c in national((ZJK, HORINGER), POOLS).checks}
    assert status["capacity_fp32_eflops"] is Status.NOT_MET
    assert status["intelligent_share"] is Status.MET
    assert status["weighted_pue"] is Status.MET
    assert status["rack_utilization"] is Status.UNKNOWN
    assert status["green_share"] is Status.NOT_MET  # 72.5% < 80%


def test_hub_totals_add_up_to_the_nation() -> None:
    sites, pools = demo_fleet()
    nation = national(sites, pools)
    hubs = per_hub(sites, pools)
    assert len(hubs) == 8
    assert sum(h.capacity_fp32_eflops for h in hubs) == pytest.approx(nation.capacity_fp32_eflops)
    assert sum(h.capacity_fp16_eflops for h in hubs) == pytest.approx(nation.capacity_fp16_eflops)
    assert sum(h.devices for h in hubs) == nation.devices


def test_hub_pue_target_is_the_hubs_own() -> None:
    (nmg,) = [h for h in per_hub((HORINGER,), POOLS) if h.scope == "NMG"]
    pue = next(c for c in nmg.checks if c.target.metric == "weighted_pue")
    assert pue.target.value == 1.2
    assert pue.status is Status.MET
    green = next(c for c in nmg.checks if c.target.metric == "green_share")
    assert green.actual == pytest.approx(0.8457)
    assert green.status is Status.MET
    assert not green.target.verified


def test_market_ceps_beats_location_ceps_where_green_power_is_contracted() -> None:
    ind = national((HORINGER,), POOLS)
    assert ind.ceps is not None and ind.ceps_location is not None
    assert ind.ceps / ind.ceps_location == pytest.approx(1 / (1 - 0.8457))


def test_published_progress_is_the_latest_reported_figure() -> None:
    figures = {f.metric: f for f in published_progress()}
    assert figures["total_compute_scale"].value == 230
    assert figures["total_compute_scale"].status is Status.NOT_MET
    assert figures["intelligent_compute_scale"].value == 1590
    assert figures["all_10_clusters_rack_utilization"].value == pytest.approx(0.6272)
