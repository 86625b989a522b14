"""Attack: a task stuck RUNNING with nothing running.

Reported: after a server outage longer than the lease the agent drops its task, but its next
heartbeat renewed every lease it held whatever its `running` list said, so the task stayed
RUNNING forever; and a lease equal to the heartbeat interval was accepted and looped forever.
Here the agent protocol is driven by hand (a heartbeat that lists nothing must not keep a lease),
a real agent lives through a real server outage, and `suanli serve` refuses a lease shorter
than three heartbeats.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from suanli.services.core import Role
from tests.integration.platform.conftest import FAST, Platform, free_port, submit_body

TERMINAL = {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED"}
LEASE_S = float(FAST["SUANLI_LEASE_S"])


def _state(platform: Platform, token: str, task_id: str) -> str:
    with platform.client(token) as http:
        return str(http.get(f"/v1/tasks/{task_id}").json()["state"])


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_heartbeat_renews_only_running_tasks(platform: Platform) -> None:
    provider = platform.token(Role.PROVIDER, "provider")
    consumer = platform.token(Role.CONSUMER, "consumer")
    site = platform.site_with_pool(provider, count=1)
    with platform.client(consumer) as http:
        created = http.post("/v1/tasks", json=submit_body("true", name="held"))
        assert created.status_code == 201, created.text
        task_id = created.json()["id"]
    with platform.client(provider) as agent:
        registered = agent.post(
            "/v1/agents", json={"site_id": site, "name": "by hand", "slots": 1, "backend": "local"}
        )
        assert registered.status_code == 201, registered.text
        me = registered.json()
        beat_s = float(me["heartbeat_s"])
        deadline = time.monotonic() + 30
        leased: list[dict[str, object]] = []
        while not leased:
            assert time.monotonic() < deadline, "the task was never leased"
            answer = agent.post(f"/v1/agents/{me['id']}/lease", json={"max": 1})
            leased = answer.json()["tasks"]
            if not leased:
                time.sleep(0.1)
        assert [t["id"] for t in leased] == [task_id]

        # listed as running: the lease lives through two lease periods of heartbeats
        until = time.monotonic() + 2 * LEASE_S
        while time.monotonic() < until:
            beat = agent.post(f"/v1/agents/{me['id']}/heartbeat", json={"running": [task_id]})
            assert beat.status_code == 200, beat.text
            time.sleep(beat_s)
        assert _state(platform, consumer, task_id) == "INITIALIZING"

        # no longer listed (the agent dropped it): heartbeats go on, the lease runs out
        deadline = time.monotonic() + 10 * LEASE_S
        while _state(platform, consumer, task_id) == "INITIALIZING":
            assert time.monotonic() < deadline, "heartbeats kept renewing a task not running"
            beat = agent.post(f"/v1/agents/{me['id']}/heartbeat", json={"running": []})
            assert beat.status_code == 200, beat.text
            time.sleep(beat_s)
        assert _state(platform, consumer, task_id) == "QUEUED"  # back in the queue
        late = agent.post(
            f"/v1/tasks/{task_id}/report", json={"agent_id": me["id"], "state": "RUNNING"}
        )
        assert late.status_code == 409, late.text


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_task_dropped_in_an_outage_is_not_kept_running(platform: Platform) -> None:
    """End to end, the agent's side: it gives its task up during the outage and the task runs
    again afterwards. (The old server failed this only when the agent's first heartbeat after the
    outage beat the expiry pass; `test_heartbeat_renews_only_running_tasks` pins that down.)"""
    provider = platform.token(Role.PROVIDER, "provider")
    consumer = platform.token(Role.CONSUMER, "consumer")
    site = platform.site_with_pool(provider, count=1)
    platform.agent(provider, site, 1)
    log = platform.home / "agent-0.log"
    with platform.client(consumer) as http:
        created = http.post("/v1/tasks", json=submit_body("sh", "-c", "sleep 4", name="outage"))
        assert created.status_code == 201, created.text
        task_id = created.json()["id"]
    assert platform.wait_for(consumer, task_id, {"RUNNING"})["state"] == "RUNNING"

    platform.stop()  # an outage longer than the lease: the agent gives the task up
    deadline = time.monotonic() + 10 * LEASE_S
    while "dropped: lease not renewed in time" not in log.read_text(errors="replace"):
        assert time.monotonic() < deadline, "the agent never dropped the task"
        time.sleep(0.1)
    platform.start()

    # the server puts it back in the queue and it runs again, to its end
    task = platform.wait_for(consumer, task_id, TERMINAL, timeout=20 + 5 * LEASE_S)
    assert task["state"] == "COMPLETE", task


def test_lease_shorter_than_three_heartbeats_is_refused(tmp_path: Path) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SUANLI_")},
        "SUANLI_HOME": str(tmp_path),
        "SUANLI_LEASE_S": "1",
        "SUANLI_HEARTBEAT_S": "1",
    }
    argv = [sys.executable, "-m", "suanli", "serve", "--port", str(free_port())]
    try:
        done = subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=30, check=False
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the server started with a lease as short as one heartbeat")
    assert done.returncode == 2, done.stderr
    assert "lease_s" in done.stderr and "heartbeat_s" in done.stderr
    assert "SUANLI_LEASE_S" in done.stderr and "不短于" in done.stderr  # both languages
