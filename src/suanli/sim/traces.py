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
  precision?, origin?, latency_tier?, data_gb?, deadline_s?, deferrable?` (true/false/1/0),
  `nodes?` (a gang: `devices` in all, split evenly over that many nodes) — bring any trace in
  this form.

A job's duration is read as a duration on the platform's reference device (an A100 SXM4 for
GPUs, a generic core for CPUs), as `resources.duration_s` is on the live platform.

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
    deferrable: bool = False  # may start later, within its deadline, when cheaper or greener
    nodes: int = 1  # a gang: `devices` split evenly over this many nodes of one pool


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


def _flag(text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no", ""):
        return False
    raise ValueError(f"deferrable is true or false, not {text!r}")


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
                    deferrable=_flag(row.get("deferrable") or "false"),
                    nodes=int(row.get("nodes") or 1),
                )
            )
        except (KeyError, ValueError) as error:
            raise InvalidValue(
                f"{name}:{n}", row, f"numbers in the numeric columns ({error})", "数值列应为数字"
            ) from None
        job = jobs[-1]
        if job.duration_s <= 0 or job.devices < 1 or job.nodes < 1 or job.devices % job.nodes:
            raise InvalidValue(
                f"{name}:{n}",
                row,
                "duration_s > 0, devices >= 1, and nodes >= 1 dividing devices",
                "duration_s > 0、devices >= 1，且 nodes >= 1 能整除 devices",
            )
    return Trace(
        name, tuple(sorted(jobs, key=lambda j: (j.submit_s, j.id))), 0, f"generic CSV {name}"
    )


# Estimates for traces that give no duration (documented in the module docstring)
PREFILL_TOKENS_PER_S = 2000.0  # ESTIMATE: one reference GPU reading a prompt
DECODE_TOKENS_PER_S = 20.0  # ESTIMATE: one reference GPU generating tokens
PHILLY_INTERARRIVAL_S = 30.0  # ESTIMATE: Philly gives runtimes only, not arrivals
SHIPPED = {
    "openb": "openb_pod_list_default.csv",
    "dlrm": "disaggregated_DLRM_trace.csv",
    "azure-llm": "AzureLLMInferenceTrace_code.csv",
    "philly": "philly_runtime.csv",
}


def _shipped(filename: str) -> str:
    return resources.files("suanli.sim").joinpath("data", filename).read_text(encoding="utf-8")


def load_dlrm(text: str, name: str = "dlrm") -> Trace:
    """DLRM serving instances as interactive load: HN (GPU) instances ask ceil(gpu_request)
    GPUs, CN instances ceil(cpu_request) cores; an instance alive before the trace starts or
    after it ends (empty times) is clipped to the trace's span."""
    rows = _rows(text)
    times = [float(r[c]) for r in rows for c in ("creation_time", "deletion_time") if r.get(c)]
    end = max(times, default=0.0)
    jobs, dropped = [], 0
    for row in rows:
        start = float(row["scheduled_time"] or row["creation_time"] or 0.0)
        stop = float(row["deletion_time"]) if row.get("deletion_time") else end
        if stop <= start:
            dropped += 1
            continue
        gpu = row.get("role") == "HN"
        request = float((row["gpu_request"] if gpu else row["cpu_request"]) or 1)
        jobs.append(
            TraceJob(
                row["instance_sn"],
                float(row["creation_time"] or 0.0),
                stop - start,
                max(1, math.ceil(request)),
                "gpu" if gpu else "cpu",
                latency_tier="interactive",
            )
        )
    return Trace(
        name,
        tuple(sorted(jobs, key=lambda j: (j.submit_s, j.id))),
        dropped,
        "Alibaba DLRM serving trace v2025 (Yang et al., NSDI'25)",
    )


def load_azure_llm(text: str, name: str = "azure-llm") -> Trace:
    """LLM inference requests as interactive one-GPU jobs; duration = prompt tokens at
    PREFILL_TOKENS_PER_S + generated tokens at DECODE_TOKENS_PER_S (ESTIMATES)."""
    from datetime import datetime

    jobs = []
    first: datetime | None = None
    for n, row in enumerate(_rows(text)):
        stamp = datetime.fromisoformat(row["TIMESTAMP"][:26])
        first = first or stamp
        duration = (
            int(row["ContextTokens"]) / PREFILL_TOKENS_PER_S
            + int(row["GeneratedTokens"]) / DECODE_TOKENS_PER_S
        )
        jobs.append(
            TraceJob(
                f"req-{n}",
                (stamp - first).total_seconds(),
                max(duration, 0.01),
                1,
                "gpu",
                precision="fp16",
                latency_tier="interactive",
            )
        )
    return Trace(
        name,
        tuple(sorted(jobs, key=lambda j: (j.submit_s, j.id))),
        0,
        "Azure LLM inference trace 2023 (Patel et al., ISCA'24)",
    )


def load_philly(text: str, name: str = "philly") -> Trace:
    """Philly runtimes as one-GPU batch jobs arriving every PHILLY_INTERARRIVAL_S (ESTIMATE);
    zero runtimes are dropped."""
    jobs, dropped = [], 0
    for n, row in enumerate(_rows(text)):
        runtime = float(row["runtime"])
        if runtime <= 0:
            dropped += 1
            continue
        jobs.append(TraceJob(f"philly-{n}", n * PHILLY_INTERARRIVAL_S, runtime, 1, "gpu"))
    return Trace(name, tuple(jobs), dropped, "Microsoft Philly runtimes (2017)")


def load_fleet(text: str | None = None) -> dict[str, int]:
    """The Alibaba spot-GPU node list as GPUs per catalog device (models the catalog lacks are
    left out): the fleet the twin's device mix follows."""
    from suanli.metering import find_device

    names = {"A100-SXM4-80GB": "A100 SXM4", "A800-SXM4-80GB": "A800 SXM4", "H800": "H800"}
    fleet: dict[str, int] = {}
    for row in _rows(text if text is not None else _shipped("node_info_df.csv")):
        model = names.get(row["gpu_model"])
        if model is not None:
            device = find_device(model).id
            fleet[device] = fleet.get(device, 0) + int(float(row["gpu_capacity_num"]))
    return fleet


LOADERS = {
    "openb": load_openb,
    "dlrm": load_dlrm,
    "azure-llm": load_azure_llm,
    "philly": load_philly,
}


FORMATS = ("openb", "azure-llm", "dlrm", "philly", "generic")
# the columns that tell a file's format when none is named (generic: anything else)
SIGNATURES = {
    "openb": ("creation_time", "num_gpu"),
    "azure-llm": ("TIMESTAMP", "ContextTokens", "GeneratedTokens"),
    "dlrm": ("instance_sn", "gpu_request", "creation_time"),
    "philly": ("runtime",),  # told by the header only when it is the one column
}


def load_trace(name_or_path: str, format: str | None = None) -> Trace:
    """A shipped trace (openb, dlrm, azure-llm, philly) or a path to a CSV file in one of
    FORMATS: named by `format`, else told by its header (a file with none of the SIGNATURES
    columns is read as generic)."""
    if format is not None and format not in FORMATS:
        raise InvalidValue(
            "format", format, f"one of {', '.join(FORMATS)}", f"{', '.join(FORMATS)} 之一"
        )
    if name_or_path in SHIPPED and format is None:
        return LOADERS[name_or_path](_shipped(SHIPPED[name_or_path]))
    path = Path(name_or_path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        raise InvalidValue(
            "trace",
            name_or_path,
            f"one of {', '.join(SHIPPED)} or a readable CSV file",
            f"{', '.join(SHIPPED)} 之一或可读取的 CSV 文件",
        ) from None
    header = {cell.strip() for cell in text.split("\n", 1)[0].split(",")}
    if format is None:
        format = next(
            (
                name
                for name, columns in SIGNATURES.items()
                if header.issuperset(columns) and (name != "philly" or header == {"runtime"})
            ),
            "generic",
        )
    if format == "generic":
        return load_generic(text, path.name)
    missing = [c for c in SIGNATURES[format] if c not in header]
    if missing:
        raise InvalidValue(
            "format",
            format,
            f"a file with the {format} columns ({', '.join(SIGNATURES[format])}); "
            f"{path.name} lacks {', '.join(missing)}",
            f"含 {format} 列的文件；缺少 {', '.join(missing)}",
        )
    try:
        return LOADERS[format](text, path.name)
    except (KeyError, ValueError) as error:
        raise InvalidValue(
            "trace",
            path.name,
            f"a well-formed {format} file ({error})",
            f"格式正确的 {format} 文件",
        ) from None


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
