"""Live load forecasts: each site's busy devices per hour, from the platform's own events, and
the forecast of the hours ahead (`suanli.forecast`).

A task holds its devices while it is INITIALIZING or RUNNING (leased to an agent). Its state
changes are in the event log (`task.state`), so a site's history is the devices of its tasks
summed over the time they held them, per whole UTC hour, over the last HISTORY_H hours (or
since the site was registered). A task counts at the site it is placed on now (one requeued
to another site counts there for its whole history: rare, and noted in docs/forecast.md).

The history ends at the last whole hour; the forecast starts at the current hour. Beside each
forecast the last ACTUAL_H hours of that history are served with their hour timestamps (`actual`:
what was, next to what is forecast). Forecasts are kept per (site, hours, level) until the hour
turns, so the server computes each at most once an hour however often it is asked.

Price forecasts (`price_forecasts`): for each pool of a site with a load forecast, the price of
one device-hour at each forecast hour, from the market's own pricing (`services.market.price_at`,
what quotes use) at the pool's forecast utilisation and the site's time of use that hour, at the
mean load and at the interval's lower and upper load. A site's forecast busy devices are spread
over its pools in proportion to their device counts, so every pool of a site has the site's
utilisation (forecast busy devices over all its devices), clipped to [0, 1]. They are kept until
the hour turns under a key holding all they are priced from (the load forecast, the pools'
counts and posted prices, the site's province, the pricing rules), so a posted price changed
within the hour is priced again at once. Prices are integer fen, as the pricing function returns
them.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import numpy as np
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from suanli import forecast as forecasting
from suanli import market
from suanli.errors import InvalidValue
from suanli.forecast.series import hourly_held
from suanli.services import market as market_service
from suanli.services.core import NotFound, State, aware, now
from suanli.store.models import EventRow, PoolRow, SiteRow, TaskRow

HISTORY_H = 56 * 24  # what the forecaster can use: 28 days to fit, 28 more to calibrate
ACTUAL_H = 72  # the recent actual hours served beside each forecast (three daily cycles)
HOLDING = frozenset({State.INITIALIZING.value, State.RUNNING.value})
HOUR = timedelta(hours=1)
CHUNK = 500  # task ids per query
DEVICE_HOUR_S = 3600.0  # a price forecast is the price of one device for one hour
UTILISATION_PLACES = 4  # a forecast utilisation is priced (and served) to 4 decimals


def hour_floor(moment: datetime) -> datetime:
    """The start of the hour `moment` is in."""
    return moment.replace(minute=0, second=0, microsecond=0)


def _hour_ceil(moment: datetime) -> datetime:
    floor = hour_floor(moment)
    return floor if floor == moment else floor + HOUR


def busy_history(session: Session, site_ids: list[str], end: datetime) -> dict[str, np.ndarray]:
    """Mean busy devices per whole hour for each site, from HISTORY_H hours before `end` (a
    whole hour) or the site's registration, whichever is later, to `end`."""
    start = end - HISTORY_H * HOUR
    sites = {s.id: s for s in session.scalars(select(SiteRow).where(SiteRow.id.in_(site_ids)))}
    first = {sid: max(start, _hour_ceil(aware(site.created_at))) for sid, site in sites.items()}
    tasks = {  # those that may have held devices in the window: still holding, or changed since
        t.id: t
        for t in session.scalars(
            select(TaskRow).where(
                TaskRow.site_id.in_(list(sites)),
                TaskRow.created_at < end,
                or_(TaskRow.updated_at >= start, TaskRow.state.in_(list(HOLDING))),
            )
        )
    }
    changes: dict[str, list[tuple[int, datetime, str, str]]] = {task_id: [] for task_id in tasks}
    ids = list(tasks)
    for first_id in range(0, len(ids), CHUNK):  # bounded IN lists
        events = session.execute(
            select(EventRow.subject, EventRow.seq, EventRow.at, EventRow.data)
            .where(EventRow.kind == "task.state")
            .where(EventRow.subject.in_(ids[first_id : first_id + CHUNK]), EventRow.at < end)
        )
        for subject, seq, at, data in events:
            changes[subject].append((seq, aware(at), data["from"], data["to"]))
    for task_changes in changes.values():
        task_changes.sort()  # in the log's order
    held: dict[str, tuple[list[float], list[float], list[float]]] = {
        sid: ([], [], []) for sid in sites
    }

    def hold(site_id: str, devices: int, since: datetime, until: datetime) -> None:
        amounts, starts, ends = held[site_id]
        amounts.append(float(devices))
        starts.append((since - start) / HOUR)
        ends.append((until - start) / HOUR)

    for task_id, task in tasks.items():
        site_id = task.site_id
        if site_id not in held:
            continue
        held_since: datetime | None = None
        for _, at, _, to in changes[task_id]:
            if to in HOLDING and held_since is None:
                held_since = at
            elif to not in HOLDING and held_since is not None:
                hold(site_id, task.devices, held_since, at)
                held_since = None
        if held_since is not None:
            hold(site_id, task.devices, held_since, end)
    busy = {
        sid: hourly_held(np.array(amounts), np.array(starts), np.array(ends), HISTORY_H)
        for sid, (amounts, starts, ends) in held.items()
    }
    return {
        sid: values[int((first[sid] - start) / HOUR) :] if first[sid] < end else values[:0]
        for sid, values in busy.items()
    }


