"""The task x pool matrices: every constraint and objective, vectorised with NumPy.

Owns the translation of a `Snapshot` and a list of `Task`s into arrays, and `evaluate(...)`,
which for a block of tasks returns the named constraint masks, the raw objectives and the
policy score of every (task, pool) pair. Both solvers (greedy and optimal) and the reasons for
unplaced tasks read these same matrices, so they can never disagree on what is allowed.

Conventions: rows are tasks, columns pools, in snapshot order. A pool whose device has no
figure for the task's precision (after the widening fallback) gets peak 0 and fails the
`precision` constraint. Money is computed in float fen here and rounded once per placement.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cache
from typing import Any

import numpy as np
import numpy.typing as npt

from suanli.catalog import Place, Pool, latency
from suanli.errors import SuanliError
from suanli.metering import EFFICIENCY, DeviceKind, DeviceProfile, Precision, all_devices
from suanli.scheduler.model import FloatArray, LatencyTier, Objective, Policy, Snapshot, Task

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

PRECISIONS = list(Precision)
KINDS = list(DeviceKind)
TIERS = list(LatencyTier)

# Constraint names, in the order a pool is checked; a rejected pool is counted under the first
# constraint it fails. `free capacity` is checked at decision time, after all static ones.
CONSTRAINTS = (
    "device kind",
    "device model",
    "precision",
    "memory",
    "pool size",
    "nodes",
    "latency tier",
    "residency",
    "deadline",
    "price ceiling",
)
FREE_CAPACITY = "free capacity"
# The constraints a task's class decides (kind, precision, models, residency): the greedy
# solver scores a class only on the pools that pass them ("same_class" evaluation).
SAME_CLASS = ("device kind", "device model", "precision", "residency")


def _province_bits(provinces: Sequence[str], index: dict[str, int]) -> int:
    bits = 0
    for province in provinces:
        bits |= 1 << index.setdefault(province, len(index))
    return bits


@dataclass(frozen=True)
class PoolArrays:
    """Per-pool and per-site columns of a snapshot."""

    ids: list[str]
    site_ids: list[str]
    site_of_pool: IntArray  # (P,) index into sites
    kind: IntArray  # (P,)
    device_index: IntArray  # (P,) index into all_devices()
    peak: FloatArray  # (n_precisions, P) FLOP/s after the widening fallback, 0 = none
    precision_used: IntArray  # (n_precisions, P) index of the precision whose figure is used
    memory_gb: FloatArray  # (P,) inf for CPUs (host memory not modelled), -1 unknown
    count: IntArray
    free: IntArray
    node_devices: FloatArray  # (P,) devices of one node; inf where not known
    node_count: FloatArray  # (P,) whole nodes; inf where not known
    price_fen_per_device_hour: FloatArray
    tdp_kw: FloatArray
    energy_billed: BoolArray
    compute_prefix: FloatArray | None  # (P, 25) prefix sums of hour-of-day multipliers
    site_pue: FloatArray  # (S,)
    site_green: FloatArray
    site_price_cny: FloatArray
    site_reputation: FloatArray
    site_province_bits: IntArray
    site_places: list[Place]
    energy_prefix: FloatArray  # (S, L+1) prefix sums of the hourly energy-price multipliers
    carbon_prefix: FloatArray  # (S, L+1) prefix sums of hourly carbon intensity
    site_energy_flat: BoolArray  # (S,) the energy-price series is constant
    site_carbon_flat: BoolArray  # (S,) the carbon series is constant
    site_carbon_first: FloatArray  # (S,) first hour's intensity (the value, when flat)
    pool_has_tou: BoolArray  # (P,) the pool has hour-of-day compute multipliers
    series_hours: int  # L
    province_index: dict[str, int]

    @property
    def n_pools(self) -> int:
        return len(self.ids)


def _prefix(series: FloatArray) -> FloatArray:
    return np.concatenate(([0.0], np.cumsum(series)))


def _device_columns(device: DeviceProfile) -> tuple[FloatArray, IntArray]:
    """A device's peak (0 = no figure) and the precision used, for every asked precision."""
    return _catalog_columns(device.id) if device.id in _catalog_ids() else _columns(device)


@cache
def _catalog_ids() -> frozenset[str]:
    return frozenset(d.id for d in all_devices())


@cache
def _catalog_columns(device_id: str) -> tuple[FloatArray, IntArray]:
    return _columns(next(d for d in all_devices() if d.id == device_id))


def _columns(device: DeviceProfile) -> tuple[FloatArray, IntArray]:
    peak = np.zeros(len(PRECISIONS))
    used = np.zeros(len(PRECISIONS), dtype=np.int64)
    for i, precision in enumerate(PRECISIONS):
        try:
            resolved = device.resolve_precision(precision)
        except SuanliError:  # no figure: the precision constraint rejects it
            continue
        peak[i] = device.peak_flops[resolved]
        used[i] = PRECISIONS.index(resolved)
    return peak, used


@cache
def _latency(origin: Place, site: Place) -> tuple[float, float]:
    found = latency(origin, site)
    return found.rtt_ms, found.distance_km


