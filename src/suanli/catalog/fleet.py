"""Fleets: sets of pools at sites, read from CSV, and the embedded illustrative demo fleet.

Owns `parse_fleet(text, source)`, which turns CSV rows `pool_id, site_id, device, count, free,
price_fen_per_device_hour` into `Pool`s on catalog sites with every bad cell reported by row and
column, and `demo_fleet()`, the fleet `make demo` uses.

The demo fleet is ILLUSTRATIVE: real device models from the catalog at the 10 real clusters,
with made-up counts. It is not a national statistic and is labelled so wherever it is shown.
"""

from __future__ import annotations

import csv
import io
from functools import cache

from suanli.catalog.sites import Pool, Site, clusters, find_site
from suanli.datafiles import read_rows
from suanli.errors import InvalidValue, SuanliError
from suanli.metering import find_device

FLEET_COLUMNS = ("pool_id", "site_id", "device", "count")
DEMO_FLEET_LABEL = "illustrative demo fleet (made-up counts, not national statistics)"


def _int_cell(row: dict[str, str], column: str, default: int | None) -> int | None:
    cell = (row.get(column) or "").strip()
    if not cell:
        return default
    try:
        return int(cell)
    except ValueError:
        raise InvalidValue(column, cell, "a whole number", "整数") from None


def _pool(row: dict[str, str], seen: set[str]) -> Pool:
    pool_id = row["pool_id"].strip()
    if not pool_id or pool_id in seen:
        raise InvalidValue("pool_id", pool_id, "a unique, non-empty id", "唯一且非空的 id")
    site = find_site(row["site_id"])
    device = find_device(row["device"])
    count = _int_cell(row, "count", None)
    if count is None:
        raise InvalidValue("count", "", "a whole number >= 1", "不小于 1 的整数")
    free = _int_cell(row, "free", count)
    price = _int_cell(row, "price_fen_per_device_hour", None)
    return Pool(pool_id, site.id, device, count, count if free is None else free, price)


def parse_rows(
    rows: list[dict[str, str]], source: str
) -> tuple[tuple[Site, ...], tuple[Pool, ...]]:
    """Pools from fleet rows; returns the sites they use (catalog order) and the pools.

    Any bad cell fails the whole fleet (nothing half-read) with `source:line` in the message.
    """
    if not rows:
        raise InvalidValue(source, "", "at least one pool row", "至少一行资源池")
    missing = [c for c in FLEET_COLUMNS if c not in rows[0]]
    if missing:
        raise InvalidValue(
            f"{source} header",
            ",".join(rows[0]),
            f"columns {', '.join(FLEET_COLUMNS)}",
            f"包含列 {', '.join(FLEET_COLUMNS)}",
        )
    pools: list[Pool] = []
    seen: set[str] = set()
    for line, row in enumerate(rows, start=2):  # line 1 is the header
        try:
            pools.append(_pool(row, seen))
        except SuanliError as error:
            raise SuanliError(
                f"{source}:{line}: {error.message_en}", f"{source} 第 {line} 行：{error.message_zh}"
            ) from error
        seen.add(pools[-1].id)
    used = {p.site_id for p in pools}
    return tuple(s for s in clusters() if s.id in used), tuple(pools)


def parse_fleet(text: str, source: str = "fleet") -> tuple[tuple[Site, ...], tuple[Pool, ...]]:
    """Parse fleet CSV text (see module docstring for the columns)."""
    rows = [
        {k.strip(): (v or "") for k, v in row.items() if k is not None}
        for row in csv.DictReader(io.StringIO(text))
    ]
    return parse_rows(rows, source)


@cache
def demo_fleet() -> tuple[tuple[Site, ...], tuple[Pool, ...]]:
    """The embedded illustrative fleet over the 10 national clusters."""
    rows = [dict(r) for r in read_rows("suanli.catalog", "demo_fleet.csv")]
    return parse_rows(rows, "demo_fleet.csv")
