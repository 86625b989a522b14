"""Benchmark of the digital twin: wall time, events per second and memory of a replay.

* The full openb default trace (one policy, `balanced`, on the network at 0.02 GPUs a rack).
* A synthetic trace of one-GPU batch jobs with Poisson arrivals (1,000,000 jobs with
  `--jobs 1000000`, the target) on a network sized for `--utilisation` of its GPUs busy (0.7):
  `twin.calibrate` sizes it, replays the first `--sample` jobs and speeds the arrivals up to
  the share asked for; the replay then reports the busy share it measured.
* The limit beside it: the bare event loop of the same trace (a heap of submissions and
  finishes, each job starting when it arrives: no queue, no decision), so the twin's cost is
  read as a ratio.

Peak memory is this process's maximum RSS (every replay of the run counted). Figures go to
stdout and to benchmarks/results/sim.json; nothing is asserted.
"""

from __future__ import annotations

import argparse
import heapq
import json
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np

from suanli.sim.traces import Trace, TraceJob, load_trace, shape
from suanli.sim.twin import Network, calibrate, national_network, run

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


def bare_loop(trace: Trace) -> float:
    """Seconds for the bare event loop of `trace`: every job's submission and finish through
    one heap, nothing decided (the least any replay of the trace can cost)."""
    started = time.perf_counter()
    heap: list[tuple[float, int, int]] = []
    for n, job in enumerate(trace.jobs):
        heapq.heappush(heap, (job.submit_s, 1, n))
    running = 0
    while heap:
        at, kind, n = heapq.heappop(heap)
        if kind == 1:
            running += 1
            heapq.heappush(heap, (at + trace.jobs[n].duration_s, 0, n))
        else:
            running -= 1
    assert running == 0
    return time.perf_counter() - started


def measure(label: str, trace: Trace, network: Network | None = None) -> dict[str, float]:
    print(f"... {label}: {len(trace.jobs):,} jobs", file=sys.stderr, flush=True)
    started = time.perf_counter()
    result = run(trace, network or national_network(0.02), "balanced")
    wall = time.perf_counter() - started
    bare = bare_loop(trace)
    m = result.metrics
    print(
        f"{label:<28} {wall:8.1f} s  {m['events_per_s']:>10,.0f} events/s  "
        f"{m['tasks_completed']:,} done, {m['tasks_rejected']:,} rejected, "
        f"{m['busy_share_gpu']:.1%} of GPUs busy, wait p50 {m['wait_s_p50']:.0f} s / "
        f"p99 {m['wait_s_p99']:.0f} s; bare event loop {bare:.1f} s ({wall / bare:.0f}x)"
    )
    return {
        "jobs": len(trace.jobs),
        "wall_s": round(wall, 2),
        "events_per_s": round(m["events_per_s"]),
        "completed": m["tasks_completed"],
        "rejected": m["tasks_rejected"],
        "busy_share_gpu": round(m["busy_share_gpu"], 4),
        "wait_s_p50": round(m["wait_s_p50"], 1),
        "wait_s_p99": round(m["wait_s_p99"], 1),
        "bare_loop_s": round(bare, 2),
        "ratio_to_bare": round(wall / bare, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--utilisation", type=float, default=0.7)
    parser.add_argument("--sample", type=int, default=50_000, help="jobs of the calibration")
    args = parser.parse_args()
    results: dict[str, object] = {
        "machine": f"{platform.machine()} python {platform.python_version()}",
        "openb_default": measure("openb default trace", shape(load_trace("openb"))),
    }
    print(f"... calibrating for {args.utilisation:.0%} busy", file=sys.stderr, flush=True)
    started = time.perf_counter()
    trace, network, cal = calibrate(
        synthetic(args.jobs), args.utilisation, "balanced", sample_jobs=args.sample
    )
    calibration_s = time.perf_counter() - started
    print(
        f"calibration: {cal.sizing.gpus:,} GPUs; the first {cal.sample_jobs:,} jobs measured "
        f"{cal.measured:.1%} busy; arrivals sped up {cal.factor:.2f}x ({calibration_s:.1f} s)"
    )
    synthetic_run = measure(f"synthetic {args.jobs:,} at {args.utilisation:g}", trace, network)
    synthetic_run |= {
        "utilisation_asked": args.utilisation,
        "gpus": cal.sizing.gpus,
        "calibration_busy_share": round(cal.measured, 4),
        "calibration_jobs": cal.sample_jobs,
        "compression": round(cal.factor, 4),
        "calibration_s": round(calibration_s, 1),
    }
    results["synthetic"] = synthetic_run
    results["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(f"{'peak RSS':<28} {results['peak_rss_mib']:>8} MiB")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