# Columns that do not change from one decision to the next: the sites' (series prefix sums,
# PUE, price...) while the snapshot keeps the same sites, series and reputation objects, and the
# pools' devices and prices while the pools are the same (only their count and free change).
# Snapshots are immutable by contract; a few entries serve callers that alternate networks.
_SITE_COLUMNS: list[tuple[object, object, object, dict[str, Any]]] = []
_POOL_COLUMNS: dict[tuple[Any, ...], dict[str, Any]] = {}
_CACHE_LOCK = threading.Lock()  # a server's pass and its quotes may place at the same time
CACHED_NETWORKS = 4


def _site_columns(snapshot: Snapshot) -> dict[str, Any]:
    with _CACHE_LOCK:
        for sites_, series_, reputation_, found in _SITE_COLUMNS:
            if (
                sites_ is snapshot.sites
                and series_ is snapshot.series
                and reputation_ is snapshot.reputation
            ):
                return found
    site_ids = sorted(snapshot.sites)
    province_index: dict[str, int] = {}
    sites = [snapshot.sites[s] for s in site_ids]
    lengths = {len(snapshot.series[s].carbon_kg_per_kwh) for s in site_ids if s in snapshot.series}
    lengths |= {
        len(snapshot.series[s].energy_price_multiplier) for s in site_ids if s in snapshot.series
    }
    hours = max(lengths) if lengths else 24
    energy_rows, carbon_rows, energy_flat, carbon_flat, carbon_first = [], [], [], [], []
    for site in sites:
        series = snapshot.series.get(site.id)
        if series is None:
            energy = np.ones(hours)
            carbon = np.full(hours, site.grid_kgco2_per_kwh)
        else:
            energy = np.resize(series.energy_price_multiplier, hours)
            carbon = np.resize(series.carbon_kg_per_kwh, hours)
        energy_rows.append(_prefix(energy))
        carbon_rows.append(_prefix(carbon))
        energy_flat.append(bool(np.all(energy == energy[0])) and energy[0] == 1.0)
        carbon_flat.append(bool(np.all(carbon == carbon[0])))
        carbon_first.append(float(carbon[0]))
    columns: dict[str, Any] = {
        "site_ids": site_ids,
        "site_pue": np.array([s.pue for s in sites]),
        "site_green": np.array([s.green_share for s in sites]),
        "site_price_cny": np.array([s.price_cny_per_kwh for s in sites]),
        "site_reputation": np.array([snapshot.reputation.get(s.id, 1.0) for s in sites]),
        "site_province_bits": np.array(
            [_province_bits(s.provinces, province_index) for s in sites], dtype=np.int64
        ),
        "site_places": [s.place for s in sites],
        "energy_prefix": np.stack(energy_rows) if energy_rows else np.zeros((0, hours + 1)),
        "carbon_prefix": np.stack(carbon_rows) if carbon_rows else np.zeros((0, hours + 1)),
        "series_hours": hours,
        "site_energy_flat": np.array(energy_flat, dtype=bool),
        "site_carbon_flat": np.array(carbon_flat, dtype=bool),
        "site_carbon_first": np.array(carbon_first),
        "province_index": province_index,
    }
    with _CACHE_LOCK:
        _SITE_COLUMNS.insert(0, (snapshot.sites, snapshot.series, snapshot.reputation, columns))
        del _SITE_COLUMNS[CACHED_NETWORKS:]
    return columns


def _pool_columns(pools: Sequence[Pool], site_ids: list[str]) -> dict[str, Any]:
    key = (
        tuple(site_ids),
        *(
            (
                p.id,
                p.site_id,
                p.device.id,  # the registry's ids are unique
                p.price_fen_per_device_hour,
                p.energy_billed_separately,
                p.tou_multipliers,
            )
            for p in pools
        ),
    )
    with _CACHE_LOCK:
        found = _POOL_COLUMNS.get(key)
    if found is not None:
        return found
    devices = all_devices()
    device_pos = {d.id: i for i, d in enumerate(devices)}
    site_pos = {s: i for i, s in enumerate(site_ids)}
    n = len(pools)
    peak = np.zeros((len(PRECISIONS), n))
    used = np.zeros((len(PRECISIONS), n), dtype=np.int64)
    for j, pool in enumerate(pools):
        peak[:, j], used[:, j] = _device_columns(pool.device)
    memory = np.array(
        [
            np.inf
            if p.device.kind is DeviceKind.CPU
            else (-1.0 if p.device.memory_gb is None else p.device.memory_gb)
            for p in pools
        ]
    )
    tdp = np.array([np.nan if p.device.tdp_w is None else p.device.tdp_w / 1000 for p in pools])
    # a device without a published TDP cannot be metered: treat it as having no figure
    peak[:, np.isnan(tdp)] = 0.0
    tou_rows = [p.tou_multipliers for p in pools]
    compute_prefix = None
    if any(t is not None for t in tou_rows):
        compute_prefix = np.stack(
            [_prefix(np.array(t if t is not None else [1.0] * 24, dtype=float)) for t in tou_rows]
        )
    columns: dict[str, Any] = {
        "ids": [p.id for p in pools],
        "site_of_pool": np.array([site_pos[p.site_id] for p in pools], dtype=np.int64),
        "kind": np.array([KINDS.index(p.device.kind) for p in pools], dtype=np.int64),
        "device_index": np.array([device_pos[p.device.id] for p in pools], dtype=np.int64),
        "peak": peak,
        "precision_used": used,
        "memory_gb": memory,
        "price_fen_per_device_hour": np.array(
            [float(p.price_fen_per_device_hour or 0) for p in pools]
        ),
        "tdp_kw": np.nan_to_num(tdp, nan=0.0),
        "energy_billed": np.array([p.energy_billed_separately for p in pools], dtype=bool),
        "compute_prefix": compute_prefix,
        "pool_has_tou": np.array([t is not None for t in tou_rows], dtype=bool),
    }
    with _CACHE_LOCK:
        while len(_POOL_COLUMNS) >= CACHED_NETWORKS:
            _POOL_COLUMNS.pop(next(iter(_POOL_COLUMNS)))
        _POOL_COLUMNS[key] = columns
    return columns


