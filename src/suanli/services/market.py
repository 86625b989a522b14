"""The market's use cases: wallets, quotes, orders with escrow, settlement, ratings, audit.

Each function is one unit of work on an open session (the caller commits). Money moves only as
balanced `ledger.Transaction`s, written as postings AND as a `money.posted` event in the money
stream of the event log, so that `verify` can prove both the log and every posting. Amounts
are integer fen.

Accounts that cannot go negative. Every movement of money goes through `record`, which first
locks the `account_balances` rows of the accounts it touches (`lock_balances`: the money stream's
head, then the balance rows in sorted account order, FOR UPDATE, so on PostgreSQL two movements
serialise and never deadlock; SQLite has one writer), applies each posting to its row in the same
unit of work, and refuses a transaction that would leave a wallet, an escrow or a receivable
below zero (402 for a wallet, 409 otherwise: the request rolls back, nothing is half-written).
`accept` and `payout` lock the balance they check BEFORE reading it, so concurrent requests
cannot both spend the same fen. A single amount above `MAX_FEN` (10^13 fen) is a 422.

* `credit` (operator top-up) and `payout` (operator pays a provider out) move money across the
  platform's boundary (`ledger.EXTERNAL`);
* `quote` is a what-if on the one decision step (`scheduler.decide` on the pass's inputs): it
  prices the step's pool (at its deferred start when the step defers), the runner-up and, for a
  task that may be deferred, the cheapest and the greenest start within its deadline, under
  the pricing rules; `accept` holds the option's maximum price in escrow (402 when the wallet is
  short: nothing is created), creates the order and the task QUEUED, pinned to the quoted pool
  and held to the quoted start (`tasks.not_before`): the scheduling pass, the only writer of a
  task's pool, places it;
* `settle_task` runs when a task ends: the charge (never above the escrow) is split between
  provider, platform and network operator, SLA credits are paid for a missed deadline, the rest is
  released; an order settles once, whatever reports arrive;
* `rate` records one rating per settled order; `reputation` blends ratings with SLA adherence and
  feeds the placement engine;
* `audit` (and `verify`, its one-line form) proves the books: every stream's hash chain and
  the seals (`services.core.verify_log`), every posting against its `money.posted` event, and
  a replay of the ledger in the money stream's order in which no wallet, escrow or receivable
  ever drops below zero, each order settles at most once (one `order.settled` event, one
  settlement transaction) and the stored balances equal the sums of the postings. It names the
  first breach. It resumes from the `audit_checkpoint` row (each stream's head and the seal
  verified last time, and the replay's state then), so a check costs what was appended since,
  stream by stream (an event whose global seq committed late is still walked: positions are
  per stream); `full=True` walks from the first event. An auditor holds the checkpoint row and
  every stream's head (shared) while it walks, so concurrent audits queue and writers wait for
  a consistent view; `walk` is the read-only form for a snapshot session (`suanli audit
  verify`'s default full walk), followed by `save_checkpoint`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from suanli import ledger, market
from suanli.errors import InvalidValue, SuanliError
from suanli.scheduler import (
    Decision,
    QueuedTask,
    Snapshot,
    decide,
    engine_task,
    place,
    policy_named,
)
from suanli.services import capacity as capacity_service
from suanli.services import runtimes as runtime_service
from suanli.services import tasks as tasks_service
from suanli.services.core import (
    GENESIS_HASH,
    MONEY_STREAM,
    Actor,
    Conflict,
    Heads,
    NotFound,
    Role,
    State,
    append_event,
    aware,
    genesis_heads,
    heads_digest,
    heads_from,
    heads_json,
    lock_money_stream,
    new_id,
    now,
    require,
    stream_heads,
    verify_log,
)
from suanli.specs import total_devices
from suanli.store.models import (
    AccountBalance,
    AuditCheckpoint,
    EventRow,
    LedgerPosting,
    LedgerTransaction,
    OrderRow,
    PoolRow,
    Principal,
    QuoteRow,
    RatingRow,
    SiteRow,
    TaskRow,
    VoucherRow,
)

QUOTE_VALID_S = 300
MAX_FEN = 10**13  # the largest single amount (a top-up, a payout, a quote's price): 1e11 yuan
BIGINT_MAX = 2**63 - 1  # what a balance column holds
INFINITE_S = 1e300  # a run time at or above this is the engine's "cannot run there"
RULE_FIELDS = ("platform_fee_bp", "network_fen_per_gb", "preemptible_discount_bp", "sla_credit_bp")


def rules_from(values: Any) -> market.PricingRules:
    """Pricing rules from the operator's settings (or from an order's recorded rules)."""

    def value(name: str) -> int:
        found: Any = values[name] if isinstance(values, dict) else getattr(values, name)
        return int(found)

    return market.PricingRules(
        platform_fee_bp=value("platform_fee_bp"),
        network_fen_per_gb=value("network_fen_per_gb"),
        preemptible_discount_bp=value("preemptible_discount_bp"),
        sla_credit_bp=value("sla_credit_bp"),
    )


RULES_KEY = "pricing_rules"  # session.info key: the server's `PricingRules` (see `pricing_rules`)


def pricing_rules(session: Session) -> market.PricingRules:
    """The operator's pricing rules for work done on this session: what the server put in
    `session.info["pricing_rules"]` when it opened the unit of work (`PricingRules`, or its
    settings, read by `rules_from`), else the defaults (a session opened outside a server: a
    test, the CLI on the database)."""
    found = session.info.get(RULES_KEY)
    if found is None:
        return market.PricingRules()
    return found if isinstance(found, market.PricingRules) else rules_from(found)


class InsufficientFunds(SuanliError):
    """402: the wallet cannot cover the escrow."""

    def __init__(self, needed_fen: int, available_fen: int) -> None:
        self.needed_fen, self.available_fen = needed_fen, available_fen
        super().__init__(
            f"insufficient funds: this order needs {needed_fen} fen in escrow but the wallet "
            f"holds {available_fen} fen; top up with 'suanli admin credit'",
            f"余额不足：订单需托管 {needed_fen} 分，钱包仅有 {available_fen} 分；请充值",
        )


class InsufficientBalance(InsufficientFunds):
    """402: the consumer's vouchers and wallet together cannot cover an admission's escrow (the
    task stays queued with this reason and runs once the money is there)."""

    def __init__(self, needed_fen: int, available_fen: int) -> None:
        super().__init__(needed_fen, available_fen)
        self.message_en = (
            f"insufficient balance: this task needs {needed_fen} fen held in escrow (its "
            f"maximum price) but the consumer's vouchers and wallet hold {available_fen} fen; "
            "top up the wallet ('suanli admin credit') and it runs at the next pass"
        )
        self.message_zh = (
            f"余额不足：任务需托管 {needed_fen} 分（最高价），算力券与钱包合计仅 "
            f"{available_fen} 分；充值后下一轮调度即可运行"
        )
        self.args = (self.message_en,)


class Overdrawn(Conflict):
    """409: a movement of money would leave an escrow or a receivable below zero."""

    def __init__(self, account: str, held_fen: int, taken_fen: int) -> None:
        self.account, self.held_fen, self.taken_fen = account, held_fen, taken_fen
        super().__init__(
            f"{account} holds {held_fen} fen; this movement takes {taken_fen} fen and would "
            "leave it below zero, so nothing was recorded",
            f"{account} 余额 {held_fen} 分；本次变动需 {taken_fen} 分，会使余额为负，未记账",
        )


def amount(name: str, fen: object) -> int:
    """A single money amount: a whole number of fen in [1, MAX_FEN] (422 naming `name`)."""
    if isinstance(fen, bool) or not isinstance(fen, int) or not 1 <= fen <= MAX_FEN:
        raise InvalidValue(
            name, fen, f"a whole number of fen in [1, {MAX_FEN}]", f"[1, {MAX_FEN}] 内的整数分"
        )
    return fen


def money(fen: int) -> dict[str, Any]:
    """How every amount leaves the API: integer fen with its currency."""
    return {"fen": int(fen), "currency": "CNY"}


# --- the ledger in the database --------------------------------------------------------------


def _insert_new(session: Session, model: type[Any], rows: list[dict[str, Any]]) -> None:
    """Insert the rows that do not exist yet and leave existing ones alone (INSERT ... ON
    CONFLICT DO NOTHING, on PostgreSQL and on SQLite): safe when another request inserts the
    same key at the same time."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(postgresql.insert(model).on_conflict_do_nothing(), rows)
    else:
        session.execute(sqlite.insert(model).on_conflict_do_nothing(), rows)


