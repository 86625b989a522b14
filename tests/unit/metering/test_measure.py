"""Metering formulas with hand-computed numbers, one case per precision and a CPU case."""

from __future__ import annotations

import math

import pytest

from suanli.errors import InvalidValue, UnsupportedPrecision
from suanli.metering import (
    EFFICIENCY,
    Precision,
    WorkloadClass,
    capacity,
    carbon_kg,
    carbon_location_kg,
    ceps,
    electricity_cost_fen,
    energy_kwh,
    find_device,
    meter,
)
from tests.builders import a_site


def test_h800_training_run_by_hand() -> None:
    # 8 x H800 SXM5, BF16 dense 989.5 TFLOPS, training efficiency 0.40:
    # capacity = 8 * 989.5e12 * 0.4 = 3.1664e15 FLOP/s; 3.1664e19 FLOP -> 10,000 s.
    # energy = 8 * 0.7 kW * 1.0 * (10000/3600) h * 1.25 = 19.4444 kWh
    # carbon = 19.4444 * 0.5 * (1 - 0.2) = 7.7778 kg; location = 9.7222 kg
    site = a_site(pue=1.25, grid_kgco2_per_kwh=0.5, green_share=0.2)
    run = meter(find_device("H800"), 8, Precision.BF16, 3.1664e19, WorkloadClass.TRAINING, site)
    assert run.capacity.flops == pytest.approx(3.1664e15)
    assert run.duration_s == pytest.approx(10_000.0)
    assert run.energy_kwh == pytest.approx(19.444444, rel=1e-6)
    assert run.carbon_kg == pytest.approx(7.777778, rel=1e-6)
    assert run.carbon_location_kg == pytest.approx(9.722222, rel=1e-6)
    assert run.ceps == pytest.approx(3.1664e19 / 7.777778, rel=1e-6)
    assert run.ceps_location == pytest.approx(3.1664e19 / 9.722222, rel=1e-6)
    assert not run.capacity.fallback


# (device, precision, dense peak in FLOP/s from the data file, by hand)
PER_PRECISION = [
    ("A100 SXM4", Precision.FP64, 9.7e12),  # vector FP64, not the 19.5 tensor figure
    ("V100 SXM2", Precision.FP32, 15.7e12),
    ("A100", Precision.TF32, 156e12),
    ("H20", Precision.FP16, 148e12),
    ("MLU370-X8", Precision.BF16, 96e12),
    ("L40S", Precision.FP8, 733e12),
    ("Ascend 910", Precision.INT8, 512e12),
]


@pytest.mark.parametrize(("device", "precision", "peak"), PER_PRECISION)
def test_one_hour_of_work_at_each_precision(device: str, precision: Precision, peak: float) -> None:
    # 4 devices, inference efficiency 0.30: work sized to take exactly one hour.
    work = 4 * peak * 0.30 * 3600
    profile = find_device(device)
    site = a_site(pue=1.5, grid_kgco2_per_kwh=0.6, green_share=0.0)
    run = meter(profile, 4, precision, work, WorkloadClass.INFERENCE, site)
    assert run.capacity.precision is precision
    assert run.capacity.peak_flops_per_device == pytest.approx(peak)
    assert run.duration_s == pytest.approx(3600.0)
    assert profile.tdp_w is not None
    # one hour at full TDP: 4 * TDP kW * 1 h * 1.5
    assert run.energy_kwh == pytest.approx(4 * profile.tdp_w / 1000 * 1.5)
    assert run.carbon_kg == pytest.approx(run.energy_kwh * 0.6)
    assert run.carbon_kg == run.carbon_location_kg


def test_cpu_hpc_run_by_hand() -> None:
    # 2 sockets of EPYC 9654: FP64 3686.4 GFLOPS each (derived), HPC efficiency 0.65.
    # capacity = 2 * 3686.4e9 * 0.65 = 4.79232e12 FLOP/s; one hour = 1.7252352e16 FLOP.
    # energy = 2 * 0.36 kW * 0.5 utilisation * 1 h * 1.2 = 0.432 kWh
    site = a_site(pue=1.2, grid_kgco2_per_kwh=0.7252, green_share=0.0)
    run = meter(
        find_device("EPYC 9654"),
        2,
        Precision.FP64,
        1.7252352e16,
        WorkloadClass.HPC,
        site,
        utilisation=0.5,
    )
    assert run.capacity.flops == pytest.approx(4.79232e12)
    assert run.duration_s == pytest.approx(3600.0)
    assert run.energy_kwh == pytest.approx(0.432)
    assert run.carbon_kg == pytest.approx(0.432 * 0.7252)


def test_efficiency_override_replaces_the_class_default() -> None:
    cap = capacity(find_device("H100"), Precision.FP16, WorkloadClass.TRAINING, 2, efficiency=0.5)
    assert cap.flops == pytest.approx(2 * 989.5e12 * 0.5)
    assert cap.efficiency_basis == "given"


