"""Hourly forecasts with prediction intervals: `forecast(history, hours) -> Forecast`.

The point forecast is a weighted combination of four forecasters (COMPONENTS):

- naive: the last hour carried forward (cluster load is persistent: what is busy now is
  mostly busy in an hour);
- seasonal naive: the same hour one period (24 h) earlier;
- Holt-Winters: additive level, damped trend and daily season, fitted by statsmodels'
  `ExponentialSmoothing` on the last WINDOW_H hours;
- climatology: the mean of the same hour of the day over the last CLIMATE_DAYS days of that
  window (what is left of yesterday's news a few days on).

The four are run at up to CALIBRATION_ORIGINS earlier origins inside the history (every
CALIBRATION_EVERY_H hours, the Holt-Winters parameters of the latest fit held fixed). Each
block of BLOCK_H leads gets its own weights (quarters summing to 1, WEIGHTS): those whose
combination erred least there at those leads. So a persistent series leans on naive for the
next hours, a strongly daily one on seasonal naive, and a day or two ahead the forecast moves
toward the climatology as far as yesterday's anomaly stopped lasting in the history (a day's
weather that persists half into the next gets half seasonal naive, half climatology). The
interval is
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
CLIMATE_DAYS = 28
BLOCK_H = 6  # leads that share one set of weights
COMPONENTS = ("naive", "seasonal_naive", "holt_winters", "climatology")
BAND_H = 3
LEVEL = 0.8
MAX_HORIZON_H = 7 * 24
METHOD = (
    "naive, seasonal naive, Holt-Winters (damped trend, daily season) and the climatology, "
    f"weighted by lead ({BLOCK_H} h blocks)"
)


@dataclass(frozen=True)
class LeadWeights:
    """The weights of the COMPONENTS at leads `first_h` to `last_h` (1 is the first forecast
    hour), summing to 1."""

    first_h: int
    last_h: int
    weights: tuple[float, float, float, float]  # in the order of COMPONENTS

    def named(self) -> dict[str, float]:
        return dict(zip(COMPONENTS, self.weights, strict=True))


@dataclass(frozen=True)
class Forecast:
    """`horizon` hourly values after the history: the point forecast and the interval that
    should hold the actual value with probability `level`."""

    mean: FloatArray
    lower: FloatArray
    upper: FloatArray
    level: float
    method: str
    weights: tuple[LeadWeights, ...]  # by blocks of leads, first to last
    calibration_errors: int  # the errors each lead's interval was drawn from (at least)


def min_history_h(hours: int) -> int:
    """The shortest history `forecast` takes: three periods to fit on, plus one horizon to
    measure a first calibration error."""
    return 3 * PERIOD_H + hours


def seasonal_naive(history: FloatArray, hours: int, period_h: int = PERIOD_H) -> FloatArray:
    """The last `period_h` hours repeated over the horizon."""
    last = np.asarray(history, dtype=float)[-period_h:]
    return np.resize(last, hours)


def climatology(history: FloatArray, hours: int, days: int = CLIMATE_DAYS) -> FloatArray:
    """The `hours` hours after `history`, each the mean of the same hour of the day over the
    last `days` whole periods of `history` (fewer when it is shorter)."""
    values = np.asarray(history, dtype=float)
    days = min(days, len(values) // PERIOD_H)
    # the last `days` whole periods start at the phase of the first hour after the history
    by_hour = values[len(values) - days * PERIOD_H :].reshape(days, PERIOD_H).mean(axis=0)
    return np.resize(by_hour, hours)


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
    """The four forecasts (COMPONENTS; rows of a (4, hours) array) from the last WINDOW_H hours
    of `history`, and the Holt-Winters parameters used (fitted when `params` is None; unchanged
    when the window is flat)."""
    window = history[-WINDOW_H:]
    naive = np.full(hours, window[-1])
    seasonal = seasonal_naive(window, hours)
    climate = climatology(window, hours)
    if np.ptp(window) == 0:  # flat: every forecaster says the same, and HW cannot fit it
        return np.stack([naive, seasonal, naive, climate]), params
    fit = _holt_winters(window, hours, params)
    if params is None:
        params = {name: float(fit.params[name]) for name in FITTED}
    smoothed = np.asarray(fit.forecast(hours), dtype=float)
    if not np.all(np.isfinite(smoothed)):
        smoothed = seasonal
    return np.stack([naive, seasonal, smoothed, climate]), params


# the weights the combination may take: every split of 1 into quarters among the four
WEIGHTS = np.array(
    [
        (a / 4, b / 4, c / 4, (4 - a - b - c) / 4)
        for a in range(5)
        for b in range(5 - a)
        for c in range(5 - a - b)
    ],
    dtype=float,
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
    """The forecast from the components' `latest` (4, hours) with `weights` (hours, 4)."""
    mean = np.maximum(np.einsum("hc,ch->h", weights, latest), 0.0)
    blocks = tuple(
        LeadWeights(first + 1, min(first + BLOCK_H, len(weights)), _four(weights[first]))
        for first in range(0, len(weights), BLOCK_H)
    )
    return Forecast(
        mean=mean,
        lower=np.maximum(mean - half, 0.0),
        upper=mean + half,
        level=level,
        method=METHOD,
        weights=blocks,
        calibration_errors=least,
    )


