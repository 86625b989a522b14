"""Site factors from the shipped public data: grid emission factors and electricity prices.

Owns the resolution rules, each returning the figure *with* its provenance so that a caller can
always show where it came from and whether it is an estimate:

* `grid_factor(province_zh)` — the location-based MEE/NBS average factor (kgCO2/kWh) of the
  province, latest year published (2022 for provinces); where a province has none (西藏), the
  latest factor of its regional grid (2023). `regional_grid_factor(region)` gives a regional
  grid directly (used for clusters spanning several provinces). Only the `location_average`
  series is used; the corporate-reporting factor (0.5703) is a different series, never mixed in.
* `electricity_price(province_zh)` — typical / low / high CNY per kWh from
  `electricity_prices.csv`; a province without a row falls back to the national average
  industrial rate, marked as an estimate. The whole file is scenario input (SOURCES.md §5).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from statistics import fmean

from suanli.datafiles import optional_float, read_rows
from suanli.errors import MissingFactor

_NATIONAL_ZH = "全国"


@dataclass(frozen=True, slots=True)
class GridFactor:
    """A location-based grid emission factor with its provenance."""

    kgco2_per_kwh: float
    year: int
    level: str  # "provincial" | "regional" | "national"
    region_zh: str
    verification: str
    document: str
    source: str

    @property
    def basis(self) -> str:
        return f"MEE/NBS {self.year} {self.level} average ({self.region_zh}); {self.verification}"


@dataclass(frozen=True, slots=True)
class ElectricityPrice:
    """Indicative electricity price (CNY/kWh) with its quality; `estimate` must stay visible."""

    typical_cny_per_kwh: float
    low_cny_per_kwh: float | None
    high_cny_per_kwh: float | None
    quality: str
    basis: str
    source: str

    @property
    def estimate(self) -> bool:
        return "estimate" in self.quality.lower()


def _region_key(text: str) -> str:
    """'North China (华北; Mengxi grid)' -> 'north china'; 'South (...)' -> 'south'."""
    return text.split("(")[0].strip().lower()


def _year(cell: str) -> int:
    return int(cell[:4])


@cache
def _location_rows() -> tuple[dict[str, str], ...]:
    rows = read_rows("suanli.catalog", "grid_emission_factors.csv")
    return tuple(r for r in rows if r["factor_type"] == "location_average")


def _factor(row: dict[str, str]) -> GridFactor:
    return GridFactor(
        kgco2_per_kwh=float(row["factor_kgco2_per_kwh"]),
        year=_year(row["year"]),
        level=row["level"],
        region_zh=row["region_zh"],
        verification=row["verification"],
        document=row["document"],
        source=row["source"],
    )


def _latest(rows: list[dict[str, str]]) -> GridFactor | None:
    return _factor(max(rows, key=lambda r: _year(r["year"]))) if rows else None


@cache
def _province_grid_regions() -> dict[str, str]:
    return {
        row["province_zh"]: row["mee_grid_region"]
        for row in read_rows("suanli.catalog", "provinces.csv")
    }


def regional_grid_factor(region: str) -> GridFactor:
    """Latest location-based factor of an MEE regional grid ('East China', 'South (...)')."""
    key = _region_key(region)
    rows = [
        r
        for r in _location_rows()
        if r["level"] == "regional" and _region_key(r["mee_grid_region"]) == key
    ]
    found = _latest(rows)
    if found is None:
        known = sorted({r["mee_grid_region"] for r in _location_rows() if r["level"] == "regional"})
        raise MissingFactor(
            "regional grid factor",
            region,
            f"use one of: {', '.join(known)}",
            f"可用的区域电网：{', '.join(known)}",
        )
    return found


def national_grid_factor() -> GridFactor:
    found = _latest([r for r in _location_rows() if r["level"] == "national"])
    assert found is not None, "the national location_average series is shipped"
    return found


def grid_factor(province_zh: str) -> GridFactor:
    """Province's latest location-based factor; else its regional grid's latest factor."""
    rows = [
        r for r in _location_rows() if r["level"] == "provincial" and r["region_zh"] == province_zh
    ]
    found = _latest(rows)
    if found is not None:
        return found
    region = _province_grid_regions().get(province_zh, "")
    if not region:
        raise MissingFactor(
            "grid emission factor",
            province_zh,
            "the MEE series covers mainland provinces only; give grid_kgco2_per_kwh explicitly",
            "生态环境部因子仅覆盖内地省份；请显式提供 grid_kgco2_per_kwh",
        )
    return regional_grid_factor(region)


@cache
def _price_rows() -> dict[str, dict[str, str]]:
    return {r["province_zh"]: r for r in read_rows("suanli.catalog", "electricity_prices.csv")}


def _price(row: dict[str, str], basis: str | None = None) -> ElectricityPrice:
    return ElectricityPrice(
        typical_cny_per_kwh=float(row["price_typical_cny_per_kwh"]),
        low_cny_per_kwh=optional_float(row["price_low_cny_per_kwh"]),
        high_cny_per_kwh=optional_float(row["price_high_cny_per_kwh"]),
        quality=row["quality"],
        basis=basis or row["price_basis"],
        source=row["source"],
    )


def electricity_price(province_zh: str) -> ElectricityPrice:
    """The province's indicative price; else the national average, marked as an estimate."""
    rows = _price_rows()
    if province_zh in rows:
        return _price(rows[province_zh])
    national = _price(rows[_NATIONAL_ZH])
    return ElectricityPrice(
        typical_cny_per_kwh=national.typical_cny_per_kwh,
        low_cny_per_kwh=None,
        high_cny_per_kwh=None,
        quality=f"estimate: national average used for {province_zh} ({national.quality})",
        basis=f"national average industrial rate; no row for {province_zh}",
        source=national.source,
    )


def mean_price(provinces: list[str]) -> ElectricityPrice:
    """Mean of several provinces' prices (for a cluster spanning them), marked derived."""
    prices = [electricity_price(p) for p in provinces]
    if len(prices) == 1:
        return prices[0]
    lows = [p.low_cny_per_kwh for p in prices]
    highs = [p.high_cny_per_kwh for p in prices]
    estimate = any(p.estimate for p in prices)
    return ElectricityPrice(
        typical_cny_per_kwh=round(fmean(p.typical_cny_per_kwh for p in prices), 4),
        low_cny_per_kwh=min(x for x in lows if x is not None) if any(lows) else None,
        high_cny_per_kwh=max(x for x in highs if x is not None) if any(highs) else None,
        quality=("estimate; " if estimate else "")
        + f"derived: mean of {'/'.join(provinces)} typical prices",
        basis="; ".join(sorted({p.basis for p in prices})),
        source=" | ".join(sorted({p.source for p in prices})),
    )
