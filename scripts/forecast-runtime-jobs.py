"""Derive the completed-job tables that `suanli.forecast.runtime` backtests on, and its default.

Run once by hand (the outputs are committed): `python scripts/forecast-runtime-jobs.py`. Reads
the copies of the public traces that the twin already ships (src/suanli/sim/data) and writes
src/suanli/forecast/data/runtime_<trace>.csv and runtime_default.csv. The mapping of devices
and latency tiers is `suanli.sim.traces`' (openb: a GPU pod asks `num_gpu` GPUs, a CPU pod
ceil(`cpu_milli` / 1000) cores, QoS LS -> standard, anything else -> batch; DLRM: HN instances
ceil(`gpu_request`) GPUs, CN instances ceil(`cpu_request`) cores, all interactive). Unlike the
twin, which needs every job, a run-time table keeps only jobs whose whole run is in the trace:

- openb: submitted at `creation_time`, ran from `scheduled_time` to `deletion_time`. Pods never
  scheduled, with no positive run, or deleted at the trace's last instant (still running when
  the list was taken: their run time is unknown) are left out.
- DLRM: submitted at `creation_time`, ran from `scheduled_time` (else `creation_time`) to
  `deletion_time`. Instances with no creation time (there before the trace began), no deletion
  time (still there at its end) or no positive run are left out. The app stands in for the
  owner (the trace names no user); the workload is inference (every instance serves a model).

Each table: `submit_s,end_s,runtime_s,owner,workload,device_kind,devices,shape,latency_tier,
requested_s` (no trace gives a requested duration), ordered by submission. runtime_default.csv
holds the percentiles 0..100 of Microsoft Philly's job run times (zero run times dropped): the
default for a task no history speaks for.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "src" / "suanli" / "forecast" / "data"
SIM = ROOT / "src" / "suanli" / "sim" / "data"
COLUMNS = (
    "submit_s",
    "end_s",
    "runtime_s",
    "owner",
    "workload",
    "device_kind",
    "devices",
    "shape",
    "latency_tier",
    "requested_s",
)
QOS_TIER = {"LS": "standard"}  # suanli.sim.traces.QOS_TIER: anything else is batch


def rows(name: str) -> list[dict[str, str]]:
    with (SIM / name).open(newline="") as f:
        return [{k: (v or "").strip() for k, v in r.items()} for r in csv.DictReader(f)]


def number(value: str | float) -> str:
    """'12000' -> '12000', '120.0' -> '120', 937.5 -> '937.5' (never an exponent)."""
    return f"{float(value):.12g}"


def openb() -> list[dict[str, object]]:
    pods = rows("openb_pod_list_default.csv")
    last = max(float(p["deletion_time"]) for p in pods)
    jobs: list[dict[str, object]] = []
    dropped = {"never scheduled": 0, "no positive run": 0, "running at the end": 0}
    for p in pods:
        if not p["scheduled_time"]:
            dropped["never scheduled"] += 1
            continue
        start, end = float(p["scheduled_time"]), float(p["deletion_time"])
        if end <= start:
            dropped["no positive run"] += 1
            continue
        if end >= last:
            dropped["running at the end"] += 1
            continue
        gpus = int(float(p["num_gpu"] or 0))
        kind, devices = (
            ("gpu", gpus) if gpus > 0 else ("cpu", max(1, math.ceil(float(p["cpu_milli"]) / 1000)))
        )
        jobs.append(
            {
                "submit_s": number(p["creation_time"]),
                "end_s": number(p["deletion_time"]),
                "runtime_s": number(end - start),
                "owner": "",
                "workload": "",
                "device_kind": kind,
                "devices": devices,
                "shape": f"g{number(p['gpu_milli'] or '0')}-c{number(p['cpu_milli'])}-"
                f"m{number(p['memory_mib'])}",  # GPU share and CPU in milli, memory in MiB
                "latency_tier": QOS_TIER.get(p["qos"].upper(), "batch"),
                "requested_s": "",
            }
        )
    print(f"openb: {len(jobs)} of {len(pods)} pods; left out {dropped}")
    return jobs


def dlrm() -> list[dict[str, object]]:
    instances = rows("disaggregated_DLRM_trace.csv")
    jobs: list[dict[str, object]] = []
    dropped = {"there before the trace": 0, "there after it": 0, "no positive run": 0}
    for r in instances:
        if not r["creation_time"]:
            dropped["there before the trace"] += 1
            continue
        if not r["deletion_time"]:
            dropped["there after it"] += 1
            continue
        start = float(r["scheduled_time"] or r["creation_time"])
        end = float(r["deletion_time"])
        if end <= start:
            dropped["no positive run"] += 1
            continue
        gpu = r["role"] == "HN"
        request = float((r["gpu_request"] if gpu else r["cpu_request"]) or 1)
        jobs.append(
            {
                "submit_s": number(r["creation_time"]),
                "end_s": number(r["deletion_time"]),
                "runtime_s": number(end - start),
                "owner": r["app_name"],
                "workload": "inference",
                "device_kind": "gpu" if gpu else "cpu",
                "devices": max(1, math.ceil(request)),
                # cores and GiB
                "shape": f"c{number(r['cpu_request'])}-m{number(r['memory_request'])}",
                "latency_tier": "interactive",
                "requested_s": "",
            }
        )
    print(f"dlrm: {len(jobs)} of {len(instances)} instances; left out {dropped}")
    return jobs


def write(name: str, jobs: list[dict[str, object]]) -> None:
    jobs.sort(key=lambda j: (float(str(j["submit_s"])), float(str(j["end_s"]))))
    with (OUT / f"runtime_{name}.csv").open("w", newline="") as f:
        out = csv.DictWriter(f, COLUMNS, lineterminator="\n")
        out.writeheader()
        out.writerows(jobs)


def default() -> None:
    runtimes = np.array([float(r["runtime"]) for r in rows("philly_runtime.csv")])
    runtimes = runtimes[runtimes > 0]
    with (OUT / "runtime_default.csv").open("w", newline="") as f:
        out = csv.writer(f, lineterminator="\n")
        out.writerow(["percent", "runtime_s"])
        for p in range(101):
            out.writerow([p, f"{float(np.percentile(runtimes, p)):.1f}"])
    print(f"philly: {len(runtimes)} run times, median {np.median(runtimes):.0f} s")


def main() -> None:
    write("openb", openb())
    write("dlrm", dlrm())
    default()


if __name__ == "__main__":
    main()
