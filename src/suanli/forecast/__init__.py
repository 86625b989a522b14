"""Forecasts (预测): hourly load with prediction intervals, backtested on public series.

Pure: data in, values out; ships its own data (hourly series derived from public traces).
`forecast(history, horizon_h)` -> `Forecast`; `fit(history, horizon_h)` -> `Fitted`, whose
`predict(later_history)` forecasts again without fitting; `backtest(values, ...)` -> `Backtest`;
`public_series(id)` and `series_ids()` for the shipped series. Run times of tasks without a
duration (`runtime`): `fit_runtime(history)` -> `RuntimeModel`, whose `predict(tasks)` gives a
median and an upper quantile from the most specific group of similar completed tasks;
`backtest_runtime(history)` -> `RuntimeBacktest`; `runtime_trace(name)` for the shipped traces.
See docs/forecast.md.
"""

from suanli.forecast.backtest import Backtest, backtest
from suanli.forecast.model import (
    Fitted,
    Forecast,
    LeadWeights,
    fit,
    forecast,
    min_history_h,
    seasonal_naive,
)
from suanli.forecast.runtime import (
    RUNTIME_TRACES,
    CompletedTask,
    RuntimeBacktest,
    RuntimeModel,
    RuntimePrediction,
    RuntimePredictions,
    TaskFeatures,
    backtest_runtime,
    fit_runtime,
    runtime_trace,
)
from suanli.forecast.series import Series, public_series, series_ids

__all__ = [
    "RUNTIME_TRACES",
    "Backtest",
    "CompletedTask",
    "Fitted",
    "Forecast",
    "LeadWeights",
    "RuntimeBacktest",
    "RuntimeModel",
    "RuntimePrediction",
    "RuntimePredictions",
    "Series",
    "TaskFeatures",
    "backtest",
    "backtest_runtime",
    "fit",
    "fit_runtime",
    "forecast",
    "min_history_h",
    "public_series",
    "runtime_trace",
    "seasonal_naive",
    "series_ids",
]
