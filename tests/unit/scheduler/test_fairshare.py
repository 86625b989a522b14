"""Fair share between groups (pure): the fair order (weighted dominant-resource fairness), caps,
borrowing of idle capacity, and the choice of the running tasks that give way (borrowed work
back to a group below its guarantee; preemptible work to guaranteed work)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from suanli.errors import InvalidValue
from suanli.scheduler import QueuedTask
from suanli.scheduler.fairshare import (
    PUBLIC,
    FairShare,
    Group,
    Holding,
    PoolSlot,
    period_start,
)
from tests.builders import a_task

GPUS = PoolSlot("gpus", "gpu", "H800", 4)
CPUS = PoolSlot("cpus", "cpu", "cpu", 8)


def gpu(ident: str, n: int = 1, at: float = 0.0) -> QueuedTask:
    return QueuedTask(a_task(ident).gpus(n).work(1e15).build(), at)


def cpu(ident: str, n: int = 1, at: float = 0.0) -> QueuedTask:
    return QueuedTask(a_task(ident).cpus(n).work(1e12).build(), at)


def two_groups(a_bp: int = 5000, b_bp: int = 5000, **a: object) -> dict[str, Group]:
    return {
        "A": Group("A", "alpha", a_bp, **a),  # type: ignore[arg-type]
        "B": Group("B", "beta", b_bp),
    }


def fair(
    queue: Sequence[QueuedTask],
    groups: Mapping[str, Group] | None = None,
    holdings: Sequence[Holding] = (),
    pools: Sequence[PoolSlot] = (GPUS,),
) -> FairShare:
    """Tasks named a* belong to group A, b* to B, anything else to the public group."""
    owner = {q.task.id: q.task.id[0].upper() for q in queue}
    return FairShare(
        groups if groups is not None else two_groups(),
        {p.id: p for p in pools},
        list(holdings),
        list(queue),
        {t: g if g in "AB" else PUBLIC for t, g in owner.items()},
    )


def no_flags(ids: Sequence[str]) -> dict[str, bool]:
    return {}


def ids(batch: Sequence[QueuedTask]) -> list[str]:
    return [q.task.id for q in batch]


# --- the fair order ---------------------------------------------------------------------------


def test_nothing_contends_everything_is_given_at_once() -> None:
    queue = [gpu("a1"), gpu("b1"), gpu("b2", 2)]
    share = fair(queue)
    assert ids(share.next_batch({"gpus": 4})) == ["a1", "b1", "b2"]
    assert share.next_batch({"gpus": 0}) == []  # each task once
    assert share.waits == {}


def test_one_group_alone_borrows_the_whole_network() -> None:
    """Borrowing: the other group is idle, so nothing is withheld, even beyond the free
    devices (the engine keeps what does not fit queued with its own reason)."""
    queue = [gpu(f"a{i}") for i in range(6)]
    share = fair(queue)
    assert len(share.next_batch({"gpus": 4})) == 6


def test_contending_equal_groups_get_equal_shares() -> None:
    queue = [gpu(f"a{i}", at=i) for i in range(4)] + [gpu(f"b{i}", at=10 + i) for i in range(4)]
    share = fair(queue)
    batch = ids(share.next_batch({"gpus": 4}))
    assert sorted(batch) == ["a0", "a1", "b0", "b1"]  # FIFO within each group
    waits = share.waits
    assert set(waits) == {"a2", "a3", "b2", "b3"}
    assert "fair share" in waits["a2"] and "公平份额" in waits["a2"] and "alpha" in waits["a2"]


def test_the_group_holding_less_goes_first() -> None:
    held = [Holding(f"old{i}", "A", "gpus", 1, 0.0) for i in range(2)]
    queue = [gpu("a1", at=0), gpu("a2", at=1), gpu("b1", at=5), gpu("b2", at=6)]
    share = fair(queue, holdings=held)
    assert sorted(ids(share.next_batch({"gpus": 2}))) == ["b1", "b2"]


def test_shares_are_weighted_by_the_guarantee() -> None:
    pool = PoolSlot("gpus", "gpu", "H800", 8)
    queue = [gpu(f"a{i}", at=i) for i in range(8)] + [gpu(f"b{i}", at=i) for i in range(8)]
    share = fair(queue, two_groups(7500, 2500), pools=[pool])
    batch = ids(share.next_batch({"gpus": 8}))
    assert sum(t.startswith("a") for t in batch) == 6 and sum(t.startswith("b") for t in batch) == 2


def test_the_dominant_kind_decides() -> None:
    """A holds half the CPUs (its dominant share 1.0 of its 50%), B a quarter of the GPUs
    (0.5): B's next GPU task goes before A's."""
    held = [Holding("acpu", "A", "cpus", 4, 0.0), Holding("bgpu", "B", "gpus", 1, 0.0)]
    queue = [gpu("a1", at=0), gpu("b1", at=1)]
    share = fair(queue, holdings=held, pools=[GPUS, CPUS])
    assert ids(share.next_batch({"gpus": 1, "cpus": 0})) == ["b1"]  # though a1 came first


def test_used_device_hours_break_ties() -> None:
    groups = {
        "A": Group("A", "alpha", 5000, None, used_device_hours=10.0),
        "B": Group("B", "beta", 5000, None, used_device_hours=2.0),
    }
    share = fair([gpu("a1", at=0), gpu("b1", at=9)], groups)
    assert ids(share.next_batch({"gpus": 1})) == ["b1"]


def test_a_task_too_big_for_what_is_free_lets_smaller_ones_through() -> None:
    queue = [gpu("a1", 4, at=0), gpu("a2", 1, at=1), gpu("b1", 1, at=2)]
    share = fair(queue)
    assert sorted(ids(share.next_batch({"gpus": 2}))) == ["a2", "b1"]
    assert ids(share.next_batch({"gpus": 4})) == ["a1"]  # a later round, more free: its turn


def test_placed_tasks_count_in_the_next_round() -> None:
    queue = [gpu(f"a{i}", at=i) for i in range(3)] + [gpu(f"b{i}", at=i) for i in range(3)]
    share = fair(queue)
    first = ids(share.next_batch({"gpus": 2}))
    share.placed(first)
    assert set(ids(share.next_batch({"gpus": 2}))) == {"a1", "b1"}


def test_guaranteed_work_goes_before_preemptible_work_when_the_network_is_full() -> None:
    """A preempted task queued again (pinned to its pool) must not take back the devices its
    preemption freed: under contention non-preemptible work goes first, even in one group."""
    spot = QueuedTask(gpu("x0").task, 0.0, pinned_pool="gpus")
    queue = [spot, gpu("x1", at=1.0), gpu("x2", at=2.0)]
    share = fair(queue, groups={})
    share.spot = lambda: {"x0"}
    assert ids(share.next_batch({"gpus": 2})) == ["x1", "x2"]
    assert ids(share.next_batch({"gpus": 0})) == []
    assert "non-preemptible work goes first" in share.waits["x0"]
    # when everything fits, everything is given
    share = fair(queue, groups={})
    share.spot = lambda: {"x0"}
    assert ids(share.next_batch({"gpus": 3})) == ["x0", "x1", "x2"]


# --- caps -------------------------------------------------------------------------------------


def test_a_group_at_its_cap_waits_with_the_quota_reason() -> None:
    groups = two_groups(cap_device_hours=5.0, used_device_hours=5.25, period="week")
    share = fair([gpu("a1"), gpu("b1")], groups)
    assert ids(share.next_batch({"gpus": 4})) == ["b1"]
    reason = share.waits["a1"]
    assert reason.startswith("quota: group alpha used 5.25 of its cap 5 device-hours this week")
    assert "配额" in reason
    assert share.preemptions({"gpus": 0}, 0.0, no_flags) == {}  # a capped group takes nothing


def test_below_the_cap_nothing_waits() -> None:
    groups = two_groups(cap_device_hours=5.0, used_device_hours=4.9)
    assert ids(fair([gpu("a1")], groups).next_batch({"gpus": 4})) == ["a1"]


# --- preemption -------------------------------------------------------------------------------


def test_borrowed_work_gives_back_just_enough_most_recent_first() -> None:
    """B borrowed the whole pool (guaranteed 2 of 4); A's 1-GPU task takes one back: B's most
    recently started task."""
    held = [Holding(f"b{i}", "B", "gpus", 1, float(i)) for i in range(4)]
    share = fair([gpu("a1")], holdings=held)
    share.next_batch({"gpus": 0})
    chosen = share.preemptions({"gpus": 0}, 10.0, no_flags)
    assert list(chosen) == ["b3"]
    assert "borrowed" in chosen["b3"] and "beta" in chosen["b3"] and "抢占" in chosen["b3"]


def test_preemptible_borrowed_work_goes_first() -> None:
    held = [Holding(f"b{i}", "B", "gpus", 1, float(i), preemptible=i == 0) for i in range(4)]
    share = fair([gpu("a1")], holdings=held)
    assert list(share.preemptions({"gpus": 0}, 10.0, no_flags)) == ["b0"]


def test_a_group_is_never_preempted_below_its_guarantee() -> None:
    held = [Holding("b0", "B", "gpus", 2, 0.0), Holding("a0", "A", "gpus", 2, 0.0)]
    share = fair([gpu("a1")], holdings=held)  # A is at its guarantee: nothing owed
    assert share.preemptions({"gpus": 0}, 10.0, no_flags) == {}
    share = fair([gpu("b1")], holdings=held)
    assert share.preemptions({"gpus": 0}, 10.0, no_flags) == {}


def test_a_queued_task_made_room_for_is_not_held_work_its_group_gives_back() -> None:
    """Two CPUs, A and B guaranteed one each; B runs one CPU task, A's other CPU is on its way
    back (asked before) and A holds the whole GPU pool, so B goes first in fair order. B's b1
    counts on the CPU coming back; A's a1 (owed: A holds no CPU) must not then take B's running
    task as if B held two CPUs: b1 holds nothing yet, and B would be left below its guarantee."""
    cpus = PoolSlot("cpus", "cpu", "cpu", 2)
    held = [
        Holding("a_gpus", "A", "gpus", 4, 0.0),
        Holding("a_back", "A", "cpus", 1, 0.0, preempt_requested=True),
        Holding("b_run", "B", "cpus", 1, 1.0),
    ]
    share = fair([cpu("b1", at=0.0), cpu("a1", at=1.0)], holdings=held, pools=[GPUS, cpus])
    assert share.preemptions({"gpus": 0, "cpus": 0}, 10.0, no_flags) == {}


def test_free_devices_and_those_already_asked_back_count() -> None:
    held = [
        Holding("b0", "B", "gpus", 1, 0.0),
        Holding("b1", "B", "gpus", 1, 1.0),
        Holding("b2", "B", "gpus", 1, 2.0, preempt_requested=True),
    ]
    share = fair([gpu("a1", 2)], holdings=held)
    chosen = share.preemptions({"gpus": 1}, 10.0, no_flags)
    assert chosen == {}  # one free and one on its way back: two, enough


def test_preemptible_work_gives_way_to_guaranteed_work_without_groups() -> None:
    held = [
        Holding("p0", PUBLIC, "gpus", 2, 0.0, preemptible=True),
        Holding("p1", PUBLIC, "gpus", 2, 1.0, preemptible=False),
    ]
    queue = [gpu("x1", 2)]
    share = fair(queue, groups={}, holdings=held)
    chosen = share.preemptions({"gpus": 0}, 10.0, no_flags)
    assert list(chosen) == ["p0"] and "preemptible" in chosen["p0"]
    # a preemptible task never preempts
    share = fair(queue, groups={}, holdings=held)
    assert share.preemptions({"gpus": 0}, 10.0, lambda i: dict.fromkeys(i, True)) == {}


def test_a_task_asked_to_preempt_is_not_chosen_again() -> None:
    held = [Holding("p0", PUBLIC, "gpus", 4, 0.0, preemptible=True, preempt_requested=True)]
    share = fair([gpu("x1", 4), gpu("x2", 4, at=1)], groups={}, holdings=held)
    assert share.preemptions({"gpus": 0}, 10.0, no_flags) == {}


def test_preemption_only_on_a_pool_of_the_right_kind_and_when_the_step_agrees() -> None:
    held = [Holding("c0", PUBLIC, "cpus", 8, 0.0, preemptible=True)]
    share = fair([gpu("x1")], groups={}, holdings=held, pools=[GPUS, CPUS])
    assert share.preemptions({"gpus": 0, "cpus": 0}, 10.0, no_flags) == {}
    held = [Holding("g0", PUBLIC, "gpus", 4, 0.0, preemptible=True)]
    share = fair([gpu("x1")], groups={}, holdings=held)
    assert share.preemptions({"gpus": 0}, 10.0, no_flags, lambda q, p, n: False) == {}
    seen: list[tuple[str, str, int]] = []

    def verify(q: QueuedTask, pool: str, freed: int) -> bool:
        seen.append((q.task.id, pool, freed))
        return True

    assert list(share.preemptions({"gpus": 0}, 10.0, no_flags, verify)) == ["g0"]
    assert seen == [("x1", "gpus", 4)]


def test_a_placed_refused_or_deferred_task_preempts_nothing() -> None:
    held = [Holding("g0", PUBLIC, "gpus", 4, 0.0, preemptible=True)]
    share = fair([gpu("x1")], groups={}, holdings=held)
    share.next_batch({"gpus": 0})
    share.placed(["x1"])
    assert share.preemptions({"gpus": 0}, 10.0, no_flags) == {}
    share = fair([gpu("x1")], groups={}, holdings=held)
    share.refused_ids.add("x1")  # admission refused it: freeing devices would not place it
    assert share.preemptions({"gpus": 0}, 10.0, no_flags) == {}
    later = QueuedTask(gpu("x2").task, 0.0, not_before_s=100.0)
    assert fair([later], groups={}, holdings=held).preemptions({"gpus": 0}, 10.0, no_flags) == {}


# --- periods ----------------------------------------------------------------------------------


def test_periods_start_at_midnight_china_standard_time() -> None:
    moment = datetime(2026, 12, 2, 15, 30, tzinfo=UTC)  # Wednesday 23:30 CST
    assert period_start("day", moment) == datetime(2026, 12, 1, 16, 0, tzinfo=UTC)
    assert period_start("week", moment) == datetime(2026, 11, 29, 16, 0, tzinfo=UTC)  # Mon
    assert period_start("month", moment) == datetime(2026, 11, 30, 16, 0, tzinfo=UTC)
    after = datetime(2026, 12, 2, 16, 30, tzinfo=UTC)  # Thursday 00:30 CST
    assert period_start("day", after) == datetime(2026, 12, 2, 16, 0, tzinfo=UTC)
    with pytest.raises(InvalidValue):
        period_start("year", moment)


# --- properties -------------------------------------------------------------------------------


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[FairShare, dict[str, int], list[QueuedTask]]:
    a_bp = draw(st.integers(0, 10_000))
    b_bp = draw(st.integers(0, 10_000 - a_bp))
    pools = [PoolSlot("gpus", "gpu", "H800", draw(st.integers(1, 8))), CPUS]
    queue = []
    for i in range(draw(st.integers(0, 16))):
        group = draw(st.sampled_from("abx"))
        kind = draw(st.sampled_from([gpu, cpu]))
        queue.append(kind(f"{group}{i}", draw(st.integers(1, 4)), at=float(i)))
    holdings = []
    for i in range(draw(st.integers(0, 6))):
        holdings.append(
            Holding(
                f"h{i}",
                draw(st.sampled_from(["A", "B", PUBLIC])),
                draw(st.sampled_from(["gpus", "cpus"])),
                draw(st.integers(1, 3)),
                float(draw(st.integers(0, 50))),
                draw(st.booleans()),
                draw(st.booleans()),
                draw(st.booleans()),
            )
        )
    free = {p.id: draw(st.integers(0, p.count)) for p in pools}
    return fair(queue, two_groups(a_bp, b_bp), holdings, pools), free, queue


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_every_task_is_given_once_and_a_fair_batch_fits(
    scenario: tuple[FairShare, dict[str, int], list[QueuedTask]],
) -> None:
    share, free, queue = scenario
    seen: list[str] = []
    for _ in range(4):
        batch = share.next_batch(free)
        seen += ids(batch)
        groups = {share.group_of(q.task.id).id for q in batch}
        if len(groups) > 1:  # contended: the batch fits what is free of each kind
            for kind, pool in (("gpu", "gpus"), ("cpu", "cpus")):
                need = sum(q.task.devices for q in batch if q.task.device_kind.value == kind)
                assert need <= free[pool], batch
        share.placed(ids(batch)[:1])
    assert len(seen) == len(set(seen))
    assert set(seen) | set(share.waits) == {q.task.id for q in queue}
    assert not set(seen) & set(share.waits)


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_victims_are_running_on_one_pool_of_the_kind_and_just_enough(
    scenario: tuple[FairShare, dict[str, int], list[QueuedTask]],
) -> None:
    share, free, _ = scenario
    share.next_batch(free)
    chosen = share.preemptions(free, 100.0, no_flags)
    by_id = {h.task: h for h in share.holdings}
    for ident, reason in chosen.items():
        h = by_id[ident]
        assert h.running and not h.preempt_requested
        assert reason.startswith("preempted: ")
    # a group is never taken below its guarantee by rule (a): borrowed victims are not
    # preemptible, or are preemptible (rule b may take those)
    for kind, pool in (("gpu", "gpus"), ("cpu", "cpus")):
        for group in ("A", "B", PUBLIC):
            taken = sum(
                by_id[i].devices
                for i in chosen
                if by_id[i].pool == pool
                and share.group_of_id(by_id[i].group) == group
                and not by_id[i].preemptible
            )
            if taken:
                left = share.held.get(group, {}).get(kind, 0) - sum(
                    h.devices
                    for h in share.holdings
                    if h.pool == pool
                    and share.group_of_id(h.group) == group
                    and (h.preempt_requested or (h.task in chosen and not h.preemptible))
                )
                assert left >= share.guaranteed(group, kind) - 1e-9


def test_equal_groups_over_a_run_get_equal_device_time() -> None:
    """Ten devices, two equal groups each queuing far more unit tasks than fit, tasks of
    random lengths: over the run each group holds within 5% of half the device time."""
    import random

    rng = random.Random(7)
    pool = PoolSlot("gpus", "gpu", "H800", 10)
    queue = [gpu(f"a{i}", at=float(i)) for i in range(400)]
    queue += [gpu(f"b{i}", at=float(i) + 0.5) for i in range(400)]
    running: list[tuple[int, str]] = []  # (ends at step, task)
    done: set[str] = set()
    device_steps = {"A": 0, "B": 0}
    for step in range(200):
        running = [(end, t) for end, t in running if end > step]
        holdings = [Holding(t, t[0].upper(), "gpus", 1, 0.0) for _, t in running]
        waiting = [q for q in queue if q.task.id not in done]
        share = fair(waiting, holdings=holdings, pools=[pool])
        batch = share.next_batch({"gpus": 10 - len(running)})
        for q in batch[: 10 - len(running)]:
            running.append((step + rng.randint(1, 5), q.task.id))
            done.add(q.task.id)
        for _, t in running:
            device_steps[t[0].upper()] += 1
    total = sum(device_steps.values())
    assert abs(device_steps["A"] / total - 0.5) <= 0.025, device_steps
