"""One decision step ("Done when" of issue 14): on random queues and capacities, the live pass,
the quote and the twin's tick give the same decision for the same inputs.

Each example draws a network (catalog clusters, pools with their devices, devices held by
suanli's tasks, devices the engine reports busy, the engine's queue depth), a queue (specs of
every kind, some deferrable with deadlines, some with their own policy, some pinned to a pool,
some deferred earlier, some waiting too long) and a clock. The live side is a real SQLite store
holding rows that produce those inputs, decided by `plan_pass` and written by `apply_pass`; the
reference side builds the same inputs from the drawn values alone (catalog sites, the twin's
series construction) and calls `scheduler.decide`, and the twin's `tick` on its own counters
and clock (for worlds without an engine queue, which the twin does not model). A single-task
queue is also quoted: the quote's first option is the decision's pool and start.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.orm import Session

from suanli.catalog import Pool, find_site
from suanli.clock import VirtualClock
from suanli.metering import find_device
from suanli.scheduler import POLICIES as ENGINE_POLICIES
from suanli.scheduler import (
    Action,
    Capacity,
    Decision,
    PoolCapacity,
    QueuedTask,
    Snapshot,
    decide,
    engine_task,
    policy_named,
)
from suanli.scheduler.series import network_series, series_start
from suanli.services import capacity as capacity_service
from suanli.services import market
from suanli.services import scheduling as scheduling_service
from suanli.services import tasks as tasks_service
from suanli.services.commands import PoolCommand, SiteCommand
from suanli.services.core import Role, State, create_token
from suanli.sim.twin import Network, tick
from suanli.store.db import make_engine, session_factory, upgrade
from suanli.store.models import EventRow, PoolRow, TaskRow
from tests.money import principal_token

CLUSTERS = ("HORINGER", "ZHONGWEI", "GUIAN", "YRD_DEMO", "SHAOGUAN", "ZJK")
DEVICES = ("cpu", "A100 SXM4", "T4", "H800")
ORIGINS = ("北京", "上海", "广州", "成都")
POLICIES = tuple(sorted(ENGINE_POLICIES))  # every policy a task may name
DEFAULT_POLICY = "balanced"
MAX_WAIT_S = 2 * 86400.0
HOLDER = {
    "executors": [{"command": ["true"]}],
    "resources": {"devices": 1, "device_kind": "cpu", "precision": "fp32", "workload": "general"},
}


@dataclass(frozen=True)
class PoolDraw:
    site: int  # index into the world's clusters
    device: str
    count: int
    held: int
    unavailable: int
    queue_depth: int
    price: int


@dataclass(frozen=True)
class TaskDraw:
    spec: dict[str, Any]
    age_s: int  # in the queue for this long at the clock
    not_before_s: int | None  # deferred earlier: seconds from the clock (negative: due)
    pinned: int | None  # index into the world's pools


@dataclass(frozen=True)
class World:
    clusters: tuple[str, ...]
    pools: tuple[PoolDraw, ...]
    tasks: tuple[TaskDraw, ...]
    clock: datetime


@st.composite
def pool_draws(draw: st.DrawFn, sites: int) -> PoolDraw:
    count = draw(st.integers(1, 8))
    held = draw(st.integers(0, count))
    return PoolDraw(
        site=draw(st.integers(0, sites - 1)),
        device=draw(st.sampled_from(DEVICES)),
        count=count,
        held=held,
        unavailable=draw(st.integers(0, count - held)),
        queue_depth=draw(st.sampled_from((0, 0, 1, 2))),
        price=draw(st.integers(50, 5000)),
    )


@st.composite
def task_draws(draw: st.DrawFn, pools: int) -> TaskDraw:
    kind = draw(st.sampled_from(("cpu", "gpu")))
    deadline = draw(st.sampled_from((None, 4 * 3600.0, 20 * 3600.0, 40 * 3600.0, 40 * 3600.0)))
    spec: dict[str, Any] = {
        "executors": [{"command": ["true"]}],
        "resources": {
            "devices": draw(st.sampled_from((1, 1, 2, 4, 8))),
            "device_kind": kind,
            "precision": draw(st.sampled_from(("fp32", "fp16"))),
            "workload": "general",
            "duration_s": float(draw(st.sampled_from((60, 1800, 3600, 4 * 3600)))),
        },
        "origin": draw(st.sampled_from(ORIGINS)),
        "latency_tier": draw(st.sampled_from(("batch", "batch", "standard", "interactive"))),
        "deadline_s": deadline,
        "deferrable": draw(st.sampled_from((True, True, False))) and deadline is not None,
        "policy": draw(st.sampled_from((None, None, *POLICIES))),
    }
    return TaskDraw(
        spec=spec,
        age_s=draw(st.sampled_from((0, 0, 600, 3600, 3 * 86400))),
        not_before_s=draw(st.sampled_from((None, None, None, -600, 3 * 3600))),
        pinned=draw(st.one_of(st.none(), st.none(), st.integers(0, pools - 1))),
    )


@st.composite
def worlds(draw: st.DrawFn, max_tasks: int = 6) -> World:
    clusters = tuple(draw(st.lists(st.sampled_from(CLUSTERS), min_size=1, max_size=3, unique=True)))
    pools = tuple(draw(st.lists(pool_draws(len(clusters)), min_size=1, max_size=4)))
    if draw(st.booleans()):  # no engine queue anywhere: the twin's tick can be compared too
        pools = tuple(replace(p, queue_depth=0) for p in pools)
    if draw(st.booleans()):  # a single fresh task: the quote can be compared too
        tasks: tuple[TaskDraw, ...] = (
            replace(draw(task_draws(len(pools))), age_s=0, not_before_s=None, pinned=None),
        )
    else:
        tasks = tuple(draw(st.lists(task_draws(len(pools)), min_size=2, max_size=max_tasks)))
    month = draw(st.sampled_from((1, 7)))
    minute = draw(st.integers(0, 24 * 60 - 1))
    clock = datetime(2026, month, 10, tzinfo=UTC) + timedelta(minutes=minute)
    return World(clusters, pools, tasks, clock)


# --- the live side: a real store holding rows that produce the world's inputs -------------


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, copied for every example (migrating each time is slow)."""
    path = tmp_path_factory.mktemp("one-step") / "template.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()
    return path


