"""Test builders that speak the domain: sites with known factors, pools, fleets."""

from __future__ import annotations

from dataclasses import dataclass

from suanli.catalog import Pool, find_site
from suanli.metering import find_device


@dataclass(frozen=True)
class SiteValues:
    """A site reduced to the factors metering needs, with hand-picked round numbers."""

    id: str = "TEST"
    pue: float = 1.25
    grid_kgco2_per_kwh: float = 0.5
    green_share: float = 0.0


def a_site(**overrides: float | str) -> SiteValues:
    return SiteValues(**overrides)  # type: ignore[arg-type]


def a_pool(pool_id: str, site: str, device: str, count: int, free: int | None = None) -> Pool:
    return Pool(
        pool_id, find_site(site).id, find_device(device), count, count if free is None else free
    )
