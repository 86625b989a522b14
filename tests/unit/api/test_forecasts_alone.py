"""The forecasts router on an app of its own, on a real SQLite store and a virtual clock: a site's
actual busy devices come back beside its forecast, the last 72 whole hours with the hour each
started, counted from tasks that really ran (quote, accept, the pass, lease, RUNNING, COMPLETE
through the services); and the answer's schema says so."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from suanli.api import errors
from suanli.api.app import Platform
from suanli.api.routes import forecasts
from suanli.clock import VirtualClock
from suanli.config import Settings
from suanli.services.db import open_store
from suanli.store.models import SiteRow
from tests.integration.market.money_world import World

HOUR = timedelta(hours=1)
REGISTERED = datetime(2026, 3, 2, tzinfo=UTC)  # the site's registration, on the hour
NOW = REGISTERED + 80 * HOUR + timedelta(minutes=20)  # 80 whole hours later, into the 81st
BUSY = {3: 1, 10: 2, 79: 1}  # hour after registration -> one-device tasks busy all that hour


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@pytest.fixture
def made(tmp_path: Path) -> Iterator[tuple[Platform, str, str]]:
    """The platform (its clock at NOW), the busy site, a consumer's token."""
    url = f"sqlite:///{tmp_path / 'forecasts.db'}"
    world = World(url, REGISTERED)
    try:
        provider = world.provider("dc")
        lab = world.consumer("lab", 10_000_000)
        for hour, tasks in BUSY.items():
            world.clock.set(REGISTERED + hour * HOUR)
            orders = [world.order(lab, provider, 3600.0) for _ in range(tasks)]
            world.clock.set(REGISTERED + (hour + 1) * HOUR)
            for order in orders:
                world.finish(order, 3600.0)
        with world.unit() as s:
            site = s.query(SiteRow).one().id
    finally:
        world.close()
    store = open_store(url)
    settings = Settings(database_url=url)
    yield (
        Platform(
            settings, store.sessions, store.readers, store.serialise_writes, VirtualClock(NOW)
        ),
        site,
        world.tokens["lab"],
    )
    store.dispose()


def test_the_actual_hours_come_with_their_hours_beside_the_forecast(
    made: tuple[Platform, str, str],
) -> None:
    platform, site, token = made
    app = FastAPI()
    errors.install(app)
    app.state.platform = platform
    app.include_router(forecasts.router)
    with TestClient(app) as client:
        answer = client.get(
            "/v1/forecasts", params={"site": site}, headers={"Authorization": f"Bearer {token}"}
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        schema = client.get("/openapi.json").json()["components"]["schemas"]
    current = REGISTERED + 80 * HOUR
    assert body["start"] == _iso(current)
    (row,) = body["sites"]
    assert row["history_hours"] == 80 and row["mean"] == []  # too little history to forecast
    assert "needs 96 whole hours of history" in row["unavailable"]
    first = current - 72 * HOUR  # hours 0-7 after registration fall out of the 72
    assert row["actual"] == [
        {"hour": _iso(first + k * HOUR), "value": float(BUSY.get(8 + k, 0))} for k in range(72)
    ]
    assert [a["value"] for a in row["actual"][-24:]] == row["history"]
    assert row["prices"] == []  # no load forecast, so no price forecast, and why
    assert row["prices_unavailable"] == f"no load forecast: {row['unavailable']}"
    hour_value = schema["HourValueRead"]["properties"]
    assert set(hour_value) == {"hour", "value"} and hour_value["value"]["type"] == "number"
    actual = schema["SiteForecastRead"]["properties"]["actual"]
    assert actual["items"] == {"$ref": "#/components/schemas/HourValueRead"}
    hour_price = schema["HourPriceRead"]["properties"]
    for name in ("price_fen", "price_fen_at_lower", "price_fen_at_upper"):
        assert hour_price[name]["type"] == "integer"  # money is whole fen
    assert all(field.get("description") for field in hour_price.values())
    prices = schema["SiteForecastRead"]["properties"]["prices"]
    assert prices["items"] == {"$ref": "#/components/schemas/PoolPricesRead"}
