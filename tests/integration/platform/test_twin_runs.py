"""Digital-twin runs off the web process, against a real `suanli serve` (which starts one
`suanli twin-worker` child) on SQLite and on PostgreSQL:

* a run queued through the console's form is claimed and replayed by the worker process (not
  the server), its progress and report come from the store, and every state change is a
  `twin.state` event;
* two worker processes started at once on the same queue claim each run exactly once;
* SIGKILL the worker mid-run: the server starts another, which FAILS the silent run once its
  heartbeat is older than `--stale-s` (runs are failed, not re-queued), and the next run
  completes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from suanli.services import twinruns
from suanli.services.core import Role, create_token
from suanli.services.twinruns import TwinRequest, TwinRun
from suanli.store.db import make_engine, session_factory, upgrade
from suanli.store.models import EventRow, Principal
from tests.waiting import wait_until

from .browser import form_csrf, http_sign_in
from .conftest import FAST, Platform, free_port

pytestmark = pytest.mark.twin_workers  # the platform fixture's server starts its twin worker

QUICK_TWIN = {  # beat and give up quickly, so that a killed worker is noticed in seconds
    "SUANLI_TWIN_POLL_S": "0.2",
    "SUANLI_TWIN_HEARTBEAT_S": "0.2",
    "SUANLI_TWIN_STALE_S": "2",
    "SUANLI_TWIN_WORKERS": "1",  # the server starts (and restarts) one worker
}


@pytest.fixture
def twin_platform(database_url: str, tmp_path: Path) -> Iterator[Platform]:
    """The conftest's platform, with the twin worker's quick timings in its environment."""
    engine = make_engine(database_url)
    upgrade(engine)
    engine.dispose()
    port = free_port()
    env = {**os.environ, **FAST, **QUICK_TWIN, "SUANLI_HOME": str(tmp_path)}
    env.pop("SUANLI_DATABASE_URL", None)
    running = Platform(f"http://127.0.0.1:{port}", database_url, tmp_path, env, port=port)
    running.start()
    try:
        yield running
    finally:
        running.stop()


def _store(platform: Platform) -> Any:
    return session_factory(make_engine(platform.database_url))


def _run(platform: Platform, run_id: str) -> TwinRun:
    sessions = _store(platform)
    with sessions.begin() as session:
        operator = Principal(id="test-operator", name="test", role=Role.OPERATOR.value)
        return twinruns.get_run(session, operator, run_id)


def _moves(platform: Platform, run_id: str) -> list[tuple[str | None, str, str]]:
    """(from, to, actor) of the run's twin.state events, in chain order."""
    with _store(platform).begin() as session:
        events = session.scalars(
            select(EventRow)
            .where(EventRow.kind == "twin.state", EventRow.subject == run_id)
            .order_by(EventRow.seq)
        ).all()
        return [(e.data["from"], e.data["to"], e.actor) for e in events]


def _queue_from_console(platform: Platform, token: str, **form: str) -> str:
    """Queue a run with the console's form, as a browser posts it; the run's id."""
    with http_sign_in(platform, token) as http:
        page = http.get("/console/twin")
        assert page.status_code == 200, page.text
        data = {"trace": "openb", "limit": "60", "seed": "0", "scale": "0.004", **form}
        policies = data.pop("policies", "nearest,green").split(",")
        posted = http.post(
            "/console/twin/runs",
            data={**data, "policies": policies, "csrf": form_csrf(page.text)},
            headers={"Origin": platform.url},
        )
        assert posted.status_code == 303, posted.text
        return str(posted.headers["location"]).rsplit("/", 1)[-1]


def _pid(worker: str | None) -> int:
    assert worker is not None
    return int(worker.rsplit(":", 1)[-1])


