"""The digital twin: replay a trace on the national network with the SAME placement engine.

Owns the network model, the discrete-event core and the run's metrics.

* **Network** (`national_network(scale)`): the 10 catalog clusters, plus a data centre in each of
  the four demand cities (Beijing, Shanghai, Guangzhou, Shenzhen) as provider sites, so that the
  `nearest` baseline has somewhere near to go. Pool sizes follow the published rack counts of
  `hub_metrics.csv` where a cluster has one (Horinger 150k, Zhongwei 36k, Gui'an 26.5k,
  Qingyang 20k racks) and their median elsewhere, times `scale` GPUs per rack (default 0.004: an
  ESTIMATE sized so that the openb trace meets some contention); each site gets GPUs in the mix
  of the Alibaba spot-GPU and openb fleets (`scheduler/data/device_mix.csv`) and a CPU pool of
  generic cores. Prices per device-hour are those of the problem generator (an ESTIMATE).
* **Series**: hourly electricity-price multipliers from each province's time-of-use windows
  (`tou_tariffs.csv`), and an hourly carbon intensity built from the annual factor with a
  documented daily shape, because no hourly carbon data for China's provinces is public here:
  in the west (Inner Mongolia, Ningxia, Gansu, Guizhou, Sichuan, Chongqing) the intensity dips
  by up to 25% around solar noon (a cosine between 07:00 and 19:00) and rises at night so that
  the day's mean equals the annual factor; eastern sites are flat. Replace with real series when
  available.
* **Events**: a heap of (time, order, seq) — order: finishes before submissions before
  scheduling ticks at the same time, seq the insertion count — on a virtual clock. Submissions
  queue; a scheduling tick every `tick_s` places the queue with `suanli.scheduler.place` on a
  snapshot of free capacity (exactly what the live server's scheduling pass does); a placed task
  finishes after the metering model's duration. A task the network can never run (no pool fits
  it even when empty) is rejected with the engine's reason; a task still waiting after
  `max_wait_s` is rejected as "waited too long".
* **Invariants, checked in every run**: completed + rejected = submitted; the sum of per-task
  energy equals the total; no pool ever runs more devices than it has.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from suanli.catalog import Pool, Site, clusters, find_place, provider_site
from suanli.catalog.tariffs import tou_schedule
from suanli.datafiles import read_rows
from suanli.metering import (
    EFFICIENCY,
    WorkloadClass,
    find_device,
    match_devices,
    parse_kind,
    parse_precision,
)
from suanli.scheduler import LatencyTier, SiteSeries, Snapshot, Task, place, policy_named
from suanli.scheduler.generate import capital_fen_per_device_hour, energy_fen_per_device_hour
from suanli.sim.traces import Trace, TraceJob

WEST_PROVINCES = frozenset({"内蒙古", "宁夏", "甘肃", "贵州", "四川", "重庆"})
DEMAND_CITY_DCS = ("北京", "上海", "广州", "深圳")
DEFAULT_SCALE = 0.004  # GPUs per published rack: an ESTIMATE
CPU_CORES_PER_GPU = 8  # generic CPU cores per GPU at a site: an ESTIMATE
SOLAR_DIP = 0.25  # the western midday dip of carbon intensity: an ESTIMATE
REFERENCE = {"gpu": "T4", "npu": "Ascend 910B", "cpu": "cpu"}  # trace durations are on these
FINISH, SUBMIT, TICK = 0, 1, 2


def _published_racks() -> dict[str, float]:
    metrics = {
        "racks_in_operation",
        "racks_installed",
        "racks_horinger_new_area",
        "racks_built_guiyang_guian",
    }
    racks: dict[str, float] = {}
    for row in read_rows("suanli.catalog", "hub_metrics.csv"):
        if row["scope"] == "cluster" and row["metric"] in metrics:
            racks[row["scope_id"]] = max(racks.get(row["scope_id"], 0.0), float(row["value"]))
    return racks


def carbon_shape(province: str, hours: int = 24) -> np.ndarray:
    """Multipliers of the annual factor for each hour of a day (mean exactly 1)."""
    if province not in WEST_PROVINCES:
        return np.ones(hours)
    h = np.arange(hours) % 24
    sun = np.where((h >= 7) & (h < 19), np.cos((h - 13) / 6 * (math.pi / 2)), 0.0)
    sun = np.clip(sun, 0.0, None)
    dip = 1.0 - SOLAR_DIP * sun
    shaped: np.ndarray = dip / dip.mean()
    return shaped


@dataclass(frozen=True)
class Network:
    sites: dict[str, Site]
    pools: tuple[Pool, ...]
    series: dict[str, SiteSeries]
    local_hour_at_start: float = 0.0


def national_network(scale: float = DEFAULT_SCALE, start_month: int = 1) -> Network:
    sites: dict[str, Site] = {s.id: s for s in clusters()}
    for city in DEMAND_CITY_DCS:
        place_ = find_place(city)
        site = provider_site(f"DC_{place_.id}", city, pue=1.42)
        sites[site.id] = site
    racks = _published_racks()
    median = float(np.median(list(racks.values())))
    weights: dict[str, float] = {}  # by catalog device (two trace models may map to one)
    for row in read_rows("suanli.scheduler", "device_mix.csv"):
        device_id = find_device(row["device"]).id
        weights[device_id] = weights.get(device_id, 0.0) + float(row["devices_in_trace"])
    mix = sorted(weights.items())
    total_weight = sum(w for _, w in mix)
    pools: list[Pool] = []
    for site in sites.values():
        site_racks = racks.get(site.id, median)
        gpus = max(8, round(site_racks * scale))
        for device_name, weight in mix:
            count = max(1, round(gpus * weight / total_weight))
            device = find_device(device_name)
            price = capital_fen_per_device_hour(device) + energy_fen_per_device_hour(
                device, site.pue, site.price_cny_per_kwh
            )
            pools.append(
                Pool(f"{site.id}/{device.model}", site.id, device, count, count, int(price))
            )
        cpu = find_device("cpu")
        cores = gpus * CPU_CORES_PER_GPU
        pools.append(
            Pool(
                f"{site.id}/cpu",
                site.id,
                cpu,
                cores,
                cores,
                int(
                    capital_fen_per_device_hour(cpu)
                    + energy_fen_per_device_hour(cpu, site.pue, site.price_cny_per_kwh)
                ),
            )
        )
    series = {}
    days = 2
    for site in sites.values():
        province = site.provinces[0]
        schedule = tou_schedule(province)
        energy = (
            np.tile(schedule.hourly(start_month), days)
            if schedule is not None
            else np.ones(24 * days)
        )
        carbon = site.grid_kgco2_per_kwh * carbon_shape(province, 24 * days)
        series[site.id] = SiteSeries(energy, carbon)
    return Network(sites, tuple(pools), series)


@dataclass
class Outcome:
    """What happened to one job."""

    job: TraceJob
    state: str = "queued"  # queued | running | completed | rejected
    pool: str | None = None
    site: str | None = None
    start_s: float | None = None
    end_s: float | None = None
    cost_fen: int = 0
    energy_kwh: float = 0.0
    carbon_kg: float = 0.0
    latency_ms: float = 0.0
    data_moved_gb: float = 0.0
    reason: str = ""


@dataclass
class RunResult:
    policy: str
    metrics: dict[str, Any]
    outcomes: list[Outcome] = field(repr=False, default_factory=list)
    timeline: list[dict[str, float]] = field(repr=False, default_factory=list)


def _task(job: TraceJob) -> Task:
    kind = parse_kind(job.device_kind)
    precision = parse_precision(job.precision or ("fp32" if kind.value == "cpu" else "fp16"))
    reference = find_device(REFERENCE[kind.value])
    peak = reference.peak_flops[reference.resolve_precision(precision)]
    work = job.duration_s * job.devices * peak * EFFICIENCY[WorkloadClass.GENERAL].value
    models = None
    if job.device_models:
        models = frozenset(d.id for name in job.device_models for d in match_devices(name))
    return Task(
        id=job.id,
        devices=job.devices,
        device_kind=kind,
        precision=precision,
        work_flop=work,
        origin=find_place(job.origin or "北京"),
        latency_tier=LatencyTier(job.latency_tier),
        device_models=models,
        data_gb=job.data_gb,
    )


def run(
    trace: Trace,
    network: Network,
    policy: str,
    *,
    tick_s: float = 60.0,
    max_wait_s: float = 7 * 86400.0,
    progress: Callable[[int, int], None] | None = None,
) -> RunResult:
    """Replay `trace` on `network` under `policy`; deterministic for the same inputs."""
    started = time.perf_counter()
    chosen = policy_named(policy)
    outcomes = {job.id: Outcome(job) for job in trace.jobs}
    tasks = {job.id: _task(job) for job in trace.jobs}
    free = {p.id: p.free for p in network.pools}
    capacity = {p.id: p.count for p in network.pools}
    empty = Snapshot(network.pools, network.sites)
    heap: list[tuple[float, int, int, str]] = []
    seq = 0

    def push(at: float, kind: int, ident: str) -> None:
        nonlocal seq
        heapq.heappush(heap, (at, kind, seq, ident))
        seq += 1

    for job in trace.jobs:
        push(job.submit_s, SUBMIT, job.id)
    queue: list[str] = []
    totals = {"cost_fen": 0.0, "carbon_kg": 0.0}  # of everything placed so far
    events = 0
    tick_pending = False
    timeline: list[dict[str, float]] = []
    done = 0
    while heap:
        now, kind, _, ident = heapq.heappop(heap)
        events += 1
        if kind == FINISH:
            outcome = outcomes[ident]
            assert outcome.pool is not None
            free[outcome.pool] += outcome.job.devices
            outcome.state = "completed"
            done += 1
        elif kind == SUBMIT:
            queue.append(ident)
            if not tick_pending:
                push(math.ceil(now / tick_s) * tick_s, TICK, "tick")
                tick_pending = True
        else:
            tick_pending = False
            done += _schedule(
                queue, tasks, outcomes, network, free, chosen, now, max_wait_s, push, empty, totals
            )
            busy = sum(capacity[p] - free[p] for p in capacity)
            timeline.append(
                {
                    "t": now,
                    "busy_devices": float(busy),
                    "queued": float(len(queue)),
                    "cost_fen": float(totals["cost_fen"]),
                    "carbon_kg": totals["carbon_kg"],
                }
            )
            if queue:
                push(now + tick_s, TICK, "tick")
                tick_pending = True
        for pool_id, left in free.items():  # no pool ever runs more devices than it has
            assert 0 <= left <= capacity[pool_id], (pool_id, left)
        if progress is not None and events % 500 == 0:
            progress(done, len(outcomes))
    if progress is not None:
        progress(len(outcomes), len(outcomes))
    results = list(outcomes.values())
    metrics = _metrics(results, network, policy, events, time.perf_counter() - started)
    return RunResult(policy, metrics, results, timeline)


def _schedule(
    queue: list[str],
    tasks: dict[str, Task],
    outcomes: dict[str, Outcome],
    network: Network,
    free: dict[str, int],
    policy: Any,
    now: float,
    max_wait_s: float,
    push: Callable[[float, int, str], None],
    empty: Snapshot,
    totals: dict[str, float],
) -> int:
    """One scheduling tick: place what fits now; reject what can never fit. Ended count."""
    if not queue:
        return 0
    pools = tuple(replace(p, free=free[p.id]) for p in network.pools)
    snapshot = Snapshot(pools, network.sites, series=network.series, series_start_s=0.0)
    plan = place([tasks[i] for i in queue], snapshot, policy, now, solver="greedy")
    ended = 0
    placed = set()
    for placement in plan.placements:
        outcome = outcomes[placement.task]
        b = placement.breakdown
        outcome.state, outcome.pool, outcome.site = "running", placement.pool, placement.site
        outcome.start_s, outcome.end_s = placement.start_s, placement.end_s
        outcome.cost_fen, outcome.energy_kwh, outcome.carbon_kg = (
            b.cost_fen,
            b.energy_kwh,
            b.carbon_kg,
        )
        outcome.latency_ms = b.latency_ms
        outcome.data_moved_gb = outcome.job.data_gb if b.transfer_s > 0 else 0.0
        free[placement.pool] -= outcome.job.devices
        totals["cost_fen"] += b.cost_fen
        totals["carbon_kg"] += b.carbon_kg
        push(placement.end_s, FINISH, placement.task)
        placed.add(placement.task)
    waiting = [i for i in queue if i not in placed]
    if waiting:
        # never placeable, even on the empty network: reject now with the engine's reason
        never = place([tasks[i] for i in waiting], empty, policy, now, solver="greedy")
        for unplaced in never.unplaced:
            outcome = outcomes[unplaced.task]
            outcome.state, outcome.reason = "rejected", unplaced.sentence
            ended += 1
        for i in waiting:
            outcome = outcomes[i]
            if outcome.state == "queued" and now - outcome.job.submit_s > max_wait_s:
                outcome.state, outcome.reason = "rejected", "waited too long"
                ended += 1
    queue[:] = [i for i in waiting if outcomes[i].state == "queued"]
    return ended


# An SLA is broken when the network latency exceeds the tier's budget, when a job with a
# deadline ends after it, or when a job waits longer than its tier tolerates (ESTIMATES: an
# interactive job 60 s, a standard one 1 h, a batch one 1 day).
TIER_RTT_MS = {"interactive": 5.0, "standard": 20.0, "batch": math.inf}
TIER_WAIT_S = {"interactive": 60.0, "standard": 3600.0, "batch": 86400.0}


def _violated(r: Outcome) -> bool:
    tier = r.job.latency_tier
    start, end = r.start_s or 0.0, r.end_s or 0.0
    late = r.job.deadline_s is not None and end > r.job.submit_s + r.job.deadline_s
    return r.latency_ms > TIER_RTT_MS[tier] or late or start - r.job.submit_s > TIER_WAIT_S[tier]


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else 0.0


def _metrics(
    results: list[Outcome], network: Network, policy: str, events: int, wall_s: float
) -> dict[str, Any]:
    completed = [r for r in results if r.state == "completed"]
    rejected = [r for r in results if r.state == "rejected"]
    assert len(completed) + len(rejected) == len(results), "every task ends exactly once"
    reasons: dict[str, int] = {}
    for r in rejected:
        key = "waited too long" if r.reason == "waited too long" else r.reason.split(":")[0]
        reasons[key] = reasons.get(key, 0) + 1
    energy = sum(r.energy_kwh for r in completed)
    carbon = sum(r.carbon_kg for r in completed)
    work = sum(r.job.duration_s * r.job.devices for r in completed)
    device_hours: dict[str, float] = {}
    west = 0.0
    for r in completed:
        assert r.start_s is not None and r.end_s is not None and r.site is not None
        hours = (r.end_s - r.start_s) * r.job.devices / 3600
        device_hours[r.site] = device_hours.get(r.site, 0.0) + hours
        if network.sites[r.site].east_west == "west":
            west += hours
    span_h = max((r.end_s or 0.0) for r in completed) / 3600 if completed else 0.0
    capacity = {
        sid: sum(p.count for p in network.pools if p.site_id == sid) for sid in network.sites
    }
    waits = [(r.start_s or 0.0) - r.job.submit_s for r in completed]
    violations = {
        tier: sum(1 for r in completed if r.job.latency_tier == tier and _violated(r))
        for tier in ("interactive", "standard", "batch")
    }
    total_hours = sum(device_hours.values())
    return {
        "policy": policy,
        "tasks_total": len(results),
        "tasks_completed": len(completed),
        "tasks_rejected": len(rejected),
        "rejected_reasons": reasons,
        "cost_fen": sum(r.cost_fen for r in completed),
        "energy_kwh": energy,
        "carbon_kg": carbon,
        "ceps": None if carbon == 0 else work / carbon,
        "ceps_unit": "reference device-seconds per kg CO2 (unofficial)",
        "wait_s_p50": _percentile(waits, 50),
        "wait_s_p99": _percentile(waits, 99),
        "latency_ms_mean": float(np.mean([r.latency_ms for r in completed])) if completed else 0.0,
        "sla_violations": violations,
        "utilisation": {
            sid: (device_hours.get(sid, 0.0) / (capacity[sid] * span_h) if span_h else 0.0)
            for sid in network.sites
        },
        "west_share": west / total_hours if total_hours else 0.0,
        "data_moved_gb": sum(r.data_moved_gb for r in completed),
        "wall_s": wall_s,
        "events": events,
        "events_per_s": events / wall_s if wall_s else 0.0,
    }
