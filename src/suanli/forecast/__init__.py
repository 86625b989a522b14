"""Forecasts (预测): hourly load with prediction intervals, backtested on public series.

Pure: data in, values out; ships its own data (hourly series derived from public traces).
`forecast(history, horizon_h)` -> `Forecast`; `fit(history, horizon_h)` -> `Fitted`, whose
`predict(later_history)` forecasts again without fitting; `backtest(values, ...)` -> `Backtest`;
`public_series(id)` and `series_ids()` for the shipped series. See docs/forecast.md.
"""

from suanli.forecast.backtest import Backtest, backtest
from suanli.forecast.model import (
    Fitted,
    Forecast,
    fit,
    forecast,
    min_history_h,
    seasonal_naive,
)
from suanli.forecast.series import Series, public_series, series_ids

__all__ = [
    "Backtest",
    "Fitted",
    "Forecast",
    "Series",
    "backtest",
    "fit",
    "forecast",
    "min_history_h",
    "public_series",
    "seasonal_naive",
    "series_ids",
]
