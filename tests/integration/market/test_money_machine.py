"""A stateful property test of the market's money, on a real SQLite database.

Random sequences of top-ups, quotes, accepts, completions, failures, cancels, duplicate reports
and payouts, through the same services the server runs; after every step: the ledger balances,
no wallet goes negative, money is neither created nor destroyed, every order settles at most
once, and the audit chain verifies.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from sqlalchemy import func, select

from suanli import ledger
from suanli.errors import SuanliError
from suanli.services import agents as agents_service
from suanli.services import capacity as capacity_service
from suanli.services import market
from suanli.services import scheduling as scheduling_service
from suanli.services import tasks as tasks_service
from suanli.services.commands import AgentCommand, PoolCommand, ReportCommand, SiteCommand
from suanli.services.core import Conflict, Role, create_token
from suanli.store.db import make_engine, session_factory, upgrade
from suanli.store.models import LedgerPosting, LedgerTransaction, OrderRow, Principal, TaskRow

TASK = {
    "executors": [{"command": ["true"]}],
    "origin": "北京",
    "resources": {
        "devices": 1,
        "device_kind": "cpu",
        "precision": "fp32",
        "workload": "general",
        "memory_gb": 0.0,
    },
}


class Money(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.directory = tempfile.TemporaryDirectory()
        self.engine = make_engine(f"sqlite:///{Path(self.directory.name) / 'm.db'}")
        upgrade(self.engine)
        self.sessions = session_factory(self.engine)
        with self.sessions.begin() as s:
            self.operator, _ = create_token(s, Role.OPERATOR, "op")
            self.provider, _ = create_token(s, Role.PROVIDER, "dc")
            self.consumers = [create_token(s, Role.CONSUMER, f"c{i}")[0] for i in range(2)]
            site = capacity_service.add_site(
                s, self.provider, SiteCommand(name="s", cluster="HORINGER")
            )
            s.flush()
            capacity_service.add_pool(
                s,
                self.provider,
                PoolCommand(
                    site_id=site.id, device="cpu", count=10_000, price_fen_per_device_hour=36_000
                ),
            )
            self.agent = agents_service.register_agent(
                s, self.provider, AgentCommand(site_id=site.id)
            )
            s.flush()  # write the pending rows before they leave the session
            for who in (self.operator, self.provider, *self.consumers):
                s.expunge(who)
            s.expunge(self.agent)
        self.topped = 0
        self.paid = 0
        self.orders: list[str] = []

    def teardown(self) -> None:
        self.engine.dispose()
        self.directory.cleanup()

    def _unit(self) -> Any:
        return self.sessions.begin()

    def _task_of(self, order_id: str) -> TaskRow:
        with self.sessions() as s:
            order = s.get(OrderRow, order_id)
            assert order is not None
            task = s.get(TaskRow, order.task_id)
            assert task is not None
            s.expunge(task)
            return task

    # --- rules -------------------------------------------------------------------------------

    @rule(who=st.integers(0, 1), fen=st.integers(1, 2_000))
    def top_up(self, who: int, fen: int) -> None:
        with self._unit() as s:
            market.credit(s, self.operator, self.consumers[who].id, fen)
        self.topped += fen

    @rule(who=st.integers(0, 1), duration=st.integers(1, 600))
    def quote_and_accept(self, who: int, duration: int) -> None:
        consumer = self.consumers[who]
        spec = {**TASK, "resources": {**TASK["resources"], "duration_s": float(duration)}}
        with self._unit() as s:
            quote = market.quote(s, consumer, spec, "balanced")
            quote_id = quote.id
        before = self._balance(ledger.wallet(consumer.id))
        try:
            with self._unit() as s:
                order = market.accept(s, consumer, quote_id, 0, "balanced")
                self.orders.append(order.id)
        except market.InsufficientFunds:
            assert self._balance(ledger.wallet(consumer.id)) == before  # nothing was created
            return
        with self._unit() as s:  # accept pins the task to the quoted pool; the pass places it
            decided = scheduling_service.plan_pass(s, "balanced")
        with self._unit() as s:
            scheduling_service.apply_pass(s, decided)

    @precondition(lambda self: bool(self.orders))
    @rule(
        data=st.data(),
        fraction=st.floats(0.0, 1.5),
        end=st.sampled_from(["COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR"]),
    )
    def run_to_an_end(self, data: st.DataObject, fraction: float, end: str) -> None:
        order_id = data.draw(st.sampled_from(self.orders))
        task = self._task_of(order_id)
        if task.state != "QUEUED":
            return
        with self._unit() as s:
            leased = agents_service.lease(s, self.provider, self.agent.id, 10_000, 60.0)
        planned = float(task.placement["duration_s"]) if task.placement else 0.0
        for t in leased:
            with self._unit() as s:
                agents_service.report(
                    s, self.provider, t.id, ReportCommand(agent_id=self.agent.id, state="RUNNING")
                )
        usage = {"wall_s": planned * fraction, "cpu_s": 0.0, "device_s": planned * fraction}
        with self._unit() as s:
            agents_service.report(
                s,
                self.provider,
                task.id,
                ReportCommand.model_validate(
                    {
                        "agent_id": self.agent.id,
                        "state": end,
                        "exit_code": 0 if end == "COMPLETE" else 1,
                        "usage": usage,
                    }
                ),
            )
        with self.sessions() as s:
            order = s.get(OrderRow, order_id)
            assert order is not None and order.state == "SETTLED"
            assert order.settlement is not None and order.settlement["outcome"] == end
            if end == "SYSTEM_ERROR":  # a provider-side failure refunds in full
                assert order.settlement["charge"]["fen"] == 0
            assert order.settlement["charge"]["fen"] <= order.escrow_fen

    @precondition(lambda self: bool(self.orders))
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        order_id = data.draw(st.sampled_from(self.orders))
        task = self._task_of(order_id)
        owner = next(c for c in self.consumers if c.id == task.owner_id)
        try:
            with self._unit() as s:
                tasks_service.cancel_task(s, owner, task.id)
        except Conflict:
            return  # already ended
        if task.state in ("INITIALIZING", "RUNNING"):  # the agent kills it and reports
            with self._unit() as s:
                agents_service.report(
                    s,
                    self.provider,
                    task.id,
                    ReportCommand.model_validate(
                        {
                            "agent_id": self.agent.id,
                            "state": "CANCELED",
                            "usage": {"wall_s": 1.0, "cpu_s": 0.0, "device_s": 1.0},
                        }
                    ),
                )

    @precondition(lambda self: bool(self.orders))
    @rule(data=st.data())
    def duplicate_report(self, data: st.DataObject) -> None:
        order_id = data.draw(st.sampled_from(self.orders))
        task = self._task_of(order_id)
        if task.state not in ("COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED"):
            return
        try:
            with self._unit() as s:
                agents_service.report(
                    s,
                    self.provider,
                    task.id,
                    ReportCommand.model_validate(
                        {
                            "agent_id": self.agent.id,
                            "state": "COMPLETE",
                            "usage": {"wall_s": 1.0, "cpu_s": 0.0, "device_s": 1.0},
                        }
                    ),
                )
        except SuanliError:
            pass  # refused: the order must not settle twice (checked by the invariant)

    @rule(fen=st.integers(1, 1_000))
    def payout(self, fen: int) -> None:
        available = self._balance(ledger.receivable(self.provider.id))
        if available == 0:
            return
        amount = min(fen, available)
        with self._unit() as s:
            market.payout(s, self.operator, self.provider.id, amount)
        self.paid += amount

    # --- invariants ----------------------------------------------------------------------------

    def _balance(self, account: str) -> int:
        with self.sessions() as s:
            return market.balance(s, account)

    @invariant()
    def the_books_hold(self) -> None:
        with self.sessions() as s:
            assert market.verify(s) is None  # chain intact, every transaction balances
            per_account = dict(
                s.execute(
                    select(LedgerPosting.account, func.sum(LedgerPosting.amount_fen)).group_by(
                        LedgerPosting.account
                    )
                ).all()
            )
            settlements = s.execute(
                select(LedgerTransaction.order_id, func.count())
                .where(LedgerTransaction.kind == "settle")
                .group_by(LedgerTransaction.order_id)
            ).all()
            principals = s.scalar(select(func.count()).select_from(Principal))
        assert principals == 4
        assert sum(per_account.values()) == 0
        assert -per_account.get(ledger.EXTERNAL, 0) == self.topped - self.paid
        for account, amount in per_account.items():
            if account != ledger.EXTERNAL:
                assert amount >= 0, (account, amount)
        assert all(count <= 1 for _, count in settlements)


Money.TestCase.settings = settings(
    max_examples=15,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestMoney = Money.TestCase
