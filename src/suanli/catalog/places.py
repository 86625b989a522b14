"""Places: every province-level division, its capital, demand cities and the cluster sites.

Owns `Place` and `find_place`: any province or provincial capital, in Chinese or pinyin, with
or without its suffix (上海, Shanghai, 浙江, 浙江省, 杭州, Hangzhou, 内蒙古自治区), or a cluster id
(ZJK), resolves to a place with coordinates. A province resolves to its capital's coordinates.
An unknown name fails with the closest known names.

Coordinates are approximate city centres (±10–20 km), good for great-circle distances and
maps, not for siting; cluster coordinates come from `dc_clusters.csv`.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from dataclasses import dataclass
from enum import StrEnum
from functools import cache, lru_cache

from suanli.datafiles import read_rows
from suanli.errors import UnknownPlace


class PlaceKind(StrEnum):
    PROVINCE = "province"
    CITY = "city"
    CLUSTER = "cluster"


@dataclass(frozen=True, slots=True)
class Place:
    """A named point: a province (at its capital), a city or a data-centre cluster."""

    id: str
    kind: PlaceKind
    name_zh: str
    name_en: str
    province_zh: str
    province_en: str
    lat: float
    lon: float
    source: str

    @property
    def label(self) -> str:
        return f"{self.name_zh} {self.name_en}"


# Administrative suffixes users add: stripped before matching.
_ZH_SUFFIXES = (
    "维吾尔自治区",
    "壮族自治区",
    "回族自治区",
    "特别行政区",
    "自治区",
    "省",
    "市",
)
_EN_SUFFIXES = ("province", "city", "municipality", "autonomousregion", "sar", "sheng", "shi")


@lru_cache(maxsize=4096)  # pure, and called for every task a replay submits
def _key(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).strip().lower()
    for suffix in _ZH_SUFFIXES:
        if text.endswith(suffix) and len(text) > len(suffix) + 1:
            text = text[: -len(suffix)]
            break
    compact = re.sub(r"[^0-9a-z\u4e00-\u9fff]+", "", text)
    for suffix in _EN_SUFFIXES:
        if compact.endswith(suffix) and len(compact) > len(suffix) + 2:
            return compact[: -len(suffix)]
    return compact


def _place_id(name_en: str) -> str:
    return re.sub(r"[^A-Z0-9]+", "_", name_en.upper()).strip("_")


@cache
def all_places() -> tuple[Place, ...]:
    """Provinces, then capitals that differ from their province, other cities, then clusters."""
    provinces = read_rows("suanli.catalog", "provinces.csv")
    places: list[Place] = []
    for row in provinces:
        lat, lon = float(row["lat"]), float(row["lon"])
        places.append(
            Place(
                _place_id(row["province_en"]),
                PlaceKind.PROVINCE,
                row["province_zh"],
                row["province_en"],
                row["province_zh"],
                row["province_en"],
                lat,
                lon,
                row["source"],
            )
        )
    for row in provinces:
        if row["capital_zh"] != row["province_zh"]:
            places.append(
                Place(
                    _place_id(row["capital_en"]),
                    PlaceKind.CITY,
                    row["capital_zh"],
                    row["capital_en"],
                    row["province_zh"],
                    row["province_en"],
                    float(row["lat"]),
                    float(row["lon"]),
                    row["source"],
                )
            )
    province_en = {row["province_zh"]: row["province_en"] for row in provinces}
    for row in read_rows("suanli.catalog", "cities.csv"):
        places.append(
            Place(
                _place_id(row["city_en"]),
                PlaceKind.CITY,
                row["city_zh"],
                row["city_en"],
                row["province_zh"],
                province_en[row["province_zh"]],
                float(row["lat"]),
                float(row["lon"]),
                row["source"],
            )
        )
    for row in read_rows("suanli.catalog", "dc_clusters.csv"):
        places.append(
            Place(
                row["cluster_id"],
                PlaceKind.CLUSTER,
                row["name_zh"],
                row["name_en"],
                row["province_zh"],
                row["province_en"],
                float(row["lat"]),
                float(row["lon"]),
                row["source"],
            )
        )
    return tuple(places)


@cache
def _index() -> dict[str, Place]:
    """Name key -> place. Cluster ids win their exact id; names keep the first place listed."""
    index: dict[str, Place] = {}
    aliases = {
        row["province_zh"]: [a for a in row["aliases"].split(";") if a] + [row["short_zh"]]
        for row in read_rows("suanli.catalog", "provinces.csv")
    }
    city_aliases = {
        row["city_zh"]: [a for a in row["aliases"].split(";") if a]
        for row in read_rows("suanli.catalog", "cities.csv")
    }
    for place in all_places():
        if place.kind is PlaceKind.CLUSTER:
            index[_key(place.id)] = place
    for place in all_places():
        names = [place.id, place.name_zh, place.name_en]
        if place.kind is PlaceKind.PROVINCE:
            names += aliases.get(place.name_zh, [])
        elif place.kind is PlaceKind.CITY:
            names += city_aliases.get(place.name_zh, [])
        for name in names:
            index.setdefault(_key(name), place)
    return index


def find_place(name: str) -> Place:
    """Resolve a province, city or cluster name (Chinese or pinyin, any case, with suffixes)."""
    key = _key(name)
    index = _index()
    if key in index:
        return index[key]
    close = difflib.get_close_matches(key, list(index), n=8, cutoff=0.6)
    suggestions: list[str] = []
    for alias in close:
        label = index[alias].label
        if label not in suggestions:
            suggestions.append(label)
    raise UnknownPlace(name, suggestions[:5])
