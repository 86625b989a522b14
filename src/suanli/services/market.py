"""The market's use cases: wallets, quotes, orders with escrow, settlement, ratings, audit.

Each function is one unit of work on an open session (the caller commits). Money moves only as
balanced `ledger.Transaction`s, written as postings AND as a `money.posted` event in the hash
chain, so that `verify` can prove both the chain and every posting. Amounts are integer fen.

* `credit` (operator top-up) and `payout` (operator pays a provider out) move money across the
  platform's boundary (`ledger.EXTERNAL`);
* `quote` prices the engine's best options (and runner-up) for a task under the pricing rules;
  `accept` holds the option's maximum price in escrow (402 when the wallet is short: nothing is
  created), creates the order and the task, pinned to the quoted pool;
* `settle_task` runs when a task ends: the charge (never above the escrow) is split between
  provider, platform and network operator, SLA credits are paid for a missed deadline, the rest is
  released; an order settles once, whatever reports arrive;
* `rate` records one rating per settled order; `reputation` blends ratings with SLA adherence and
  feeds the placement engine.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from suanli import ledger, market
from suanli.catalog import Pool
from suanli.errors import InvalidValue, SuanliError
from suanli.metering import find_device
from suanli.scheduler import Snapshot, place, policy_named
from suanli.services import platform
from suanli.services.core import (
    Conflict,
    NotFound,
    Role,
    State,
    append_event,
    aware,
    new_id,
    now,
    require,
    verify_chain,
)
from suanli.store.models import (
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
)

QUOTE_VALID_S = 300
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


class InsufficientFunds(SuanliError):
    """402: the wallet cannot cover the escrow."""

    def __init__(self, needed_fen: int, available_fen: int) -> None:
        self.needed_fen, self.available_fen = needed_fen, available_fen
        super().__init__(
            f"insufficient funds: this order needs {needed_fen} fen in escrow but the wallet "
            f"holds {available_fen} fen; top up with 'suanli admin credit'",
            f"余额不足：订单需托管 {needed_fen} 分，钱包仅有 {available_fen} 分；请充值",
        )


def money(fen: int) -> dict[str, Any]:
    """How every amount leaves the API: integer fen with its currency."""
    return {"fen": int(fen), "currency": "CNY"}


# --- the ledger in the database --------------------------------------------------------------


def record(
    session: Session, tx: ledger.Transaction, actor: str, order_id: str | None = None
) -> None:
    """Write a balanced transaction as postings and as a `money.posted` event."""
    session.execute(
        insert(LedgerTransaction).values(
            id=tx.id, kind=tx.kind, memo=tx.memo, order_id=order_id, at=now()
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


def balance(session: Session, account: str) -> int:
    total = session.scalar(
        select(func.coalesce(func.sum(LedgerPosting.amount_fen), 0)).where(
            LedgerPosting.account == account
        )
    )
    return int(total or 0)


def credit(session: Session, who: Principal, consumer_id: str, fen: int) -> int:
    """Operator top-up of a consumer's wallet; the new balance."""
    require(who, Role.OPERATOR)
    _principal(session, consumer_id, Role.CONSUMER)
    record(session, ledger.top_up(new_id("tx"), consumer_id, fen), who.id)
    return balance(session, ledger.wallet(consumer_id))


def payout(session: Session, who: Principal, provider_id: str, fen: int) -> int:
    """Operator pays a provider out of its receivable; the balance left."""
    require(who, Role.OPERATOR)
    _principal(session, provider_id, Role.PROVIDER)
    available = balance(session, ledger.receivable(provider_id))
    if fen > available:
        raise InvalidValue(
            "fen", fen, f"at most the receivable, {available} fen", f"不超过应收余额 {available} 分"
        )
    record(session, ledger.payout(new_id("tx"), provider_id, fen), who.id)
    return balance(session, ledger.receivable(provider_id))


def _principal(session: Session, ident: str, role: Role) -> Principal:
    found = session.get(Principal, ident)
    if found is None or found.role != role.value:
        raise NotFound(role.value, ident)
    return found


def accounts_of(who: Principal) -> list[str]:
    if who.role == Role.CONSUMER.value:
        return [ledger.wallet(who.id), ledger.escrow(who.id)]
    if who.role == Role.PROVIDER.value:
        return [ledger.receivable(who.id)]
    return [ledger.PLATFORM_REVENUE, ledger.NETWORK_OPERATOR, ledger.SLA_CREDITS, ledger.EXTERNAL]


