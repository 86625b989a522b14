"""Attack: a task stuck RUNNING with nothing running.

Reported: after a server outage longer than the lease the agent drops its task, but its next
heartbeat renewed every lease it held whatever its `running` list said, so the task stayed
RUNNING forever; and a lease equal to the heartbeat interval was accepted and looped forever.
Here the agent protocol is driven by hand (a heartbeat that lists nothing must not keep a lease),
a real agent lives through a real server outage, and `suanli serve` refuses a lease shorter
than three heartbeats.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from suanli.services.core import Role
from tests.integration.platform.conftest import FAST, Platform, free_port, submit_body
from tests.waiting import wait_until

TERMINAL = {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED"}
LEASE_S = float(FAST["SUANLI_LEASE_S"])


def _state(platform: Platform, token: str, task_id: str) -> str:
    with platform.client(token) as http:
        return str(http.get(f"/v1/tasks/{task_id}").json()["state"])


@pytest.mark.virtual_clock
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_heartbeat_renews_only_running_tasks(platform: Platform) -> None:
    """On a virtual clock: each step is a heartbeat then `beat_s` of server time, and every
    step returns after the server's expiry pass ran at the new time, so the lease's fate is
    decided by the clock alone."""
    operator = platform.token(Role.OPERATOR, "ops")
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
        # a long-poll: answered as soon as the pass places the task
        leased = agent.post(f"/v1/agents/{me['id']}/lease", json={"max": 1, "wait_s": 30})
        assert [t["id"] for t in leased.json()["tasks"]] == [task_id], leased.text

        def step(running: list[str]) -> None:
            beat = agent.post(f"/v1/agents/{me['id']}/heartbeat", json={"running": running})
            assert beat.status_code == 200, beat.text
            assert platform.advance(operator, beat_s)["passed"]

        # listed as running: the lease lives through two lease periods of heartbeats
        for _ in range(math.ceil(2 * LEASE_S / beat_s)):
            step([task_id])
        assert _state(platform, consumer, task_id) == "INITIALIZING"

        # no longer listed (the agent dropped it): heartbeats go on, the lease runs out
        for _ in range(math.floor(LEASE_S / beat_s) - 1):
            step([])
        assert _state(platform, consumer, task_id) == "INITIALIZING"  # not before its end
        for _ in range(2):
            step([])
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
    wait_until(
        lambda: "dropped: lease not renewed in time" in log.read_text(errors="replace"),
        "the agent to drop its task",
        timeout_s=10 * LEASE_S,
    )
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
