"""One leader, many servers: real `suanli serve` / `suanli scheduler` processes on one database.

* Three servers on one PostgreSQL take 2,000 submissions spread across them while real agents
  run them; the leader is SIGKILLed mid-run. A new leader takes over within two schedule
  intervals, every task ends COMPLETE, each is placed once (a second placement only after a
  re-queue), and replaying the audit log in seq order never finds a pool over its capacity.
* API-only servers (`--no-scheduler`, here with `--workers 2`) never lead; a standalone
  `suanli scheduler` process places the work submitted through them.
* On SQLite one process owns the file: a second server or scheduler on it is refused, and so
  is `--workers 2`; the file is free again once its owner is gone, however it ended.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, func, select

from suanli.services.core import TERMINAL, Role
from suanli.services.leader import holder_pid
from suanli.store.db import make_engine, session_factory, upgrade
from suanli.store.models import EventRow, PoolRow, SchedulerLeader, TaskRow
from tests.integration.platform.conftest import FAST, free_port, submit_body
from tests.money import principal_token
from tests.waiting import wait_until

INTERVAL_S = 0.5  # the schedule interval of these servers
TASKS = 2000
BURST = 100  # submitted before the agents start: more than the pools hold
SITES, DEVICES = 3, 16  # a few pools: the queue is far deeper than their capacity
ENDED = {state.value for state in TERMINAL}


class Cluster:
    """Server, scheduler and agent processes on one database; all stopped at the end."""

    def __init__(self, database_url: str, home: Path) -> None:
        self.database_url = database_url
        self.home = home
        self.env = {
            **os.environ,
            **FAST,
            "SUANLI_SCHEDULE_INTERVAL_S": str(INTERVAL_S),
            "SUANLI_HOME": str(home),
        }
        self.env.pop("SUANLI_DATABASE_URL", None)
        self.processes: list[subprocess.Popen[bytes]] = []
        self.engine: Engine = make_engine(database_url)

    def _spawn(self, name: str, *argv: str, env: dict[str, str] | None = None) -> Any:
        log = open(self.home / f"{name}-{len(self.processes)}.log", "wb")  # noqa: SIM115
        process = subprocess.Popen(
            [sys.executable, "-m", "suanli", *argv],
            env=env or self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes.append(process)
        return process

    def serve(self, *extra: str) -> tuple[subprocess.Popen[bytes], str]:
        port = free_port()
        argv = ("serve", "--port", str(port), "--db", self.database_url, "--no-upgrade")
        process = self._spawn("server", *argv, *extra)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert process.poll() is None, self.logs()
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    return process, url
            except httpx.HTTPError:
                time.sleep(0.1)
        raise AssertionError("a server did not start:\n" + self.logs())

    def scheduler(self) -> subprocess.Popen[bytes]:
        process: subprocess.Popen[bytes] = self._spawn(
            "scheduler", "scheduler", "--db", self.database_url, "--no-upgrade"
        )
        return process

    def agent(self, url: str, provider: str, site: str, slots: int) -> None:
        with httpx.Client(base_url=url, headers=_auth(provider), timeout=30) as http:
            issued = http.post(f"/v1/sites/{site}/agent-tokens", json={"name": "agent"})
            assert issued.status_code == 201, issued.text
        argv = ("agent", "--server", url, "--site", site, "--slots", str(slots))
        work = str(self.home / f"work-{len(self.processes)}")
        self._spawn(
            "agent",
            *argv,
            "--work-root",
            work,
            "--poll-s",
            "0.1",
            env={**self.env, "SUANLI_TOKEN": issued.json()["token"]},
        )

    def token(self, role: Role, name: str) -> str:
        """A new principal's token; a consumer's wallet is funded (`tests.money`)."""
        with session_factory(self.engine).begin() as session:
            _, token = principal_token(session, role, name)
        return token

    def leader(self) -> tuple[str, int] | None:
        with session_factory(self.engine)() as session:
            row = session.get(SchedulerLeader, 1)
            return None if row is None else (row.holder, row.term)

    def wait_for_leader(self, unlike: str | None = None, timeout: float = 30) -> tuple[str, int]:
        deadline = time.monotonic() + timeout
        while True:
            found = self.leader()
            if found is not None and found[0] != unlike:
                return found
            assert time.monotonic() < deadline, "no leader was elected:\n" + self.logs()
            time.sleep(0.02)

    def events(self, *kinds: str) -> list[EventRow]:
        with session_factory(self.engine)() as session:
            query = select(EventRow).where(EventRow.kind.in_(kinds)).order_by(EventRow.seq)
            return list(session.scalars(query))

    def logs(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}"
            for path in sorted(self.home.glob("*.log"))
        )

    def close(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        self.engine.dispose()


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def cluster(database_url: str, tmp_path: Path) -> Iterator[Cluster]:
    engine = make_engine(database_url)
    upgrade(engine)
    engine.dispose()
    running = Cluster(database_url, tmp_path)
    try:
        yield running
    finally:
        running.close()


def _site(url: str, provider: str, devices: int, province: str) -> str:
    with httpx.Client(base_url=url, headers=_auth(provider), timeout=30) as http:
        site = http.post("/v1/sites", json={"name": f"dc {province}", "province": province})
        assert site.status_code == 201, site.text
        pool = http.post(
            "/v1/pools",
            json={
                "site_id": site.json()["id"],
                "device": "cpu",
                "count": devices,
                "price_fen_per_device_hour": 10,
            },
        )
        assert pool.status_code == 201, pool.text
    return str(site.json()["id"])


def _replay(cluster: Cluster) -> tuple[dict[str, int], dict[str, int], Counter[str]]:
    """Replay placements and ends in seq order: (the most devices each pool ever held, each
    pool's count, placements per task). Fails on a second placement without a re-queue."""
    with session_factory(cluster.engine)() as session:
        counts = {p.id: p.count for p in session.scalars(select(PoolRow))}
        devices = {i: n for i, n in session.execute(select(TaskRow.id, TaskRow.devices))}
    held: dict[str, int] = defaultdict(int)
    peak: dict[str, int] = defaultdict(int)
    holding: dict[str, str] = {}  # task -> the pool it holds devices of
    placed: Counter[str] = Counter()
    for event in cluster.events("task.placed", "task.state"):
        task = event.subject
        if event.kind == "task.placed":
            assert task not in holding, f"{task} placed again without a re-queue (#{event.seq})"
            pool = str(event.data["pool"])
            holding[task] = pool
            held[pool] += devices[task]
            peak[pool] = max(peak[pool], held[pool])
            placed[task] += 1
        elif event.data["to"] in ENDED or event.data["to"] == "QUEUED":
            pool = holding.pop(task, "")
            if pool:
                held[pool] -= devices[task]
    return dict(peak), counts, placed


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_three_servers_one_leader_survive_its_kill(cluster: Cluster) -> None:
    servers = [cluster.serve() for _ in range(3)]
    urls = [url for _, url in servers]
    holder, term = cluster.wait_for_leader()
    by_pid = {process.pid: (process, url) for process, url in servers}
    assert holder_pid(holder) in by_pid, holder  # one of the three leads
    leader_process, leader_url = by_pid[holder_pid(holder)]
    others = [url for url in urls if url != leader_url]

    provider = cluster.token(Role.PROVIDER, "dc")
    consumer = cluster.token(Role.CONSUMER, "lab")
    provinces = ["上海", "贵州", "内蒙古", "甘肃"]
    sites = [_site(others[n % 2], provider, DEVICES, provinces[n]) for n in range(SITES)]

    body = submit_body("true")
    killed_at: list[float] = []
    still: list[tuple[str, int] | None] = []
    lost: list[str] = []

    # one keep-alive client per submitting thread and server, as a real client holds one (a
    # client built per request costs the test process more CPU than the server's submit does)
    clients = threading.local()
    opened: list[httpx.Client] = []

    def client(url: str) -> httpx.Client:
        mine: dict[str, httpx.Client] = clients.__dict__.setdefault("by_url", {})
        if url not in mine:
            mine[url] = httpx.Client(base_url=url, headers=_auth(consumer), timeout=30)
            opened.append(mine[url])
        return mine[url]

    def submit(n: int) -> None:
        key = str(uuid.uuid4())  # a retry on another server is the same submission
        for attempt in range(6):
            url = urls[(n + attempt) % 3]
            try:
                answer = client(url).post("/v1/tasks", json=body, headers={"Idempotency-Key": key})
            except httpx.HTTPError:
                continue  # that server is down: the next one
            if answer.status_code in (200, 201):
                return
            lost.append(f"{answer.status_code} {answer.text[:200]}")
            return
        lost.append(f"submission {n} reached no server")

    def kill_the_leader_mid_run() -> None:
        with session_factory(cluster.engine)() as session:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                done = session.scalar(
                    select(func.count()).select_from(TaskRow).where(TaskRow.state == "COMPLETE")
                )
                session.rollback()
                if (done or 0) >= 200:
                    break
                time.sleep(0.05)
        # under this load the lead never changed hands before the kill (no lapse, no flapping)
        still.append(cluster.leader())
        killed_at.append(time.time())
        os.kill(leader_process.pid, signal.SIGKILL)

    # a burst before any agent runs: the pass fills every pool to its count and holds the rest
    # back (so capacity binds), then agents (talking to the servers that stay up) drain it all
    started = time.monotonic()
    with ThreadPoolExecutor(16) as submitters:
        list(submitters.map(submit, range(BURST)))
    wait_until(lambda: _placed_devices(cluster) >= SITES * DEVICES, "every pool to fill", 60)
    for n, site in enumerate(sites):
        cluster.agent(others[n % 2], provider, site, DEVICES)
    killer = threading.Thread(target=kill_the_leader_mid_run)
    killer.start()
    with ThreadPoolExecutor(16) as submitters:
        list(submitters.map(submit, range(BURST, TASKS)))
    print(f"{TASKS} submissions in {time.monotonic() - started:.1f} s")
    killer.join()
    for http in opened:
        http.close()
    assert not lost, lost[:5]
    assert leader_process.wait(timeout=10) == -signal.SIGKILL
    changes = [e.data for e in cluster.events("scheduler.leader") if e.data.get("term") != term]
    assert still == [(holder, term)], ("the lead changed hands under load", still, changes)

    # a new leader, elected within two intervals of the kill
    new_holder, new_term = cluster.wait_for_leader(unlike=holder)
    assert new_term > term and holder_pid(new_holder) != leader_process.pid
    elected = [e for e in cluster.events("scheduler.leader") if e.data.get("holder") == new_holder]
    assert elected and elected[0].data["previous"] == holder, [e.data for e in elected]
    took_s = elected[0].at.timestamp() - killed_at[0]
    if elected[0].at.tzinfo is None:  # pragma: no cover - PostgreSQL keeps the zone
        raise AssertionError("timestamps without a zone")
    print(f"new leader {new_holder} after {took_s:.3f} s (interval {INTERVAL_S} s)")
    assert took_s <= 2 * INTERVAL_S, (took_s, [e.data for e in elected])

    # nothing lost: every submission ends COMPLETE
    deadline = time.monotonic() + 240
    with session_factory(cluster.engine)() as session:
        while True:
            grouped = select(TaskRow.state, func.count()).group_by(TaskRow.state)
            states = {state: n for state, n in session.execute(grouped)}
            session.rollback()
            if sum(states.values()) >= TASKS and set(states) <= ENDED:
                break
            assert time.monotonic() < deadline, (states, cluster.logs())
            time.sleep(0.5)
    assert states == {"COMPLETE": TASKS}, states
    print(f"all COMPLETE {time.monotonic() - started:.1f} s after the first submission")

    peak, counts, placed = _replay(cluster)
    assert set(placed) == {row for row in _task_ids(cluster)}  # every task placed
    again = {task: n for task, n in placed.items() if n > 1}
    print(f"placements: {sum(placed.values())}, placed again after a re-queue: {len(again)}")
    for pool, most in peak.items():
        assert most <= counts[pool], (pool, most, counts[pool])
    assert any(most == counts[pool] for pool, most in peak.items())  # capacity did bind
    # only the old and the new leader ever led
    leaders = {e.data["holder"] for e in cluster.events("scheduler.leader")}
    assert {holder, new_holder} <= leaders


def _placed_devices(cluster: Cluster) -> int:
    """Devices held by queued tasks the pass has placed (no agent has leased them yet)."""
    with session_factory(cluster.engine)() as session:
        held = select(func.sum(TaskRow.devices)).where(
            TaskRow.pool_id.is_not(None), TaskRow.state == "QUEUED"
        )
        return int(session.scalar(held) or 0)


def _task_ids(cluster: Cluster) -> set[str]:
    with session_factory(cluster.engine)() as session:
        return set(session.scalars(select(TaskRow.id)))


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_api_only_servers_never_lead_and_the_scheduler_process_places(cluster: Cluster) -> None:
    api, url = cluster.serve("--no-scheduler", "--workers", "2")
    provider = cluster.token(Role.PROVIDER, "dc")
    consumer = cluster.token(Role.CONSUMER, "lab")
    site = _site(url, provider, 2, "贵州")
    cluster.agent(url, provider, site, 2)
    with httpx.Client(base_url=url, headers=_auth(consumer), timeout=30) as http:
        first = http.post("/v1/tasks", json=submit_body("true")).json()["id"]
        # the agent is heard from (so time has passed for a pass), yet nothing leads or places
        deadline = time.monotonic() + 30
        while not http.get("/metrics").text.count("suanli_agents 1.0"):
            assert time.monotonic() < deadline, cluster.logs()
            time.sleep(0.1)
        task = http.get(f"/v1/tasks/{first}").json()
        assert task["state"] == "QUEUED" and task["pool"] is None, task
        assert cluster.leader() is None
        assert "suanli_scheduler_leader 0.0" in http.get("/metrics").text

        scheduler = cluster.scheduler()
        holder, _ = cluster.wait_for_leader()
        assert holder_pid(holder) == scheduler.pid
        ids = [first] + [
            http.post("/v1/tasks", json=submit_body("true")).json()["id"] for _ in range(5)
        ]
        deadline = time.monotonic() + 60
        while True:
            states = [http.get(f"/v1/tasks/{i}").json()["state"] for i in ids]
            if set(states) <= ENDED:
                break
            assert time.monotonic() < deadline, (states, cluster.logs())
            time.sleep(0.2)
    assert states == ["COMPLETE"] * len(ids)
    assert api.poll() is None
    leaders = [e.data for e in cluster.events("scheduler.leader")]
    assert leaders and all(holder_pid(e["holder"]) == scheduler.pid for e in leaders), leaders

    scheduler.send_signal(signal.SIGTERM)  # it resigns on the way out
    assert scheduler.wait(timeout=20) == 0, cluster.logs()
    assert cluster.events("scheduler.leader")[-1].data["action"] == "resigned"


def _refused(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "suanli", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, (done.returncode, done.stderr)
    return done


def test_one_process_owns_a_sqlite_file(tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path / 'one.db'}"
    cluster = Cluster(database_url, tmp_path)
    try:
        upgrade(cluster.engine)
        first, url = cluster.serve()
        port = str(free_port())
        for argv in (
            ("serve", "--port", port, "--db", database_url),
            ("serve", "--port", port, "--db", database_url, "--no-scheduler"),
            ("scheduler", "--db", database_url),
        ):
            refused = _refused(cluster.env, *argv).stderr
            assert "one process owns a SQLite file" in refused, refused
            assert "一个 SQLite 文件只能由一个进程使用" in refused
            assert f"pid {first.pid}" in refused and "PostgreSQL" in refused
        other = f"sqlite:///{tmp_path / 'other.db'}"
        workers = _refused(cluster.env, "serve", "--port", port, "--db", other, "--workers", "2")
        assert "workers" in workers.stderr and "PostgreSQL" in workers.stderr
        assert "SQLite 上只能为 1" in workers.stderr
        assert httpx.get(f"{url}/healthz").status_code == 200  # the owner serves on

        old_holder, _ = cluster.wait_for_leader()
        assert holder_pid(old_holder) == first.pid
        os.kill(first.pid, signal.SIGKILL)  # the lock ends with its process, however it ends
        first.wait(timeout=10)
        second, _ = cluster.serve()
        holder, _ = cluster.wait_for_leader(unlike=old_holder)
        assert holder_pid(holder) == second.pid
        elected = cluster.events("scheduler.leader")[-1].data
        assert elected["previous"] == old_holder, elected
    finally:
        cluster.close()
