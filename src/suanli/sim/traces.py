"""Workload traces for the digital twin: one job format, and loaders that map real traces to it.

`TraceJob` is the twin's unit of demand. Loaders:

* `openb` (shipped): the Alibaba GPU trace v2023 "openb" pod list (every upstream variant has the
  same columns; pass a path for another). Mapping rules, all overridable by editing the CSV:
  - submit time = `creation_time`; duration = `deletion_time - scheduled_time` (pods without a
    deletion or never scheduled are dropped, and counted);
  - `num_gpu` > 0: a GPU job of that many devices (a fractional `gpu_milli` share counts as one
    whole device: the twin does not model GPU sharing); 0: a CPU job of ceil(`cpu_milli`/1000)
    generic CPU cores;
  - QoS: `LS` (latency-sensitive) -> standard tier, `BE` and `Burstable` -> batch;
  - `gpu_spec` (e.g. `V100M16|V100M32`) -> allowed catalog models where the catalog has them
    (V100 and T4); the trace's undisclosed models (G1/G2/G3) put no constraint.
* `generic CSV`: columns `submit_s, duration_s, devices, device_kind, device_model?,
  precision?, origin?, latency_tier?, data_gb?, deadline_s?` — bring any trace in this form.

Every job gets an origin: the trace's own where given, else drawn with a seeded generator from
the demand cities, 80% from the four demand hubs' cities and 20% from other capitals (the same
ESTIMATE as the problem generator: no regional demand share is published in the data).
`limit`, `hours` and `time_scale` cut or stretch a trace.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

import numpy as np

from suanli.errors import InvalidValue
from suanli.scheduler.generate import DEMAND_HUB_SHARE, HUB_CITIES, OTHER_CAPITALS

GENERIC_COLUMNS = ("submit_s", "duration_s", "devices", "device_kind")
QOS_TIER = {"LS": "standard", "BE": "batch", "BURSTABLE": "batch"}
OPENB_MODELS = {"V100M16": "V100", "V100M32": "V100", "T4": "T4"}


@dataclass(frozen=True, slots=True)
class TraceJob:
    """One job of a trace: when it arrives, how long it runs on its reference device."""

    id: str
    submit_s: float
    duration_s: float
    devices: int
    device_kind: str  # gpu | npu | cpu
    device_models: tuple[str, ...] | None = None
    precision: str | None = None
    origin: str | None = None
    latency_tier: str = "batch"
    data_gb: float = 0.0
    deadline_s: float | None = None  # relative to submit


@dataclass(frozen=True)
class Trace:
    name: str
    jobs: tuple[TraceJob, ...]
    dropped: int
    note: str


def _rows(text: str) -> list[dict[str, str]]:
    return [
        {k.strip(): (v or "").strip() for k, v in r.items() if k}
        for r in csv.DictReader(io.StringIO(text))
    ]


def load_openb(text: str, name: str = "openb") -> Trace:
    jobs: list[TraceJob] = []
    dropped = 0
    for row in _rows(text):
        try:
            scheduled = float(row["scheduled_time"])
            deleted = float(row["deletion_time"])
            created = float(row["creation_time"])
        except (KeyError, ValueError):
            dropped += 1
            continue
        duration = deleted - scheduled
        if not (duration > 0 and math.isfinite(duration)):
            dropped += 1
            continue
        gpus = int(float(row.get("num_gpu") or 0))
        models = None
        if gpus > 0:
            kind, devices = "gpu", gpus
            spec = [
                OPENB_MODELS[m] for m in (row.get("gpu_spec") or "").split("|") if m in OPENB_MODELS
            ]
            models = tuple(sorted(set(spec))) or None
        else:
            kind, devices = "cpu", max(1, math.ceil(float(row.get("cpu_milli") or 1000) / 1000))
        tier = QOS_TIER.get((row.get("qos") or "BE").upper(), "batch")
        jobs.append(
            TraceJob(row["name"], created, duration, devices, kind, models, latency_tier=tier)
        )
    return Trace(
        name,
        tuple(sorted(jobs, key=lambda j: (j.submit_s, j.id))),
        dropped,
        "Alibaba GPU trace v2023 openb (Weng et al., ATC'23)",
    )


def load_generic(text: str, name: str) -> Trace:
    rows = _rows(text)
    if rows and any(c not in rows[0] for c in GENERIC_COLUMNS):
        raise InvalidValue(
            f"{name} header",
            ",".join(rows[0]),
            f"columns {', '.join(GENERIC_COLUMNS)} (+ optional ones)",
            f"包含列 {', '.join(GENERIC_COLUMNS)}",
        )
    jobs = []
    for n, row in enumerate(rows, start=2):
        try:
            jobs.append(
                TraceJob(
                    id=row.get("id") or f"job-{n - 1}",
                    submit_s=float(row["submit_s"]),
                    duration_s=float(row["duration_s"]),
                    devices=int(row["devices"]),
                    device_kind=row["device_kind"].lower(),
                    device_models=(row["device_model"],) if row.get("device_model") else None,
                    precision=row.get("precision") or None,
                    origin=row.get("origin") or None,
                    latency_tier=row.get("latency_tier") or "batch",
                    data_gb=float(row.get("data_gb") or 0.0),
                    deadline_s=float(row["deadline_s"]) if row.get("deadline_s") else None,
                )
            )
        except (KeyError, ValueError) as error:
            raise InvalidValue(
                f"{name}:{n}", row, f"numbers in the numeric columns ({error})", "数值列应为数字"
            ) from None
        if jobs[-1].duration_s <= 0 or jobs[-1].devices < 1:
            raise InvalidValue(
                f"{name}:{n}",
                row,
                "duration_s > 0 and devices >= 1",
                "duration_s > 0 且 devices >= 1",
            )
    return Trace(
        name, tuple(sorted(jobs, key=lambda j: (j.submit_s, j.id))), 0, f"generic CSV {name}"
    )


def load_trace(name_or_path: str) -> Trace:
    """`openb` (shipped) or a path to an openb-style or generic CSV."""
    if name_or_path == "openb":
        text = (
            resources.files("suanli.sim").joinpath("data", "openb_pod_list_default.csv").read_text()
        )
        return load_openb(text)
    path = Path(name_or_path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        raise InvalidValue(
            "trace", name_or_path, "'openb' or a readable CSV file", "'openb' 或可读取的 CSV 文件"
        ) from None
    header = text.split("\n", 1)[0]
    if "creation_time" in header and "num_gpu" in header:
        return load_openb(text, path.name)
    return load_generic(text, path.name)


def shape(
    trace: Trace,
    *,
    limit: int | None = None,
    hours: float | None = None,
    time_scale: float = 1.0,
    seed: int = 0,
) -> Trace:
    """Cut (`limit` jobs, first `hours`), stretch (`time_scale` multiplies submit times and
    durations) and give every job an origin (seeded)."""
    if time_scale <= 0:
        raise InvalidValue("time_scale", time_scale, "a number > 0", "大于 0 的数")
    jobs = list(trace.jobs)
    if jobs:
        start = jobs[0].submit_s
        jobs = [replace(j, submit_s=j.submit_s - start) for j in jobs]
    if hours is not None:
        jobs = [j for j in jobs if j.submit_s < hours * 3600]
    if limit is not None:
        jobs = jobs[:limit]
    rng = np.random.default_rng(seed)
    shaped = []
    for job in jobs:
        origin = job.origin
        if origin is None:
            pool = HUB_CITIES if rng.random() < DEMAND_HUB_SHARE else OTHER_CAPITALS
            origin = str(pool[int(rng.integers(len(pool)))])
        shaped.append(
            replace(
                job,
                submit_s=job.submit_s * time_scale,
                duration_s=job.duration_s * time_scale,
                origin=origin,
            )
        )
    return Trace(trace.name, tuple(shaped), trace.dropped, trace.note)
