"""One decision step for every caller: on random networks, queues and capacities, the digital
twin's tick (its own counters: free devices per pool) decides exactly as `scheduler.decide` on
the same inputs — same action, pool and start time for every task.

The inputs come from `tests/unit/scheduler/strategies.py`, shared with the live pass's and the
quote's properties. The twin has no engine queue, so its scenarios draw no queue depth."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings

from suanli.scheduler import POLICIES, decide
from suanli.sim.twin import Network, tick
from tests.unit.scheduler.strategies import Scenario, queued_tasks, scenarios


def twin_network(scenario: Scenario) -> Network:
    snapshot = scenario.network
    return Network(
        dict(snapshot.sites),
        snapshot.pools,
        dict(snapshot.series),
        snapshot.local_hour_at_start,
        dict(snapshot.reputation),
    )


def key(decisions) -> list[tuple]:
    return [
        (
            d.task,
            d.action.value,
            d.pool,
            None if d.placement is None else d.placement.start_s,
            d.not_before_s,
        )
        for d in decisions
    ]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(queue_depth=False))
def test_the_twin_tick_decides_as_the_step(scenario: Scenario) -> None:
    queue = queued_tasks(scenario)
    policy = POLICIES[scenario.policy]
    step = decide(queue, scenario.network, scenario.capacity, policy, scenario.clock)
    free = {p.id: scenario.capacity.free(p.id) for p in scenario.network.pools}
    twin = tick(queue, twin_network(scenario), free, policy, scenario.clock)
    assert key(twin) == key(step)
    assert [d.reason for d in twin] == [d.reason for d in step]
    # every task gets one decision, in queue order; no pool takes more than it has free
    assert [d.task for d in step] == [q.id for q in scenario.queue]
    used: dict[str, int] = {}
    devices = {q.task.id: q.task.devices for q in queue}
    for d in step:
        if d.placement is not None and d.action.value == "place":
            used[d.pool] = used.get(d.pool, 0) + devices[d.task]
    for pool, n in used.items():
        assert n <= scenario.capacity.free(pool)
