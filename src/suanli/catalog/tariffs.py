"""Time-of-use (分时电价) schedules from the shipped `tou_tariffs.csv`.

Owns the rules that turn a province's period rows into a `TouSchedule`: a read-only 12 x 48 array
(month 0..11, half-hour slot 0..47) of the multiplier of the *energy* price over the flat price.
For each month only the rows of the latest `year` that covers that month are used (so 浙江's 2026
rules replace the superseded 2024 ones). Every slot starts at 1.0 (flat); valley, flat and peak
rows are applied in that order, then `critical` rows override whatever their slots hold. Hours
`a-b` run from a up to b on the local clock, in whole or half hours. Invariants: every slot is
one of the multipliers of the rows used, or 1.0; a row with a blank multiplier sets nothing and
marks the schedule `partial`, so a schedule that is not fully known always says so; `quality` is
the lowest quality among the rows used. A malformed row raises `ValueError` naming the row.
The plain name 内蒙古 means the Mengxi grid rows (the Horinger cluster is on the Mengxi grid).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np
import numpy.typing as npt

from suanli.datafiles import read_rows

MONTHS = 12
SLOTS_PER_DAY = 48
SLOTS_PER_HOUR = 2

# Application order: a later period overwrites an earlier one in the slots both cover.
_PERIOD_ORDER = {"valley": 0, "flat": 1, "peak": 2, "critical": 3}
_QUALITY_RANK = {"low": 0, "medium": 1, "high": 2}
_ALIASES = {"内蒙古": "内蒙古（蒙西）"}  # Horinger (和林格尔) is on the Mengxi grid

_FILE = "tou_tariffs.csv"

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True, eq=False)
class TouSchedule:
    """A province's energy-price multipliers over flat, per month and half-hour, with provenance.

    `multipliers[m, s]` is month m+1 (0..11), local time s/2 hours (0..47). Equality and hash
    cover the array as well as the provenance fields.
    """

    province_zh: str
    multipliers: FloatArray
    year: int  # the latest rule year used (the rows of each month come from one year)
    quality: str  # the lowest quality of the rows used: "high" | "medium" | "low"
    partial: bool  # some row used had a blank multiplier; its slots were left at flat (1.0)
    source: str

    def __post_init__(self) -> None:
        array = np.array(self.multipliers, dtype=np.float64)  # a copy: the caller's stays theirs
        if array.shape != (MONTHS, SLOTS_PER_DAY):
            raise ValueError(
                f"{self.province_zh}: multipliers must have shape "
                f"({MONTHS}, {SLOTS_PER_DAY}), got {array.shape}"
            )
        if not (np.isfinite(array).all() and (array > 0).all()):
            raise ValueError(f"{self.province_zh}: every multiplier must be finite and > 0")
        array.flags.writeable = False
        object.__setattr__(self, "multipliers", array)

    def _key(self) -> tuple[str, int, str, bool, str]:
        return (self.province_zh, self.year, self.quality, self.partial, self.source)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TouSchedule):
            return NotImplemented
        return self._key() == other._key() and bool(
            np.array_equal(self.multipliers, other.multipliers)
        )

    def __hash__(self) -> int:
        return hash((self._key(), self.multipliers.tobytes()))

    def hourly(self, month: int) -> FloatArray:
        """The 24 hourly multipliers of `month` (1..12): the mean of each hour's two slots."""
        row = self.multipliers[_month_index(month)]
        return np.asarray(row.reshape(24, SLOTS_PER_HOUR).mean(axis=1), dtype=np.float64)

    def at(self, month: int, hour: float) -> float:
        """The multiplier in `month` (1..12) at local time `hour` (0 <= hour < 24)."""
        if not 0 <= hour < 24:
            raise ValueError(f"hour must be in [0, 24), got {hour!r}")
        slot = math.floor(hour * SLOTS_PER_HOUR)
        return float(self.multipliers[_month_index(month), slot])


def _month_index(month: int) -> int:
    if not 1 <= month <= MONTHS:
        raise ValueError(f"month must be 1..12, got {month!r}")
    return month - 1


def _where(row: Mapping[str, str], place: str) -> str:
    """'tou_tariffs.csv line 37 (浙江 peak 2024, months 2-6,9-11)'."""
    return (
        f"{place} ({row.get('province_zh', '?')} {row.get('period', '?')} "
        f"{row.get('year', '?')}, months {row.get('months', '?')})"
    )


def _ranges(spec: str, where: str, what: str) -> list[tuple[float, float]]:
    """'10-12,14-19' -> [(10, 12), (14, 19)]; '7' -> [(7, 7)]; raises on anything else."""
    parts: list[tuple[float, float]] = []
    for token in spec.split(","):
        text = token.strip()
        low, sep, high = text.partition("-")
        try:
            bounds = (float(low), float(high if sep else low))
        except ValueError:
            raise ValueError(f"{where}: malformed {what} {spec!r} (at {text!r})") from None
        parts.append(bounds)
    return parts


def _hour_slots(spec: str, where: str) -> npt.NDArray[np.bool_]:
    """'22-24,0-6' -> a boolean mask over the 48 half-hour slots it covers."""
    mask = np.zeros(SLOTS_PER_DAY, dtype=np.bool_)
    for start, end in _ranges(spec, where, "hours"):
        first, stop = start * SLOTS_PER_HOUR, end * SLOTS_PER_HOUR
        if not (first.is_integer() and stop.is_integer() and 0 <= first < stop <= SLOTS_PER_DAY):
            raise ValueError(
                f"{where}: malformed hours {spec!r}: each window must be a-b in whole or half "
                f"hours with 0 <= a < b <= 24 (split a window across midnight as '22-24,0-6')"
            )
        mask[int(first) : int(stop)] = True
    return mask


