"""Budgets on a real database (SQLite and PostgreSQL) with real orders: the spend rule (an order
counts in the period it was opened, its escrow while OPEN, its charge once SETTLED), calendar
periods in China Standard Time, the reason a task waits, alerts written once per threshold and
period (also under two concurrent passes on PostgreSQL); then the API and the CLI on a live
server."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from suanli.errors import InvalidValue
from suanli.services import budgets, market
from suanli.services.core import NotFound
from suanli.store.models import BudgetAlertRow, EventRow, OrderRow
from tests.integration.platform.conftest import Platform, database_url, platform
from tests.waiting import lock_waiters, poll

from .money_world import TASK, World

__all__ = ["database_url", "platform"]  # fixtures

# Monday 9 Nov 2026, 23:30 in China Standard Time
START = datetime(2026, 11, 9, 15, 30, tzinfo=UTC)


@pytest.fixture
def world(database_url: str) -> Iterator[World]:
    made = World(database_url, START)
    yield made
    made.close()


@pytest.mark.parametrize(
    ("period", "moment", "start", "end"),
    [
        # 1 Dec 2026 00:30 CST is still 30 Nov in UTC: it is December's first day in China
        (
            "day",
            "2026-11-30T16:30:00+00:00",
            "2026-11-30T16:00:00+00:00",
            "2026-12-01T16:00:00+00:00",
        ),
        (
            "month",
            "2026-11-30T16:30:00+00:00",
            "2026-11-30T16:00:00+00:00",
            "2026-12-31T16:00:00+00:00",
        ),
        (
            "month",
            "2026-11-30T15:59:59+00:00",
            "2026-10-31T16:00:00+00:00",
            "2026-11-30T16:00:00+00:00",
        ),
        # Sunday 15 Nov 23:59 CST is in the week of Monday 9 Nov
        (
            "week",
            "2026-11-15T15:59:00+00:00",
            "2026-11-08T16:00:00+00:00",
            "2026-11-15T16:00:00+00:00",
        ),
        (
            "week",
            "2026-11-15T16:00:00+00:00",
            "2026-11-15T16:00:00+00:00",
            "2026-11-22T16:00:00+00:00",
        ),
        (
            "month",
            "2026-12-15T00:00:00+00:00",
            "2026-11-30T16:00:00+00:00",
            "2026-12-31T16:00:00+00:00",
        ),
    ],
)
def test_periods_are_calendar_periods_in_china_standard_time(
    period: str, moment: str, start: str, end: str
) -> None:
    found = budgets.period_bounds(period, datetime.fromisoformat(moment))
    assert found == (datetime.fromisoformat(start), datetime.fromisoformat(end))


def _alerts(world: World) -> list[tuple[str, int]]:
    with world.unit() as s:
        rows = s.execute(
            select(BudgetAlertRow.budget_id, BudgetAlertRow.threshold_bp).order_by(
                BudgetAlertRow.budget_id, BudgetAlertRow.threshold_bp
            )
        ).all()
        events = s.scalar(select(func.count()).where(EventRow.kind == "budget.alert"))
    assert events == len(rows)  # an event for every alert row, and no more
    return [(budget, bp) for budget, bp in rows]


def test_spend_check_and_alerts_with_real_orders(world: World) -> None:
    provider = world.provider("dc")
    lab = world.consumer("lab", 10_000_000)
    first = world.order(lab, provider, 600.0)  # Monday 9 Nov, 23:30 CST
    escrow = world.escrow(first)
    assert escrow > 1_000
    with world.unit() as s:
        month = budgets.put(s, lab, "month", escrow + 100, [5000, 8000, 10_000])
        day = budgets.put(s, lab, "day", 10 * escrow, [5000])
        month_id, day_id = month.id, day.id
    with world.unit() as s:  # the OPEN order counts with its escrow
        moment = world.clock.now()
        assert budgets.check(s, lab.id, 100, moment) is None
        reason = budgets.check(s, lab.id, 101, moment)
    assert reason == (
        f"budget: month budget {escrow + 100} fen, spent {escrow}, this task needs up to 101 — "
        "waits until the period ends or the budget is raised / "
        f"预算：月预算 {escrow + 100} 分，已用 {escrow} 分，本任务最多需 101 分——"
        "等到本期结束或预算提高后再运行"
    )
    with world.unit() as s:
        budgets.note_spend(s, lab.id, world.clock.now())
    assert _alerts(world) == [(month_id, 5000), (month_id, 8000)]
    with world.unit() as s:  # again: nothing new
        budgets.note_spend(s, lab.id, world.clock.now())
    assert len(_alerts(world)) == 2

    world.clock.advance(1800)  # Tuesday 10 Nov, 00:00 CST: a new day, the same month
    charge = world.finish(first, 150.0)["charge"]
    assert 0 < charge < escrow  # settled: it counts with what it cost
    with world.unit() as s:
        views = {v.budget.period: v for v in budgets.listing(s, lab)}
        assert budgets.check(s, lab.id, escrow + 100 - charge, world.clock.now()) is None
    assert views["month"].spent_fen == charge
    assert views["day"].spent_fen == 0  # opened yesterday (in China Standard Time)
    assert [a.threshold_bp for a in views["month"].alerts] == [5000, 8000]
    assert views["day"].period_start == datetime(2026, 11, 9, 16, tzinfo=UTC)

    # accepting a quote is spending too: over the month budget it is refused (402), and
    # nothing is created (no order, no task, no money held)
    orders_before = _orders(world)
    with pytest.raises(budgets.BudgetExceeded, match="month budget"):
        world.order(lab, provider, 6_000.0)
    assert _orders(world) == orders_before
    # the month raised to exactly what the second order holds: accepted, the month at 100%
    with world.unit() as s:
        quote = market.quote(
            s, lab, {**TASK, "resources": {**TASK["resources"], "duration_s": 6_000.0}}, "balanced"
        )
        needed = int(quote.options["options"][0]["price_range"]["max"]["fen"])
        budgets.put(s, lab, "month", charge + needed, [5000, 8000, 10_000])
    second = world.order(lab, provider, 6_000.0)  # today: its escrow counts in the day too
    assert world.escrow(second) == needed
    with world.unit() as s:
        views = {v.budget.period: v for v in budgets.listing(s, lab)}
        budgets.note_spend(s, lab.id, world.clock.now())
    assert views["day"].spent_fen == world.escrow(second)
    assert views["month"].spent_fen == charge + world.escrow(second)
    assert (month_id, 10_000) in _alerts(world)
    assert ((day_id, 5000) in _alerts(world)) == (world.escrow(second) * 2 >= 10 * escrow)
    with world.unit() as s:
        assert budgets.check(s, lab.id, 1, world.clock.now()) is not None  # over the month

    world.clock.set(datetime(2026, 11, 30, 16, 0, tzinfo=UTC))  # December (CST): a new month
    with world.unit() as s:
        assert budgets.check(s, lab.id, escrow + 100, world.clock.now()) is None
        views = {v.budget.period: v for v in budgets.listing(s, lab)}
    assert views["month"].spent_fen == 0 and views["month"].alerts == []
    assert world.verify() is None


def test_budgets_belong_to_their_consumer(world: World) -> None:
    lab, other = world.consumer("lab", 1_000), world.consumer("other", 1_000)
    provider = world.provider("dc")
    with world.unit() as s:
        budgets.put(s, world.operator, "week", 5_000, [5000], consumer_id=lab.id)
    with world.unit() as s:
        assert [v.budget.principal_id for v in budgets.listing(s, lab)] == [lab.id]
        assert budgets.listing(s, other) == []
        with pytest.raises(NotFound):
            budgets.put(s, other, "week", 1, [5000], consumer_id=lab.id)
    with world.unit() as s, pytest.raises(InvalidValue) as bad:
        budgets.put(s, lab, "year", 1, [5000])
    assert bad.value.field == "period"
    with world.unit() as s, pytest.raises(InvalidValue) as bad:
        budgets.put(s, lab, "day", -1, [5000])
    assert bad.value.field == "limit_fen"
    with world.unit() as s, pytest.raises(InvalidValue) as bad:
        budgets.put(s, lab, "day", 1, [0, 20_000])
    assert bad.value.field == "alert_bp"
    with world.unit() as s, pytest.raises(InvalidValue) as bad:
        budgets.put(s, world.operator, "day", 1, [5000])
    assert bad.value.field == "consumer_id"
    with world.unit() as s:
        budgets.remove(s, lab, "week")
    with world.unit() as s:
        assert budgets.listing(s, lab) == []
        assert budgets.check(s, lab.id, 10**12, world.clock.now()) is None  # no budget: no cap
    del provider


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_two_concurrent_passes_write_an_alert_once(world: World) -> None:
    provider = world.provider("dc")
    lab = world.consumer("lab", 10_000_000)
    order = world.order(lab, provider, 600.0)
    with world.unit() as s:
        budgets.put(s, lab, "month", world.escrow(order), [5000, 10_000])
    hold, done, errors = threading.Event(), threading.Event(), []

    def first() -> None:
        try:
            with world.unit() as s:
                budgets.note_spend(s, lab.id, world.clock.now())
                done.set()
                hold.wait(60)  # uncommitted until the second pass waits on the alert's key
        except Exception as exc:
            errors.append(exc)
            done.set()

    def second() -> None:
        try:
            with world.unit() as s:
                budgets.note_spend(s, lab.id, world.clock.now())
        except Exception as exc:
            errors.append(exc)

    one = threading.Thread(target=first)
    one.start()
    assert done.wait(30)
    two = threading.Thread(target=second)
    two.start()

    assert poll(lambda: lock_waiters(world.engine), timeout_s=30)
    hold.set()
    one.join(60)
    two.join(60)
    assert errors == []
    assert [bp for _, bp in _alerts(world)] == [5000, 10_000]


def test_budgets_over_the_api_and_cli(platform: Platform) -> None:
    """A live server on a database where the consumer has a settled and an open order (made
    while the server was stopped, at the current time): budgets set, listed with the spend and
    alerts, refused with the field named, deleted; the CLI sets and lists."""
    platform.stop()
    world = World(platform.database_url, datetime.now(UTC) - timedelta(seconds=5))
    try:
        provider = world.provider("dc")
        lab = world.consumer("lab", 10_000_000)
        world.consumer("other", 1_000)
        settled = world.order(lab, provider, 600.0)
        charge = world.finish(settled, 300.0)["charge"]
        still_open = world.order(lab, provider, 600.0)
        spent = charge + world.escrow(still_open)
    finally:
        world.close()
    platform.start()
    lab_token, operator = world.tokens["lab"], world.tokens["op"]
    with platform.client(lab_token) as http:
        made = http.put("/v1/budgets/day", json={"limit_fen": spent * 2})
        assert made.status_code == 200, made.text
        body = made.json()
        assert (body["spent_fen"], body["left_fen"]) == (spent, spent)
        assert body["alert_bp"] == [5000, 8000, 10_000]  # settings.budget_alert_bp
        bad = http.put("/v1/budgets/year", json={"limit_fen": 1})
        assert bad.status_code == 422 and bad.json()["error"]["field"] == "path.period"
        bad = http.put("/v1/budgets/day", json={"limit_fen": -1})
        assert bad.status_code == 422 and bad.json()["error"]["field"] == "body.limit_fen"
        bad = http.put("/v1/budgets/day", json={"limit_fen": 1, "alert_bp": [0]})
        assert bad.status_code == 422 and "alert_bp" in bad.json()["error"]["field"]
        other = world.consumers[1].id
        refused = http.put("/v1/budgets/day", json={"limit_fen": 1, "consumer_id": other})
        assert refused.status_code == 404
    with platform.client(operator) as http:
        bad = http.put("/v1/budgets/month", json={"limit_fen": 1})
        assert bad.status_code == 422 and bad.json()["error"]["field"] == "consumer_id"
        made = http.put("/v1/budgets/month", json={"limit_fen": spent, "consumer_id": lab.id})
        assert made.status_code == 200 and made.json()["created_by"] != lab.id
    world = World(platform.database_url, datetime.now(UTC))  # the pass notes the spend
    try:
        with world.unit() as s:
            budgets.note_spend(s, lab.id, world.clock.now())
    finally:
        world.close()
    with platform.client(lab_token) as http:
        listed = {b["period"]: b for b in http.get("/v1/budgets").json()["budgets"]}
        assert [a["threshold_bp"] for a in listed["day"]["alerts"]] == [5000]
        assert [a["threshold_bp"] for a in listed["month"]["alerts"]] == [5000, 8000, 10_000]
        assert listed["month"]["left_fen"] == 0
        assert http.delete("/v1/budgets/day").status_code == 204
        assert [b["period"] for b in http.get("/v1/budgets").json()["budgets"]] == ["month"]
    env = {**platform.env, "SUANLI_SERVER": platform.url, "SUANLI_TOKEN": lab_token}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "suanli", "budget", *args],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )

    done = cli("set", "week", "--limit-fen", "123456", "--alert-bp", "9000", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["alert_bp"] == [9000]
    shown = json.loads(cli("list", "--json").stdout)
    assert {b["period"]: b["limit_fen"] for b in shown["budgets"]} == {
        "week": 123456,
        "month": spent,
    }
    refused = cli("set", "year", "--limit-fen", "1")
    assert refused.returncode == 2 and "period" in refused.stderr, refused.stderr
    deleted = cli("delete", "week")
    assert deleted.returncode == 0, deleted.stderr


def _orders(world: World) -> int:
    with world.unit() as s:
        return int(s.scalar(select(func.count()).select_from(OrderRow)) or 0)
