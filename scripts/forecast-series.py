"""Derive the hourly series that `suanli.forecast` ships from the public traces.

Run once by hand (the outputs are committed): `python scripts/forecast-series.py [SHARED_DATA]`,
SHARED_DATA defaulting to ../shared/data beside the checkout. Philly and Earth are read from the
traces there; DLRM and openb from the copies the twin already ships (src/suanli/sim/data).
Each output is `hour,value`: whole hours from the series' first hour, the value the mean over
that hour (minute samples), or the devices held averaged over the hour (instances and pods by
their creation and deletion times).
"""

from __future__ import annotations

import csv
import math
import sys
from collections import defaultdict
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from suanli.forecast.series import hourly_held

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "src" / "suanli" / "forecast" / "data"
SIM = ROOT / "src" / "suanli" / "sim" / "data"


def minute_means(path: Path, column: str) -> list[float]:
    """Hourly means of a minute series whose `time` column reads YYYY-MM-DD HH:MM:SS, every
    hour from the first to the last; an hour with no sample is filled linearly between its
    neighbours (and reported)."""
    samples: dict[datetime, list[float]] = defaultdict(list)
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            samples[datetime.strptime(row["time"][:13], "%Y-%m-%d %H")].append(float(row[column]))
    first, last = min(samples), max(samples)
    hours = [
        first + timedelta(hours=h) for h in range(int((last - first).total_seconds() // 3600) + 1)
    ]
    values = [sum(samples[h]) / len(samples[h]) if h in samples else math.nan for h in hours]
    missing = [i for i, v in enumerate(values) if math.isnan(v)]
    for i in missing:
        before = max(j for j in range(i) if not math.isnan(values[j]))
        after = min(j for j in range(i + 1, len(values)) if j not in missing)
        values[i] = values[before] + (values[after] - values[before]) * (i - before) / (
            after - before
        )
    if missing:
        print(
            f"{path.name}: {len(missing)} hours without a sample filled linearly, "
            f"from {hours[missing[0]]}"
        )
    print(f"{path.name}: {first} to {last}")
    return values


def held(rows: list[tuple[float, float, float]], end_s: float) -> list[float]:
    """Devices held per hour: each (amount, start_s, end_s) counted for the part of each hour it
    covers (`suanli.forecast.series.hourly_held`, which the server's history uses too)."""
    amount, start, stop = (np.array(column, dtype=float) for column in zip(*rows, strict=True))
    busy = hourly_held(amount, start / 3600.0, stop / 3600.0, int(end_s // 3600) + 1)
    return [float(v) for v in busy]


def dlrm() -> list[float]:
    with (SIM / "disaggregated_DLRM_trace.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    end = max(float(r["deletion_time"]) for r in rows if r["deletion_time"])
    spans = [
        (
            float(r["gpu_request"] or 0),
            float(r["creation_time"]) if r["creation_time"] else 0.0,  # there before the trace
            float(r["deletion_time"]) if r["deletion_time"] else end,  # still there at its end
        )
        for r in rows
    ]
    return held(spans, end)[: int(end // 3600)]  # whole hours only


def openb() -> list[float]:
    with (SIM / "openb_pod_list_default.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    end = max(float(r["creation_time"]) for r in rows)
    spans = [
        (
            int(r["num_gpu"]) * float(r["gpu_milli"] or 0) / 1000.0,
            float(r["scheduled_time"] or r["creation_time"]),
            float(r["deletion_time"]),
        )
        for r in rows
        if int(r["num_gpu"]) > 0
    ]
    return held(spans, end)[: int(end // 3600)]


def write(name: str, values: list[float]) -> None:
    with (OUT / f"{name}.csv").open("w", newline="") as f:
        out = csv.writer(f, lineterminator="\n")
        out.writerow(["hour", "value"])
        out.writerows((h, f"{v:.4f}") for h, v in enumerate(values))
    print(f"{name}: {len(values)} hours")


def main() -> None:
    shared = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "data"
    traces = shared / "traces"
    OUT.mkdir(parents=True, exist_ok=True)
    write(
        "philly_active_nodes",
        minute_means(traces / "philly_derived" / "philly_node_sequence_1min.csv", "active"),
    )
    write(
        "earth_vchbv_running_gpus",
        minute_means(
            traces / "helios_sensetime_aggregates" / "Earth_vchbv_cluster_sequence_1min.csv",
            "running_gpu_num",
        ),
    )
    write("dlrm_busy_gpus", dlrm())
    write("openb_busy_gpus", openb())


if __name__ == "__main__":
    main()
