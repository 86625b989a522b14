"""Live carbon intensity: hourly observations of a province's grid, their forecast, and the
series the decision step prices carbon on.

No hourly carbon data for China's provinces may be shipped (docs/forecast.md), so the platform
takes it from its operator: `record` stores observed hours of a province's location-based
intensity (kg CO2 per kWh, each whole UTC hour that has ended, with its source), replacing an
hour fed again; every feed is an audit event (`carbon.observed`).

`province_forecast` forecasts a province from its observations with `suanli.forecast`, as the
twin does on its synthetic weather (`sim.carbon`): the contiguous observed hours that end at
the latest one (at most HISTORY_H, at least `min_history_h(FORECAST_H)`), the model fitted once
a day per province and applied again whenever an hour is added, FORECAST_H hours with their
interval, then the climatology (`Fitted.ahead`) as far as the decision step looks. Observations
that end more than STALE_H hours ago give no forecast.

`observed_series` is what the pass, quotes and admission price carbon on (through
`capacity.step_inputs`): for each site in a province with a forecast, its hourly intensity
from the series' start (local midnight) for SERIES_H hours, observed hours as observed and the
rest forecast; other sites keep the documented daily shape (`scheduler.series`, an ESTIMATE).
So a deferrable task is deferred on the forecast, never on the future. Forecasts are kept per
province until the hour turns or an observation is added or replaced.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Annotated

import numpy as np
from pydantic import Field
from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from suanli import forecast as forecasting
from suanli.catalog import Site, find_place
from suanli.catalog.places import PlaceKind
from suanli.errors import InvalidValue, SuanliError
from suanli.scheduler import SiteSeries
from suanli.services.commands import Command
from suanli.services.core import Actor, Role, append_event, aware, now, require
from suanli.services.forecasts import ACTUAL_H, HISTORY_H, HOUR, hour_floor
from suanli.specs import Text
from suanli.store.models import CarbonRow, EventRow

FORECAST_H = 48  # the model's horizon; past it, the climatology
SERIES_H = 8 * 24  # the decision step's series: a deferral's day and the week of run it may start
STALE_H = 24  # observations ending longer ago than this give no forecast
MAX_VALUES = 10_000  # hours in one feed (a year and more)
MAX_KG_PER_KWH = 2.0  # no grid emits more (coal alone is about 1 kg/kWh): g/kWh is refused


class HourValue(Command):
    """One observed hour: its start (ISO 8601 with a zone, a whole hour) and kg CO2 per kWh."""

    hour: Annotated[Text, Field(max_length=40)]
    kg_per_kwh: float


class CarbonObservations(Command):
    """Observed hourly intensities of one province's grid, location-based, with their source."""

    province: Annotated[Text, Field(min_length=1, max_length=40)]
    source: Annotated[Text, Field(min_length=1, max_length=200)]
    values: Annotated[list[HourValue], Field(min_length=1, max_length=MAX_VALUES)]


@dataclass(frozen=True)
class Recorded:
    province: str
    recorded: int  # hours written
    replaced: int  # of which were already there
    first: datetime
    last: datetime


def province_named(name: str) -> str:
    """The catalog's Chinese name of province `name` (Chinese, pinyin or an alias), or
    InvalidValue naming the field."""
    try:
        place = find_place(name)
    except SuanliError:
        place = None
    if place is None or place.kind is not PlaceKind.PROVINCE:
        raise InvalidValue(
            "province",
            name,
            "a province of mainland China, e.g. 内蒙古 or Inner Mongolia (observations are of a "
            "province's grid, not of a city or cluster)",
            "中国内地省份，如 内蒙古（观测值属于省级电网，而非城市或集群）",
        )
    return place.province_zh


