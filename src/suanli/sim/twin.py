"""The digital twin: replay a trace on the national network with the SAME decision step.

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
  the day's mean equals the annual factor; eastern sites are flat. Built by
  `scheduler.series.network_series`, the same construction the live platform uses.
* **Jobs**: a trace job becomes a platform task spec (`job_spec`) and the engine's task through
  `suanli.scheduler.engine_task`, the platform's one conversion: its duration is read as a
  duration on the platform's reference device (an A100 SXM4 for GPUs, a generic core for CPUs),
  like `resources.duration_s` on the live platform; its deadline and `deferrable` flag reach
  the engine (`defer_batch` makes every batch job deferrable, for traces without the flag).
* **Events**: a heap of (time, order, seq) — order: finishes before submissions before
  scheduling ticks at the same time, seq the insertion count — on a virtual clock. Submissions
  queue; a scheduling tick (`tick`) calls `suanli.scheduler.decide` — the step the live pass,
  quotes and `suanli schedule` call — on the queue and a `Capacity` made of the twin's counters
  (held = count - free). PLACE starts the job (it finishes after the metering model's
  duration); WAIT keeps it queued until `not_before_s` and schedules a tick then; QUEUE keeps
  it (a task no pool fits stays queued, as on the live platform); REJECT ends it (a task still
  waiting after `max_wait_s`).
* **Ticks**: on the grid of `tick_s` while tasks wait, plus one at each deferral's end. After a
  decision that deferred no task and left no task with a price ceiling queued (`_settled`),
  the grid ticks are skipped until a job finishes, one is submitted, a deferral ends or a
  task's max wait is reached: those skipped ticks would have decided exactly the same
  (docs/twin.md says why).
* **Invariants, checked in every run** (a broken one raises `TwinInvariantError`): completed +
  rejected = submitted; the sum of per-task energy equals the total; no pool ever runs more
  devices than it has.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from typing import TYPE_CHECKING, Any

import numpy as np

from suanli import checks
from suanli.catalog import Pool, Site, clusters, find_place, provider_site
from suanli.datafiles import read_rows
from suanli.errors import InvalidValue, SuanliError
from suanli.metering import Precision, find_device
from suanli.scheduler import (
    Action,
    Booking,
    Capacity,
    Decision,
    Placement,
    Policy,
    PoolCapacity,
    QueuedTask,
    SiteSeries,
    Snapshot,
    Task,
    decide,
    engine_task,
    policy_named,
)
from suanli.scheduler.decide import DEFAULT_MAX_WAIT_S
from suanli.scheduler.generate import capital_fen_per_device_hour, energy_fen_per_device_hour
from suanli.scheduler.series import network_series
from suanli.scheduler.tasks import REFERENCE_DEVICE
from suanli.sim.traces import Trace, TraceJob

if TYPE_CHECKING:
    from suanli.sim.carbon import CarbonWorld

DEMAND_CITY_DCS = ("北京", "上海", "广州", "深圳")
DEFAULT_SCALE = 0.004  # GPUs per published rack: an ESTIMATE
CPU_CORES_PER_GPU = 8  # generic CPU cores per GPU at a site: an ESTIMATE
MIN_SITE_GPUS = 16  # the fewest GPUs a site has: its A100 pool (half the mix) takes 8
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


@dataclass(frozen=True)
class Network:
    """The twin's network: sites, pools (their `free` is the capacity at the start), hourly
    series from the run's start (hour 0 at local hour `local_hour_at_start`), and each site's
    provider reputation in [0, 1] (none by default: the twin models no provider history)."""

    sites: dict[str, Site]
    pools: tuple[Pool, ...]
    series: dict[str, SiteSeries]
    local_hour_at_start: float = 0.0
    reputation: Mapping[str, float] = field(default_factory=dict)

    def snapshot(self) -> Snapshot:
        """The decision step's network (capacity comes apart, from the twin's counters)."""
        return Snapshot(
            self.pools,
            self.sites,
            reputation=self.reputation,
            series=self.series,
            series_start_s=0.0,
            local_hour_at_start=self.local_hour_at_start,
        )


def _sites() -> dict[str, Site]:
    sites: dict[str, Site] = {s.id: s for s in clusters()}
    for city in DEMAND_CITY_DCS:
        place_ = find_place(city)
        site = provider_site(f"DC_{place_.id}", city, pue=1.42)
        sites[site.id] = site
    return sites


@cache
def _device_mix() -> tuple[tuple[str, float], ...]:
    """(catalog device, weight) of the fleets' GPU mix (two trace models may map to one)."""
    weights: dict[str, float] = {}
    for row in read_rows("suanli.scheduler", "device_mix.csv"):
        device_id = find_device(row["device"]).id
        weights[device_id] = weights.get(device_id, 0.0) + float(row["devices_in_trace"])
    return tuple(sorted(weights.items()))