@dataclass
class Live:
    sessions: Any
    clock: VirtualClock
    consumer: Any
    site_ids: list[str]
    pool_ids: list[str]
    task_ids: list[str]

    def session(self) -> Session:
        session: Session = self.sessions()
        session.info["clock"] = self.clock
        return session


def build_store(url: str, world: World) -> Iterator[Live]:
    engine = make_engine(url)
    sessions = session_factory(engine)
    clock = VirtualClock(world.clock - timedelta(days=4))  # rows are made before the clock
    live = Live(sessions, clock, None, [], [], [])
    with live.session() as s, s.begin():
        provider, _ = create_token(s, Role.PROVIDER, "dc")
        consumer, _ = principal_token(s, Role.CONSUMER, "c")  # funded: every task is an order
        for cluster in world.clusters:
            command = SiteCommand(name=cluster, cluster=cluster)
            site = capacity_service.add_site(s, provider, command)
            s.flush()
            live.site_ids.append(site.id)
        for pool in world.pools:
            row = capacity_service.add_pool(
                s,
                provider,
                PoolCommand(
                    site_id=live.site_ids[pool.site],
                    device=pool.device,
                    count=pool.count,
                    price_fen_per_device_hour=pool.price,
                    queue_depth=pool.queue_depth,
                ),
            )
            s.flush()
            row.unavailable = pool.unavailable
            live.pool_ids.append(row.id)
            if pool.held:  # a running task of suanli's holds these devices
                holder, _ = tasks_service.submit(s, consumer, HOLDER, None)
                holder.state, holder.pool_id, holder.devices = (
                    State.RUNNING.value,
                    row.id,
                    pool.held,
                )
        for n, task in enumerate(world.tasks):
            row, _ = tasks_service.submit(s, consumer, task.spec, None)
            created = world.clock - timedelta(seconds=task.age_s + n)  # distinct, in draw order
            row.created_at = row.updated_at = created
            if task.not_before_s is not None:
                row.not_before = world.clock + timedelta(seconds=task.not_before_s)
            if task.pinned is not None:
                row.pinned_pool_id = live.pool_ids[task.pinned]
            live.task_ids.append(row.id)
        s.expunge(consumer)
        live.consumer = consumer
    clock.set(world.clock)
    try:
        yield live
    finally:
        engine.dispose()


# --- the reference side: the same inputs from the drawn values alone -----------------------