def lock_balances(session: Session, accounts: Iterable[str]) -> dict[str, int]:
    """Lock the balance rows of `accounts` until the unit of work ends and return their balances.

    Lock order, the same in every movement of money: the money stream's head first (every
    movement appends a `money.posted` event there, so a movement that locked balances before
    the head could deadlock with one that appended first; and money events are then in the
    order their balances were locked), then the balance rows in sorted account order, FOR
    UPDATE. Missing rows are inserted at 0 first (ON CONFLICT DO NOTHING). SQLite ignores FOR
    UPDATE: there the unit of work is the single writer (BEGIN IMMEDIATE) and holds everything
    already."""
    wanted = sorted(set(accounts))
    lock_money_stream(session)

    def locked() -> dict[str, int]:
        rows = session.execute(
            select(AccountBalance.account, AccountBalance.balance_fen)
            .where(AccountBalance.account.in_(wanted))
            .order_by(AccountBalance.account)
            .with_for_update()
        ).all()
        return {account: int(fen) for account, fen in rows}

    held = locked()
    missing = [account for account in wanted if account not in held]
    if missing:
        _insert_new(session, AccountBalance, [{"account": a, "balance_fen": 0} for a in missing])
        held = locked()
    return held


def record(
    session: Session, tx: ledger.Transaction, actor: str, order_id: str | None = None
) -> dict[str, int]:
    """Write a balanced transaction as postings, as balance updates and as a `money.posted`
    event; the new balances of the accounts it touched. Refused, with nothing written, when it
    would leave a wallet (`InsufficientFunds`, 402), an escrow or a receivable (`Overdrawn`, 409)
    below zero."""
    net: dict[str, int] = {}
    for posting in tx.postings:
        net[posting.account] = net.get(posting.account, 0) + posting.amount_fen
    held = lock_balances(session, net)
    after = {account: held[account] + change for account, change in net.items()}
    for account in sorted(after):
        if ledger.never_negative(account) and after[account] < 0:
            if account.startswith("wallet:"):
                raise InsufficientFunds(-net[account], held[account])
            raise Overdrawn(account, held[account], -net[account])
        if abs(after[account]) > BIGINT_MAX:
            raise InvalidValue(
                "amount_fen", net[account], f"a balance within ±{BIGINT_MAX}", "余额超出可存范围"
            )
    session.execute(
        insert(LedgerTransaction).values(
            id=tx.id, kind=tx.kind, memo=tx.memo, order_id=order_id, at=now(session)
        )
    )
    session.execute(
        insert(LedgerPosting),
        [
            {
                "transaction_id": tx.id,
                "account": p.account,
                "amount_fen": p.amount_fen,
                "currency": p.currency,
            }
            for p in tx.postings
        ],
    )
    changed = [{"account": a, "balance_fen": after[a]} for a in sorted(after) if net[a] != 0]
    if changed:
        session.execute(update(AccountBalance), changed)  # by primary key, rows locked above
    append_event(
        session,
        "money.posted",
        tx.id,
        actor,
        {
            "kind": tx.kind,
            "order": order_id,
            "postings": [[p.account, p.amount_fen, p.currency] for p in tx.postings],
        },
    )
    return after


def balance(session: Session, account: str) -> int:
    """The account's balance (its `account_balances` row, kept equal to the sum of its postings
    by `record`; 0 for an account never posted to)."""
    found = session.scalar(
        select(AccountBalance.balance_fen).where(AccountBalance.account == account)
    )
    return int(found or 0)


def credit(session: Session, who: Actor, consumer_id: str, fen: int) -> int:
    """Operator top-up of a consumer's wallet; the new balance."""
    require(who, Role.OPERATOR)
    amount("fen", fen)
    _principal(session, consumer_id, Role.CONSUMER)
    after = record(session, ledger.top_up(new_id("tx"), consumer_id, fen), who.id)
    return after[ledger.wallet(consumer_id)]


def payout(session: Session, who: Actor, provider_id: str, fen: int) -> int:
    """Operator pays a provider out of its receivable (locked before it is read, so concurrent
    payouts cannot both spend it); the balance left."""
    require(who, Role.OPERATOR)
    amount("fen", fen)
    _principal(session, provider_id, Role.PROVIDER)
    account = ledger.receivable(provider_id)
    available = lock_balances(session, [account])[account]
    if fen > available:
        raise InvalidValue(
            "fen", fen, f"at most the receivable, {available} fen", f"不超过应收余额 {available} 分"
        )
    return record(session, ledger.payout(new_id("tx"), provider_id, fen), who.id)[account]


def _principal(session: Session, ident: str, role: Role) -> Principal:
    found = session.get(Principal, ident)
    if found is None or found.role != role.value:
        raise NotFound(role.value, ident)
    return found


def accounts_of(who: Actor) -> list[str]:
    if who.role == Role.CONSUMER.value:
        return [ledger.wallet(who.id), ledger.escrow(who.id)]
    if who.role == Role.PROVIDER.value:
        return [ledger.receivable(who.id)]
    return [ledger.PLATFORM_REVENUE, ledger.NETWORK_OPERATOR, ledger.SLA_CREDITS, ledger.EXTERNAL]