def pool_arrays(snapshot: Snapshot) -> PoolArrays:
    sites = _site_columns(snapshot)
    pools = snapshot.pools
    per_node = np.array(
        [np.inf if p.devices_per_node is None else p.devices_per_node for p in pools], dtype=float
    )
    count = np.array([p.count for p in pools], dtype=np.int64)
    return PoolArrays(
        **_pool_columns(pools, sites["site_ids"]),
        **sites,
        count=count,
        free=np.array([p.free for p in pools], dtype=np.int64),
        node_devices=per_node,
        node_count=np.where(np.isfinite(per_node), np.floor(count / per_node), np.inf),
    )


def fits_nodes(t: TaskArrays, rows: slice | IntArray, p: PoolArrays, pc: IntArray) -> BoolArray:
    """Whether each task of `rows` fits pools `pc` node by node: its share of devices on each
    of its nodes within one node, and no more nodes than the pool has (a gang is placed whole
    on one pool or not at all). Always true on pools whose node size is not known."""
    nodes = t.nodes[rows, None]
    fits: BoolArray = (t.devices[rows, None] <= p.node_devices[pc] * nodes) & (
        nodes <= p.node_count[pc]
    )
    return fits


@dataclass(frozen=True)
class TaskArrays:
    """Per-task columns, plus the origin x site latency and distance tables."""

    ids: list[str]
    devices: IntArray
    nodes: IntArray  # the distinct nodes `devices` are split over (1: one node)
    kind: IntArray
    precision: IntArray
    work_flop: FloatArray
    efficiency: FloatArray
    memory_gb: FloatArray
    data_gb: FloatArray
    deadline_s: FloatArray  # inf where none
    max_price_fen: FloatArray  # inf where none
    tier_rtt_ms: FloatArray
    origin: IntArray  # index into origin_places
    data_origin: IntArray  # where each task's data lives: index into origin_places
    model_bits: IntArray  # bit i set = all_devices()[i] allowed
    province_bits: IntArray  # -1 = anywhere
    deferrable: BoolArray
    origin_places: list[Place]
    rtt_ms: FloatArray  # (O, S)
    distance_km: FloatArray  # (O, S)
    # the normalisation of a policy of several objectives (`task_scales`), once computed
    scales: Scales | None = None

    @property
    def n_tasks(self) -> int:
        return len(self.ids)


def groups_of(labels: IntArray) -> list[IntArray]:
    """The indices of each label's members, labels ascending, members in order (the tasks of
    each class, by `class_of`)."""
    order = np.argsort(labels, kind="stable")
    cuts = np.flatnonzero(np.diff(labels[order])) + 1
    return [members for members in np.split(order, cuts) if len(members)]


def run_starts(keys: IntArray) -> IntArray:
    """Where each run of equal values of sorted `keys` starts (the first arc of each task)."""
    return np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])


def subset_tasks(t: TaskArrays, rows: IntArray) -> TaskArrays:
    """The tasks `rows` of `t`, in that order (origins and their tables kept whole)."""
    per_task = {
        name: getattr(t, name)[rows]
        for name in (
            "devices",
            "nodes",
            "kind",
            "precision",
            "work_flop",
            "efficiency",
            "memory_gb",
            "data_gb",
            "deadline_s",
            "max_price_fen",
            "tier_rtt_ms",
            "origin",
            "data_origin",
            "model_bits",
            "province_bits",
            "deferrable",
        )
    }
    scales = None if t.scales is None else t.scales.rows(rows)
    return replace(t, ids=[t.ids[i] for i in rows.tolist()], scales=scales, **per_task)


# The objectives a policy of several normalises (`task_scales`); load and reputation are
# fractions already.
NORMALISED = (
    Objective.COST,
    Objective.CARBON,
    Objective.CARBON_LOCATION,
    Objective.LATENCY,
    Objective.DISTANCE,
)
# The objectives proportional to a task's work at a pool (per unit of work in `ClassFeatures`)
PER_WORK = (Objective.COST, Objective.CARBON, Objective.CARBON_LOCATION)
_RAW_ONLY = Policy("raw", {Objective.COST: 1.0})  # the representatives' raw values only


