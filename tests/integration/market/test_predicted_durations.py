"""Run-time prediction on the platform (issue 17): a task whose spec gives neither
`resources.work_flop` nor `resources.duration_s` is priced and placed with the median run time
of the completed tasks like it (`services.runtimes`), on a real database (SQLite, and
PostgreSQL when SUANLI_TEST_PG_URL is set), through the services the server runs: submit, the
scheduling pass (admission opens its order), lease, RUNNING, COMPLETE on a virtual clock.

The history: five one-CPU tasks of the consumer `lab`, without a duration, that ran 6,900 to
7,500 s (median 7,200 s, the 80% quantile of five is the longest, 7,500 s) on a pool posted at
36,000 fen per device-hour, so 2 hours' base price is 72,000 fen and 60 s's is 600 fen."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from suanli.services import agents as agents_service
from suanli.services import market
from suanli.services import runtimes as runtime_service
from suanli.services import scheduling as scheduling_service
from suanli.services import tasks as tasks_service
from suanli.services.commands import ReportCommand
from suanli.store.models import OrderRow, PoolRow, Principal, TaskRow
from tests.integration.platform.conftest import Platform, database_url, platform
from tests.waiting import wait_until

from .money_world import TASK, Provider, World

__all__ = ["database_url", "platform"]  # fixtures

START = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)
RUNS_S = (6_900.0, 7_000.0, 7_200.0, 7_400.0, 7_500.0)  # median 7,200, longest 7,500
POSTED = 36_000  # fen per device-hour (World's pools)


def spec(duration_s: float | None = None) -> dict[str, Any]:
    """World's one-CPU task, without a duration unless one is given."""
    resources = {**TASK["resources"]}
    if duration_s is not None:
        resources["duration_s"] = duration_s
    return {**TASK, "resources": resources}


def submit_and_place(world: World, who: Principal, body: dict[str, Any]) -> str:
    """Submit a task (no quote: admission opens its order) and run one scheduling pass."""
    with world.unit() as s:
        row, _ = tasks_service.submit(s, who, body, None)
        task_id = row.id
    with world.unit() as s:
        decided = scheduling_service.plan_pass(s, "balanced")
    with world.unit() as s:
        scheduling_service.apply_pass(s, decided)
    return task_id


def run(world: World, who: Principal, provider: Provider, ran_s: float) -> str:
    """A task of `who` without a duration, placed, RUNNING for `ran_s`, then COMPLETE."""
    task_id = submit_and_place(world, who, spec())
    with world.unit() as s:
        leased = agents_service.lease(s, provider.who, provider.agent_id, 100, 600.0)
        assert task_id in [t.id for t in leased]
    report(world, provider, task_id, "RUNNING")
    world.clock.advance(ran_s)
    report(world, provider, task_id, "COMPLETE", ran_s)
    world.clock.advance(600.0)
    return task_id


def report(
    world: World, provider: Provider, task_id: str, state: str, used_s: float | None = None
) -> None:
    body: dict[str, Any] = {"agent_id": provider.agent_id, "state": state}
    if used_s is not None:
        body |= {"exit_code": 0, "usage": {"wall_s": used_s, "cpu_s": 0.0, "device_s": used_s}}
    with world.unit() as s:
        agents_service.report(s, provider.who, task_id, ReportCommand.model_validate(body))


