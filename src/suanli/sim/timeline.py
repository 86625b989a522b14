"""Thinning of the twin's timelines (one point per scheduling tick: 100k+ in a long run) for
charts: the report's and the console's.

Invariants of `thin`: it keeps at most `cap` points, in their order, the first and the LAST one
exactly (a cumulative series must end at the run's total), evenly spaced by index between.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypeVar

from suanli.errors import InvalidValue

T = TypeVar("T")


def thin(points: Sequence[T], cap: int) -> list[T]:
    """At most `cap` of `points` (`cap` >= 2): every step-th one from the first, and the last."""
    if cap < 2:
        raise InvalidValue("cap", cap, "a whole number >= 2", "不小于 2 的整数")
    if len(points) <= cap:
        return list(points)
    # indices 0, step, 2 step, ... below the last, then the last: ceil((n-1)/step) + 1 <= cap
    step = math.ceil((len(points) - 1) / (cap - 1))
    kept = list(points[: len(points) - 1 : step])
    kept.append(points[-1])
    return kept
