"""Benchmark: task submissions against the bare-stack floor, and server scaling on PostgreSQL.

In one run, the same client (32 concurrent httpx clients, asyncio, keep-alive) POSTs the same
minimal valid task to:
  (a) the floor: a FastAPI + pydantic + uvicorn endpoint that inserts one row and one
      hash-chained event into SQLite WAL (`benchmarks/floor_app.py`), one process;
  (b) `suanli serve` on SQLite, one process (token check, throttle, body limit, validation,
      idempotency support, the task row and its audit event: everything a submission does);
  (c) `suanli serve` on PostgreSQL with `--workers 1`, then `--workers 2`.
Prints the rate, p50/p99 latency, each rate's ratio to the floor and PostgreSQL's scaling from 1
to 2 processes; writes benchmarks/results/submit.json. Nothing is asserted: the figures depend
on the machine and its load. Usage: `python benchmarks/bench_submit.py [--submissions N]`.
"""

from __future__ import annotations

import argparse
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_platform import CLIENTS, _load, _postgres_url, _token, free_port, wait_healthy

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "submit.json"
WARMUP = 200


def _cpu_s(root: int) -> float:
    """User + system CPU seconds of process `root` and its descendants (Linux /proc): what
    the server spent, whatever else the machine runs (a steadier figure than the rate on a
    shared machine)."""
    tick = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry.name)] = int(fields[1])
        times[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in tree]
        tree.update(children)
        frontier.extend(children)
    return sum(times.get(pid, 0.0) for pid in tree)


def _run(label: str, command: list[str], port: int, token: str, total: int) -> dict[str, Any]:
    """Start a server, warm it up, time `total` submissions, stop it."""
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base)
        print(f"... {label}: {WARMUP} warm-up, then {total} submissions", file=sys.stderr)
        asyncio.run(_load(base, token, WARMUP))
        started, cpu = time.perf_counter(), _cpu_s(server.pid)
        latencies = sorted(asyncio.run(_load(base, token, total)))
        seconds, cpu = time.perf_counter() - started, _cpu_s(server.pid) - cpu
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    return {
        "submissions_per_s": round(total / seconds, 1),
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 1),
        "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 1),
        "server_cpu_ms_per_submission": round(cpu * 1000 / total, 2),
    }


def _suanli(url: str, workers: int, port: int) -> list[str]:
    home = tempfile.mkdtemp(prefix="suanli-bench-")
    serve = [sys.executable, "-m", "suanli", "serve", "--port", str(port), "--db", url]
    return [*serve, "--home", home, "--workers", str(workers)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--submissions", type=int, default=3000)
    parser.add_argument("--no-postgresql", action="store_true", help="SQLite only")
    arguments = parser.parse_args()
    total, skip_pg = arguments.submissions, arguments.no_postgresql
    results: dict[str, Any] = {
        "machine": f"{platform.machine()} python {platform.python_version()}, "
        f"{os.cpu_count()} cores",
        "clients": CLIENTS,
        "submissions": total,
    }
    rows: list[tuple[str, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory() as directory:
        port = free_port()
        floor = [sys.executable, str(HERE / "floor_app.py"), "--db", f"{directory}/floor.db"]
        rows.append(("floor", _run("floor", [*floor, "--port", str(port)], port, "-", total)))
        url = f"sqlite:///{directory}/bench.db"
        port = free_port()
        rows.append(
            ("sqlite_1", _run("suanli SQLite", _suanli(url, 1, port), port, _token(url), total))
        )
    pg = None if skip_pg else _postgres_url()
    if pg is not None:
        token = _token(pg)
        for workers in (1, 2):
            port = free_port()
            label = f"suanli PostgreSQL x{workers}"
            rows.append(
                (
                    f"postgresql_{workers}",
                    _run(label, _suanli(pg, workers, port), port, token, total),
                )
            )
    floor_rate = rows[0][1]["submissions_per_s"]
    print(
        f"{'setup':<14} {'submissions/s':>14} {'p50 ms':>8} {'p99 ms':>8} {'x floor':>8} "
        f"{'server CPU ms/submission':>25}"
    )
    for name, figures in rows:
        figures["ratio_to_floor"] = round(figures["submissions_per_s"] / floor_rate, 2)
        results[name] = figures
        print(
            f"{name:<14} {figures['submissions_per_s']:>14,.0f} {figures['p50_ms']:>8.1f} "
            f"{figures['p99_ms']:>8.1f} {figures['ratio_to_floor']:>8.2f} "
            f"{figures['server_cpu_ms_per_submission']:>25.2f}"
        )
    if "postgresql_1" in results and "postgresql_2" in results:
        scaling = (
            results["postgresql_2"]["submissions_per_s"]
            / results["postgresql_1"]["submissions_per_s"]
        )
        results["postgresql_scaling_1_to_2"] = round(scaling, 2)
        print(f"PostgreSQL scaling from 1 to 2 server processes: x{scaling:.2f}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    os.environ.setdefault("SUANLI_SCHEDULE_INTERVAL_S", "2")
    main()