def test_every_workload_class_has_a_labelled_estimate() -> None:
    assert set(EFFICIENCY) == set(WorkloadClass)
    for eff in EFFICIENCY.values():
        assert 0 < eff.value <= 1
        assert eff.basis.startswith("estimate")


FALLBACKS = [
    ("V100", Precision.BF16, Precision.FP32, 15.7e12),  # bf16 needs fp32's range
    ("A100", Precision.FP8, Precision.FP16, 312e12),  # fp8 values are exact in fp16
    ("T4", Precision.TF32, Precision.FP32, 8.1e12),
    ("EPYC 9654", Precision.FP16, Precision.FP32, 7372.8e9),
    ("H800", Precision.FP64, Precision.FP64, 1e12),  # has its own (cut) FP64
]


@pytest.mark.parametrize(("device", "asked", "used", "peak"), FALLBACKS)
def test_widening_fallback(device: str, asked: Precision, used: Precision, peak: float) -> None:
    cap = capacity(find_device(device), asked, WorkloadClass.GENERAL)
    assert cap.precision is used
    assert cap.peak_flops_per_device == pytest.approx(peak)
    assert cap.fallback is (asked is not used)


@pytest.mark.parametrize(
    ("device", "precision"),
    [
        ("T4", Precision.FP64),  # FP64 not published; nothing wider
        ("Ascend 910", Precision.FP32),  # no FP32 nor FP64 figure
        ("Ascend 910", Precision.BF16),  # bf16 -> fp32 -> fp64: none published
        ("Hygon DCU Z100", Precision.FP16),  # no figure at all
    ],
)
def test_missing_precision_is_refused_not_guessed(device: str, precision: Precision) -> None:
    with pytest.raises(UnsupportedPrecision) as caught:
        capacity(find_device(device), precision, WorkloadClass.GENERAL)
    assert precision.value in caught.value.message_en
    assert caught.value.device == find_device(device).name


def test_no_fallback_refuses_and_names_what_exists() -> None:
    with pytest.raises(UnsupportedPrecision) as caught:
        capacity(find_device("V100"), Precision.BF16, WorkloadClass.GENERAL, allow_fallback=False)
    assert caught.value.available == ["fp64", "fp32", "fp16"]
    assert "fallback disabled" in caught.value.message_en


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"work_flop": -1.0}, "work_flop"),
        ({"work_flop": 0.0}, "work_flop"),
        ({"work_flop": math.nan}, "work_flop"),
        ({"count": 0}, "count"),
        ({"utilisation": 1.5}, "utilisation"),
        ({"efficiency": 0.0}, "efficiency"),
    ],
)
def test_bad_arguments_name_the_field(kwargs: dict[str, float], field: str) -> None:
    args: dict[str, object] = {"work_flop": 1e18, "count": 1, "utilisation": 1.0}
    args.update(kwargs)
    with pytest.raises(InvalidValue) as caught:
        meter(
            find_device("H800"),
            args["count"],
            Precision.FP16,
            args["work_flop"],  # type: ignore[arg-type]
            WorkloadClass.GENERAL,
            a_site(),
            utilisation=args["utilisation"],  # type: ignore[arg-type]
            efficiency=kwargs.get("efficiency"),
        )
    assert caught.value.field == field


def test_site_factor_validation() -> None:
    with pytest.raises(InvalidValue, match="pue"):
        energy_kwh(1, 0.7, 1.0, 1.0, 0.9)
    with pytest.raises(InvalidValue, match="green_share"):
        carbon_kg(10.0, 0.5, 1.2)


def test_ceps_is_unbounded_at_zero_carbon() -> None:
    assert ceps(1e18, 0.0) is None
    assert ceps(1e18, 2.0) == 5e17


def test_market_and_location_carbon_are_never_mixed() -> None:
    assert carbon_kg(100.0, 0.6849, 0.8457) == pytest.approx(100 * 0.6849 * 0.1543)
    assert carbon_location_kg(100.0, 0.6849) == pytest.approx(68.49)


@pytest.mark.parametrize(
    ("energy", "price", "fen"),
    [
        (19.444444444444443, 0.5, 972),  # 972.22 -> 972
        (1.0, 0.125, 12),  # 12.5 -> 12 (half to even)
        (1.0, 0.135, 14),  # 13.5 -> 14 (half to even)
        (0.0, 0.7, 0),
    ],
)
def test_electricity_cost_is_integer_fen(energy: float, price: float, fen: int) -> None:
    cost = electricity_cost_fen(energy, price)
    assert cost == fen
    assert isinstance(cost, int)


def test_metering_a_device_without_tdp_is_refused() -> None:
    with pytest.raises(InvalidValue, match="tdp_w"):
        meter(
            find_device("Hygon DCU K100"), 1, Precision.FP16, 1e18, WorkloadClass.GENERAL, a_site()
        )