@dataclass(frozen=True)
class SiteForecast:
    site: str
    history_hours: int
    history: list[float]  # the last hours of the history, oldest first (up to `hours` of them)
    start: datetime  # the first forecast hour
    actual: list[tuple[datetime, float]]  # (hour's start, busy) of the last ACTUAL_H hours
    mean: list[float]
    lower: list[float]
    upper: list[float]
    weights: tuple[forecasting.LeadWeights, ...] | None  # by blocks of leads
    unavailable: str | None  # why there is no forecast (too little history), else None


_cache: dict[tuple[str, int, float, datetime], SiteForecast] = {}
_cache_lock = threading.Lock()


def site_forecasts(
    session: Session, site_id: str | None, hours: int, level: float
) -> tuple[datetime, list[SiteForecast]]:
    """The forecast of every site (or one), `hours` ahead with intervals of probability
    `level`; when the hour turns every site is computed again."""
    if not 1 <= hours <= forecasting.model.MAX_HORIZON_H:
        limit = forecasting.model.MAX_HORIZON_H
        raise InvalidValue("hours", hours, f"whole hours in [1, {limit}]", f"[1, {limit}] 小时")
    if not 0 < level < 1:
        raise InvalidValue("level", level, "a share in (0, 1)", "(0, 1) 内的比例")
    current = hour_floor(now(session))
    ids = list(session.scalars(select(SiteRow.id).order_by(SiteRow.id)))
    if site_id is not None:
        if site_id not in ids:
            raise NotFound("site", site_id)
        ids = [site_id]
    with _cache_lock:
        for key in [k for k in _cache if k[3] != current]:
            del _cache[key]
        found = {sid: _cache.get((sid, hours, level, current)) for sid in ids}
    missing = [sid for sid, made in found.items() if made is None]
    if missing:
        histories = busy_history(session, missing, current)
        for sid in missing:
            made = site_forecast(sid, histories[sid], current, hours, level)
            found[sid] = made
            with _cache_lock:
                _cache[(sid, hours, level, current)] = made
    return current, [made for made in found.values() if made is not None]


def site_forecast(
    site_id: str, history: np.ndarray, start: datetime, hours: int, level: float
) -> SiteForecast:
    """One site's forecast from its hourly `history` (oldest first, ending at `start`, the
    current hour): `hours` ahead with intervals of probability `level`, or the reason there is
    none; and the last ACTUAL_H hours of the history with their hours."""
    need = forecasting.min_history_h(hours)
    shown = [round(float(v), 3) for v in history[-hours:]]
    recent = history[-ACTUAL_H:]
    first = start - len(recent) * HOUR  # the hour of recent[0]: the history ends at `start`
    actual = [(first + k * HOUR, round(float(v), 3)) for k, v in enumerate(recent)]
    if len(history) < need:
        return SiteForecast(
            site_id,
            len(history),
            shown,
            start,
            actual,
            [],
            [],
            [],
            None,
            f"needs {need} whole hours of history for {hours} h ahead, has {len(history)}",
        )
    made = forecasting.forecast(history, hours, level)
    return SiteForecast(
        site_id,
        len(history),
        shown,
        start,
        actual,
        [round(float(v), 3) for v in made.mean],
        [round(float(v), 3) for v in made.lower],
        [round(float(v), 3) for v in made.upper],
        made.weights,
        None,
    )


