"""Carbon intensity that varies day by day, and what the decision step knows of it.

The twin's default series repeat one documented day (`scheduler.series.carbon_shape`): the
decision step then knows the future exactly, and shifting work in time cannot be told apart
from foresight. A `CarbonWorld` gives each run a *realised* hourly intensity that differs from
day to day, and one of four ways for the decision step to see it (`foresight`):

* `oracle`: the realised series itself (perfect foresight: the most shifting could save);
* `forecast`: every hour, as the live server does, a 48-hour forecast by `suanli.forecast`
  from the realised history up to that hour (the model fitted every REFIT_DAYS days, as
  operators run a model refreshed now and then), then the climatology (each hour of the day's
  mean over the last 28 days, `Fitted.ahead`) to SERIES_H hours, so that a long run is not
  priced on the two days repeated; deferral is decided on forecasts, never on the future;
* `bound`: every hour, the expectation of the weather given the state it is drawn from
  (`Weather.expected`: today's dip depth from midnight, the last hour's wind): what the best
  forecaster of this weather could know, not the future; the ceiling a forecast is judged by;
* `shape`: the documented daily shape (what the live platform knows without observations).

Every run then counts the carbon a task emitted on the realised series, whatever the decision
step saw (`CarbonWorld.emitted`).

**The realised series are SYNTHETIC (an ESTIMATE)**: no hourly carbon data for China's
provinces that may be redistributed was found (docs/forecast.md). Western provinces (those of
`carbon_shape`) get the documented solar dip with a depth that varies by day (clouds: a
day-to-day AR(1), SUN_SD around 1, clipped to [0, 2]) times a slow hourly wind factor (an
hourly AR(1) of standard deviation WIND_SD and persistence WIND_PHI); each series is scaled so
its mean over the run is the province's annual factor. Eastern provinces stay flat, as in the
shape. Seeded: the same seed gives the same weather.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import TYPE_CHECKING

import numpy as np

from suanli.errors import InvalidValue
from suanli.forecast import Fitted, fit
from suanli.scheduler import SiteSeries, Snapshot
from suanli.scheduler.arrays import window_mean
from suanli.scheduler.series import SOLAR_DIP, WEST_PROVINCES

if TYPE_CHECKING:
    from suanli.sim.traces import Trace
    from suanli.sim.twin import Network

HISTORY_DAYS = 35  # realised days before the run starts (what the first forecast is fitted on)
FORECAST_H = 48  # the model forecasts the next two days, every hour
# and beyond them, to the end of a deferral's window and the week of run it may start (the
# engine's `BOOKED_HORIZON_H`), the climatology: the mean of each hour of the day over the last
# 28 days (`Fitted.ahead`; without it the engine's series wrapped round, and a long run was priced
# on the two days' forecast repeated, today's wind included)
SERIES_H = 8 * 24
REFIT_DAYS = 28
SUN_SD = 0.5  # day-to-day spread of the solar dip's depth (x SOLAR_DIP): an ESTIMATE
SUN_PHI = 0.5  # persistence of that depth from one day to the next: an ESTIMATE
WIND_SD = 0.08  # spread of the hourly wind factor: an ESTIMATE
WIND_PHI = 0.95  # its persistence from one hour to the next: an ESTIMATE
DAY_H = 24


class Foresight(StrEnum):
    ORACLE = "oracle"
    FORECAST = "forecast"
    BOUND = "bound"
    SHAPE = "shape"


def _ar1(rng: np.random.Generator, n: int, phi: float, sd: float) -> np.ndarray:
    """n draws of a stationary AR(1) with persistence `phi` and standard deviation `sd`."""
    shocks = rng.standard_normal(n) * sd * math.sqrt(1 - phi * phi)
    out = np.empty(n)
    value = rng.standard_normal() * sd
    for i in range(n):
        value = phi * value + shocks[i]
        out[i] = value
    return out


@dataclass(frozen=True)
class Weather:
    """A western province's synthetic weather, with the state it is drawn from: each day's
    solar dip depth anomaly (`depth`, the daily AR(1)), each hour's wind factor anomaly
    (`wind`, the hourly AR(1)) and the sun's height (`sun`, 0 at night). `values` are the
    multipliers of the province's annual factor; `expected` is what a forecaster knowing that
    state could say at best (the bound on forecasting it, `bench_foresight.py`)."""

    depth: np.ndarray  # per day
    wind: np.ndarray  # per hour
    sun: np.ndarray  # per hour
    scale: float  # the mean of the raw product, so that `values` has mean 1

    @property
    def values(self) -> np.ndarray:
        hours = len(self.wind)
        dip = np.repeat(_depth(self.depth), DAY_H)[:hours] * self.sun
        raw = (1.0 - dip) * np.clip(1.0 + self.wind, 0.5, 1.5)
        return np.asarray(raw / self.scale)

    def expected(self, hour: int, hours: int) -> np.ndarray:
        """The expectation of `values[hour : hour + hours]` given the state at `hour`: today's
        dip depth (known from midnight, more than a forecaster sees before sunrise) and the
        wind of the hour before, both decaying by their persistence (clipping left out)."""
        if not 1 <= hour <= hour + hours <= len(self.wind):
            raise InvalidValue(
                "hours",
                f"{hour}..{hour + hours}",
                f"hours within the weather drawn (1..{len(self.wind)})",
                f"在已生成的天气范围内（1..{len(self.wind)}）",
            )
        lead = np.arange(hours)
        today = hour // DAY_H
        depth = self.depth[today] * SUN_PHI ** ((hour + lead) // DAY_H - today)
        wind = self.wind[hour - 1] * WIND_PHI ** (lead + 1)
        sun = self.sun[hour : hour + hours]
        return np.asarray((1.0 - _depth(depth) * sun) * (1.0 + wind) / self.scale)


def _depth(anomaly: np.ndarray) -> np.ndarray:
    return np.clip(1.0 + anomaly, 0.0, 2.0) * SOLAR_DIP


def draw_weather(hours: int, seed: int) -> Weather:
    """The weather of `hours` hours from local midnight, drawn from `seed`: the solar dip,
    deeper or shallower by day, times a slow wind factor."""
    rng = np.random.default_rng(seed)
    days = math.ceil(hours / DAY_H)
    depth = _ar1(rng, days, SUN_PHI, SUN_SD)
    h = np.arange(hours) % DAY_H
    sun = np.where((h >= 7) & (h < 19), np.cos((h - 13) / 6 * (math.pi / 2)), 0.0)
    sun = np.clip(sun, 0.0, None)
    wind = _ar1(rng, hours, WIND_PHI, WIND_SD)
    drawn = Weather(depth, wind, sun, 1.0)
    return replace(drawn, scale=float(drawn.values.mean()))


def weather(hours: int, seed: int) -> np.ndarray:
    """Multipliers of a western province's annual factor for `hours` hours from local midnight
    (mean exactly 1): `draw_weather(hours, seed).values`."""
    return draw_weather(hours, seed).values


def forecast_series(fitted: Fitted, history: np.ndarray) -> np.ndarray:
    """What the decision step sees of the SERIES_H hours after `history`: `fitted`'s forecast
    (FORECAST_H hours), then the climatology (`Fitted.ahead`)."""
    return fitted.ahead(history, SERIES_H)


@dataclass
class CarbonWorld:
    """Realised hourly carbon intensity for each site of `network` from HISTORY_DAYS before the
    run (hour 0 is the run's start, a local midnight) for `hours` hours after it, and the
    decision step's view of it (`foresight`). Build with `synthetic_carbon`."""

    network: Network
    foresight: Foresight
    realised: dict[str, np.ndarray]  # site id -> kg CO2/kWh, from -history_h
    history_h: int
    # province -> the weather its realised series were drawn from (`bound` reads its state)
    weathers: dict[str, Weather] = field(default_factory=dict)
    _prefix: np.ndarray = field(init=False, repr=False)
    _row: dict[str, int] = field(init=False, repr=False)
    _snapshots: dict[int, Snapshot] = field(default_factory=dict, init=False, repr=False)
    _fits: dict[tuple[str, int], Fitted] = field(default_factory=dict, init=False, repr=False)
    forecast_errors: list[float] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        ids = sorted(self.realised)
        self._row = {sid: n for n, sid in enumerate(ids)}
        rows = np.array([self.realised[sid][self.history_h :] for sid in ids])
        self._prefix = np.concatenate((np.zeros((len(ids), 1)), np.cumsum(rows, axis=1)), axis=1)

    @property
    def hours(self) -> int:
        return int(self._prefix.shape[1] - 1)

    def emitted(self, site: str, end_s: float, duration_s: float, energy_kwh: float) -> float:
        """Location-based kg CO2 of `energy_kwh` drawn evenly over the `duration_s` seconds up
        to `end_s` at `site`, on the realised series (the window the engine prices)."""
        return float(self.emitted_by(site, np.array([end_s]), duration_s, energy_kwh)[0])

    def emitted_by(
        self, site: str, ends_s: np.ndarray, duration_s: float, energy_kwh: float
    ) -> np.ndarray:
        """`emitted` for the same run ending at each of `ends_s`."""
        mean = window_mean(
            self._prefix,
            np.full(len(ends_s), self._row[site]),
            (ends_s - duration_s) / 3600.0,
            np.full(len(ends_s), duration_s / 3600.0),
        )
        return np.asarray(energy_kwh * mean, dtype=float)

    def snapshot_at(self, clock: float) -> Snapshot:
        """The decision step's network at `clock` (seconds from the run's start)."""
        if self.foresight is Foresight.SHAPE:
            return self._cached(0, lambda: self.network.snapshot())
        if self.foresight is Foresight.ORACLE:
            return self._cached(0, self._oracle)
        hour = max(0, math.floor(clock / 3600.0))
        if self.foresight is Foresight.BOUND:
            return self._cached(hour, lambda: self._bound(hour))
        return self._cached(hour, lambda: self._forecast(hour))

    def _cached(self, key: int, make: Callable[[], Snapshot]) -> Snapshot:
        found = self._snapshots.get(key)
        if found is None:
            found = make()
            self._snapshots = {key: found}  # only today's is ever asked for again
        return found

    def _series(self, carbon: dict[str, np.ndarray], hour: int = 0) -> dict[str, SiteSeries]:
        """Each site's series from run hour `hour`: `carbon` beside the energy price
        multipliers rolled to that hour."""
        series = {}
        for sid, known in self.network.series.items():
            values = carbon[sid]
            prices = np.asarray(known.energy_price_multiplier)
            energy = prices[(hour + np.arange(len(values))) % len(prices)]
            series[sid] = SiteSeries(energy, values)
        return series

    def _oracle(self) -> Snapshot:
        carbon = {sid: values[self.history_h :] for sid, values in self.realised.items()}
        return _with_series(self.network.snapshot(), self._series(carbon), 0)

    def _forecast(self, hour: int) -> Snapshot:
        issued_h = self.history_h + hour  # index of the issue hour in `realised`
        day = hour // DAY_H
        carbon: dict[str, np.ndarray] = {}
        made: dict[str, np.ndarray] = {}  # one forecast per distinct realised series
        for sid, values in self.realised.items():
            site = self.network.sites[sid]
            if not _varies(site.provinces[0]):
                carbon[sid] = np.full(SERIES_H, values[0])
                continue
            province = site.provinces[0]
            key = f"{province}:{site.grid_kgco2_per_kwh}"
            if key not in made:
                history = values[:issued_h]
                refit = day - day % REFIT_DAYS
                fitted = self._fits.get((key, refit))
                if fitted is None:
                    fitted = fit(history, FORECAST_H)
                    self._fits = {k: v for k, v in self._fits.items() if k[0] != key}
                    self._fits[(key, refit)] = fitted
                made[key] = forecast_series(fitted, history)
                actual = values[issued_h : issued_h + DAY_H]
                if hour % DAY_H == 0 and len(actual) == DAY_H:  # day-ahead, from midnight
                    self.forecast_errors.append(
                        float(np.mean(np.abs(made[key][:DAY_H] - actual) / actual))
                    )
            carbon[sid] = np.maximum(made[key], 1e-6)
        return _with_series(self.network.snapshot(), self._series(carbon, hour), hour)

    def _bound(self, hour: int) -> Snapshot:
        """The series the best forecaster of the weather would see at run hour `hour`: each
        western site's annual factor x `Weather.expected` for SERIES_H hours (repeated past
        the end of the weather drawn); flat sites as they are."""
        issued_h = self.history_h + hour
        carbon: dict[str, np.ndarray] = {}
        for sid, values in self.realised.items():
            site = self.network.sites[sid]
            drawn = self.weathers.get(site.provinces[0])
            if drawn is None:
                carbon[sid] = np.full(SERIES_H, values[0])
                continue
            hours = min(SERIES_H, len(drawn.wind) - issued_h)
            expected = drawn.expected(issued_h, hours)
            carbon[sid] = np.maximum(site.grid_kgco2_per_kwh * np.resize(expected, SERIES_H), 1e-6)
        return _with_series(self.network.snapshot(), self._series(carbon, hour), hour)


def _varies(province: str) -> bool:
    return province in WEST_PROVINCES


def _with_series(snapshot: Snapshot, series: dict[str, SiteSeries], hour: int) -> Snapshot:
    """`snapshot` with `series` that start at run hour `hour` (local midnight is hour 0)."""
    return replace(
        snapshot,
        series=series,
        series_start_s=hour * 3600.0,
        local_hour_at_start=float((snapshot.local_hour_at_start + hour) % DAY_H),
    )


TAIL_DAYS = 14  # realised days after a trace's last arrival (its last jobs run on into them)


def run_hours(trace: Trace) -> int:
    """The hours a carbon world for `trace` covers: to its last arrival, and TAIL_DAYS more."""
    last = max((j.submit_s for j in trace.jobs), default=0.0)
    return math.ceil(last / 3600) + DAY_H * TAIL_DAYS


def foresight_named(name: Foresight | str) -> Foresight:
    """`name` as a `Foresight`, or InvalidValue naming the field and the accepted values."""
    try:
        return Foresight(str(name))
    except ValueError:
        accepted = ", ".join(f.value for f in Foresight)
        raise InvalidValue("foresight", name, f"one of {accepted}", f"{accepted} 之一") from None


def synthetic_carbon(
    network: Network, hours: int, foresight: Foresight | str, seed: int = 0
) -> CarbonWorld:
    """A `CarbonWorld` on `network` covering `hours` hours of run (longer runs repeat it), with
    HISTORY_DAYS of history before them; one weather per province (sites of a province share
    it), drawn from `seed`."""
    seeing = foresight_named(foresight)
    if network.local_hour_at_start != 0:
        raise InvalidValue(
            "local_hour_at_start",
            network.local_hour_at_start,
            "0 (a run with a carbon world starts at local midnight)",
            "0（从当地午夜开始）",
        )
    history_h = HISTORY_DAYS * DAY_H
    total = history_h + max(int(hours), DAY_H)
    provinces = sorted({s.provinces[0] for s in network.sites.values()})
    weathers = {
        p: draw_weather(total, seed * 1000 + n) for n, p in enumerate(provinces) if _varies(p)
    }
    shapes = {p: drawn.values for p, drawn in weathers.items()}
    flat = np.ones(total)
    realised = {
        sid: site.grid_kgco2_per_kwh * shapes.get(site.provinces[0], flat)
        for sid, site in network.sites.items()
    }
    return CarbonWorld(network, seeing, realised, history_h, weathers)
