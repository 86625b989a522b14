"""Random inputs of the one decision step, for property tests of every caller (the twin's tick,
the live pass, the quote): a network, a capacity, a queue of platform task specs, a clock and a
policy name.

`scenarios(queue_depth=True, max_tasks=8, max_pools=5)` draws a `Scenario`:

* `network`: a `Snapshot` of 1..max_pools pools on catalog sites with catalog devices (its
  pools' `free` equals their `count`: capacity is apart), hourly price and carbon series from
  clock 0 for some sites, a provider reputation for some sites, a local hour at the start;
  `series_start_s` 0 and default settings otherwise (what the twin's `Network` can express);
* `capacity`: per pool held, unavailable and (with `queue_depth=True`) engine queue depth;
  the twin has no engine queue, so the twin's property draws with `queue_depth=False`;
* `queue`: 1..max_tasks `QueuedSpec`s — an id, a task spec in the platform's stored form (what
  `TaskSpec` accepts and `scheduler.tasks.engine_task` reads: executors, resources, origin,
  latency tier, data, relative deadline, price ceiling, zones, deferrable; only specs
  `engine_task` reads, see `readable`), the submission time
  on the scheduler clock, and for some an earlier deferral (`not_before_s`);
* `clock`: at or after every submission; `policy`: a name of `POLICIES`.

`queued_tasks(scenario)` turns the queue into the step's `QueuedTask`s through `engine_task`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import strategies as st

from suanli.catalog import Pool, find_site
from suanli.errors import SuanliError
from suanli.metering import find_device
from suanli.scheduler import (
    POLICIES,
    Capacity,
    PoolCapacity,
    QueuedTask,
    SiteSeries,
    Snapshot,
    engine_task,
)

SITES = ("ZJK", "YRD_DEMO", "HORINGER", "ZHONGWEI", "GUIAN", "SHAOGUAN")
DEVICES = ("H800", "A800", "A100 SXM4", "T4", "V100", "Ascend 910B", "EPYC 9654")
ORIGINS = ("上海", "北京", "广州", "成都", "乌鲁木齐", "杭州")
PRECISIONS = ("fp64", "fp32", "fp16", "bf16", "int8")
TIERS = ("interactive", "standard", "batch")
WORKLOADS = ("training", "inference", "hpc", "general")
ZONES = ("河北", "宁夏", "贵州", "广东", "内蒙古", "上海")
MODELS = ("H800", "A800", "T4", "V100", "Ascend 910B")


@dataclass(frozen=True)
class QueuedSpec:
    """One queued task as a platform spec: what the live store and the twin both hold."""

    id: str
    spec: dict[str, Any]
    submitted_s: float
    not_before_s: float | None = None


@dataclass(frozen=True)
class Scenario:
    network: Snapshot
    capacity: Capacity
    queue: tuple[QueuedSpec, ...]
    clock: float
    policy: str


def _series(draw: st.DrawFn) -> SiteSeries:
    hours = draw(st.sampled_from([24, 48]))
    energy = draw(st.lists(st.floats(0.3, 2.0), min_size=hours, max_size=hours))
    carbon = draw(st.lists(st.floats(0.05, 1.0), min_size=hours, max_size=hours))
    return SiteSeries(np.array(energy), np.array(carbon))


@st.composite
def networks(draw: st.DrawFn, max_pools: int = 5) -> Snapshot:
    pools = []
    for j in range(draw(st.integers(1, max_pools))):
        count = draw(st.integers(1, 16))
        pools.append(
            Pool(
                f"p{j}",
                find_site(draw(st.sampled_from(SITES))).id,
                find_device(draw(st.sampled_from(DEVICES))),
                count,
                count,
                draw(st.integers(0, 3000)),
                draw(st.booleans()),
            )
        )
    sites = {p.site_id: find_site(p.site_id) for p in pools}
    series = {s: _series(draw) for s in sorted(sites) if draw(st.booleans())}
    reputation = {s: draw(st.floats(0.0, 1.0)) for s in sorted(sites) if draw(st.booleans())}
    return Snapshot(
        tuple(pools),
        sites,
        reputation=reputation,
        series=series,
        series_start_s=0.0,
        local_hour_at_start=float(draw(st.integers(0, 23))),
    )


@st.composite
def capacities(draw: st.DrawFn, network: Snapshot, queue_depth: bool = True) -> Capacity:
    pools = {}
    for p in network.pools:
        held = draw(st.integers(0, p.count))
        unavailable = draw(st.integers(0, p.count - held))
        depth = draw(st.integers(0, 4)) if queue_depth and draw(st.booleans()) else 0
        pools[p.id] = PoolCapacity(p.count, held, unavailable, depth)
    return Capacity(pools)


def readable(spec: dict[str, Any]) -> bool:
    """Whether `engine_task` reads the spec (the platform refuses the others at submission:
    e.g. a duration at fp64 on an NPU, whose reference device has no fp64 figure)."""
    try:
        engine_task("probe", spec, 0.0)
    except SuanliError:
        return False
    return True


@st.composite
def task_specs(draw: st.DrawFn) -> dict[str, Any]:
    resources: dict[str, Any] = {
        "devices": draw(st.integers(1, 8)),
        "device_kind": draw(st.sampled_from(["gpu", "npu", "cpu"])),
        "precision": draw(st.sampled_from(PRECISIONS)),
        "workload": draw(st.sampled_from(WORKLOADS)),
    }
    if draw(st.booleans()):
        resources["duration_s"] = draw(st.floats(60.0, 36_000.0))
    else:
        resources["work_flop"] = draw(st.floats(1e15, 1e20))
    if draw(st.integers(0, 3)) == 0:
        resources["device_models"] = sorted(draw(st.sets(st.sampled_from(MODELS), min_size=1)))
    if draw(st.integers(0, 3)) == 0:
        resources["memory_gb"] = draw(st.floats(0.0, 100.0))
    spec: dict[str, Any] = {
        "executors": [{"command": ["true"]}],
        "resources": resources,
        "origin": draw(st.sampled_from(ORIGINS)),
        "latency_tier": draw(st.sampled_from(TIERS)),
    }
    if draw(st.booleans()):
        spec["deadline_s"] = draw(st.floats(600.0, 3 * 86400.0))
        spec["deferrable"] = draw(st.booleans())
    if draw(st.integers(0, 3)) == 0:
        spec["max_price_fen"] = draw(st.integers(0, 10**6))
    if draw(st.integers(0, 3)) == 0:
        spec["data_gb"] = draw(st.floats(0.0, 2000.0))
    if draw(st.integers(0, 4)) == 0:
        spec["zones"] = sorted(draw(st.sets(st.sampled_from(ZONES), min_size=1)))
    return spec


@st.composite
def scenarios(
    draw: st.DrawFn, queue_depth: bool = True, max_tasks: int = 8, max_pools: int = 5
) -> Scenario:
    network = draw(networks(max_pools))
    capacity = draw(capacities(network, queue_depth))
    clock = float(draw(st.integers(0, 3 * 86400)))
    queue = []
    for i in range(draw(st.integers(1, max_tasks))):
        submitted = float(draw(st.integers(0, int(clock))))
        not_before = None
        if draw(st.integers(0, 3)) == 0:  # deferred earlier: due now, or later
            not_before = submitted + 3600.0 * draw(st.integers(0, 30))
        spec = draw(task_specs().filter(readable))
        queue.append(QueuedSpec(f"t{i}", spec, submitted, not_before))
    policy = draw(st.sampled_from(sorted(POLICIES)))
    return Scenario(network, capacity, tuple(queue), clock, policy)


def queued_tasks(scenario: Scenario) -> list[QueuedTask]:
    """The scenario's queue as the decision step's input, through `engine_task`."""
    return [
        QueuedTask(engine_task(q.id, q.spec, q.submitted_s), q.submitted_s, None, q.not_before_s)
        for q in scenario.queue
    ]