@dataclass(frozen=True)
class Scales:
    """How a policy of several objectives normalises some tasks (`task_scales`): per
    normalised objective, each task's low end and span."""

    low: dict[Objective, FloatArray]
    span: dict[Objective, FloatArray]

    def bounds(self, objective: Objective) -> tuple[FloatArray, FloatArray]:
        return self.low[objective], self.span[objective]

    def rows(self, rows: slice | IntArray) -> Scales:
        return Scales(
            {o: v[rows] for o, v in self.low.items()}, {o: v[rows] for o, v in self.span.items()}
        )


def task_classes(t: TaskArrays) -> tuple[IntArray, IntArray]:
    """Each task's scoring class and one task of each class: tasks of a class share their
    origin, where their data lives, latency tier, device kind and precision, so they have the
    same objectives per unit of work at every pool, and the same pools open to them but for
    models and residency."""
    tiers, tier = np.unique(t.tier_rtt_ms, return_inverse=True)
    places = len(t.origin_places)
    key = ((t.origin * places + t.data_origin) * len(tiers) + tier.reshape(-1)) * len(KINDS)
    key = key + t.kind
    key = key * len(PRECISIONS) + t.precision
    _, first, class_of = np.unique(key, return_index=True, return_inverse=True)
    return class_of.reshape(-1), first


@dataclass(frozen=True)
class ClassFeatures:
    """What tasks of a class (`task_classes`) share: per class x pool, the pools open to it
    (kind, precision, latency tier; models and residency are the task's) and its objectives
    per unit of work (work / workload efficiency) at `now`, with the least each can be over
    the price and carbon series (`*_low`), the transfer fee per GB of data, RTT and distance.
    Carbon comes on both bases: market-based (`unit_carbon`, the grid's intensity x (1 - the
    site's green share)) and location-based (`unit_carbon_location`, the intensity alone)."""

    class_of: IntArray  # (n_tasks,)
    first: IntArray  # (K,) a task of each class
    open_: BoolArray  # (K, M)
    unit_cost: FloatArray  # (K, M) fen
    unit_cost_low: FloatArray
    unit_carbon: FloatArray  # (K, M) kg, market-based
    unit_carbon_low: FloatArray
    unit_carbon_location: FloatArray  # (K, M) kg, location-based
    unit_carbon_location_low: FloatArray
    fee_gb: FloatArray  # (K, M) fen per GB
    moves: BoolArray  # (K, M) whether the class's data moves to the pool's site
    rtt_ms: FloatArray  # (K, M)
    distance_km: FloatArray  # (K, M)


def _low_ratio(prefix: FloatArray, rows: IntArray, hour: float) -> FloatArray:
    """Per row of an hourly periodic series (as prefix sums): its least value over its value
    in `hour` (1 where that is 0)."""
    series = np.diff(prefix[rows], axis=-1)
    at = series[..., math.floor(hour) % series.shape[-1]]
    low = series.min(axis=-1)
    return np.where(at > 0, low / np.where(at > 0, at, 1.0), 1.0)


def class_features(t: TaskArrays, p: PoolArrays, snapshot: Snapshot, now: float) -> ClassFeatures:
    """`ClassFeatures` of the tasks of `t`."""
    class_of, first = task_classes(t)
    # cost and carbon of a unit of work at each pool depend on the precision only: one
    # representative per precision, of no data and without per-task constraints
    precisions, rep_of_class = np.unique(t.precision[first], return_inverse=True)
    reps = subset_tasks(t, first[np.unique(rep_of_class, return_index=True)[1]])
    k = len(precisions)
    unit = replace(
        reps,
        model_bits=np.full(k, ALL_BITS, dtype=np.int64),
        province_bits=np.full(k, -1, dtype=np.int64),
        devices=np.ones(k, dtype=np.int64),
        nodes=np.ones(k, dtype=np.int64),
        work_flop=reps.efficiency.astype(float),
        memory_gb=np.zeros(k),
        data_gb=np.zeros(k),
        deadline_s=np.full(k, np.inf),
        max_price_fen=np.full(k, np.inf),
        tier_rtt_ms=np.full(k, np.inf),
        scales=None,
    )
    ev = evaluate(unit, slice(None), p, snapshot, _RAW_ONLY, now)
    row = rep_of_class.reshape(-1)
    shape = ev.feasible.shape

    def per_class(values: FloatArray) -> FloatArray:
        return np.broadcast_to(values, shape)[row]

    # the least each can be: each part at the least of its series over its value now
    hour = (now - snapshot.series_start_s) / 3600.0
    pools = np.arange(p.n_pools)
    compute_low = ev.compute_fen
    if p.compute_prefix is not None:
        local = hour + snapshot.local_hour_at_start
        compute_low = compute_low * _low_ratio(p.compute_prefix, pools, local)[None, :]
    energy_low = ev.energy_fen * _low_ratio(p.energy_prefix, p.site_of_pool, hour)[None, :]
    # the green share scales both bases alike: the same ratio of least to now
    carbon_ratio = _low_ratio(p.carbon_prefix, p.site_of_pool, hour)
    origin, site = t.origin[first][:, None], p.site_of_pool[None, :]
    rtt = t.rtt_ms[origin, site]
    distance = t.distance_km[origin, site]
    moves = t.distance_km[t.data_origin[first][:, None], site] > 0
    return ClassFeatures(
        class_of=class_of,
        first=first,
        open_=(t.kind[first][:, None] == p.kind[None, :])
        & (p.peak[t.precision[first]] > 0)
        & (rtt <= t.tier_rtt_ms[first][:, None]),
        unit_cost=per_class(ev.raw[Objective.COST]),
        unit_cost_low=per_class(compute_low + energy_low),
        unit_carbon=per_class(ev.raw[Objective.CARBON]),
        unit_carbon_low=per_class(ev.raw[Objective.CARBON] * carbon_ratio),
        unit_carbon_location=per_class(ev.raw[Objective.CARBON_LOCATION]),
        unit_carbon_location_low=per_class(ev.raw[Objective.CARBON_LOCATION] * carbon_ratio),
        # charged where the data moves (as `evaluate`)
        fee_gb=np.where(moves, snapshot.transfer_fen_per_gb, 0.0),
        moves=moves,
        rtt_ms=rtt,
        distance_km=distance,
    )