@dataclass(frozen=True)
class HourPrice:
    """One forecast hour's price of one device-hour on a pool: at the mean load and at the
    interval's lower and upper load (`utilisation`, the same three), with the site's time-of-use
    multiplier that hour."""

    hour: datetime  # the hour's start (UTC)
    local_hour: int  # its hour in China Standard Time, 0..23, where time of use is read
    time_of_use: Decimal
    utilisation: tuple[Decimal, Decimal, Decimal]  # at the mean, lower and upper load
    price_fen: tuple[int, int, int]  # the total of one device-hour at those utilisations


@dataclass(frozen=True)
class PoolPrices:
    """A pool's price forecast: each forecast hour, oldest first, and the cheapest of them at the
    mean load (the earliest on a tie)."""

    pool: str
    device: str
    count: int
    posted_fen_per_device_hour: int
    hours: list[HourPrice]
    cheapest: HourPrice | None  # None only when `hours` is empty


@dataclass(frozen=True)
class SitePrices:
    """A site's price forecasts, one per pool (by pool id), or why there are none."""

    pools: list[PoolPrices]
    unavailable: str | None


def pool_share_utilisation(busy: float, site_devices: int) -> Decimal:
    """A pool's forecast utilisation from its site's forecast busy devices: the site's busy
    devices are shared among its pools in proportion to their device counts, so a pool's
    utilisation is the site's (`busy` over `site_devices`, all its pools' devices), clipped to
    [0, 1] and rounded to UTILISATION_PLACES decimals. A site without devices is fully used
    (as `services.market.pool_utilisation` treats an empty pool)."""
    if site_devices <= 0:
        return Decimal(1)
    share = min(max(busy / site_devices, 0.0), 1.0)
    return Decimal(str(round(share, UTILISATION_PLACES)))


def site_prices(
    site: SiteRow, pools: list[PoolRow], made: SiteForecast, rules: market.PricingRules
) -> SitePrices:
    """The price forecast of each of `pools` (the site's, by id) from the site's load forecast
    `made`: at each forecast hour, the price of one device-hour (`services.market.price_at`:
    not preemptible, no data moved, the platform fee included) at the pool's forecast
    utilisation (`pool_share_utilisation`) and that hour's time of use."""
    if made.unavailable is not None:
        return SitePrices([], f"no load forecast: {made.unavailable}")
    if not pools:
        return SitePrices([], "the site has no pools to price")
    devices = sum(pool.count for pool in pools)
    loads = [
        tuple(pool_share_utilisation(v, devices) for v in (m, lo, hi))
        for m, lo, hi in zip(made.mean, made.lower, made.upper, strict=True)
    ]
    found: list[PoolPrices] = []
    for pool in sorted(pools, key=lambda p: p.id):
        hours: list[HourPrice] = []
        for k, (u_mean, u_lower, u_upper) in enumerate(loads):
            start = made.start + k * HOUR
            prices: list[int] = []
            tou = Decimal(1)
            for u in (u_mean, u_lower, u_upper):
                breakdown, tou, _ = market_service.price_at(
                    pool,
                    site,
                    1,
                    DEVICE_HOUR_S,
                    start=start,
                    utilisation=u,
                    preemptible=False,
                    data_gb=0.0,
                    rules=rules,
                )
                prices.append(breakdown.total_fen)
            local = (start + timedelta(hours=8)).hour
            hours.append(
                HourPrice(
                    start, local, tou, (u_mean, u_lower, u_upper), (prices[0], prices[1], prices[2])
                )
            )
        # the cheapest at the mean load; on a tie the earliest (min keeps the first)
        cheapest = min(hours, key=lambda h: h.price_fen[0]) if hours else None
        found.append(
            PoolPrices(
                pool.id, pool.device, pool.count, pool.price_fen_per_device_hour, hours, cheapest
            )
        )
    return SitePrices(found, None)


