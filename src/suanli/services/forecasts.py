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
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from suanli import forecast as forecasting
from suanli.errors import InvalidValue
from suanli.forecast.series import hourly_held
from suanli.services.core import NotFound, State, aware, now
from suanli.store.models import EventRow, SiteRow, TaskRow

HISTORY_H = 56 * 24  # what the forecaster can use: 28 days to fit, 28 more to calibrate
ACTUAL_H = 72  # the recent actual hours served beside each forecast (three daily cycles)
HOLDING = frozenset({State.INITIALIZING.value, State.RUNNING.value})
HOUR = timedelta(hours=1)
CHUNK = 500  # task ids per query


def _hour_floor(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def _hour_ceil(moment: datetime) -> datetime:
    floor = _hour_floor(moment)
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
    weights: tuple[float, float, float] | None
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
    current = _hour_floor(now(session))
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


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def forecast_read(
    start: datetime, made: list[SiteForecast], hours: int, level: float
) -> dict[str, Any]:
    """The JSON body of `GET /v1/forecasts`."""
    return {
        "start": _iso(start),
        "hours": hours,
        "level": level,
        "unit": "busy devices (mean over the hour)",
        "method": forecasting.model.METHOD,
        "sites": [
            {
                "site": f.site,
                "history_hours": f.history_hours,
                "history": f.history,
                "actual": [{"hour": _iso(hour), "value": value} for hour, value in f.actual],
                "mean": f.mean,
                "lower": f.lower,
                "upper": f.upper,
                "weights": None
                if f.weights is None
                else dict(zip(("naive", "seasonal_naive", "holt_winters"), f.weights, strict=True)),
                "unavailable": f.unavailable,
            }
            for f in made
        ],
    }