def statement(
    session: Session, who: Principal, account: str, start: datetime | None, end: datetime | None
) -> list[dict[str, Any]]:
    """Postings of one account in [start, end), oldest first, with a running balance."""
    if who.role != Role.OPERATOR.value and account not in accounts_of(who):
        raise NotFound("account", account)
    query = (
        select(LedgerPosting, LedgerTransaction)
        .join(LedgerTransaction, LedgerTransaction.id == LedgerPosting.transaction_id)
        .where(LedgerPosting.account == account)
        .order_by(LedgerTransaction.at, LedgerPosting.id)
    )
    rows = session.execute(query).all()
    running = 0
    lines = []
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
            }
        )
    return lines


# --- quotes and orders ---------------------------------------------------------------------


def _utilisation(pool: PoolRow, held: dict[str, int]) -> Decimal:
    return Decimal(held.get(pool.id, 0)) / Decimal(pool.count)


def quote(
    session: Session,
    who: Principal,
    spec: dict[str, Any],
    default_policy: str,
    rules: market.PricingRules | None = None,
) -> QuoteRow:
    """Priced options for a task: the engine's choice and its runner-up, valid for 5 minutes."""
    rules = rules or market.PricingRules()
    require(who, Role.CONSUMER, Role.OPERATOR)
    spec = {**spec, "origin": spec.get("origin") or platform.DEFAULT_ORIGIN}
    platform._check_spec(spec)
    moment = now()
    probe = TaskRow(
        id="quote",
        owner_id=who.id,
        spec=spec,
        devices=int(spec["resources"]["devices"]),
        created_at=moment,
    )
    held = platform._held(session)
    site_rows = {row.id: row for row in session.scalars(select(SiteRow))}
    sites = {sid: platform._site(row) for sid, row in site_rows.items()}
    pool_rows = {p.id: p for p in session.scalars(select(PoolRow).order_by(PoolRow.id))}
    pools = tuple(
        Pool(
            p.id,
            p.site_id,
            find_device(p.device),
            p.count,
            max(0, p.count - held.get(p.id, 0)),
            p.price_fen_per_device_hour,
        )
        for p in pool_rows.values()
    )
    policy = spec.get("policy") or default_policy
    options: list[dict[str, Any]] = []
    reasons = ""
    if pools:
        plan = place(
            [platform._task(probe, moment)],
            Snapshot(pools, sites),
            policy_named(policy),
            moment.timestamp(),
            solver="greedy",
        )
        if plan.unplaced:
            reasons = plan.unplaced[0].sentence
        for placement in plan.placements:
            chosen = [(placement.pool, f"best under the {policy} policy")]
            if placement.runner_up:
                chosen.append((placement.runner_up, f"runner-up under the {policy} policy"))
            for pool_id, why in chosen:
                options.append(
                    _option(
                        pool_rows[pool_id], site_rows, sites, spec, held, why, moment, probe, rules
                    )
                )
    else:
        reasons = "no pool is registered yet"
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


def _option(
    pool: PoolRow,
    site_rows: dict[str, SiteRow],
    sites: dict[str, Any],
    spec: dict[str, Any],
    held: dict[str, int],
    why: str,
    moment: datetime,
    probe: TaskRow,
    rules: market.PricingRules,
) -> dict[str, Any]:
    one = (
        Pool(
            pool.id,
            pool.site_id,
            find_device(pool.device),
            pool.count,
            pool.count,
            pool.price_fen_per_device_hour,
        ),
    )
    single = place(
        [platform._task(probe, moment)],
        Snapshot(one, sites),
        policy_named("cost"),
        moment.timestamp(),
        solver="greedy",
    )
    duration_s = single.placements[0].breakdown.duration_s if single.placements else 0.0
    carbon = single.placements[0].breakdown.carbon_kg if single.placements else 0.0
    site = site_rows[pool.site_id]
    local = moment + timedelta(hours=8)  # China Standard Time
    tou, tou_note = market.tou_multiplier(
        site.province, local.month, local.hour + local.minute / 60
    )
    breakdown = market.price(
        pool.price_fen_per_device_hour,
        probe.devices,
        duration_s,
        tou=tou,
        utilisation=_utilisation(pool, held),
        preemptible=bool(spec.get("preemptible")),
        data_gb=spec.get("data_gb") or 0.0,
        rules=rules,
    )
    return {
        "pool": pool.id,
        "site": pool.site_id,
        "province": site.province,
        "start_s": 0,
        "duration_s": duration_s,
        "carbon_kg": carbon,
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
    session: Session, who: Principal, quote_id: str, option: int, default_policy: str
) -> OrderRow:
    """Turn a quote's option into an order: escrow held, task created on the quoted pool."""
    row = session.get(QuoteRow, quote_id, with_for_update=True)
    if row is None or row.owner_id != who.id:
        raise NotFound("quote", quote_id)
    if row.order_id is not None:
        raise Conflict(
            f"quote {quote_id} was already accepted (order {row.order_id})",
            f"报价 {quote_id} 已被接受（订单 {row.order_id}）",
        )
    if aware(row.expires_at) < now():
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
    available = balance(session, ledger.wallet(who.id))
    if maximum > available:
        raise InsufficientFunds(maximum, available)
    pool = session.get(PoolRow, offer["pool"])
    site = session.get(SiteRow, offer["site"])
    if pool is None or site is None:
        raise Conflict("the quoted pool is gone; ask for a new quote", "报价的资源池已不存在")
    task, _ = platform.submit(session, who, row.spec, None)
    task.pool_id, task.site_id = pool.id, site.id
    task.unplaced_reason = None
    task.placement = {
        "pool": pool.id,
        "site": site.id,
        "cost_fen": maximum,
        "carbon_kg": offer["carbon_kg"],
        "policy": "quote",
        "duration_s": offer["duration_s"],
        "energy_kwh": 0.0,
        "latency_ms": 0.0,
        "runner_up": None,
    }
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
        created_at=now(),
        settled_at=None,
    )
    session.add(order)
    session.flush()
    row.order_id = order.id
    if maximum > 0:  # a free offer holds nothing
        record(session, ledger.hold(new_id("tx"), who.id, maximum), who.id, order.id)
    append_event(
        session,
        "order.created",
        order.id,
        who.id,
        {"task": task.id, "escrow_fen": maximum, "pool": pool.id},
    )
    return order


