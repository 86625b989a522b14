"""The public hourly series shipped with `suanli.forecast` (see data/SOURCES.md)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from suanli.datafiles import read_rows
from suanli.errors import UnknownSeries

PACKAGE = "suanli.forecast"


@dataclass(frozen=True)
class Series:
    id: str
    name: str
    name_zh: str
    unit: str
    first_hour: str
    source: str
    licence: str
    values: np.ndarray  # hourly, oldest first, no gaps


def hourly_held(
    amount: np.ndarray, start_h: np.ndarray, end_h: np.ndarray, hours: int
) -> np.ndarray:
    """Mean devices held in each of `hours` whole hours: each interval [start_h, end_h) (hours
    from the first hour's start) counts its `amount` for the part of each hour it covers."""
    start = np.clip(np.asarray(start_h, dtype=float), 0.0, hours)
    end = np.clip(np.asarray(end_h, dtype=float), 0.0, hours)
    keep = end > start
    a, start, end = np.asarray(amount, dtype=float)[keep], start[keep], end[keep]
    first, last = np.floor(start).astype(np.int64), np.floor(end).astype(np.int64)
    held = np.zeros(hours + 1)
    within = first == last  # inside one hour
    np.add.at(held, first[within], a[within] * (end - start)[within])
    span = ~within
    np.add.at(held, first[span], a[span] * (first[span] + 1 - start[span]))  # the first part
    np.add.at(held, last[span], a[span] * (end[span] - last[span]))  # the last part
    whole = np.zeros(hours + 2)  # the hours between, by differences
    np.add.at(whole, first[span] + 1, a[span])
    np.add.at(whole, last[span], -a[span])
    return (held + np.cumsum(whole)[: hours + 1])[:hours]


def series_ids() -> list[str]:
    return [row["id"] for row in read_rows(PACKAGE, "series.csv")]


def public_series(series_id: str) -> Series:
    """One shipped series by id; UnknownSeries (with the ids) for any other."""
    rows = {row["id"]: row for row in read_rows(PACKAGE, "series.csv")}
    if series_id not in rows:
        raise UnknownSeries(series_id, sorted(rows))
    row = rows[series_id]
    hours = read_rows(PACKAGE, f"{series_id}.csv")
    values = np.array([float(h["value"]) for h in hours])
    return Series(
        id=series_id,
        name=row["name"],
        name_zh=row["name_zh"],
        unit=row["unit"],
        first_hour=row["first_hour"],
        source=row["source"],
        licence=row["licence"],
        values=values,
    )
