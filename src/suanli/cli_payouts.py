"""Payout runs and statements from the command line.

* `suanli admin payouts run --period 2026-11` (on the database, as `suanli admin`): pay every
  provider's receivable earned up to the month's end in one run (`services.payouts.run`);
  running a period again prints the existing run and changes nothing;
* `suanli admin payouts list`, `suanli admin payouts statements [--period] [--provider]` and
  `suanli admin payouts statement ID [--format table|csv|html|json]` (on the database);
* `suanli statements list` and `suanli statements show ID [--format ...]` (`statements_app`,
  over the API: a provider's own statements, the operator's all).
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from rich.table import Table

from suanli.cli_client import (
    CaOpt,
    Client,
    JsonOpt,
    ServerOpt,
    TokenOpt,
    err,
    handles_errors,
    open_sessions,
    out,
    print_json,
)

app = typer.Typer(help="Payout runs and statements. 付款批次与对账单。")
statements_app = typer.Typer(help="Your payout statements. 结算对账单。")
DbOpt = Annotated[str | None, typer.Option(help="Database URL")]
HomeOpt = Annotated[str | None, typer.Option(help="Data directory")]
FormatOpt = Annotated[str, typer.Option("--format", help="table|csv|html|json / 输出格式")]


def _operator() -> Any:
    from suanli.store.models import Principal

    return Principal(id="admin", name="admin (database)", role="operator")


def _print_run(found: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(found)
        return
    state = "ran now / 本次运行" if found["created"] else "had run already / 已运行过，未改动"
    out.print(
        f"payout run {found['id']} for {found['period']} {state}: "
        f"{found['total_fen']} fen to {found['providers']} provider(s)",
        markup=False,
    )
    for statement in found["statements"]:
        out.print(
            f"  {statement['id']} {statement['provider']}: paid {statement['paid_fen']} fen",
            markup=False,
        )


def _print_statements(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print_json(rows)
        return
    table = Table(title="Payout statements 结算对账单")
    for column in (
        "Statement 对账单",
        "Period 账期",
        "Provider 提供方",
        "Opening 期初",
        "Earned 本期收入",
        "Paid 本次付款",
        "Closing 期末",
        "Orders 订单",
    ):
        table.add_column(column)
    for r in rows:
        table.add_row(
            r["id"],
            r["period"],
            r["provider"],
            str(r["opening_fen"]),
            str(r["earned_fen"]),
            str(r["paid_fen"]),
            str(r["closing_fen"]),
            str(len(r["lines"])),
        )
    out.print(table)


def _print_statement(statement: dict[str, Any], format_: str) -> None:
    from suanli.errors import InvalidValue
    from suanli.services.payouts import statement_csv

    if format_ == "json":
        print_json(statement)
    elif format_ == "csv":
        sys.stdout.write(statement_csv(statement).lstrip("\ufeff"))
    elif format_ == "html":
        from suanli.console.pages_statements import render_statement

        sys.stdout.write(render_statement(statement, "zh"))
    elif format_ == "table":
        _print_statements([statement], False)
        table = Table(title=f"Orders settled in {statement['period']} 本期结算的订单")
        for column in ("Order 订单", "Settled 结算", "Charge 收费", "Share 分成", "Net 净收入"):
            table.add_column(column)
        for line in statement["lines"]:
            table.add_row(
                line["order"],
                line["settled_at"][:19],
                str(line["charge_fen"]),
                str(line["provider_fen"]),
                str(line["net_fen"]),
            )
        out.print(table)
    else:
        raise InvalidValue(
            "format", format_, "table, csv, html or json", "table、csv、html 或 json"
        )


@app.command("run")
@handles_errors
def run_payouts(
    period: Annotated[str, typer.Option(help="Month YYYY-MM (China Standard Time) / 账期")],
    db: DbOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Pay every provider for a month, once. 按月向所有提供方付款（幂等）。"""
    from suanli.services import payouts

    with open_sessions(db, home).begin() as session:
        found = payouts.run_read(payouts.run(session, _operator(), period))
    _print_run(found, as_json)


@app.command("list")
@handles_errors
def list_runs(db: DbOpt = None, home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Every payout run. 列出付款批次。"""
    from suanli.services import payouts

    who = _operator()
    with open_sessions(db, home)() as session:
        found = [
            payouts.run_read(payouts.get_run(session, who, row.period))
            for row in payouts.runs(session, who)
        ]
    if as_json:
        print_json(found)
        return
    if not found:
        err.print("no payout runs yet / 暂无付款批次")
    for one in found:
        _print_run(one, False)


@app.command("statements")
@handles_errors
def list_statements(
    period: Annotated[str | None, typer.Option(help="Month YYYY-MM / 账期")] = None,
    provider: Annotated[str | None, typer.Option(help="Provider id / 提供方 id")] = None,
    db: DbOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Payout statements, newest first. 列出对账单。"""
    from suanli.services import payouts

    with open_sessions(db, home)() as session:
        rows = [
            payouts.statement_read(r)
            for r in payouts.statements(session, _operator(), provider, period)
        ]
    _print_statements(rows, as_json)


@app.command("statement")
@handles_errors
def show_statement(
    statement_id: Annotated[str, typer.Argument(help="Statement id (stmt-...) / 对账单 id")],
    format_: FormatOpt = "table",
    db: DbOpt = None,
    home: HomeOpt = None,
) -> None:
    """One statement as a table, CSV, HTML or JSON. 查看对账单。"""
    from suanli.services import payouts

    with open_sessions(db, home)() as session:
        found = payouts.statement_read(payouts.get_statement(session, _operator(), statement_id))
    _print_statement(found, format_)


@statements_app.command("list")
@handles_errors
def api_statements(
    server: ServerOpt,
    token: TokenOpt,
    period: Annotated[str | None, typer.Option(help="Month YYYY-MM / 账期")] = None,
    as_json: JsonOpt = False,
    ca: CaOpt = None,
) -> None:
    """Your payout statements (a provider's own; the operator's all). 我的对账单。"""
    params = {"period": period} if period else {}
    found = Client(server, token, ca).call("GET", "/v1/statements", params=params)
    _print_statements(found["statements"], as_json)


@statements_app.command("show")
@handles_errors
def api_statement(
    server: ServerOpt,
    token: TokenOpt,
    statement_id: Annotated[str, typer.Argument(help="Statement id (stmt-...) / 对账单 id")],
    format_: FormatOpt = "table",
    ca: CaOpt = None,
) -> None:
    """One statement as a table, CSV, HTML or JSON. 查看对账单。"""
    found = Client(server, token, ca).call("GET", f"/v1/statements/{statement_id}")
    _print_statement(found, format_)
