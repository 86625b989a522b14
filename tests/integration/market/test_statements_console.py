"""The console's payout statements and budgets, in a real headless Chromium and over plain HTTP,
against a live server whose database holds real settled orders: a provider opens its statements,
one statement and its CSV; a consumer sets a budget through the form and sees its alerts on the
budgets page and the money page; another provider cannot open the statement. Pages load on a
desktop and a phone with no console errors, labelled fields and no sideways scrolling."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import pytest
from playwright.sync_api import Browser

from suanli.services import budgets
from tests.integration.platform.browser import (
    DESKTOP,
    PHONE,
    browser,
    form_csrf,
    http_sign_in,
    sign_in,
)
from tests.integration.platform.browser import open_page as _open
from tests.integration.platform.conftest import Platform, database_url, platform
from tests.integration.platform.test_console import UNLABELLED, _shot, _sideways

from .money_world import World

__all__ = ["browser", "database_url", "platform"]  # fixtures
pytestmark = [pytest.mark.slow, pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)]


def _money(platform: Platform) -> tuple[World, str, dict[str, int]]:
    """Orders settled two months ago and one now (made while the server is stopped), and the
    past month's payout run over the API. The world (closed), the period, fen figures."""
    ago = datetime.now(UTC) - timedelta(days=62)
    period = f"{ago.year}-{ago.month:02d}"
    platform.stop()
    world = World(platform.database_url, datetime(ago.year, ago.month, 3, 4, tzinfo=UTC))
    try:
        provider, world_other = world.provider("dc"), world.provider("other")
        lab = world.consumer("lab", 10_000_000)
        past = world.order(lab, provider, 600.0)
        money = world.finish(past, 400.0)
        world.clock.set(datetime.now(UTC) - timedelta(seconds=2))
        current = world.order(lab, provider, 600.0)
        now_charge = world.finish(current, 600.0)["charge"]
    finally:
        world.close()
    del world_other
    platform.start()
    with platform.client(world.tokens["op"]) as http:
        made = http.post("/v1/payouts/runs", json={"period": period})
        assert made.status_code == 201, made.text
    figures = {"net": money["provider"] - money["sla_credit"], "now_charge": now_charge}
    return world, period, {**figures, "charge": money["charge"]}


def test_statements_and_budgets_in_the_console(browser: Browser, platform: Platform) -> None:
    world, period, figures = _money(platform)
    provider, lab = world.tokens["dc"], world.tokens["lab"]
    with http_sign_in(platform, provider) as http:
        listing = http.get("/console/statements")
        assert listing.status_code == 200 and period in listing.text
        statement_id = listing.text.split('href="/console/statements/')[1].split('"')[0]
        page = http.get(f"/console/statements/{statement_id}")
        assert page.status_code == 200
        document = http.get(f"/console/statements/{statement_id}.csv")
        assert document.headers["content-type"].startswith("text/csv")
        rows = list(csv.reader(io.StringIO(document.text.lstrip("\ufeff"))))
        assert dict(r for r in rows if len(r) == 2)["paid_fen"] == str(figures["net"])
        money = http.get("/console/money")
        assert money.status_code == 200 and 'id="statement-panel"' in money.text
    with http_sign_in(platform, world.tokens["other"]) as http:
        assert http.get(f"/console/statements/{statement_id}").status_code == 404
        assert http.get(f"/console/statements/{statement_id}.csv").status_code == 404
    with http_sign_in(platform, lab) as http:
        assert http.get("/console/statements").status_code == 403
        form = http.get("/console/budgets")
        assert form.status_code == 200
        limit = figures["now_charge"] + 1  # this month's spend is past 80% of it
        saved = http.post(
            "/console/budgets",
            data={
                "csrf": form_csrf(form.text),
                "period": "month",
                "limit_fen": str(limit),
                "alert_bp": "5000,8000",
            },
            headers={"Origin": platform.url},
        )
        assert saved.status_code == 303, saved.text
        forged = {"period": "month", "limit_fen": "1", "alert_bp": ""}
        assert http.post("/console/budgets", data=forged).status_code == 403  # no CSRF token
        elsewhere = {"Origin": "http://127.0.0.1:1"}
        forged["csrf"] = form_csrf(form.text)
        assert http.post("/console/budgets", data=forged, headers=elsewhere).status_code == 403
    noted = World(platform.database_url, datetime.now(UTC))  # what the pass does per order
    try:
        with noted.unit() as s:
            budgets.note_spend(s, world.consumers[0].id, noted.clock.now())
    finally:
        noted.close()

    for viewport, size in ((DESKTOP, "desktop"), (PHONE, "phone")):
        watched = _open(browser, viewport)
        page = watched.page
        sign_in(watched, platform, provider)
        for path in ("statements", f"statements/{statement_id}", "money"):
            response = page.goto(f"{platform.url}/console/{path}")
            assert response is not None and response.status == 200, path
            page.wait_for_load_state("networkidle")
            assert page.evaluate(UNLABELLED) == [], path
            assert _sideways(page) <= 1, (path, size)
            _shot(watched, f"provider-{path.split('/')[0]}-{size}")
        page.goto(f"{platform.url}/console/statements/{statement_id}")
        assert page.locator("#statement-lines tbody tr").count() == 1
        assert watched.errors == [], watched.errors
        page.context.close()

        watched = _open(browser, viewport)
        page = watched.page
        sign_in(watched, platform, lab)
        page.goto(f"{platform.url}/console/budgets")
        row = page.locator("#budget-month")
        assert "50%" in row.inner_text() and "80%" in row.inner_text()
        assert page.evaluate(UNLABELLED) == []
        assert _sideways(page) <= 1, size
        _shot(watched, f"consumer-budgets-{size}")
        page.goto(f"{platform.url}/console/money")
        assert page.locator("#budget-alerts li").count() == 2
        assert _sideways(page) <= 1, size
        assert watched.errors == [], watched.errors
        page.context.close()