def task_scales(
    t: TaskArrays,
    p: PoolArrays,
    snapshot: Snapshot,
    now: float,
    rows: slice | IntArray | None = None,
    features: ClassFeatures | None = None,
) -> Scales:
    """How a policy of several objectives normalises each task's cost, carbon (market- and
    location-based), latency and distance (of `rows` of `t`, or all): to [0, 1] over the pools
    open to the task's class (`task_classes`: those of its kind and precision within its
    latency tier; models and residency left aside, so that few classes cover a batch), 0 at the
    class's best pool and 1 at its worst, for the task's size.

    From `class_features` (at `now`): a task's cost spans its work x its class's range of
    unit cost + its data x its class's range of transfer fees per GB; its carbon (on either
    basis) its work x its class's range of unit carbon on that basis; latency and distance its
    class's ranges. So a task's normalised score at one pool needs no other pool (the flow
    solver scores only the pools worth scoring), and a task's own deadline, memory or price
    ceiling never rescales its objectives. Values outside [0, 1] remain where the run's
    time-of-use or carbon window differs from the hour at `now`. A zero span counts as 1.
    """
    if rows is not None:
        t = subset_tasks(t, np.arange(t.n_tasks)[rows])
    f = class_features(t, p, snapshot, now) if features is None else features
    ranges = {
        Objective.COST: _range(f.unit_cost, f.open_),
        Objective.CARBON: _range(f.unit_carbon, f.open_),
        Objective.CARBON_LOCATION: _range(f.unit_carbon_location, f.open_),
        Objective.LATENCY: _range(f.rtt_ms, f.open_),
        Objective.DISTANCE: _range(f.distance_km, f.open_),
    }
    fee_low, fee_high = _range(f.fee_gb, f.open_)
    work = t.work_flop / t.efficiency
    c = f.class_of
    low, span = {}, {}
    for objective in NORMALISED:
        least, most = ranges[objective]
        task_low, task_high = least[c], most[c]
        if objective in PER_WORK:
            task_low, task_high = work * task_low, work * task_high
        if objective is Objective.COST:
            task_low = task_low + t.data_gb * fee_low[c]
            task_high = task_high + t.data_gb * fee_high[c]
        width = task_high - task_low
        low[objective], span[objective] = task_low, np.where(width > 0, width, 1.0)
    return Scales(low, span)


def _range(values: FloatArray, feasible: BoolArray) -> tuple[FloatArray, FloatArray]:
    """Per row, the least and greatest of `values` where `feasible` (0, 0 where none is)."""
    values = np.broadcast_to(values, feasible.shape)
    low = np.where(feasible, values, np.inf).min(axis=1)
    high = np.where(feasible, values, -np.inf).max(axis=1)
    none = ~feasible.any(axis=1)
    low[none] = 0.0
    high[none] = 0.0
    return low, high


ALL_BITS = (1 << 63) - 1  # every device allowed (the catalog has fewer than 63 profiles)


