"""Benchmark of the platform service: task submissions per second and their latency.

32 concurrent clients (httpx, asyncio) POST /v1/tasks to a real `suanli serve` on loopback,
once on SQLite and once on PostgreSQL (started by scripts/postgres.sh). Prints the figures and
writes them to benchmarks/results/platform.json. Nothing is asserted: timings depend on the
machine and its load (2 shared cores here). The server's scheduling loop runs as in production.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results" / "platform.json"
CLIENTS = 32
SUBMISSIONS = 3000
WARMUP = 200


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_healthy(base: str) -> None:
    """Wait for a just-started server's /healthz (30 s at most)."""
    for _ in range(300):
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"the server at {base} did not start")


def _postgres_url() -> str | None:
    try:
        base = subprocess.run(
            [str(ROOT / "scripts" / "postgres.sh"), "start"],
            check=True,
            capture_output=True,
            text=True,
            timeout=300,
        ).stdout.strip()
    except (subprocess.SubprocessError, OSError) as error:
        print(f"... PostgreSQL unavailable ({error}); skipping it", file=sys.stderr)
        return None
    import psycopg

    name = f"bench_{secrets.token_hex(4)}"
    admin = base.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    return base.rsplit("/", 1)[0] + f"/{name}"


def _token(url: str) -> str:
    from suanli.services.core import Role, create_token
    from suanli.store.db import make_engine, session_factory, upgrade

    engine = make_engine(url)
    upgrade(engine)
    with session_factory(engine).begin() as session:
        _, token = create_token(session, Role.CONSUMER, "bench")
    engine.dispose()
    return token


async def _load(base: str, token: str, total: int) -> list[float]:
    latencies: list[float] = []
    body = {"executors": [{"command": ["true"]}], "resources": {"devices": 1}}
    counter = iter(range(total))
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)

    async def client() -> None:
        async with httpx.AsyncClient(
            base_url=base, timeout=60, limits=limits, headers={"Authorization": f"Bearer {token}"}
        ) as http:
            for _ in counter:
                started = time.perf_counter()
                response = await http.post("/v1/tasks", json=body)
                latencies.append(time.perf_counter() - started)
                if response.status_code != 201:
                    raise RuntimeError(f"submission failed: {response.status_code} {response.text}")

    await asyncio.gather(*(client() for _ in range(CLIENTS)))
    return latencies


def _measure(label: str, url: str) -> dict[str, Any]:
    token = _token(url)
    port = free_port()
    home = tempfile.mkdtemp(prefix="suanli-bench-")
    server = subprocess.Popen(
        [sys.executable, "-m", "suanli", "serve", "--port", str(port), "--db", url, "--home", home],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base)
        print(
            f"... {label}: {WARMUP} warm-up submissions, then {SUBMISSIONS} with {CLIENTS} clients",
            file=sys.stderr,
        )
        asyncio.run(_load(base, token, WARMUP))
        started = time.perf_counter()
        latencies = sorted(asyncio.run(_load(base, token, SUBMISSIONS)))
        seconds = time.perf_counter() - started
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    rate = SUBMISSIONS / seconds
    p50 = latencies[len(latencies) // 2] * 1000
    p99 = latencies[int(len(latencies) * 0.99)] * 1000
    print(f"{label:<12} {rate:>8,.0f} submissions/s   p50 {p50:6.1f} ms   p99 {p99:6.1f} ms")
    return {
        "submissions_per_s": round(rate),
        "p50_ms": round(p50, 1),
        "p99_ms": round(p99, 1),
        "clients": CLIENTS,
        "submissions": SUBMISSIONS,
    }


def main() -> None:
    results: dict[str, Any] = {
        "machine": f"{platform.machine()} python {platform.python_version()}",
    }
    with tempfile.TemporaryDirectory() as directory:
        results["sqlite"] = _measure("SQLite", f"sqlite:///{directory}/bench.db")
    pg = _postgres_url()
    if pg is not None:
        results["postgresql"] = _measure("PostgreSQL", pg)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    os.environ.setdefault("SUANLI_SCHEDULE_INTERVAL_S", "2")
    main()
