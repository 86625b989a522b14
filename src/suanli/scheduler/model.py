"""The scheduler's values: tasks, the snapshot they are placed on, policies and plans.

Owns the frozen inputs and outputs of `place(tasks, snapshot, policy, now)`. Nothing here reads
a clock or a file; a snapshot is a self-contained picture of the network at one moment.

Invariants: a `Task` is valid on construction (positive devices and work, known enums);
thresholds and weights are non-negative; hourly series are aligned with the scheduler clock
(index 0 is the hour starting at `Snapshot.series_start_s`) and repeat with their own length.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
import numpy.typing as npt

from suanli import checks
from suanli.catalog import Place, Pool, Site
from suanli.errors import InvalidValue
from suanli.metering import DeviceKind, Precision, WorkloadClass

FloatArray = npt.NDArray[np.float64]


class LatencyTier(StrEnum):
    INTERACTIVE = "interactive"
    STANDARD = "standard"
    BATCH = "batch"


# Round-trip budgets from the origin, in ms. The policy tiers in latency_targets.csv are
# 5 ms (cluster to surrounding cities) and 20 ms (between national hubs); the documents do not
# say one-way or RTT, so we read them as RTT, the stricter reading. Override per snapshot.
DEFAULT_TIER_RTT_MS: Mapping[LatencyTier, float] = {
    LatencyTier.INTERACTIVE: 5.0,
    LatencyTier.STANDARD: 20.0,
    LatencyTier.BATCH: math.inf,
}

# Assumptions for moving a task's input data, overridable per snapshot (no figure is published
# in data/SOURCES.md): one 10 Gbit/s flow per task, and no transfer charge.
DEFAULT_BANDWIDTH_GBPS = 10.0
DEFAULT_TRANSFER_FEN_PER_GB = 0.0


@dataclass(frozen=True, slots=True)
class Task:
    """One unit of work to place: devices of a kind, precision-tagged work, where it comes from."""

    id: str
    devices: int
    device_kind: DeviceKind
    precision: Precision
    work_flop: float
    origin: Place
    latency_tier: LatencyTier = LatencyTier.STANDARD
    workload: WorkloadClass = WorkloadClass.GENERAL
    device_models: frozenset[str] | None = None  # allowed DeviceProfile ids; None = any
    memory_gb: float = 0.0  # per device
    data_gb: float = 0.0
    deadline_s: float | None = None  # absolute, on the scheduler clock
    max_price_fen: int | None = None
    allowed_provinces: frozenset[str] | None = None  # province_zh; None = anywhere
    deferrable: bool = False
    # a gang: `devices` split evenly over this many distinct nodes of one pool, all or none
    nodes: int = 1
    # where its `data_gb` lives (a bucket's place, say); None: at its origin. The data moves,
    # and is charged and timed, where a site is elsewhere
    data_origin: Place | None = None

    def __post_init__(self) -> None:
        checks.count("devices", self.devices)
        checks.count("nodes", self.nodes)
        if self.devices % self.nodes:
            raise InvalidValue(
                "nodes",
                self.nodes,
                f"a divisor of devices ({self.devices}): each node holds the same share",
                f"设备数（{self.devices}）的约数：每个节点持有同样多的设备",
            )
        checks.positive("work_flop", self.work_flop)
        checks.non_negative("memory_gb", self.memory_gb)
        checks.non_negative("data_gb", self.data_gb)
        if self.deadline_s is not None:
            checks.non_negative("deadline_s", self.deadline_s)
        if self.max_price_fen is not None and (
            isinstance(self.max_price_fen, bool)
            or not isinstance(self.max_price_fen, int)
            or self.max_price_fen < 0
        ):
            raise InvalidValue(
                "max_price_fen",
                self.max_price_fen,
                "a whole number of fen >= 0",
                "不小于 0 的整数（分）",
            )


@dataclass(frozen=True, slots=True)
class SiteSeries:
    """Hourly multipliers and intensities of one site, aligned with the scheduler clock."""

    energy_price_multiplier: FloatArray  # x the site's electricity price
    carbon_kg_per_kwh: FloatArray  # location-based intensity each hour

    def __post_init__(self) -> None:
        for name in ("energy_price_multiplier", "carbon_kg_per_kwh"):
            values = getattr(self, name)
            if values.ndim != 1 or len(values) == 0 or not np.all(np.isfinite(values)):
                raise InvalidValue(name, "array", "a non-empty hourly series", "非空的逐时序列")
            if np.any(values < 0):
                raise InvalidValue(name, "array", "values >= 0", "不小于 0 的值")


@dataclass(frozen=True, slots=True)
class Booking:
    """Devices of a pool known to be held over a span (seconds on the scheduler clock): a
    running task until its expected end, or a deferred task from its hour for its run. A
    deferral is decided only onto hours its pool has room for beside these."""

    pool: str
    devices: int
    start_s: float
    end_s: float


@dataclass(frozen=True)
class Snapshot:
    """Everything placement needs to know, frozen at one moment."""

    pools: tuple[Pool, ...]
    sites: Mapping[str, Site]
    reputation: Mapping[str, float] = field(default_factory=dict)  # site id -> [0, 1]
    series: Mapping[str, SiteSeries] = field(default_factory=dict)  # site id -> hourly
    series_start_s: float = 0.0
    local_hour_at_start: float = 0.0  # local clock hour at series_start_s (for pool TOU)
    tier_rtt_ms: Mapping[LatencyTier, float] = field(
        default_factory=lambda: dict(DEFAULT_TIER_RTT_MS)
    )
    bandwidth_gbps: float = DEFAULT_BANDWIDTH_GBPS
    transfer_fen_per_gb: float = DEFAULT_TRANSFER_FEN_PER_GB
    max_delay_h: int = 24  # how far ahead a deferrable task may be shifted
    booked: tuple[Booking, ...] = ()  # devices held ahead (running work, deferrals)

    def __post_init__(self) -> None:
        missing = sorted({p.site_id for p in self.pools} - set(self.sites))
        if missing:
            raise InvalidValue(
                "pools.site", missing[0], "a site present in the snapshot", "快照中存在的站点"
            )
        ids = [p.id for p in self.pools]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise InvalidValue("pools.id", dup, "unique pool ids", "唯一的资源池 id")
        checks.positive("bandwidth_gbps", self.bandwidth_gbps)
        checks.non_negative("transfer_fen_per_gb", self.transfer_fen_per_gb)
        for site_id, value in self.reputation.items():
            checks.in_range(f"reputation[{site_id}]", value, 0.0, 1.0)


class Objective(StrEnum):
    COST = "cost"  # fen
    CARBON = "carbon"  # kg CO2, market-based: the grid's intensity x (1 - the green share)
    CARBON_LOCATION = "carbon_location"  # kg CO2, location-based: the grid's intensity alone
    LATENCY = "latency"  # ms RTT from the origin
    DISTANCE = "distance"  # km great circle from the origin
    LOAD = "load"  # pool occupancy after placement, 0..1
    REPUTATION = "reputation"  # 1 - provider reputation, 0..1


@dataclass(frozen=True, slots=True)
class Policy:
    """A named weighting of objectives.

    With exactly one weighted objective the score is that objective's raw value (fen, kg, ms,
    km), so the optimum is a true minimum total; with several, cost, carbon (either basis),
    latency and distance are first normalised to [0, 1] over the pools open to the task's
    class, for the task's size (`arrays.task_scales`), load and reputation are fractions
    already, then all are weighted and summed.
    Ties are broken by `tie_break` (raw), then by pool order.
    """

    name: str
    weights: Mapping[Objective, float]
    tie_break: Objective = Objective.COST

    def __post_init__(self) -> None:
        for objective, weight in self.weights.items():
            checks.non_negative(f"weights.{objective.value}", weight)
        if not any(w > 0 for w in self.weights.values()):
            raise InvalidValue(
                "weights", dict(self.weights), "at least one weight > 0", "至少一个权重大于 0"
            )

    @property
    def single(self) -> Objective | None:
        active = [o for o, w in self.weights.items() if w > 0]
        return active[0] if len(active) == 1 else None


POLICIES: Mapping[str, Policy] = {
    # today's practice: the closest feasible site, the baseline everything is compared with
    "nearest": Policy("nearest", {Objective.DISTANCE: 1.0}, Objective.COST),
    "cost": Policy("cost", {Objective.COST: 1.0}, Objective.CARBON),
    # the least carbon counting the sites' declared green power (market-based) ...
    "green": Policy("green", {Objective.CARBON: 1.0}, Objective.COST),
    # ... or the grid's intensity alone, whatever a site has contracted (location-based)
    "green-location": Policy("green-location", {Objective.CARBON_LOCATION: 1.0}, Objective.COST),
    "latency": Policy("latency", {Objective.LATENCY: 1.0}, Objective.COST),
    "balanced": Policy(
        "balanced",
        {
            Objective.COST: 0.35,
            Objective.CARBON: 0.35,
            Objective.LATENCY: 0.15,
            Objective.LOAD: 0.10,
            Objective.REPUTATION: 0.05,
        },
        Objective.COST,
    ),
}


def policy_named(name: str) -> Policy:
    try:
        return POLICIES[name.strip().lower()]
    except KeyError:
        accepted = ", ".join(POLICIES)
        raise InvalidValue("policy", name, f"one of {accepted}", f"{accepted} 之一") from None


def custom_policy(weights: Mapping[str, float]) -> Policy:
    """A policy from {"cost": 0.5, "carbon": 0.5, ...}; names are `Objective` values
    ("carbon" market-based, "carbon_location" location-based)."""
    parsed: dict[Objective, float] = {}
    for key, value in weights.items():
        try:
            parsed[Objective(key)] = float(value)
        except ValueError:
            accepted = ", ".join(o.value for o in Objective)
            raise InvalidValue(
                "weights", key, f"objective names among {accepted}", f"目标名称：{accepted}"
            ) from None
    return Policy("custom", parsed)


@dataclass(frozen=True, slots=True)
class Breakdown:
    """The objective values of one (task, pool) pair."""

    cost_fen: int
    compute_fen: int
    energy_fen: int
    transfer_fen: int
    energy_kwh: float
    carbon_kg: float
    carbon_location_kg: float
    latency_ms: float
    distance_km: float
    load_after: float
    reputation: float
    duration_s: float
    transfer_s: float
    precision_used: Precision


@dataclass(frozen=True, slots=True)
class Placement:
    task: str
    pool: str
    site: str
    start_s: float
    end_s: float
    breakdown: Breakdown
    score: float
    runner_up: str | None
    waited_s: float = 0.0
    saved_fen: int = 0  # what waiting saved against starting now
    saved_carbon_kg: float = 0.0  # market-based, as `Breakdown.carbon_kg`
    saved_carbon_location_kg: float = 0.0  # location-based, as `Breakdown.carbon_location_kg`


@dataclass(frozen=True, slots=True)
class Unplaced:
    task: str
    reasons: Mapping[str, int]  # constraint name -> number of pools it ruled out
    sentence: str


@dataclass(frozen=True, slots=True)
class SolverInfo:
    """Which solver decided, its objective and, for `optimal`, the LP lower bound. The core
    takes no clock: callers that time a solve record `seconds` themselves."""

    name: str
    objective: float  # the policy's score summed over placed tasks
    lower_bound: float | None = None
    status: str = "ok"
    seconds: float | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    placements: tuple[Placement, ...]
    unplaced: tuple[Unplaced, ...]
    solver: SolverInfo
    policy: str

    @property
    def cost_fen(self) -> int:
        return sum(p.breakdown.cost_fen for p in self.placements)

    @property
    def energy_kwh(self) -> float:
        return sum(p.breakdown.energy_kwh for p in self.placements)

    @property
    def carbon_kg(self) -> float:
        """Market-based: the sites' declared green power counted as zero-carbon."""
        return sum(p.breakdown.carbon_kg for p in self.placements)

    @property
    def carbon_location_kg(self) -> float:
        """Location-based: the grid's intensity alone."""
        return sum(p.breakdown.carbon_location_kg for p in self.placements)
