"""Payout runs and provider statements (issue 15, item 6).

`run(session, who, period)` pays every provider what it earned up to the end of a month
(`YYYY-MM`, a calendar month in China Standard Time, UTC+8) and was not paid yet, in ONE unit of
work, and writes a statement per provider and one `PayoutRunRow`:

* earned: a provider's share of each order settled (`orders.settled_at`) before the period's end,
  net of the SLA credit it paid back (`provider - sla_credit`: exactly what the settlement posted
  to its receivable);
* paid before: every payout posted to its receivable before this run (earlier runs and any
  manual `suanli admin payout`);
* the run pays `min(receivable balance, earned up to the period's end - paid before)` when that
  is positive, through `services.market.payout` (a balanced ledger transaction, a `money.posted`
  event): so no fen is paid twice and earnings after the period's end wait for the next run;
* the statement: `opening` (earned before the period, not paid before this run; negative when
  a manual payout paid part of this period in advance), `earned` (in the period), `paid` (by
  this run), `closing = opening + earned - paid` (0 unless the receivable was short), and a line
  per order settled in the period (order, task, settled_at, charge, provider share, platform
  fee, network fee, SLA credit, net). A provider gets a statement when the run pays it or it
  has orders in the period.

Idempotent: a period is run once (`payout_runs.period` is unique). The run's row is inserted
first, in a savepoint, so a concurrent run of the same period waits on the unique key and then
reports the run that won; running a period again returns the existing run and changes nothing.
A period runs only after it has ended and never before the latest period already run. The
receivables are locked (`market.lock_balances`: the money stream's head first) before the paid
amounts are read, so concurrent runs of different periods serialise.

Statements render as CSV (`statement_csv`) here; the HTML document is the console's template.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, case, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from suanli import ledger
from suanli.errors import InvalidValue
from suanli.services import market
from suanli.services.budgets import CST, fen_at
from suanli.services.core import (
    Actor,
    Conflict,
    NotFound,
    Role,
    append_event,
    aware,
    new_id,
    now,
    require,
)
from suanli.store.models import (
    LedgerPosting,
    LedgerTransaction,
    OrderRow,
    PayoutRunRow,
    PayoutStatementRow,
    Principal,
)

PERIOD = re.compile(r"(\d{4})-(0[1-9]|1[0-2])", re.ASCII)
LINE_FIELDS = (
    "order",
    "task",
    "settled_at",
    "charge_fen",
    "provider_fen",
    "platform_fen",
    "network_fen",
    "sla_credit_fen",
    "net_fen",
)
CSV_COLUMNS = (*LINE_FIELDS, "net_yuan")


def period_bounds(period: str) -> tuple[datetime, datetime]:
    """[start, end) of the month `YYYY-MM` in China Standard Time, as UTC (422 otherwise)."""
    found = PERIOD.fullmatch(period) if isinstance(period, str) else None
    if found is None or not 2000 <= int(found.group(1)) <= 9998:
        raise InvalidValue(
            "period",
            period,
            "a month as YYYY-MM from 2000-01, e.g. 2026-11",
            "YYYY-MM 格式的月份（2000-01 起），如 2026-11",
        )
    year, month = int(found.group(1)), int(found.group(2))
    start = datetime(year, month, 1, tzinfo=CST)
    end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=CST)
    return start.astimezone(UTC), end.astimezone(UTC)


@dataclass(frozen=True)
class RunResult:
    """A payout run with its statements; `created` is False when the period had run already."""

    run: PayoutRunRow
    statements: Sequence[PayoutStatementRow]
    created: bool


def _existing(session: Session, period: str) -> RunResult | None:
    row = session.scalars(select(PayoutRunRow).where(PayoutRunRow.period == period)).first()
    if row is None:
        return None
    return RunResult(row, _statements_of(session, row.id), created=False)


def _statements_of(session: Session, run_id: str) -> list[PayoutStatementRow]:
    return list(
        session.scalars(
            select(PayoutStatementRow)
            .where(PayoutStatementRow.run_id == run_id)
            .order_by(PayoutStatementRow.provider_id)
        ).all()
    )


def _net() -> Any:
    """An order's net earning for its provider, in SQL: provider share minus SLA credit."""
    return fen_at(OrderRow.settlement, "provider") - fen_at(OrderRow.settlement, "sla_credit")