def _gpu_counts(
    sites: Mapping[str, Site], scale: float
) -> dict[str, tuple[int, list[tuple[str, int]]]]:
    """Each site's GPUs at `scale` GPUs per published rack (at least MIN_SITE_GPUS) and its GPU
    pools in the fleets' device mix: (catalog device, count), one of each device at least."""
    racks = _published_racks()
    median = float(np.median(list(racks.values())))
    mix = _device_mix()
    total_weight = sum(w for _, w in mix)
    counts = {}
    for site in sites.values():
        gpus = max(MIN_SITE_GPUS, round(racks.get(site.id, median) * scale))
        counts[site.id] = (
            gpus,
            [(device, max(1, round(gpus * weight / total_weight))) for device, weight in mix],
        )
    return counts


def national_network(scale: float = DEFAULT_SCALE, start_month: int = 1) -> Network:
    sites = _sites()
    pools: list[Pool] = []
    for site_id, (gpus, counts) in _gpu_counts(sites, scale).items():
        site = sites[site_id]
        for device_name, count in counts:
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
    series = network_series(sites, start_month)
    return Network(sites, tuple(pools), series)


@dataclass(frozen=True)
class Sizing:
    """A network and a load sized for each other (`size_for_utilisation`): replay
    `replicate(trace, sizing.copies)` on `national_network(sizing.scale)`."""

    utilisation: float  # the share of GPUs asked to be busy
    scale: float  # GPUs per published rack
    gpus: int  # GPUs of the network at that scale
    copies: int  # the trace played this many times over (1: once)
    offered_gpus: float  # GPUs all copies keep busy on average while they arrive
    stretch: float  # a reference hour on the network's mean GPU, in hours


COPY_OFFSET_S = 86400.0  # copy k of a replicated trace arrives k days after the first
# the arrival window holds this share of a trace's submissions: a few stray jobs months before
# the rest (openb has 21 of 7,255 spread over 114 days before its busy 36) would otherwise
# stretch the window that sizing and the busy share average over
ARRIVAL_SHARE = 0.99


def arrival_window(submits: Sequence[float], share: float = ARRIVAL_SHARE) -> tuple[float, float]:
    """The shortest span of time holding `share` of the submissions `submits` (seconds; the
    earliest such span where several are as short): the window a trace's load is measured over,
    when sizing a network for it and when saying how busy a replay kept it. (0, 0) for none."""
    if not len(submits):
        return 0.0, 0.0
    times = np.sort(np.asarray(submits, dtype=float))
    inside = max(1, math.ceil(share * len(times)))
    spans = times[inside - 1 :] - times[: len(times) - inside + 1]
    first = int(np.argmin(spans))
    return float(times[first]), float(times[first + inside - 1])


def replicate(trace: Trace, copies: int) -> Trace:
    """The trace `copies` times over: copy k's jobs are named `<id>#k` and arrive k x
    COPY_OFFSET_S later; the same origins, durations and demands."""
    if copies < 1:
        raise InvalidValue("copies", copies, "a whole number >= 1", "不小于 1 的整数")
    if copies == 1:
        return trace
    jobs = [
        replace(j, id=f"{j.id}#{k}", submit_s=j.submit_s + k * COPY_OFFSET_S) if k else j
        for k in range(copies)
        for j in trace.jobs
    ]
    jobs.sort(key=lambda j: j.submit_s)
    return replace(trace, jobs=tuple(jobs))


def compress(trace: Trace, factor: float) -> Trace:
    """The trace with its arrivals `factor` times as fast (every submission time divided by it;
    the same jobs, durations, demands and origins): to calibrate a sizing by replay, when the
    busy share measured falls short of the one asked for."""
    checks.in_range("compression", factor, 1.0, 1e6)
    if factor == 1.0:
        return trace
    return replace(trace, jobs=tuple(replace(j, submit_s=j.submit_s / factor) for j in trace.jobs))