def statement(
    session: Session, who: Actor, account: str, start: datetime | None, end: datetime | None
) -> list[dict[str, Any]]:
    """Postings of one account in [start, end), oldest first, with a running balance. Each line
    names the voucher legs of its transaction (`vouchers`: [[account, fen]], e.g. a hold funded
    by a voucher, a refund back to one), so a consumer's statement shows voucher spending. A
    consumer may read its wallet, its escrow and the vouchers it is eligible for."""
    if who.role != Role.OPERATOR.value and account not in accounts_of(who):
        from suanli.services import vouchers  # vouchers build on this module

        if not (
            who.role == Role.CONSUMER.value
            and account.startswith("voucher:")
            and vouchers.eligible_for(session, who.id, account.removeprefix("voucher:"))
        ):
            raise NotFound("account", account)
    query = (
        select(LedgerPosting, LedgerTransaction)
        .join(LedgerTransaction, LedgerTransaction.id == LedgerPosting.transaction_id)
        .where(LedgerPosting.account == account)
        .order_by(LedgerTransaction.at, LedgerPosting.id)
    )
    rows = session.execute(query).all()
    running = 0
    lines: list[dict[str, Any]] = []
    for posting, tx in rows:
        running += posting.amount_fen
        at = aware(tx.at)
        if (start is not None and at < start) or (end is not None and at >= end):
            continue
        lines.append(
            {
                "at": at.isoformat(),
                "transaction": tx.id,
                "kind": tx.kind,
                "order": tx.order_id,
                "memo": tx.memo,
                "amount": money(posting.amount_fen),
                "balance": money(running),
                "vouchers": [],
            }
        )
    legs = _voucher_legs(session, [line["transaction"] for line in lines], account)
    for line in lines:
        line["vouchers"] = legs.get(line["transaction"], [])
    return lines


def _voucher_legs(session: Session, tx_ids: list[str], account: str) -> dict[str, list[Any]]:
    """The voucher postings (voucher:<id> and `ledger.VOUCHERS_ISSUED`) of these transactions,
    other than `account`'s own: transaction -> [[account, fen], ...]."""
    found: dict[str, list[Any]] = {}
    for i in range(0, len(tx_ids), CHUNK):
        rows = session.execute(
            select(LedgerPosting.transaction_id, LedgerPosting.account, LedgerPosting.amount_fen)
            .where(
                LedgerPosting.transaction_id.in_(tx_ids[i : i + CHUNK]),
                (LedgerPosting.account.startswith("voucher:"))
                | (LedgerPosting.account == ledger.VOUCHERS_ISSUED),
                LedgerPosting.account != account,
            )
            .order_by(LedgerPosting.id)
        )
        for tx_id, leg, fen in rows:
            found.setdefault(tx_id, []).append([leg, int(fen)])
    return found


# --- quotes and orders ---------------------------------------------------------------------


def pool_utilisation(pool: PoolRow, held: int) -> Decimal:
    """The pool's utilisation in [0, 1]: devices held over its count (a pool with an engine
    queue, `queue_depth`, may hold more tasks than devices: it is then fully used)."""
    if pool.count <= 0:
        return Decimal(1)
    return Decimal(min(max(held, 0), pool.count)) / Decimal(pool.count)


def quote(
    session: Session,
    who: Actor,
    spec: dict[str, Any],
    default_policy: str,
    rules: market.PricingRules | None = None,
) -> QuoteRow:
    """Priced options for a task, valid for 5 minutes: a what-if on the one decision step
    (`scheduler.decide` on the pass's own inputs, `capacity.step_inputs`, so devices held or
    reported busy count), its pool and runner-up and, for a task that may be deferred, the
    cheapest and the greenest start within its deadline (`price_options`); each option starts
    `start_s` seconds from now (`starts_at`: the first at the step's deferred hour when it
    defers). Options above the task's `max_price_fen` are left out."""
    rules = rules or pricing_rules(session)
    require(who, Role.CONSUMER, Role.OPERATOR)
    spec = {**spec, "origin": spec.get("origin") or tasks_service.DEFAULT_ORIGIN}
    tasks_service.check_spec(spec)
    moment = now(session)
    options, reasons = price_options(session, who.id, spec, default_policy, rules, moment)
    ceiling = spec.get("max_price_fen")
    if ceiling is not None:
        dearer = [o for o in options if total_fen(o) > ceiling]
        options = [o for o in options if total_fen(o) <= ceiling]
        if dearer and not options:
            reasons = over_ceiling(ceiling, min(total_fen(o) for o in dearer))
    row = QuoteRow(
        id=new_id("quote"),
        owner_id=who.id,
        spec=spec,
        options={"options": options, "unavailable": reasons},
        created_at=moment,
        expires_at=moment + timedelta(seconds=QUOTE_VALID_S),
        order_id=None,
    )
    session.add(row)
    append_event(session, "quote.issued", row.id, who.id, {"options": len(options)})
    return row


# the options a quote adds for a task that may be deferred: (listed_as, policy). `green` is the
# policy whose only objective is carbon (market-based, the `carbon_kg` every option shows)
START_POLICIES = (("cheapest-start", "cost"), ("greenest-start", "green"))
WHY_START = {
    "cheapest-start": "cheapest start within the deadline: the cost policy's pool at the hour "
    "of its lowest quoted total",
    "greenest-start": "greenest start within the deadline: the green policy's pool and hour",
}


@dataclass(frozen=True, slots=True)
class Listed:
    """An option before it is priced: its pool, its start (seconds after the quote's moment),
    which option it is (`listed_as`: best, runner-up, cheapest-start, greenest-start) and why it
    is listed."""

    pool: str
    start_s: float
    listed_as: str
    why: str

    @property
    def key(self) -> tuple[str, int]:
        """One pool and one start (to the second) are one option."""
        return self.pool, round(self.start_s)