def _earned(session: Session, start: datetime, end: datetime) -> dict[str, tuple[int, int]]:
    """provider -> (earned before `start`, earned in [start, end)), from the settled orders."""
    net = _net()
    rows = session.execute(
        select(
            OrderRow.provider_id,
            func.sum(case((OrderRow.settled_at < start, net), else_=0)),
            func.sum(case((OrderRow.settled_at >= start, net), else_=0)),
        )
        .where(OrderRow.state == "SETTLED", OrderRow.settled_at < end)
        .group_by(OrderRow.provider_id)
        .order_by(OrderRow.provider_id)
    ).all()
    return {provider: (int(before or 0), int(within or 0)) for provider, before, within in rows}


def _paid(session: Session, accounts: list[str]) -> dict[str, int]:
    """account -> every payout posted to it so far (positive fen)."""
    rows = session.execute(
        select(LedgerPosting.account, func.sum(LedgerPosting.amount_fen))
        .join(LedgerTransaction, LedgerTransaction.id == LedgerPosting.transaction_id)
        .where(LedgerTransaction.kind == "payout", LedgerPosting.account.in_(accounts))
        .group_by(LedgerPosting.account)
    ).all()
    return {account: -int(total or 0) for account, total in rows}


def _lines(session: Session, start: datetime, end: datetime) -> dict[str, list[dict[str, Any]]]:
    """provider -> a line per order it settled in [start, end), oldest first."""
    orders = session.scalars(
        select(OrderRow)
        .where(
            and_(
                OrderRow.state == "SETTLED",
                OrderRow.settled_at >= start,
                OrderRow.settled_at < end,
            )
        )
        .order_by(OrderRow.provider_id, OrderRow.settled_at, OrderRow.id)
    ).all()
    lines: dict[str, list[dict[str, Any]]] = {}
    for order in orders:
        settled = order.settlement or {}

        def fen(key: str, settled: dict[str, Any] = settled) -> int:
            return int((settled.get(key) or {}).get("fen") or 0)

        lines.setdefault(order.provider_id, []).append(
            {
                "order": order.id,
                "task": order.task_id,
                "settled_at": aware(order.settled_at or order.created_at).isoformat(),
                "charge_fen": fen("charge"),
                "provider_fen": fen("provider"),
                "platform_fen": fen("platform"),
                "network_fen": fen("network"),
                "sla_credit_fen": fen("sla_credit"),
                "net_fen": fen("provider") - fen("sla_credit"),
            }
        )
    return lines


def run(session: Session, who: Actor, period: str) -> RunResult:
    """Pay out `period` (see the module docstring): the run and its statements."""
    require(who, Role.OPERATOR)
    start, end = period_bounds(period)
    at = now(session)
    if end > at:
        raise Conflict(
            f"period {period} has not ended: it ends at {end.astimezone(CST).isoformat()} "
            "(China Standard Time); run it after that",
            f"{period} 尚未结束（北京时间 {end.astimezone(CST).isoformat()} 结束）；请在其后运行",
        )
    existing = _existing(session, period)
    if existing is not None:
        return existing
    later = session.scalars(
        select(PayoutRunRow.period).where(PayoutRunRow.period_end > end).limit(1)
    ).first()
    if later is not None:
        raise Conflict(
            f"period {period} comes before {later}, which has run already: periods run in "
            f"order; {later}'s run paid everything earned up to its end",
            f"{period} 早于已运行的 {later}：付款按期依次运行，{later} 已付清其期末前的全部收入",
        )
    row = PayoutRunRow(
        id=new_id("payrun"),
        period=period,
        period_start=start,
        period_end=end,
        created_by=who.id,
        created_at=at,
        total_fen=0,
        providers=0,
    )
    try:
        with session.begin_nested():  # a concurrent run of the period waits here, then loses
            session.add(row)
            session.flush()
    except IntegrityError:
        won = _existing(session, period)
        if won is None:
            raise
        return won
    earned = _earned(session, start, end)
    providers = sorted(
        ident
        for ident, role in session.execute(
            select(Principal.id, Principal.role).where(Principal.id.in_(list(earned)))
        ).all()
        if role == Role.PROVIDER.value
    )
    accounts = {provider: ledger.receivable(provider) for provider in providers}
    held = market.lock_balances(session, accounts.values()) if accounts else {}
    paid_before = _paid(session, list(accounts.values()))
    lines = _lines(session, start, end)
    statements: list[PayoutStatementRow] = []
    for provider in providers:
        before, within = earned[provider]
        account = accounts[provider]
        opening = before - paid_before.get(account, 0)
        pay = max(0, min(held[account], opening + within))
        if pay == 0 and not lines.get(provider):
            continue
        if pay > 0:
            market.payout(session, who, provider, pay)
        statement = PayoutStatementRow(
            id=new_id("stmt"),
            run_id=row.id,
            provider_id=provider,
            period=period,
            opening_fen=opening,
            earned_fen=within,
            paid_fen=pay,
            closing_fen=opening + within - pay,
            lines=lines.get(provider, []),
            created_at=at,
        )
        session.add(statement)
        statements.append(statement)
    row.total_fen = sum(s.paid_fen for s in statements)
    row.providers = len(statements)
    session.flush()
    append_event(
        session,
        "payout.run",
        row.id,
        who.id,
        {
            "period": period,
            "total_fen": row.total_fen,
            "statements": [[s.id, s.provider_id, s.paid_fen] for s in statements],
        },
    )
    return RunResult(row, statements, created=True)


