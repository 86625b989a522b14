"""Live load forecasts (`GET /v1/forecasts`, `suanli forecast`): a site's busy devices per hour
come from the platform's own task events, and the forecast follows them.

The history is made through the services the server runs (quote, accept, the pass, lease,
RUNNING, COMPLETE) on a virtual clock set in the past, while the server is stopped: each hour
of the pattern runs `PATTERN[hour of day]` one-device tasks for exactly that hour. Beside the
forecast the answer carries the last 72 actual hours with their hour timestamps, and each pool's
price forecast, checked against the market's own pricing function; the console's forecast page
(test_forecasts_console.py) draws the same history made by `make_history`."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select

from suanli.forecast import min_history_h
from suanli.market import PricingRules
from suanli.services.market import price_at
from suanli.store.db import make_engine, session_factory
from suanli.store.models import PoolRow, SiteRow
from tests.integration.platform.conftest import Platform, database_url, platform

from .money_world import World

__all__ = ["database_url", "platform"]  # fixtures

PATTERN = [0] * 8 + [1] * 8 + [2] * 8  # busy devices by hour of day (UTC)
HOURS = min_history_h(24) + 4  # enough history for a 24 h forecast, and a little more


@dataclass(frozen=True)
class History:
    """What `make_history` made: the first hour it did not fill, the two sites, the tokens."""

    end: datetime
    busy_site: str  # provider "busy": HOURS hours of `busy_at`
    late_site: str  # provider "late": registered 30 h before `end`, never busy
    tokens: dict[str, str]  # "busy", "late", "lab" (a consumer), "op"


def daily(at: datetime) -> int:
    """Busy devices in the hour starting `at`: PATTERN, every day the same."""
    return PATTERN[at.hour]


def make_history(platform: Platform, busy_at: Callable[[datetime], int] = daily) -> History:
    """HOURS whole hours of `busy_at` one-device tasks on a site of its own, up to the current
    hour, through the services the server runs (the server is stopped meanwhile and started
    again after)."""
    platform.stop()
    now = datetime.now(UTC)
    end = now.replace(minute=0, second=0, microsecond=0)  # the pattern fills every whole hour
    start = end - timedelta(hours=HOURS)
    world = World(platform.database_url, start)
    try:
        busy = world.provider("busy")
        lab = world.consumer("lab", 10_000_000)
        late = None
        for hour in range(HOURS):
            at = start + timedelta(hours=hour)
            world.clock.set(at)
            if at == end - timedelta(hours=30):
                late = world.provider("late")  # registered 30 h ago: too little history
            orders = [world.order(lab, busy, 3600.0) for _ in range(busy_at(at))]
            world.clock.set(at + timedelta(hours=1))
            for order in orders:
                world.finish(order, 3600.0)
        assert late is not None
        with world.unit() as s:
            sites = {row.owner_id: row.id for row in s.query(SiteRow)}
    finally:
        world.close()
    platform.start()
    return History(end, sites[busy.who.id], sites[late.who.id], dict(world.tokens))


def check_prices(platform: Platform, shown: dict[str, Any], first: datetime) -> None:
    """A site's price forecasts are the market's own pricing (`services.market.price_at`, what
    quotes use) of one device-hour at the utilisation and hour the answer carries, in whole fen;
    a peak hour is dearer than a valley hour at the same load, and a higher load is never
    cheaper."""
    assert shown["prices_unavailable"] is None
    engine = make_engine(platform.database_url)
    try:
        with session_factory(engine)() as s:
            (pool,) = s.scalars(select(PoolRow).where(PoolRow.site_id == shown["site"]))
            site = s.get_one(SiteRow, shown["site"])
            s.expunge_all()
    finally:
        engine.dispose()
    rules = PricingRules()  # the server's defaults: its settings set none

    def priced(hour: str, utilisation: float) -> int:
        breakdown, _, _ = price_at(
            pool,
            site,
            1,
            3600.0,
            start=datetime.fromisoformat(hour.replace("Z", "+00:00")),
            utilisation=Decimal(str(utilisation)),
            preemptible=False,
            data_gb=0.0,
            rules=rules,
        )
        return breakdown.total_fen

    (prices,) = shown["prices"]
    assert prices["pool"] == pool.id and prices["posted_fen_per_device_hour"] == 36_000
    hours = prices["hours"]
    assert [h["hour"] for h in hours] == [
        (first + timedelta(hours=k)).isoformat().replace("+00:00", "Z") for k in range(24)
    ]
    for h, mean, lower, upper in zip(
        hours, shown["mean"], shown["lower"], shown["upper"], strict=True
    ):
        # the site's busy devices over its 1,000 devices (its one pool), clipped to [0, 1]
        for key, busy in (("", mean), ("_at_lower", lower), ("_at_upper", upper)):
            utilisation = h[f"utilisation{key}"]
            assert utilisation == round(min(max(busy / 1_000, 0.0), 1.0), 4)
            assert h[f"price_fen{key}"] == priced(h["hour"], utilisation)
            assert type(h[f"price_fen{key}"]) is int
        assert h["price_fen_at_lower"] <= h["price_fen"] <= h["price_fen_at_upper"]
    assert prices["cheapest"] == min(hours, key=lambda h: h["price_fen"])
    peak = max(hours, key=lambda h: Decimal(h["time_of_use"]))
    valley = min(hours, key=lambda h: Decimal(h["time_of_use"]))
    assert Decimal(peak["time_of_use"]) > Decimal(valley["time_of_use"])  # 内蒙古's tariff
    load = peak["utilisation"]
    assert priced(peak["hour"], load) > priced(valley["hour"], load)
    at = hours[0]["hour"]
    ladder = [priced(at, u / 20) for u in range(21)]  # empty to full at one hour
    assert ladder == sorted(ladder) and ladder[-1] > ladder[0]


def test_forecasts_follow_the_sites_own_history(platform: Platform) -> None:
    made = make_history(platform)
    end, busy_site, late_site = made.end, made.busy_site, made.late_site
    with platform.client(made.tokens["lab"]) as http:
        answer = http.get("/v1/forecasts", params={"hours": 24})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        first = datetime.fromisoformat(body["start"].replace("Z", "+00:00"))
        assert first in (end, end + timedelta(hours=1))  # the hour may turn during the test
        rows = {row["site"]: row for row in body["sites"]}
        shown = rows[busy_site]
        assert shown["unavailable"] is None
        assert shown["history_hours"] == HOURS + int((first - end) / timedelta(hours=1))
        expected_history = [
            float(PATTERN[h.hour]) if h < end else 0.0
            for h in (first - timedelta(hours=24 - k) for k in range(24))
        ]
        assert shown["history"] == expected_history
        hours_back = [first - timedelta(hours=72 - k) for k in range(72)]  # 72 h, oldest first
        assert shown["actual"] == [
            {
                "hour": h.isoformat().replace("+00:00", "Z"),
                "value": float(PATTERN[h.hour]) if h < end else 0.0,
            }
            for h in hours_back
        ]
        assert [a["value"] for a in shown["actual"][-24:]] == shown["history"]
        truth = [float(PATTERN[(first + timedelta(hours=k)).hour]) for k in range(24)]
        assert len(shown["mean"]) == 24
        if first == end:  # the forecast of an exactly daily pattern is the pattern
            assert max(abs(m - t) for m, t in zip(shown["mean"], truth, strict=True)) < 0.5
            for block in shown["weights"]:  # last day, or the climatology (the same here)
                assert block["seasonal_naive"] + block["climatology"] >= 0.75, block
        assert all(
            lo <= m <= hi
            for lo, m, hi in zip(shown["lower"], shown["mean"], shown["upper"], strict=True)
        )
        check_prices(platform, shown, first)
        assert rows[late_site]["mean"] == [] and rows[late_site]["prices"] == []
        assert rows[late_site]["prices_unavailable"].startswith("no load forecast: needs 96")
        late_actual = rows[late_site]["actual"]  # registered 30 h ago: its 30 whole hours
        assert len(late_actual) == rows[late_site]["history_hours"] in (30, 31)
        assert late_actual[-1]["hour"] == (first - timedelta(hours=1)).isoformat().replace(
            "+00:00", "Z"
        )
        assert "needs 96 whole hours of history" in rows[late_site]["unavailable"]
        one = http.get("/v1/forecasts", params={"site": busy_site, "hours": 6}).json()
        assert [row["site"] for row in one["sites"]] == [busy_site]
        assert one["sites"][0]["mean"] == shown["mean"][:6] or first != end
        bad = http.get("/v1/forecasts", params={"hours": 0})
        assert bad.status_code == 422 and bad.json()["error"]["field"] == "query.hours"
        assert http.get("/v1/forecasts", params={"site": "nowhere"}).status_code == 404
    env = {**platform.env, "SUANLI_SERVER": platform.url, "SUANLI_TOKEN": made.tokens["lab"]}
    done = subprocess.run(
        [sys.executable, "-m", "suanli", "forecast", "--site", busy_site, "--hours", "6", "--json"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)["sites"][0]["mean"]) == 6
    (pool,) = json.loads(done.stdout)["sites"][0]["prices"]
    assert len(pool["hours"]) == 6 and isinstance(pool["cheapest"]["price_fen"], int)
    shown_prices = subprocess.run(
        [sys.executable, "-m", "suanli", "forecast", "--site", busy_site, "--hours", "6"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert shown_prices.returncode == 0, shown_prices.stderr
    assert "forecast price, fen per device-hour / 预测价格" in shown_prices.stdout
    assert "cheapest 最便宜" in shown_prices.stdout and pool["pool"] in shown_prices.stdout
    table = subprocess.run(
        [sys.executable, "-m", "suanli", "forecast", "--site", late_site],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert table.returncode == 0 and "no forecast yet" in table.stdout, table.stdout
