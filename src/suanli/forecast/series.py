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
