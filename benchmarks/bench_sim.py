"""Benchmark of the digital twin: wall time and events per second of a replay.

The full openb default trace (one policy), and a synthetic trace of one-GPU batch jobs with
Poisson arrivals (100,000 jobs by default; `--jobs N` for more, e.g. the 1,000,000 of the
target). Peak memory is this process's maximum RSS. Figures go to stdout and to
benchmarks/results/sim.json; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np

from suanli.sim.traces import Trace, TraceJob, load_trace, shape
from suanli.sim.twin import national_network, run

RESULTS = Path(__file__).resolve().parent / "results" / "sim.json"


def synthetic(jobs: int, seed: int = 0) -> Trace:
    rng = np.random.default_rng(seed)
    arrivals = np.cumsum(rng.exponential(2.0, jobs))  # one job every 2 s on average
    durations = rng.lognormal(6.5, 1.2, jobs)  # median about 11 minutes
    return Trace(
        "synthetic",
        tuple(
            TraceJob(f"s{i}", float(a), float(d), 1, "gpu")
            for i, (a, d) in enumerate(zip(arrivals, durations, strict=True))
        ),
        0,
        "synthetic Poisson trace",
    )


def measure(label: str, trace: Trace) -> dict[str, float]:
    print(f"... {label}: {len(trace.jobs):,} jobs", file=sys.stderr, flush=True)
    network = national_network(0.02)
    started = time.perf_counter()
    result = run(trace, network, "balanced")
    wall = time.perf_counter() - started
    m = result.metrics
    print(
        f"{label:<28} {wall:8.1f} s  {m['events_per_s']:>10,.0f} events/s  "
        f"{m['tasks_completed']:,} done, {m['tasks_rejected']:,} rejected"
    )
    return {
        "jobs": len(trace.jobs),
        "wall_s": round(wall, 2),
        "events_per_s": round(m["events_per_s"]),
        "completed": m["tasks_completed"],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=100_000)
    args = parser.parse_args()
    results = {
        "machine": f"{platform.machine()} python {platform.python_version()}",
        "openb_default": measure("openb default trace", shape(load_trace("openb"))),
        "synthetic": measure(f"synthetic {args.jobs:,}", synthetic(args.jobs)),
    }
    results["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(f"{'peak RSS':<28} {results['peak_rss_mib']:>8} MiB")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