def reference(world: World, live: Live) -> tuple[tuple[Decision, ...], list[tuple[Any, ...]]]:
    """What the twin's tick decides on these inputs: catalog sites, the twin's series, the
    drawn capacity, the drawn queue; `scheduler.decide`."""
    sites = {  # a provider's site on a catalog cluster stands at the cluster's place
        sid: replace(find_site(c), id=sid, place_id=c)
        for sid, c in zip(live.site_ids, world.clusters, strict=True)
    }
    by_id = sorted(zip(live.pool_ids, world.pools, strict=True), key=lambda pair: pair[0])
    pools = tuple(
        Pool(pid, live.site_ids[p.site], find_device(p.device), p.count, 0, p.price)
        for pid, p in by_id
    )
    capacity = Capacity(
        {pid: PoolCapacity(p.count, p.held, p.unavailable, p.queue_depth) for pid, p in by_id}
    )
    clock = world.clock.timestamp()
    start_s, local_hour, month = series_start(clock)
    network = Snapshot(
        pools,
        sites,
        series=network_series(sites, month),
        series_start_s=start_s,
        local_hour_at_start=local_hour,
    )
    queue = []
    for n, (ident, task) in enumerate(zip(live.task_ids, world.tasks, strict=True)):
        submitted = clock - task.age_s - n
        policy = task.spec["policy"]
        queue.append(
            QueuedTask(
                engine_task(ident, task.spec, submitted),
                submitted,
                policy_named(policy) if policy else None,
                None if task.not_before_s is None else clock + task.not_before_s,
                None if task.pinned is None else live.pool_ids[task.pinned],
            )
        )
    # the queue in the pass's order: oldest first
    order = sorted(range(len(queue)), key=lambda i: (queue[i].submitted_s, queue[i].task.id))
    queue = [queue[i] for i in order]
    step = decide(
        queue, network, capacity, policy_named(DEFAULT_POLICY), clock, max_wait_s=MAX_WAIT_S
    )
    # the twin's tick on its own counters and its own clock (0 = a local midnight);
    # it has no engine queue, so only worlds without one
    twin: list[tuple[Any, ...]] = []
    if not any(p.queue_depth for p in world.pools):
        shift = start_s - 4 * 86400.0  # whole days (the series repeat): all times >= 0
        twin_queue = [
            replace(
                q,
                task=replace(
                    q.task,
                    deadline_s=None if q.task.deadline_s is None else q.task.deadline_s - shift,
                ),
                submitted_s=q.submitted_s - shift,
                not_before_s=None if q.not_before_s is None else q.not_before_s - shift,
            )
            for q in queue
        ]
        decided = tick(
            twin_queue,
            Network(sites, pools, dict(network.series), local_hour),
            {pid: capacity.free(pid) for pid, _ in by_id},
            policy_named(DEFAULT_POLICY),
            clock - shift,
            max_wait_s=MAX_WAIT_S,
        )
        twin = [
            (d.task, d.action, d.pool, d.reason, d.not_before_s and d.not_before_s + shift)
            for d in decided
        ]
    return step, twin


def start_options(session: Session, world: World) -> dict[str, tuple[str, set[float]]]:
    """For the world's one task, when it may be deferred: the pool of each start option a
    quote adds and the starts it may have (seconds from the clock): the decision step's under
    `green`; under `cost`, any whole hour the step could defer to (the quote takes the one of
    least price)."""
    spec = world.tasks[0].spec
    clock = world.clock.timestamp()
    task = engine_task("quote", spec, clock)
    if not task.deferrable or task.deadline_s is None:
        return {}
    inputs = capacity_service.step_inputs(session, world.clock)
    found: dict[str, tuple[str, set[float]]] = {}
    for listed_as, name in market.START_POLICIES:
        queued = QueuedTask(task, clock, policy_named(name))
        (decision,) = decide(
            [queued], inputs.network, inputs.capacity, policy_named(DEFAULT_POLICY), clock
        )
        if decision.placement is None:
            continue
        b = decision.placement.breakdown
        hours = range(inputs.network.max_delay_h + 1)
        within = {
            h * 3600.0
            for h in hours
            if h == 0 or clock + h * 3600.0 + b.transfer_s + b.duration_s <= task.deadline_s
        }
        if listed_as == "greenest-start":
            waited = decision.not_before_s
            within = {0.0 if waited is None else waited - clock}
        found[listed_as] = (decision.placement.pool, within)
    return found


