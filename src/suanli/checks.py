"""Argument checks shared by the pure core: finite numbers inside a documented range.

Each check returns the value unchanged or raises `InvalidValue` naming the field, the value and
the accepted range (in English and Chinese). NaN and infinities are always refused.
"""

from __future__ import annotations

import math

from suanli.errors import InvalidValue


def positive(field: str, value: float) -> float:
    """value > 0 and finite."""
    if not _finite(value) or value <= 0:
        raise InvalidValue(field, value, "a finite number > 0", "大于 0 的有限数")
    return value


def non_negative(field: str, value: float) -> float:
    """value >= 0 and finite."""
    if not _finite(value) or value < 0:
        raise InvalidValue(field, value, "a finite number >= 0", "不小于 0 的有限数")
    return value


def in_range(field: str, value: float, low: float, high: float, *, low_open: bool = False) -> float:
    """low <= value <= high (low < value when low_open), finite."""
    too_low = value <= low if low_open else value < low
    if not _finite(value) or too_low or value > high:
        bracket = "(" if low_open else "["
        span = f"{bracket}{low:g}, {high:g}]"
        raise InvalidValue(field, value, f"a number in {span}", f"区间 {span} 内的数")
    return value


def at_least(field: str, value: float, low: float) -> float:
    """value >= low, finite."""
    if not _finite(value) or value < low:
        raise InvalidValue(field, value, f"a finite number >= {low:g}", f"不小于 {low:g} 的有限数")
    return value


def count(field: str, value: int) -> int:
    """A whole number of devices >= 1 (bool refused)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidValue(field, value, "a whole number >= 1", "不小于 1 的整数")
    return value


def _finite(value: float) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