def task_arrays(tasks: Sequence[Task], snapshot: Snapshot, pools: PoolArrays) -> TaskArrays:
    devices = all_devices()
    assert len(devices) < 63, "model bitmask holds at most 62 device profiles"
    device_pos = {d.id: i for i, d in enumerate(devices)}
    origins: dict[str, int] = {}
    origin_places: list[Place] = []
    origin_of_task = np.empty(len(tasks), dtype=np.int64)
    data_of_task = np.empty(len(tasks), dtype=np.int64)

    def place_index(place: Place) -> int:
        key = f"{place.id}@{place.lat},{place.lon}"
        if key not in origins:
            origins[key] = len(origin_places)
            origin_places.append(place)
        return origins[key]

    for t, task in enumerate(tasks):
        origin_of_task[t] = place_index(task.origin)
        data_of_task[t] = (
            origin_of_task[t] if task.data_origin is None else place_index(task.data_origin)
        )
    rtt = np.zeros((len(origin_places), len(pools.site_places)))
    distance = np.zeros_like(rtt)
    for o, origin in enumerate(origin_places):
        for s, place in enumerate(pools.site_places):
            rtt[o, s], distance[o, s] = _latency(origin, place)
    tiers = snapshot.tier_rtt_ms

    def model_bits(task: Task) -> int:
        if task.device_models is None:
            return ALL_BITS
        bits = 0
        for device_id in task.device_models:
            bits |= 1 << device_pos[device_id]
        return bits

    def province_bits(task: Task) -> int:
        if task.allowed_provinces is None:
            return -1
        index = pools.province_index
        return sum(1 << index[p] for p in task.allowed_provinces if p in index)

    return TaskArrays(
        ids=[t.id for t in tasks],
        devices=np.array([t.devices for t in tasks], dtype=np.int64),
        nodes=np.array([t.nodes for t in tasks], dtype=np.int64),
        kind=np.array([KINDS.index(t.device_kind) for t in tasks], dtype=np.int64),
        precision=np.array([PRECISIONS.index(t.precision) for t in tasks], dtype=np.int64),
        work_flop=np.array([t.work_flop for t in tasks], dtype=float),
        efficiency=np.array([EFFICIENCY[t.workload].value for t in tasks]),
        memory_gb=np.array([t.memory_gb for t in tasks], dtype=float),
        data_gb=np.array([t.data_gb for t in tasks], dtype=float),
        deadline_s=np.array(
            [np.inf if t.deadline_s is None else t.deadline_s for t in tasks], dtype=float
        ),
        max_price_fen=np.array(
            [np.inf if t.max_price_fen is None else t.max_price_fen for t in tasks], dtype=float
        ),
        tier_rtt_ms=np.array([tiers[t.latency_tier] for t in tasks], dtype=float),
        origin=origin_of_task,
        data_origin=data_of_task,
        model_bits=np.array([model_bits(t) for t in tasks], dtype=np.int64),
        province_bits=np.array([province_bits(t) for t in tasks], dtype=np.int64),
        deferrable=np.array([t.deferrable for t in tasks], dtype=bool),
        origin_places=origin_places,
        rtt_ms=rtt,
        distance_km=distance,
    )


def window_mean(
    prefix: FloatArray, rows: IntArray, start_h: FloatArray, length_h: FloatArray
) -> FloatArray:
    """Mean of periodic hourly series `rows` of `prefix` over [start, start + length) hours.

    `prefix` is (R, L+1) cumulative sums; fractional hours interpolate linearly; the series
    repeats with period L. Zero-length windows give the value at `start`.
    """
    period = prefix.shape[1] - 1
    total = prefix[:, -1]

    def cumulative(x: FloatArray) -> FloatArray:
        cycles = np.floor(x / period)
        within = x - cycles * period
        whole = np.floor(within).astype(np.int64)
        frac = within - whole
        base = prefix[rows, whole]
        nxt = prefix[rows, np.minimum(whole + 1, period)]
        result: FloatArray = cycles * total[rows] + base + frac * (nxt - base)
        return result

    length = np.maximum(length_h, 1e-9)
    return (cumulative(start_h + length) - cumulative(start_h)) / length


