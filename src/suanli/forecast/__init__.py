"""Forecasts (预测): hourly load with prediction intervals, backtested on public series.

Pure: data in, values out; ships its own data (hourly series derived from public traces).
`forecast(history, horizon_h)` -> `Forecast`; `backtest(values, ...)` -> `Backtest`;
`public_series(id)` and `series_ids()` for the shipped series. See docs/forecast.md.
"""

from suanli.forecast.backtest import Backtest, backtest
from suanli.forecast.model import Forecast, forecast, min_history_h, seasonal_naive
from suanli.forecast.series import Series, public_series, series_ids

__all__ = [
    "Backtest",
    "Forecast",
    "Series",
    "backtest",
    "forecast",
    "min_history_h",
    "public_series",
    "seasonal_naive",
    "series_ids",
]