def runs(session: Session, who: Actor) -> list[PayoutRunRow]:
    """Every payout run, newest period first (operator)."""
    require(who, Role.OPERATOR)
    return list(session.scalars(select(PayoutRunRow).order_by(PayoutRunRow.period.desc())).all())


def get_run(session: Session, who: Actor, period: str) -> RunResult:
    require(who, Role.OPERATOR)
    found = _existing(session, period)
    if found is None:
        raise NotFound("payout run", period)
    return found


def statements(
    session: Session, who: Actor, provider_id: str | None = None, period: str | None = None
) -> list[PayoutStatementRow]:
    """Statements, newest period first: a provider's own; the operator's all (or one
    provider's, one period's)."""
    require(who, Role.PROVIDER, Role.OPERATOR)
    query = select(PayoutStatementRow)
    if who.role == Role.PROVIDER.value:
        query = query.where(PayoutStatementRow.provider_id == who.id)
    elif provider_id:
        query = query.where(PayoutStatementRow.provider_id == provider_id)
    if period:
        query = query.where(PayoutStatementRow.period == period)
    query = query.order_by(PayoutStatementRow.period.desc(), PayoutStatementRow.provider_id)
    return list(session.scalars(query).all())


def get_statement(session: Session, who: Actor, statement_id: str) -> PayoutStatementRow:
    """One statement: the provider's own, or any for the operator (404 otherwise)."""
    require(who, Role.PROVIDER, Role.OPERATOR)
    row = session.get(PayoutStatementRow, statement_id)
    if row is None or (who.role == Role.PROVIDER.value and row.provider_id != who.id):
        raise NotFound("statement", statement_id)
    return row


def _yuan(fen: int) -> str:
    return f"{(Decimal(fen) / 100).quantize(Decimal('0.01'))}"


def statement_csv(statement: dict[str, Any]) -> str:
    """A statement (`statement_read`) as CSV, UTF-8 with a BOM (spreadsheets then read it as
    UTF-8): a header block (statement, provider, period, opening, earned, paid, closing), a
    blank row, then a line per order."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    for name in ("id", "provider", "period", "opening_fen", "earned_fen", "paid_fen"):
        writer.writerow(["statement" if name == "id" else name, statement[name]])
    writer.writerow(["closing_fen", statement["closing_fen"]])
    writer.writerow([])
    writer.writerow(CSV_COLUMNS)
    for line in statement["lines"]:
        writer.writerow([*(line[name] for name in LINE_FIELDS), _yuan(int(line["net_fen"]))])
    return "\ufeff" + out.getvalue()


def statement_read(row: PayoutStatementRow) -> dict[str, Any]:
    """A statement as the API answers it (integer fen)."""
    return {
        "id": row.id,
        "run": row.run_id,
        "provider": row.provider_id,
        "period": row.period,
        "opening_fen": row.opening_fen,
        "earned_fen": row.earned_fen,
        "paid_fen": row.paid_fen,
        "closing_fen": row.closing_fen,
        "lines": list(row.lines),
        "created_at": aware(row.created_at).isoformat(),
    }


def run_read(result: RunResult) -> dict[str, Any]:
    row = result.run
    return {
        "id": row.id,
        "period": row.period,
        "period_start": aware(row.period_start).isoformat(),
        "period_end": aware(row.period_end).isoformat(),
        "created_by": row.created_by,
        "created_at": aware(row.created_at).isoformat(),
        "total_fen": row.total_fen,
        "providers": row.providers,
        "created": result.created,
        "statements": [
            {"id": s.id, "provider": s.provider_id, "paid_fen": s.paid_fen}
            for s in result.statements
        ],
    }
