"""The load-forecast page: `/console/forecasts?site=ID`, one site's busy devices per hour over
the last 72 hours beside the forecast of the next 24 with its 80% interval, drawn as "actual vs
forecast" by static/console.js (`drawForecast`) with a text alternative (a summary and an hourly
table).

The figures are the API's own: the page asks `services.forecasts.site_forecasts` and formats
the answer with `forecast_read`, exactly as `GET /v1/forecasts` does, and forecasts are kept
until the hour turns, so the page, the API and `suanli forecast` show the same numbers. Any
principal may open it, as any may call the API; a provider sees its own first site first, the
others the first site registered. A site with too little history gets no forecast: the page says
how many whole hours it needs and has, and still draws the actual hours there are.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import Query, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session

from suanli.console import i18n
from suanli.console.web import Console, problem
from suanli.errors import SuanliError
from suanli.forecast import min_history_h
from suanli.forecast.model import LEVEL
from suanli.services import carbon, forecasts, readmodels
from suanli.services.core import Actor
from suanli.services.readmodels import SiteView, Viewer

HOURS = 24  # the horizon the page shows
CHART_LABELS = ("actual", "mean", "now", "x_axis", "y_axis", "devices")


def _pick(rows: tuple[SiteView, ...], who: Viewer, asked: str) -> str | None:
    """The site to show: the one asked for, else the provider's own first, else the first."""
    if asked:
        return asked  # an unknown site is a 404 from the service
    own = [r.id for r in rows if r.owner_id == who.id]
    return own[0] if own else rows[0].id if rows else None


def _parse(moment: str) -> datetime:
    return datetime.fromisoformat(moment.replace("Z", "+00:00"))


def _hourly(start: datetime, row: dict[str, Any]) -> list[dict[str, Any]]:
    """The table beside the chart: each actual hour, then each forecast hour, oldest first,
    with its offset from the current hour and its start in China Standard Time."""

    def line(hour: datetime, **values: float | None) -> dict[str, Any]:
        offset = round((hour - start) / timedelta(hours=1))
        local = hour + i18n.CST
        return {"offset": offset, "hour": f"{local:%m-%d %H:%M}", **values}

    rows = [line(_parse(a["hour"]), actual=a["value"]) for a in row["actual"]]
    for k, (mean, lower, upper) in enumerate(
        zip(row["mean"], row["lower"], row["upper"], strict=True)
    ):
        rows.append(line(start + k * timedelta(hours=1), mean=mean, lower=lower, upper=upper))
    return rows


def _percent(level: float) -> str:
    return f"{level * 100:g}"


def _carbon(
    session: Session,
    rows: tuple[SiteView, ...],
    chosen: str,
    start: datetime,
    t: Callable[[str], str],
    level: str,
) -> dict[str, Any]:
    """The chosen site's province's observed carbon intensity and its forecast
    (`services.carbon`, as `GET /v1/carbon` answers), drawn like the load; or why there is
    none (the pass then uses the documented daily shape)."""
    province = next((r.province for r in rows if r.id == chosen), None)
    if province is None:
        return {"carbon": None}
    found = carbon.forecasts(session, [province])[province]
    if found.unavailable is not None or found.start is None:
        return {"carbon": {"province": province, "why": found.unavailable}}
    lead = round((found.start - start) / timedelta(hours=1))
    labels = {key: t(f"fc.{key}") for key in CHART_LABELS}
    labels |= {
        "interval": t("fc.interval").format(level=level),
        "actual": t("fc.observed"),
        "y_axis": t("fc.carbon_y_axis"),
        "devices": t("fc.carbon_unit"),
    }
    hours = HOURS - lead  # the forecast to the page's horizon
    series = {
        "actual": [
            {"hour": forecasts.iso_utc(hour), "value": value} for hour, value in found.observed
        ],
        "first_h": lead,
        **{
            name: [round(float(v), 4) for v in values[:hours]]
            for name, values in (
                ("mean", found.ahead),
                ("lower", found.lower),
                ("upper", found.upper),
            )
        },
    }
    return {
        "carbon": {
            "province": province,
            "why": None,
            "source": found.source,
            "lead": lead,
            "series": series,
            "chart": {
                "start": forecasts.iso_utc(start),
                "hours": HOURS,
                "integer": False,
                "decimals": 3,
                "site": series,
                "labels": labels,
            },
        }
    }


def install(console: Console) -> None:
    router = console.router

    @router.get("/forecasts", response_class=HTMLResponse)
    async def forecasts_page(
        request: Request, site: Annotated[str, Query(max_length=128)] = ""
    ) -> Response:
        language = console.language(request)

        def t(key: str) -> str:
            return i18n.translate(key, language)

        def work(session: Session, actor: Actor) -> dict[str, Any]:
            who = readmodels.viewer(actor)
            rows = readmodels.sites(session)
            chosen = _pick(rows, who, site.strip())
            found: dict[str, Any] = {"who": who, "sites": rows, "chosen": chosen, "row": None}
            if chosen is None:
                return found
            start, made = forecasts.site_forecasts(session, chosen, HOURS, LEVEL)
            body = forecasts.forecast_read(start, made, HOURS, LEVEL)  # GET /v1/forecasts' body
            row = body["sites"][0]
            level = _percent(LEVEL)
            need = min_history_h(HOURS)
            labels = {key: t(f"fc.{key}") for key in CHART_LABELS}
            labels["interval"] = t("fc.interval").format(level=level)
            return {
                **found,
                **_carbon(session, rows, chosen, start, t, level),
                "row": row,
                "site_name": next((r.name for r in rows if r.id == chosen), chosen),
                "start": start,
                "method": body["method"],
                "need": need,
                "left": max(0, need - row["history_hours"]),
                "hourly": _hourly(start, row),
                "chart": {"start": body["start"], "hours": HOURS, "site": row, "labels": labels},
            }

        try:
            found = await console.act(request, False, work)
        except SuanliError as exc:
            return await problem(console, request, exc)
        return console.page(
            request,
            "forecasts.html",
            found.pop("who"),
            hours=HOURS,
            level=_percent(LEVEL),
            **found,
        )
