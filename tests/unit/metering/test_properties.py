"""Invariants of the metering formulas, by property-based testing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from suanli.metering import (
    Precision,
    WorkloadClass,
    all_devices,
    carbon_kg,
    carbon_location_kg,
    meter,
)
from tests.builders import a_site

# Devices with a TDP and at least one published figure, with one precision they support.
METERABLE = [(d, d.precisions()[0]) for d in all_devices() if d.tdp_w is not None and d.peak_flops]
work = st.floats(min_value=1e12, max_value=1e24, allow_nan=False, allow_infinity=False)
counts = st.integers(min_value=1, max_value=4096)
factors = st.builds(
    a_site,
    pue=st.floats(min_value=1.0, max_value=2.5),
    grid_kgco2_per_kwh=st.floats(min_value=0.0, max_value=1.2),
    green_share=st.floats(min_value=0.0, max_value=1.0),
)


@given(st.sampled_from(METERABLE), work, counts, counts, st.sampled_from(list(WorkloadClass)))
def test_time_falls_as_devices_grow(
    device_precision: tuple, work_flop: float, a: int, b: int, workload: WorkloadClass
) -> None:
    device, precision = device_precision
    few, many = sorted((a, b))
    site = a_site()
    slow = meter(device, few, precision, work_flop, workload, site)
    fast = meter(device, many, precision, work_flop, workload, site)
    if many > few:
        assert fast.duration_s < slow.duration_s
    assert fast.duration_s * many == pytest.approx(slow.duration_s * few, rel=1e-9)
    # the same work at the same draw costs the same energy, however many devices share it
    assert fast.energy_kwh == pytest.approx(slow.energy_kwh, rel=1e-9)


@given(
    st.floats(min_value=0.0, max_value=1e7),
    st.floats(min_value=0.0, max_value=1e3),
    st.floats(min_value=0.0, max_value=1.2),
    st.floats(min_value=0.0, max_value=1.0),
)
def test_carbon_is_proportional_to_energy(
    energy: float, scale: float, grid: float, green: float
) -> None:
    base = carbon_kg(energy, grid, green)
    assert carbon_kg(energy * scale, grid, green) == pytest.approx(base * scale, rel=1e-9, abs=1e-9)
    assert carbon_location_kg(energy * scale, grid) == pytest.approx(
        carbon_location_kg(energy, grid) * scale, rel=1e-9, abs=1e-9
    )
    assert base <= carbon_location_kg(energy, grid) + 1e-12


@given(st.sampled_from(METERABLE), work, counts, factors)
def test_run_carbon_matches_its_energy(
    device_precision: tuple, work_flop: float, count: int, site: object
) -> None:
    device, precision = device_precision
    run = meter(device, count, precision, work_flop, WorkloadClass.GENERAL, site)  # type: ignore[arg-type]
    assert run.carbon_location_kg == pytest.approx(run.energy_kwh * run.grid_kgco2_per_kwh)
    assert run.carbon_kg == pytest.approx(
        run.energy_kwh * run.grid_kgco2_per_kwh * (1 - run.green_share), abs=1e-12
    )
    assert run.carbon_kg <= run.carbon_location_kg + 1e-9


def test_every_precision_is_meterable_on_some_device() -> None:
    covered = {p for d in all_devices() for p in d.precisions()}
    assert covered == set(Precision)
