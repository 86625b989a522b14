"""suanli.scheduler — the placement engine (智能调度算法).

Pure: `place(tasks, snapshot, policy, now) -> Plan`, no I/O and no clock. Multi-objective
(cost, carbon, latency, distance, load, reputation) under named constraints, with a vectorised
greedy solver for large batches, an exact MILP (HiGHS) for batches up to a few thousand tasks,
temporal shifting of deferrable work, and an explanation for every task it cannot place.
"""

from suanli.scheduler.engine import SOLVERS, place
from suanli.scheduler.model import (
    DEFAULT_TIER_RTT_MS,
    POLICIES,
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

__all__ = [
    "DEFAULT_TIER_RTT_MS",
    "POLICIES",
    "SOLVERS",
    "Breakdown",
    "LatencyTier",
    "Objective",
    "Placement",
    "Plan",
    "Policy",
    "SiteSeries",
    "Snapshot",
    "SolverInfo",
    "Task",
    "Unplaced",
    "custom_policy",
    "place",
    "policy_named",
]
