"""Orders at admission and compute vouchers (算力券), through the services the server runs, on a
real database (SQLite and PostgreSQL): the scheduling pass prices a placement like a quote and
holds its maximum in escrow, vouchers first; a consumer who cannot pay stays queued with the
reason and runs after a top-up; settlement refunds the vouchers; the expiry sweep returns what is
left to the issuer; the audit still proves the books after each story."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from suanli import ledger, market
from suanli.clock import VirtualClock
from suanli.errors import InvalidValue
from suanli.services import agents as agents_service
from suanli.services import capacity as capacity_service
from suanli.services import market as market_service
from suanli.services import scheduling as scheduling_service
from suanli.services import tasks as tasks_service
from suanli.services import vouchers
from suanli.services.commands import AgentCommand, PoolCommand, ReportCommand, SiteCommand
from suanli.services.core import Role, create_token
from suanli.store.db import make_engine, session_factory, upgrade
from suanli.store.models import OrderRow, Principal, TaskRow
from tests.integration.platform.conftest import database_url

__all__ = ["database_url"]

START = datetime(2026, 6, 1, 4, 0, tzinfo=UTC)  # 12:00 in China: a flat hour for the test site


def spec(duration_s: float = 60.0, **extra: Any) -> dict[str, Any]:
    return {
        "executors": [{"command": ["true"]}],
        "origin": "北京",
        "resources": {
            "devices": 1,
            "device_kind": "cpu",
            "precision": "fp32",
            "workload": "general",
            "memory_gb": 0.0,
            "duration_s": duration_s,
        },
        **extra,
    }


class World:
    """One operator, one provider with a 4-CPU pool at 36 000 fen per device-hour (600 fen for
    a 60 s task before time of use, utilisation and fee), one agent, two consumers with empty
    wallets, all on a virtual clock."""

    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)
        upgrade(self.engine)
        self.sessions = session_factory(self.engine)
        self.clock = VirtualClock(START)
        with self.unit() as s:
            self.operator, _ = create_token(s, Role.OPERATOR, "op")
            self.provider, _ = create_token(s, Role.PROVIDER, "dc")
            self.consumer, _ = create_token(s, Role.CONSUMER, "lab")
            self.other, _ = create_token(s, Role.CONSUMER, "other lab")
            site = capacity_service.add_site(
                s, self.provider, SiteCommand(name="s", cluster="HORINGER")
            )
            s.flush()
            capacity_service.add_pool(
                s,
                self.provider,
                PoolCommand(
                    site_id=site.id, device="cpu", count=4, price_fen_per_device_hour=36_000
                ),
            )
            self.agent = agents_service.register_agent(
                s, self.provider, AgentCommand(site_id=site.id)
            )
            s.flush()
            for row in (self.operator, self.provider, self.consumer, self.other, self.agent):
                s.expunge(row)

    @contextmanager
    def unit(self) -> Iterator[Session]:
        with self.sessions.begin() as session:
            session.info["clock"] = self.clock
            yield session

    def balance(self, account: str) -> int:
        with self.unit() as s:
            return market_service.balance(s, account)

    def submit(self, who: Principal, body: dict[str, Any]) -> str:
        with self.unit() as s:
            return tasks_service.submit(s, who, body, None)[0].id

    def schedule(self) -> None:
        with self.unit() as s:
            decided = scheduling_service.plan_pass(s, "balanced")
        with self.unit() as s:
            scheduling_service.apply_pass(s, decided)

    def task(self, ident: str) -> TaskRow:
        with self.unit() as s:
            row = s.get(TaskRow, ident)
            assert row is not None
            s.expunge(row)
            return row

    def orders(self, task_id: str) -> list[OrderRow]:
        with self.unit() as s:
            rows = list(s.scalars(select(OrderRow).where(OrderRow.task_id == task_id)))
            for row in rows:
                s.expunge(row)
            return rows

    def run(self, task_id: str, fraction: float, end: str = "COMPLETE") -> OrderRow:
        """Lease the task to the agent and report it ended after `fraction` of its planned
        device-seconds; its order, settled."""
        with self.unit() as s:
            leased = agents_service.lease(s, self.provider, self.agent.id, 10, 60.0)
        assert task_id in {t.id for t in leased}
        (order,) = [o for o in self.orders(task_id) if o.state == "OPEN"]
        used = float(order.offer["duration_s"]) * fraction
        with self.unit() as s:
            agents_service.report(
                s,
                self.provider,
                task_id,
                ReportCommand.model_validate(
                    {
                        "agent_id": self.agent.id,
                        "state": end,
                        "exit_code": 0 if end == "COMPLETE" else 1,
                        "usage": {"wall_s": used, "cpu_s": 0.0, "device_s": used},
                    }
                ),
            )
        with self.unit() as s:
            settled = s.get(OrderRow, order.id)
            assert settled is not None and settled.state == "SETTLED"
            s.expunge(settled)
            return settled

    def audit(self) -> None:
        with self.unit() as s:
            assert market_service.verify(s, full=True) is None


@pytest.fixture
def world(database_url: str) -> Iterator[World]:
    built = World(database_url)
    yield built
    built.engine.dispose()


def fen(money: dict[str, Any]) -> int:
    return int(money["fen"])


def test_a_task_without_money_waits_and_runs_after_a_top_up(world: World) -> None:
    task_id = world.submit(world.consumer, spec())
    world.schedule()
    row = world.task(task_id)
    assert row.state == "QUEUED" and row.pool_id is None
    assert row.unplaced_reason is not None
    assert row.unplaced_reason.startswith("insufficient balance")
    assert "余额不足" in row.unplaced_reason
    assert world.orders(task_id) == []  # nothing held, nothing created
    with world.unit() as s:
        market_service.credit(s, world.operator, world.consumer.id, 100_000)
    world.schedule()
    row = world.task(task_id)
    assert row.pool_id is not None
    (order,) = world.orders(task_id)
    assert order.source == "admission" and order.quote_id is None and order.state == "OPEN"
    total = fen(order.offer["price"]["total_fen"])
    assert order.escrow_fen == total > 0 and order.voucher_fen == 0
    assert world.balance(ledger.wallet(world.consumer.id)) == 100_000 - total
    assert world.balance(ledger.escrow(world.consumer.id)) == total
    settled = world.run(task_id, 0.5)
    s = settled.settlement
    assert s is not None
    charge = fen(s["charge"])
    assert charge == market.round_fen(market.exact.Fraction(total, 2))
    assert fen(s["provider"]) + fen(s["platform"]) + fen(s["network"]) == charge
    assert world.balance(ledger.wallet(world.consumer.id)) == 100_000 - charge
    assert world.balance(ledger.escrow(world.consumer.id)) == 0
    world.audit()


def test_the_pass_counts_what_earlier_tasks_of_the_pass_took(world: World) -> None:
    first = world.submit(world.consumer, spec())
    world.schedule()  # no money: the reason names what the task needs
    reason = world.task(first).unplaced_reason or ""
    needed = int(reason.split("needs ")[1].split(" fen")[0])
    with world.unit() as s:  # enough for one task and a half
        market_service.credit(s, world.operator, world.consumer.id, needed + needed // 2 - 1)
    second = world.submit(world.consumer, spec())
    world.schedule()
    placed = [t for t in (first, second) if world.task(t).pool_id is not None]
    waiting = [t for t in (first, second) if world.task(t).pool_id is None]
    assert len(placed) == 1 and len(waiting) == 1
    assert (world.task(waiting[0]).unplaced_reason or "").startswith("insufficient balance")
    world.audit()


def test_max_price_fen_bounds_the_quoted_total(world: World) -> None:
    with world.unit() as s:
        market_service.credit(s, world.operator, world.consumer.id, 100_000)
    with world.unit() as s:
        cheapest = market_service.cheapest_total(
            s, spec(), market_service.pricing_rules(s), world.clock.now()
        )
    assert cheapest is not None
    with pytest.raises(InvalidValue) as refused:
        world.submit(world.consumer, spec(max_price_fen=cheapest[0] - 1))
    assert refused.value.field == "max_price_fen"
    assert "max_price_fen" in refused.value.message_zh
    with world.unit() as s:
        assert s.scalars(select(TaskRow)).first() is None  # nothing written
    task_id = world.submit(world.consumer, spec(max_price_fen=10**9))
    world.schedule()
    (order,) = world.orders(task_id)
    assert fen(order.offer["price"]["total_fen"]) <= 10**9


def test_a_voucher_pays_before_the_wallet_and_gets_its_refund(world: World) -> None:
    with world.unit() as s:
        voucher = vouchers.issue(
            s, world.operator, 200, START + timedelta(days=30), [world.consumer.id], [], "trial"
        )
        voucher_id = voucher.id
        market_service.credit(s, world.operator, world.consumer.id, 100_000)
    account = ledger.voucher(voucher_id)
    assert world.balance(account) == 200
    assert world.balance(ledger.VOUCHERS_ISSUED) == -200
    task_id = world.submit(world.consumer, spec())
    world.schedule()
    (order,) = world.orders(task_id)
    total = order.escrow_fen
    assert total > 200  # the voucher alone does not cover it
    assert order.voucher_fen == 200 and order.vouchers == [[voucher_id, 200]]
    assert world.balance(account) == 0
    assert world.balance(ledger.wallet(world.consumer.id)) == 100_000 - (total - 200)
    # charged a tenth: the voucher pays it first and gets the rest of its part back
    settled = world.run(task_id, 0.1)
    assert settled.settlement is not None
    charge = fen(settled.settlement["charge"])
    assert 0 < charge < 200
    assert fen(settled.settlement["voucher_refund"]) == 200 - charge
    assert world.balance(account) == 200 - charge
    assert world.balance(ledger.wallet(world.consumer.id)) == 100_000  # its part back in full
    with world.unit() as s:  # the consumer's escrow statement names the voucher legs
        lines = market_service.statement(
            s, world.consumer, ledger.escrow(world.consumer.id), None, None
        )
        assert [line["kind"] for line in lines] == ["hold", "settle"]
        assert lines[0]["vouchers"] == [[account, -200]]
        assert lines[1]["vouchers"] == [[account, 200 - charge]]
        own = market_service.statement(s, world.consumer, account, None, None)
        assert [fen(line["amount"]) for line in own] == [200, -200, 200 - charge]
        listed = vouchers.list_vouchers(s, world.consumer)
        assert [(v["id"], fen(v["left"])) for v in listed] == [(voucher_id, 200 - charge)]
        assert vouchers.list_vouchers(s, world.other) == []  # not eligible
    world.audit()


def test_a_group_voucher_and_the_expiry_sweep(world: World) -> None:
    from suanli.store.models import GroupRow

    with world.unit() as s:
        s.add(GroupRow(id="grp-a", name="A", created_at=START, updated_at=START))
        s.flush()
        consumer = s.get(Principal, world.consumer.id)
        assert consumer is not None
        consumer.group_id = "grp-a"
        voucher = vouchers.issue(
            s, world.operator, 10_000, START + timedelta(hours=1), [], ["grp-a"]
        )
        voucher_id = voucher.id
    account = ledger.voucher(voucher_id)
    task_id = world.submit(world.consumer, spec())
    world.schedule()
    (order,) = world.orders(task_id)
    assert order.voucher_fen == order.escrow_fen  # the voucher alone pays
    assert world.balance(account) == 10_000 - order.escrow_fen
    left = 10_000 - order.escrow_fen
    world.clock.advance(2 * 3600)  # the voucher expires while the task still runs
    with world.unit() as s:
        swept = vouchers.expire(s, "test")
        assert [v.id for v in swept] == [voucher_id]
        assert vouchers.expire(s, "test") == []  # once
    assert world.balance(account) == 0
    assert world.balance(ledger.VOUCHERS_ISSUED) == -10_000 + left
    settled = world.run(task_id, 0.5)  # the refund goes to the issuer: the voucher expired
    assert settled.settlement is not None
    charge = fen(settled.settlement["charge"])
    assert world.balance(account) == 0
    assert world.balance(ledger.VOUCHERS_ISSUED) == -charge
    assert world.balance(ledger.wallet(world.consumer.id)) == 0
    # an expired voucher funds nothing: the next task waits for money
    second = world.submit(world.consumer, spec())
    world.schedule()
    assert (world.task(second).unplaced_reason or "").startswith("insufficient balance")
    world.audit()


def test_a_preempted_task_is_charged_for_what_ran(world: World) -> None:
    with world.unit() as s:
        market_service.credit(s, world.operator, world.consumer.id, 100_000)
    task_id = world.submit(world.consumer, spec())
    world.schedule()
    (order,) = world.orders(task_id)
    with world.unit() as s:
        row = s.get(TaskRow, task_id)
        assert row is not None
        row.state = "PREEMPTED"  # what the preemption path (part D) sets before it settles
        row.usage = {"device_s": float(order.offer["duration_s"]) / 4}
        settled = market_service.settle_task(s, row)
        assert settled is not None and settled.settlement is not None
        assert settled.settlement["outcome"] == "PREEMPTED"
        charge = fen(settled.settlement["charge"])
        assert charge == market.round_fen(market.exact.Fraction(order.escrow_fen, 4))
        assert market_service.settle_task(s, row) is settled  # once
    assert world.balance(ledger.wallet(world.consumer.id)) == 100_000 - charge
    world.audit()


def test_issuing_is_the_operators_and_checked(world: World) -> None:
    with world.unit() as s, pytest.raises(Exception, match="operator"):
        vouchers.issue(s, world.consumer, 10, START + timedelta(days=1), [world.consumer.id])
    with world.unit() as s, pytest.raises(InvalidValue, match="expires_at"):
        vouchers.issue(s, world.operator, 10, START - timedelta(days=1), [world.consumer.id])
    with world.unit() as s, pytest.raises(InvalidValue, match="consumers"):
        vouchers.issue(s, world.operator, 10, START + timedelta(days=1))
    with world.unit() as s, pytest.raises(InvalidValue, match="fen"):
        vouchers.issue(s, world.operator, 0, START + timedelta(days=1), [world.consumer.id])


def test_a_pool_holding_more_tasks_than_devices_is_priced_fully_used(world: World) -> None:
    """A pool with an engine queue (`queue_depth`) may hold more tasks than devices: its
    utilisation is 1, not above (the price is still defined)."""
    from suanli.store.models import PoolRow, SiteRow

    with world.unit() as s:
        pool = s.scalars(select(PoolRow)).one()
        site = s.get(SiteRow, pool.site_id)
        assert site is not None
        rules = market_service.pricing_rules(s)
        moment = world.clock.now()
        offers = [
            market_service.price_offer(pool, site, spec(), held, 60.0, 0.0, "", moment, 0.0, rules)
            for held in (pool.count, pool.count + 2)
        ]
    assert offers[0]["price"] == offers[1]["price"]