def price_options(
    session: Session,
    owner_id: str,
    spec: dict[str, Any],
    default_policy: str,
    rules: market.PricingRules,
    moment: datetime,
) -> tuple[list[dict[str, Any]], str]:
    """A quote's priced options for a checked spec and, when there is none, the engine's
    reason. A what-if: nothing is written. The engine sees the task without its
    `max_price_fen`: that bounds the quoted total (the caller compares), not the engine's cost
    estimate.

    In order, each listed once (one pool and one start are one option): the decision step's
    choice (at its deferred start when it defers), its runner-up (now) and, for a task that may
    be deferred (deferrable, with a deadline: `engine_task`), the cheapest and the greenest
    start within the deadline: the step's answer for the same task on the same inputs under
    `cost` and under `green` (`START_POLICIES`); the cheapest start is the cost policy's pool
    at the hour of the least quoted total (`_cheapest_start`). Each option is priced by
    `price_offer` at its start, with the engine's run time and carbon there (`_alone`), and
    says which it is (`listed_as`) and why it is listed (`reason`)."""
    probe = TaskRow(
        id="quote",
        owner_id=owner_id,
        spec={k: v for k, v in spec.items() if k != "max_price_fen"},
        devices=total_devices(spec),
        policy=spec.get("policy") or "",
        created_at=moment,
        not_before=None,
        pinned_pool_id=None,
        queued_at=None,
    )
    queued = capacity_service.queued_task(
        probe, {}, probe.spec, runtime=runtime_service.runtimes(session)
    )
    inputs = capacity_service.step_inputs(session, moment)
    policy = spec.get("policy") or default_policy
    default = policy_named(default_policy)
    clock = inputs.clock_s
    (decision,) = decide([queued], inputs.network, inputs.capacity, default, clock)
    if decision.placement is None:
        return [], decision.reason
    placement = decision.placement
    listed = [
        Listed(placement.pool, _start_s(decision, clock), "best", f"best under the {policy} policy")
    ]
    if placement.runner_up:
        listed.append(
            Listed(placement.runner_up, 0.0, "runner-up", f"runner-up under the {policy} policy")
        )
    starts: dict[str, Decision] = {}
    if queued.task.deferrable:
        for listed_as, name in START_POLICIES:
            alike = replace(queued, policy=policy_named(name))
            (found,) = decide([alike], inputs.network, inputs.capacity, default, clock)
            if found.placement is not None:
                starts[listed_as] = found
    wanted = {item.pool for item in listed} | {d.pool for d in starts.values() if d.pool}
    pools = {row.id: row for row in session.scalars(select(PoolRow).where(PoolRow.id.in_(wanted)))}
    sites = {
        row.id: row
        for row in session.scalars(
            select(SiteRow).where(SiteRow.id.in_([p.site_id for p in pools.values()]))
        )
    }
    for listed_as, found in starts.items():
        at = pools.get(found.pool or "")
        if at is None:
            continue
        start = _start_s(found, clock)
        if listed_as == "cheapest-start":
            start = _cheapest_start(
                found, at, sites[at.site_id], spec, queued, inputs, moment, rules
            )
        listed.append(Listed(at.id, start, listed_as, WHY_START[listed_as]))
    options: list[dict[str, Any]] = []
    seen: set[tuple[str, int]] = set()
    for item in listed:
        pool_row = pools.get(item.pool)
        if pool_row is None or item.key in seen:
            continue
        seen.add(item.key)
        duration_s, carbon = _alone(item.pool, inputs.network, queued, moment, item.start_s)
        offer = price_offer(
            pool_row,
            sites[pool_row.site_id],
            spec,
            inputs.capacity.pools[item.pool].held,
            duration_s,
            carbon,
            item.why,
            moment,
            item.start_s,
            rules,
        )
        options.append({**offer, "listed_as": item.listed_as})
    return options, ""


def _start_s(decision: Decision, clock_s: float) -> float:
    """When a PLACE or WAIT decision starts the task: seconds after `clock_s` (0: now)."""
    return 0.0 if decision.not_before_s is None else decision.not_before_s - clock_s


def _cheapest_start(
    decision: Decision,
    pool: PoolRow,
    site: SiteRow,
    spec: dict[str, Any],
    queued: QueuedTask,
    inputs: capacity_service.StepInputs,
    moment: datetime,
    rules: market.PricingRules,
) -> float:
    """The start (seconds after `moment`) of the least quoted total for the task on the
    decision's pool, over the hours the decision step may defer it to: whole hours from now
    to the network's `max_delay_h`, the run (the engine's transfer and run time there) ending
    by the task's deadline; the earliest on a tie. The engine's own deferral is among them; the
    engine's cost on the live platform does not change with the hour (pools carry no
    time-of-use multiplier), the quoted price does (`price_offer`: the site's time of use at
    the start), so the hour is the market's."""
    if decision.placement is None or queued.task.deadline_s is None:
        return _start_s(decision, inputs.clock_s)
    breakdown = decision.placement.breakdown
    duration_s, _ = _alone(pool.id, inputs.network, queued, moment, 0.0)
    run_s = breakdown.transfer_s + breakdown.duration_s
    starts = [
        hour * 3600.0
        for hour in range(inputs.network.max_delay_h + 1)
        if hour == 0 or inputs.clock_s + hour * 3600.0 + run_s <= queued.task.deadline_s
    ]
    held = inputs.capacity.pools[pool.id].held
    best = _least_offer(pool, site, spec, held, duration_s, moment, starts, rules)
    return _start_s(decision, inputs.clock_s) if best is None else best[1]


def _least_offer(
    pool: PoolRow,
    site: SiteRow,
    spec: dict[str, Any],
    held: int,
    duration_s: float,
    moment: datetime,
    starts: Iterable[float],
    rules: market.PricingRules,
) -> tuple[int, float] | None:
    """The least total `price_offer` quotes on `pool` over `starts` (seconds after `moment`),
    and that start (the earliest on a tie); None when every start's price is beyond MAX_FEN."""
    best: tuple[int, float] | None = None
    for start_s in starts:
        try:
            offer = price_offer(pool, site, spec, held, duration_s, 0.0, "", moment, start_s, rules)
        except InvalidValue:  # beyond MAX_FEN at this hour: not a price anyone is quoted
            continue
        if best is None or total_fen(offer) < best[0]:
            best = (total_fen(offer), start_s)
    return best


def cheapest_total(
    session: Session, spec: dict[str, Any], rules: market.PricingRules, moment: datetime
) -> tuple[int, str] | None:
    """The lowest total any pool could quote for this (checked) spec, with that pool's id, or
    None when no pool can run it at all: a what-if on every pool that passes the engine's
    static constraints (device kind and model, precision, memory, pool size, latency tier,
    residency, deadline; not free capacity, not the price ceiling), each priced like a quote's
    option at its idlest (no devices held) and at the cheapest of the next 24 start hours
    (time of use). A task whose `max_price_fen` is below it could never be admitted."""
    from suanli.scheduler.arrays import evaluate, pool_arrays, task_arrays
    from suanli.scheduler.tasks import engine_task

    inputs = capacity_service.step_inputs(session, moment, booked=False)
    network = inputs.network
    if not network.pools:
        return None
    probe = {k: v for k, v in spec.items() if k != "max_price_fen"}
    task = replace(engine_task("probe", probe, inputs.clock_s), deferrable=False)
    pools = pool_arrays(network)
    tasks = task_arrays([task], network, pools)
    seen = evaluate(tasks, slice(0, 1), pools, network, policy_named("cost"), inputs.clock_s)
    durations: list[Any] = seen.duration_s[0].tolist()  # the engine's seconds, per pool
    allowed: list[Any] = seen.feasible[0].tolist()
    feasible = [
        (pool_id, duration)
        for pool_id, duration, ok in zip(pools.ids, durations, allowed, strict=True)
        if ok and duration < INFINITE_S
    ]
    if not feasible:
        return None
    rows = {
        row.id: row
        for row in session.scalars(select(PoolRow).where(PoolRow.id.in_([i for i, _ in feasible])))
    }
    sites = {row.id: row for row in session.scalars(select(SiteRow))}
    best: tuple[int, str] | None = None
    for pool_id, duration_s in feasible:
        pool = rows.get(pool_id)
        if pool is None:
            continue
        starts = (hour * 3600.0 for hour in range(24))
        least = _least_offer(pool, sites[pool.site_id], spec, 0, duration_s, moment, starts, rules)
        if least is not None and (best is None or least[0] < best[0]):
            best = (least[0], pool_id)
    return best


def total_fen(option: dict[str, Any]) -> int:
    """A quote option's (or an admission offer's) total price in fen."""
    return int(option["price"]["total_fen"]["fen"])