# (site, first hour, the forecast's (mean, lower, upper), its pools as (id, device, count,
# posted price), its province, the rules) -> the site's prices
PriceKey = tuple[
    str,
    datetime,
    tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]],
    tuple[tuple[str, str, int, int], ...],
    str,
    market.PricingRules,
]
_price_cache: dict[PriceKey, SitePrices] = {}


def price_forecasts(session: Session, made: list[SiteForecast]) -> dict[str, SitePrices]:
    """The price forecasts of the sites in `made`, by site id, with the pools' posted prices and
    the pricing rules (`services.market.pricing_rules`) of this unit of work. Each is kept, like
    the load forecast it is made from, until the hour turns, under a key that holds everything
    it is priced from (the forecast, the pools' counts and posted prices, the site's province,
    the rules), so a changed posted price or rule is priced again at once."""
    rules = market_service.pricing_rules(session)
    ids = [f.site for f in made]
    sites = {row.id: row for row in session.scalars(select(SiteRow).where(SiteRow.id.in_(ids)))}
    pools: dict[str, list[PoolRow]] = {sid: [] for sid in ids}
    for pool in session.scalars(select(PoolRow).where(PoolRow.site_id.in_(ids))):
        pools[pool.site_id].append(pool)
    found: dict[str, SitePrices] = {}
    current = {f.start for f in made}
    with _cache_lock:
        for stale in [k for k in _price_cache if k[1] not in current]:  # an earlier hour's
            del _price_cache[stale]
    for f in made:
        signature = tuple(
            sorted((p.id, p.device, p.count, p.price_fen_per_device_hour) for p in pools[f.site])
        )
        load = (tuple(f.mean), tuple(f.lower), tuple(f.upper))
        key: PriceKey = (f.site, f.start, load, signature, sites[f.site].province, rules)
        with _cache_lock:
            kept = _price_cache.get(key)
        if kept is None:
            kept = site_prices(sites[f.site], pools[f.site], f, rules)
            with _cache_lock:
                _price_cache[key] = kept
        found[f.site] = kept
    return found


def _hour_price_read(at: HourPrice) -> dict[str, Any]:
    mean, lower, upper = at.price_fen
    u_mean, u_lower, u_upper = at.utilisation
    return {
        "hour": iso_utc(at.hour),
        "local_hour": at.local_hour,
        "time_of_use": str(at.time_of_use),
        "utilisation": float(u_mean),
        "utilisation_at_lower": float(u_lower),
        "utilisation_at_upper": float(u_upper),
        "price_fen": mean,
        "price_fen_at_lower": lower,
        "price_fen_at_upper": upper,
    }


def _prices_read(found: SitePrices) -> dict[str, Any]:
    return {
        "prices": [
            {
                "pool": p.pool,
                "device": p.device,
                "count": p.count,
                "posted_fen_per_device_hour": p.posted_fen_per_device_hour,
                "hours": [_hour_price_read(h) for h in p.hours],
                "cheapest": None if p.cheapest is None else _hour_price_read(p.cheapest),
            }
            for p in found.pools
        ],
        "prices_unavailable": found.unavailable,
    }


def iso_utc(moment: datetime) -> str:
    """`moment` in UTC, ISO 8601 with `Z` (as the API writes hours)."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def forecast_read(
    start: datetime,
    made: list[SiteForecast],
    hours: int,
    level: float,
    prices: dict[str, SitePrices] | None = None,
) -> dict[str, Any]:
    """The JSON body of `GET /v1/forecasts`; each site's `prices` and `prices_unavailable` when
    `prices` (`price_forecasts`) is given (the console's load chart leaves them out)."""
    return {
        "start": iso_utc(start),
        "hours": hours,
        "level": level,
        "unit": "busy devices (mean over the hour)",
        "method": forecasting.model.METHOD,
        "sites": [
            {
                "site": f.site,
                "history_hours": f.history_hours,
                "history": f.history,
                "actual": [{"hour": iso_utc(hour), "value": value} for hour, value in f.actual],
                "mean": f.mean,
                "lower": f.lower,
                "upper": f.upper,
                "weights": None
                if f.weights is None
                else [{"first_h": w.first_h, "last_h": w.last_h, **w.named()} for w in f.weights],
                "unavailable": f.unavailable,
                **({} if prices is None else _prices_read(prices[f.site])),
            }
            for f in made
        ],
    }
