"""Backtests by rolling origin: how `forecast` would have done on a series, against seasonal
naive.

At each origin (every `every_h` hours, the last at the series' end less one horizon) the
forecaster sees only the hours before the origin and forecasts the next `hours`. Per
origin, MASE is the mean absolute error over the horizon divided by the in-sample mean absolute
error of the seasonal-naive step (y_t - y_{t-24}) over the hours the model was fitted on; the
same scale serves the seasonal-naive forecast, so `ratio` (mean MASE of the model / that of
seasonal naive) is below 1 where the model does better. Coverage is the share of actual hours
inside the interval, over every origin and lead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from suanli.errors import InvalidValue
from suanli.forecast.model import (
    LEVEL,
    PERIOD_H,
    WINDOW_H,
    FloatArray,
    forecast,
    min_history_h,
    seasonal_naive,
)


@dataclass(frozen=True)
class Backtest:
    hours: int
    origins: int
    level: float
    mase: float  # the model's, mean over origins
    mase_seasonal_naive: float
    ratio: float  # mase / mase_seasonal_naive
    coverage: float  # share of actual hours inside the interval


def backtest(
    values: FloatArray,
    hours: int = 24,
    origins: int | None = None,
    every_h: int = 24,
    level: float = LEVEL,
    progress: Callable[[int, int], None] | None = None,
) -> Backtest:
    """`origins` forecasts of `hours` hours, `every_h` apart, ending at the series' end (None:
    as many as the series allows, the first with `min_history_h(hours)` hours behind it);
    `progress(done, total)` after each."""
    series = np.asarray(values, dtype=float)
    fit = (len(series) - hours - min_history_h(hours)) // max(every_h, 1) + 1
    if fit < 1:
        need = min_history_h(hours) + hours
        raise InvalidValue(
            "values",
            f"{len(series)} hours",
            f"at least {need} hours to backtest a {hours} h horizon",
            f"至少 {need} 小时（回测 {hours} 小时预测）",
        )
    if origins is None:
        origins = fit
    if origins < 1 or every_h < 1:
        raise InvalidValue(
            "origins" if origins < 1 else "every_h",
            origins if origins < 1 else every_h,
            "a whole number >= 1",
            "不小于 1 的整数",
        )
    last = len(series) - hours
    first = last - (origins - 1) * every_h
    if first < min_history_h(hours):
        raise InvalidValue(
            "origins",
            origins,
            f"at most {max(fit, 0)} for {len(series)} hours, a {hours} h horizon and an "
            f"origin every {every_h} h",
            f"不超过 {max(fit, 0)}",
        )
    model, naive, inside = [], [], 0
    for done, origin in enumerate(range(first, last + 1, every_h), start=1):
        history, actual = series[:origin], series[origin : origin + hours]
        window = history[-WINDOW_H:]
        scale = float(np.mean(np.abs(window[PERIOD_H:] - window[:-PERIOD_H])))
        scale = scale if scale > 0 else 1.0
        made = forecast(history, hours, level)
        model.append(float(np.mean(np.abs(actual - made.mean))) / scale)
        guess = seasonal_naive(history, hours)
        naive.append(float(np.mean(np.abs(actual - guess))) / scale)
        inside += int(np.count_nonzero((actual >= made.lower) & (actual <= made.upper)))
        if progress is not None:
            progress(done, origins)
    mase, base = float(np.mean(model)), float(np.mean(naive))
    return Backtest(
        hours=hours,
        origins=origins,
        level=level,
        mase=mase,
        mase_seasonal_naive=base,
        ratio=mase / base if base > 0 else float("inf"),
        coverage=inside / (origins * hours),
    )