def over_ceiling(ceiling: int, cheapest_fen: int) -> str:
    """Why no option fits the task's `max_price_fen` (English, then Chinese)."""
    return (
        f"max_price_fen: the cheapest option costs {cheapest_fen} fen, above max_price_fen "
        f"{ceiling}; raise max_price_fen or ask for less (fewer devices, a shorter duration) / "
        f"max_price_fen：最便宜的方案需 {cheapest_fen} 分，高于上限 {ceiling} 分；"
        "请提高 max_price_fen 或减少所需资源"
    )


def _alone(
    pool_id: str, network: Snapshot, queued: QueuedTask, moment: datetime, start_s: float
) -> tuple[float, float]:
    """The engine's run time and carbon of the task on one pool alone, starting `start_s`
    after `moment`."""
    one = tuple(replace(p, free=p.count) for p in network.pools if p.id == pool_id)
    task = replace(queued.task, deferrable=False, max_price_fen=None)
    start = moment + timedelta(seconds=start_s)
    single = place(
        [task],
        replace(network, pools=one),
        policy_named("cost"),
        start.timestamp(),
        solver="greedy",
    )
    if not single.placements:
        return 0.0, 0.0
    return single.placements[0].breakdown.duration_s, single.placements[0].breakdown.carbon_kg


def price_at(
    pool: PoolRow,
    site: SiteRow,
    devices: int,
    duration_s: float,
    *,
    start: datetime,
    utilisation: Decimal,
    preemptible: bool,
    data_gb: float,
    rules: market.PricingRules,
) -> tuple[market.PriceBreakdown, Decimal, str]:
    """The market's pricing of `devices` of `pool` for `duration_s` from `start`: the pool's
    posted price under the site's time of use at the start hour (China Standard Time, UTC+8)
    and the pool's `utilisation` (0..1) on the operator's curve, with the preemptible discount,
    the platform fee and the network price of `data_gb` (`market.price`). Returns the breakdown
    (integer fen), the time-of-use multiplier and its note. Quotes and admission offers
    (`price_offer`, with the utilisation of the devices held now) and the price forecasts
    (`services.forecasts`, with the forecast utilisation) price through it alone."""
    local = start + timedelta(hours=8)  # China Standard Time
    tou, tou_note = market.tou_multiplier(
        site.province, local.month, local.hour + local.minute / 60
    )
    breakdown = market.price(
        pool.price_fen_per_device_hour,
        devices,
        duration_s,
        tou=tou,
        utilisation=utilisation,
        preemptible=preemptible,
        data_gb=data_gb,
        rules=rules,
    )
    return breakdown, tou, tou_note


def price_offer(
    pool: PoolRow,
    site: SiteRow,
    spec: dict[str, Any],
    held: int,
    duration_s: float,
    carbon_kg: float,
    why: str,
    moment: datetime,
    start_s: float,
    rules: market.PricingRules,
) -> dict[str, Any]:
    """The ONE pricing of a task on a pool, for a quote's option and an admission's offer
    alike: `duration_s` on the pool (the engine's), starting `start_s` after `moment`, priced
    with the site's time of use at that start hour (China Standard Time), the pool's
    utilisation (`held` of its devices), the preemptible discount, the platform fee and the
    network price of `data_gb` when the data moves to the pool's site (`data_moves`, as the
    engine weighs it; `price_at`). The order's maximum is the total
    (`price_range.max`)."""
    start = moment + timedelta(seconds=start_s)
    breakdown, tou, tou_note = price_at(
        pool,
        site,
        int(spec["resources"]["devices"]),
        duration_s,
        start=start,
        utilisation=pool_utilisation(pool, held),
        preemptible=bool(spec.get("preemptible")),
        # the network price is for data moved: none where the data already lives
        data_gb=(spec.get("data_gb") or 0.0) if capacity_service.data_moves(spec, site) else 0.0,
        rules=rules,
    )
    if breakdown.total_fen > MAX_FEN:
        raise InvalidValue(
            "price.total_fen",
            breakdown.total_fen,
            f"at most {MAX_FEN} fen: ask for fewer resources.devices, a shorter "
            "resources.duration_s or less data_gb",
            f"不超过 {MAX_FEN} 分：请减少 resources.devices、"
            "缩短 resources.duration_s 或减少 data_gb",
        )
    return {
        "pool": pool.id,
        "site": pool.site_id,
        "province": site.province,
        "start_s": start_s,
        "starts_at": start.isoformat(),
        "duration_s": duration_s,
        "carbon_kg": carbon_kg,
        "reason": why,
        "time_of_use": {"multiplier": str(tou), "note": tou_note},
        "price": {part: money(getattr(breakdown, part)) for part in PRICE_PARTS},
        "provider_fen": breakdown.provider_fen,
        "price_range": {"min": money(0), "max": money(breakdown.total_fen)},
        "rules": {name: getattr(rules, name) for name in RULE_FIELDS},
    }


PRICE_PARTS = (
    "base_fen",
    "time_of_use_fen",
    "utilisation_fen",
    "preemptible_fen",
    "platform_fee_fen",
    "network_fen",
    "total_fen",
)


def _breakdown(option: dict[str, Any]) -> market.PriceBreakdown:
    parts = {part: int(option["price"][part]["fen"]) for part in PRICE_PARTS}
    return market.PriceBreakdown(**parts, provider_fen=int(option["provider_fen"]))


