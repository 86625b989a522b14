"""A live deferral books its pool ahead, as the twin's do: a later deferral goes only to hours
that pool has room for beside it, and when its hour comes the task takes that pool first.

The real app on a real store (SQLite, and PostgreSQL when SUANLI_TEST_PG_URL is set) served on a
loopback port, on a virtual clock; one CPU pool of 8 devices; the test runs the scheduling loop's
pass itself. Two deferrable tasks of all 8 devices, submitted an hour apart: the first is
deferred to the greenest hour within its deadline; the second, on the same series, would choose
the same hour (checked: the decision step without the first's booking says so), but that hour is
booked, so it must go to another. Before this, the live pass read no bookings and sent both to
one hour, where only one could start.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import select

from suanli.api.app import Platform, create_app
from suanli.clock import VirtualClock
from suanli.config import Settings
from suanli.scheduler import Capacity, decide, policy_named
from suanli.services import capacity as capacity_service
from suanli.services.core import Role
from suanli.store.models import EventRow, TaskRow
from tests.integration.platform.conftest import free_port
from tests.money import principal_token
from tests.waiting import wait_until

HOUR = 3600.0
START = datetime(2026, 1, 9, 16, 0, tzinfo=UTC)  # a local (UTC+8) midnight
SPEC = {
    "executors": [{"command": ["true"]}],
    "resources": {"devices": 8, "device_kind": "cpu", "duration_s": 2 * HOUR},
    "origin": "北京",
    "latency_tier": "batch",
    "deferrable": True,
    "deadline_s": 20 * HOUR,
}


@dataclass
class Live:
    platform: Platform
    clock: VirtualClock
    url: str


@contextmanager
def serving(database_url: str, tmp_path: Path, policy: str) -> Iterator[Live]:
    """The real app on a loopback port, on a virtual clock from START, under `policy`; the
    test runs the scheduling pass itself."""
    clock = VirtualClock(START)
    settings = Settings(home=tmp_path, database_url=database_url, policy=policy)
    app = create_app(settings, run_scheduler=False, clock=clock)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    wait_until(lambda: server.started, "the server to start")
    try:
        yield Live(app.state.platform, clock, f"http://127.0.0.1:{port}")
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture
def live(database_url: str, tmp_path: Path) -> Iterator[Live]:
    with serving(database_url, tmp_path, "green") as found:
        yield found


def client(live: Live, token: str) -> httpx.Client:
    return httpx.Client(base_url=live.url, timeout=30, headers={"Authorization": f"Bearer {token}"})


def token_for(live: Live, role: Role, name: str) -> str:
    with live.platform.unit_of_work() as session:
        return principal_token(session, role, name)[1]


def row(live: Live, ident: str) -> TaskRow:
    with live.platform.unit_of_work(write=False) as session:
        found = session.get(TaskRow, ident)
        assert found is not None
        session.expunge(found)
        return found


def hour_of(moment: datetime | None) -> float:
    assert moment is not None
    return (moment.replace(tzinfo=UTC) - START).total_seconds() / HOUR


def zhongwei_pool(live: Live) -> str:
    """A provider's site at the Zhongwei cluster with a pool of 8 CPU cores; the pool's id."""
    return site_with_pool(live, "ZHONGWEI")[1]


def site_with_pool(live: Live, cluster: str) -> tuple[str, str]:
    """A provider's site at `cluster` with a pool of 8 CPU cores; the site's and pool's ids."""
    provider = token_for(live, Role.PROVIDER, "dc")
    with client(live, provider) as http:
        site = http.post("/v1/sites", json={"name": cluster.lower(), "cluster": cluster})
        assert site.status_code == 201, site.text
        pool = http.post(
            "/v1/pools",
            json={
                "site_id": site.json()["id"],
                "device": "cpu",
                "count": 8,
                "price_fen_per_device_hour": 10,
            },
        )
        assert pool.status_code == 201, pool.text
        return str(site.json()["id"]), str(pool.json()["id"])


def submit(http: httpx.Client, name: str) -> str:
    made = http.post("/v1/tasks", json={"name": name, **SPEC})
    assert made.status_code == 201, made.text
    return str(made.json()["id"])


def test_a_deferral_books_its_pool_and_a_later_one_goes_around_it(live: Live) -> None:
    pool_id = zhongwei_pool(live)
    consumer = token_for(live, Role.CONSUMER, "lab")
    assert live.platform.elector.step(), "the test's server leads the scheduling"
    http = client(live, consumer)

    first = submit(http, "first")
    live.platform.schedule_once()
    a = row(live, first)
    assert a.pool_id is None and a.not_before is not None, a.unplaced_reason
    a_hour = hour_of(a.not_before)
    assert a_hour >= 1
    # its booking: the pool it was deferred on, until the end of its 2 h run there
    assert a.booked_pool_id == pool_id
    assert hour_of(a.booked_until) == a_hour + 2

    live.clock.set(START + timedelta(hours=1))
    second = submit(http, "second")
    with live.platform.unit_of_work(write=False) as session:
        inputs = capacity_service.step_inputs(session, live.clock.now())
        queue = [
            capacity_service.queued_task(r, {}, r.spec)
            for r in session.scalars(select(TaskRow).where(TaskRow.id == second))
        ]
    # the booking is what the pass sees ahead; without it the second task takes the same hour
    assert [(b.pool, b.devices) for b in inputs.capacity.booked] == [(pool_id, 8)]
    bare = Capacity(inputs.capacity.pools)
    (alone,) = decide(queue, inputs.network, bare, policy_named("green"), inputs.clock_s)
    assert alone.not_before_s is not None
    assert (alone.not_before_s - START.timestamp()) / HOUR == a_hour

    live.platform.schedule_once()
    b = row(live, second)
    assert b.pool_id is None and b.not_before is not None, b.unplaced_reason
    b_hour = hour_of(b.not_before)
    assert b.booked_pool_id == pool_id
    assert b_hour + 2 <= a_hour or a_hour + 2 <= b_hour, (a_hour, b_hour)

    # the audit log names each deferral's pool
    with live.platform.unit_of_work(write=False) as session:
        deferred: dict[str, Any] = {
            e.subject: e.data
            for e in session.scalars(select(EventRow).where(EventRow.kind == "task.deferred"))
        }
    assert {k: v["pool"] for k, v in deferred.items()} == {first: pool_id, second: pool_id}

    # at its hour the first starts on its booked pool, and its booking becomes its run's
    live.clock.set(START + timedelta(hours=a_hour))
    live.platform.schedule_once()
    a = row(live, first)
    assert a.pool_id == pool_id
    assert a.booked_pool_id is None and a.booked_until is None
    assert a.placement is not None
    assert a.placement["end_s"] - a.placement["start_s"] == 2 * HOUR
    with live.platform.unit_of_work(write=False) as session:
        ahead = capacity_service.bookings(session, live.clock.now().timestamp())
    assert sorted((x.pool, x.start_s - START.timestamp()) for x in ahead) == sorted(
        [(pool_id, a_hour * HOUR), (pool_id, b_hour * HOUR)]
    )
    http.close()
