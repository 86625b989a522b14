"""The regional inventory (区域算力资源清单): hubs, sites and resource pools.

Owns `Hub`, `Site` and `Pool`, the 8 national hubs and the 10 national clusters as sites with
everything the scheduler needs, and `provider_site` for a provider's data centre anywhere else
in China, whose factors resolve by province. Choices, each visible in the site's `*_basis`:

* PUE: the cluster's published PUE ceiling (1.25 demand hubs, 1.2 supply hubs) — a target used
  as the operating value. For Tianfu, Chongqing, Gui'an, Horinger and Zhongwei the ceiling is
  the standard wording of their class, not seen verbatim (SOURCES.md §1): `pue_verified` False.
* Grid factor: the province's latest MEE/NBS location-based factor; a cluster spanning several
  provinces (YRD_DEMO) uses its regional grid (华东), the generation-weighted mix of them.
* Green-power share: the latest share reported for the cluster in `hub_metrics.csv` (Horinger
  84.57%, 2025); every other cluster has no published share and gets 0.0, so its market-based
  carbon equals its location-based carbon until a green-power contract is registered.
* Electricity price: the province's typical price (mean over provinces for a multi-province
  cluster); estimates stay marked.
* Rack utilisation: the latest reported figure for the cluster, where one exists.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from functools import cache

from suanli import checks
from suanli.catalog.factors import (
    ElectricityPrice,
    GridFactor,
    grid_factor,
    mean_price,
    regional_grid_factor,
)
from suanli.catalog.places import Place, PlaceKind, find_place
from suanli.datafiles import read_rows
from suanli.errors import InvalidValue, SuanliError, UnknownSite, UnknownZone
from suanli.metering import DeviceProfile

_PUE_CLASS_WORDING = frozenset({"TIANFU", "CHONGQING", "GUIAN", "HORINGER", "ZHONGWEI"})


@dataclass(frozen=True, slots=True)
class Hub:
    """One of the 8 national compute hubs (国家算力枢纽节点)."""

    id: str
    name_zh: str
    name_en: str
    provinces: tuple[str, ...]
    scheme_group: str  # "demand_hub" | "supply_hub"
    geo_east_west: str
    cluster_ids: tuple[str, ...]
    pue_target_max: float
    rack_utilization_target_min: float
    renewable_target: str
    role: str
    lat: float
    lon: float
    source: str


@dataclass(frozen=True, slots=True)
class Site:
    """One data centre or cluster with the factors that metering and scheduling need."""

    id: str
    name_zh: str
    name_en: str
    hub_id: str | None
    provinces: tuple[str, ...]
    province_en: str
    lat: float
    lon: float
    east_west: str  # "east" | "west" (geographic)
    scheme_group: str  # "demand_hub" | "supply_hub" | "" for provider sites outside hubs
    pue: float
    pue_basis: str
    pue_verified: bool
    grid: GridFactor
    green_share: float
    green_share_basis: str
    price: ElectricityPrice
    rack_utilization: float | None
    rack_utilization_basis: str
    rack_utilization_target_min: float | None
    source: str
    # the catalog place this site stands at, for the latency matrix: a provider's site on a
    # catalog cluster keeps the cluster's published latencies under its own id (None: `id`)
    place_id: str | None = None

    @property
    def province(self) -> str:
        return "/".join(self.provinces)

    @property
    def grid_kgco2_per_kwh(self) -> float:
        return self.grid.kgco2_per_kwh

    @property
    def price_cny_per_kwh(self) -> float:
        return self.price.typical_cny_per_kwh

    @property
    def place(self) -> Place:
        return Place(
            self.place_id or self.id,
            PlaceKind.CLUSTER,
            self.name_zh,
            self.name_en,
            self.province,
            self.province_en,
            self.lat,
            self.lon,
            self.source,
        )


@dataclass(frozen=True, slots=True)
class Pool:
    """A homogeneous set of devices at a site.

    `price_fen_per_device_hour` is the compute price; when `energy_billed_separately`, the
    consumer also pays the site's electricity for the run. `tou_multipliers` are 24 optional
    hour-of-day multipliers of the compute price (local clock, hour 0 first).
    """

    id: str
    site_id: str
    device: DeviceProfile
    count: int
    free: int
    price_fen_per_device_hour: int | None = None
    energy_billed_separately: bool = False
    tou_multipliers: tuple[float, ...] | None = None
    # the devices of one node (a server): a task holds at most this many on each node it
    # spans; None = not known (the pool is taken as one node of `count`)
    devices_per_node: int | None = None

    def __post_init__(self) -> None:
        checks.count("count", self.count)
        per_node = self.devices_per_node
        if per_node is not None and (
            isinstance(per_node, bool)
            or not isinstance(per_node, int)
            or not 1 <= per_node <= self.count
        ):
            raise InvalidValue(
                "devices_per_node",
                per_node,
                f"a whole number in [1, {self.count}] (the pool's count)",
                f"[1, {self.count}] 内的整数（不超过设备总数）",
            )
        if isinstance(self.free, bool) or not 0 <= self.free <= self.count:
            raise InvalidValue(
                "free",
                self.free,
                f"a whole number in [0, {self.count}] (the pool's count)",
                f"[0, {self.count}] 内的整数（不超过设备总数）",
            )
        price = self.price_fen_per_device_hour
        if price is not None and (
            isinstance(price, bool) or not isinstance(price, int) or price < 0
        ):
            raise InvalidValue(
                "price_fen_per_device_hour",
                price,
                "a whole number of fen >= 0",
                "不小于 0 的整数（分）",
            )
        tou = self.tou_multipliers
        if tou is not None and (len(tou) != 24 or not all(m > 0 for m in tou)):
            raise InvalidValue(
                "tou_multipliers", tou, "24 positive hour-of-day multipliers", "24 个正的分时系数"
            )


@cache
def hubs() -> tuple[Hub, ...]:
    return tuple(
        Hub(
            id=r["hub_id"],
            name_zh=r["name_zh"],
            name_en=r["name_en"],
            provinces=tuple(r["provinces"].split(";")),
            scheme_group=r["scheme_group"],
            geo_east_west=r["geo_east_west"],
            cluster_ids=tuple(r["clusters"].split(";")),
            pue_target_max=float(r["cluster_pue_target_max"]),
            rack_utilization_target_min=float(r["cluster_rack_utilization_target_min"]),
            renewable_target=r["renewable_target_text"],
            role=r["role_text"],
            lat=float(r["representative_lat"]),
            lon=float(r["representative_lon"]),
            source=r["source"],
        )
        for r in read_rows("suanli.catalog", "hubs.csv")
    )


def _latest_cluster_metric(cluster_id: str, metric: str) -> dict[str, str] | None:
    rows = [
        r
        for r in read_rows("suanli.catalog", "hub_metrics.csv")
        if r["scope"] == "cluster" and r["scope_id"] == cluster_id and r["metric"] == metric
    ]
    return max(rows, key=lambda r: r["as_of"]) if rows else None


def _metric_value(
    cluster_id: str, metric: str, default: float | None, none_basis: str
) -> tuple[float | None, str]:
    row = _latest_cluster_metric(cluster_id, metric)
    if row is None:
        return default, none_basis
    return float(row["value"]), f"reported {row['as_of']} ({row['source']}); {row['quality_note']}"


@cache
def clusters() -> tuple[Site, ...]:
    """The 10 national data-centre clusters as sites, in `dc_clusters.csv` order."""
    hub_by_id = {h.id: h for h in hubs()}
    sites: list[Site] = []
    for r in read_rows("suanli.catalog", "dc_clusters.csv"):
        cid = r["cluster_id"]
        provinces = tuple(r["province_zh"].split("/"))
        grid = (
            grid_factor(provinces[0])
            if len(provinces) == 1
            else regional_grid_factor(r["mee_grid_region"])
        )
        green, green_basis = _metric_value(
            cid,
            "green_power_share",
            0.0,
            "no published share: 0 assumed (no green-power contract counted)",
        )
        racks, racks_basis = _metric_value(cid, "rack_utilization", None, "not published")
        verified = cid not in _PUE_CLASS_WORDING
        hub = hub_by_id[r["hub_id"]]
        sites.append(
            Site(
                id=cid,
                name_zh=r["name_zh"],
                name_en=r["name_en"],
                hub_id=hub.id,
                provinces=provinces,
                province_en=r["province_en"],
                lat=float(r["lat"]),
                lon=float(r["lon"]),
                east_west=r["geo_east_west"].split(" ")[0],
                scheme_group=hub.scheme_group,
                pue=float(r["pue_target_max"]),
                pue_basis="cluster PUE ceiling from the NDRC reply, used as operating PUE"
                + ("" if verified else " (standard class wording; not seen verbatim)"),
                pue_verified=verified,
                grid=grid,
                green_share=green if green is not None else 0.0,
                green_share_basis=green_basis,
                price=mean_price(list(provinces)),
                rack_utilization=racks,
                rack_utilization_basis=racks_basis,
                rack_utilization_target_min=float(r["rack_utilization_target_min"]),
                source=r["source"],
            )
        )
    return tuple(sites)


def find_site(name: str, extra: tuple[Site, ...] = ()) -> Site:
    """A cluster (or one of `extra` sites) by id, any case, or by its Chinese/English name."""
    candidates = (*clusters(), *extra)
    key = name.strip().lower()
    for site in candidates:
        names = (site.id, site.name_zh, site.name_en, site.name_en.replace(" DC cluster", ""))
        if key in {n.lower() for n in names}:
            return site
    ids = [s.id for s in candidates]
    close = difflib.get_close_matches(name.strip().upper(), ids, n=5, cutoff=0.4)
    raise UnknownSite(name, close or ids)


def provider_site(
    id: str,
    where: str,
    *,
    pue: float,
    green_share: float = 0.0,
    name_zh: str = "",
    name_en: str = "",
    lat: float | None = None,
    lon: float | None = None,
    grid_kgco2_per_kwh: float | None = None,
) -> Site:
    """A provider's site anywhere in China; grid factor and price resolve by its province.

    `where` is a province or city (上海, Hangzhou, 贵州省...). Coordinates default to the
    place's; a hub is assigned when the province belongs to one.
    """
    checks.at_least("pue", pue, 1.0)
    checks.in_range("green_share", green_share, 0.0, 1.0)
    place = find_place(where)
    province = place.province_zh.split("/")[0]
    hub = next((h for h in hubs() if _province_in_hub(province, place.province_en, h)), None)
    if grid_kgco2_per_kwh is None:
        grid = grid_factor(province)
    else:
        checks.non_negative("grid_kgco2_per_kwh", grid_kgco2_per_kwh)
        grid = GridFactor(grid_kgco2_per_kwh, 0, "given", province, "given by provider", "", "")
    west = _province_row(province)["geo_east_west"] == "west"
    return Site(
        id=id,
        name_zh=name_zh or f"{place.name_zh}站点",
        name_en=name_en or f"{place.name_en} site",
        hub_id=hub.id if hub else None,
        provinces=(province,),
        province_en=place.province_en,
        lat=place.lat if lat is None else lat,
        lon=place.lon if lon is None else lon,
        east_west="west" if west else "east",
        scheme_group=hub.scheme_group if hub else "",
        pue=pue,
        pue_basis="given by provider",
        pue_verified=False,
        grid=grid,
        green_share=green_share,
        green_share_basis="given by provider" if green_share else "none declared: 0",
        price=mean_price([province]),
        rack_utilization=None,
        rack_utilization_basis="not reported",
        rack_utilization_target_min=hub.rack_utilization_target_min if hub else None,
        source=f"provider registration; factors by province {province}",
    )


def _province_in_hub(province_zh: str, province_en: str, hub: Hub) -> bool:
    names = {re.sub(r"\s*\(.*\)", "", p).strip() for p in hub.provinces}
    return province_en in names or province_zh in names


def _province_row(province_zh: str) -> dict[str, str]:
    rows = read_rows("suanli.catalog", "provinces.csv")
    return next(r for r in rows if r["province_zh"] == province_zh)


@cache
def zone_provinces(name: str) -> frozenset[str]:
    """The provinces (Chinese names) a zone covers: a hub (by id or name), a cluster (by id or
    name), or a province or city. Residency by zone is residency by province."""
    key = name.strip().lower()
    for hub in hubs():
        if key in {hub.id.lower(), hub.name_zh, hub.name_en.lower()}:
            bare = (re.sub(r"\s*\(.*\)", "", p).strip() for p in hub.provinces)
            return frozenset(find_place(p).province_zh for p in bare)
    try:
        return frozenset(find_site(name).provinces)
    except UnknownSite:
        pass
    try:
        return frozenset({find_place(name).province_zh})
    except SuanliError:
        ids = [h.id for h in hubs()] + [c.id for c in clusters()]
        close = difflib.get_close_matches(name.strip().upper(), ids, n=5, cutoff=0.5)
        raise UnknownZone(name, close) from None