def size_for_utilisation(trace: Trace, utilisation: float) -> Sizing:
    """The network and load at which the trace keeps `utilisation` of the GPUs busy while it
    arrives (`arrival_window`: the span of 99% of its submissions), every job counted from its
    submission for its duration as if nothing waited (the offered load; durations on the
    reference device, stretched by the network's mean GPU against it).

    The network keeps its floor (MIN_SITE_GPUS a site, so that every site's A100 pool takes an
    8-GPU job and every latency tier has somewhere to go); where even the smallest network is
    too big for one copy of the trace, the trace is played `copies` times over (`replicate`),
    and the network is then sized for all copies. Jobs land on faster or slower GPUs than the
    mean and wait when pools are full, so the busy share each run reports (`busy_share_gpu`,
    over the same window) is the figure to quote; this sets the size. CPU pools follow each
    site's GPUs (CPU_CORES_PER_GPU cores a GPU), not the trace's CPU work."""
    checks.in_range("utilisation", utilisation, 0.0, 1.0, low_open=True)
    gpu_jobs = [j for j in trace.jobs if j.device_kind.lower() != "cpu"]
    if not gpu_jobs:
        raise InvalidValue(
            "utilisation", utilisation, "a trace with GPU jobs to size by", "含 GPU 作业的轨迹"
        )
    first, last = arrival_window([j.submit_s for j in trace.jobs])
    window = max(last - first, 3600.0)
    begin = np.array([j.submit_s - first for j in gpu_jobs])
    sites = _sites()
    # a job holds its devices for its reference duration x (reference peak / device peak): the
    # mean of that ratio over the network's GPUs, by count (the mix is the same at any scale)
    reference = find_device(REFERENCE_DEVICE["gpu"])
    ref_peak = reference.peak_flops[reference.resolve_precision(Precision.FP16)]
    stretch = weights = 0.0
    for name, count in next(iter(_gpu_counts(sites, 1.0).values()))[1]:
        device = find_device(name)
        stretch += count * ref_peak / device.peak_flops[device.resolve_precision(Precision.FP16)]
        weights += count
    stretch /= weights
    end = begin + np.array([j.duration_s for j in gpu_jobs]) * stretch
    devices = np.array([j.devices for j in gpu_jobs], dtype=float)
    overlap = np.minimum(end, window) - np.maximum(begin, 0.0)  # a stray early job: its tail
    once = float(np.sum(devices * np.maximum(overlap, 0.0)) / window)

    def gpus(scale: float) -> int:
        return sum(c for _, counts in _gpu_counts(sites, scale).values() for _, c in counts)

    smallest = gpus(0.0)
    copies = max(1, math.ceil(utilisation * smallest / once)) if once > 0 else 1
    needed = copies * once / utilisation
    low, high = 0.0, 1.0
    while gpus(high) < needed:
        high *= 2
    for _ in range(60):  # the least scale with enough GPUs
        middle = (low + high) / 2
        low, high = (low, middle) if gpus(middle) >= needed else (middle, high)
    return Sizing(utilisation, high, gpus(high), copies, copies * once, stretch)


def sized_for(trace: Trace, utilisation: float) -> tuple[Trace, Network, Sizing]:
    """The trace played `copies` times over and the network, as `size_for_utilisation` sizes
    them for `utilisation`."""
    sizing = size_for_utilisation(trace, utilisation)
    return replicate(trace, sizing.copies), national_network(sizing.scale), sizing


@dataclass(frozen=True)
class Calibration:
    """A sizing checked by replays (`calibrate`): what they measured, and how much faster the
    arrivals were then made to reach the busy share asked for."""

    sizing: Sizing
    measured: float  # the GPU busy share measured at `factor` (the replay closest to the ask)
    factor: float  # arrivals sped up this many times (`compress`; 1: as they were)
    sample_jobs: int  # the jobs each replay played (the first ones of the sized trace)
    replays: tuple[tuple[float, float], ...] = ()  # (factor, busy share measured), in order


CALIBRATION_TOLERANCE = 0.02  # a replay within this of the busy share asked for ends it
CALIBRATION_REPLAYS = 4


def _next_factor(replays: list[tuple[float, float]], utilisation: float) -> float:
    """The arrival speed-up to try next: the ratio asked/measured after one replay; then the
    straight line through the two replays that bracket the ask (or the last two), since the
    busy share grows faster than the speed-up once jobs spill from the fast GPUs to the slow
    ones. Never below 1, never more than four times the last try."""
    last_factor, last = replays[-1]
    guess = last_factor * utilisation / last if last > 0 else 4 * last_factor
    if len(replays) >= 2:
        below = [r for r in replays if r[1] < utilisation]
        above = [r for r in replays if r[1] > utilisation]
        if below and above:
            (f0, m0), (f1, m1) = max(below, key=lambda r: r[1]), min(above, key=lambda r: r[1])
        else:
            (f0, m0), (f1, m1) = replays[-2], replays[-1]
        if m1 != m0:
            guess = f0 + (utilisation - m0) * (f1 - f0) / (m1 - m0)
    return float(min(max(guess, 1.0), 4 * last_factor))