def accept(
    session: Session, who: Actor, quote_id: str, option: int, default_policy: str
) -> OrderRow:
    """Turn a quote's option into an order: escrow held, the task created QUEUED and pinned to
    the quoted pool (`pinned_pool_id`); the scheduling pass places it there (it is decided
    first) or keeps it queued with the reason. Never assigns a pool itself.

    The quoted start holds (`quoted_start`): an option that starts later defers the task until
    then (`tasks.not_before`, a `task.deferred` event), and a task that may be deferred is
    not deferred again by the pass (its `not_before` is the quoted start even when that is
    now: the decision step then starts it, never waits twice)."""
    row = session.get(QuoteRow, quote_id, with_for_update=True)
    if row is None or row.owner_id != who.id:
        raise NotFound("quote", quote_id)
    if row.order_id is not None:
        raise Conflict(
            f"quote {quote_id} was already accepted (order {row.order_id})",
            f"报价 {quote_id} 已被接受（订单 {row.order_id}）",
        )
    if aware(row.expires_at) < now(session):
        raise Conflict(
            f"quote {quote_id} expired at {aware(row.expires_at).isoformat()}; ask for a new one",
            f"报价 {quote_id} 已过期；请重新报价",
        )
    offers = row.options["options"]
    if not 0 <= option < len(offers):
        raise InvalidValue(
            "option",
            option,
            f"an index in [0, {len(offers) - 1}]",
            f"[0, {len(offers) - 1}] 内的序号",
        )
    offer = offers[option]
    maximum = int(offer["price_range"]["max"]["fen"])
    # lock the vouchers, the wallet and the escrow BEFORE reading them: a concurrent accept
    # waits here; the maximum is drawn from eligible vouchers first, then the wallet
    from suanli.services import budgets, vouchers  # they build on this module

    drawn = vouchers.draw(session, who.id, maximum, now(session), InsufficientFunds)
    # an accepted quote is spending too: it may not pass a budget (402, nothing is created).
    # Checked under the wallet's lock, so two accepts of one consumer see each other's orders
    budgets.refuse_over_budget(session, who.id, maximum, now(session))
    pool = session.get(PoolRow, offer["pool"])
    site = session.get(SiteRow, offer["site"])
    if pool is None or site is None:
        raise Conflict("the quoted pool is gone; ask for a new quote", "报价的资源池已不存在")
    # the pass admits the task like any other: on the quoted pool or nowhere (`pinned_pool_id`)
    task, _ = tasks_service.submit(session, who, row.spec, None)
    task.pinned_pool_id = pool.id
    task.unplaced_reason = f"waiting for a scheduling pass on the quoted pool {pool.id}"
    start, later = quoted_start(row, offer)
    if later or engine_task(task.id, row.spec, 0.0).deferrable:
        task.not_before = start
    if later:
        task.unplaced_reason = (
            f"deferred to the quoted start {start.isoformat()} on the quoted pool {pool.id}"
        )
        # its pool's devices are booked from then for its run, as a deferral's are
        task.booked_pool_id = pool.id
        task.booked_until = start + timedelta(seconds=offer.get("duration_s") or 0)
    session.flush()  # the task's row exists before the order that names it
    if later:
        append_event(
            session,
            "task.deferred",
            task.id,
            who.id,
            {"until": start.isoformat(), "quote": row.id, "pool": pool.id},
        )
    order = OrderRow(
        id=new_id("order"),
        owner_id=who.id,
        provider_id=site.owner_id,
        quote_id=row.id,
        task_id=task.id,
        state="OPEN",
        escrow_fen=maximum,
        offer=offer,
        settlement=None,
        created_at=now(session),
        settled_at=None,
        source="quote",
        voucher_fen=sum(fen for _, fen in drawn),
        vouchers=[[ident, fen] for ident, fen in drawn],
    )
    session.add(order)
    session.flush()
    row.order_id = order.id
    hold_escrow(session, order, drawn, who.id)
    append_event(
        session,
        "order.created",
        order.id,
        who.id,
        {"task": task.id, "escrow_fen": maximum, "pool": pool.id, "voucher_fen": order.voucher_fen},
    )
    return order


def quoted_start(row: QuoteRow, offer: dict[str, Any]) -> tuple[datetime, bool]:
    """When a quote's option starts (the quote's moment plus its `start_s`, i.e. its
    `starts_at`) and whether that is later than the quote's moment."""
    start_s = offer.get("start_s") or 0.0  # a number of seconds (JSON), not money
    return aware(row.created_at) + timedelta(seconds=start_s), start_s > 0


def hold_escrow(
    session: Session, order: OrderRow, drawn: list[tuple[str, int]], actor: str
) -> None:
    """Hold the order's maximum in escrow: `drawn` from vouchers ((voucher id, fen)), the rest
    from the wallet (balances locked and checked by `vouchers.draw`); nothing for a free
    order."""
    if order.escrow_fen > 0:
        tx = ledger.hold(new_id("tx"), order.owner_id, order.escrow_fen, drawn)
        record(session, tx, actor, order.id)


OUTCOMES = {
    State.COMPLETE.value: market.Outcome.COMPLETE,
    State.EXECUTOR_ERROR.value: market.Outcome.EXECUTOR_ERROR,
    State.SYSTEM_ERROR.value: market.Outcome.SYSTEM_ERROR,
    State.CANCELED.value: market.Outcome.CANCELED,
    State.PREEMPTED.value: market.Outcome.PREEMPTED,
}


def settle_task(session: Session, task: TaskRow) -> OrderRow | None:
    """Settle the task's OPEN order when the task ended (COMPLETE, EXECUTOR_ERROR,
    SYSTEM_ERROR, CANCELED) or was preempted (PREEMPTED: charged for what ran; a re-queued task
    gets a new order when admitted again). Once per order: a settled one is left alone. The
    refund goes back to the vouchers that funded the escrow (`market.voucher_refunds`: the
    charge is paid from the vouchers first; an expired voucher's part returns to the issuer,
    `ledger.VOUCHERS_ISSUED`), the rest of it to the wallet. Returns the order settled, else
    the task's latest order (None when it has none)."""
    order = session.scalars(
        select(OrderRow)
        .where(OrderRow.task_id == task.id, OrderRow.state == "OPEN")
        .order_by(OrderRow.created_at, OrderRow.id)
        .with_for_update()
    ).first()
    if order is None or task.state not in OUTCOMES:
        return (
            order
            or session.scalars(
                select(OrderRow)
                .where(OrderRow.task_id == task.id)
                .order_by(OrderRow.created_at.desc(), OrderRow.id.desc())
            ).first()
        )
    offer = order.offer
    planned = offer["duration_s"] * task.devices  # device-seconds, not money
    used = (task.usage or {}).get("device_s") or 0.0
    deadline = task.spec.get("deadline_s")
    missed = (
        deadline is not None
        and task.state == State.COMPLETE.value
        and (aware(task.updated_at) - aware(task.created_at)).total_seconds() > deadline
    )
    settlement = market.settle(
        order.escrow_fen,
        _breakdown(offer),
        planned,
        used,
        OUTCOMES[task.state],
        missed,
        rules_from(
            offer.get("rules", {name: getattr(market.PricingRules(), name) for name in RULE_FIELDS})
        ),
    )
    refunds = _voucher_refunds(session, order, settlement.charge_fen)
    if order.escrow_fen > 0:
        record(
            session,
            ledger.settle(new_id("tx"), order.owner_id, order.provider_id, settlement, refunds),
            "settlement",
            order.id,
        )
    order.state = "SETTLED"
    order.settled_at = now(session)
    order.settlement = {
        "charge": money(settlement.charge_fen),
        "provider": money(settlement.provider_fen),
        "platform": money(settlement.platform_fen),
        "network": money(settlement.network_fen),
        "sla_credit": money(settlement.sla_credit_fen),
        "refund": money(settlement.refund_fen),
        "voucher_refund": money(sum(fen for _, fen in refunds)),
        "outcome": task.state,
        "deadline_missed": missed,
    }
    append_event(session, "order.settled", order.id, "settlement", order.settlement)
    return order


def _voucher_refunds(session: Session, order: OrderRow, charge_fen: int) -> list[tuple[str, int]]:
    """(account, fen) of the refund that goes back to the order's vouchers: voucher:<id> while
    the voucher is active and unexpired, else the issuer (`ledger.VOUCHERS_ISSUED`)."""
    drawn = [(str(ident), int(fen)) for ident, fen in (order.vouchers or [])]
    back = market.voucher_refunds(charge_fen, drawn)
    if not back:
        return []
    moment = now(session)
    live = {
        ident
        for ident, expires in session.execute(
            select(VoucherRow.id, VoucherRow.expires_at).where(
                VoucherRow.id.in_([ident for ident, _ in back]), VoucherRow.state == "ACTIVE"
            )
        )
        if aware(expires) > moment
    }
    return [
        (ledger.voucher(ident) if ident in live else ledger.VOUCHERS_ISSUED, fen)
        for ident, fen in back
    ]


