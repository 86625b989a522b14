"""Budgets: a consumer's spending limits per period, with alerts (issue 15, item 2).

A consumer sets its own budgets (the operator may set them for any consumer): one per period,
`day`, `week` or `month`, each a limit in fen and alert thresholds in basis points of the limit
(default `settings.budget_alert_bp`). Periods are calendar periods in China Standard Time
(UTC+8): a day starts at 00:00 CST, a week on Monday 00:00 CST, a month on its first day at
00:00 CST.

What counts as spend (one rule, everywhere): an order counts in the period in which it was
OPENED (`orders.created_at`), with its escrow (the maximum) while it is OPEN and with its charge
once it is SETTLED (what it really cost; the rest was released). Vouchers are spend too: the
order's escrow and charge include what vouchers paid.

* `check` (the admission screen calls it before it holds a task's maximum): None when the
  consumer's spend in every budget's current period plus the task's maximum stays within the
  limit, else the bilingual reason the task waits;
* `note_spend` (after an order opens): for every budget, every threshold crossed in the current
  period is written once, as a `BudgetAlertRow` and a `budget.alert` event (the unique
  constraint keeps concurrent passes from writing it twice: each insert runs in a savepoint);
* `put`, `remove`, `listing`: the API's use cases.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from sqlalchemy import BigInteger, case, cast, delete, func, select, true
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from suanli.errors import InvalidValue, SuanliError
from suanli.services.core import (
    Actor,
    NotFound,
    Role,
    append_event,
    aware,
    new_id,
    now,
    require,
)
from suanli.store.models import BudgetAlertRow, BudgetRow, OrderRow, Principal

CST = timezone(timedelta(hours=8), "CST")
PERIODS = ("day", "week", "month")
PERIOD_ZH = {"day": "日", "week": "周", "month": "月"}
MAX_LIMIT_FEN = 10**13


def period_bounds(period: str, moment: datetime) -> tuple[datetime, datetime]:
    """[start, end) of the calendar `period` (China Standard Time) holding `moment`, in UTC."""
    local = aware(moment).astimezone(CST)
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        start, end = midnight, midnight + timedelta(days=1)
    elif period == "week":
        start = midnight - timedelta(days=local.weekday())
        end = start + timedelta(days=7)
    elif period == "month":
        start = midnight.replace(day=1)
        end = (start + timedelta(days=32)).replace(day=1)
    else:
        raise InvalidValue("period", period, "one of day, week, month", "day、week 或 month 之一")
    return start.astimezone(UTC), end.astimezone(UTC)


def fen_at(column: Any, key: str) -> Any:
    """The integer fen of a money field (`{"fen": ...}`) of a JSON column, in SQL (SQLite and
    PostgreSQL; BIGINT, since amounts pass 2^31)."""
    return func.coalesce(cast(column[key]["fen"].as_string(), BigInteger), 0)


def order_spend() -> Any:
    """An order's spend, in SQL: its escrow while OPEN, its charge once SETTLED."""
    return case(
        (OrderRow.state == "SETTLED", fen_at(OrderRow.settlement, "charge")),
        else_=OrderRow.escrow_fen,
    )


def _with_spend(
    session: Session, consumer_id: str, moment: datetime
) -> list[tuple[BudgetRow, datetime, int]]:
    """The consumer's budgets (day, week, month), each with the start of its current period
    and the spend since then: ONE query (the budgets joined to one aggregate of the orders
    opened since the earliest of the three starts)."""
    starts = {period: period_bounds(period, moment)[0] for period in PERIODS}
    amount = order_spend()
    spend = (
        select(
            *(
                func.coalesce(
                    func.sum(case((OrderRow.created_at >= start, amount), else_=0)), 0
                ).label(period)
                for period, start in starts.items()
            )
        )
        .where(OrderRow.owner_id == consumer_id, OrderRow.created_at >= min(starts.values()))
        .subquery()
    )
    rows = session.execute(
        select(BudgetRow, *(spend.c[period] for period in PERIODS))
        .join(spend, true())  # one row of sums for each budget
        .where(BudgetRow.principal_id == consumer_id)
    ).all()
    found = []
    for row in rows:
        budget = row[0]
        spent = dict(zip(PERIODS, row[1:], strict=True))
        found.append((budget, starts[budget.period], int(spent[budget.period] or 0)))
    return sorted(found, key=lambda item: PERIODS.index(item[0].period))