def _shaped(values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """`values` as an array of `shape`: itself when it has that shape, else a broadcast view
    (np.broadcast_to costs microseconds a call, and an evaluation makes dozens)."""
    return values if values.shape == shape else np.broadcast_to(values, shape)


def _cells_window(
    prefix: FloatArray,
    rows: IntArray,
    start_h: FloatArray,
    length_h: FloatArray,
    varying: BoolArray,
    constant: FloatArray | float,
) -> FloatArray:
    """`window_mean` on the cells whose series vary; `constant` on the others."""
    result = np.broadcast_to(np.asarray(constant, dtype=float), start_h.shape).copy()
    if varying.any():
        cells = _shaped(varying, start_h.shape)
        result[cells] = window_mean(
            prefix,
            _shaped(rows, start_h.shape)[cells],
            start_h[cells],
            _shaped(length_h, start_h.shape)[cells],
        )
    return result


def class_masks(
    t: TaskArrays,
    rows: slice | IntArray,
    p: PoolArrays,
    pc: IntArray,
    peak: FloatArray | None = None,
) -> dict[str, BoolArray]:
    """The SAME_CLASS constraints of tasks `rows` at pools `pc` ((1, M) or (n_rows, M)):
    what every task of a class shares (`peak`: the tasks' peaks at those pools, when known)."""
    if peak is None:
        peak = p.peak[t.precision[rows][:, None], pc]
    allowed = t.province_bits[rows, None]
    return {
        "device kind": t.kind[rows, None] == p.kind[pc],
        "device model": ((t.model_bits[rows, None] >> p.device_index[pc]) & 1) == 1,
        "precision": peak > 0,
        "residency": (allowed == -1) | ((p.site_province_bits[p.site_of_pool[pc]] & ~allowed) == 0),
    }


@dataclass(frozen=True)
class Evaluation:
    """Constraint masks, raw objectives and scores of a block of tasks against all pools."""

    masks: dict[str, BoolArray]  # constraint -> True where the pool passes
    feasible: BoolArray  # all static constraints pass
    raw: dict[Objective, FloatArray]
    score: FloatArray  # inf where infeasible
    duration_s: FloatArray
    transfer_s: FloatArray
    energy_kwh: FloatArray
    compute_fen: FloatArray
    energy_fen: FloatArray
    transfer_fen: FloatArray
    carbon_location_kg: FloatArray


def _run_s(t: TaskArrays, rows: slice | IntArray, peak: FloatArray) -> FloatArray:
    """Seconds the work of tasks `rows` runs at pools of these peaks: work / (peak x devices x
    efficiency); inf (or nan) where a pool has no figure for the precision."""
    devices = t.devices[rows, None].astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        duration: FloatArray = t.work_flop[rows, None] / (
            peak * (devices * t.efficiency[rows, None])
        )
    return duration


def _transfer_s(
    t: TaskArrays, rows: slice | IntArray, moves: BoolArray, snapshot: Snapshot
) -> FloatArray:
    """Seconds moving the data of tasks `rows` takes where it `moves` (another city), at the
    snapshot's bandwidth; a (1, 1) zero when no task of `rows` has data."""
    data = t.data_gb[rows, None]
    if not np.any(data > 0):
        return np.zeros((1, 1))
    moved: FloatArray = np.where(moves, data * (8.0 / snapshot.bandwidth_gbps), 0.0)
    return moved


def open_pools(tasks: Sequence[Task], snapshot: Snapshot) -> tuple[BoolArray, FloatArray]:
    """(tasks, pools) twice: the pools each task may use on this network at any clock and
    whatever is free (those passing its constraints that never change: SAME_CLASS, its latency
    tier from its origin, memory), and the least it takes there from a start to its end (its
    data's transfer and its run, seconds; inf where it may not go). The engine places a task
    nowhere else, and only where it would end by its deadline; price ceilings and free devices
    narrow this further. Raises as `task_arrays` does for a task it cannot read."""
    p = pool_arrays(snapshot)
    t = task_arrays(tasks, snapshot, p)
    rows = np.arange(t.n_tasks)
    pc = np.arange(p.n_pools)[None, :]
    peak = p.peak[t.precision[:, None], pc]
    masks = class_masks(t, rows, p, pc, peak)
    passing: BoolArray = np.logical_and.reduce([masks[name] for name in SAME_CLASS])
    site = p.site_of_pool[pc]
    passing &= t.rtt_ms[t.origin[:, None], site] <= t.tier_rtt_ms[:, None]
    passing &= p.memory_gb[pc] >= t.memory_gb[:, None]
    passing &= fits_nodes(t, rows, p, pc)
    moves = t.distance_km[t.data_origin[:, None], site] > 0
    transfer = _transfer_s(t, rows, moves, snapshot)
    least: FloatArray = np.where(passing, transfer + _run_s(t, rows, peak), np.inf)
    return passing, least


def evaluate(
    t: TaskArrays,
    rows: slice | IntArray,
    p: PoolArrays,
    snapshot: Snapshot,
    policy: Policy,
    now: float,
    delay_h: FloatArray | float = 0.0,
    cols: IntArray | None = None,
    same_class: bool = False,
) -> Evaluation:
    """Everything about tasks `rows` x pools `cols`, starting `delay_h` hours after `now`.

    `cols` is a (1, M) row of pool indices shared by every task, or (n_rows, M) per task;
    None means every pool. Matrices are (n_rows, M), or (1, M) where a value depends on the
    pool only. `same_class`: every task of `rows` shares kind, precision, models and
    residency, and `cols` holds only pools that pass those constraints (the greedy solver's
    pruning), so those are not checked again and the peaks are gathered once. A policy of
    several objectives normalises by `t.scales`, computed here for `rows` when `t` has none.
    """
    scales: Scales | None = None
    if policy.single is None:
        if t.scales is None:
            t = subset_tasks(t, np.arange(t.n_tasks)[rows])
            rows = np.arange(t.n_tasks)
            scales = task_scales(t, p, snapshot, now)
        else:
            scales = t.scales.rows(rows)
    pc = np.arange(p.n_pools)[None, :] if cols is None else cols
    # rows that carry the class-level fields
    key = rows[:1] if same_class and not isinstance(rows, slice) else rows
    devices = t.devices[rows, None].astype(float)
    site = p.site_of_pool[pc]
    origin = t.origin[rows, None]
    peak = p.peak[t.precision[key][:, None], pc]
    rtt = t.rtt_ms[origin, site]
    masks: dict[str, BoolArray] = {}
    if same_class:
        passing = np.ones(pc.shape, dtype=bool)
        for name in SAME_CLASS:
            masks[name] = passing
    else:
        masks.update(class_masks(t, rows, p, pc, peak))
    masks["latency tier"] = rtt <= t.tier_rtt_ms[rows, None]
    masks["memory"] = p.memory_gb[pc] >= t.memory_gb[rows, None]
    masks["pool size"] = p.count[pc] >= t.devices[rows, None]
    masks["nodes"] = fits_nodes(t, rows, p, pc)

    duration = _run_s(t, rows, peak)
    if not same_class:  # same_class columns all have a figure: durations are finite
        duration = np.where(masks["precision"], duration, np.inf)
    distance = t.distance_km[origin, site]
    moves = t.distance_km[t.data_origin[rows, None], site] > 0  # where its data lives
    data = t.data_gb[rows, None]
    has_data = bool(np.any(data > 0))
    transfer = _transfer_s(t, rows, moves, snapshot)
    hours = duration / 3600.0
    finite_hours = hours if same_class else np.where(np.isfinite(hours), hours, 0.0)
    start_h = (now - snapshot.series_start_s) / 3600.0 + np.asarray(delay_h) + transfer / 3600.0
    start_h = _shaped(start_h, duration.shape)

    energy = devices * p.tdp_kw[pc] * finite_hours * p.site_pue[site]
    compute_fen = p.price_fen_per_device_hour[pc] * devices * finite_hours
    if p.compute_prefix is not None:  # only the pools with time-of-use compute prices
        local = start_h + snapshot.local_hour_at_start
        compute_fen = compute_fen * _cells_window(
            p.compute_prefix, pc, local, finite_hours, p.pool_has_tou[pc], 1.0
        )
    billed = p.energy_billed[pc]
    energy_fen = np.zeros(duration.shape)
    if billed.any():
        varying = billed & ~p.site_energy_flat[site]
        multiplier = _cells_window(p.energy_prefix, site, start_h, finite_hours, varying, 1.0)
        energy_fen = np.where(billed, energy * p.site_price_cny[site] * 100.0 * multiplier, 0.0)
    transfer_fen = (
        np.where(moves, data * snapshot.transfer_fen_per_gb, 0.0)
        if has_data and snapshot.transfer_fen_per_gb > 0
        else np.zeros((1, 1))
    )
    cost = compute_fen + energy_fen + transfer_fen
    intensity = _cells_window(
        p.carbon_prefix,
        site,
        start_h,
        finite_hours,
        ~p.site_carbon_flat[site],
        p.site_carbon_first[site],
    )
    carbon_location = energy * intensity
    carbon = carbon_location * (1.0 - p.site_green[site])
    deadline = t.deadline_s[rows, None]
    if np.isfinite(deadline).any():
        masks["deadline"] = now + np.asarray(delay_h) * 3600.0 + transfer + duration <= deadline
    else:  # no task of this block has a deadline
        masks["deadline"] = np.ones((1, 1), dtype=bool)
    ceiling = t.max_price_fen[rows, None]
    masks["price ceiling"] = (
        cost <= ceiling if np.isfinite(ceiling).any() else np.ones((1, 1), dtype=bool)
    )
    feasible = np.ones(duration.shape, dtype=bool)
    for name in CONSTRAINTS:
        feasible &= masks[name]

    load = (p.count - p.free)[pc] + devices
    raw = {
        Objective.COST: cost,
        Objective.CARBON: carbon,
        Objective.CARBON_LOCATION: carbon_location,
        Objective.LATENCY: rtt,
        Objective.DISTANCE: distance,
        Objective.LOAD: _shaped(load / p.count[pc], duration.shape),
        Objective.REPUTATION: _shaped(1.0 - p.site_reputation[site], duration.shape),
    }
    shape = duration.shape
    return Evaluation(  # every matrix (n_rows, M); broadcast views where a value is shared
        masks={name: _shaped(mask, shape) for name, mask in masks.items()},
        feasible=feasible,
        raw={o: _shaped(v, shape) for o, v in raw.items()},
        score=score(raw, feasible, policy, scales),
        duration_s=duration,
        transfer_s=_shaped(transfer, shape),
        energy_kwh=energy,
        compute_fen=compute_fen,
        energy_fen=_shaped(energy_fen, shape),
        transfer_fen=_shaped(transfer_fen, shape),
        carbon_location_kg=carbon_location,
    )


TIE_EPSILON = 1e-9
# Objectives that are already fractions in [0, 1] and enter a weighted sum as they are (so the
# greedy solver can update the load term exactly as the plan fills).
FRACTIONS = frozenset({Objective.LOAD, Objective.REPUTATION})


def score(
    raw: dict[Objective, FloatArray],
    feasible: BoolArray,
    policy: Policy,
    scales: Scales | None = None,
) -> FloatArray:
    """The policy's score of each pair (lower is better), inf where infeasible.

    One weighted objective: its raw value. Several: the weighted sum of the objectives, cost,
    carbon (either basis), latency and distance normalised over the pools of the task's class
    (`task_scales`: 0 = the class's best pool, 1 = its worst, for the task's size), load and
    reputation as they are (fractions in [0, 1]). Either way plus TIE_EPSILON x the tie-break
    objective scaled into [0, 1], so that equal scores prefer the better tie-break, then the
    earlier pool.
    """
    single = policy.single
    if single is not None:
        total = raw[single] * 1.0
    else:
        assert scales is not None, "a policy of several objectives needs the tasks' scales"
        total = np.zeros(feasible.shape)
        for objective, weight in policy.weights.items():
            if weight > 0:
                value = raw[objective]
                if objective not in FRACTIONS:
                    low, span = scales.bounds(objective)
                    value = (value - low[:, None]) / span[:, None]
                total = total + weight * value
    # tie-break: any positive monotone scaling of it works within a row; one scale per block
    # (its largest feasible value) avoids a per-row pass
    tie = raw[policy.tie_break]
    scale = float(np.max(np.where(feasible, tie, 0.0), initial=0.0))
    if scale > 0:
        total = total + (TIE_EPSILON / scale) * (1.0 + np.abs(total)) * tie
    return np.where(feasible, total, np.inf)
