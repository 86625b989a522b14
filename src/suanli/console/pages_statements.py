"""Payout statements and budgets in the console.

* `/console/statements` (providers: their own; the operator: every provider's): the payout
  statements, newest period first; `/console/statements/{id}` one statement (opening, earned,
  paid, closing, a line per settled order) with its CSV download (`/console/statements/{id}.csv`)
  and a printable HTML rendition (`render_statement`, also what `GET /v1/statements/{id}.html`
  answers);
* `/console/budgets` (consumers: their own; the operator: every consumer's): each budget with
  this period's spend and the alerts crossed in it, a form to set one and a button to delete it;
* `money_panel`: the small panel the money page shows (a consumer's alerts, a provider's latest
  statement), with links here.

Everything goes through `services.payouts` and `services.budgets` with the API's checks.
"""

from __future__ import annotations

from datetime import datetime
from functools import cache
from typing import Any

from fastapi import Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy.orm import Session

from suanli.console import i18n
from suanli.console.web import HERE, PREFIX, Console, problem
from suanli.errors import InvalidValue, SuanliError
from suanli.services import budgets, payouts, readmodels
from suanli.services.core import Actor, Role

LATEST_ALERTS = 5  # on the money page


def _dated(statement: dict[str, Any]) -> dict[str, Any]:
    """A statement with its times as datetimes (the templates format them)."""
    lines = [
        {**line, "settled": datetime.fromisoformat(line["settled_at"])}
        for line in statement["lines"]
    ]
    return {**statement, "lines": lines, "created": datetime.fromisoformat(statement["created_at"])}


def _helpers(language: str) -> dict[str, Any]:
    return {
        "lang": language,
        "t": lambda key: i18n.translate(key, language),
        "number": lambda v, d=0: i18n.number(v, language, d),
        "money": lambda fen: i18n.money(fen, language),
        "when": lambda m: i18n.when(m, language),
    }


@cache
def _documents() -> Environment:
    return Environment(
        loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"])
    )


def render_statement(statement: dict[str, Any], language: str) -> str:
    """A statement (`payouts.statement_read`) as a standalone, printable HTML document."""
    template = _documents().get_template("statement_doc.html")
    return template.render(statement=_dated(statement), **_helpers(language))


def money_panel(session: Session, who: Actor) -> dict[str, Any]:
    """What the money page shows of budgets and statements: a consumer's budgets (spend of
    the period, newest alerts first), a provider's latest statement."""
    role = readmodels.viewer(who).role
    panel: dict[str, Any] = {"budgets": [], "alerts": [], "statement": None}
    if role == Role.CONSUMER.value:
        views = [budgets.view_read(v) for v in budgets.listing(session, who)]
        panel["budgets"] = views
        alerts = [
            {
                **alert,
                "period": view["period"],
                "limit_fen": view["limit_fen"],
                "when": datetime.fromisoformat(alert["at"]),
            }
            for view in views
            for alert in view["alerts"]
        ]
        panel["alerts"] = sorted(alerts, key=lambda a: a["at"], reverse=True)[:LATEST_ALERTS]
    if role == Role.PROVIDER.value:
        found = payouts.statements(session, who)
        panel["statement"] = payouts.statement_read(found[0]) if found else None
    return panel


def _thresholds(text: str) -> list[int]:
    """'5000, 8000, 10000' -> [5000, 8000, 10000] (422 naming alert_bp otherwise)."""
    try:
        return [int(part) for part in text.replace("，", ",").split(",") if part.strip()]
    except ValueError:
        raise InvalidValue(
            "alert_bp",
            text,
            "whole basis points separated by commas, e.g. 5000,8000,10000",
            "以逗号分隔的整数（万分比），如 5000,8000,10000",
        ) from None


def install(console: Console) -> None:
    router = console.router

    @router.get("/statements", response_class=HTMLResponse)
    async def statements_page(request: Request) -> Response:
        def work(session: Session, who: Actor) -> dict[str, Any]:
            rows = payouts.statements(session, who)
            return {
                "who": readmodels.viewer(who),
                "statements": [payouts.statement_read(row) for row in rows],
            }

        try:
            found = await console.act(request, False, work)
        except SuanliError as exc:
            return await problem(console, request, exc)
        return console.page(request, "statements.html", found.pop("who"), **found)

    @router.get("/statements/{statement_id}.csv")
    async def statement_download(request: Request, statement_id: str) -> Response:
        try:
            text = await console.act(
                request,
                False,
                lambda session, who: payouts.statement_csv(
                    payouts.statement_read(payouts.get_statement(session, who, statement_id))
                ),
            )
        except SuanliError as exc:
            return await problem(console, request, exc)
        return Response(
            text.encode("utf-8"),
            media_type="text/csv; charset=utf-8",
            headers={
                "Content-Disposition": f'attachment; filename="{statement_id}.csv"',
                "Cache-Control": "no-store",
            },
        )

    @router.get("/statements/{statement_id}", response_class=HTMLResponse)
    async def statement_page(request: Request, statement_id: str) -> Response:
        def work(session: Session, who: Actor) -> dict[str, Any]:
            row = payouts.get_statement(session, who, statement_id)
            return {"who": readmodels.viewer(who), "statement": _dated(payouts.statement_read(row))}

        try:
            found = await console.act(request, False, work)
        except SuanliError as exc:
            return await problem(console, request, exc)
        return console.page(request, "statement.html", found.pop("who"), **found)

    @router.get("/budgets", response_class=HTMLResponse)
    async def budgets_page(request: Request) -> Response:
        def work(session: Session, who: Actor) -> dict[str, Any]:
            views = [budgets.view_read(v) for v in budgets.listing(session, who)]
            for view in views:
                view["start"] = datetime.fromisoformat(view["period_start"])
                view["end"] = datetime.fromisoformat(view["period_end"])
                for alert in view["alerts"]:
                    alert["when"] = datetime.fromisoformat(alert["at"])
            return {"who": readmodels.viewer(who), "budgets": views}

        try:
            found = await console.act(request, False, work)
        except SuanliError as exc:
            return await problem(console, request, exc)
        default = request.app.state.platform.settings.budget_alert_bp
        return console.page(
            request,
            "budgets.html",
            found.pop("who"),
            periods=budgets.PERIODS,
            default_alerts=",".join(str(bp) for bp in default),
            **found,
        )

    @router.post("/budgets", response_class=HTMLResponse)
    async def set_budget(
        request: Request,
        period: str = Form(max_length=8),
        limit_fen: int = Form(ge=0, le=budgets.MAX_LIMIT_FEN),
        alert_bp: str = Form("", max_length=200),
        consumer_id: str = Form("", max_length=64),
    ) -> Response:
        default = request.app.state.platform.settings.budget_alert_bp

        def work(session: Session, who: Actor) -> None:
            thresholds = _thresholds(alert_bp) if alert_bp.strip() else list(default)
            budgets.put(session, who, period, limit_fen, thresholds, consumer_id.strip() or None)

        try:
            await console.act(request, True, work)
        except SuanliError as exc:
            return await problem(console, request, exc)
        return RedirectResponse(f"{PREFIX}/budgets", status_code=303)

    @router.post("/budgets/{period}/delete", response_class=HTMLResponse)
    async def delete_budget(
        request: Request, period: str, consumer_id: str = Form("", max_length=64)
    ) -> Response:
        try:
            await console.act(
                request,
                True,
                lambda session, who: budgets.remove(
                    session, who, period, consumer_id.strip() or None
                ),
            )
        except SuanliError as exc:
            return await problem(console, request, exc)
        return RedirectResponse(f"{PREFIX}/budgets", status_code=303)
