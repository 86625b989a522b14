"""A stateful property test of the market's money, on a real SQLite database.

Random sequences of top-ups, quotes and accepts, plain submissions admitted by the scheduling
pass (an order opened at admission, or the task kept queued with the reason and no money
moved), budgets, compute vouchers (issued, spent before the wallet, expired and swept back to
the issuer), completions, failures, cancels, preemptions (charged for what ran, re-queued, a
new order at the next admission), duplicate reports, manual payouts and monthly payout runs
(run twice: the second changes nothing), through the same services the server runs, on a
virtual clock (`session.info["clock"]`) that the machine moves by minutes, days or a month.

After every step: the audit chain verifies and every transaction balances; all postings sum to
zero; no account is negative but the two outside sides ('external:bank', 'vouchers:issued');
the bank's side is -(top-ups - payouts); every order settles at most once, its settlement
splits provider + platform + network == charge and charge + refund == escrow; each consumer's
escrow is exactly the escrow of its OPEN orders; receivables, platform and network accounts
are what the settlements and payouts make them; a task has at most one OPEN order, one while it
holds a pool, none once it ended; an expired voucher holds nothing.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from suanli import ledger
from suanli.clock import VirtualClock
from suanli.errors import SuanliError
from suanli.services import agents as agents_service
from suanli.services import budgets as budgets_service
from suanli.services import capacity as capacity_service
from suanli.services import market, payouts, preemption
from suanli.services import scheduling as scheduling_service
from suanli.services import tasks as tasks_service
from suanli.services import vouchers as vouchers_service
from suanli.services.budgets import CST
from suanli.services.commands import AgentCommand, PoolCommand, ReportCommand, SiteCommand
from suanli.services.core import Conflict, Role, aware, create_token
from suanli.store.db import make_engine, session_factory, upgrade
from suanli.store.models import (
    BudgetRow,
    LedgerPosting,
    LedgerTransaction,
    OrderRow,
    PayoutRunRow,
    Principal,
    TaskRow,
    VoucherRow,
)

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
START = datetime(2026, 3, 10, 2, 0, tzinfo=UTC)  # 10:00 in Beijing
LEASE_S = 100 * 86400.0  # longer than any run of the machine: leases never expire here
ENDS = ("COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED")
SHORT = re.compile(r"insufficient balance: this task needs (\d+) fen .* have (-?\d+) fen")
OVER = re.compile(r"budget: \w+ budget (\d+) fen, spent (\d+), this task needs up to (\d+)")


def latest_ended_month(moment: datetime) -> str:
    """The last calendar month (China Standard Time) that ended at or before `moment`."""
    local = moment.astimezone(CST)
    last = local.replace(day=1) - timedelta(days=1)
    return f"{last.year:04d}-{last.month:02d}"


class Money(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.directory = tempfile.TemporaryDirectory()
        self.engine = make_engine(f"sqlite:///{Path(self.directory.name) / 'm.db'}")
        upgrade(self.engine)
        self.sessions = session_factory(self.engine)
        self.clock = VirtualClock(START)
        with self._unit() as s:
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
        self.issued = 0  # face value of every voucher issued
        self.tasks: list[str] = []
        self.preempted = 0
        self.runs = 0

    def teardown(self) -> None:
        self.engine.dispose()
        self.directory.cleanup()

    @contextmanager
    def _unit(self) -> Iterator[Session]:
        """One unit of work on the machine's clock: committed on success."""
        with self.sessions(info={"clock": self.clock}) as session, session.begin():
            yield session

    @contextmanager
    def _read(self) -> Iterator[Session]:
        with self.sessions(info={"clock": self.clock}) as session:
            yield session

    def _task(self, task_id: str) -> TaskRow:
        with self._read() as s:
            task = s.get(TaskRow, task_id)
            assert task is not None
            s.expunge(task)
            return task

    def _orders_of(self, task_id: str) -> list[OrderRow]:
        with self._read() as s:
            rows = list(
                s.scalars(
                    select(OrderRow)
                    .where(OrderRow.task_id == task_id)
                    .order_by(OrderRow.created_at, OrderRow.id)
                )
            )
            for row in rows:
                s.expunge(row)
            return rows

    def _owner(self, task: TaskRow) -> Principal:
        return next(c for c in self.consumers if c.id == task.owner_id)

    def _pass(self) -> None:
        """A scheduling pass, as the server runs it; then, for every consumer that an order was
        opened for at this admission, every budget it has still holds (the screen's promise)."""
        with self._read() as s:
            before = set(s.scalars(select(OrderRow.id)))
        with self._unit() as s:
            decided = scheduling_service.plan_pass(s, "balanced")
        with self._unit() as s:
            scheduling_service.apply_pass(s, decided)
        with self._read() as s:
            opened = [
                o
                for o in s.scalars(select(OrderRow).where(OrderRow.source == "admission"))
                if o.id not in before
            ]
            for consumer in {o.owner_id for o in opened}:
                assert budgets_service.check(s, consumer, 0, self.clock.now()) is None, consumer

    def _held(self) -> list[TaskRow]:
        """Lease every placed task to the agent and report it RUNNING: the tasks now running."""
        with self._unit() as s:
            leased = agents_service.lease(s, self.provider, self.agent.id, 10_000, LEASE_S)
            ids = [t.id for t in leased]
        for ident in ids:
            with self._unit() as s:
                agents_service.report(
                    s, self.provider, ident, ReportCommand(agent_id=self.agent.id, state="RUNNING")
                )
        with self._read() as s:
            running = list(
                s.scalars(select(TaskRow).where(TaskRow.state == "RUNNING").order_by(TaskRow.id))
            )
            for row in running:
                s.expunge(row)
            return running

    def _report(self, task_id: str, state: str, device_s: float, exit_code: int | None) -> None:
        with self._unit() as s:
            agents_service.report(
                s,
                self.provider,
                task_id,
                ReportCommand.model_validate(
                    {
                        "agent_id": self.agent.id,
                        "state": state,
                        "exit_code": exit_code,
                        "usage": {"wall_s": device_s, "cpu_s": 0.0, "device_s": device_s},
                    }
                ),
            )

    # --- rules: money in -----------------------------------------------------------------------

    @initialize(funds=st.lists(st.integers(0, 20_000), min_size=2, max_size=2))
    def open_wallets(self, funds: list[int]) -> None:
        """Both consumers start with some money (or none), so admissions happen early."""
        for who, fen in enumerate(funds):
            if fen:
                self.top_up(who, fen)

    @rule(who=st.integers(0, 1), fen=st.integers(1, 5_000))
    def top_up(self, who: int, fen: int) -> None:
        with self._unit() as s:
            market.credit(s, self.operator, self.consumers[who].id, fen)
        self.topped += fen

    @rule(
        to=st.sampled_from([(0,), (1,), (0, 1)]),
        fen=st.integers(1, 3_000),
        lasts_s=st.integers(60, 3 * 86400),
    )
    def issue_voucher(self, to: tuple[int, ...], fen: int, lasts_s: int) -> None:
        with self._unit() as s:
            vouchers_service.issue(
                s,
                self.operator,
                fen,
                self.clock.now() + timedelta(seconds=lasts_s),
                consumers=[self.consumers[i].id for i in to],
                memo="machine",
            )
        self.issued += fen

    @rule()
    def expire_vouchers(self) -> None:
        with self._read() as s:
            due = [
                v.id
                for v in s.scalars(select(VoucherRow).where(VoucherRow.state == "ACTIVE"))
                if aware(v.expires_at) <= self.clock.now()
            ]
            left = {v: market.balance(s, ledger.voucher(v)) for v in due}
            if any(left.values()):
                event("sweep: returns money")
            returned_before = market.balance(s, ledger.VOUCHERS_ISSUED)
        with self._unit() as s:
            swept = vouchers_service.expire(s, "sweeper")
        assert sorted(v.id for v in swept) == sorted(due)
        with self._read() as s:
            assert market.balance(s, ledger.VOUCHERS_ISSUED) == returned_before + sum(left.values())
            for ident in due:
                voucher = s.get(VoucherRow, ident)
                assert voucher is not None and voucher.state == "EXPIRED"
        with self._unit() as s:  # the sweep again: nothing left to do
            assert vouchers_service.expire(s, "sweeper") == []

    @rule(
        who=st.integers(0, 1),
        period=st.sampled_from(budgets_service.PERIODS),
        limit=st.integers(0, 20_000),
    )
    def set_budget(self, who: int, period: str, limit: int) -> None:
        with self._unit() as s:
            budgets_service.put(
                s, self.operator, period, limit, [5_000, 10_000], self.consumers[who].id
            )

    @rule(who=st.integers(0, 1), period=st.sampled_from(budgets_service.PERIODS))
    def remove_budget(self, who: int, period: str) -> None:
        try:
            with self._unit() as s:
                budgets_service.remove(s, self.operator, period, self.consumers[who].id)
        except SuanliError:
            pass  # it had none

    # --- rules: tasks and orders ---------------------------------------------------------------

    @rule(who=st.integers(0, 1), duration=st.integers(1, 240))
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
                self.tasks.append(order.task_id)
        except market.InsufficientFunds:
            assert self._balance(ledger.wallet(consumer.id)) == before  # nothing was created
            return
        except budgets_service.BudgetExceeded as refused:  # accepting is spending too
            assert self._balance(ledger.wallet(consumer.id)) == before  # nothing was created
            assert refused.spent_fen + refused.needed_fen > self._limit(refused.budget_id)
            return
        self._pass()  # accept pins the task to the quoted pool; the pass places it

    @rule(who=st.integers(0, 1), duration=st.integers(1, 240))
    def submit_plain(self, who: int, duration: int) -> None:
        """A task submitted without a quote: the pass prices it and opens its order, or keeps
        it queued with the reason and no money moved."""
        consumer = self.consumers[who]
        spec = {**TASK, "resources": {**TASK["resources"], "duration_s": float(duration)}}
        with self._unit() as s:
            task, created = tasks_service.submit(s, consumer, spec, None)
            task_id = task.id
        assert created
        self.tasks.append(task_id)
        self._pass()
        task = self._task(task_id)
        orders = self._orders_of(task_id)
        if task.pool_id is not None:
            assert [(o.state, o.source, o.quote_id) for o in orders] == [
                ("OPEN", "admission", None)
            ]
            order = orders[0]
            assert order.escrow_fen == market.total_fen(order.offer)
            assert 0 <= order.voucher_fen == sum(fen for _, fen in order.vouchers or [])
            assert order.voucher_fen <= order.escrow_fen
            event("submit: admitted" + (" (vouchers)" if order.voucher_fen else ""))
            return
        assert task.state == "QUEUED" and orders == [], (task.state, orders)  # no money moved
        reason = task.unplaced_reason or ""
        if (short := SHORT.search(reason)) is not None:
            assert int(short.group(1)) > int(short.group(2)), reason
            event("submit: waits, insufficient balance")
        elif (over := OVER.search(reason)) is not None:
            limit, spent, needed = (int(g) for g in over.groups())
            assert spent + needed > limit, reason
            event("submit: waits, budget")
        else:
            raise AssertionError(f"an unexpected reason to wait: {reason!r}")

    @rule()
    def schedule(self) -> None:
        """A pass on its own: after a top-up, a voucher or a budget change, the tasks kept
        queued for money are admitted."""
        self._pass()

    @precondition(lambda self: bool(self.tasks))
    @rule(
        data=st.data(),
        fraction=st.floats(0.0, 1.5),
        end=st.sampled_from(["COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR"]),
    )
    def run_to_an_end(self, data: st.DataObject, fraction: float, end: str) -> None:
        running = self._held()
        if not running:
            return
        task = data.draw(st.sampled_from(running))
        (order,) = [o for o in self._orders_of(task.id) if o.state == "OPEN"]
        planned = float(order.offer["duration_s"])
        self._report(task.id, end, planned * fraction, 0 if end == "COMPLETE" else 1)
        with self._read() as s:
            settled = s.get(OrderRow, order.id)
            assert settled is not None and settled.state == "SETTLED"
            assert settled.settlement is not None and settled.settlement["outcome"] == end
            if end == "SYSTEM_ERROR":  # a provider-side failure refunds in full
                assert settled.settlement["charge"]["fen"] == 0
            assert settled.settlement["charge"]["fen"] <= settled.escrow_fen

    @precondition(lambda self: bool(self.tasks))
    @rule(data=st.data(), fraction=st.floats(0.0, 1.0))
    def preempt(self, data: st.DataObject, fraction: float) -> None:
        """The operator preempts a running task; the agent learns it from its heartbeat and
        reports PREEMPTED with what ran: the attempt's order settles PREEMPTED, the task is
        queued again on its pool, and the next pass opens a new order for it."""
        running = self._held()
        if not running:
            return
        task = data.draw(st.sampled_from(running))
        (order,) = [o for o in self._orders_of(task.id) if o.state == "OPEN"]
        with self._unit() as s:
            preemption.preempt_task(s, self.operator, task.id)
        with self._unit() as s:
            beat = agents_service.heartbeat(
                s, self.provider, self.agent.id, LEASE_S, running=[t.id for t in running]
            )
        assert task.id in beat.preempt
        ran = float(order.offer["duration_s"]) * fraction
        self._report(task.id, "PREEMPTED", ran, None)
        self.preempted += 1
        with self._read() as s:
            settled = s.get(OrderRow, order.id)
            assert settled is not None and settled.state == "SETTLED"
            assert settled.settlement is not None
            assert settled.settlement["outcome"] == "PREEMPTED"
            assert settled.settlement["charge"]["fen"] <= settled.escrow_fen
            again = s.get(TaskRow, task.id)
            assert again is not None and again.state == "QUEUED" and again.pool_id is None
            assert again.pinned_pool_id == task.pool_id and not again.preempt_requested
            assert again.preemptions == task.preemptions + 1
        self._pass()
        task = self._task(task.id)
        orders = self._orders_of(task.id)
        opened = [o for o in orders if o.state == "OPEN"]
        if task.pool_id is not None:  # admitted again: a new order for the new attempt
            assert len(opened) == 1 and opened[0].id != order.id
            assert opened[0].source == "admission"
            event("preempt: admitted again")
        else:  # it waits for money, no order: it is never ended for the time it ran before
            assert opened == [] and task.state == "QUEUED", (task.state, task.unplaced_reason)
            event("preempt: waits for money")

    @precondition(lambda self: bool(self.tasks))
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        task = self._task(data.draw(st.sampled_from(self.tasks)))
        owner = self._owner(task)
        try:
            with self._unit() as s:
                tasks_service.cancel_task(s, owner, task.id)
        except Conflict:
            return  # already ended
        if task.state in ("INITIALIZING", "RUNNING"):  # the agent kills it and reports
            self._report(task.id, "CANCELED", 1.0, None)
        assert self._task(task.id).state == "CANCELED"
        assert all(o.state == "SETTLED" for o in self._orders_of(task.id))

    @precondition(lambda self: bool(self.tasks))
    @rule(data=st.data(), state=st.sampled_from(["COMPLETE", "PREEMPTED", "RUNNING"]))
    def duplicate_report(self, data: st.DataObject, state: str) -> None:
        task = self._task(data.draw(st.sampled_from(self.tasks)))
        if task.state not in ENDS and not (task.state == "QUEUED" and task.preemptions):
            return  # an ended task, or one queued again after its preemption
        # refused: the order must not settle twice (checked by the invariant)
        with suppress(SuanliError):
            self._report(task.id, state, 1.0, 0)
        assert self._task(task.id).state == task.state

    # --- rules: time and money out -------------------------------------------------------------

    @rule(seconds=st.sampled_from([60, 3_600, 6 * 3_600, 86_400, 3 * 86_400]))
    def time_passes(self, seconds: int) -> None:
        self.clock.advance(seconds)

    @rule(fen=st.integers(1, 1_000))
    def payout(self, fen: int) -> None:
        available = self._balance(ledger.receivable(self.provider.id))
        if available == 0:
            return
        amount = min(fen, available)
        with self._unit() as s:
            market.payout(s, self.operator, self.provider.id, amount)
        self.paid += amount

    @rule()
    def a_month_passes(self) -> None:
        self.clock.advance(31 * 86_400)

    @rule()
    def payout_run(self) -> None:
        """The run of the latest ended month pays what was earned up to its end; running it
        again changes nothing."""
        period = latest_ended_month(self.clock.now())
        end = payouts.period_bounds(period)[1]
        with self._unit() as s:
            first = payouts.run(s, self.operator, period)
            total, created = first.run.total_fen, first.created
        if created:
            self.paid += total
            self.runs += 1
            event("payout run: paid" if total else "payout run: nothing to pay")
        else:
            assert total >= 0  # ran before (its money counted then)
        with self._read() as s:
            head = s.scalar(select(func.count()).select_from(LedgerTransaction))
            paid_ever = -sum(
                s.scalars(
                    select(LedgerPosting.amount_fen)
                    .join(LedgerTransaction, LedgerTransaction.id == LedgerPosting.transaction_id)
                    .where(
                        LedgerTransaction.kind == "payout",
                        LedgerPosting.account == ledger.receivable(self.provider.id),
                    )
                )
            )
            earned = sum(
                o.settlement["provider"]["fen"] - o.settlement["sla_credit"]["fen"]
                for o in s.scalars(select(OrderRow).where(OrderRow.state == "SETTLED"))
                if o.settlement is not None and aware(o.settled_at) < end
            )
            receivable = market.balance(s, ledger.receivable(self.provider.id))
        if created:  # everything earned up to the period's end is paid, unless none was left
            assert paid_ever >= earned or receivable == 0, (paid_ever, earned, receivable)
        with self._unit() as s:
            again = payouts.run(s, self.operator, period)
            assert not again.created and again.run.id == first.run.id
            assert again.run.total_fen == total
        with self._read() as s:
            assert s.scalar(select(func.count()).select_from(LedgerTransaction)) == head
            assert s.scalar(select(func.count()).select_from(PayoutRunRow)) == self.runs

    def _limit(self, budget_id: str) -> int:
        with self.sessions() as s:
            budget = s.get(BudgetRow, budget_id)
            assert budget is not None
            return budget.limit_fen

    # --- invariants ----------------------------------------------------------------------------

    def _balance(self, account: str) -> int:
        with self._read() as s:
            return market.balance(s, account)

    @invariant()
    def the_books_hold(self) -> None:
        with self._read() as s:
            assert market.verify(s) is None  # chain intact, every transaction balances
            per_account = dict(
                s.execute(
                    select(LedgerPosting.account, func.sum(LedgerPosting.amount_fen)).group_by(
                        LedgerPosting.account
                    )
                ).all()
            )
            settlements = dict(
                s.execute(
                    select(LedgerTransaction.order_id, func.count())
                    .where(LedgerTransaction.kind == "settle")
                    .group_by(LedgerTransaction.order_id)
                ).all()
            )
            principals = s.scalar(select(func.count()).select_from(Principal))
            orders = list(s.scalars(select(OrderRow)))
            tasks = {t.id: t for t in s.scalars(select(TaskRow))}
            vouchers = list(s.scalars(select(VoucherRow)))
            paid_ever = -sum(
                s.scalars(
                    select(LedgerPosting.amount_fen)
                    .join(LedgerTransaction, LedgerTransaction.id == LedgerPosting.transaction_id)
                    .where(
                        LedgerTransaction.kind == "payout",
                        LedgerPosting.account == ledger.receivable(self.provider.id),
                    )
                )
            )
            kept = {a: market.balance(s, a) for a in per_account}  # the running balances
        assert principals == 4
        assert sum(per_account.values()) == 0
        assert kept == per_account
        assert -per_account.get(ledger.EXTERNAL, 0) == self.topped - self.paid
        assert paid_ever == self.paid
        assert 0 <= -per_account.get(ledger.VOUCHERS_ISSUED, 0) <= self.issued
        for account, amount in per_account.items():
            if account not in (ledger.EXTERNAL, ledger.VOUCHERS_ISSUED):
                assert amount >= 0, (account, amount)
        assert per_account.get(ledger.SLA_CREDITS, 0) == 0

        # one settlement per order, split to the fen
        settled = [o for o in orders if o.state == "SETTLED"]
        opened = [o for o in orders if o.state == "OPEN"]
        assert {o.state for o in orders} <= {"OPEN", "SETTLED"}
        assert all(count <= 1 for count in settlements.values())
        for order in opened:
            assert settlements.get(order.id, 0) == 0, order.id
            assert order.settlement is None
        for order in settled:
            assert settlements.get(order.id, 0) == (1 if order.escrow_fen > 0 else 0), order.id
            part = {k: v["fen"] for k, v in order.settlement.items() if isinstance(v, dict)}
            assert part["provider"] + part["platform"] + part["network"] == part["charge"]
            assert part["charge"] + part["refund"] == order.escrow_fen
            assert 0 <= part["charge"] <= order.escrow_fen
            assert 0 <= part["voucher_refund"] <= min(part["refund"], order.voucher_fen)
            if (
                order.voucher_fen
                and order.settled_at is not None
                and any(
                    v.id == ident and aware(v.expires_at) <= aware(order.settled_at)
                    for v in vouchers
                    for ident, _ in order.vouchers or []
                )
            ):
                event("settled after its voucher expired")
        for order in orders:
            assert 0 <= order.voucher_fen == sum(f for _, f in order.vouchers or [])
            assert order.voucher_fen <= order.escrow_fen

        # escrow holds exactly the OPEN orders' maxima; the shares are what settlements made
        for consumer in self.consumers:
            held = sum(o.escrow_fen for o in opened if o.owner_id == consumer.id)
            assert per_account.get(ledger.escrow(consumer.id), 0) == held, consumer.id

        def total(key: str) -> int:
            return sum(o.settlement[key]["fen"] for o in settled if o.settlement is not None)

        earned = total("provider") - total("sla_credit")
        assert per_account.get(ledger.receivable(self.provider.id), 0) == earned - self.paid
        assert per_account.get(ledger.PLATFORM_REVENUE, 0) == total("platform")
        assert per_account.get(ledger.NETWORK_OPERATOR, 0) == total("network")

        # a task has at most one OPEN order: one while it holds a pool, none once it ended
        for task in tasks.values():
            mine = [o for o in opened if o.task_id == task.id]
            assert len(mine) <= 1, task.id
            if task.state in ENDS:
                assert mine == [], (task.id, task.state)
            elif task.pool_id is not None or task.state in ("INITIALIZING", "RUNNING"):
                assert len(mine) == 1, (task.id, task.state)
            elif mine:  # queued, unplaced: only an accepted quote's order waits for its pass
                assert mine[0].source == "quote", (task.id, mine[0].source)
        assert all(o.task_id in tasks for o in orders)

        # vouchers: never more than their face; an expired one holds nothing
        for voucher in vouchers:
            left = per_account.get(ledger.voucher(voucher.id), 0)
            assert 0 <= left <= voucher.face_fen
            if voucher.state == "EXPIRED":
                assert left == 0, voucher.id
        assert sum(v.face_fen for v in vouchers) == self.issued


Money.TestCase.settings = settings(
    max_examples=20,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestMoney = Money.TestCase


def test_a_task_preempted_after_a_week_of_running_resumes() -> None:
    """The machine's sequence, on fixed values: a task that ran for more than the queue's
    maximum wait (7 days) and is then preempted is queued again to resume, not ended by the
    next pass as "waited too long" (its wait starts when it re-enters the queue)."""
    machine = Money()
    try:
        machine.top_up(0, 5_000)
        spec = {**TASK, "resources": {**TASK["resources"], "duration_s": 60.0}}
        with machine._unit() as s:
            task, _ = tasks_service.submit(s, machine.consumers[0], spec, None)
            task_id = task.id
        machine._pass()
        assert [t.id for t in machine._held()] == [task_id]
        machine.clock.advance(8 * 86_400)
        with machine._unit() as s:
            preemption.preempt_task(s, machine.operator, task_id)
        machine._report(task_id, "PREEMPTED", 30.0, None)
        machine._pass()
        again = machine._task(task_id)
        assert again.state == "QUEUED" and again.pool_id is not None, again.unplaced_reason
        machine.the_books_hold()
    finally:
        machine.teardown()