def _four(row: FloatArray) -> tuple[float, float, float, float]:
    return (float(row[0]), float(row[1]), float(row[2]), float(row[3]))


@dataclass(frozen=True)
class Fitted:
    """A forecaster fitted once (`fit`) and applied to later histories (`predict`) without
    fitting again: the Holt-Winters parameters, the combination's weights and the interval's
    half-widths at each lead are those of the fit, as a model refreshed now and then is run.
    `forecast` is the forecast at the end of the history it was fitted on."""

    hours: int
    level: float
    params: dict[str, Any] | None
    weights: FloatArray  # (hours, 4): each lead's weights of the COMPONENTS
    half: FloatArray
    least: int
    forecast: Forecast

    def predict(self, history: FloatArray) -> Forecast:
        """The next `hours` hours after `history` (hourly, oldest first), with this fit."""
        values = _check(history, self.hours, self.level)
        latest, _ = _components(values, self.hours, self.params)
        return _forecast(latest, self.weights, self.half, self.level, self.least)

    def ahead(self, history: FloatArray, hours: int) -> FloatArray:
        """The point forecast of the `hours` hours after `history`: this fit's (its
        horizon), then past it the climatology (`climatology`), so that a long window is not
        priced on the horizon repeated."""
        near = self.predict(history).mean[:hours]
        if hours <= len(near):
            return near
        return np.concatenate((near, climatology(history, hours)[len(near) :]))


def fit(history: FloatArray, hours: int = 24, level: float = LEVEL) -> Fitted:
    """Fit the forecaster on `history` (hourly, oldest first) for a horizon of `hours`: the
    Holt-Winters parameters on the latest window, then each block of leads' weights and the
    interval from the errors at up to CALIBRATION_ORIGINS earlier origins (the module
    docstring says how)."""
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
    components = np.array(past)  # (origins, 4, hours)
    truth = np.array(actual)  # (origins, hours)
    # in each block of leads, the weights whose combination erred least at the earlier origins
    combined = np.einsum("wc,och->woh", WEIGHTS, components)  # (weights, origins, hours)
    misses = np.abs(combined - truth[None])
    weights = np.empty((hours, len(COMPONENTS)))
    table = np.empty(truth.shape)  # (origins, hours): the chosen combination's errors
    for first in range(0, hours, BLOCK_H):
        block = slice(first, first + BLOCK_H)
        best = int(np.argmin(misses[:, :, block].mean(axis=(1, 2))))
        weights[block] = WEIGHTS[best]
        table[:, block] = misses[best, :, block]
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
