"""Work reaches an idle agent at once, and a server's time can be moved instead of waited for.

Against real `suanli serve` processes (SQLite and PostgreSQL): an agent's lease request with
`wait_s` is held while its site has no work and answered with the task as soon as a pass places
one (a held request is visible in `/metrics`, so the tests know it is held before they submit);
on PostgreSQL the pass of the leader wakes a request held by another, API-only server process
(LISTEN/NOTIFY); a server that stops answers its held requests instead of waiting them out. A
server started with `--clock virtual` moves its time only by the operator's `POST /v1/clock`:
forward only, an audit event each, and 404 on a server on the system clock.
"""

from __future__ import annotations

import re
import threading
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from suanli.services.core import Role
from suanli.store.db import make_engine, session_factory
from suanli.store.models import EventRow
from tests.integration.platform.conftest import Platform, free_port, submit_body
from tests.waiting import wait_until


def _held(url: str) -> int:
    """How many lease requests the server at `url` holds now (its /metrics)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    found = re.search(r"^suanli_lease_long_polls (\S+)$", text, re.MULTILINE)
    return int(float(found.group(1))) if found else 0


def _agent(platform: Platform, provider: str, site: str) -> str:
    with platform.client(provider) as http:
        made = http.post("/v1/agents", json={"site_id": site, "name": "by hand", "slots": 1})
    assert made.status_code == 201, made.text
    return str(made.json()["id"])


class HeldLease:
    """A lease request with `wait_s`, sent from a thread; `answer` once it returns."""

    def __init__(self, url: str, token: str, agent_id: str, wait_s: float = 30) -> None:
        self.answer: httpx.Response | None = None
        self.failed: BaseException | None = None

        def send() -> None:
            try:
                with httpx.Client(
                    base_url=url, timeout=wait_s + 30, headers={"Authorization": f"Bearer {token}"}
                ) as http:
                    self.answer = http.post(
                        f"/v1/agents/{agent_id}/lease", json={"max": 1, "wait_s": wait_s}
                    )
            except BaseException as error:  # reported by result()
                self.failed = error

        self.thread = threading.Thread(target=send, daemon=True)
        self.thread.start()

    def result(self) -> dict[str, Any]:
        self.thread.join(timeout=60)
        if self.failed is not None:
            raise self.failed
        assert self.answer is not None, "the held lease never answered"
        assert self.answer.status_code == 200, self.answer.text
        return dict(self.answer.json())


def test_held_lease_gets_work_placed_after_it_was_sent(platform: Platform) -> None:
    provider = platform.token(Role.PROVIDER, "provider")
    consumer = platform.token(Role.CONSUMER, "consumer")
    site = platform.site_with_pool(provider, count=1)
    agent = _agent(platform, provider, site)

    # nothing to lease: a short wait answers empty
    with platform.client(provider) as http:
        empty = http.post(f"/v1/agents/{agent}/lease", json={"max": 1, "wait_s": 0.05})
        assert empty.status_code == 200 and empty.json() == {"tasks": []}, empty.text
        too_long = http.post(f"/v1/agents/{agent}/lease", json={"max": 1, "wait_s": 31})
        assert too_long.status_code == 422 and "wait_s" in too_long.text

    held = HeldLease(platform.url, provider, agent)
    wait_until(lambda: _held(platform.url) == 1, "the lease request to be held")
    with platform.client(consumer) as http:
        created = http.post("/v1/tasks", json=submit_body("true", name="wakes"))
        assert created.status_code == 201, created.text
    answer = held.result()
    assert [t["id"] for t in answer["tasks"]] == [created.json()["id"]]
    assert platform.wait_for(consumer, created.json()["id"], {"INITIALIZING"})["state"] == (
        "INITIALIZING"
    )
    assert _held(platform.url) == 0


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_leaders_pass_wakes_a_lease_held_by_another_process(platform: Platform) -> None:
    """The placing pass runs in the leader (the fixture's server, started first); the agent's
    request is held by an API-only process: the NOTIFY of the pass wakes it there."""
    port = free_port()
    api_only = Platform(
        f"http://127.0.0.1:{port}",
        platform.database_url,
        platform.home,
        platform.env,
        port=port,
        extra_args=("--no-scheduler",),
    )
    provider = platform.token(Role.PROVIDER, "provider")
    consumer = platform.token(Role.CONSUMER, "consumer")
    site = platform.site_with_pool(provider, count=1)
    agent = _agent(platform, provider, site)
    api_only.start()
    try:
        held = HeldLease(api_only.url, provider, agent)
        wait_until(lambda: _held(api_only.url) == 1, "the lease request to be held")
        with platform.client(consumer) as http:
            created = http.post("/v1/tasks", json=submit_body("true", name="far"))
            assert created.status_code == 201, created.text
        assert [t["id"] for t in held.result()["tasks"]] == [created.json()["id"]]
    finally:
        api_only.stop()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_stopping_server_answers_held_leases(platform: Platform) -> None:
    provider = platform.token(Role.PROVIDER, "provider")
    site = platform.site_with_pool(provider, count=1)
    agent = _agent(platform, provider, site)
    held = HeldLease(platform.url, provider, agent)
    wait_until(lambda: _held(platform.url) == 1, "the lease request to be held")
    platform.stop()  # SIGTERM; fails if the server does not stop within its bound
    assert held.result() == {"tasks": []}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_system_clock_cannot_be_moved(platform: Platform) -> None:
    operator = platform.token(Role.OPERATOR, "ops")
    with platform.client(operator) as http:
        moved = http.post("/v1/clock", json={"advance_s": 60})
    assert moved.status_code == 404, moved.text


@pytest.mark.virtual_clock
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_virtual_clock_moves_forward_by_the_operator_only(platform: Platform) -> None:
    operator = platform.token(Role.OPERATOR, "ops")
    consumer = platform.token(Role.CONSUMER, "consumer")
    with platform.client(consumer) as http:
        assert http.post("/v1/clock", json={"advance_s": 1}).status_code == 403
    first = platform.advance(operator, 0)
    start = datetime.fromisoformat(first["now"])
    second = platform.advance(operator, 3600)
    assert datetime.fromisoformat(second["now"]) == start + timedelta(hours=1)
    assert second["passed"] is True  # the server's pass ran at the new time before answering
    with platform.client(operator) as http:
        back = http.post("/v1/clock", json={"to": start.isoformat()})
        assert back.status_code == 409 and "does not go back" in back.text, back.text
        both = http.post("/v1/clock", json={"advance_s": 1, "to": start.isoformat()})
        assert both.status_code == 422, both.text
        naive = http.post("/v1/clock", json={"to": "2030-01-01T00:00:00"})
        assert naive.status_code == 422, naive.text
        to = start + timedelta(days=1)
        moved = http.post("/v1/clock", json={"to": to.isoformat()})
        assert datetime.fromisoformat(moved.json()["now"]) == to, moved.text
    with platform.client(consumer) as http:
        task = http.post("/v1/tasks", json=submit_body("true")).json()
    assert datetime.fromisoformat(task["created_at"]) == to  # the server's time, not the wall's
    engine = make_engine(platform.database_url)
    with session_factory(engine)() as session:
        moves = session.scalars(select(EventRow).where(EventRow.kind == "clock.moved")).all()
    engine.dispose()
    assert len(moves) == 3  # 0 s, 1 h, to a day later; the refused moves left nothing