def _months(spec: str, where: str) -> npt.NDArray[np.bool_]:
    """'2-6,10-11' -> a boolean mask over the 12 months it covers."""
    mask = np.zeros(MONTHS, dtype=np.bool_)
    for first, last in _ranges(spec, where, "months"):
        if not (first.is_integer() and last.is_integer() and 1 <= first <= last <= MONTHS):
            raise ValueError(
                f"{where}: malformed months {spec!r}: expected months 1..12 as 'a', 'a-b' "
                f"(a <= b) or a comma list of them"
            )
        mask[int(first) - 1 : int(last)] = True
    return mask


@dataclass(frozen=True, slots=True, eq=False)
class _Rule:
    """One parsed row: where it applies, what it sets (None = blank), and its provenance."""

    number: int
    period: str
    year: int
    months: npt.NDArray[np.bool_]
    slots: npt.NDArray[np.bool_]
    multiplier: float | None
    quality: str
    source: str


def _rule(row: Mapping[str, str], number: int, place: str) -> _Rule:
    where = _where(row, place)
    period = row.get("period", "")
    quality = row.get("quality", "")
    cell = row.get("multiplier_vs_flat", "")
    if period not in _PERIOD_ORDER:
        raise ValueError(f"{where}: unknown period {period!r}; expected {', '.join(_PERIOD_ORDER)}")
    if quality not in _QUALITY_RANK:
        raise ValueError(f"{where}: unknown quality {quality!r}; expected low, medium or high")
    try:
        year = int(row.get("year", ""))
        multiplier = float(cell) if cell else None
    except ValueError:
        raise ValueError(
            f"{where}: malformed year {row.get('year')!r} or multiplier {cell!r}"
        ) from None
    if multiplier is not None and not (math.isfinite(multiplier) and multiplier > 0):
        raise ValueError(f"{where}: multiplier must be finite and > 0, got {cell!r}")
    return _Rule(
        number=number,
        period=period,
        year=year,
        months=_months(row.get("months", ""), where),
        slots=_hour_slots(row.get("hours", ""), where),
        multiplier=multiplier,
        quality=quality,
        source=row.get("source", ""),
    )


def schedule_from_rows(province_zh: str, rows: Sequence[Mapping[str, str]]) -> TouSchedule:
    """The schedule that `rows` (one province's, in `tou_tariffs.csv` columns) describe."""
    return _build(province_zh, [(n, row, f"row {n}") for n, row in enumerate(rows, start=1)])


def _build(province_zh: str, numbered: Sequence[tuple[int, Mapping[str, str], str]]) -> TouSchedule:
    """`numbered`: (row order, row, where it came from, for messages)."""
    rules = [_rule(row, number, place) for number, row, place in numbered]
    if not rules:
        raise ValueError(f"{province_zh}: no tariff rows")
    multipliers = np.ones((MONTHS, SLOTS_PER_DAY), dtype=np.float64)
    used: dict[int, _Rule] = {}  # by row number, so each row counts once across months
    for month in range(MONTHS):
        covering = [r for r in rules if r.months[month]]
        if not covering:
            continue
        latest = max(r.year for r in covering)
        # Period order, then row order: critical last, so it overrides; ties go to the later row.
        chosen = sorted(
            (r for r in covering if r.year == latest),
            key=lambda r: (_PERIOD_ORDER[r.period], r.number),
        )
        for rule in chosen:
            used[rule.number] = rule
            if rule.multiplier is not None:
                multipliers[month, rule.slots] = rule.multiplier
    kept = [used[n] for n in sorted(used)]
    return TouSchedule(
        province_zh=province_zh,
        multipliers=multipliers,
        year=max(r.year for r in kept),
        quality=min((r.quality for r in kept), key=_QUALITY_RANK.__getitem__),
        partial=any(r.multiplier is None for r in kept),
        source=" | ".join(dict.fromkeys(r.source for r in kept)),
    )


@cache
def _rows_by_province() -> dict[str, tuple[tuple[int, dict[str, str], str], ...]]:
    """Province -> its rows with their line in the file (header: line 1; no cell spans lines)."""
    grouped: dict[str, list[tuple[int, dict[str, str], str]]] = {}
    for line, row in enumerate(read_rows("suanli.catalog", _FILE), start=2):
        grouped.setdefault(row["province_zh"], []).append((line, row, f"{_FILE} line {line}"))
    return {name: tuple(rows) for name, rows in grouped.items()}


def tou_provinces() -> tuple[str, ...]:
    """The province names with time-of-use rows, exactly as in the file, in file order."""
    return tuple(_rows_by_province())


@cache
def _schedule(name: str) -> TouSchedule:
    return _build(name, _rows_by_province()[name])


@cache
def tou_schedule(province_zh: str) -> TouSchedule | None:
    """The province's schedule, or None when the file has no rows for it (内蒙古 = 蒙西)."""
    name = _ALIASES.get(province_zh.strip(), province_zh.strip())
    return _schedule(name) if name in _rows_by_province() else None
