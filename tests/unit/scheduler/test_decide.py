"""The one decision step: each action (place, wait, queue, reject), pinned tasks, policy groups,
a task the engine fails on rejected alone, the max wait, and a deferred task never waiting twice."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from suanli.catalog import find_site
from suanli.errors import InvalidValue
from suanli.scheduler import (
    POLICIES,
    Action,
    Booking,
    Capacity,
    Objective,
    Policy,
    PoolCapacity,
    QueuedTask,
    SiteSeries,
    custom_policy,
    decide,
)
from suanli.scheduler.decide import BEHIND, BLOCKED, NO_POOLS
from tests.builders import a_pool_at, a_snapshot, a_task

COST, GREEN = POLICIES["cost"], POLICIES["green"]
HOUR = 3600.0


def two_pools(cheap: int = 2, dear: int = 2):
    """ZJK 'cheap' (100 fen per GPU-hour) and YRD_DEMO 'dear' (300), H800s."""
    return a_snapshot(
        a_pool_at("cheap", "ZJK", "H800", cheap, 100),
        a_pool_at("dear", "YRD_DEMO", "H800", dear, 300),
    )


def everything_free(snapshot) -> Capacity:
    return Capacity({p.id: PoolCapacity(p.count) for p in snapshot.pools})


def queued(task, submitted: float = 0.0, **fields) -> QueuedTask:
    return QueuedTask(task, submitted, **fields)


def gpu(ident: str, n: int = 1):
    return a_task(ident).gpus(n).work(1e15)


def test_place_now_on_the_best_pool() -> None:
    snapshot = two_pools()
    (d,) = decide([queued(gpu("a").build())], snapshot, everything_free(snapshot), COST, 50.0)
    assert (d.task, d.action, d.pool, d.policy) == ("a", Action.PLACE, "cheap", "cost")
    assert d.placement is not None and d.placement.start_s == 50.0 and d.not_before_s is None


def test_capacity_decides_what_is_free_not_the_snapshot() -> None:
    snapshot = two_pools()  # both pools fully free in the snapshot itself
    capacity = Capacity({"cheap": PoolCapacity(2, held=1, unavailable=1), "dear": PoolCapacity(2)})
    decisions = decide(
        [queued(gpu("a").build()), queued(gpu("b").build())], snapshot, capacity, COST, 0.0
    )
    assert [(d.action, d.pool) for d in decisions] == [(Action.PLACE, "dear")] * 2


def test_queue_with_the_engine_reason_when_nothing_is_free() -> None:
    snapshot = two_pools()
    capacity = Capacity({"cheap": PoolCapacity(2, held=2), "dear": PoolCapacity(2, held=2)})
    (d,) = decide([queued(gpu("a").build())], snapshot, capacity, COST, 0.0)
    assert d.action is Action.QUEUE and d.pool is None
    assert "free capacity ruled out 2" in d.reason and d.reasons == {"free capacity": 2}


def test_queue_when_no_pool_is_registered() -> None:
    (d,) = decide([queued(gpu("a").build())], a_snapshot(), Capacity(), COST, 0.0)
    assert (d.action, d.reason) == (Action.QUEUE, NO_POOLS)


def test_an_engine_queue_extends_what_may_be_placed() -> None:
    snapshot = a_snapshot(a_pool_at("slurm", "ZJK", "H800", 2, 100))
    capacity = Capacity({"slurm": PoolCapacity(2, held=2, queue_depth=2)})
    decisions = decide(
        [queued(gpu(i).build()) for i in ("a", "b", "c")], snapshot, capacity, COST, 0.0
    )
    assert [d.action for d in decisions] == [Action.PLACE, Action.PLACE, Action.QUEUE]


def greener_at_hour_3():
    site = find_site("ZJK")
    carbon = np.full(24, site.grid_kgco2_per_kwh)
    carbon[3] *= 0.2
    return a_snapshot(
        a_pool_at("zjk", "ZJK", "H800", 1, 100),
        series={"ZJK": SiteSeries(np.ones(24), carbon)},
    )


def test_wait_for_a_greener_hour_within_the_deadline() -> None:
    snapshot = greener_at_hour_3()
    task = gpu("flex").deadline(6 * HOUR).deferrable().build()
    (d,) = decide([queued(task)], snapshot, everything_free(snapshot), GREEN, 0.0)
    assert (d.action, d.pool, d.not_before_s) == (Action.WAIT, "zjk", 3 * HOUR)
    assert d.placement is not None and d.placement.waited_s == 3 * HOUR
    # without the deadline room, it starts now
    tight = gpu("tight").deadline(HOUR).deferrable().build()
    (now,) = decide([queued(tight)], snapshot, everything_free(snapshot), GREEN, 0.0)
    assert now.action is Action.PLACE


def test_a_deferred_task_waits_holding_nothing_and_never_waits_twice() -> None:
    snapshot = greener_at_hour_3()
    task = gpu("flex").deadline(30 * HOUR).deferrable().build()
    other = gpu("other").build()
    # before its hour: WAIT again, and its device goes to another task
    early = decide(
        [queued(task, not_before_s=3 * HOUR), queued(other)],
        snapshot,
        everything_free(snapshot),
        GREEN,
        HOUR,
    )
    assert [(d.action, d.not_before_s) for d in early] == [
        (Action.WAIT, 3 * HOUR),
        (Action.PLACE, None),
    ]
    assert early[0].placement is None
    # at its hour: placed, although the next day's hour 3 is as green and within its deadline
    (due,) = decide(
        [queued(task, not_before_s=3 * HOUR)], snapshot, everything_free(snapshot), GREEN, 4 * HOUR
    )
    assert (due.action, due.placement.start_s) == (Action.PLACE, 4 * HOUR)
    # the same task never deferred before would wait for that next greener hour
    (fresh,) = decide([queued(task)], snapshot, everything_free(snapshot), GREEN, 4 * HOUR)
    assert (fresh.action, fresh.not_before_s) == (Action.WAIT, 27 * HOUR)


def test_a_deferred_task_holds_its_devices_within_one_call() -> None:
    snapshot = greener_at_hour_3()  # one device
    flex = gpu("flex").deadline(6 * HOUR).deferrable().build()
    decisions = decide(
        [queued(flex), queued(gpu("rigid").build())], snapshot, everything_free(snapshot), GREEN, 0
    )
    assert [d.action for d in decisions] == [Action.WAIT, Action.QUEUE]


def test_reject_after_the_max_wait_even_when_it_fits() -> None:
    snapshot = two_pools()
    decisions = decide(
        [queued(gpu("old").build(), submitted=0.0), queued(gpu("new").build(), submitted=90.0)],
        snapshot,
        everything_free(snapshot),
        COST,
        100.0,
        max_wait_s=60.0,
    )
    assert [d.action for d in decisions] == [Action.REJECT, Action.PLACE]
    assert decisions[0].reason.startswith("waited too long")
    # exactly max_wait_s is not too long
    (edge,) = decide(
        [queued(gpu("edge").build(), submitted=40.0)],
        snapshot,
        everything_free(snapshot),
        COST,
        100.0,
        max_wait_s=60.0,
    )
    assert edge.action is Action.PLACE


def test_a_task_the_engine_fails_on_is_rejected_alone() -> None:
    snapshot = two_pools()
    broken = replace(gpu("broken").build(), device_models=frozenset({"no-such-device"}))
    decisions = decide(
        [queued(gpu("a").build()), queued(broken), queued(gpu("b").build())],
        snapshot,
        everything_free(snapshot),
        COST,
        0.0,
    )
    assert [d.action for d in decisions] == [Action.PLACE, Action.REJECT, Action.PLACE]
    assert decisions[1].reason.startswith("the scheduler cannot place this task")
    assert [d.pool for d in decisions] == ["cheap", None, "cheap"]


def test_pinned_tasks_go_to_their_pool_first_or_nowhere() -> None:
    snapshot = two_pools(cheap=1)
    decisions = decide(
        [
            queued(gpu("free-choice").build()),
            queued(gpu("pinned-cheap").build(), pinned_pool="cheap"),
            queued(gpu("pinned-dear").build(), pinned_pool="dear"),
            queued(gpu("pinned-gone").build(), pinned_pool="elsewhere"),
        ],
        snapshot,
        everything_free(snapshot),
        COST,
        0.0,
    )
    by = {d.task: d for d in decisions}
    assert [d.task for d in decisions] == [
        "free-choice",
        "pinned-cheap",
        "pinned-dear",
        "pinned-gone",
    ]
    assert (by["pinned-cheap"].action, by["pinned-cheap"].pool) == (Action.PLACE, "cheap")
    assert (by["pinned-dear"].action, by["pinned-dear"].pool) == (Action.PLACE, "dear")
    # the pinned task took the cheap pool's only device before the free choice was made
    assert (by["free-choice"].action, by["free-choice"].pool) == (Action.PLACE, "dear")
    assert by["pinned-gone"].action is Action.QUEUE
    assert "not in the network" in by["pinned-gone"].reason


def test_a_pinned_task_waits_for_its_full_pool() -> None:
    snapshot = two_pools()
    capacity = Capacity({"cheap": PoolCapacity(2, held=2), "dear": PoolCapacity(2)})
    (d,) = decide([queued(gpu("p").build(), pinned_pool="cheap")], snapshot, capacity, COST, 0.0)
    assert d.action is Action.QUEUE and "free capacity" in d.reason


@pytest.mark.parametrize("default", ["a-cost", "z-cost"])
def test_policy_groups_decide_in_name_order_on_what_earlier_groups_left(default: str) -> None:
    # both policies want the cheap pool's only device: the group first by name gets it, whatever
    # the queue order and whichever is the default policy
    snapshot = two_pools(cheap=1, dear=1)
    policies = {name: Policy(name, {Objective.COST: 1.0}) for name in ("a-cost", "z-cost")}
    named = "z-cost" if default == "a-cost" else "a-cost"
    decisions = decide(
        [
            queued(gpu("z").build(), policy=policies["z-cost"] if named == "z-cost" else None),
            queued(gpu("a").build(), policy=policies["a-cost"] if named == "a-cost" else None),
        ],
        snapshot,
        everything_free(snapshot),
        policies[default],  # the policy of the task that names none
        0.0,
    )
    assert [(d.task, d.policy, d.pool) for d in decisions] == [
        ("z", "z-cost", "dear"),
        ("a", "a-cost", "cheap"),
    ]


def test_two_custom_policies_of_one_name_are_two_groups() -> None:
    snapshot = two_pools()
    by_cost = custom_policy({"cost": 1.0})
    by_distance = custom_policy({"distance": 1.0})
    decisions = decide(
        [
            queued(gpu("a").from_("上海").build(), policy=by_cost),
            queued(gpu("b").from_("上海").build(), policy=by_distance),
        ],
        snapshot,
        everything_free(snapshot),
        COST,
        0.0,
    )
    assert [d.pool for d in decisions] == ["cheap", "dear"]  # YRD_DEMO is next to 上海


def test_duplicate_task_ids_are_refused() -> None:
    snapshot = two_pools()
    task = gpu("same").build()
    with pytest.raises(InvalidValue, match=r"queue\.task\.id"):
        decide([queued(task), queued(task)], snapshot, everything_free(snapshot), COST, 0.0)


def test_the_engine_columns_kept_between_decisions_follow_the_network() -> None:
    """The site and pool columns are reused while the sites, series and pools are the same
    objects and fields; a pool's count and free are read afresh every time; another price or
    another series gives other columns (what a cached copy must never hide)."""
    from suanli.scheduler.arrays import pool_arrays

    snapshot = two_pools()
    first = pool_arrays(snapshot)
    busier = replace(snapshot, pools=(replace(snapshot.pools[0], free=1), snapshot.pools[1]))
    second = pool_arrays(busier)
    assert second.energy_prefix is first.energy_prefix  # kept
    assert list(second.free) == [1, 2] and list(first.free) == [2, 2]
    dearer = replace(
        snapshot,
        pools=(replace(snapshot.pools[0], price_fen_per_device_hour=500), snapshot.pools[1]),
    )
    assert list(pool_arrays(dearer).price_fen_per_device_hour) == [500.0, 300.0]
    # a pass deciding on it: the dearer pool is no longer the cheap one
    (d,) = decide([queued(gpu("a").build())], dearer, everything_free(dearer), COST, 0.0)
    assert d.pool == "dear"
    greener = replace(
        snapshot,
        series={
            s: SiteSeries(np.ones(24), np.full(24, 0.01 * (n + 1)))
            for n, s in enumerate(sorted(snapshot.sites))
        },
    )
    assert not np.array_equal(pool_arrays(greener).carbon_prefix, first.carbon_prefix)


def test_a_task_no_pool_it_may_use_has_room_for_is_queued_beside_the_others() -> None:
    """The H800 pool is full and the A100 pool free: the task for H800s only is queued (in a
    replay with the short reason, live with the engine's counts per constraint), and the task
    that takes any GPU is placed the same either way."""
    snapshot = a_snapshot(
        a_pool_at("h800", "ZJK", "H800", 2, 100),
        a_pool_at("a100", "YRD_DEMO", "A100 SXM4", 2, 300),
    )
    capacity = Capacity({"h800": PoolCapacity(2, held=2), "a100": PoolCapacity(2)})
    tasks = [queued(gpu("only-h800").models("H800").build()), queued(gpu("any").build())]
    replay = decide(tasks, snapshot, capacity, COST, 0.0, explain=False)
    live = decide(tasks, snapshot, capacity, COST, 0.0)
    assert [(d.action, d.pool) for d in replay] == [(Action.QUEUE, None), (Action.PLACE, "a100")]
    assert [(d.action, d.pool) for d in live] == [(d.action, d.pool) for d in replay]
    assert replay[0].reason == BLOCKED.format(devices=1)
    assert live[0].reasons == {"device model": 1, "free capacity": 1}
    # a task the engine cannot read is still rejected alone when nothing has room
    broken = replace(gpu("broken").build(), device_models=frozenset({"no-such-device"}))
    full = Capacity({"h800": PoolCapacity(2, held=2), "a100": PoolCapacity(2, held=2)})
    (d,) = decide([queued(broken)], snapshot, full, COST, 0.0, explain=False)
    assert d.action is Action.REJECT


def test_the_pools_a_task_may_use_are_kept_only_for_that_task_on_that_network() -> None:
    """Kept between calls for the same task object on the same network; a pool that changes
    its device (another network to the memo) is worked out again, never read from the memo."""
    h800 = a_snapshot(a_pool_at("pool", "ZJK", "H800", 1, 100))
    task = gpu("a").models("H800").build()
    for _ in range(2):
        (d,) = decide([queued(task)], h800, everything_free(h800), COST, 0.0, explain=False)
        assert (d.action, d.pool) == (Action.PLACE, "pool")
    a100 = replace(h800, pools=(a_pool_at("pool", "ZJK", "A100 SXM4", 1, 100),))
    (d,) = decide([queued(task)], a100, everything_free(a100), COST, 0.0, explain=False)
    assert (d.action, d.reason) == (Action.QUEUE, BLOCKED.format(devices=1))


def test_the_engine_looks_only_at_a_window_of_tasks_that_could_start_now() -> None:
    """Ten tasks could take the one free H800 and two are blocked (they want the full A100
    pool): with a window of 4, the engine is handed the first four that could start (queue
    order, across policy groups), the first of them is placed, the other six wait behind them,
    and the blocked ones keep their own reason, wherever they stand in the queue."""
    snapshot = a_snapshot(
        a_pool_at("h800", "ZJK", "H800", 4, 100),
        a_pool_at("a100", "YRD_DEMO", "A100 SXM4", 2, 300),
    )
    capacity = Capacity({"h800": PoolCapacity(4, held=3), "a100": PoolCapacity(2, held=2)})
    blocked = [queued(gpu(f"a100-{n}").models("A100 SXM4").build()) for n in range(2)]
    could = [queued(gpu(f"t{n}").build(), policy=GREEN if n % 2 else None) for n in range(10)]
    queue = [blocked[0], *could[:5], blocked[1], *could[5:]]
    decisions = {d.task: d for d in decide(queue, snapshot, capacity, COST, 0.0, window=4)}
    assert decisions["t0"].action is Action.PLACE and decisions["t0"].pool == "h800"
    for n in range(1, 4):  # handed to the engine, found no room once t0 took the GPU
        assert decisions[f"t{n}"].action is Action.QUEUE
        assert decisions[f"t{n}"].reason != BEHIND.format(window=4)
    for n in range(4, 10):
        assert decisions[f"t{n}"].action is Action.QUEUE
        assert decisions[f"t{n}"].reason == BEHIND.format(window=4)
        assert decisions[f"t{n}"].policy == ("green" if n % 2 else "cost")
    assert "free capacity" in decisions["a100-1"].reason
    # with a window wide enough the same queue is decided as before
    wide = {d.task: d for d in decide(queue, snapshot, capacity, COST, 0.0, window=100)}
    assert not any(d.reason == BEHIND.format(window=100) for d in wide.values())
    assert [d.task for d in wide.values() if d.action is Action.PLACE] == ["t0"]
    with pytest.raises(InvalidValue) as caught:
        decide(queue, snapshot, capacity, COST, 0.0, window=0)
    assert caught.value.field == "window"


def greenest_at_3_then_4(devices: int):
    site = find_site("ZJK")
    carbon = np.full(24, site.grid_kgco2_per_kwh)
    carbon[3] *= 0.2
    carbon[4] *= 0.5
    return a_snapshot(
        a_pool_at("zjk", "ZJK", "H800", devices, 100),
        series={"ZJK": SiteSeries(np.ones(24), carbon)},
    )


def test_a_deferral_goes_only_to_an_hour_its_pool_has_room_for() -> None:
    """Hour 3 is the greenest, hour 4 the next: a task deferred earlier holds the one device at
    hour 3, so a new deferral takes hour 4; held through hours 3 and 4 (a running task's
    expected end), it starts now; and within one call, of two tasks on a pool of two with one
    device held at hour 3, one takes hour 3 and the other hour 4."""
    flex = gpu("flex").deadline(6 * HOUR).deferrable().build()
    one = greenest_at_3_then_4(1)
    free = everything_free(one)
    (alone,) = decide([queued(flex)], one, free, GREEN, 0.0)
    assert alone.not_before_s == 3 * HOUR
    held_at_3 = replace(free, booked=(Booking("zjk", 1, 3 * HOUR, 3.5 * HOUR),))
    (d,) = decide([queued(flex)], one, held_at_3, GREEN, 0.0)
    assert (d.action, d.not_before_s) == (Action.WAIT, 4 * HOUR)
    held_on = replace(free, booked=(Booking("zjk", 1, 2.5 * HOUR, 4.5 * HOUR),))
    (now,) = decide([queued(flex)], one, held_on, GREEN, 0.0)
    assert now.action is Action.PLACE
    # another pool's booking changes nothing
    elsewhere = replace(free, booked=(Booking("other", 1, 0.0, 10 * HOUR),))
    assert decide([queued(flex)], one, elsewhere, GREEN, 0.0)[0].not_before_s == 3 * HOUR
    two = greenest_at_3_then_4(2)
    capacity = replace(everything_free(two), booked=(Booking("zjk", 1, 3 * HOUR, 4 * HOUR),))
    other = gpu("flex-2").deadline(6 * HOUR).deferrable().build()
    decisions = decide([queued(flex), queued(other)], two, capacity, GREEN, 0.0)
    assert sorted(d.not_before_s for d in decisions) == [3 * HOUR, 4 * HOUR]


def test_a_deferral_whose_hour_came_takes_its_booked_pool_first() -> None:
    """At its hour a deferred task goes to the pool its deferral was booked on, ahead of the
    other tasks and of the policy's own choice, where that pool has room; where it has none,
    it is decided with the others."""
    snapshot = two_pools(cheap=1, dear=1)
    back = queued(gpu("back").build(), not_before_s=HOUR, booked_pool="dear")
    new = queued(gpu("new").build())
    decisions = decide([new, back], snapshot, everything_free(snapshot), COST, 2 * HOUR)
    assert [(d.task, d.action, d.pool) for d in decisions] == [
        ("new", Action.PLACE, "cheap"),
        ("back", Action.PLACE, "dear"),
    ]
    dear_full = Capacity({"cheap": PoolCapacity(1), "dear": PoolCapacity(1, held=1)})
    (d,) = decide([back], snapshot, dear_full, COST, 2 * HOUR)
    assert (d.action, d.pool) == (Action.PLACE, "cheap")
    # before its hour it waits, whatever its pool has free
    (early,) = decide([back], snapshot, everything_free(snapshot), COST, 0.5 * HOUR)
    assert early.action is Action.WAIT