def reasons(budget: BudgetRow, spent: int, extra_fen: int) -> tuple[str, str]:
    """Why a task waits on this budget, in English and in Chinese."""
    return (
        f"budget: {budget.period} budget {budget.limit_fen} fen, spent {spent}, this task needs "
        f"up to {extra_fen} — waits until the period ends or the budget is raised",
        f"预算：{PERIOD_ZH[budget.period]}预算 {budget.limit_fen} 分，已用 {spent} 分，"
        f"本任务最多需 {extra_fen} 分——等到本期结束或预算提高后再运行",
    )


def reason(budget: BudgetRow, spent: int, extra_fen: int) -> str:
    """Why a task waits on this budget (English / 中文)."""
    return " / ".join(reasons(budget, spent, extra_fen))


class BudgetExceeded(SuanliError):
    """402: accepting a quote would pass one of the consumer's budgets (nothing is created)."""

    def __init__(self, budget: BudgetRow, spent: int, extra_fen: int) -> None:
        self.budget_id, self.spent_fen, self.needed_fen = budget.id, spent, extra_fen
        english, chinese = reasons(budget, spent, extra_fen)
        super().__init__(
            english.replace("this task needs", "this order needs").replace(
                "waits until the period ends", "wait until the period ends"
            ),
            chinese,
        )


def refuse_over_budget(
    session: Session, consumer_id: str, extra_fen: int, moment: datetime
) -> None:
    """`BudgetExceeded` when `extra_fen` more would pass a budget (an accepted quote)."""
    for budget, _, spent in _with_spend(session, consumer_id, moment):
        if spent + extra_fen > budget.limit_fen:
            raise BudgetExceeded(budget, spent, extra_fen)


def check(session: Session, consumer_id: str, extra_fen: int, moment: datetime) -> str | None:
    """None when `extra_fen` more spend keeps the consumer within every budget's current
    period; else the bilingual reason (the first budget, day before week before month, that it
    would exceed). One query."""
    for budget, _, spent in _with_spend(session, consumer_id, moment):
        if spent + extra_fen > budget.limit_fen:
            return reason(budget, spent, extra_fen)
    return None


def crossed(budget: BudgetRow, spent_fen: int) -> list[int]:
    """The thresholds (basis points of the limit) that `spent_fen` has reached."""
    return [bp for bp in budget.alert_bp if spent_fen * 10_000 >= bp * budget.limit_fen]


BUDGETED_KEY = "budgets.principals"  # session.info: the consumers with a budget (this unit)


def _budgeted(session: Session) -> set[str]:
    """The consumers that have a budget, read once per unit of work (a pass opens many orders
    in one; `put` and `remove` forget it, so a budget set in the same unit counts at once)."""
    found = session.info.get(BUDGETED_KEY)
    if not isinstance(found, set):
        found = set(session.scalars(select(BudgetRow.principal_id).distinct()))
        session.info[BUDGETED_KEY] = found
    return found


