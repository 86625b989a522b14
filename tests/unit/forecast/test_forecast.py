"""The forecaster and its backtests: behaviour on series whose future is known, the shipped
public series, bad input, and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from suanli.cli import app
from suanli.errors import InvalidValue, UnknownSeries
from suanli.forecast import (
    Forecast,
    backtest,
    fit,
    forecast,
    min_history_h,
    public_series,
    seasonal_naive,
    series_ids,
)
from suanli.forecast.model import CLIMATE_DAYS, PERIOD_H, climatology

runner = CliRunner()
DAY = np.array([10.0 + 8.0 * np.sin(2 * np.pi * h / 24) for h in range(24)])


def _daily(days: int, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.tile(DAY, days) + noise * rng.standard_normal(24 * days)


def test_seasonal_naive_repeats_the_last_period() -> None:
    history = np.arange(100.0)
    assert seasonal_naive(history, 30).tolist() == [*range(76, 100), *range(76, 82)]


def test_ahead_is_the_forecast_then_the_climatology_of_the_last_days() -> None:
    """`Fitted.ahead`: the fit's forecast over its horizon, then each hour of the day's mean
    over the last CLIMATE_DAYS x 24 hours, in phase with the hours after the history."""
    history = _daily(40, noise=1.0, seed=4)[5:]  # starts (and so ends) off midnight
    fitted = fit(history, 24)
    made = fitted.ahead(history, 24 * 5 + 7)
    assert len(made) == 24 * 5 + 7
    assert np.array_equal(made[:24], fitted.predict(history).mean)
    days = history[-CLIMATE_DAYS * PERIOD_H :].reshape(CLIMATE_DAYS, PERIOD_H).mean(axis=0)
    assert np.allclose(made[24:], np.resize(days, 24 * 5 + 7)[24:])
    assert np.allclose(climatology(history, 3), days[:3])
    # in phase: the hour after the history (the 40th day's end) is hour 0 of DAY
    assert np.allclose(days, DAY, atol=0.7)
    assert np.array_equal(fitted.ahead(history, 10), fitted.predict(history).mean[:10])


def test_a_flat_history_forecasts_itself_with_no_spread() -> None:
    made = forecast(np.full(200, 7.0), 48)
    assert np.allclose(made.mean, 7.0) and np.allclose(made.lower, 7.0)
    assert np.allclose(made.upper, 7.0)


def test_an_exact_daily_cycle_is_forecast_closely_and_narrowly() -> None:
    history = _daily(20)
    made = forecast(history, 24)
    assert np.max(np.abs(made.mean - DAY)) < 0.5  # the amplitude is 8
    assert np.all(made.lower <= made.mean) and np.all(made.mean <= made.upper)
    assert np.max(made.upper - made.lower) < 1.0


def _share(made: Forecast, first_h: int, *names: str) -> float:
    """The weight of the components `names` in the block of leads starting at `first_h`."""
    block = next(w for w in made.weights if w.first_h == first_h)
    return sum(block.named()[name] for name in names)


def test_the_weights_follow_the_series() -> None:
    """An exact daily cycle leans on last day or the climatology (the same there); a random
    walk (persistent load) does not, at any lead (naive or Holt-Winters, whose level follows the
    last hours), and there the forecast beats seasonal naive."""
    cyclic = forecast(_daily(20), 24)
    assert [(w.first_h, w.last_h) for w in cyclic.weights] == [(1, 6), (7, 12), (13, 18), (19, 24)]
    for block in cyclic.weights:
        assert sum(block.weights) == pytest.approx(1.0)
        assert _share(cyclic, block.first_h, "seasonal_naive", "climatology") >= 0.75, block
    ours, theirs = [], []
    for seed in range(12):  # over several draws: one walk's next day is a coin toss
        steps = np.random.default_rng(seed).standard_normal(24 * 21)
        walk, truth = 100 + np.cumsum(steps)[:-24], 100 + np.cumsum(steps)[-24:]
        walked = forecast(walk, 24)
        assert _share(walked, 1, "naive", "holt_winters") >= 0.75, walked.weights
        ours.append(np.mean(np.abs(walked.mean - truth)))
        theirs.append(np.mean(np.abs(seasonal_naive(walk, 24) - truth)))
    assert np.mean(ours) < 0.9 * np.mean(theirs), (np.mean(ours), np.mean(theirs))


def test_a_day_that_does_not_last_is_forgotten_on_the_second_day() -> None:
    """A daily cycle whose level moves day by day, independently: the next hours follow the
    last (the day's level holds within the day), the second day leans on the climatology, and
    beats seasonal naive there (which repeats a level that does not last: its error is the
    difference of two days' levels, the climatology's one day's)."""
    ours, theirs = [], []
    for seed in range(24):  # one day's error is a coin toss: over many draws
        rng = np.random.default_rng(seed)
        days = 50
        series = np.tile(DAY, days) + np.repeat(4.0 * rng.standard_normal(days), 24)
        series += 0.3 * rng.standard_normal(len(series))
        history, truth = series[:-48], series[-24:]
        made = forecast(history, 48)
        assert _share(made, 1, "naive", "holt_winters") >= 0.5, made.weights
        for first_h in (25, 31, 37, 43):
            assert _share(made, first_h, "climatology") >= 0.5, made.weights
        ours.append(np.mean(np.abs(made.mean[24:] - truth)))
        theirs.append(np.mean(np.abs(seasonal_naive(history, 48)[24:] - truth)))
    assert np.mean(ours) < 0.85 * np.mean(theirs), (np.mean(ours), np.mean(theirs))


def test_a_fit_predicts_later_days_without_fitting_again() -> None:
    """`fit` once, `predict` on later histories: its forecast at the fit's end is `forecast`'s,
    and a week later it still follows the cycle, with the fit's interval widths."""
    series = _daily(30, noise=0.5, seed=4)
    fitted = fit(series[: 20 * 24], 24)
    once = forecast(series[: 20 * 24], 24)
    assert np.allclose(fitted.forecast.mean, once.mean)
    assert np.allclose(fitted.forecast.upper - fitted.forecast.lower, once.upper - once.lower)
    later = fitted.predict(series[: 27 * 24])
    assert np.mean(np.abs(later.mean - series[27 * 24 : 28 * 24])) < 1.0  # noise sd 0.5
    assert np.allclose(later.upper - later.lower, fitted.forecast.upper - fitted.forecast.lower)
    with pytest.raises(InvalidValue, match="history"):
        fitted.predict(series[:50])


def test_the_interval_is_calibrated_on_noise() -> None:
    """On a noisy daily cycle the 80% interval holds about 80% of the next day's hours
    (averaged over 30 seeds: a property of the method, not of one draw)."""
    inside = []
    for seed in range(30):
        series = _daily(16, noise=2.0, seed=seed)
        made = forecast(series[:-24], 24)
        actual = series[-24:]
        inside.append(np.mean((actual >= made.lower) & (actual <= made.upper)))
    assert 0.7 <= float(np.mean(inside)) <= 0.95, np.mean(inside)


def test_values_are_never_negative() -> None:
    falling = np.concatenate([np.linspace(50, 0.2, 150), np.zeros(2)])
    made = forecast(falling, 24)
    assert np.all(made.mean >= 0) and np.all(made.lower >= 0)


@pytest.mark.parametrize(
    ("history", "hours", "level", "field"),
    [
        (np.ones(95), 24, 0.8, "history"),  # 3 x 24 + 24 needed
        (np.ones(200), 0, 0.8, "hours"),
        (np.ones(200), 169, 0.8, "hours"),
        (np.ones(200), 24.5, 0.8, "hours"),
        (np.ones(200), 24, 1.0, "level"),
        (np.ones(200), 24, 0.0, "level"),
        (np.r_[np.ones(150), np.nan, np.ones(49)], 24, 0.8, "history"),
    ],
)
def test_bad_input_names_the_field(
    history: np.ndarray, hours: int, level: float, field: str
) -> None:
    with pytest.raises(InvalidValue) as caught:
        forecast(history, hours, level)
    assert caught.value.field == field


def test_min_history_is_three_periods_and_a_horizon() -> None:
    assert min_history_h(24) == 3 * PERIOD_H + 24
    forecast(np.ones(min_history_h(48)) + np.arange(min_history_h(48)) % 3, 48)  # takes it


def test_the_shipped_series_are_whole_hours_and_named() -> None:
    ids = series_ids()
    assert ids == [
        "philly_active_nodes",
        "earth_vchbv_running_gpus",
        "dlrm_busy_gpus",
        "openb_busy_gpus",
    ]
    lengths = {i: len(public_series(i).values) for i in ids}
    assert lengths == {
        "philly_active_nodes": 1771,  # 2017-10-03 00:00 to 2017-12-15 18:00, gap filled
        "earth_vchbv_running_gpus": 744,  # May 2020
        "dlrm_busy_gpus": 743,
        "openb_busy_gpus": 3583,
    }
    philly = public_series("philly_active_nodes")
    assert philly.values.min() >= 0 and philly.values.max() <= 552  # the trace's most nodes
    assert philly.name_zh and philly.licence == "MIT"
    with pytest.raises(UnknownSeries):
        public_series("philly")


def test_a_backtest_scores_against_seasonal_naive() -> None:
    """On a series whose seasonal-naive forecast is exact, the forecast is near exact too; on a
    persistent random walk the ratio to seasonal naive is well below 1."""
    cycle = _daily(30)
    done = backtest(cycle, 24, origins=3)
    assert done.origins == 3 and done.mase_seasonal_naive == 0.0 and done.mase < 0.05
    walk = 100 + np.cumsum(np.random.default_rng(5).standard_normal(24 * 30))
    walked = backtest(walk, 24, origins=5, every_h=24)
    assert walked.ratio < 0.9, walked
    assert 0.0 <= walked.coverage <= 1.0
    assert walked.ratio == pytest.approx(walked.mase / walked.mase_seasonal_naive)


def test_a_backtest_with_too_many_origins_says_how_many_fit() -> None:
    with pytest.raises(InvalidValue) as caught:
        backtest(np.ones(200), 24, origins=10)
    assert caught.value.field == "origins" and "at most 4 for 200 hours" in str(caught.value)
    assert backtest(np.ones(200) + np.arange(200) % 5, 24).origins == 4  # all that fit
    with pytest.raises(InvalidValue) as caught:
        backtest(np.ones(119), 24)
    assert caught.value.field == "values" and "at least 120 hours" in str(caught.value)


def test_cli_forecast_and_backtest() -> None:
    shown = runner.invoke(
        app, ["forecast", "show", "--series", "earth_vchbv_running_gpus", "--hours", "6", "--json"]
    )
    assert shown.exit_code == 0, shown.output
    body = json.loads(shown.stdout)
    assert [h["hour"] for h in body["hours"]] == list(range(744, 750))
    assert all(h["lower"] <= h["mean"] <= h["upper"] for h in body["hours"])
    tested = runner.invoke(
        app,
        ["forecast", "backtest", "--series", "dlrm_busy_gpus", "--origins", "2", "--json"],
    )
    assert tested.exit_code == 0, tested.output
    [row] = json.loads(tested.stdout)
    assert row["series"] == "dlrm_busy_gpus" and row["origins"] == 2 and row["hours"] == 24
    bad = runner.invoke(app, ["forecast", "show", "--series", "earth", "--hours", "6"])
    assert bad.exit_code == 2 and "earth_vchbv_running_gpus" in bad.stderr


def test_hourly_held_counts_each_interval_for_the_part_of_each_hour_it_covers() -> None:
    from suanli.forecast.series import hourly_held

    rng = np.random.default_rng(7)
    amount = rng.integers(1, 5, 300).astype(float)
    start = rng.uniform(-10, 60, 300)
    end = start + rng.exponential(8, 300)
    expected = np.zeros(50)
    for a, s, e in zip(amount, start, end, strict=True):  # hour by hour, by hand
        for h in range(50):
            expected[h] += a * max(0.0, min(e, h + 1) - max(s, h))
    assert np.allclose(hourly_held(amount, start, end, 50), expected)
    assert hourly_held(np.array([2.0]), np.array([1.25]), np.array([1.75]), 3).tolist() == [
        0.0,
        1.0,
        0.0,
    ]