def get_order(session: Session, who: Actor, order_id: str) -> OrderRow:
    order = session.get(OrderRow, order_id)
    if order is None or (
        who.role != Role.OPERATOR.value and who.id not in (order.owner_id, order.provider_id)
    ):
        raise NotFound("order", order_id)
    return order


def rate(session: Session, who: Actor, order_id: str, stars: int, comment: str) -> RatingRow:
    order = session.get(OrderRow, order_id)
    if order is None or order.owner_id != who.id:
        raise NotFound("order", order_id)
    if order.state != "SETTLED":
        raise Conflict(f"order {order_id} has not finished yet", f"订单 {order_id} 尚未结束")
    if session.scalar(select(RatingRow).where(RatingRow.order_id == order_id)) is not None:
        raise Conflict(f"order {order_id} is already rated", f"订单 {order_id} 已评价")
    if isinstance(stars, bool) or not 1 <= stars <= 5:
        raise InvalidValue("stars", stars, "a whole number from 1 to 5", "1 到 5 的整数")
    row = RatingRow(
        id=new_id("rating"),
        order_id=order_id,
        owner_id=who.id,
        provider_id=order.provider_id,
        stars=stars,
        comment=comment,
        at=now(session),
    )
    session.add(row)
    append_event(session, "order.rated", order_id, who.id, {"stars": stars})
    return row


def reputation(session: Session) -> dict[str, float]:
    """Provider -> reputation in [0, 1]: the mean of (stars - 1) / 4 over its ratings and its
    share of settled orders without a provider failure or a missed deadline, averaged; 1.0 for a
    provider with no history (new providers are not penalised)."""
    stars: dict[str, list[int]] = {}
    for provider, value in session.execute(select(RatingRow.provider_id, RatingRow.stars)):
        stars.setdefault(provider, []).append(value)
    kept: dict[str, list[bool]] = {}
    for provider, settled in session.execute(
        select(OrderRow.provider_id, OrderRow.settlement).where(OrderRow.state == "SETTLED")
    ):
        ok = settled["outcome"] != State.SYSTEM_ERROR.value and not settled["deadline_missed"]
        kept.setdefault(provider, []).append(ok)
    result: dict[str, float] = {}
    for provider in set(stars) | set(kept):
        parts = []
        if provider in stars:
            parts.append(sum((s - 1) / 4 for s in stars[provider]) / len(stars[provider]))
        if provider in kept:
            parts.append(sum(kept[provider]) / len(kept[provider]))
        result[provider] = sum(parts) / len(parts)
    return result


# --- audit ---------------------------------------------------------------------------------

