"""Admission: every task the pass places is an order (issue 15, item 1).

The pass calls `screen` on the decision step's PLACE decisions (read side, no rows change) and
`open_order` for each placement it writes (write side, under the pass's fence):

* `screen` prices each placement by the market's rules, exactly as a quote's option is priced
  (`market.price_offer`: time of use at its start hour, the pool's utilisation when the pass
  read it, the preemptible discount, the platform fee, the network price), and refuses, in
  this order, when the quoted total exceeds the task's `max_price_fen` ("max_price_fen: ..."),
  when a budget of the consumer would be passed (`budgets.check`: its reason), or when the
  consumer's vouchers and wallet cannot cover the maximum, counting what earlier tasks of the
  same pass took ("insufficient balance: ..." / "余额不足"). A refused task stays queued with the
  reason and is screened again at the next pass (after a top-up, it runs).
* `open_order` locks the balances (the one lock order, `market.lock_balances`), holds the
  maximum in escrow funded by eligible vouchers first and the wallet for the rest, creates the
  order (`source="admission"`, no quote), appends `order.created` and notes the spend against
  the consumer's budgets (`budgets.note_spend`); it raises `InsufficientBalance` (402) when
  the money went since the screen (the pass keeps the task queued with the reason).

A task that already has an OPEN order (an accepted quote, or a task re-queued after its lease
expired) is admitted as it is: no second order. A task owned by the operator (who has no
wallet) is admitted without an order: orders are the consumers' money.

Cost: one `screen` reads the placed tasks' specs and owners, their OPEN orders, the pools and
sites, the owners' principals, vouchers and balances in a handful of queries, whatever the
number of placements (plus `budgets.check`, one query, per placement of a consumer that has a
budget; after a refusal, larger amounts of that consumer are refused without asking again). What
earlier rounds of the same pass took is remembered on the session (`session.info`), keyed by
the pass's moment.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from suanli.errors import SuanliError
from suanli.scheduler import Action, Decision
from suanli.services import budgets, market, vouchers
from suanli.services.capacity import StepInputs
from suanli.services.core import Conflict, Role, append_event, new_id, now
from suanli.store.models import BudgetRow, OrderRow, PoolRow, Principal, SiteRow, TaskRow

TAKEN_KEY = "admission.taken"  # session.info: (pass moment, consumer -> fen taken so far)


@dataclass(frozen=True)
class Screened:
    """What `screen` found: the priced offer of each admitted placement (task -> offer, the
    shape of a quote's option) and why each refused one stays queued (task -> reason)."""

    offers: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    refused: Mapping[str, str] = field(default_factory=dict)


def _chunks(ids: list[str]) -> list[list[str]]:
    return [ids[i : i + market.CHUNK] for i in range(0, len(ids), market.CHUNK)]


def _taken(session: Session, moment: datetime) -> dict[str, int]:
    """Consumer -> fen that earlier screens of this pass admitted (same session, same moment)."""
    found = session.info.get(TAKEN_KEY)
    if not isinstance(found, tuple) or found[0] != moment:
        found = (moment, {})
        session.info[TAKEN_KEY] = found
    taken: dict[str, int] = found[1]
    return taken


def over_ceiling(pool: str, total: int, ceiling: int) -> str:
    return (
        f"max_price_fen: the placement on pool {pool} is quoted {total} fen, above "
        f"max_price_fen {ceiling}; it waits for a cheaper hour or pool, or raise max_price_fen / "
        f"max_price_fen：资源池 {pool} 报价 {total} 分，高于上限 {ceiling} 分；"
        "等待更便宜的时段或资源池，或提高 max_price_fen"
    )


def short_of(needed: int, available: int) -> str:
    return (
        f"insufficient balance: this task needs {needed} fen held in escrow (its maximum "
        f"price) but the consumer's vouchers and wallet have {available} fen available; top up "
        f"the wallet and it runs at the next pass / 余额不足：任务需托管 {needed} 分（最高价），"
        f"算力券与钱包可用 {available} 分；充值后下一轮调度即可运行"
    )


def screen(
    session: Session,
    decisions: Sequence[Decision],
    owners: Mapping[str, str],
    inputs: StepInputs,
    moment: datetime,
) -> Screened:
    """Price and check the PLACE decisions (see the module docstring); `owners`: task -> owner."""
    placed = [d for d in decisions if d.action is Action.PLACE and d.placement is not None]
    if not placed:
        return Screened()
    ids = [d.task for d in placed]
    specs: dict[str, dict[str, Any]] = {}
    opened: set[str] = set()
    for chunk in _chunks(ids):
        specs.update(
            (a, b)
            for a, b in session.execute(
                select(TaskRow.id, TaskRow.spec).where(TaskRow.id.in_(chunk))
            )
        )
        opened.update(
            session.scalars(
                select(OrderRow.task_id).where(
                    OrderRow.task_id.in_(chunk), OrderRow.state == "OPEN"
                )
            )
        )
    owner_ids = sorted({owners[i] for i in ids if i in owners})
    roles: dict[str, str] = {}
    for chunk in _chunks(owner_ids):
        roles.update(
            (a, b)
            for a, b in session.execute(
                select(Principal.id, Principal.role).where(Principal.id.in_(chunk))
            )
        )
    paying = [
        d
        for d in placed
        if d.task not in opened
        and d.task in specs
        and roles.get(owners.get(d.task, "")) == Role.CONSUMER.value
    ]
    if not paying:
        return Screened(offers={d.task: {} for d in placed})
    pool_ids = sorted({d.placement.pool for d in paying if d.placement is not None})
    pools = {
        row.id: row for row in session.scalars(select(PoolRow).where(PoolRow.id.in_(pool_ids)))
    }
    sites = {
        row.id: row
        for row in session.scalars(
            select(SiteRow).where(SiteRow.id.in_(sorted({p.site_id for p in pools.values()})))
        )
    }
    consumers = sorted({owners[d.task] for d in paying})
    budgeted: set[str] = set()
    for chunk in _chunks(consumers):
        budgeted.update(
            session.scalars(select(BudgetRow.principal_id).where(BudgetRow.principal_id.in_(chunk)))
        )
    money = vouchers.spendable(session, consumers, moment)
    taken = _taken(session, moment)
    budget_refused: dict[str, tuple[int, str]] = {}  # consumer -> (smallest refused, reason)
    rules = market.pricing_rules(session)
    paid = {d.task for d in paying}
    offers: dict[str, dict[str, Any]] = {d.task: {} for d in placed if d.task not in paid}
    refused: dict[str, str] = {}
    for decision in paying:
        placement = decision.placement
        assert placement is not None  # filtered above
        task, consumer = decision.task, owners[decision.task]
        pool = pools.get(placement.pool)
        if pool is None or pool.site_id not in sites:
            refused[task] = f"pool {placement.pool} is gone / 资源池 {placement.pool} 已不存在"
            continue
        spec = specs[task]
        try:
            offer = market.price_offer(
                pool,
                sites[pool.site_id],
                spec,
                inputs.capacity.pools[pool.id].held if pool.id in inputs.capacity.pools else 0,
                placement.breakdown.duration_s,
                placement.breakdown.carbon_kg,
                f"placed by the scheduling pass under the {decision.policy} policy",
                moment,
                max(0.0, placement.start_s - inputs.clock_s),
                rules,
            )
        except SuanliError as error:
            refused[task] = error.one_line()
            continue
        total = market.total_fen(offer)
        ceiling = spec.get("max_price_fen")
        if ceiling is not None and total > ceiling:
            refused[task] = over_ceiling(pool.id, total, int(ceiling))
            continue
        extra = taken.get(consumer, 0) + total
        blocked = budget_refused.get(consumer)
        if consumer not in budgeted:
            reason = None
        elif blocked is not None and extra >= blocked[0]:
            reason = blocked[1]
        else:
            reason = budgets.check(session, consumer, extra, moment)
        if reason is not None:
            if blocked is None or extra < blocked[0]:
                budget_refused[consumer] = (extra, reason)
            refused[task] = reason
            continue
        on_vouchers, in_wallet = money[consumer]
        available = on_vouchers + in_wallet - taken.get(consumer, 0)
        if total > available:
            refused[task] = short_of(total, max(0, available))
            continue
        taken[consumer] = extra
        offers[task] = offer
    return Screened(offers=offers, refused=refused)


def open_order(session: Session, task: TaskRow, offer: dict[str, Any]) -> OrderRow | None:
    """Hold the offer's maximum in escrow and create the task's order (see the module
    docstring); None for an empty offer (a task that pays nothing: the operator's); the task's
    OPEN order when it has one already."""
    if not offer:
        return None
    existing = session.scalars(
        select(OrderRow).where(OrderRow.task_id == task.id, OrderRow.state == "OPEN").limit(1)
    ).first()
    if existing is not None:
        return existing
    site = session.get(SiteRow, offer["site"])
    if site is None:
        raise Conflict(
            f"the site {offer['site']} of the placement is gone", f"站点 {offer['site']} 已不存在"
        )
    moment = now(session)
    maximum = market.total_fen(offer)
    drawn = vouchers.draw(session, task.owner_id, maximum, moment)
    order = OrderRow(
        id=new_id("order"),
        owner_id=task.owner_id,
        provider_id=site.owner_id,
        quote_id=None,
        task_id=task.id,
        state="OPEN",
        escrow_fen=maximum,
        offer=offer,
        settlement=None,
        created_at=moment,
        settled_at=None,
        source="admission",
        voucher_fen=sum(fen for _, fen in drawn),
        vouchers=[[ident, fen] for ident, fen in drawn],
    )
    session.add(order)
    session.flush()
    market.hold_escrow(session, order, drawn, "scheduler")
    append_event(
        session,
        "order.created",
        order.id,
        "scheduler",
        {
            "task": task.id,
            "escrow_fen": maximum,
            "pool": offer["pool"],
            "voucher_fen": order.voucher_fen,
            "source": "admission",
        },
    )
    budgets.note_spend(session, task.owner_id, moment)
    return order
