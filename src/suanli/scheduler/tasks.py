"""One function turns a task spec into the engine's `Task`: the live platform, quotes, the twin
and `suanli schedule` all use it, so a spec means the same work everywhere.

A spec is the stored form of the task model (`resources.device_kind`, `precision`, `workload`,
`devices` on each of `nodes` (a gang), optional `work_flop` or `duration_s`, `device_models`,
`memory_gb`; `origin`, `latency_tier`, `data_gb`, `data_location` (where the data lives; unset:
at the origin), `deadline_s`, `max_price_fen`, `zones`, `deferrable`). Without `work_flop`, the
work is `duration_s` (60 s by default) on all the task's devices as reference devices of the
kind (an A100 SXM4 for GPUs, an Ascend 910B for NPUs, a generic core for CPUs) at the workload's
efficiency. Pure: raises `SuanliError` (naming the
field) for a spec it cannot read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from suanli.catalog import find_place, zone_provinces
from suanli.errors import InvalidValue
from suanli.metering import (
    EFFICIENCY,
    find_device,
    match_devices,
    parse_kind,
    parse_precision,
    parse_workload,
)
from suanli.scheduler.model import LatencyTier, Task

REFERENCE_DEVICE = {"gpu": "A100 SXM4", "npu": "Ascend 910B", "cpu": "cpu"}
DEFAULT_DURATION_S = 60.0


def latency_tier(value: str) -> LatencyTier:
    try:
        return LatencyTier(value)
    except ValueError:
        accepted = ", ".join(tier.value for tier in LatencyTier)
        raise InvalidValue(
            "latency_tier", value, f"one of {accepted}", f"{accepted} 之一"
        ) from None


def engine_task(ident: str, spec: Mapping[str, Any], submitted_s: float) -> Task:
    """The engine's view of a task spec submitted at `submitted_s` (scheduler clock, seconds):
    a relative `deadline_s` becomes absolute from then."""
    resources = spec["resources"]
    nodes = int(resources.get("nodes") or 1)
    devices = int(resources["devices"]) * nodes  # `devices` on each node
    kind = parse_kind(resources["device_kind"])
    precision = parse_precision(resources["precision"])
    workload = parse_workload(resources.get("workload") or "general")
    work = resources.get("work_flop")
    if work is None:
        reference = find_device(REFERENCE_DEVICE[kind.value])
        peak = reference.peak_flops[reference.resolve_precision(precision)]
        duration = resources.get("duration_s") or DEFAULT_DURATION_S
        work = duration * devices * peak * EFFICIENCY[workload].value
    models = None
    if resources.get("device_models"):
        models = frozenset(d.id for n in resources["device_models"] for d in match_devices(n))
    deadline = None
    if spec.get("deadline_s") is not None:
        deadline = submitted_s + float(spec["deadline_s"])
    return Task(
        id=ident,
        devices=devices,
        device_kind=kind,
        precision=precision,
        work_flop=float(work),
        origin=find_place(spec.get("origin") or "北京"),
        latency_tier=latency_tier(spec.get("latency_tier") or "batch"),
        workload=workload,
        device_models=models,
        memory_gb=float(resources.get("memory_gb") or 0.0),
        data_gb=float(spec.get("data_gb") or 0.0),
        deadline_s=deadline,
        max_price_fen=spec.get("max_price_fen"),
        allowed_provinces=(
            frozenset(p for zone in spec["zones"] for p in zone_provinces(zone))
            if spec.get("zones")
            else None
        ),
        deferrable=bool(spec.get("deferrable")) and deadline is not None,
        nodes=nodes,
        data_origin=find_place(spec["data_location"]) if spec.get("data_location") else None,
    )
