"""Quotas and fair share, live: a real `suanli serve`, real agents, SQLite and PostgreSQL.

* two groups with equal guaranteed shares, both queuing more work than the network holds,
  receive within 5% of half the device-hours while both have work queued (measured from the
  device-seconds the agent reported for each task);
* a group idle while the other borrowed the whole network gets its share back: the pass that
  first sees its work asks for borrowed work to be preempted (on a virtual clock, so that
  "within one pass interval" is exact, not a race), and once the agent preempts it, the
  group's tasks run.

The pools are priced 0 fen per device-hour: these tests are about devices, not money.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import select

from suanli.services.core import Role, aware
from suanli.store.db import make_engine, session_factory
from suanli.store.models import EventRow, Principal, TaskRow
from tests.integration.platform.conftest import FAST, Platform, submit_body
from tests.waiting import wait_until

TERMINAL = {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED"}
INTERVAL_S = float(FAST["SUANLI_SCHEDULE_INTERVAL_S"])


def _principal(platform: Platform, name: str) -> str:
    engine = make_engine(platform.database_url)
    with session_factory(engine)() as session:
        ident = session.scalars(select(Principal.id).where(Principal.name == name)).one()
    engine.dispose()
    return str(ident)


def _groups(platform: Platform, operator: str, members: dict[str, str]) -> dict[str, str]:
    """A group of 50% for each consumer (name -> consumer id); group name -> id."""
    found = {}
    with platform.client(operator) as http:
        for name, consumer in members.items():
            made = http.post("/v1/groups", json={"name": name, "guaranteed_bp": 5000})
            assert made.status_code == 201, made.text
            found[name] = made.json()["id"]
            put = http.put(f"/v1/consumers/{consumer}/group", json={"group_id": found[name]})
            assert put.status_code == 200 and put.json()["group_id"] == found[name], put.text
        listed = http.get("/v1/groups").json()
    assert {g["name"]: g["members"] for g in listed} == {n: [c] for n, c in members.items()}
    return found


def _events(platform: Platform, kind: str) -> list[EventRow]:
    engine = make_engine(platform.database_url)
    with session_factory(engine)() as session:
        rows = list(
            session.scalars(select(EventRow).where(EventRow.kind == kind).order_by(EventRow.seq))
        )
        session.expunge_all()
    engine.dispose()
    return rows


def _tasks(platform: Platform, ids: list[str]) -> dict[str, TaskRow]:
    engine = make_engine(platform.database_url)
    with session_factory(engine)() as session:
        rows = {t.id: t for t in session.scalars(select(TaskRow).where(TaskRow.id.in_(ids)))}
        session.expunge_all()
    engine.dispose()
    return rows


def _setup(platform: Platform, count: int) -> tuple[str, str, dict[str, str], str]:
    operator = platform.token(Role.OPERATOR, "ops")
    provider = platform.token(Role.PROVIDER, "dc")
    tokens = {name: platform.token(Role.CONSUMER, name) for name in ("lab-a", "lab-b")}
    site = platform.site_with_pool(provider, count=count, price=0)
    _groups(platform, operator, {n: _principal(platform, n) for n in tokens})
    return operator, provider, tokens, site


def test_equal_groups_receive_equal_device_hours(platform: Platform) -> None:
    _, provider, tokens, site = _setup(platform, count=4)
    per_group = 32
    owner: dict[str, str] = {}
    clients = {name: platform.client(token) for name, token in tokens.items()}
    try:
        for _ in range(per_group):  # interleaved: neither group starts ahead
            for name, http in clients.items():
                made = http.post("/v1/tasks", json=submit_body("sleep", "1"))
                assert made.status_code == 201, made.text
                owner[made.json()["id"]] = name
    finally:
        for http in clients.values():
            http.close()
    platform.agent(provider, site, slots=4)
    for ident, name in owner.items():
        assert platform.wait_for(tokens[name], ident, TERMINAL, 180)["state"] == "COMPLETE"
    # the placements while both groups still had work queued: up to the last placement of
    # the group whose queue emptied first
    placed = [e.subject for e in _events(platform, "task.placed") if e.subject in owner]
    left = dict.fromkeys(tokens, per_group)
    window: list[str] = []
    for ident in placed:
        window.append(ident)
        left[owner[ident]] -= 1
        if min(left.values()) == 0:
            break
    rows = _tasks(platform, window)
    used = dict.fromkeys(tokens, 0.0)
    for ident in window:
        used[owner[ident]] += float((rows[ident].usage or {})["device_s"])
    total = sum(used.values())
    assert total > 0
    for name in tokens:
        # within 5% of its share (a half): 0.475 .. 0.525 of the device-hours
        assert abs(used[name] / total - 0.5) <= 0.05 * 0.5, (used, len(window))


def test_a_group_at_its_cap_waits_with_the_quota_reason(platform: Platform) -> None:
    operator, provider, tokens, site = _setup(platform, count=4)
    groups = {g["name"]: g["id"] for g in _list_groups(platform, operator)}
    with platform.client(operator) as http:
        capped = http.patch(
            f"/v1/groups/{groups['lab-a']}", json={"cap_device_hours": 0.0002, "period": "day"}
        )
        assert capped.status_code == 200 and capped.json()["cap_device_hours"] == 0.0002
    platform.agent(provider, site, slots=2)
    with platform.client(tokens["lab-a"]) as http:
        first = http.post("/v1/tasks", json=submit_body("sleep", "1")).json()["id"]
    assert platform.wait_for(tokens["lab-a"], first, TERMINAL, 60)["state"] == "COMPLETE"
    # about one device-second used, over the cap of 0.72: the next task waits
    with platform.client(tokens["lab-a"]) as http:
        second = http.post("/v1/tasks", json=submit_body("true")).json()["id"]

        def quota_reason() -> str | None:
            reason = http.get(f"/v1/tasks/{second}").json()["unplaced_reason"]
            return reason if reason and reason.startswith("quota:") else None

        reason = wait_until(quota_reason, "the quota reason")
    pattern = r"quota: group lab-a used 0\.000[2-9]\d* of its cap 0\.0002 device-hours this day"
    assert re.match(pattern, reason) and "配额" in reason, reason
    with platform.client(tokens["lab-b"]) as http:  # the other group is not held
        other = http.post("/v1/tasks", json=submit_body("true")).json()["id"]
    assert platform.wait_for(tokens["lab-b"], other, TERMINAL, 60)["state"] == "COMPLETE"
    with platform.client(operator) as http:  # the cap raised: the task runs
        raised = http.patch(f"/v1/groups/{groups['lab-a']}", json={"cap_device_hours": None})
        assert raised.status_code == 200 and raised.json()["cap_device_hours"] is None
    assert platform.wait_for(tokens["lab-a"], second, TERMINAL, 60)["state"] == "COMPLETE"
    changes = [e.data for e in _events(platform, "group.updated")]
    assert changes[-1] == {"cap_device_hours": [0.0002, None]}, changes


def _list_groups(platform: Platform, operator: str) -> list[dict[str, Any]]:
    with platform.client(operator) as http:
        listed = http.get("/v1/groups")
    assert listed.status_code == 200, listed.text
    return list(listed.json())


def _borrowed_then_claimed(platform: Platform) -> tuple[dict[str, str], list[str], list[str]]:
    """Group lab-b borrows all four devices with long tasks; then lab-a submits two short
    ones. Returns the tokens, lab-b's tasks and lab-a's."""
    _, provider, tokens, site = _setup(platform, count=4)
    with platform.client(tokens["lab-b"]) as http:
        borrowed = [
            http.post("/v1/tasks", json=submit_body("sleep", "120")).json()["id"] for _ in range(4)
        ]
    platform.agent(provider, site, slots=6)
    for ident in borrowed:
        platform.wait_for(tokens["lab-b"], ident, {"RUNNING"}, 60)
    with platform.client(tokens["lab-a"]) as http:
        claims = [
            http.post("/v1/tasks", json=submit_body("sleep", "0.3")).json()["id"] for _ in range(2)
        ]
    return tokens, borrowed, claims


@pytest.mark.virtual_clock
def test_an_idle_group_gets_its_share_back_within_one_pass(platform: Platform) -> None:
    _, borrowed, claims = _borrowed_then_claimed(platform)

    def two_asked() -> list[EventRow] | None:
        found = _events(platform, "task.preempt_requested")
        return found if len(found) >= 2 else None

    asked = wait_until(two_asked, "two preemption requests", timeout_s=30)
    assert len(asked) == 2, [e.subject for e in asked]  # just enough: lab-a needs two devices
    assert {e.subject for e in asked} <= set(borrowed)
    submitted = min(t.created_at for t in _tasks(platform, claims).values())
    for event in asked:
        assert "borrowed" in event.data["reason"] and "lab-b" in event.data["reason"]
        # the virtual clock stands still: the pass that first saw lab-a's work asked
        waited = (_at(event.at) - _at(submitted)).total_seconds()
        assert 0 <= waited <= INTERVAL_S, waited
    rows = _tasks(platform, borrowed)
    for event in asked:  # asked, or already preempted by its agent (part D) and queued again
        victim = rows[event.subject]
        assert victim.preempt_requested or victim.preemptions >= 1, victim.state


@pytest.mark.virtual_clock
def test_preempted_borrowed_work_gives_the_devices_back(platform: Platform) -> None:
    """Needs the agents to act on the request (issue 15, part D): the two victims end
    PREEMPTED and are queued again; lab-a's tasks run to completion."""
    tokens, borrowed, claims = _borrowed_then_claimed(platform)
    for ident in claims:
        assert platform.wait_for(tokens["lab-a"], ident, TERMINAL, 60)["state"] == "COMPLETE"
    preempted = [
        e.subject
        for e in _events(platform, "task.state")
        if e.data.get("to") == "PREEMPTED" and e.subject in borrowed
    ]
    assert len(preempted) == 2, preempted