def note_spend(session: Session, consumer_id: str, moment: datetime) -> None:
    """Write each threshold the consumer's spend has crossed in each budget's current period,
    once (a `BudgetAlertRow` and a `budget.alert` event). The thresholds already written are
    read first (one query, only when some threshold is reached); a concurrent pass that writes
    the same one first wins by the unique constraint (each insert runs in a savepoint)."""
    if consumer_id not in _budgeted(session):
        return  # most consumers set no budget: no aggregate over their orders
    reached = [
        (budget, start, spent, bp)
        for budget, start, spent in _with_spend(session, consumer_id, moment)
        for bp in crossed(budget, spent)
    ]
    if not reached:
        return
    written = session.execute(
        select(
            BudgetAlertRow.budget_id, BudgetAlertRow.period_start, BudgetAlertRow.threshold_bp
        ).where(BudgetAlertRow.budget_id.in_({budget.id for budget, *_ in reached}))
    ).all()
    known = {(ident, aware(start), bp) for ident, start, bp in written}
    for budget, start, spent, bp in reached:
        if (budget.id, start, bp) not in known:
            _alert(session, budget, consumer_id, start, bp, spent)


def _alert(
    session: Session, budget: BudgetRow, consumer_id: str, start: datetime, bp: int, used: int
) -> None:
    """One alert row and its event; nothing when a concurrent pass wrote it first."""
    try:
        with session.begin_nested():
            session.add(
                BudgetAlertRow(
                    id=new_id("alert"),
                    budget_id=budget.id,
                    period_start=start,
                    threshold_bp=bp,
                    spent_fen=used,
                    at=now(session),
                )
            )
            session.flush()
    except IntegrityError:
        return
    append_event(
        session,
        "budget.alert",
        budget.id,
        "budgets",
        {
            "consumer": consumer_id,
            "period": budget.period,
            "period_start": start.isoformat(),
            "threshold_bp": bp,
            "limit_fen": budget.limit_fen,
            "spent_fen": used,
        },
    )


# --- the API's use cases ------------------------------------------------------------------


@dataclass(frozen=True)
class BudgetView:
    budget: BudgetRow
    period_start: datetime
    period_end: datetime
    spent_fen: int
    alerts: Sequence[BudgetAlertRow]


def _consumer(session: Session, who: Actor, consumer_id: str | None) -> str:
    """Whose budgets: a consumer's own; the operator names the consumer."""
    require(who, Role.CONSUMER, Role.OPERATOR)
    if who.role == Role.CONSUMER.value:
        if consumer_id not in (None, who.id):
            raise NotFound("consumer", str(consumer_id))
        return who.id
    if not consumer_id:
        raise InvalidValue(
            "consumer_id",
            consumer_id,
            "the id of the consumer whose budget the operator sets",
            "运营方须指明消费者 id",
        )
    found = session.get(Principal, consumer_id)
    if found is None or found.role != Role.CONSUMER.value:
        raise NotFound("consumer", consumer_id)
    return consumer_id


def validate(period: str, limit_fen: object, alert_bp: object) -> tuple[str, int, list[int]]:
    if period not in PERIODS:
        raise InvalidValue("period", period, "one of day, week, month", "day、week 或 month 之一")
    if (
        isinstance(limit_fen, bool)
        or not isinstance(limit_fen, int)
        or not 0 <= limit_fen <= MAX_LIMIT_FEN
    ):
        raise InvalidValue(
            "limit_fen",
            limit_fen,
            f"a whole number of fen in [0, {MAX_LIMIT_FEN}]",
            f"[0, {MAX_LIMIT_FEN}] 内的整数分",
        )
    if not isinstance(alert_bp, list) or not all(
        isinstance(bp, int) and not isinstance(bp, bool) and 1 <= bp <= 10_000 for bp in alert_bp
    ):
        raise InvalidValue(
            "alert_bp",
            alert_bp,
            "a list of thresholds in basis points of the limit, each in [1, 10000] "
            "(e.g. [5000, 8000, 10000])",
            "阈值列表，单位为限额的万分之一，每个在 [1, 10000] 内（如 [5000, 8000, 10000]）",
        )
    return period, limit_fen, sorted(set(alert_bp))