REPLAYED = ("money.posted", "order.settled")  # the events the ledger replay reads
CHUNK = 500  # ids per IN (...) query


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Where an audit stopped: every stream of the log verified up to its head in `heads`
    (stream -> (seq in the stream, hash)), the seals up to `seal` (id, root), the balances the
    ledger replay reached there and the number of transactions it replayed."""

    heads: Heads = field(default_factory=genesis_heads)
    seal: tuple[int, str] = (0, GENESIS_HASH)
    balances: dict[str, int] = field(default_factory=dict)
    transactions: int = 0

    @property
    def events(self) -> int:
        """Events verified, in all streams."""
        return sum(n for n, _ in self.heads.values())

    @property
    def money_seq(self) -> int:
        """How far the money stream (and so the ledger replay) was verified."""
        return self.heads.get(MONEY_STREAM, (0, GENESIS_HASH))[0]

    def state(self) -> dict[str, Any]:
        return {
            "heads": heads_json(self.heads),
            "seal": list(self.seal),
            "balances": self.balances,
            "transactions": self.transactions,
        }


GENESIS = Checkpoint()


@dataclass(frozen=True, slots=True)
class Audit:
    """The outcome of one audit: `problem` names the first breach (None when the books hold);
    `reached` is the verified position (the start when a problem was found); `walked` counts
    the events this check hashed; `events` and `transactions` the log's and the ledger's
    length."""

    problem: str | None
    reached: Checkpoint
    walked: int
    full: bool
    events: int
    transactions: int


def _stored_checkpoint(session: Session, lock: bool) -> Checkpoint | None:
    query = select(AuditCheckpoint).where(AuditCheckpoint.id == 1)
    row = session.scalars(query.with_for_update() if lock else query).first()
    if row is None or "heads" not in (row.state or {}):
        return None  # none yet (or one from before the log had streams): walk from the start
    state = row.state
    balances = {str(k): int(v) for k, v in (state.get("balances") or {}).items()}
    seal_id, root = state.get("seal") or (0, GENESIS_HASH)
    return Checkpoint(
        genesis_heads() | heads_from(state["heads"]),
        (int(seal_id), str(root)),
        balances,
        int(state.get("transactions") or 0),
    )


def audit(session: Session, *, full: bool = False) -> Audit:
    """Audit the books in the caller's (write) unit of work and move the checkpoint forward.

    Holds the checkpoint row FOR UPDATE (concurrent audits queue, and each resumes from where
    the one before it stopped) and every stream's head FOR SHARE (writers wait: the log, the
    ledger and the stored balances are read as one consistent state). Resumes from the
    checkpoint, or from the first event when `full` or when there is none."""
    stored = _stored_checkpoint(session, lock=True)
    heads = stream_heads(session, lock=True)
    start = GENESIS if full or stored is None else stored
    result = _walk(session, start, heads, full)
    save_checkpoint(session, result)
    return result


def walk(session: Session, *, full: bool = False) -> Audit:
    """The audit without locks or writes, for a session that reads one snapshot (PostgreSQL
    REPEATABLE READ, or a deferred SQLite read transaction); store what it reached with
    `save_checkpoint` in a write unit afterwards."""
    stored = None if full else _stored_checkpoint(session, lock=False)
    return _walk(session, stored or GENESIS, stream_heads(session), full)


def save_checkpoint(session: Session, result: Audit) -> None:
    """Keep what an audit proved: the checkpoint moves forward to `result.reached` (never back:
    another audit may have gone further meanwhile; heads only grow, so further means more
    events). A failed full audit clears it, so the next incremental audit (the console's)
    walks from the first event and finds the breach too."""
    moment = now(session)
    if result.problem is not None:
        if result.full:
            session.execute(delete(AuditCheckpoint).where(AuditCheckpoint.id == 1))
        return
    reached = result.reached
    _insert_new(
        session,
        AuditCheckpoint,
        [dict(id=1, seq=0, hash=GENESIS_HASH, state={}, verified_at=moment)],
    )
    stored = session.execute(
        select(AuditCheckpoint.seq, AuditCheckpoint.state)
        .where(AuditCheckpoint.id == 1)
        .with_for_update()
    ).one()
    values: dict[str, Any] = {"verified_at": moment}
    if "heads" not in (stored.state or {}) or reached.events > stored.seq:
        values.update(seq=reached.events, hash=heads_digest(reached.heads), state=reached.state())
    session.execute(update(AuditCheckpoint).where(AuditCheckpoint.id == 1).values(**values))


def verify(session: Session, *, full: bool = False) -> str | None:
    """None when the books hold (see `audit`), else a one-line description of the first
    breach."""
    return audit(session, full=full).problem


def _walk(session: Session, start: Checkpoint, heads: Heads, full: bool) -> Audit:
    """Verify the log from `start` to `heads` and replay the ledger's new transactions (the
    money stream's) from `start`'s balances; the first breach."""
    transactions = int(session.scalar(select(func.count()).select_from(LedgerTransaction)) or 0)
    events = sum(n for n, _ in heads.values())
    check = verify_log(session, None if full else start.heads, start.seal, heads)

    def failed(problem: str) -> Audit:
        return Audit(problem, start, check.walked, full, events, transactions)

    if check.problem is not None:
        return failed(check.problem)
    replayed = _replay(session, start, heads[MONEY_STREAM][0])
    if isinstance(replayed, str):
        return failed(replayed)
    balances, count = replayed
    if count != transactions:
        orphan = session.scalar(
            select(LedgerTransaction.id)
            .where(
                LedgerTransaction.id.not_in(
                    select(EventRow.subject).where(
                        EventRow.stream == MONEY_STREAM, EventRow.kind == "money.posted"
                    )
                )
            )
            .order_by(LedgerTransaction.at)
            .limit(1)
        )
        if orphan is not None:
            return failed(f"transaction {orphan} has no money.posted event in the log")
        return failed(
            f"the ledger holds {transactions} transactions but the log posts {count} "
            "(a transaction was removed)"
        )
    stored = {
        account: int(fen)
        for account, fen in session.execute(
            select(AccountBalance.account, AccountBalance.balance_fen)
        )
    }
    for account in sorted(set(stored) | set(balances)):
        if stored.get(account, 0) != balances.get(account, 0):
            return failed(
                f"account {account}: its stored balance is {stored.get(account, 0)} fen but its "
                f"postings sum to {balances.get(account, 0)} fen"
            )
    return Audit(
        None,
        Checkpoint(check.heads, check.seal, balances, count),
        check.walked,
        full,
        events,
        transactions,
    )


def _replay(session: Session, start: Checkpoint, head: int) -> str | tuple[dict[str, int], int]:
    """Replay the money events of the money stream after `start` up to its seq `head`, in
    stream order, from `start`'s balances: (balances, transactions replayed in all), or the
    first breach as a sentence."""
    after = start.money_seq
    events = session.execute(
        select(
            EventRow.seq,
            EventRow.kind,
            EventRow.subject,
            EventRow.data,
            LedgerTransaction.id,
            LedgerTransaction.kind,
            LedgerTransaction.order_id,
        )
        .outerjoin(
            LedgerTransaction,
            and_(EventRow.kind == "money.posted", LedgerTransaction.id == EventRow.subject),
        )
        .where(
            EventRow.stream == MONEY_STREAM,
            EventRow.stream_seq > after,
            EventRow.stream_seq <= head,
            EventRow.kind.in_(REPLAYED),
        )
        .order_by(EventRow.stream_seq)
    ).all()
    postings = _postings(session, [e[2] for e in events if e[1] == "money.posted"], after)
    balances = dict(start.balances)
    count = start.transactions
    posted: set[str] = set()
    settled_events: set[str] = set()
    settled_by: set[str] = set()
    for seq, kind, subject, data, tx_id, tx_kind, order_id in events:
        if kind == "order.settled":
            if subject in settled_events or (
                after > 0 and _settled_before(session, subject, after)
            ):
                return f"order {subject} settled twice: event #{seq} settles it again"
            settled_events.add(subject)
            continue
        if subject in posted:
            return f"transaction {subject} is posted twice in the log (event #{seq})"
        posted.add(subject)
        if tx_id is None:
            return f"transaction {subject} (event #{seq}) is not in the ledger (removed)"
        stored = postings.get(subject, [])
        if stored != data.get("postings") or [tx_kind, order_id] != [
            data.get("kind"),
            data.get("order"),
        ]:
            return f"transaction {subject}: its postings differ from the log's record"
        total = sum(amount_fen for _, amount_fen, _ in stored)
        if total != 0:
            return f"transaction {subject} does not balance (sum {total} fen)"
        for account, amount_fen, _ in stored:
            balances[account] = balances.get(account, 0) + amount_fen
        for account in sorted({account for account, _, _ in stored}):
            if ledger.never_negative(account) and balances[account] < 0:
                return (
                    f"transaction {subject} (event #{seq}) leaves {account} at "
                    f"{balances[account]} fen, below zero"
                )
        if tx_kind == "settle":
            if order_id in settled_by or (
                after > 0 and _settle_posted_before(session, str(order_id), after)
            ):
                return (
                    f"order {order_id} settled twice: transaction {subject} (event #{seq}) "
                    "is its second settlement"
                )
            settled_by.add(str(order_id))
        count += 1
    return balances, count


def _postings(session: Session, tx_ids: list[str], after: int) -> dict[str, list[list[Any]]]:
    """Each transaction's postings as [account, amount_fen, currency], in posting order (all
    transactions on a walk from the money stream's start, else only `tx_ids`)."""
    columns = (
        LedgerPosting.transaction_id,
        LedgerPosting.account,
        LedgerPosting.amount_fen,
        LedgerPosting.currency,
    )
    queries = (
        [select(*columns)]
        if after == 0
        else [
            select(*columns).where(LedgerPosting.transaction_id.in_(tx_ids[i : i + CHUNK]))
            for i in range(0, len(tx_ids), CHUNK)
        ]
    )
    found: dict[str, list[list[Any]]] = {}
    for query in queries:
        for tx_id, account, amount_fen, currency in session.execute(
            query.order_by(LedgerPosting.id)
        ):
            found.setdefault(tx_id, []).append([account, int(amount_fen), currency])
    return found


def _settled_before(session: Session, order_id: str, upto: int) -> bool:
    """An `order.settled` event for the order in the money stream at or before its seq `upto`
    (an indexed look-up)."""
    return (
        session.scalar(
            select(EventRow.seq)
            .where(
                EventRow.subject == order_id,
                EventRow.kind == "order.settled",
                EventRow.stream == MONEY_STREAM,
                EventRow.stream_seq <= upto,
            )
            .limit(1)
        )
        is not None
    )


def _settle_posted_before(session: Session, order_id: str, upto: int) -> bool:
    """A settlement transaction of the order posted in the money stream at or before `upto`."""
    return (
        session.scalar(
            select(EventRow.seq)
            .join(LedgerTransaction, LedgerTransaction.id == EventRow.subject)
            .where(
                LedgerTransaction.order_id == order_id,
                LedgerTransaction.kind == "settle",
                EventRow.kind == "money.posted",
                EventRow.stream == MONEY_STREAM,
                EventRow.stream_seq <= upto,
            )
            .limit(1)
        )
        is not None
    )
