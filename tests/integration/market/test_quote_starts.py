"""A quote shows the cheapest and the greenest start within the task's deadline (issue 17), on
a real database (SQLite and PostgreSQL) through the services the server runs.

The world: one provider with a CPU pool at 贵安 (贵州, 1,000 fen per device-hour) and one at
中卫 (宁夏, 1,100 fen per device-hour), quoted at 18:05 China Standard Time on Tuesday 10 March
2026. Guizhou's time of use is peak (x1.6) from 17:00 to 22:00 and valley (x0.4) from 00:00 to
08:00; a western site's carbon intensity dips around solar noon (lowest 13:00-14:00). A
half-hour one-device task that may wait 30 hours is therefore cheapest from 00:05 (6 hours
later: 1,000 x 0.5 x 0.4 = 200 fen, + the 10% platform fee = 220 fen) and greenest from 13:05
the next day (19 hours later), both at 贵安.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from suanli.services import capacity as capacity_service
from suanli.services import market
from suanli.services import scheduling as scheduling_service
from suanli.services.commands import PoolCommand, SiteCommand
from suanli.services.core import Role, aware, create_token
from suanli.store.models import EventRow, OrderRow, Principal, TaskRow
from tests.integration.platform.conftest import Platform, database_url, platform
from tests.money import principal_token

from .money_world import World

__all__ = ["database_url", "platform"]  # fixtures

START = datetime(2026, 3, 10, 10, 5, tzinfo=UTC)  # 18:05 in China Standard Time
HOUR = 3600.0
DEADLINE_S = 30 * HOUR
SPEC: dict[str, Any] = {
    "executors": [{"command": ["true"]}],
    "origin": "北京",
    "latency_tier": "batch",
    "resources": {
        "devices": 1,
        "device_kind": "cpu",
        "precision": "fp32",
        "workload": "general",
        "duration_s": 1800.0,
    },
    "deadline_s": DEADLINE_S,
    "deferrable": True,
}
DEFAULT_POLICY = "balanced"
NEW = ("cheapest-start", "greenest-start")


@dataclass
class Network:
    world: World
    consumer: Principal
    guian: str  # pool ids
    zhongwei: str

    def quote(self, **changes: Any) -> list[dict[str, Any]]:
        with self.world.unit() as s:
            row = market.quote(s, self.consumer, {**SPEC, **changes}, DEFAULT_POLICY)
            options: list[dict[str, Any]] = row.options["options"]
        return options

    def accept(self, option: int, **changes: Any) -> tuple[str, dict[str, Any]]:
        """Quote, accept option `option`: (the order's task, the option)."""
        with self.world.unit() as s:
            row = market.quote(s, self.consumer, {**SPEC, **changes}, DEFAULT_POLICY)
            offer: dict[str, Any] = row.options["options"][option]
            quote_id = row.id
        with self.world.unit() as s:
            order = market.accept(s, self.consumer, quote_id, option, DEFAULT_POLICY)
            return order.task_id, offer

    def scheduling_pass(self) -> None:
        with self.world.unit() as s:
            decided = scheduling_service.plan_pass(s, DEFAULT_POLICY)
        with self.world.unit() as s:
            scheduling_service.apply_pass(s, decided)

    def task(self, task_id: str) -> TaskRow:
        with self.world.unit() as s:
            row = s.get(TaskRow, task_id)
            assert row is not None
            s.expunge(row)
            return row


@pytest.fixture
def network(database_url: str) -> Iterator[Network]:
    world = World(database_url, START - timedelta(days=1))  # the sites exist a day before
    with world.unit() as s:
        provider, _ = create_token(s, Role.PROVIDER, "dc")
        consumer, _ = principal_token(s, Role.CONSUMER, "c")
        pools = []
        for cluster, price in (("GUIAN", 1000), ("ZHONGWEI", 1100)):
            site = capacity_service.add_site(
                s, provider, SiteCommand(name=cluster, cluster=cluster)
            )
            s.flush()
            pool = capacity_service.add_pool(
                s,
                provider,
                PoolCommand(
                    site_id=site.id, device="cpu", count=8, price_fen_per_device_hour=price
                ),
            )
            s.flush()
            pools.append(pool.id)
        s.expunge(consumer)
    world.clock.set(START)
    yield Network(world, consumer, *pools)
    world.close()


def total(option: dict[str, Any]) -> int:
    return int(option["price"]["total_fen"]["fen"])


def starts(option: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(option["starts_at"])


def test_the_cheapest_and_the_greenest_start_within_the_deadline(network: Network) -> None:
    options = network.quote(policy="latency")  # the step's choice starts now, where it is
    by = {o["listed_as"]: o for o in options}
    assert set(NEW) <= set(by), [o["listed_as"] for o in options]
    assert options[0]["listed_as"] == "best"
    keys = [(o["pool"], o["start_s"]) for o in options]
    assert len(set(keys)) == len(keys)  # one pool and one start are one option
    for option in options:  # every option starts within the deadline and ends by it
        assert option["start_s"] >= 0
        assert option["start_s"] + option["duration_s"] <= DEADLINE_S
        assert starts(option) == START + timedelta(seconds=option["start_s"])

    cheapest, greenest = by["cheapest-start"], by["greenest-start"]
    # hand-computed: 00:05 at 贵安, valley (x0.4): 1,000 x 0.5 h x 0.4 = 200 + 10% fee = 220 fen
    assert (cheapest["pool"], cheapest["start_s"], total(cheapest)) == (
        network.guian,
        6 * HOUR,
        220,
    )
    assert cheapest["time_of_use"]["multiplier"] == "0.4"
    assert total(cheapest) == min(total(o) for o in options)
    assert all(total(o) > total(cheapest) for o in options if o is not cheapest)
    # 13:05 the next day at 贵安: the western midday dip
    assert (greenest["pool"], greenest["start_s"]) == (network.guian, 19 * HOUR)
    assert greenest["carbon_kg"] == min(o["carbon_kg"] for o in options)
    assert all(o["carbon_kg"] > greenest["carbon_kg"] for o in options if o is not greenest)
    assert "cheapest start within the deadline" in cheapest["reason"]
    assert "greenest start within the deadline" in greenest["reason"]

    # the task's price ceiling applies to every option alike
    ceiling = network.quote(policy="latency", max_price_fen=300)
    assert [(o["listed_as"], total(o)) for o in ceiling] == [("cheapest-start", 220)]


def test_the_choice_is_not_repeated(network: Network) -> None:
    """Under `balanced` the step itself defers the task to the greenest hour: that option is
    listed once, as the step's choice."""
    options = network.quote()
    assert [(o["listed_as"], o["pool"], o["start_s"]) for o in options] == [
        ("best", network.guian, 19 * HOUR),
        ("runner-up", network.zhongwei, 0.0),
        ("cheapest-start", network.guian, 6 * HOUR),
    ]


@pytest.mark.parametrize(
    "changes",
    [{"deferrable": False}, {"deferrable": True, "deadline_s": None}],
    ids=["not-deferrable", "no-deadline"],
)
def test_a_task_that_may_not_wait_gets_no_start_options(
    network: Network, changes: dict[str, Any]
) -> None:
    options = network.quote(policy="latency", **changes)
    assert [o["listed_as"] for o in options] == ["best", "runner-up"]
    assert all(o["start_s"] == 0.0 for o in options)


def test_accepting_the_greenest_start_pins_the_order_and_defers_the_task(
    network: Network,
) -> None:
    options = network.quote(policy="latency")
    index = [o["listed_as"] for o in options].index("greenest-start")
    task_id, offer = network.accept(index, policy="latency")
    start = starts(offer)
    assert start == START + timedelta(hours=19)

    task = network.task(task_id)
    assert task.pinned_pool_id == offer["pool"] == network.guian
    assert task.not_before is not None and aware(task.not_before) == start
    # its quoted pool is booked from its start for its quoted run (a later deferral goes around)
    assert task.booked_pool_id == network.guian
    assert task.booked_until is not None
    assert aware(task.booked_until) == start + timedelta(seconds=offer["duration_s"])
    with network.world.unit() as s:
        order = s.scalars(select(OrderRow).where(OrderRow.task_id == task_id)).one()
        assert order.offer == offer and order.escrow_fen == total(offer)
        deferred = s.scalars(
            select(EventRow).where(EventRow.kind == "task.deferred", EventRow.subject == task_id)
        ).one()
        assert deferred.data["until"] == start.isoformat()

    network.scheduling_pass()  # now: the task waits for its start
    task = network.task(task_id)
    assert task.pool_id is None and aware(task.not_before or START) == start
    network.world.clock.set(start - timedelta(seconds=1))
    network.scheduling_pass()
    assert network.task(task_id).pool_id is None
    network.world.clock.set(start)
    network.scheduling_pass()  # its hour: placed on the quoted pool, its one order kept
    task = network.task(task_id)
    assert (task.pool_id, task.state) == (network.guian, "QUEUED")
    with network.world.unit() as s:
        orders = s.scalars(select(OrderRow).where(OrderRow.task_id == task_id)).all()
        assert [o.escrow_fen for o in orders] == [total(offer)]
    assert network.world.verify() is None


@pytest.mark.parametrize("policy", ["latency", "balanced"])
def test_every_listed_option_can_be_accepted(network: Network, policy: str) -> None:
    """Each option, accepted, is placed on its pool at its start: not earlier (a later start
    defers the task), not later (an option that starts now is not deferred by the pass, though
    the task is deferrable)."""
    options = network.quote(policy=policy)
    accepted = [network.accept(n, policy=policy) for n in range(len(options))]
    moments = sorted({starts(offer) for _, offer in accepted})
    assert moments[0] == START and len(moments) > 1
    for moment in moments:
        network.world.clock.set(moment)
        network.scheduling_pass()
        for task_id, offer in accepted:
            task = network.task(task_id)
            due = starts(offer) <= moment
            assert task.pool_id == (offer["pool"] if due else None), (offer["listed_as"], moment)
    assert network.world.verify() is None


@pytest.mark.virtual_clock
def test_the_api_and_the_cli_list_the_starts(platform: Platform) -> None:
    """Over HTTP and `suanli quote`: a provider's own site in 贵州 (no catalog cluster), the
    server's clock moved to 18:05 China Standard Time."""
    operator = platform.token(Role.OPERATOR, "op")
    provider = platform.token(Role.PROVIDER, "dc")
    consumer = platform.token(Role.CONSUMER, "lab")
    platform.site_with_pool(provider, count=8, province="贵州", price=1000)
    with platform.client(operator) as http:
        moved = http.post("/v1/clock", json={"to": "2031-03-11T10:05:00+00:00"})
        assert moved.status_code == 200, moved.text
    with platform.client(consumer) as http:
        quoted = http.post("/v1/quotes", json={**SPEC, "policy": "latency"})
        assert quoted.status_code == 201, quoted.text
    options = quoted.json()["options"]
    assert [(o["listed_as"], o["start_s"], total(o)) for o in options] == [
        ("best", 0.0, 880),  # peak, x1.6
        ("cheapest-start", 6 * HOUR, 220),  # 00:05, valley
        ("greenest-start", 19 * HOUR, 550),  # 13:05 the next day, flat
    ]

    env = {**platform.env, "SUANLI_SERVER": platform.url, "SUANLI_TOKEN": consumer}
    command = [sys.executable, "-m", "suanli", "quote", "--deferrable", "--deadline", "108000"]
    command += ["--duration", "1800", "--policy", "latency"]

    def cli(*args: str) -> str:
        done = subprocess.run(
            [*command, *args, "--", "true"], capture_output=True, text=True, env=env, check=False
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    shown = json.loads(cli("--json"))
    assert [o["listed_as"] for o in shown["options"]] == [o["listed_as"] for o in options]
    table = cli()
    assert "Start 开始" in table and "now 现在" in table, table
    assert "+6 h" in table and "+19 h" in table, table
