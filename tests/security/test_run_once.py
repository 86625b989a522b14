"""Attack: one task runs twice at once.

Reported: after its agent was SIGKILLed, a task's executor kept running (it has a session of its
own), and the copy of the task that the server re-queued ran beside it on a second agent for 14 s.
Here each run of a task appends `<run id> <ns clock>` beats to a file outside the task directory,
from a child of the task's shell (not its leader), while another child sleeps. The agent is
killed with SIGKILL; every process of the task must be gone within seconds, and when a second
agent runs the re-queued task no beat of the first run may come after the second run's first.
A restarted agent also kills what an agent without PID namespaces left behind on its work root.
"""

from __future__ import annotations

import inspect
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from suanli.agent.backends.local import LocalBackend
from suanli.services.core import Role
from tests.integration.platform.conftest import Platform, submit_body
from tests.processes import pids_of
from tests.waiting import wait_until

TERMINAL = {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED"}


@pytest.fixture
def shared() -> Iterator[Path]:
    """Where both runs write their beats, and the agents' work roots: outside /tmp, which
    every task replaces with a private one."""
    path = Path(tempfile.mkdtemp(prefix="suanli-run-once-", dir="/var/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _beating_task(beats: Path, marker: str) -> dict[str, object]:
    """A task whose shell (named `marker`) starts a beating subshell and a sleeper, then waits."""
    script = (
        "run=$(cat /proc/sys/kernel/random/uuid); "
        f'(while :; do echo "$run $(date +%s%N)" >> {beats}; sleep 0.05; done) & '
        "sleep 300 & wait"
    )
    return submit_body("sh", "-c", script, marker, name="twice")


def _runs(beats: Path) -> dict[str, list[int]]:
    """Each run's beat times (ns), in the order the runs first beat."""
    runs: dict[str, list[int]] = {}
    for line in beats.read_text().splitlines() if beats.exists() else []:
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            runs.setdefault(parts[0], []).append(int(parts[1]))
    return runs


def _until(condition: Callable[[], object], what: str, timeout_s: float = 30.0) -> None:
    wait_until(condition, what, timeout_s, every_s=0.05)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_executor_dies_with_agent(platform: Platform, shared: Path) -> None:
    provider = platform.token(Role.PROVIDER, "provider")
    consumer = platform.token(Role.CONSUMER, "consumer")
    site = platform.site_with_pool(provider, count=2)
    beats = shared / "beats.txt"
    marker = f"suanli-run-once-{os.getpid()}-{time.time_ns()}"
    first = platform.agent(provider, site, 1, work_root=shared / "work-1")
    with platform.client(consumer) as http:
        created = http.post("/v1/tasks", json=_beating_task(beats, marker))
        assert created.status_code == 201, created.text
        task_id = created.json()["id"]
    _until(lambda: len(_runs(beats)) == 1 and pids_of(marker), "the first run never beat")

    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    _until(lambda: pids_of(marker) == [], "the task outlived its agent", timeout_s=5)

    platform.agent(provider, site, 1, work_root=shared / "work-2")  # the re-queued copy runs here
    _until(lambda: len(_runs(beats)) == 2 and len(list(_runs(beats).values())[1]) >= 5, "no rerun")
    with platform.client(consumer) as http:
        assert http.post(f"/v1/tasks/{task_id}/cancel").status_code in (200, 202)
    assert platform.wait_for(consumer, task_id, TERMINAL)["state"] == "CANCELED"

    one, two = _runs(beats).values()
    assert max(one) < min(two), "the first run was still beating when the second one ran"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_restarted_agent_kills_orphans(platform: Platform, shared: Path) -> None:
    """Where PID namespaces are refused, only an executor's leader dies with the agent; the
    next agent on the same work root kills the rest of its group before reporting it lost."""
    provider = platform.token(Role.PROVIDER, "provider")
    consumer = platform.token(Role.CONSUMER, "consumer")
    site = platform.site_with_pool(provider, count=2)
    beats = shared / "beats.txt"
    marker = f"suanli-orphans-{os.getpid()}-{time.time_ns()}"
    work_root = shared / "work"
    # a real agent process, with the local backend as a host without PID namespaces has it
    without_pid_ns = (
        "pid_namespace=False"
        if "pid_namespace" in inspect.signature(LocalBackend).parameters
        else ""
    )
    program = (
        "import os, sys\n"
        "from suanli.agent.backends.local import LocalBackend\n"
        "from suanli.agent.runner import run_agent\n"
        f"backend = LocalBackend({without_pid_ns})\n"
        "run_agent(sys.argv[1], os.environ.pop('SUANLI_TOKEN'), sys.argv[2], backend,"
        " slots=1, work_root=sys.argv[3])\n"
    )
    with (platform.home / "agent-without-pid-ns.log").open("wb") as log:
        first = subprocess.Popen(
            [sys.executable, "-c", program, platform.url, site, str(work_root)],
            env={**platform.env, "SUANLI_TOKEN": provider},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    platform.agents.append(first)
    with platform.client(consumer) as http:
        created = http.post("/v1/tasks", json=_beating_task(beats, marker))
        assert created.status_code == 201, created.text
        task_id = created.json()["id"]
    _until(lambda: len(_runs(beats)) == 1 and pids_of(marker), "the task never beat")

    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    platform.agent(provider, site, 1, work_root=work_root)  # restarted on the same work root
    _until(lambda: pids_of(marker) == [], "the restarted agent left the orphans running")
    task = platform.wait_for(consumer, task_id, TERMINAL)
    assert task["state"] == "SYSTEM_ERROR", task  # reported lost, after its orphans died
