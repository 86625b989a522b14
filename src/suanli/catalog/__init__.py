"""suanli.catalog — the regional inventory (区域算力资源清单) and the geography it lives in.

Pure, over shipped copies of the public data (see `data/SOURCES.md`): the 8 hubs and 10
clusters as `Site`s with PUE, grid factor, green share and price; `Pool`s of devices at a site;
places (every province and capital, in Chinese or pinyin) and the latency between any two.
"""

from suanli.catalog.factors import (
    ElectricityPrice,
    GridFactor,
    electricity_price,
    grid_factor,
    national_grid_factor,
    regional_grid_factor,
)
from suanli.catalog.latency import Latency, haversine_km, latency, matrix_nodes
from suanli.catalog.places import Place, PlaceKind, all_places, find_place
from suanli.catalog.sites import (
    Hub,
    Pool,
    Site,
    clusters,
    find_site,
    hubs,
    provider_site,
    zone_provinces,
)


def find_point(name: str) -> Place:
    """A cluster site (by id or name) or any place, for latency questions."""
    for site in clusters():
        if name.strip().lower() in {site.id.lower(), site.name_zh, site.name_en.lower()}:
            return site.place
    return find_place(name)


def latency_between(a: str, b: str) -> Latency:
    """Latency between two named points (clusters, provinces, cities)."""
    return latency(find_point(a), find_point(b))


__all__ = [
    "ElectricityPrice",
    "GridFactor",
    "Hub",
    "Latency",
    "Place",
    "PlaceKind",
    "Pool",
    "Site",
    "all_places",
    "clusters",
    "electricity_price",
    "find_place",
    "find_point",
    "find_site",
    "grid_factor",
    "haversine_km",
    "hubs",
    "latency",
    "latency_between",
    "matrix_nodes",
    "national_grid_factor",
    "provider_site",
    "regional_grid_factor",
    "zone_provinces",
]