def calibrate(
    trace: Trace,
    utilisation: float,
    policy: str,
    *,
    sample_jobs: int | None = None,
    replays: int = CALIBRATION_REPLAYS,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Trace, Network, Calibration]:
    """The trace and network sized for `utilisation` (`size_for_utilisation`), calibrated by
    replays: the sizing counts every job on the network's mean GPU, but jobs prefer the fast
    GPUs, and wait where pools are full, so the busy share a replay measures falls short of
    the one asked for. The sized trace's first `sample_jobs` jobs (all by default: a bursty
    trace needs them all; a steady one is told by a prefix) are replayed under `policy`,
    without shifting, on the documented carbon shape, with arrivals sped up (`compress`) by
    the factor `_next_factor` picks, until a replay measures within CALIBRATION_TOLERANCE of
    the share asked for or `replays` replays are spent (never slowed: a factor of at least 1).
    The replay closest to the ask gives the factor. The share each later run measures is
    still the figure to quote."""
    checks.positive("replays", replays)
    sized, network, sizing = sized_for(trace, utilisation)
    sample = sized
    if sample_jobs is not None:
        checks.positive("sample_jobs", sample_jobs)
        sample = replace(sized, jobs=sized.jobs[:sample_jobs])
    tried: list[tuple[float, float]] = []
    factor = 1.0
    for _ in range(int(replays)):
        measured = run(compress(sample, factor), network, policy, progress=progress).metrics
        tried.append((factor, float(measured["busy_share_gpu"])))
        if abs(tried[-1][1] - utilisation) <= CALIBRATION_TOLERANCE or (
            tried[-1][1] > utilisation and factor == 1.0
        ):
            break
        factor = _next_factor(tried, utilisation)
        if any(abs(factor - f) < 1e-3 for f, _ in tried):
            break
    factor, measured_share = min(tried, key=lambda r: abs(r[1] - utilisation))
    calibration = Calibration(sizing, measured_share, factor, len(sample.jobs), tuple(tried))
    return compress(sized, factor), network, calibration


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
    carbon_kg: float = 0.0  # market-based (the site's declared green share counted)
    carbon_location_kg: float = 0.0  # location-based (the grid's intensity alone)
    latency_ms: float = 0.0
    data_moved_gb: float = 0.0
    reason: str = ""
    deferred_s: float = 0.0  # how long a WAIT decision deferred it
    deferred_from_s: float | None = None  # the start it had when it was deferred
    # realised carbon its deferral saved against starting at `deferred_from_s` on the site it
    # ran at (market-, location-based; with a carbon world only): the deferral's own effect,
    # apart from what a shifted schedule does to the placement of other work
    shift_saved_kg: float = 0.0
    shift_saved_location_kg: float = 0.0
    # its start decided while deferrable (with a carbon world only), judged on the realised
    # series at the site chosen: location-based kg the delay chosen saved against starting
    # then, and what the best delay within its deadline would have saved (perfect foresight on
    # the same decision; room ahead not counted); None: never decided while deferrable
    chose_saved_location_kg: float | None = None
    best_saved_location_kg: float | None = None
    chose_saved_kg: float = 0.0  # the same, market-based
    best_saved_kg: float = 0.0


@dataclass
class RunResult:
    policy: str
    metrics: dict[str, Any]
    outcomes: list[Outcome] = field(repr=False, default_factory=list)
    timeline: list[dict[str, float]] = field(repr=False, default_factory=list)


class TwinInvariantError(RuntimeError):
    """A run broke one of the invariants every run checks (a bug, never bad input)."""


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise TwinInvariantError(message)


def job_spec(job: TraceJob) -> dict[str, Any]:
    """A trace job as a platform task spec (the stored form `engine_task` reads): its duration
    is read as a duration on the platform's reference device, like `resources.duration_s`."""
    kind = job.device_kind.lower()
    resources: dict[str, Any] = {
        "devices": job.devices // job.nodes,  # on each node
        "device_kind": kind,
        "precision": job.precision or ("fp32" if kind == "cpu" else "fp16"),
        "duration_s": job.duration_s,
        "workload": "general",
    }
    if job.device_models:
        resources["device_models"] = list(job.device_models)
    if job.nodes > 1:
        resources["nodes"] = job.nodes
    return {
        "resources": resources,
        "origin": job.origin or "北京",
        "latency_tier": job.latency_tier,
        "data_gb": job.data_gb,
        "deadline_s": job.deadline_s,
        "deferrable": job.deferrable,
    }


def defer_batch(trace: Trace, slack_s: float) -> Trace:
    """Every batch job made deferrable: one without a deadline gets `duration_s + slack_s` (on
    the reference device) from its submission. For traces that carry no deferrable flag."""
    checks.non_negative("deferrable_slack_s", slack_s)
    jobs = tuple(
        replace(
            j,
            deferrable=True,
            deadline_s=j.duration_s + slack_s if j.deadline_s is None else j.deadline_s,
        )
        if j.latency_tier == "batch"
        else j
        for j in trace.jobs
    )
    return replace(trace, jobs=jobs)


def capacity_of(
    network: Network, free: Mapping[str, int], booked: Mapping[str, Booking] | None = None
) -> Capacity:
    """The twin's counters as the decision step's capacity: a pool's devices not free are held
    by the twin's running jobs (the twin models no other work and no engine queue); `booked`:
    job id -> the devices it holds ahead (running until its end, deferred from its hour)."""
    return Capacity(
        {p.id: PoolCapacity(count=p.count, held=p.count - free[p.id]) for p in network.pools},
        () if booked is None else tuple(booked.values()),
    )


def tick(
    queue: Sequence[QueuedTask],
    network: Network,
    free: Mapping[str, int],
    policy: Policy,
    clock: float,
    *,
    max_wait_s: float = DEFAULT_MAX_WAIT_S,
    snapshot: Snapshot | None = None,
    explain: bool = True,
    booked: Mapping[str, Booking] | None = None,
) -> tuple[Decision, ...]:
    """One scheduling tick of the twin: the decision step on the twin's own counters (`free`
    per pool, `booked` ahead) at `clock`. `snapshot`: `network.snapshot()`, when the caller has
    it already. `explain=False`: the same actions, without the reasons' counts (what a replay
    uses)."""
    return decide(
        queue,
        network.snapshot() if snapshot is None else snapshot,
        capacity_of(network, free, booked),
        policy,
        clock,
        max_wait_s=max_wait_s,
        explain=explain,
    )