def _at(moment: datetime) -> datetime:
    return aware(moment)


def test_preemptible_work_gives_way_to_guaranteed_work(platform: Platform) -> None:
    """No groups: a non-preemptible task that finds the network full of preemptible work asks
    for just enough of it back; a preemptible task asks for nothing."""
    provider = platform.token(Role.PROVIDER, "dc")
    consumer = platform.token(Role.CONSUMER, "lab")
    site = platform.site_with_pool(provider, count=2, price=0)
    with platform.client(consumer) as http:
        spot = [
            http.post("/v1/tasks", json=submit_body("sleep", "120", preemptible=True)).json()["id"]
            for _ in range(2)
        ]
        platform.agent(provider, site, slots=4)
        for ident in spot:
            platform.wait_for(consumer, ident, {"RUNNING"}, 60)
        late_spot = http.post("/v1/tasks", json=submit_body("true", preemptible=True)).json()["id"]
        wait_until(
            lambda: http.get(f"/v1/tasks/{late_spot}").json()["unplaced_reason"],
            "the engine's reason for the preemptible task",
        )
        assert _events(platform, "task.preempt_requested") == []  # it preempts nothing
        guaranteed = http.post("/v1/tasks", json=submit_body("true")).json()["id"]

        def asked() -> list[EventRow] | None:
            return _events(platform, "task.preempt_requested") or None

        (event,) = wait_until(asked, "a preemption request")
        assert event.subject in spot and "preemptible" in event.data["reason"], event.data
        assert guaranteed in event.data["reason"]
    # the agent preempts it (part D) and the guaranteed task runs
    assert platform.wait_for(consumer, guaranteed, TERMINAL, 60)["state"] == "COMPLETE"