def put(
    session: Session,
    who: Actor,
    period: str,
    limit_fen: object,
    alert_bp: object,
    consumer_id: str | None = None,
) -> BudgetRow:
    """Create or replace the consumer's budget for `period`."""
    consumer = _consumer(session, who, consumer_id)
    session.info.pop(BUDGETED_KEY, None)
    period, limit, thresholds = validate(period, limit_fen, alert_bp)
    at = now(session)
    row = session.scalars(
        select(BudgetRow)
        .where(BudgetRow.principal_id == consumer, BudgetRow.period == period)
        .with_for_update()
    ).first()
    if row is None:
        row = BudgetRow(
            id=new_id("budget"),
            principal_id=consumer,
            period=period,
            limit_fen=limit,
            alert_bp=thresholds,
            created_by=who.id,
            created_at=at,
            updated_at=at,
        )
        session.add(row)
    else:
        row.limit_fen, row.alert_bp, row.updated_at = limit, thresholds, at
    session.flush()
    append_event(
        session,
        "budget.set",
        row.id,
        who.id,
        {"consumer": consumer, "period": period, "limit_fen": limit, "alert_bp": thresholds},
    )
    return row


def remove(session: Session, who: Actor, period: str, consumer_id: str | None = None) -> BudgetRow:
    consumer = _consumer(session, who, consumer_id)
    session.info.pop(BUDGETED_KEY, None)
    if period not in PERIODS:
        raise InvalidValue("period", period, "one of day, week, month", "day、week 或 month 之一")
    # locked first: a pass that writes an alert for it now waits, then finds it gone
    row = session.scalars(
        select(BudgetRow)
        .where(BudgetRow.principal_id == consumer, BudgetRow.period == period)
        .with_for_update()
    ).first()
    if row is None:
        raise NotFound("budget", f"{consumer}/{period}")
    session.execute(delete(BudgetAlertRow).where(BudgetAlertRow.budget_id == row.id))
    session.delete(row)
    session.flush()
    append_event(
        session, "budget.deleted", row.id, who.id, {"consumer": consumer, "period": period}
    )
    return row


def listing(
    session: Session, who: Actor, consumer_id: str | None = None, moment: datetime | None = None
) -> list[BudgetView]:
    """The consumer's budgets with this period's spend and alerts. The operator without a
    consumer id sees every consumer's budgets."""
    require(who, Role.CONSUMER, Role.OPERATOR)
    at = moment or now(session)
    if who.role == Role.OPERATOR.value and not consumer_id:
        owners = sorted(set(session.scalars(select(BudgetRow.principal_id)).all()))
    else:
        owners = [_consumer(session, who, consumer_id)]
    views: list[BudgetView] = []
    for owner in owners:
        for budget, start, spent in _with_spend(session, owner, at):
            alerts = session.scalars(
                select(BudgetAlertRow)
                .where(BudgetAlertRow.budget_id == budget.id, BudgetAlertRow.period_start == start)
                .order_by(BudgetAlertRow.threshold_bp)
            ).all()
            end = period_bounds(budget.period, at)[1]
            views.append(BudgetView(budget, start, end, spent, alerts))
    return views


def view_read(view: BudgetView) -> dict[str, Any]:
    """A budget as the API and the console show it (plain values, integer fen)."""
    row = view.budget
    return {
        "id": row.id,
        "consumer": row.principal_id,
        "period": row.period,
        "limit_fen": row.limit_fen,
        "alert_bp": list(row.alert_bp),
        "period_start": view.period_start.isoformat(),
        "period_end": view.period_end.isoformat(),
        "spent_fen": view.spent_fen,
        "left_fen": max(0, row.limit_fen - view.spent_fen),
        "alerts": [
            {
                "threshold_bp": a.threshold_bp,
                "spent_fen": a.spent_fen,
                "at": aware(a.at).isoformat(),
            }
            for a in view.alerts
        ],
        "created_by": row.created_by,
        "updated_at": aware(row.updated_at).isoformat(),
    }
