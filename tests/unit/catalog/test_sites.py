"""Hubs, clusters as sites, provider sites elsewhere, and pools."""

from __future__ import annotations

import pytest

from suanli.catalog import (
    Pool,
    clusters,
    electricity_price,
    find_site,
    grid_factor,
    hubs,
    provider_site,
)
from suanli.errors import InvalidValue, MissingFactor, UnknownSite
from suanli.metering import find_device

CLUSTER_IDS = [
    "ZJK",
    "YRD_DEMO",
    "WUHU",
    "SHAOGUAN",
    "TIANFU",
    "CHONGQING",
    "GUIAN",
    "HORINGER",
    "QINGYANG",
    "ZHONGWEI",
]


def test_eight_hubs_and_ten_clusters() -> None:
    assert len(hubs()) == 8
    assert [s.id for s in clusters()] == CLUSTER_IDS
    for hub in hubs():
        for cid in hub.cluster_ids:
            assert find_site(cid).hub_id == hub.id


@pytest.mark.parametrize(
    ("cid", "grid", "year", "price", "pue", "east_west"),
    [
        ("ZJK", 0.7252, 2022, 0.57, 1.25, "east"),  # 河北 provincial 2022 (cross-checked)
        ("YRD_DEMO", 0.55, 2023, 0.70, 1.25, "east"),  # spans 3 provinces: 华东 regional 2023
        ("TIANFU", 0.1404, 2022, 0.45, 1.25, "west"),  # west, demand-hub class
        ("GUIAN", 0.4989, 2022, 0.40, 1.2, "west"),
        ("HORINGER", 0.6849, 2022, 0.33, 1.2, "west"),
        ("ZHONGWEI", 0.6423, 2022, 0.36, 1.2, "west"),
    ],
)
def test_cluster_factors(
    cid: str, grid: float, year: int, price: float, pue: float, east_west: str
) -> None:
    site = find_site(cid)
    assert site.grid_kgco2_per_kwh == grid
    assert site.grid.year == year
    assert site.price_cny_per_kwh == pytest.approx(price)
    assert site.pue == pue
    assert site.east_west == east_west


def test_green_share_is_reported_or_zero() -> None:
    shares = {s.id: s.green_share for s in clusters()}
    assert shares.pop("HORINGER") == 0.8457
    assert set(shares.values()) == {0.0}
    assert "reported 2025" in find_site("HORINGER").green_share_basis


def test_class_wording_pue_is_flagged() -> None:
    flagged = {s.id for s in clusters() if not s.pue_verified}
    assert flagged == {"TIANFU", "CHONGQING", "GUIAN", "HORINGER", "ZHONGWEI"}


def test_estimated_prices_stay_marked() -> None:
    assert find_site("ZJK").price.estimate
    assert "estimate" in find_site("YRD_DEMO").price.quality
    assert electricity_price("新疆").estimate  # no row: national average, marked


def test_find_site_by_name_and_unknown() -> None:
    assert find_site("zjk").id == "ZJK"
    assert find_site("张家口数据中心集群").id == "ZJK"
    assert find_site("Zhangjiakou").id == "ZJK"
    with pytest.raises(UnknownSite) as caught:
        find_site("ZJQ")
    assert caught.value.suggestions[0] == "ZJK"


def test_provider_site_resolves_by_province() -> None:
    site = provider_site("hz-1", "杭州", pue=1.3)
    assert site.provinces == ("浙江",)
    assert site.grid_kgco2_per_kwh == 0.5153  # 浙江 2022
    assert site.price_cny_per_kwh == 0.70
    assert site.hub_id == "YRD"
    assert site.east_west == "east"
    west = provider_site("xj-1", "乌鲁木齐", pue=1.2, green_share=0.3)
    assert west.east_west == "west"
    assert west.hub_id is None
    assert west.green_share == 0.3


def test_provider_site_without_provincial_factor_uses_the_regional_grid() -> None:
    tibet = grid_factor("西藏")
    assert (tibet.level, tibet.kgco2_per_kwh, tibet.year) == ("regional", 0.2472, 2023)
    assert provider_site("lhasa", "拉萨", pue=1.3).grid == tibet


def test_hong_kong_needs_an_explicit_factor() -> None:
    with pytest.raises(MissingFactor, match="grid_kgco2_per_kwh"):
        provider_site("hk", "香港", pue=1.4)
    site = provider_site("hk", "香港", pue=1.4, grid_kgco2_per_kwh=0.7)
    assert site.grid_kgco2_per_kwh == 0.7


def test_provider_site_rejects_bad_factors() -> None:
    with pytest.raises(InvalidValue, match="pue"):
        provider_site("x", "杭州", pue=0.9)
    with pytest.raises(InvalidValue, match="green_share"):
        provider_site("x", "杭州", pue=1.2, green_share=1.5)


def test_pool_rejects_more_free_than_count() -> None:
    h800 = find_device("H800")
    with pytest.raises(InvalidValue, match="free"):
        Pool("p", "ZJK", h800, 8, 9)
    with pytest.raises(InvalidValue, match="count"):
        Pool("p", "ZJK", h800, 0, 0)
    with pytest.raises(InvalidValue, match="price_fen_per_device_hour"):
        Pool("p", "ZJK", h800, 8, 8, -1)
