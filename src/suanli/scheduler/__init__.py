"""suanli.scheduler — the placement engine (智能调度算法).

Pure: `decide(queue, network, capacity, policy, clock)` is the one decision step every caller
uses (place now, wait until an hour, stay queued, reject); `place(tasks, snapshot, policy, now)`
is the engine under it. No I/O and no clock. Multi-objective (cost, carbon market- or
location-based, latency, distance, load, reputation) under named constraints, with a vectorised
greedy solver for large batches, an exact MILP (HiGHS) for batches up to a few thousand tasks,
temporal shifting of deferrable work, and an explanation for every task it cannot place.
"""

from suanli.scheduler.decide import (
    Action,
    Capacity,
    Decision,
    PoolCapacity,
    QueuedTask,
    decide,
)
from suanli.scheduler.engine import SOLVERS, place
from suanli.scheduler.model import (
    DEFAULT_TIER_RTT_MS,
    POLICIES,
    Booking,
    Breakdown,
    LatencyTier,
    Objective,
    Placement,
    Plan,
    Policy,
    SiteSeries,
    Snapshot,
    SolverInfo,
    Task,
    Unplaced,
    custom_policy,
    policy_named,
)
from suanli.scheduler.tasks import engine_task

__all__ = [
    "DEFAULT_TIER_RTT_MS",
    "POLICIES",
    "SOLVERS",
    "Action",
    "Booking",
    "Breakdown",
    "Capacity",
    "Decision",
    "LatencyTier",
    "Objective",
    "Placement",
    "Plan",
    "Policy",
    "PoolCapacity",
    "QueuedTask",
    "SiteSeries",
    "Snapshot",
    "SolverInfo",
    "Task",
    "Unplaced",
    "custom_policy",
    "decide",
    "engine_task",
    "place",
    "policy_named",
]