def summary(decisions: tuple[Decision, ...]) -> list[tuple[Any, ...]]:
    return [(d.task, d.action, d.pool, d.reason, d.not_before_s) for d in decisions]


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(world=worlds())
def test_the_pass_the_quote_and_the_twin_decide_alike(
    world: World, template: Path, tmp_path: Path
) -> None:
    path = tmp_path / "store.db"
    path.unlink(missing_ok=True)
    shutil.copyfile(template, path)
    for live in build_store(f"sqlite:///{path}", world):
        expected, twin = reference(world, live)
        with live.session() as s:
            decided = scheduling_service.plan_pass(
                s, DEFAULT_POLICY, moment=world.clock, max_wait_s=MAX_WAIT_S
            )
        assert decided.decisions == expected  # the pass: the step on the same inputs
        if twin:  # the twin's tick: the same action, pool, reason and start for every task
            assert summary(decided.decisions) == twin
            event("compared with the twin's tick")
        for decision in expected:
            event(f"action: {decision.action.value}")

        single = len(world.tasks) == 1 and world.tasks[0].age_s == 0
        if single and world.tasks[0].not_before_s is None and world.tasks[0].pinned is None:
            with live.session() as s, s.begin():
                quoted = market.quote(s, live.consumer, world.tasks[0].spec, DEFAULT_POLICY)
            (decision,) = expected
            event("quoted")
            options, unavailable = quoted.options["options"], quoted.options["unavailable"]
            if decision.placement is None:
                assert (options, unavailable) == ([], decision.reason)
            else:
                start = 0.0
                if decision.not_before_s is not None:
                    start = decision.not_before_s - world.clock.timestamp()
                assert (options[0]["pool"], options[0]["start_s"]) == (decision.pool, start)
                assert options[0]["listed_as"] == "best"
                runner_up = decision.placement.runner_up
                head = [o for o in options[1:] if o["listed_as"] == "runner-up"]
                assert [o["pool"] for o in head] == ([runner_up] if runner_up else [])
                keys = [(o["pool"], round(o["start_s"])) for o in options]
                assert len(set(keys)) == len(keys)  # one pool and one start: one option
                with live.session() as s:
                    starts = start_options(s, world)
                for option in options:  # listed unless it is an option above
                    if option["listed_as"] in ("best", "runner-up"):
                        continue
                    where, within = starts[option["listed_as"]]
                    assert option["pool"] == where and option["start_s"] in within
                for listed_as, (where, within) in starts.items():
                    assert any(o["pool"] == where and o["start_s"] in within for o in options), (
                        listed_as
                    )
                    event(f"quoted a {listed_as}")
                if not starts:
                    assert {o["listed_as"] for o in options} <= {"best", "runner-up"}

        with live.session() as s, s.begin():
            scheduling_service.apply_pass(s, decided)
        with live.session() as s:
            rows = {
                r.id: r for r in s.scalars(select(TaskRow).where(TaskRow.id.in_(live.task_ids)))
            }
            deferred = set(
                s.scalars(select(EventRow.subject).where(EventRow.kind == "task.deferred"))
            )
            for decision in expected:
                row = rows[decision.task]
                if decision.action is Action.PLACE:
                    assert (row.pool_id, row.state) == (decision.pool, State.QUEUED.value)
                elif decision.action is Action.REJECT:
                    assert (row.state, row.unplaced_reason) == (
                        State.SYSTEM_ERROR.value,
                        decision.reason,
                    )
                else:
                    assert row.pool_id is None and row.state == State.QUEUED.value
                    if decision.action is Action.QUEUE:
                        assert row.unplaced_reason == decision.reason
                    else:
                        assert decision.not_before_s is not None and row.not_before is not None
                        until = row.not_before.replace(tzinfo=UTC).timestamp()
                        assert until == decision.not_before_s
                        drawn = world.tasks[live.task_ids.index(row.id)]
                        fresh = drawn.not_before_s is None
                        assert (row.id in deferred) == fresh  # a new deferral is audited
            # no pool holds more than it may: count - unavailable + queue depth
            pools = {p.id: p for p in s.scalars(select(PoolRow))}
            held = capacity_service.held_devices(s)
            for pool_id, devices in held.items():
                pool = pools[pool_id]
                assert devices <= pool.count - pool.unavailable + pool.queue_depth
