"""Latency between places: the shipped matrix where it has the pair, else great-circle distance.

Owns `latency(a, b) -> Latency`. Rules, in order:

1. Same point: 0 ms (propagation only; equipment delay is not modelled anywhere here).
2. Both places are nodes of `hub_latency.csv` (the 10 clusters and Beijing, Shanghai,
   Guangzhou, Shenzhen): a *published measurement* where the row has one (a range is taken at
   its upper bound, "<=15" as 15), else the matrix's own estimate.
3. Otherwise the documented formula of the matrix itself:
   `one_way_ms = haversine_km * ROUTE_FACTOR / FIBRE_KM_PER_MS` (1.5 and 200 km/ms: light in
   fibre on a route 1.5 times the great circle), and `rtt_ms = 2 * one_way_ms`.

Every value but a published measurement is a DERIVED ESTIMATE, and `Latency.basis` says so.
Whether the policy tiers (1/5/20 ms) are one-way or RTT is not published; callers choose.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import cache

from suanli.catalog.places import Place
from suanli.datafiles import read_rows

EARTH_RADIUS_KM = 6371.0
ROUTE_FACTOR = 1.5
FIBRE_KM_PER_MS = 200.0


@dataclass(frozen=True, slots=True)
class Latency:
    """One-way and round-trip latency in ms between two places, with how it was obtained."""

    one_way_ms: float
    basis: str
    distance_km: float

    @property
    def rtt_ms(self) -> float:
        return 2.0 * self.one_way_ms

    @property
    def measured(self) -> bool:
        return self.basis.startswith("published")


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance on a sphere of radius 6371 km."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


def estimated_one_way_ms(distance_km: float) -> float:
    """The matrix's formula: distance x route factor / speed of light in fibre."""
    return distance_km * ROUTE_FACTOR / FIBRE_KM_PER_MS


def _published_upper_ms(cell: str) -> float | None:
    numbers = re.findall(r"\d+(?:\.\d+)?", cell)
    return max(float(n) for n in numbers) if numbers else None


@cache
def _matrix() -> dict[frozenset[str], Latency]:
    table: dict[frozenset[str], Latency] = {}
    for row in read_rows("suanli.catalog", "hub_latency.csv"):
        distance = float(row["great_circle_km"])
        published = _published_upper_ms(row["published_ms"])
        if published is not None:
            basis = (
                f"published ({row['published_kind']}: {row['published_ms']} ms, "
                f"upper bound used; {row['published_source']})"
            )
            entry = Latency(published, basis, distance)
        else:
            entry = Latency(
                float(row["est_one_way_ms"]), "DERIVED ESTIMATE (hub_latency.csv)", distance
            )
        table[frozenset((row["from_id"], row["to_id"]))] = entry
    return table


def matrix_nodes() -> frozenset[str]:
    """Ids that appear in the shipped latency matrix."""
    return frozenset(node for pair in _matrix() for node in pair)


def latency(a: Place, b: Place) -> Latency:
    """Latency between two places by the rules in the module docstring."""
    distance = haversine_km(a.lat, a.lon, b.lat, b.lon)
    if a.id == b.id or distance == 0.0:
        return Latency(0.0, "same point (propagation only)", 0.0)
    found = _matrix().get(frozenset((a.id, b.id)))
    if found is not None:
        return found
    return Latency(
        estimated_one_way_ms(distance),
        f"DERIVED ESTIMATE (great circle x {ROUTE_FACTOR} / {FIBRE_KM_PER_MS:g} km/ms)",
        distance,
    )