def _hour(field: str, text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise InvalidValue(
            field,
            text,
            "an ISO 8601 time with its zone, e.g. 2026-03-09T13:00:00Z",
            "带时区的 ISO 8601 时间，如 2026-03-09T13:00:00Z",
        )
    moment = moment.astimezone(UTC)
    if moment != hour_floor(moment):
        raise InvalidValue(
            field, text, "the start of a whole hour (minutes and seconds 0)", "整点（分、秒为 0）"
        )
    return moment


def record(session: Session, who: Actor, feed: CarbonObservations) -> Recorded:
    """Store `feed` (operator only), all or nothing: every value is checked before any is
    written. An hour fed again is replaced."""
    require(who, Role.OPERATOR)
    province = province_named(feed.province)
    moment = now(session)
    latest = hour_floor(moment) - HOUR  # the last hour that has ended
    hours: dict[datetime, float] = {}
    for n, value in enumerate(feed.values):
        hour = _hour(f"values[{n}].hour", value.hour)
        if hour > latest:
            raise InvalidValue(
                f"values[{n}].hour",
                value.hour,
                f"an hour that has ended (observations, not forecasts): {latest.isoformat()} or "
                "earlier",
                f"已结束的小时（观测值而非预测）：不晚于 {latest.isoformat()}",
            )
        if hour in hours:
            raise InvalidValue(
                f"values[{n}].hour", value.hour, "each hour once in a feed", "每个小时只出现一次"
            )
        if not 0.0 <= value.kg_per_kwh <= MAX_KG_PER_KWH:
            raise InvalidValue(
                f"values[{n}].kg_per_kwh",
                value.kg_per_kwh,
                f"kg CO2 per kWh in [0, {MAX_KG_PER_KWH:g}] (0.58, not 580 g)",
                f"[0, {MAX_KG_PER_KWH:g}] 内的千克 CO2/千瓦时（0.58 而非 580 克）",
            )
        hours[hour] = value.kg_per_kwh
    ordered = sorted(hours)
    replaced = int(
        session.scalar(
            select(func.count())
            .select_from(CarbonRow)
            .where(CarbonRow.province == province, CarbonRow.hour.in_(ordered))
        )
        or 0
    )
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    rows = [
        {
            "province": province,
            "hour": hour,
            "kg_per_kwh": hours[hour],
            "source": feed.source,
            "recorded_at": moment,
        }
        for hour in ordered
    ]
    statement = dialect.insert(CarbonRow)
    session.execute(
        statement.on_conflict_do_update(
            index_elements=[CarbonRow.province, CarbonRow.hour],
            set_={
                "kg_per_kwh": statement.excluded.kg_per_kwh,
                "source": statement.excluded.source,
                "recorded_at": statement.excluded.recorded_at,
            },
        ),
        rows,
    )
    done = Recorded(province, len(ordered), replaced, ordered[0], ordered[-1])
    append_event(
        session,
        "carbon.observed",
        province,
        who.id,
        {
            "hours": done.recorded,
            "replaced": done.replaced,
            "first": done.first.isoformat(),
            "last": done.last.isoformat(),
            "source": feed.source,
        },
    )
    return done


@dataclass(frozen=True)
class ProvinceForecast:
    """A province's carbon forecast from its observations, or why there is none."""

    province: str
    observed_hours: int  # the contiguous observed hours it was made from
    start: datetime | None  # the first forecast hour: the hour after the latest observed
    observed: tuple[tuple[datetime, float], ...]  # the last ACTUAL_H observed hours
    history: np.ndarray  # those contiguous observed hours (oldest first)
    ahead: np.ndarray  # from `start`: the forecast, then the climatology
    lower: np.ndarray  # the interval of the first FORECAST_H hours
    upper: np.ndarray
    level: float
    weights: tuple[forecasting.LeadWeights, ...] | None
    source: str | None  # the latest observation's source
    unavailable: str | None

    def hours_from(self, first: datetime, hours: int) -> np.ndarray | None:
        """The observed, then forecast, intensity of the `hours` hours from `first` (a whole
        UTC hour); None where they are not all covered."""
        if self.start is None:
            return None
        offset = len(self.history) + int((first - self.start) / HOUR)
        known = np.concatenate((self.history, self.ahead))
        if offset < 0 or offset + hours > len(known):
            return None
        return known[offset : offset + hours]


def _none(province: str, why: str, hours: int = 0) -> ProvinceForecast:
    empty = np.zeros(0)
    return ProvinceForecast(
        province=province,
        observed_hours=hours,
        start=None,
        observed=(),
        history=empty,
        ahead=empty,
        lower=empty,
        upper=empty,
        level=forecasting.model.LEVEL,
        weights=None,
        source=None,
        unavailable=why,
    )


# (database, province) -> (key, forecast): kept until the hour turns or a feed comes
_forecasts: dict[tuple[str, str], tuple[tuple[object, ...], ProvinceForecast]] = {}
# (database, province) -> (the day fitted, the fit): refitted once a day
_fits: dict[tuple[str, str], tuple[datetime, forecasting.Fitted]] = {}
_lock = threading.Lock()
State = tuple[datetime, int]


def _states(session: Session, since: datetime, provinces: list[str] | None) -> dict[str, State]:
    """Province -> (its latest observed hour since `since`, the seq of its latest feed's audit
    event): what a kept forecast is keyed on (a feed at the same moment as another, as on a
    virtual clock, still changes it)."""
    query = (
        select(CarbonRow.province, func.max(CarbonRow.hour))
        .where(CarbonRow.hour >= since)
        .group_by(CarbonRow.province)
    )
    if provinces is not None:
        query = query.where(CarbonRow.province.in_(provinces))
    latest = {p: aware(h) for p, h in session.execute(query)}
    feeds = dict(
        session.execute(
            select(EventRow.subject, func.max(EventRow.seq))
            .where(EventRow.subject.in_(list(latest)), EventRow.kind == "carbon.observed")
            .group_by(EventRow.subject)
        ).all()
    )
    return {p: (hour, int(feeds.get(p, 0))) for p, hour in latest.items()}


def _database(session: Session) -> str:
    """The database `session` works on, for keys of what is kept across sessions."""
    return str(session.get_bind().engine.url)


def forecasts(session: Session, provinces: list[str] | None = None) -> dict[str, ProvinceForecast]:
    """The forecast of every province with observations (or of `provinces`, those without
    any given as unavailable), covering at least SERIES_H hours from the current hour."""
    current = hour_floor(now(session))
    since = current - HISTORY_H * HOUR
    states = _states(session, since, provinces)
    database = _database(session)
    found: dict[str, ProvinceForecast] = {}
    for province in provinces if provinces is not None else sorted(states):
        state = states.get(province)
        if state is None:
            found[province] = _none(
                province,
                "no observations in the last 56 days: the documented daily shape "
                "(synthetic, ESTIMATE) is used",
            )
            continue
        key = (current, *state)
        with _lock:
            kept = _forecasts.get((database, province))
        if kept is not None and kept[0] == key:
            found[province] = kept[1]
            continue
        made = _forecast(session, province, since, current, state[0])
        with _lock:
            _forecasts[(database, province)] = (key, made)
        found[province] = made
    return found


def _forecast(
    session: Session,
    province: str,
    since: datetime,
    current: datetime,
    latest: datetime,
) -> ProvinceForecast:
    rows = session.execute(
        select(CarbonRow.hour, CarbonRow.kg_per_kwh, CarbonRow.source)
        .where(CarbonRow.province == province, CarbonRow.hour >= since)
        .order_by(CarbonRow.hour)
    ).all()
    hours = [aware(r[0]) for r in rows]
    # the contiguous run of observed hours that ends at the latest
    first = len(hours) - 1
    while first > 0 and hours[first - 1] == hours[first] - HOUR:
        first -= 1
    run = np.array([r[1] for r in rows[first:]], dtype=float)
    start = latest + HOUR
    observed = tuple((hours[k], round(float(rows[k][1]), 4)) for k in range(len(rows)))[-ACTUAL_H:]
    need = forecasting.min_history_h(FORECAST_H)
    why = None
    if current - start > STALE_H * HOUR:
        why = f"the latest observation is of {latest.isoformat()}, more than {STALE_H} h ago"
    elif len(run) < need:
        why = f"needs {need} contiguous observed hours, has {len(run)}"
    if why is not None:
        made = _none(
            province, f"{why}: the documented daily shape (synthetic, ESTIMATE) is used", len(run)
        )
        return replace(made, observed=observed)
    day = hour_floor(latest).replace(hour=0)
    kept = (_database(session), province)
    with _lock:
        fitted = _fits.get(kept)
    if fitted is None or fitted[0] != day:
        fitted = (day, forecasting.fit(run, FORECAST_H))
        with _lock:
            _fits[kept] = fitted
    near = fitted[1].predict(run)
    # from `start` to SERIES_H hours after the current hour (the observations may lag)
    span = int((current - start) / HOUR) + SERIES_H
    return ProvinceForecast(
        province,
        len(run),
        start,
        observed,
        run,
        np.maximum(fitted[1].ahead(run, max(span, FORECAST_H)), 0.0),
        near.lower,
        near.upper,
        near.level,
        near.weights,
        str(rows[-1][2]),
        None,
    )


def observed_series(
    session: Session,
    sites: Mapping[str, Site],
    series: Mapping[str, SiteSeries],
    series_start_s: float,
) -> dict[str, SiteSeries]:
    """`series` with the carbon of each site in a province with a forecast replaced by its
    observed and forecast intensity, SERIES_H hours from `series_start_s` (a local midnight);
    the others as they are. Without observations at all, one query."""
    if session.scalar(select(CarbonRow.province).limit(1)) is None:
        return dict(series)
    start = datetime.fromtimestamp(series_start_s, UTC)
    made = forecasts(session, sorted({s.provinces[0] for s in sites.values()}))
    result = dict(series)
    for sid, site in sites.items():
        found = made.get(site.provinces[0])
        if found is None or found.unavailable is not None or sid not in series:
            continue
        # covered: the history reaches 120 h before the forecast, which lags at most 24 h
        values = found.hours_from(start, SERIES_H)
        if values is not None:
            result[sid] = SiteSeries(series[sid].energy_price_multiplier, values)
    return result
