"""Places resolve in Chinese or pinyin; latency comes from the matrix or the documented formula."""

from __future__ import annotations

import pytest

from suanli.catalog import (
    PlaceKind,
    all_places,
    find_place,
    haversine_km,
    latency,
    latency_between,
    matrix_nodes,
)
from suanli.datafiles import read_rows
from suanli.errors import UnknownPlace


@pytest.mark.parametrize(
    ("name", "place_id", "kind"),
    [
        ("上海", "SHANGHAI", PlaceKind.PROVINCE),
        ("Shanghai", "SHANGHAI", PlaceKind.PROVINCE),
        ("上海市", "SHANGHAI", PlaceKind.PROVINCE),
        ("浙江", "ZHEJIANG", PlaceKind.PROVINCE),
        ("浙江省", "ZHEJIANG", PlaceKind.PROVINCE),
        ("Zhejiang Province", "ZHEJIANG", PlaceKind.PROVINCE),
        ("杭州", "HANGZHOU", PlaceKind.CITY),
        ("Hangzhou", "HANGZHOU", PlaceKind.CITY),
        ("内蒙古自治区", "INNER_MONGOLIA", PlaceKind.PROVINCE),
        ("广西壮族自治区", "GUANGXI", PlaceKind.PROVINCE),
        ("Xi'an", "XI_AN", PlaceKind.CITY),
        ("深圳", "SHENZHEN", PlaceKind.CITY),
        ("zjk", "ZJK", PlaceKind.CLUSTER),
    ],
)
def test_places_resolve(name: str, place_id: str, kind: PlaceKind) -> None:
    place = find_place(name)
    assert (place.id, place.kind) == (place_id, kind)


def test_a_province_sits_at_its_capital() -> None:
    zhejiang, hangzhou = find_place("浙江"), find_place("杭州")
    assert (zhejiang.lat, zhejiang.lon) == (hangzhou.lat, hangzhou.lon)


def test_every_province_and_capital_resolves_both_ways() -> None:
    rows = read_rows("suanli.catalog", "provinces.csv")
    assert len(rows) == 34
    for row in rows:
        for name in (row["province_zh"], row["province_en"]):
            assert find_place(name).province_zh == row["province_zh"], name
        for name in (row["capital_zh"], row["capital_en"]):
            place = find_place(name)
            assert (place.lat, place.lon) == (float(row["lat"]), float(row["lon"])), name


def test_unknown_place_offers_close_names() -> None:
    with pytest.raises(UnknownPlace) as caught:
        find_place("Hangzou")
    assert any("Hangzhou" in s for s in caught.value.suggestions)


def test_haversine_beijing_shanghai() -> None:
    # About 1,067 km between the two city centres.
    assert haversine_km(39.90, 116.40, 31.23, 121.47) == pytest.approx(1067, abs=5)


def test_the_formula_reproduces_the_shipped_matrix() -> None:
    places = {p.id: p for p in all_places() if p.id in matrix_nodes()}
    assert len(matrix_nodes()) == 14
    for row in read_rows("suanli.catalog", "hub_latency.csv"):
        a, b = places[row["from_id"]], places[row["to_id"]]
        distance = haversine_km(a.lat, a.lon, b.lat, b.lon)
        assert distance == pytest.approx(float(row["great_circle_km"]), abs=1.0)
        assert distance * 1.5 / 200 == pytest.approx(float(row["est_one_way_ms"]), abs=0.01)


def test_matrix_value_is_used_where_one_exists() -> None:
    found = latency_between("ZJK", "YRD_DEMO")
    assert found.one_way_ms == 9.06
    assert found.rtt_ms == 18.12
    assert "hub_latency.csv" in found.basis


def test_published_measurement_wins_upper_bound_taken() -> None:
    assert latency_between("中卫", "北京").one_way_ms == 10.0  # the city shares the node id
    zhongwei_beijing = latency_between("ZHONGWEI", "Beijing")
    assert zhongwei_beijing.one_way_ms == 10.0  # published 8-10 ms one-way
    assert zhongwei_beijing.measured
    assert latency_between("ZHONGWEI", "上海").one_way_ms == 15.0  # published <=15


def test_great_circle_formula_elsewhere() -> None:
    hangzhou, guian = find_place("杭州"), find_place("GUIAN")
    found = latency(hangzhou, guian)
    km = haversine_km(30.27, 120.16, 26.40, 106.31)
    assert found.one_way_ms == pytest.approx(km * 1.5 / 200)
    assert found.basis.startswith("DERIVED ESTIMATE")
    assert not found.measured


def test_same_point_is_zero() -> None:
    assert latency_between("北京", "Beijing").one_way_ms == 0.0