def test_a_console_run_is_replayed_by_a_worker_process(platform: Platform) -> None:
    operator = platform.token(Role.OPERATOR, "planner")
    run_id = _queue_from_console(platform, operator)

    done = wait_until(lambda: (r := _run(platform, run_id)).ended and r, "the run to end", 120)
    assert done.state == twinruns.DONE, (done.message, done.error)
    assert done.progress == 1.0
    assert set(done.results) == {"nearest", "green"}
    assert done.results["nearest"]["metrics"]["tasks_total"] == done.jobs
    assert done.step is not None and done.step["policies_done"] == 2
    worker = _pid(done.worker)
    assert platform.server is not None and worker != platform.server.pid  # not the web process
    cmdline = Path(f"/proc/{worker}/cmdline").read_bytes().split(b"\0")
    assert b"twin-worker" in cmdline
    assert [m[:2] for m in _moves(platform, run_id)] == [
        (None, "QUEUED"),
        ("QUEUED", "RUNNING"),
        ("RUNNING", "DONE"),
    ]
    with http_sign_in(platform, operator) as http:  # the report is read from the store
        page = http.get(f"/console/twin/runs/{run_id}")
        assert page.status_code == 200
        assert 'id="twin-report"' in page.text and "twin-state-done" in page.text
        listed = http.get("/console/twin")
        assert f"/console/twin/runs/{run_id}" in listed.text

    other = platform.token(Role.CONSUMER, "someone else")
    with http_sign_in(platform, other) as http:  # another principal's run does not show
        assert http.get(f"/console/twin/runs/{run_id}").status_code == 404
        assert run_id not in http.get("/console/twin").text


def test_two_workers_claim_each_run_once(platform: Platform) -> None:
    sessions = _store(platform)
    with sessions.begin() as session:
        owner, _ = create_token(session, Role.CONSUMER, "sweeper")
        request = TwinRequest("openb", ("nearest",), 20, 0, 0.004)
        ids = [twinruns.queue_run(session, owner, request).id for _ in range(4)]
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "suanli",
                "twin-worker",
                "--db",
                platform.database_url,
                "--once",
                "--name",
                f"sweeper-{n}",
                "--poll-s",
                "0.1",
            ],
            env=platform.env,
        )
        for n in range(2)
    ]
    for worker in workers:
        assert worker.wait(timeout=180) == 0
    for run_id in ids:  # the server's own worker may have taken some too: each exactly once
        run = wait_until(
            lambda run_id=run_id: (r := _run(platform, run_id)).ended and r, run_id, 60
        )
        assert run.state == twinruns.DONE, run.message
        claims = [m for m in _moves(platform, run_id) if m[1] == "RUNNING"]
        assert len(claims) == 1, claims


def test_a_killed_worker_fails_its_run_and_another_worker_takes_over(
    twin_platform: Platform,
) -> None:
    platform = twin_platform
    operator = platform.token(Role.OPERATOR, "planner")
    run_id = _queue_from_console(
        platform, operator, limit="3000", policies="nearest,cost,green,latency,balanced"
    )
    running = wait_until(
        lambda: (r := _run(platform, run_id)).state == twinruns.RUNNING and r.progress > 0 and r,
        "progress from the worker",
        120,
    )
    assert not running.ended
    victim = _pid(running.worker)
    os.kill(victim, signal.SIGKILL)

    failed = wait_until(
        lambda: (r := _run(platform, run_id)).ended and r, "the run to be failed", 60
    )
    assert failed.state == twinruns.FAILED
    assert failed.message and "stopped reporting" in failed.message, failed.message
    assert failed.error is not None and "心跳" in failed.error[1]
    moves = _moves(platform, run_id)
    assert [m[:2] for m in moves] == [
        (None, "QUEUED"),
        ("QUEUED", "RUNNING"),
        ("RUNNING", "FAILED"),
    ]
    reaper = moves[-1][2]
    assert _pid(reaper) != victim  # a new worker, started by the server, noticed
    assert platform.server is not None and platform.server.poll() is None

    again = _queue_from_console(platform, operator)  # and the queue goes on
    done = wait_until(lambda: (r := _run(platform, again)).ended and r, "the next run", 120)
    assert done.state == twinruns.DONE, done.message
    assert _pid(done.worker) == _pid(reaper)
