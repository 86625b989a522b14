"""Benchmark of the GA4GH TES API: task creations per second, and creation to COMPLETE.

A real `suanli serve` on loopback (embedded SQLite, production default intervals: heartbeat
5 s, scheduling pass 2 s, woken at once by a new task) with one provider site, a pool of 8 CPU
cores and one local agent with 4 slots. Phase 1: CREATIONS `echo` tasks posted to
/ga4gh/tes/v1/tasks by CLIENTS concurrent clients (the agent runs them meanwhile). Phase 2:
ROUND_TRIPS `echo` tasks one after another, each polled (MINIMAL view, every 20 ms) from
creation until COMPLETE. Prints the figures and writes benchmarks/results/tes.json. Nothing is
asserted: timings depend on the machine and its load (2 shared cores here).
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench_platform import free_port, wait_healthy

RESULTS = Path(__file__).resolve().parent / "results" / "tes.json"
CLIENTS = 16
CREATIONS = 1000
ROUND_TRIPS = 30
TES = "/ga4gh/tes/v1"
ECHO = {"executors": [{"image": "none", "command": ["echo", "hello"]}]}


def _tokens(url: str) -> tuple[str, str]:
    from suanli.services.core import Role, create_token
    from suanli.store.db import make_engine, session_factory, upgrade

    engine = make_engine(url)
    upgrade(engine)
    with session_factory(engine).begin() as session:
        _, provider = create_token(session, Role.PROVIDER, "bench provider")
        _, consumer = create_token(session, Role.CONSUMER, "bench consumer")
    engine.dispose()
    return provider, consumer


async def _create(base: str, token: str, total: int) -> list[float]:
    latencies: list[float] = []
    counter = iter(range(total))

    async def client() -> None:
        async with httpx.AsyncClient(
            base_url=base, timeout=60, headers={"Authorization": f"Bearer {token}"}
        ) as http:
            for _ in counter:
                started = time.perf_counter()
                response = await http.post(f"{TES}/tasks", json=ECHO)
                latencies.append(time.perf_counter() - started)
                if response.status_code != 200:
                    raise RuntimeError(f"creation failed: {response.status_code} {response.text}")

    await asyncio.gather(*(client() for _ in range(CLIENTS)))
    return latencies


def _round_trip(http: httpx.Client) -> float:
    started = time.perf_counter()
    task_id = http.post(f"{TES}/tasks", json=ECHO).json()["id"]
    while True:
        state = http.get(f"{TES}/tasks/{task_id}").json()["state"]
        if state == "COMPLETE":
            return time.perf_counter() - started
        if state in {"EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED"}:
            raise RuntimeError(f"task {task_id} ended {state}")
        time.sleep(0.02)


def main() -> None:
    home = Path(tempfile.mkdtemp(prefix="suanli-bench-tes-"))
    url = f"sqlite:///{home / 'bench.db'}"
    provider, consumer = _tokens(url)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "suanli",
            "serve",
            "--port",
            str(port),
            "--db",
            url,
            "--home",
            str(home),
        ],
        **quiet,  # type: ignore[call-overload]
    )
    agent = None
    try:
        wait_healthy(base)
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {provider}"}) as http:
            site = http.post("/v1/sites", json={"name": "bench", "province": "上海"}).json()["id"]
            pool = {"site_id": site, "device": "cpu", "count": 8, "price_fen_per_device_hour": 10}
            http.post("/v1/pools", json=pool).raise_for_status()
        command = ["agent", "--server", base, "--site", site]  # token: SUANLI_TOKEN
        command += ["--slots", "4", "--work-root", str(home / "work")]
        agent = subprocess.Popen(
            [sys.executable, "-m", "suanli", *command],
            env={**os.environ, "SUANLI_TOKEN": provider},
            start_new_session=True,
            **quiet,  # type: ignore[call-overload]
        )
        print(f"... {CREATIONS} TES creations with {CLIENTS} clients", file=sys.stderr)
        started = time.perf_counter()
        latencies = sorted(asyncio.run(_create(base, consumer, CREATIONS)))
        seconds = time.perf_counter() - started
        headers = {"Authorization": f"Bearer {consumer}"}
        with httpx.Client(base_url=base, headers=headers, timeout=60) as http:
            print("... waiting for the agent to finish them", file=sys.stderr)
            drained = time.perf_counter()
            while any(
                http.get(f"{TES}/tasks", params={"state": state, "page_size": 1}).json()["tasks"]
                for state in ("QUEUED", "INITIALIZING", "RUNNING")
            ):
                time.sleep(0.5)
            drain_s = time.perf_counter() - drained
            print(f"... {ROUND_TRIPS} creations followed to COMPLETE", file=sys.stderr)
            trips = sorted(_round_trip(http) for _ in range(ROUND_TRIPS))
    finally:
        if agent is not None:
            agent.send_signal(signal.SIGTERM)
            agent.wait(timeout=30)
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    results: dict[str, Any] = {
        "machine": f"{platform.machine()} python {platform.python_version()}",
        "creations_per_s": round(CREATIONS / seconds),
        "creation_p50_ms": round(latencies[len(latencies) // 2] * 1000, 1),
        "creation_p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 1),
        "backlog_drain_s": round(drain_s, 1),
        "to_complete_p50_s": round(trips[len(trips) // 2], 2),
        "to_complete_max_s": round(trips[-1], 2),
        "clients": CLIENTS,
        "creations": CREATIONS,
        "round_trips": ROUND_TRIPS,
    }
    print(
        f"TES creations  {results['creations_per_s']:>6,} /s   p50 {results['creation_p50_ms']} ms"
        f"   p99 {results['creation_p99_ms']} ms"
    )
    print(
        f"echo creation -> COMPLETE  p50 {results['to_complete_p50_s']} s"
        f"   max {results['to_complete_max_s']} s (one agent, default intervals)"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
