"""The live pass defers work on carbon forecasts made from observed intensity.

The real app on a real store (SQLite, and PostgreSQL when SUANLI_TEST_PG_URL is set) served on a
loopback port, on a virtual clock; the test runs the scheduling loop's pass itself. A site at
the Wuhu cluster (Anhui, an eastern province whose documented daily shape is flat): without
observations a deferrable task starts at once. The operator then feeds 30 days of Anhui's hourly
intensity, which dips every night from 03:00 to 06:00 China Standard Time; the next deferrable
task is deferred into that dip, on the forecast (the hours it is deferred to are in the future,
and nothing of the future was fed). Then every way of feeding bad observations is refused,
naming the field, and leaves nothing written; feeds racing on the same hours all land.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from suanli.services import capacity as capacity_service
from suanli.services.core import Role
from suanli.store.models import CarbonRow, EventRow, TaskRow
from tests.integration.platform.test_deferral_bookings import (
    START,
    Live,
    client,
    row,
    serving,
    site_with_pool,
    token_for,
)

HOUR = timedelta(hours=1)
DAYS = 30
BASE, DIP = 0.70, 0.35  # kg CO2 per kWh: Anhui by day, and in its nightly dip (invented here)
DIP_LOCAL_HOURS = (3, 4, 5)
SPEC = {
    "executors": [{"command": ["true"]}],
    "resources": {"devices": 2, "device_kind": "cpu", "duration_s": 2 * 3600},
    "origin": "合肥",
    "latency_tier": "batch",
    "deferrable": True,
    "deadline_s": 20 * 3600,
}


@pytest.fixture
def live(database_url: str, tmp_path: Path) -> Iterator[Live]:
    with serving(database_url, tmp_path, "green-location") as found:
        yield found


def _wuhu_site(live: Live) -> str:
    return site_with_pool(live, "WUHU")[0]


def _z(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _observed(first: datetime, hours: int) -> list[dict[str, Any]]:
    """Hourly values from `first`: BASE, and DIP in the local hours of the dip."""
    values = []
    for k in range(hours):
        hour = first + k * HOUR
        local = (hour.hour + 8) % 24
        values.append({"hour": _z(hour), "kg_per_kwh": DIP if local in DIP_LOCAL_HOURS else BASE})
    return values


def _submit(http: httpx.Client, name: str) -> str:
    made = http.post("/v1/tasks", json={"name": name, **SPEC})
    assert made.status_code == 201, made.text
    return str(made.json()["id"])


def test_the_pass_defers_on_the_forecast_of_observed_carbon(live: Live) -> None:
    site_id = _wuhu_site(live)
    consumer = token_for(live, Role.CONSUMER, "lab")
    operator = token_for(live, Role.OPERATOR, "ops")
    assert live.platform.elector.step(), "the test's server leads the scheduling"
    http, ops = client(live, consumer), client(live, operator)

    # no observations: Anhui's documented shape is flat, so the task starts now
    first = _submit(http, "before")
    live.platform.schedule_once()
    a = row(live, first)
    assert a.pool_id is not None and a.not_before is None, a.unplaced_reason
    none = http.get("/v1/carbon", params={"province": "Anhui"})
    assert none.status_code == 200, none.text
    (anhui,) = none.json()["provinces"]
    assert anhui["province"] == "安徽" and anhui["mean"] == []
    assert "ESTIMATE" in anhui["unavailable"]

    # the operator feeds 30 days, to the hour before now: a dip every night
    fed = ops.post(
        "/v1/carbon",
        json={
            "province": "安徽",
            "source": "test feed",
            "values": _observed(START - DAYS * 24 * HOUR, DAYS * 24),
        },
    )
    assert fed.status_code == 201, fed.text
    assert fed.json() == {
        "province": "安徽",
        "recorded": DAYS * 24,
        "replaced": 0,
        "first": _z(START - DAYS * 24 * HOUR),
        "last": _z(START - HOUR),
    }
    shown = http.get("/v1/carbon", params={"province": "安徽", "hours": 24}).json()
    (anhui,) = shown["provinces"]
    assert anhui["unavailable"] is None and anhui["start"] == _z(START)
    assert anhui["observed_hours"] == DAYS * 24 and len(anhui["observed"]) == 72
    assert len(anhui["mean"]) == len(anhui["lower"]) == len(anhui["upper"]) == 24
    # the forecast sees the dip at 03:00-06:00 local (hours 3-5 from this local midnight)
    for h, value in enumerate(anhui["mean"]):
        assert value == pytest.approx(DIP if h in DIP_LOCAL_HOURS else BASE, abs=0.02), h
        assert anhui["lower"][h] <= value <= anhui["upper"][h]

    # what the pass prices carbon on: the forecast, at the Wuhu site
    with live.platform.unit_of_work(write=False) as session:
        inputs = capacity_service.step_inputs(session, live.clock.now())
    carbon = inputs.network.series[site_id].carbon_kg_per_kwh
    assert carbon[3] == pytest.approx(DIP, abs=0.02) and carbon[12] == pytest.approx(BASE, abs=0.02)

    second = _submit(http, "after")
    live.platform.schedule_once()
    b = row(live, second)
    assert b.pool_id is None and b.not_before is not None, b.unplaced_reason
    delay = (b.not_before.replace(tzinfo=UTC) - START) / HOUR
    assert delay == 3, b.unplaced_reason  # its 2 h run fits the dip from 03:00
    assert "deferred" in (b.unplaced_reason or "")
    with live.platform.unit_of_work(write=False) as session:
        kinds = [
            (e.kind, e.subject)
            for e in session.scalars(
                select(EventRow).where(EventRow.kind.in_(("carbon.observed", "task.deferred")))
            )
        ]
    assert kinds == [("carbon.observed", "安徽"), ("task.deferred", second)]
    http.close()
    ops.close()


def _count(live: Live) -> int:
    with live.platform.unit_of_work(write=False) as session:
        return int(session.scalar(select(func.count()).select_from(CarbonRow)) or 0)


def test_bad_observations_are_refused_by_name_and_write_nothing(live: Live) -> None:
    operator = token_for(live, Role.OPERATOR, "ops")
    consumer = token_for(live, Role.CONSUMER, "lab")
    good = _observed(START - 3 * HOUR, 3)
    body = {"province": "安徽", "source": "feed", "values": good}
    with client(live, consumer) as http:
        assert http.post("/v1/carbon", json=body).status_code == 403
    cases: list[tuple[dict[str, Any], str]] = [
        ({**body, "province": "Atlantis"}, "province"),
        ({**body, "province": "兰州"}, "province"),  # a city: observations are a province's
        ({**body, "values": [*good, {"hour": _z(START), "kg_per_kwh": 0.5}]}, "values[3].hour"),
        (
            {**body, "values": [*good, {"hour": "2026-01-09T12:30:00Z", "kg_per_kwh": 0.5}]},
            "values[3].hour",
        ),
        (
            {**body, "values": [*good, {"hour": "2026-01-09T12:00:00", "kg_per_kwh": 0.5}]},
            "values[3].hour",
        ),
        ({**body, "values": [*good, {"hour": "yesterday", "kg_per_kwh": 0.5}]}, "values[3].hour"),
        ({**body, "values": [*good, good[0]]}, "values[3].hour"),
        ({**body, "values": [{**good[0], "kg_per_kwh": 580.0}, *good[1:]]}, "values[0].kg_per_kwh"),
        ({**body, "values": [{**good[0], "kg_per_kwh": -0.1}, *good[1:]]}, "values[0].kg_per_kwh"),
        ({**body, "values": []}, "values"),
        ({**body, "source": ""}, "source"),
        ({**body, "extra": 1}, "extra"),
    ]
    with client(live, operator) as http:
        for case, field in cases:
            refused = http.post("/v1/carbon", json=case)
            assert refused.status_code == 422, (field, refused.text)
            error = refused.json()["error"]
            assert field in str(error["field"]), (field, error)
            assert error["message"] and error["message_zh"], error
        assert _count(live) == 0
        assert http.get("/v1/carbon", params={"province": "Atlantis"}).status_code == 422
        assert http.get("/v1/carbon", params={"hours": 49}).status_code == 422

        # an hour fed again is replaced, and says so
        assert http.post("/v1/carbon", json=body).status_code == 201
        again = http.post("/v1/carbon", json={**body, "values": good[1:]})
        assert again.status_code == 201 and again.json()["replaced"] == 2, again.text
        assert _count(live) == 3

        # feeds racing on the same hours all land: none fails, every hour once
        first = START - 10 * 24 * HOUR
        feeds = [
            {**body, "source": f"feed {n}", "values": _observed(first + n * 12 * HOUR, 48)}
            for n in range(6)
        ]
        answers: list[int] = []

        def post(feed: dict[str, Any]) -> None:
            with client(live, operator) as each:
                answers.append(each.post("/v1/carbon", json=feed).status_code)

        threads = [threading.Thread(target=post, args=(f,)) for f in feeds]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert answers == [201] * 6
        assert _count(live) == 3 + (5 * 12 + 48)
    with live.platform.unit_of_work(write=False) as session:
        events = session.scalar(
            select(func.count()).select_from(EventRow).where(EventRow.kind == "carbon.observed")
        )
        assert session.scalar(select(func.count()).select_from(TaskRow)) == 0
    assert events == 2 + 6


def test_the_cli_feeds_a_csv_file_and_shows_the_forecast(live: Live, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from suanli.cli import app

    operator = token_for(live, Role.OPERATOR, "ops")
    server = ["--server", live.url, "--token", operator]
    path = tmp_path / "anhui.csv"
    rows = _observed(START - DAYS * 24 * HOUR, DAYS * 24)
    path.write_text(
        "hour,kg_per_kwh\n" + "".join(f"{r['hour']},{r['kg_per_kwh']}\n" for r in rows),
        encoding="utf-8",
    )
    runner = CliRunner()
    fed = runner.invoke(
        app, ["carbon", "record", str(path), "--province", "Anhui", "--source", "csv", *server]
    )
    assert fed.exit_code == 0, fed.output
    assert f"recorded 已录入 {DAYS * 24:,} h of 安徽" in fed.output
    shown = runner.invoke(
        app, ["carbon", "forecast", "--province", "安徽", "--hours", "6", *server]
    )
    assert shown.exit_code == 0, shown.output
    assert "安徽: kg CO2/kWh from 2026-01-09T16:00:00Z" in shown.output
    assert "+5" in shown.output and "+6" not in shown.output and "source 来源: csv" in shown.output
    as_json = runner.invoke(app, ["carbon", "forecast", "--json", *server])
    assert as_json.exit_code == 0, as_json.output
    assert [p["province"] for p in json.loads(as_json.output)["provinces"]] == ["安徽"]

    bad = tmp_path / "bad.csv"
    bad.write_text("hour,kg_per_kwh\n2026-01-09T12:00:00Z,0.5\n2026-01-09T13:00:00Z,lots\n")
    refused = runner.invoke(
        app, ["carbon", "record", str(bad), "--province", "Anhui", "--source", "csv", *server]
    )
    assert refused.exit_code == 2 and "line 3: kg_per_kwh" in refused.output, refused.output
    assert _count(live) == DAYS * 24


def test_too_few_or_stale_observations_leave_the_documented_shape(live: Live) -> None:
    site_id = _wuhu_site(live)
    operator = token_for(live, Role.OPERATOR, "ops")

    def seen() -> tuple[dict[str, Any], Any]:
        with client(live, operator) as http:
            (anhui,) = http.get("/v1/carbon", params={"province": "Anhui"}).json()["provinces"]
        with live.platform.unit_of_work(write=False) as session:
            inputs = capacity_service.step_inputs(session, live.clock.now())
        return anhui, inputs.network.series[site_id].carbon_kg_per_kwh

    with client(live, operator) as http:
        short = _observed(START - 100 * HOUR, 100)
        fed = http.post("/v1/carbon", json={"province": "安徽", "source": "s", "values": short})
        assert fed.status_code == 201, fed.text
        anhui, carbon = seen()
        assert (
            anhui["mean"] == []
            and "needs 120 contiguous observed hours, has 100" in (anhui["unavailable"])
        )
        assert len(anhui["observed"]) == 72 and anhui["observed"][-1]["hour"] == _z(START - HOUR)
        assert len(set(carbon.tolist())) == 1  # Anhui's documented shape: flat
        # a gap: only the hours after it count
        older = _observed(START - 30 * 24 * HOUR, 30 * 24 - 101)
        http.post("/v1/carbon", json={"province": "安徽", "source": "s", "values": older})
        anhui, _ = seen()
        assert anhui["observed_hours"] == 100 and anhui["unavailable"] is not None
        # the gap filled: a forecast, and the pass prices on it
        gap = _observed(START - 101 * HOUR, 1)
        http.post("/v1/carbon", json={"province": "安徽", "source": "s", "values": gap})
        anhui, carbon = seen()
        assert anhui["observed_hours"] == 30 * 24 and anhui["unavailable"] is None
        assert min(carbon) == pytest.approx(DIP, abs=0.02)
    # a day and more without a feed: stale, back to the shape
    live.clock.set(START + 25 * HOUR + timedelta(minutes=30))
    anhui, carbon = seen()
    assert "more than 24 h ago" in anhui["unavailable"] and len(set(carbon.tolist())) == 1
