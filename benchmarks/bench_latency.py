"""Benchmark: how fast work reaches an idle agent, and how fast one agent drains a queue.

A real `suanli serve` (SQLite, scheduling loop as in production) and one real `suanli agent`
(local backend, one slot) on loopback. `true` tasks are submitted one at a time, each after the
previous one completed, so the agent is idle (long-polling for work) at every submission; then a
batch is submitted at once and drained. Times are the server's own: a task's `created_at` and
the `at` of its `task.state` events (to RUNNING, to COMPLETE) in the event log, so the client's
polling does not blur them. Prints the figures and writes benchmarks/results/latency.json.
Nothing is asserted (the target, submission -> RUNNING p50 <= 100 ms, is printed beside the
figure): timings depend on the machine and its load.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

RESULTS = Path(__file__).resolve().parent / "results" / "latency.json"
SEQUENTIAL = 100
WARMUP = 5
BATCH = 300
TARGET_P50_MS = 100.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def until(condition: Any, what: str, timeout_s: float = 60.0, every_s: float = 0.005) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(every_s)


def _tokens(url: str) -> tuple[str, str]:
    from suanli.services.core import Role, create_token
    from suanli.store.db import make_engine, session_factory, upgrade

    engine = make_engine(url)
    upgrade(engine)
    with session_factory(engine).begin() as session:
        _, provider = create_token(session, Role.PROVIDER, "bench-dc")
        _, consumer = create_token(session, Role.CONSUMER, "bench-lab")
    engine.dispose()
    return provider, consumer


def _times(url: str, ids: list[str]) -> dict[str, dict[str, datetime]]:
    """Per task: `submitted` (created_at), and the first time it reached RUNNING and COMPLETE."""
    from sqlalchemy import select

    from suanli.services.core import aware
    from suanli.store.db import make_engine, session_factory
    from suanli.store.models import EventRow, TaskRow

    engine = make_engine(url)
    times: dict[str, dict[str, datetime]] = {}
    with session_factory(engine)() as session:
        for task in session.scalars(select(TaskRow).where(TaskRow.id.in_(ids))):
            times[task.id] = {"submitted": aware(task.created_at)}
        events = session.scalars(
            select(EventRow)
            .where(EventRow.kind == "task.state", EventRow.subject.in_(ids))
            .order_by(EventRow.seq)
        )
        for event in events:
            to = (event.data or {}).get("to")
            if to in ("RUNNING", "COMPLETE"):
                times[event.subject].setdefault(to, aware(event.at))
    engine.dispose()
    return times


def _ms(start: datetime, end: datetime) -> float:
    return (end - start).total_seconds() * 1000


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def main() -> None:
    home = Path(tempfile.mkdtemp(prefix="suanli-bench-latency-"))
    url = f"sqlite:///{home / 'bench.db'}"
    provider, consumer = _tokens(url)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "SUANLI_HOME": str(home)}
    env.pop("SUANLI_DATABASE_URL", None)
    server = subprocess.Popen(
        [sys.executable, "-m", "suanli", "serve", "--port", str(port), "--db", url],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(home / "server.log", "wb"),  # noqa: SIM115
    )
    agent: subprocess.Popen[bytes] | None = None
    try:

        def healthy() -> bool:
            try:
                return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        until(healthy, "the server", timeout_s=60, every_s=0.05)
        with httpx.Client(
            base_url=base, timeout=30, headers={"Authorization": f"Bearer {provider}"}
        ) as http:
            site = http.post("/v1/sites", json={"name": "bench", "province": "上海"}).json()["id"]
            pool = {"site_id": site, "device": "cpu", "count": 4, "price_fen_per_device_hour": 1}
            assert http.post("/v1/pools", json=pool).status_code == 201
            issued = http.post(f"/v1/sites/{site}/agent-tokens", json={"name": "bench"}).json()
        agent = subprocess.Popen(
            [
                *(sys.executable, "-m", "suanli", "agent", "--server", base, "--site", site),
                *("--slots", "1", "--work-root", str(home / "work")),
            ],
            env={**env, "SUANLI_TOKEN": issued["token"]},
            stdout=subprocess.DEVNULL,
            stderr=open(home / "agent.log", "wb"),  # noqa: SIM115
            start_new_session=True,
        )
        body = {"executors": [{"command": ["true"]}], "name": "latency"}
        with httpx.Client(
            base_url=base, timeout=30, headers={"Authorization": f"Bearer {consumer}"}
        ) as http:

            def state(task_id: str) -> str:
                return str(http.get(f"/v1/tasks/{task_id}").json()["state"])

            print(f"... {WARMUP} + {SEQUENTIAL} sequential `true` tasks", file=sys.stderr)
            sequential = []
            for n in range(WARMUP + SEQUENTIAL):
                task_id = http.post("/v1/tasks", json=body).json()["id"]
                # polled gently: a busy poller would compete with the server it measures
                until(lambda t=task_id: state(t) == "COMPLETE", f"task {task_id}", every_s=0.03)
                if n >= WARMUP:
                    sequential.append(task_id)
            print(f"... a batch of {BATCH} at once, drained by one agent", file=sys.stderr)
            batch = [http.post("/v1/tasks", json=body).json()["id"] for _ in range(BATCH)]
            until(
                lambda: (
                    state(batch[-1]) == "COMPLETE" and all(state(t) == "COMPLETE" for t in batch)
                ),
                "the batch",
                timeout_s=600,
                every_s=0.2,
            )
    finally:
        if agent is not None and agent.poll() is None:
            os.killpg(agent.pid, signal.SIGTERM)
            agent.wait(timeout=30)
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)

    times = _times(url, sequential + batch)
    to_running = [_ms(times[t]["submitted"], times[t]["RUNNING"]) for t in sequential]
    to_complete = [_ms(times[t]["submitted"], times[t]["COMPLETE"]) for t in sequential]
    first = min(times[t]["submitted"] for t in batch)
    last = max(times[t]["COMPLETE"] for t in batch)
    drain = BATCH / (last - first).total_seconds()
    p50, p99 = _percentile(to_running, 0.5), _percentile(to_running, 0.99)
    c50, c99 = _percentile(to_complete, 0.5), _percentile(to_complete, 0.99)
    print(
        f"submission -> RUNNING (idle agent)  p50 {p50:7.1f} ms   p99 {p99:7.1f} ms"
        f"   (target p50 <= {TARGET_P50_MS:g} ms: {'met' if p50 <= TARGET_P50_MS else 'MISSED'})"
    )
    print(f"submission -> COMPLETE              p50 {c50:7.1f} ms   p99 {c99:7.1f} ms")
    print(f"one agent (1 slot) drains          {drain:7.1f} tasks/s ({BATCH} `true` tasks)")
    results = {
        "machine": f"{platform.machine()} python {platform.python_version()}",
        "database": "sqlite",
        "submit_to_running_ms": {"p50": round(p50, 1), "p99": round(p99, 1)},
        "submit_to_complete_ms": {"p50": round(c50, 1), "p99": round(c99, 1)},
        "target_p50_ms": TARGET_P50_MS,
        "sequential_tasks": SEQUENTIAL,
        "drain_tasks_per_s": round(drain, 1),
        "drain_batch": BATCH,
        "agent_slots": 1,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
