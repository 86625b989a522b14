"""The twin's realised carbon (synthetic weather) and the decision step's view of it: the
oracle sees the realised series, the forecast only the past, and every run counts carbon on
the realised series whatever the decision step saw."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from suanli.errors import InvalidValue
from suanli.forecast.model import CLIMATE_DAYS
from suanli.scheduler import QueuedTask, engine_task, policy_named
from suanli.scheduler.series import SOLAR_DIP, WEST_PROVINCES
from suanli.sim.carbon import (
    DAY_H,
    FORECAST_H,
    SERIES_H,
    Foresight,
    draw_weather,
    synthetic_carbon,
    weather,
)
from suanli.sim.traces import Trace, TraceJob
from suanli.sim.twin import job_spec, national_network, run, tick


@pytest.fixture(scope="module")
def network():
    return national_network(0.002)


def test_weather_keeps_the_annual_factor_and_varies_by_day() -> None:
    values = weather(24 * 60, seed=3)
    assert values.mean() == pytest.approx(1.0)
    days = values.reshape(60, 24)
    assert np.ptp(days.min(axis=1)) > 0.05  # the midday dip is deeper on some days
    assert np.array_equal(values, weather(24 * 60, seed=3))
    assert not np.array_equal(values, weather(24 * 60, seed=4))


def test_the_bound_knows_the_next_hours_and_forgets_by_next_week() -> None:
    """`Weather.expected`, the expectation given the weather's state: an hour ahead within the
    wind's hourly shock of the realised value, a day ahead further off (the next day's dip is
    half news), and a week ahead the mean day (the documented dip, no wind)."""
    drawn = draw_weather(24 * 200, seed=5)
    values = drawn.values
    misses: dict[int, list[float]] = {1: [], 36: []}
    for hour in range(24 * 10, 24 * 190, 7):
        ahead = drawn.expected(hour, 8 * 24)
        for lead in misses:
            misses[lead].append(abs(ahead[lead - 1] - values[hour + lead - 1]))
        week = ahead[7 * 24 : 8 * 24]
        sun = drawn.sun[hour + 7 * 24 : hour + 8 * 24]
        assert np.allclose(week, (1.0 - SOLAR_DIP * sun) / drawn.scale, rtol=0.01)
    assert np.mean(misses[1]) < 0.04  # the wind's shock: sd 0.08 x sqrt(1 - 0.95^2) = 0.025
    assert np.mean(misses[1]) < 0.5 * np.mean(misses[36])
    with pytest.raises(InvalidValue, match="hours"):
        drawn.expected(24 * 199, 48)  # past the weather drawn


def test_west_varies_east_stays_flat_and_a_province_shares_its_weather(network) -> None:
    world = synthetic_carbon(network, 24 * 10, "oracle", seed=1)
    by_province: dict[str, list[np.ndarray]] = {}
    for sid, values in world.realised.items():
        site = network.sites[sid]
        multiplier = values / site.grid_kgco2_per_kwh
        if site.provinces[0] in WEST_PROVINCES:
            assert np.ptp(multiplier) > 0.1, sid
        else:
            assert np.ptp(multiplier) == pytest.approx(0.0), sid
        by_province.setdefault(site.provinces[0], []).append(multiplier)
    for shapes in by_province.values():
        for other in shapes[1:]:
            assert np.allclose(other, shapes[0])


def test_a_forecast_is_made_from_the_past_alone(network) -> None:
    """Two worlds equal up to the issue hour (day 3, 05:00) and different after it give the
    decision step the same series from that hour: deferral is never decided on the realised
    future."""
    world = synthetic_carbon(network, 24 * 10, "forecast", seed=2)
    other = synthetic_carbon(network, 24 * 10, "forecast", seed=2)
    cut = world.history_h + 3 * DAY_H + 5
    for sid in other.realised:
        values = other.realised[sid].copy()
        values[cut:] *= 1.5
        other.realised[sid] = values
    clock = 3 * 86400.0 + 5 * 3600.0
    mine, theirs = world.snapshot_at(clock), other.snapshot_at(clock)
    assert mine.series_start_s == theirs.series_start_s == clock
    assert mine.local_hour_at_start == 5.0
    varied = 0
    for sid, series in mine.series.items():
        assert len(series.carbon_kg_per_kwh) == SERIES_H
        assert np.array_equal(series.carbon_kg_per_kwh, theirs.series[sid].carbon_kg_per_kwh)
        varied += np.ptp(series.carbon_kg_per_kwh) > 0
    assert varied > 0  # the western sites' forecasts follow the day
    # and the forecast is not the realised day (it is a forecast), but near it
    west = next(s for s in network.sites.values() if s.provinces[0] in WEST_PROVINCES)
    forecast = mine.series[west.id].carbon_kg_per_kwh[:DAY_H]
    actual = world.realised[west.id][cut : cut + DAY_H]
    assert not np.allclose(forecast, actual)
    assert np.mean(np.abs(forecast - actual) / actual) < 0.15
    # past the model's two days, to the end of a deferral's week of run: each hour of the day's
    # mean over the last CLIMATE_DAYS x 24 hours (not the two days repeated)
    past = world.realised[west.id][cut - CLIMATE_DAYS * DAY_H : cut]
    climate = past.reshape(CLIMATE_DAYS, DAY_H).mean(axis=0)
    later = mine.series[west.id].carbon_kg_per_kwh[FORECAST_H:]
    assert np.allclose(later, climate[(FORECAST_H + np.arange(len(later))) % DAY_H])


def test_the_oracle_decides_on_the_realised_series_and_runs_count_it(network) -> None:
    """On the oracle's snapshot the engine prices a placement's carbon exactly as the world
    counts it on the realised series."""
    world = synthetic_carbon(network, 24 * 10, "oracle", seed=5)
    job = TraceJob("j", 30 * 3600.0, 5 * 3600.0, 2, "gpu", origin="兰州")
    task = engine_task("j", job_spec(job), job.submit_s)
    free = {p.id: p.free for p in network.pools}
    (decision,) = tick(
        [QueuedTask(task, job.submit_s)],
        network,
        free,
        policy_named("green"),
        job.submit_s,
        snapshot=world.snapshot_at(job.submit_s),
    )
    placement = decision.placement
    assert placement is not None
    b = placement.breakdown
    counted = world.emitted(placement.site, placement.end_s, b.duration_s, b.energy_kwh)
    assert counted == pytest.approx(b.carbon_location_kg, rel=1e-9)


def _batch_trace() -> Trace:
    jobs = tuple(
        replace(
            TraceJob(f"b{i}", i * 1800.0, 3 * 3600.0, 1, "gpu", origin="兰州"),
            latency_tier="batch",
        )
        for i in range(40)
    )
    return Trace("batch", jobs, 0, "hand")


def test_the_bound_decides_on_the_weathers_expectation_not_the_future(network) -> None:
    """`bound` gives the decision step each western site's annual factor x the weather's
    expectation from the issue hour (`Weather.expected`), the same in two worlds that differ
    only after that hour; flat sites stay flat."""
    world = synthetic_carbon(network, 24 * 10, "bound", seed=2)
    hour = 3 * DAY_H + 5
    snapshot = world.snapshot_at(hour * 3600.0 + 60.0)  # within the hour: the same hour's view
    assert snapshot.series_start_s == hour * 3600.0 and snapshot.local_hour_at_start == 5.0
    issued = world.history_h + hour
    west = [s for s in network.sites.values() if s.provinces[0] in WEST_PROVINCES]
    east = next(s for s in network.sites.values() if s.provinces[0] not in WEST_PROVINCES)
    assert west and set(world.weathers) == {s.provinces[0] for s in west}
    for site in west:
        drawn = world.weathers[site.provinces[0]]
        assert np.allclose(world.realised[site.id], site.grid_kgco2_per_kwh * drawn.values)
        known = len(drawn.wind) - issued  # past the weather drawn, the series repeats
        expected = site.grid_kgco2_per_kwh * drawn.expected(issued, known)
        seen = snapshot.series[site.id].carbon_kg_per_kwh
        assert len(seen) == SERIES_H and np.allclose(seen[:known], expected)
        assert not np.allclose(seen[:DAY_H], world.realised[site.id][issued : issued + DAY_H])
    assert np.ptp(snapshot.series[east.id].carbon_kg_per_kwh) == 0
    # the realised future after the issue hour is not read: only the weather's state before it
    for drawn in world.weathers.values():
        drawn.wind[issued:] += 0.3
        drawn.depth[issued // DAY_H + 1 :] += 0.5
    again = synthetic_carbon(network, 24 * 10, "bound", seed=2)
    again.weathers = world.weathers
    for site in west:
        assert np.allclose(
            again.snapshot_at(hour * 3600.0).series[site.id].carbon_kg_per_kwh,
            snapshot.series[site.id].carbon_kg_per_kwh,
        )


@pytest.mark.parametrize("foresight", ["oracle", "forecast", "bound"])
def test_runs_count_carbon_on_the_realised_series(network, foresight: str) -> None:
    world = synthetic_carbon(network, 24 * 10, foresight, seed=7)
    result = run(_batch_trace(), network, "green", deferrable_slack_s=86400.0, carbon=world)
    green = {sid: s.green_share for sid, s in network.sites.items()}
    total = 0.0
    for outcome in result.outcomes:
        assert outcome.state == "completed"
        assert outcome.site is not None and outcome.end_s is not None
        counted = world.emitted(
            outcome.site,
            outcome.end_s,
            outcome.end_s - outcome.start_s,  # no data to move: it runs from its start
            outcome.energy_kwh,
        )
        assert outcome.carbon_location_kg == pytest.approx(counted)
        assert outcome.carbon_kg == pytest.approx(counted * (1 - green[outcome.site]))
        total += outcome.carbon_kg
    assert result.metrics["carbon_kg"] == pytest.approx(total)
    assert result.timeline[-1]["carbon_kg"] == pytest.approx(total)
    assert result.metrics["tasks_deferred"] > 0
    assert foresight in result.metrics["carbon_basis"]
    assert ("carbon_forecast_mape" in result.metrics) is (foresight == "forecast")


def test_bad_foresight_and_another_network_are_refused(network) -> None:
    with pytest.raises(InvalidValue, match="foresight"):
        synthetic_carbon(network, 48, "hindsight")
    world = synthetic_carbon(network, 48, Foresight.ORACLE)
    with pytest.raises(InvalidValue, match="carbon"):
        run(_batch_trace(), national_network(0.003), "green", carbon=world)


def test_sim_run_decides_on_forecasts_of_a_varying_carbon(tmp_path) -> None:
    import json

    from typer.testing import CliRunner

    from suanli.cli import app

    out = tmp_path / "run.json"
    args = ["sim", "run", "--limit", "150", "--policy", "green", "--batch-slack", "24"]
    result = CliRunner().invoke(
        app, [*args, "--foresight", "forecast", "--weather-seed", "3", "--json", str(out)]
    )
    assert result.exit_code == 0, result.output
    document = json.loads(out.read_text())
    metrics = document["policies"]["green"]
    assert (document["foresight"], document["weather_seed"]) == ("forecast", 3)
    assert "decided on: forecast" in metrics["carbon_basis"]
    assert 0 < metrics["carbon_forecast_mape"] < 0.3
    assert "day-ahead carbon forecast MAPE" in result.output
    refused = CliRunner().invoke(app, [*args, "--foresight", "hindsight"])
    assert refused.exit_code != 0 and "foresight" in refused.output


@pytest.mark.parametrize("foresight", ["oracle", "forecast"])
def test_each_deferrable_tasks_delay_is_judged_against_the_best_on_the_realised_series(
    network, foresight: str
) -> None:
    """Every deferrable task's first decision is judged on the realised series at the site it
    chose: the delay chosen saved at most what the best delay within its deadline would; the
    oracle, on a network with room to spare, chooses that best delay every time; the figures
    are those of the realised series, worked out here again for each task."""
    world = synthetic_carbon(network, 24 * 10, foresight, seed=7)
    result = run(_batch_trace(), network, "green", deferrable_slack_s=86400.0, carbon=world)
    green = {sid: s.green_share for sid, s in network.sites.items()}
    for outcome in result.outcomes:
        chose, best = outcome.chose_saved_location_kg, outcome.best_saved_location_kg
        assert chose is not None and best is not None, outcome.job.id
        assert best >= -1e-12 and chose <= best + 1e-9
        assert outcome.site is not None and outcome.end_s is not None
        run_s = outcome.end_s - outcome.start_s
        if outcome.deferred_s > 0:  # against starting when it was decided, at its site
            assert outcome.deferred_from_s is not None
            then = world.emitted(
                outcome.site, outcome.deferred_from_s + run_s, run_s, outcome.energy_kwh
            )
            assert chose == pytest.approx(then - outcome.carbon_location_kg)
        else:
            assert chose == pytest.approx(0.0)
        assert outcome.chose_saved_kg == pytest.approx(chose * (1 - green[outcome.site]))
        if foresight == "oracle":
            assert chose == pytest.approx(best)
    m = result.metrics
    assert m["delay_saved_location_kg"] == pytest.approx(
        sum(o.chose_saved_location_kg or 0.0 for o in result.outcomes)
    )
    assert 0 < m["delay_saved_location_kg"] <= m["delay_best_location_kg"]
    assert 0 < m["delay_saved_kg"] <= m["delay_best_kg"]