OUTCOMES = {
    State.COMPLETE.value: market.Outcome.COMPLETE,
    State.EXECUTOR_ERROR.value: market.Outcome.EXECUTOR_ERROR,
    State.SYSTEM_ERROR.value: market.Outcome.SYSTEM_ERROR,
    State.CANCELED.value: market.Outcome.CANCELED,
}


def settle_task(session: Session, task: TaskRow) -> OrderRow | None:
    """Settle the order of a task that ended (once: a settled order is left alone)."""
    order = session.scalars(
        select(OrderRow).where(OrderRow.task_id == task.id).with_for_update()
    ).first()
    if order is None or order.state != "OPEN" or task.state not in OUTCOMES:
        return order
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
    if order.escrow_fen > 0:
        record(
            session,
            ledger.settle(new_id("tx"), order.owner_id, order.provider_id, settlement),
            "settlement",
            order.id,
        )
    order.state = "SETTLED"
    order.settled_at = now()
    order.settlement = {
        "charge": money(settlement.charge_fen),
        "provider": money(settlement.provider_fen),
        "platform": money(settlement.platform_fen),
        "network": money(settlement.network_fen),
        "sla_credit": money(settlement.sla_credit_fen),
        "refund": money(settlement.refund_fen),
        "outcome": task.state,
        "deadline_missed": missed,
    }
    append_event(session, "order.settled", order.id, "settlement", order.settlement)
    return order


def get_order(session: Session, who: Principal, order_id: str) -> OrderRow:
    order = session.get(OrderRow, order_id)
    if order is None or (
        who.role != Role.OPERATOR.value and who.id not in (order.owner_id, order.provider_id)
    ):
        raise NotFound("order", order_id)
    return order


def rate(session: Session, who: Principal, order_id: str, stars: int, comment: str) -> RatingRow:
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
        at=now(),
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


def verify(session: Session) -> str | None:
    """None when the event chain verifies and every posting matches its `money.posted` event and
    balances; else a one-line description of the first broken record."""
    broken = verify_chain(session)
    if broken is not None:
        return f"event #{broken} does not match the hash chain (edited or removed)"
    recorded: dict[str, list[list[Any]]] = {}
    for event in session.scalars(select(EventRow).where(EventRow.kind == "money.posted")):
        recorded[event.subject] = event.data["postings"]
    total = 0
    for tx in session.scalars(select(LedgerTransaction).order_by(LedgerTransaction.at)):
        postings = session.scalars(
            select(LedgerPosting)
            .where(LedgerPosting.transaction_id == tx.id)
            .order_by(LedgerPosting.id)
        ).all()
        stored = [[p.account, p.amount_fen, p.currency] for p in postings]
        if tx.id not in recorded:
            return f"transaction {tx.id} has no money.posted event in the chain"
        if stored != recorded[tx.id]:
            return f"transaction {tx.id}: its postings differ from the chain's record"
        amount = sum(p.amount_fen for p in postings)
        if amount != 0:
            return f"transaction {tx.id} does not balance (sum {amount} fen)"
        total += amount
    if len(recorded) != session.scalar(select(func.count()).select_from(LedgerTransaction)):
        return "a money.posted event has no transaction in the ledger (a transaction was removed)"
    return None
