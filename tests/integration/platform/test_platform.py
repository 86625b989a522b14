"""The platform end to end: a real server, real agents, real commands, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import signal
import uuid
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from suanli.services.core import Role, verify_chain
from suanli.store.db import make_engine, session_factory
from tests.integration.platform.conftest import Platform, submit_body
from tests.unit.agent.test_local_backend import pids_of, unique_sleep
from tests.waiting import poll, wait_until

TERMINAL = {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED"}


def test_submit_runs_to_completion_with_output(platform: Platform) -> None:
    provider = platform.token(Role.PROVIDER, "dc-1")
    consumer = platform.token(Role.CONSUMER, "lab")
    site = platform.site_with_pool(provider)
    platform.agent(provider, site)
    with platform.client(consumer) as http:
        created = http.post("/v1/tasks", json=submit_body("sh", "-c", "echo hello from suanli"))
        assert created.status_code == 201, created.text
        task_id = created.json()["id"]
    task = platform.wait_for(consumer, task_id, TERMINAL)
    assert task["state"] == "COMPLETE", task
    assert task["exit_code"] == 0
    assert task["site"] == site and task["placement"]["cost_fen"] >= 0
    assert task["usage"]["wall_s"] > 0
    with platform.client(consumer) as http:
        logs = http.get(f"/v1/tasks/{task_id}/logs").json()
    assert logs["stdout_tail"].strip() == "hello from suanli"
    engine = make_engine(platform.database_url)
    with session_factory(engine)() as session:
        assert verify_chain(session) is None  # every state change is in an intact chain
    engine.dispose()


def test_a_failing_command_is_an_executor_error(platform: Platform) -> None:
    provider = platform.token(Role.PROVIDER, "dc-1")
    consumer = platform.token(Role.CONSUMER, "lab")
    platform.agent(provider, platform.site_with_pool(provider))
    with platform.client(consumer) as http:
        task_id = http.post(
            "/v1/tasks", json=submit_body("sh", "-c", "echo broken >&2; exit 7")
        ).json()["id"]
    task = platform.wait_for(consumer, task_id, TERMINAL)
    assert (task["state"], task["exit_code"]) == ("EXECUTOR_ERROR", 7)
    with platform.client(consumer) as http:
        assert "broken" in http.get(f"/v1/tasks/{task_id}/logs").json()["stderr_tail"]


def test_cancel_kills_the_process_tree(platform: Platform, tmp_path: Path) -> None:
    provider = platform.token(Role.PROVIDER, "dc-1")
    consumer = platform.token(Role.CONSUMER, "lab")
    platform.agent(provider, platform.site_with_pool(provider))
    marker = unique_sleep()  # the task's pids are its namespace's: find it by command line
    script = f"sleep {marker} & wait"
    with platform.client(consumer) as http:
        task_id = http.post("/v1/tasks", json=submit_body("sh", "-c", script)).json()["id"]
        platform.wait_for(consumer, task_id, {"RUNNING"})
        wait_until(lambda: pids_of(marker, word=True), "the task to start its child", 10)
        assert http.post(f"/v1/tasks/{task_id}/cancel").status_code == 200
    task = platform.wait_for(consumer, task_id, TERMINAL)
    assert task["state"] == "CANCELED"
    poll(lambda: not pids_of(marker), timeout_s=5)
    assert pids_of(marker) == []  # the shell, its child and the wrappers around them


def test_a_killed_agent_loses_nothing_and_runs_nothing_twice(
    platform: Platform, tmp_path: Path
) -> None:
    provider = platform.token(Role.PROVIDER, "dc-1")
    consumer = platform.token(Role.CONSUMER, "lab")
    site = platform.site_with_pool(provider)
    first = platform.agent(provider, site, slots=1)
    script = "echo run >> runs; sleep 2; echo done"  # each run writes in its task directory
    with platform.client(consumer) as http:
        task_id = http.post("/v1/tasks", json=submit_body("sh", "-c", script)).json()["id"]
    platform.wait_for(consumer, task_id, {"RUNNING"})
    first_run = platform.home / "work-0" / task_id / "runs"
    wait_until(first_run.exists, "the first run to start writing", 30)
    os.killpg(first.pid, signal.SIGKILL)  # the agent and its task die without a word
    first.wait(timeout=10)
    requeued = platform.wait_for(consumer, task_id, {"QUEUED"}, timeout=15)
    assert requeued["state"] == "QUEUED" and requeued["requeues"] == 1
    platform.agent(provider, site, slots=1)
    task = platform.wait_for(consumer, task_id, TERMINAL, timeout=30)
    assert task["state"] == "COMPLETE" and task["requeues"] == 1
    # the first run was killed; the second (the other agent's) ran once, to completion
    runs = [platform.home / f"work-{n}" / task_id / "runs" for n in (0, 1)]
    assert [r.read_text() for r in runs] == ["run\n", "run\n"]


def test_a_pool_queue_depth_places_beyond_the_free_devices(platform: Platform) -> None:
    provider = platform.token(Role.PROVIDER, "hpc centre")
    consumer = platform.token(Role.CONSUMER, "lab")
    site = platform.site_with_pool(provider, count=1, queue_depth=2)  # 1 device, 2 may wait
    with platform.client(consumer) as http:
        ids = [
            http.post("/v1/tasks", json=submit_body("sleep", "3")).json()["id"] for _ in range(4)
        ]
    # before any agent runs: one task on the device and two in the engine's own queue are
    # placed, the fourth is beyond count + queue_depth and waits
    placed = wait_until(lambda: _placed(platform, consumer, ids), "three placements")
    assert len(placed) == 3, placed  # which three is the engine's choice among equals
    (waiting,) = set(ids) - set(placed)
    with platform.client(consumer) as http:
        fourth = http.get(f"/v1/tasks/{waiting}").json()
    assert fourth["state"] == "QUEUED" and fourth["site"] is None
    with platform.client(provider) as http:
        (pool,) = http.get("/v1/pools").json()
    assert (pool["count"], pool["free"], pool["queue_depth"]) == (1, 0, 2)  # free is real
    platform.agent(provider, site, slots=3)
    for task_id in ids:
        assert platform.wait_for(consumer, task_id, TERMINAL, 90)["state"] == "COMPLETE"
    # the three ran at the same time; the fourth started only once one of them had ended
    with platform.client(consumer) as http:
        spans = [_span(http, task_id) for task_id in placed]
        later = _span(http, waiting)
    first_end = min(end for _, end in spans)
    assert all(start < first_end for start, _ in spans), spans
    assert later[0] >= first_end, (later, spans)


def _placed(platform: Platform, token: str, ids: list[str]) -> list[str] | None:
    """The ids among `ids` placed on a pool, once three are (else None)."""
    with platform.client(token) as http:
        placed = [i for i in ids if http.get(f"/v1/tasks/{i}").json()["pool"] is not None]
    return placed if len(placed) >= 3 else None


def _span(http: httpx.Client, task_id: str) -> tuple[datetime, datetime]:
    """When a task entered RUNNING and when it ended (from its TES history)."""
    view = http.get(f"/ga4gh/tes/v1/tasks/{task_id}", params={"view": "FULL"}).json()
    lines = view["logs"][0]["system_logs"]
    start = next(line.split()[0] for line in lines if "-> RUNNING" in line)
    end = next(line.split()[0] for line in lines if "-> COMPLETE" in line)
    return datetime.fromisoformat(start), datetime.fromisoformat(end)


def test_a_consumer_cannot_see_another_consumers_task(platform: Platform) -> None:
    alice = platform.token(Role.CONSUMER, "alice")
    bob = platform.token(Role.CONSUMER, "bob")
    with platform.client(alice) as http:
        task_id = http.post("/v1/tasks", json=submit_body("true")).json()["id"]
    with platform.client(bob) as http:
        assert http.get(f"/v1/tasks/{task_id}").status_code == 404
        assert http.post(f"/v1/tasks/{task_id}/cancel").status_code == 404
        assert http.get(f"/v1/tasks/{task_id}/logs").status_code == 404
        assert all(t["id"] != task_id for t in http.get("/v1/tasks").json())


def test_a_provider_cannot_lease_another_providers_tasks(platform: Platform) -> None:
    owner = platform.token(Role.PROVIDER, "dc-1")
    other = platform.token(Role.PROVIDER, "dc-2")
    consumer = platform.token(Role.CONSUMER, "lab")
    site = platform.site_with_pool(owner)
    with platform.client(consumer) as http:
        task_id = http.post("/v1/tasks", json=submit_body("true")).json()["id"]
    platform.wait_for(consumer, task_id, {"QUEUED"})
    with platform.client(other) as http:
        # an agent on someone else's site cannot even be registered
        assert http.post("/v1/agents", json={"site_id": site}).status_code == 404
        other_site = platform.site_with_pool(other)
        agent = http.post("/v1/agents", json={"site_id": other_site}).json()["id"]
        leased = http.post(f"/v1/agents/{agent}/lease", json={"max": 10}).json()["tasks"]
        assert task_id not in [t["id"] for t in leased]
        assert http.get(f"/v1/tasks/{task_id}").status_code == 404


def test_a_retried_submission_creates_one_task(platform: Platform) -> None:
    consumer = platform.token(Role.CONSUMER, "lab")
    key = str(uuid.uuid4())
    with platform.client(consumer) as http:
        first = http.post("/v1/tasks", json=submit_body("true"), headers={"Idempotency-Key": key})
        again = http.post("/v1/tasks", json=submit_body("true"), headers={"Idempotency-Key": key})
        assert (first.status_code, again.status_code) == (201, 200)
        assert first.json()["id"] == again.json()["id"]
        assert len(http.get("/v1/tasks").json()) == 1


def test_a_server_restart_loses_no_accepted_task(platform: Platform) -> None:
    consumer = platform.token(Role.CONSUMER, "lab")
    with platform.client(consumer) as http:
        ids = {http.post("/v1/tasks", json=submit_body("true")).json()["id"] for _ in range(5)}
    platform.stop()
    platform.start()
    with platform.client(consumer) as http:
        assert {t["id"] for t in http.get("/v1/tasks").json()} == ids


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "field"),
    [
        ("post", "/v1/tasks", {}, 422, "body.executors"),
        ("post", "/v1/tasks", {"executors": [{"command": "ls"}]}, 422, "body.executors.0.command"),
        (
            "post",
            "/v1/tasks",
            {"executors": [{"command": ["ls"]}], "resources": {"devices": -1}},
            422,
            "body.resources.devices",
        ),
        (
            "post",
            "/v1/tasks",
            {"executors": [{"command": ["ls"]}], "resources": {"devices": "2"}},
            422,
            "body.resources.devices",
        ),
        (
            "post",
            "/v1/tasks",
            {"executors": [{"command": ["ls"]}], "origin": "Atlantis"},
            422,
            "origin",
        ),
        (
            "post",
            "/v1/tasks",
            {"executors": [{"command": ["ls"]}], "resources": {"device_models": ["H900"]}},
            422,
            "resources.device_models[0]",
        ),
        ("get", "/v1/tasks/task-nope", None, 404, None),
        ("post", "/v1/tasks/task-nope/cancel", None, 404, None),
        ("get", "/v1/tasks?state=DONE", None, 422, "state"),
    ],
)
def test_bad_input_is_a_4xx_naming_the_field(
    platform: Platform, method: str, path: str, body: object, status: int, field: str | None
) -> None:
    consumer = platform.token(Role.CONSUMER, "lab")
    with platform.client(consumer) as http:
        response = http.request(method.upper(), path, json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"] and error["message_zh"]
    if field is not None:
        assert error["field"] == field


def test_bad_tokens_and_roles(platform: Platform) -> None:
    consumer = platform.token(Role.CONSUMER, "lab")
    with platform.client("sl_not-a-token") as http:
        assert http.get("/v1/tasks").status_code == 401
    with platform.client(consumer) as http:
        forbidden = http.post("/v1/sites", json={"name": "mine", "province": "上海"})
        assert forbidden.status_code == 403
        assert "provider" in forbidden.json()["error"]["message"]
    import httpx

    assert httpx.get(f"{platform.url}/v1/tasks").status_code == 401


def test_metrics_and_docs(platform: Platform) -> None:
    import httpx

    metrics = httpx.get(f"{platform.url}/metrics").text
    for name in (
        "suanli_queue_length",
        "suanli_tasks",
        "suanli_placements_total",
        "suanli_agents",
        "suanli_http_request_seconds",
    ):
        assert name in metrics
    assert httpx.get(f"{platform.url}/docs").status_code == 200
    assert httpx.get(f"{platform.url}/openapi.json").json()["info"]["title"] == "suanli"
