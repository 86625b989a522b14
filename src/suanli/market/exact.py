"""Exact arithmetic for money: the one place where inputs become exact numbers and fen get rounded.

Every non-money input (a duration, a data size, a multiplier) enters as a `Decimal` through
`decimal()` — a float is converted with `Decimal(str(x))`, so 0.1 means one tenth, not the binary
double nearest to it — and the arithmetic then runs on `fractions.Fraction`, which is exact (no
28-digit context, no rounding of 1/3600). `round_fen()` is the only rounding: half to even, once
per money amount. `fen()` (the ledger's, re-exported) admits a money amount: an `int` (never a
bool or a float). Invariant: nothing here returns a float.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from fractions import Fraction

from suanli.errors import InvalidValue
from suanli.ledger.book import fen  # the ledger's rule for a money amount

__all__ = ["BP_PER_UNIT", "basis_points", "decimal", "exact", "fen", "round_fen"]

BP_PER_UNIT = 10_000  # basis points in 1 (100%)


def decimal(field: str, value: object) -> Decimal:
    """`value` as a finite Decimal: Decimal, int or str as is, float through `str()`; no bool."""
    if isinstance(value, bool) or not isinstance(value, Decimal | int | float | str):
        raise InvalidValue(field, value, "a finite number", "有限数")
    try:
        number = Decimal(str(value)) if isinstance(value, float | str) else Decimal(value)
    except InvalidOperation:
        raise InvalidValue(field, value, "a finite number", "有限数") from None
    if not number.is_finite():
        raise InvalidValue(field, value, "a finite number", "有限数")
    return number


def exact(field: str, value: object, *, low: Decimal | None = None) -> Fraction:
    """`decimal(value)` as an exact Fraction, refused below `low` (when given)."""
    number = decimal(field, value)
    if low is not None and number < low:
        raise InvalidValue(field, value, f"a finite number >= {low}", f"不小于 {low} 的有限数")
    return Fraction(number)


def basis_points(field: str, value: object) -> int:
    """An int in 0..10000 (bool refused)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= BP_PER_UNIT:
        raise InvalidValue(
            field, value, "whole basis points in [0, 10000]", "0 到 10000 的整数基点"
        )
    return value


def round_fen(amount: Fraction) -> int:
    """The nearest whole fen, ties to even (Fraction's `round` is exact and half-to-even)."""
    return round(amount)