def placed(world: World, task_id: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The task's stored spec, its placement, and the offer its order was opened with."""
    with world.unit() as s:
        task = s.get(TaskRow, task_id)
        assert task is not None and task.placement is not None, task and task.unplaced_reason
        order = s.scalars(select(OrderRow).where(OrderRow.task_id == task_id)).one()
        return dict(task.spec), dict(task.placement), dict(order.offer)


def fen(offer: dict[str, Any], part: str) -> int:
    return int(offer["price"][part]["fen"])


@pytest.fixture
def world(database_url: str) -> Any:
    made = World(database_url, START)
    yield made
    made.close()


def history(world: World) -> tuple[Provider, Principal]:
    provider = world.provider("p")
    lab = world.consumer("lab", 10_000_000)
    for ran_s in RUNS_S:
        run(world, lab, provider, ran_s)
    return provider, lab


def test_a_task_without_a_duration_is_priced_and_placed_as_its_kind_ran(world: World) -> None:
    _, lab = history(world)
    newcomer = world.consumer("newcomer", 10_000_000)

    predicted = submit_and_place(world, lab, spec())
    stored, placement, offer = placed(world, predicted)
    assert "duration_s" not in stored["resources"]  # the stored spec is never changed
    assert placement["duration_s"] == pytest.approx(7_200.0)  # a CPU pool: the reference device
    runtime = placement["runtime"]
    assert runtime["source"] == "predicted"
    assert (runtime["duration_s"], runtime["upper_s"], runtime["level"]) == (7_200.0, 7_500.0, 0.8)
    assert runtime["members"] == 5 and runtime["history"] == 5
    assert runtime["group"] == (
        f"owner={lab.id}, workload=general, device_kind=cpu, devices=1, shape=fp32, 0 GB, "
        "latency_tier=batch"
    )
    assert offer["duration_s"] == pytest.approx(7_200.0)
    assert fen(offer, "base_fen") == 2 * POSTED  # 2 device-hours, not 60 s (600 fen)

    # the same task giving 7,200 s is priced alike; one giving 600 s keeps its own
    same = submit_and_place(world, lab, spec(7_200.0))
    _, same_placement, same_offer = placed(world, same)
    assert same_placement["runtime"] == {"source": "given", "duration_s": 7_200.0}
    assert fen(same_offer, "total_fen") == fen(offer, "total_fen")
    short = submit_and_place(world, lab, spec(600.0))
    _, short_placement, short_offer = placed(world, short)
    assert short_placement["duration_s"] == pytest.approx(600.0)
    assert short_placement["runtime"] == {"source": "given", "duration_s": 600.0}
    assert fen(short_offer, "base_fen") == POSTED // 6

    # a consumer with no history of its own gets the median of the same request by anyone
    first = submit_and_place(world, newcomer, spec())
    _, first_placement, first_offer = placed(world, first)
    assert first_placement["runtime"]["members"] == 5
    assert first_placement["runtime"]["group"] == (
        "workload=general, device_kind=cpu, devices=1, shape=fp32, 0 GB, latency_tier=batch"
    )
    assert first_offer["duration_s"] == pytest.approx(7_200.0)


def test_an_empty_platform_keeps_the_engines_60_s(world: World) -> None:
    world.provider("p")
    lab = world.consumer("lab", 10_000_000)
    task_id = submit_and_place(world, lab, spec())
    _, placement, offer = placed(world, task_id)
    assert placement["duration_s"] == pytest.approx(60.0)
    assert placement["runtime"] == {
        "source": "default",
        "duration_s": 60.0,
        "history": 0,
        "why": "fewer than 5 completed tasks like it",
    }
    assert fen(offer, "base_fen") == POSTED // 60


def test_fewer_than_five_completed_tasks_keep_the_default(world: World) -> None:
    provider = world.provider("p")
    lab = world.consumer("lab", 10_000_000)
    for ran_s in RUNS_S[:4]:
        run(world, lab, provider, ran_s)
    _, placement, _ = placed(world, submit_and_place(world, lab, spec()))
    assert placement["runtime"]["source"] == "default"
    assert placement["runtime"]["history"] == 4
    assert placement["duration_s"] == pytest.approx(60.0)


def test_malformed_history_rows_are_left_out_and_the_pass_goes_on(world: World) -> None:
    provider, lab = history(world)
    moment = world.clock.now()
    with world.unit() as s:
        pool = s.scalars(select(PoolRow.id)).first()
        good = spec()
        bad_specs = [
            {"resources": {"devices": 1}},  # no device kind, no precision
            {**good, "resources": {**good["resources"], "devices": "many"}},
            {**good, "resources": {**good["resources"], "device_kind": "quantum"}},
            good,  # COMPLETE without a single state change: no run time
        ]
        for n, bad in enumerate(bad_specs):
            s.add(
                TaskRow(
                    id=f"task-bad-{n}",
                    owner_id=lab.id,
                    name="stored before a check existed",
                    state="COMPLETE",
                    spec=bad,
                    devices=1,
                    policy="",
                    pool_id=pool,
                    cancel_requested=False,
                    preempt_requested=False,
                    preemptions=0,
                    requeues=0,
                    created_at=moment,
                    updated_at=moment,
                )
            )
    world.clock.advance(120.0)
    task_id = submit_and_place(world, lab, spec())
    _, placement, _ = placed(world, task_id)
    assert placement["runtime"]["members"] == 5
    assert placement["duration_s"] == pytest.approx(7_200.0)
    with world.unit() as s:
        kept = runtime_service.runtimes(s)
    assert (kept.tasks, kept.skipped, kept.completed) == (5, 4, 9)
    assert provider  # the pool the history ran on


def test_the_model_is_kept_until_a_task_completes_or_an_hour_passes(world: World) -> None:
    provider, lab = history(world)
    with world.unit() as s:
        first = runtime_service.runtimes(s)
    with world.unit() as s:
        assert runtime_service.runtimes(s) is first  # kept: nothing completed since
    run(world, lab, provider, 7_200.0)  # completes; the clock moves past REFIT_MIN_S
    with world.unit() as s:
        second = runtime_service.runtimes(s)
    assert second.version != first.version and second.tasks == 6
    world.clock.advance(runtime_service.REFIT_S - 1.0)
    with world.unit() as s:
        assert runtime_service.runtimes(s) is second
    world.clock.advance(1.0)
    with world.unit() as s:
        assert runtime_service.runtimes(s).version != second.version  # an hour passed


def test_a_ceiling_is_checked_against_the_predicted_duration(world: World) -> None:
    _, lab = history(world)
    cheap = {**spec(), "max_price_fen": 5 * POSTED // 60}  # enough for 5 minutes, not 2 hours
    with world.unit() as s, pytest.raises(Exception) as refused:
        tasks_service.submit(s, lab, cheap, None)
    assert "max_price_fen" in str(refused.value)
    assert "median run time of 5 completed tasks like it" in str(refused.value)
    with world.unit() as s:  # the same ceiling with a 60-s duration of its own is fine
        tasks_service.submit(s, lab, {**cheap, "resources": spec(60.0)["resources"]}, None)


def test_a_quote_prices_the_predicted_duration(world: World) -> None:
    _, lab = history(world)
    with world.unit() as s:
        quote = market.quote(s, lab, spec(), "balanced")
        option = quote.options["options"][0]
    assert option["duration_s"] == pytest.approx(7_200.0)
    assert fen(option, "base_fen") == 2 * POSTED


def test_the_api_and_task_show_say_where_the_duration_came_from(platform: Platform) -> None:
    platform.stop()
    made = World(platform.database_url, datetime.now(UTC) - timedelta(days=2))
    try:
        history(made)
        tokens = dict(made.tokens)
    finally:
        made.close()
    platform.start()
    with platform.client(tokens["lab"]) as http:
        submitted = http.post("/v1/tasks", json=spec())
        assert submitted.status_code == 201, submitted.text
        task_id = submitted.json()["id"]

        def placed_now() -> dict[str, Any] | None:
            found: dict[str, Any] = http.get(f"/v1/tasks/{task_id}").json()
            return found if found["placement"] else None

        task = wait_until(placed_now, "the pass to place the task", every_s=0.1)
    runtime = task["placement"]["runtime"]
    assert runtime["source"] == "predicted" and runtime["members"] == 5
    assert task["placement"]["duration_s"] == pytest.approx(7_200.0)
    env = {**platform.env, "SUANLI_SERVER": platform.url, "SUANLI_TOKEN": tokens["lab"]}
    shown = subprocess.run(
        [sys.executable, "-m", "suanli", "task", task_id],
        capture_output=True,
        text=True,
        env={**env, "COLUMNS": "200"},
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    assert "predicted 7,200 s (median of 5 completed tasks like it" in shown.stdout
    as_json = subprocess.run(
        [sys.executable, "-m", "suanli", "task", task_id, "--json"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert json.loads(as_json.stdout)["placement"]["runtime"] == runtime
