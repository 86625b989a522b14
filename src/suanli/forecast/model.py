"""Hourly forecasts with prediction intervals: `forecast(history, hours) -> Forecast`.

The point forecast is a weighted combination of three forecasters:

- naive: the last hour carried forward (cluster load is persistent: what is busy now is
  mostly busy in an hour);
- seasonal naive: the same hour one period (24 h) earlier;
- Holt-Winters: additive level, damped trend and daily season, fitted by statsmodels'
  `ExponentialSmoothing` on the last WINDOW_H hours.

The three are run at up to CALIBRATION_ORIGINS earlier origins inside the history (every
CALIBRATION_EVERY_H hours, the Holt-Winters parameters of the latest fit held fixed). The
weights (quarters summing to 1, WEIGHTS) are those whose combination erred least there, so a
persistent series leans on naive and a strongly daily one on seasonal naive. The interval is
split-conformal on the same errors: at each lead, the absolute errors of the chosen combination
at leads within BAND_H hours of it give the half-width, the ceil((n + 1) x level)-th smallest of
those n errors. Values are clipped at 0 (load is never negative).

Why statsmodels: it is the maintained reference implementation of exponential smoothing in
Python (with SciPy and NumPy, which the project already has), and fits a 672-hour window in
about a tenth of a second; statsforecast would add numba and its compile times for no gain at
these sizes.

Pure: no I/O, no clock. The history is hourly and complete (no gaps); its last value is the
hour just before the first forecast hour.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from suanli import checks
from suanli.errors import InvalidValue

FloatArray = np.ndarray
PERIOD_H = 24
WINDOW_H = 28 * 24  # the hours Holt-Winters is fitted on
CALIBRATION_ORIGINS = 56  # 28 days of origins, 12 h apart
CALIBRATION_EVERY_H = 12
BAND_H = 3
LEVEL = 0.8
MAX_HORIZON_H = 7 * 24
METHOD = "naive, seasonal naive and Holt-Winters (damped trend, daily season), weighted"


@dataclass(frozen=True)
class Forecast:
    """`horizon` hourly values after the history: the point forecast and the interval that
    should hold the actual value with probability `level`."""

    mean: FloatArray
    lower: FloatArray
    upper: FloatArray
    level: float
    method: str
    weights: tuple[float, float, float]  # of naive, seasonal naive and Holt-Winters
    calibration_errors: int  # the errors each lead's interval was drawn from (at least)


def min_history_h(hours: int) -> int:
    """The shortest history `forecast` takes: three periods to fit on, plus one horizon to
    measure a first calibration error."""
    return 3 * PERIOD_H + hours


def seasonal_naive(history: FloatArray, hours: int, period_h: int = PERIOD_H) -> FloatArray:
    """The last `period_h` hours repeated over the horizon."""
    last = np.asarray(history, dtype=float)[-period_h:]
    return np.resize(last, hours)


def _holt_winters(history: FloatArray, hours: int, params: dict[str, Any] | None) -> Any:
    from statsmodels.tsa.holtwinters import ExponentialSmoothing

    model = ExponentialSmoothing(
        history,
        trend="add",
        damped_trend=True,
        seasonal="add",
        seasonal_periods=PERIOD_H,
        initialization_method="heuristic",
    )
    with warnings.catch_warnings():  # convergence notes on flat stretches: the fit still holds
        warnings.simplefilter("ignore")
        if params is None:
            return model.fit()
        return model.fit(optimized=False, **params)


FITTED = ("smoothing_level", "smoothing_trend", "smoothing_seasonal", "damping_trend")


def _components(
    history: FloatArray, hours: int, params: dict[str, Any] | None
) -> tuple[FloatArray, dict[str, Any] | None]:
    """The three forecasts (naive, seasonal naive, Holt-Winters; rows of a (3, hours) array)
    from the last WINDOW_H hours of `history`, and the Holt-Winters parameters used (fitted
    when `params` is None; unchanged when the window is flat)."""
    window = history[-WINDOW_H:]
    naive = np.full(hours, window[-1])
    seasonal = seasonal_naive(window, hours)
    if np.ptp(window) == 0:  # flat: every forecaster says the same, and HW cannot fit it
        return np.stack([naive, seasonal, naive]), params
    fit = _holt_winters(window, hours, params)
    if params is None:
        params = {name: float(fit.params[name]) for name in FITTED}
    smoothed = np.asarray(fit.forecast(hours), dtype=float)
    if not np.all(np.isfinite(smoothed)):
        smoothed = seasonal
    return np.stack([naive, seasonal, smoothed]), params


# the weights the combination may take: every split of 1 into quarters among the three
WEIGHTS = np.array(
    [(a / 4, b / 4, (4 - a - b) / 4) for a in range(5) for b in range(5 - a)], dtype=float
)


def _check(history: FloatArray, hours: int, level: float) -> FloatArray:
    whole = isinstance(hours, int | np.integer) and not isinstance(hours, bool)
    if not whole or not 1 <= hours <= MAX_HORIZON_H:
        raise InvalidValue(
            "hours",
            hours,
            f"whole hours in [1, {MAX_HORIZON_H}]",
            f"[1, {MAX_HORIZON_H}] 小时",
        )
    checks.in_range("level", level, 0.0, 1.0, low_open=True)
    if level >= 1.0:
        raise InvalidValue("level", level, "a share below 1", "小于 1 的比例")
    values = np.asarray(history, dtype=float)
    if values.ndim != 1 or len(values) < min_history_h(hours):
        need = min_history_h(hours)
        raise InvalidValue(
            "history",
            f"{values.size} hours",
            f"at least {need} hourly values for a {hours} h horizon",
            f"至少 {need} 个小时值（预测 {hours} 小时）",
        )
    if not np.all(np.isfinite(values)):
        first = int(np.flatnonzero(~np.isfinite(values))[0])
        raise InvalidValue(
            "history", f"hour {first}", "finite numbers (fill gaps first)", "有限数（请先补齐缺失）"
        )
    return values


def _forecast(
    latest: FloatArray, weights: FloatArray, half: FloatArray, level: float, least: int
) -> Forecast:
    mean = np.maximum(weights @ latest, 0.0)
    return Forecast(
        mean=mean,
        lower=np.maximum(mean - half, 0.0),
        upper=mean + half,
        level=level,
        method=METHOD,
        weights=(float(weights[0]), float(weights[1]), float(weights[2])),
        calibration_errors=least,
    )


@dataclass(frozen=True)
class Fitted:
    """A forecaster fitted once (`fit`) and applied to later histories (`predict`) without
    fitting again: the Holt-Winters parameters, the combination's weights and the interval's
    half-widths at each lead are those of the fit, as a model refreshed now and then is run.
    `forecast` is the forecast at the end of the history it was fitted on."""

    hours: int
    level: float
    params: dict[str, Any] | None
    weights: FloatArray
    half: FloatArray
    least: int
    forecast: Forecast

    def predict(self, history: FloatArray) -> Forecast:
        """The next `hours` hours after `history` (hourly, oldest first), with this fit."""
        values = _check(history, self.hours, self.level)
        latest, _ = _components(values, self.hours, self.params)
        return _forecast(latest, self.weights, self.half, self.level, self.least)


def fit(history: FloatArray, hours: int = 24, level: float = LEVEL) -> Fitted:
    """Fit the forecaster on `history` (hourly, oldest first) for a horizon of `hours`: the
    Holt-Winters parameters on the latest window, then the weights and the interval from the
    errors at up to CALIBRATION_ORIGINS earlier origins (the module docstring says how)."""
    values = _check(history, hours, level)
    latest, params = _components(values, hours, None)
    past, actual = [], []
    for k in range(CALIBRATION_ORIGINS):
        origin = len(values) - hours - k * CALIBRATION_EVERY_H
        if origin < 3 * PERIOD_H:
            break
        made, _ = _components(values[:origin], hours, params)
        past.append(made)
        actual.append(values[origin : origin + hours])
    components = np.array(past)  # (origins, 3, hours)
    truth = np.array(actual)  # (origins, hours)
    # the weights whose combination erred least at the earlier origins
    combined = np.einsum("wc,och->woh", WEIGHTS, components)  # (weights, origins, hours)
    misses = np.abs(combined - truth[None])
    best = int(np.argmin(misses.mean(axis=(1, 2))))
    weights, table = WEIGHTS[best], misses[best]
    half = np.empty(hours)
    least = math.inf
    for lead in range(hours):
        pooled = np.sort(table[:, max(0, lead - BAND_H) : lead + BAND_H + 1].ravel())
        rank = min(len(pooled), math.ceil((len(pooled) + 1) * level)) - 1
        half[lead] = pooled[rank]
        least = min(least, len(pooled))
    return Fitted(
        hours,
        level,
        params,
        weights,
        half,
        int(least),
        _forecast(latest, weights, half, level, int(least)),
    )


def forecast(history: FloatArray, hours: int = 24, level: float = LEVEL) -> Forecast:
    """The next `hours` hours after `history` (hourly, oldest first), with the interval of
    probability `level` (`fit` on the history, then its forecast)."""
    return fit(history, hours, level).forecast
