"""`suanli budget set|list|delete`: a consumer's spending limits per period, over the platform API
(a consumer sets its own; the operator names the consumer with `--consumer`). Periods are
calendar day, week and month in China Standard Time (UTC+8); amounts are integer fen."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from suanli.cli_client import (
    CaOpt,
    Client,
    JsonOpt,
    ServerOpt,
    TokenOpt,
    handles_errors,
    out,
    print_json,
)

app = typer.Typer(help="Budgets per day, week or month. 按日、周、月设置预算。")
PeriodArg = Annotated[str, typer.Argument(help="day|week|month (China Standard Time) / 周期")]
ConsumerOpt = Annotated[
    str | None, typer.Option("--consumer", help="Consumer id (operator only) / 使用方 id")
]


@app.command("set")
@handles_errors
def set_budget(
    server: ServerOpt,
    token: TokenOpt,
    period: PeriodArg,
    limit_fen: Annotated[int, typer.Option("--limit-fen", help="Limit in fen / 限额（分）")],
    alert_bp: Annotated[
        list[int] | None,
        typer.Option("--alert-bp", help="Alert at these basis points of the limit / 提醒阈值"),
    ] = None,
    consumer: ConsumerOpt = None,
    as_json: JsonOpt = False,
    ca: CaOpt = None,
) -> None:
    """Create or replace a budget. 设置预算。"""
    body: dict[str, object] = {"limit_fen": limit_fen}
    if alert_bp:
        body["alert_bp"] = alert_bp
    if consumer:
        body["consumer_id"] = consumer
    row = Client(server, token, ca).call("PUT", f"/v1/budgets/{period}", json=body)
    if as_json:
        print_json(row)
        return
    out.print(
        f"{row['consumer']} {row['period']} budget {row['limit_fen']} fen, spent "
        f"{row['spent_fen']} this period (alerts at {row['alert_bp']} bp) / 预算已设置",
        markup=False,
    )


@app.command("list")
@handles_errors
def list_budgets(
    server: ServerOpt,
    token: TokenOpt,
    consumer: ConsumerOpt = None,
    as_json: JsonOpt = False,
    ca: CaOpt = None,
) -> None:
    """Budgets with this period's spend and alerts. 预算与本期用量。"""
    params = {"consumer_id": consumer} if consumer else {}
    found = Client(server, token, ca).call("GET", "/v1/budgets", params=params)
    if as_json:
        print_json(found)
        return
    table = Table(title="Budgets 预算 (China Standard Time 北京时间)")
    for column in (
        "Consumer 使用方",
        "Period 周期",
        "Limit 限额 fen",
        "Spent 已用 fen",
        "Left 剩余 fen",
        "Alerts 提醒",
        "Ends 结束",
    ):
        table.add_column(column)
    for b in found["budgets"]:
        table.add_row(
            b["consumer"],
            b["period"],
            str(b["limit_fen"]),
            str(b["spent_fen"]),
            str(b["left_fen"]),
            ", ".join(f"{a['threshold_bp'] / 100:g}%" for a in b["alerts"]) or "—",
            b["period_end"][:19],
        )
    out.print(table)


@app.command("delete")
@handles_errors
def delete_budget(
    server: ServerOpt,
    token: TokenOpt,
    period: PeriodArg,
    consumer: ConsumerOpt = None,
    ca: CaOpt = None,
) -> None:
    """Delete a budget. 删除预算。"""
    params = {"consumer_id": consumer} if consumer else {}
    Client(server, token, ca).call("DELETE", f"/v1/budgets/{period}", params=params)
    out.print(f"{period} budget deleted / 预算已删除", markup=False)
