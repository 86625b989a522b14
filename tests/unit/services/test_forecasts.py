"""`services.forecasts.site_forecast`: one site's forecast from its hourly history, with the last
72 actual hours beside it, each with the hour it started (the history ends at the current hour,
where the forecast starts). Real forecaster, hand-made histories."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from suanli.forecast import min_history_h
from suanli.services.forecasts import ACTUAL_H, site_forecast

NOW = datetime(2026, 3, 9, 14, tzinfo=UTC)  # the current hour: the first forecast hour
HOUR = timedelta(hours=1)


def test_the_last_72_hours_come_with_their_hours_beside_the_forecast() -> None:
    hours = 120
    history = np.array([float((NOW - (hours - k) * HOUR).hour % 4) for k in range(hours)])
    made = site_forecast("s", history, NOW, 24, 0.8)
    assert made.unavailable is None and len(made.mean) == len(made.lower) == 24
    assert ACTUAL_H == 72 and len(made.actual) == 72
    assert made.actual[0] == (NOW - 72 * HOUR, float((NOW - 72 * HOUR).hour % 4))
    assert made.actual[-1] == (NOW - HOUR, float((NOW - HOUR).hour % 4))  # the last whole hour
    assert [hour for hour, _ in made.actual] == [NOW - (72 - k) * HOUR for k in range(72)]
    assert [value for _, value in made.actual] == history[-72:].tolist()
    assert [value for _, value in made.actual[-24:]] == made.history  # the same hours


def test_a_short_history_has_its_actual_hours_and_no_forecast() -> None:
    history = np.array([0.0, 1.5, 2.25, 1.0004])
    made = site_forecast("s", history, NOW, 24, 0.8)
    assert made.mean == [] and f"needs {min_history_h(24)} whole hours" in str(made.unavailable)
    assert made.actual == [
        (NOW - 4 * HOUR, 0.0),
        (NOW - 3 * HOUR, 1.5),
        (NOW - 2 * HOUR, 2.25),
        (NOW - HOUR, 1.0),  # rounded to 3 places, as every figure of the answer
    ]
    assert site_forecast("s", np.array([]), NOW, 24, 0.8).actual == []  # registered this hour
