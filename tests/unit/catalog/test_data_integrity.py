"""Every shipped figure has a source; the shipped copies match the project's public data."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

from suanli.catalog import clusters, find_place, grid_factor
from suanli.catalog.fleet import demo_fleet
from suanli.datafiles import read_rows

SHARED = Path(__file__).resolve().parents[4] / "shared" / "data"

SHIPPED = {
    "suanli.metering": ["accelerators.csv", "cpus.csv"],
    "suanli.catalog": [
        "hubs.csv",
        "dc_clusters.csv",
        "grid_emission_factors.csv",
        "electricity_prices.csv",
        "hub_latency.csv",
        "hub_metrics.csv",
        "latency_targets.csv",
        "tou_tariffs.csv",
    ],
}
OWN = {"suanli.catalog": ["provinces.csv", "cities.csv", "demo_fleet.csv"]}


def _all_files() -> list[tuple[str, str]]:
    return [(pkg, f) for table in (SHIPPED, OWN) for pkg, files in table.items() for f in files]


@pytest.mark.parametrize(("package", "filename"), _all_files())
def test_every_row_has_a_source(package: str, filename: str) -> None:
    rows = read_rows(package, filename)
    assert rows, filename
    # hub_latency.csv: every value is a documented derived estimate unless a source is named
    column = next(c for c in ("source", "note", "estimate_method") if c in rows[0])
    for number, row in enumerate(rows, start=2):
        assert row[column], f"{filename}:{number} has no {column}"


@pytest.mark.skipif(
    not SHARED.is_dir(), reason="the project's shared data is not beside this checkout"
)
@pytest.mark.parametrize(
    ("package", "filename"), [(p, f) for p, files in SHIPPED.items() for f in files]
)
def test_shipped_copy_is_identical_to_the_public_data(package: str, filename: str) -> None:
    shipped = resources.files(package).joinpath("data", filename).read_bytes()
    assert shipped == (SHARED / filename).read_bytes(), f"{filename} drifted from shared/data"


def test_sources_document_is_shipped() -> None:
    text = resources.files("suanli.catalog").joinpath("data", "SOURCES.md").read_text("utf-8")
    assert "provinces.csv" in text and "demo_fleet.csv" in text


def test_every_numeric_figure_parses() -> None:
    for row in read_rows("suanli.catalog", "grid_emission_factors.csv"):
        assert 0 < float(row["factor_kgco2_per_kwh"]) < 1.5
    for row in read_rows("suanli.catalog", "electricity_prices.csv"):
        assert 0 < float(row["price_typical_cny_per_kwh"]) < 2
    for row in read_rows("suanli.catalog", "dc_clusters.csv"):
        assert 1.0 <= float(row["pue_target_max"]) <= 1.5
        assert 18 <= float(row["lat"]) <= 54 and 73 <= float(row["lon"]) <= 135


def test_every_site_resolves() -> None:
    for site in clusters():
        assert site.grid.kgco2_per_kwh > 0 and site.grid.source
        assert site.price.typical_cny_per_kwh > 0 and site.price.source
        assert 1.0 <= site.pue <= 1.5
        assert 0.0 <= site.green_share <= 1.0
        assert site.green_share_basis and site.pue_basis
        for province in site.provinces:
            assert find_place(province).province_zh == province
            grid_factor(province)


def test_demo_fleet_is_labelled_illustrative() -> None:
    rows = read_rows("suanli.catalog", "demo_fleet.csv")
    assert all(r["note"].startswith("ILLUSTRATIVE") for r in rows)
    sites, pools = demo_fleet()
    assert {s.id for s in sites} == {s.id for s in clusters()}
    assert len(pools) == len(rows)