def run(
    trace: Trace,
    network: Network,
    policy: str,
    *,
    tick_s: float = 60.0,
    max_wait_s: float = DEFAULT_MAX_WAIT_S,
    deferrable_slack_s: float | None = None,
    skip_stuck_ticks: bool = True,
    carbon: CarbonWorld | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> RunResult:
    """Replay `trace` on `network` under `policy`; deterministic for the same inputs.

    `deferrable_slack_s`: make every batch job deferrable (`defer_batch`).
    `skip_stuck_ticks`: False decides at every tick of the grid while tasks wait (slower; the
    same outcomes, which a test checks).
    `carbon`: realised carbon intensity that varies by day, and what the decision step sees of
    it (`suanli.sim.carbon`); every task's carbon is then counted on the realised series."""
    started = time.perf_counter()
    checks.positive("tick_s", tick_s)
    if deferrable_slack_s is not None:
        trace = defer_batch(trace, deferrable_slack_s)
    chosen = policy_named(policy)
    snapshot = network.snapshot()
    if carbon is not None and carbon.network is not network:
        raise InvalidValue(
            "carbon", "another network", "a carbon world built on this network", "同一网络"
        )
    outcomes = {job.id: Outcome(job) for job in trace.jobs}
    free = {p.id: p.free for p in network.pools}
    capacity = {p.id: p.count for p in network.pools}
    site_of = {p.id: p.site_id for p in network.pools}
    heap: list[tuple[float, int, int, str]] = []
    seq = 0
    ticks: set[float] = set()  # times of the ticks in the heap

    def push(at: float, kind: int, ident: str) -> None:
        nonlocal seq
        heapq.heappush(heap, (at, kind, seq, ident))
        seq += 1

    def want_tick(at: float) -> None:
        if at not in ticks:
            ticks.add(at)
            push(at, TICK, "tick")

    def grid(at: float) -> float:  # the first tick of the grid at or after `at`
        return math.ceil(at / tick_s) * tick_s

    for job in trace.jobs:
        push(job.submit_s, SUBMIT, job.id)
    queue: dict[str, QueuedTask] = {}  # in submission order
    booked: dict[str, Booking] = {}  # job id -> devices it holds ahead (running or deferred)
    # of everything placed so far (cost, market- and location-based carbon)
    totals = {"cost_fen": 0.0, "carbon_kg": 0.0, "carbon_location_kg": 0.0}
    gpu_pools = {p.id for p in network.pools if p.device.kind.value != "cpu"}
    events = calls = 0
    timeline: list[dict[str, float]] = []
    done = 0
    while heap:
        now, kind, _, ident = heapq.heappop(heap)
        events += 1
        if kind == FINISH:
            outcome = outcomes[ident]
            _check(outcome.pool is not None, f"{ident} finished without a pool")
            assert outcome.pool is not None  # for the type checker; checked above
            free[outcome.pool] += outcome.job.devices
            _check(free[outcome.pool] <= capacity[outcome.pool], f"pool {outcome.pool} overfreed")
            booked.pop(ident, None)
            outcome.state = "completed"
            done += 1
            if queue:  # capacity grew: decide at the next tick of the grid
                want_tick(grid(now))
        elif kind == SUBMIT:
            outcome = outcomes[ident]
            try:
                task = engine_task(ident, job_spec(outcome.job), now)
            except SuanliError as error:  # the platform refuses such a spec at submission
                outcome.state, outcome.reason = "rejected", error.one_line()
                done += 1
            else:
                queue[ident] = QueuedTask(task, now)
                want_tick(grid(now))
        elif not queue:  # a tick planned for a task that has gone since: nothing to decide
            ticks.discard(now)
        else:
            ticks.discard(now)
            calls += 1
            seen = snapshot if carbon is None else carbon.snapshot_at(now)
            # the bookings matter only to a deferral: without a deferrable task, none are built
            ahead = booked if any(q.task.deferrable for q in queue.values()) else None
            decisions = tick(
                list(queue.values()),
                network,
                free,
                chosen,
                now,
                max_wait_s=max_wait_s,
                snapshot=seen,
                explain=False,  # a replay never shows why a task waits: the same actions
                booked=ahead,
            )
            for decision in decisions:  # a job given up on keeps why it could not run
                if decision.action is Action.REJECT and decision.task in queue:
                    (why,) = tick(
                        [queue[decision.task]],
                        network,
                        free,
                        chosen,
                        now,
                        max_wait_s=math.inf,
                        snapshot=seen,
                        booked=ahead,
                    )
                    if why.action is Action.QUEUE:
                        outcomes[decision.task].reason = why.reason
            for decision in decisions:
                ended = _apply(
                    decision,
                    queue,
                    outcomes,
                    free,
                    booked,
                    totals,
                    push,
                    want_tick,
                    carbon,
                    seen.max_delay_h,
                )
                done += ended
            for pool_id, left in free.items():  # no pool ever runs more devices than it has
                _check(0 <= left <= capacity[pool_id], f"pool {pool_id} has {left} free devices")
            busy_gpus = sum(capacity[p] - free[p] for p in gpu_pools)
            busy = sum(capacity[p] - free[p] for p in capacity)
            timeline.append(
                {
                    "t": now,
                    "busy_devices": float(busy),
                    "busy_gpus": float(busy_gpus),
                    "busy_cpu_cores": float(busy - busy_gpus),
                    "queued": float(len(queue)),
                    "cost_fen": float(totals["cost_fen"]),
                    "carbon_kg": totals["carbon_kg"],
                    "carbon_location_kg": totals["carbon_location_kg"],
                }
            )
            if queue:
                if skip_stuck_ticks and _settled(decisions, queue):
                    # nothing can change a decision before a deferral ends (its tick is in the
                    # heap), a task's max wait is reached, a job finishes or one is submitted
                    # the queue is in submission order: its first task is the first to reach
                    # its max wait (that tick decides again, and plans the next such tick)
                    first = next(iter(queue.values()))
                    want_tick(_max_wait_tick(first.submitted_s, max_wait_s, tick_s, now))
                else:
                    want_tick(now + tick_s)
        if progress is not None and events % 500 == 0:
            progress(done, len(outcomes))
    _check(not queue, f"{len(queue)} tasks left in the queue")
    if progress is not None:
        progress(len(outcomes), len(outcomes))
    results = list(outcomes.values())
    metrics = _metrics(
        results, network, policy, events, time.perf_counter() - started, carbon is not None
    )
    metrics["decide_calls"] = calls
    metrics["carbon_basis"] = (
        "daily shape (synthetic, ESTIMATE), known to the decision step"
        if carbon is None
        else f"synthetic weather (ESTIMATE), decided on: {carbon.foresight.value}"
    )
    if carbon is not None and carbon.forecast_errors:
        # mean absolute percentage error of the day-ahead carbon forecasts (first 24 h)
        metrics["carbon_forecast_mape"] = float(np.mean(carbon.forecast_errors))
    _check(all(site_of[r.pool] == r.site for r in results if r.pool), "pool and site disagree")
    return RunResult(policy, metrics, results, timeline)


def _max_wait_tick(submitted_s: float, max_wait_s: float, tick_s: float, now: float) -> float:
    """The first tick of the grid at which a task submitted at `submitted_s` has waited longer
    than `max_wait_s` (the decision step's test is strict), and after `now`."""
    at = (math.floor((submitted_s + max_wait_s) / tick_s) + 1) * tick_s
    while at - submitted_s <= max_wait_s:
        at += tick_s
    return max(at, now + tick_s)


def _settled(decisions: Sequence[Decision], queue: Mapping[str, QueuedTask]) -> bool:
    """Whether the decision step, called again with this queue on the capacity left after
    `decisions`, would decide the same at any later clock until a job finishes, one is
    submitted, a deferral ends or a task's max wait is reached (so the twin may skip the grid's
    ticks in between; docs/twin.md says why this is exact).

    False when a task was left queued with a price ceiling (the one constraint that may loosen
    as the hour turns), or beside a task deferred in the same call (WAIT with a placement: within
    one call its devices were kept from the tasks decided after it, and the next call offers
    them again)."""
    queued = [d for d in decisions if d.action is Action.QUEUE]
    if any(queue[d.task].task.max_price_fen is not None for d in queued):
        return False
    deferred = any(d.action is Action.WAIT and d.placement is not None for d in decisions)
    return not (queued and deferred)


def _judge_delay(
    outcome: Outcome, task: Task, placement: Placement, carbon: CarbonWorld, max_delay_h: int
) -> None:
    """Judge the delay the decision step chose for a deferrable task (its first decision) on
    the realised series at the site it chose: what that delay saved against starting now, and
    what the best whole-hour delay within its deadline would have saved (the engine's choice
    set: 0..max_delay_h, ending by the deadline). Paired on one decision, so free of how a
    shifted schedule moves other work."""
    if outcome.chose_saved_location_kg is not None:
        return
    b = placement.breakdown
    now_end = placement.end_s - placement.waited_s  # its end had it started now
    deadline = math.inf if task.deadline_s is None else task.deadline_s
    ends = now_end + np.arange(max_delay_h + 1) * 3600.0
    ends = np.append(ends[(ends <= deadline) | (ends == now_end)], placement.end_s)
    emitted = carbon.emitted_by(placement.site, ends, b.duration_s, b.energy_kwh)
    outcome.chose_saved_location_kg = float(emitted[0] - emitted[-1])  # the last: its choice
    outcome.best_saved_location_kg = float(emitted[0] - emitted[:-1].min())
    market = 1.0 - carbon.network.sites[placement.site].green_share
    outcome.chose_saved_kg = outcome.chose_saved_location_kg * market
    outcome.best_saved_kg = outcome.best_saved_location_kg * market


def _apply(
    decision: Decision,
    queue: dict[str, QueuedTask],
    outcomes: dict[str, Outcome],
    free: dict[str, int],
    booked: dict[str, Booking],
    totals: dict[str, float],
    push: Callable[[float, int, str], None],
    want_tick: Callable[[float], None],
    carbon: CarbonWorld | None = None,
    max_delay_h: int = 0,
) -> int:
    """Carry out one decision on the twin's state; 1 if it ended the job (REJECT), else 0.
    With `carbon`, the job's carbon is what it emits on the realised series."""
    outcome = outcomes[decision.task]
    queued = queue[decision.task]
    if decision.action is Action.PLACE:
        placement = decision.placement
        _check(placement is not None, f"{decision.task}: PLACE without a placement")
        assert placement is not None  # for the type checker; checked above
        b = placement.breakdown
        outcome.state, outcome.pool, outcome.site = "running", placement.pool, placement.site
        outcome.start_s, outcome.end_s = placement.start_s, placement.end_s
        outcome.cost_fen, outcome.energy_kwh, outcome.carbon_kg = (
            b.cost_fen,
            b.energy_kwh,
            b.carbon_kg,
        )
        outcome.carbon_location_kg = b.carbon_location_kg
        if carbon is not None:
            outcome.carbon_location_kg = carbon.emitted(
                placement.site, placement.end_s, b.duration_s, b.energy_kwh
            )
            green = carbon.network.sites[placement.site].green_share
            outcome.carbon_kg = outcome.carbon_location_kg * (1.0 - green)
            if outcome.deferred_from_s is not None:
                earlier = placement.end_s - (placement.start_s - outcome.deferred_from_s)
                then = carbon.emitted(placement.site, earlier, b.duration_s, b.energy_kwh)
                outcome.shift_saved_location_kg = then - outcome.carbon_location_kg
                outcome.shift_saved_kg = outcome.shift_saved_location_kg * (1.0 - green)
            if queued.task.deferrable:  # decided to start now while it could wait
                _judge_delay(outcome, queued.task, placement, carbon, max_delay_h)
        outcome.latency_ms = b.latency_ms
        outcome.data_moved_gb = outcome.job.data_gb if b.transfer_s > 0 else 0.0
        outcome.reason = ""
        free[placement.pool] -= queued.task.devices
        _check(free[placement.pool] >= 0, f"pool {placement.pool} over capacity")
        totals["cost_fen"] += b.cost_fen
        totals["carbon_kg"] += outcome.carbon_kg
        totals["carbon_location_kg"] += outcome.carbon_location_kg
        push(placement.end_s, FINISH, decision.task)
        booked[decision.task] = Booking(
            placement.pool, queued.task.devices, placement.start_s, placement.end_s
        )
        del queue[decision.task]
    elif decision.action is Action.WAIT:
        if carbon is not None and queued.task.deferrable and decision.placement is not None:
            _judge_delay(outcome, queued.task, decision.placement, carbon, max_delay_h)
        at = decision.not_before_s
        _check(at is not None, f"{decision.task}: WAIT without a time")
        assert at is not None  # for the type checker; checked above
        if queued.not_before_s != at:  # a new deferral: decide again at that time
            # never deferred twice: the decision step would clear the flag at every call from
            # then on (the same decisions; the flag is read only once the deferral is over)
            task = replace(queued.task, deferrable=False)
            pool = None if decision.placement is None else decision.placement.pool
            queue[decision.task] = replace(queued, task=task, not_before_s=at, booked_pool=pool)
            want_tick(at)
            if decision.placement is not None:  # its pool's devices, from its hour
                booked[decision.task] = Booking(
                    decision.placement.pool,
                    queued.task.devices,
                    decision.placement.start_s,
                    decision.placement.end_s,
                )
        if decision.placement is not None:
            outcome.deferred_s = decision.placement.waited_s
            if outcome.deferred_from_s is None:
                outcome.deferred_from_s = decision.placement.start_s - outcome.deferred_s
        outcome.reason = decision.reason
    elif decision.action is Action.QUEUE:
        outcome.reason = decision.reason
        booked.pop(decision.task, None)  # its hour came and went: it holds nothing ahead
    else:
        booked.pop(decision.task, None)
        last = f" (last reason: {outcome.reason})" if outcome.reason else ""
        outcome.state, outcome.reason = "rejected", decision.reason + last
        del queue[decision.task]
        return 1
    return 0


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


def _share(part: float, whole: float) -> float:
    return part / whole if whole > 0 else 0.0


def _metrics(
    results: list[Outcome],
    network: Network,
    policy: str,
    events: int,
    wall_s: float,
    carbon_world: bool = False,
) -> dict[str, Any]:
    completed = [r for r in results if r.state == "completed"]
    rejected = [r for r in results if r.state == "rejected"]
    _check(len(completed) + len(rejected) == len(results), "every task ends exactly once")
    reasons: dict[str, int] = {}
    for r in rejected:
        key = "waited too long" if r.reason.startswith("waited too long") else r.reason
        key = key.split(":")[0]
        reasons[key] = reasons.get(key, 0) + 1
    energy = sum(r.energy_kwh for r in completed)
    carbon = sum(r.carbon_kg for r in completed)
    work = sum(r.job.duration_s * r.job.devices for r in completed)
    device_hours: dict[str, float] = {}
    hours_by = {"gpu": 0.0, "cpu": 0.0}  # GPU-hours and CPU core-hours, never added together
    west_by = {"gpu": 0.0, "cpu": 0.0}
    # how busy the network was while the trace arrived (`arrival_window`; a long job's tail
    # after the last arrival, or months of stray early jobs, would otherwise dilute it)
    window = arrival_window([r.job.submit_s for r in results])
    in_window = {"gpu": 0.0, "cpu": 0.0}
    for r in completed:
        _check(r.start_s is not None and r.end_s is not None, f"{r.job.id} has no times")
        assert r.start_s is not None and r.end_s is not None and r.site is not None  # types
        hours = (r.end_s - r.start_s) * r.job.devices / 3600
        device_hours[r.site] = device_hours.get(r.site, 0.0) + hours
        kind = "cpu" if r.job.device_kind.lower() == "cpu" else "gpu"
        hours_by[kind] += hours
        overlap = min(r.end_s, window[1]) - max(r.start_s, window[0])
        in_window[kind] += max(0.0, overlap) * r.job.devices / 3600
        if network.sites[r.site].east_west == "west":
            west_by[kind] += hours
    span_h = max((r.end_s or 0.0) for r in completed) / 3600 if completed else 0.0
    capacity = {
        sid: sum(p.count for p in network.pools if p.site_id == sid) for sid in network.sites
    }
    devices_by = {
        "gpu": sum(p.count for p in network.pools if p.device.kind.value != "cpu"),
        "cpu": sum(p.count for p in network.pools if p.device.kind.value == "cpu"),
    }
    window_h = (window[1] - window[0]) / 3600
    waits = [(r.start_s or 0.0) - r.job.submit_s for r in completed]
    latencies = [r.latency_ms for r in completed]
    violations = {
        tier: sum(1 for r in completed if r.job.latency_tier == tier and _violated(r))
        for tier in ("interactive", "standard", "batch")
    }
    return {
        "policy": policy,
        "tasks_total": len(results),
        "tasks_completed": len(completed),
        "tasks_rejected": len(rejected),
        "tasks_deferred": sum(1 for r in completed if r.deferred_s > 0),
        # each deferrable task's first decision judged on the realised series (`_judge_delay`)
        "delay_saved_kg": sum(r.chose_saved_kg for r in completed) if carbon_world else None,
        "delay_best_kg": sum(r.best_saved_kg for r in completed) if carbon_world else None,
        "delay_saved_location_kg": (
            sum(r.chose_saved_location_kg or 0.0 for r in completed) if carbon_world else None
        ),
        "delay_best_location_kg": (
            sum(r.best_saved_location_kg or 0.0 for r in completed) if carbon_world else None
        ),
        # what the deferrals themselves saved on the realised carbon (None without a carbon
        # world): each deferred task against its own start when it was deferred, same site
        "shift_saved_kg": sum(r.shift_saved_kg for r in completed) if carbon_world else None,
        "shift_saved_location_kg": (
            sum(r.shift_saved_location_kg for r in completed) if carbon_world else None
        ),
        "rejected_reasons": reasons,
        "cost_fen": sum(r.cost_fen for r in completed),
        "energy_kwh": energy,
        "carbon_kg": carbon,
        "carbon_location_kg": sum(r.carbon_location_kg for r in completed),
        "ceps": None if carbon == 0 else work / carbon,
        "ceps_unit": "reference device-seconds per kg CO2 (unofficial)",
        "wait_s_p50": _percentile(waits, 50),
        "wait_s_p99": _percentile(waits, 99),
        "latency_ms_mean": float(np.mean(latencies)) if completed else 0.0,
        "latency_ms_p50": _percentile(latencies, 50),
        "latency_ms_p99": _percentile(latencies, 99),
        "sla_violations": violations,
        "utilisation": {
            sid: _share(device_hours.get(sid, 0.0), capacity[sid] * span_h) for sid in network.sites
        },
        # how busy the network was: device-hours used over device-hours there while the trace
        # arrived (first to last submission), GPUs and CPU cores apart
        "busy_share_gpu": _share(in_window["gpu"], devices_by["gpu"] * window_h),
        "busy_share_cpu": _share(in_window["cpu"], devices_by["cpu"] * window_h),
        "gpu_hours": hours_by["gpu"],
        "cpu_core_hours": hours_by["cpu"],
        "west_share_gpu_hours": _share(west_by["gpu"], hours_by["gpu"]),
        "west_share_cpu_core_hours": _share(west_by["cpu"], hours_by["cpu"]),
        "data_moved_gb": sum(r.data_moved_gb for r in completed),
        "wall_s": wall_s,
        "events": events,
        "events_per_s": events / wall_s if wall_s else 0.0,
    }
