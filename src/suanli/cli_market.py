"""Market commands (consumers): `quote` (priced options for a task), `accept` (escrow the price,
queue the task pinned to the quoted pool), `balance`, `statement` (table, CSV or JSON) and
`rate`, over the platform API."""

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
    handles_errors,
    out,
    print_json,
)
from suanli.cli_tasks import task_body

app = typer.Typer()


@app.command()
@handles_errors
def quote(
    server: ServerOpt,
    token: TokenOpt,
    command: Annotated[list[str], typer.Argument(help="-- CMD ARGS... / 要运行的命令")],
    devices: Annotated[int, typer.Option(help="Devices / 设备数")] = 1,
    kind: Annotated[str, typer.Option(help="gpu|npu|cpu / 设备类型")] = "cpu",
    model: Annotated[list[str] | None, typer.Option(help="Allowed models / 型号")] = None,
    precision: Annotated[str, typer.Option(help="Precision / 精度")] = "fp32",
    work_flop: Annotated[float | None, typer.Option(help="Estimated work / 计算量")] = None,
    duration: Annotated[float | None, typer.Option(help="Estimated seconds / 预计时长")] = None,
    tier: Annotated[str, typer.Option(help="interactive|standard|batch / 时延等级")] = "batch",
    origin: Annotated[str | None, typer.Option(help="Where you are / 来源地")] = None,
    data_gb: Annotated[float, typer.Option(help="Input data, GB / 数据量")] = 0.0,
    deadline: Annotated[float | None, typer.Option(help="Seconds from now / 截止")] = None,
    policy: Annotated[str | None, typer.Option(help="Placement policy / 调度策略")] = None,
    deferrable: Annotated[
        bool, typer.Option(help="May start later, by the deadline / 可推迟至截止前开始")
    ] = False,
    as_json: JsonOpt = False,
    ca: CaOpt = None,
) -> None:
    """Priced options for a task, valid for a few minutes: the scheduler's choice, its runner-up
    and, for a deferrable task with a deadline, the cheapest and the greenest start within it.
    报价：调度选择、次优选项，以及（可推迟且有截止时间的任务）截止前最便宜与最低碳的开始时间。"""
    body = task_body(
        command,
        devices,
        kind,
        model,
        precision,
        work_flop,
        duration,
        0.0,
        tier,
        origin,
        data_gb,
        deadline,
        None,
        policy,
        "",
        None,
        None,
    )
    if deferrable:
        body["deferrable"] = True
    row = Client(server, token, ca).call("POST", "/v1/quotes", json=body)
    if as_json:
        print_json(row)
        return
    table = Table(title=f"Quote 报价 {row['id']} (valid until {row['expires_at']})")
    for column in (
        "#",
        "Pool 资源池",
        "Province 省份",
        "Start 开始",
        "Duration 时长",
        "Max CNY 最高价",
        "Carbon kg 碳排",
        "Why 原因",
    ):
        table.add_column(column)
    for n, option in enumerate(row["options"]):
        table.add_row(
            str(n),
            option["pool"],
            option["province"],
            start_text(option),
            f"{option['duration_s']:.0f} s",
            f"{option['price_range']['max']['fen'] / 100:,.2f}",
            f"{option['carbon_kg']:.3f}",
            option["reason"],
        )
    out.print(table)
    if not row["options"]:
        out.print(f"no option / 无可用选项: {row['unavailable']}", markup=False)


def start_text(option: dict[str, Any]) -> str:
    """When a quote's option starts: "now 现在", or hours from now and the moment (UTC)."""
    start_s = float(option.get("start_s") or 0.0)
    if start_s <= 0:
        return "now 现在"
    return f"+{start_s / 3600:g} h ({option['starts_at']})"


@app.command()
@handles_errors
def accept(
    server: ServerOpt,
    token: TokenOpt,
    quote_id: Annotated[str, typer.Argument(help="Quote id / 报价 id")],
    option: Annotated[int, typer.Option(help="Option number / 选项序号")] = 0,
    as_json: JsonOpt = False,
    ca: CaOpt = None,
) -> None:
    """Accept a quote: escrow the price, create the order and the task. 接受报价。"""
    row = Client(server, token, ca).call(
        "POST", f"/v1/quotes/{quote_id}/accept", json={"option": option}
    )
    print_json(row) if as_json else out.print(
        f"order {row['id']} task {row['task_id']} escrow {row['escrow']['fen']} fen",
        markup=False,
    )


@app.command()
@handles_errors
def balance(
    server: ServerOpt,
    token: TokenOpt,
    as_json: JsonOpt = False,
    ca: CaOpt = None,
) -> None:
    """Your account balances (fen). 账户余额。"""
    row = Client(server, token, ca).call("GET", "/v1/balance")
    if as_json:
        print_json(row)
        return
    for account, amount in row["accounts"].items():
        out.print(
            f"{account}: {amount['fen'] / 100:,.2f} {amount['currency']} ({amount['fen']} fen)",
            markup=False,
        )


@app.command()
@handles_errors
def statement(
    server: ServerOpt,
    token: TokenOpt,
    account: Annotated[str, typer.Option(help="Account, e.g. wallet:cons-... / 账户")],
    start: Annotated[str | None, typer.Option("--from", help="ISO date-time / 起")] = None,
    end: Annotated[str | None, typer.Option("--to", help="ISO date-time / 止")] = None,
    format_: Annotated[str, typer.Option("--format", help="table|csv|json")] = "table",
    ca: CaOpt = None,
) -> None:
    """Postings of an account, for invoicing. 账单明细。"""
    params = {k: v for k, v in {"account": account, "from": start, "to": end}.items() if v}
    row = Client(server, token, ca).call("GET", "/v1/statement", params=params)
    if format_ == "json":
        print_json(row)
    elif format_ == "csv":
        import csv

        writer = csv.writer(sys.stdout)
        writer.writerow(
            ["at", "transaction", "kind", "order", "amount_fen", "balance_fen", "currency"]
        )
        for line in row["lines"]:
            writer.writerow(
                [
                    line["at"],
                    line["transaction"],
                    line["kind"],
                    line["order"],
                    line["amount"]["fen"],
                    line["balance"]["fen"],
                    "CNY",
                ]
            )
    else:
        table = Table(title=f"Statement 账单 {account}")
        for column in ("At 时间", "Kind 类型", "Order 订单", "Amount 金额 fen", "Balance 余额"):
            table.add_column(column)
        for line in row["lines"]:
            table.add_row(
                line["at"],
                line["kind"],
                line["order"] or "",
                str(line["amount"]["fen"]),
                str(line["balance"]["fen"]),
            )
        out.print(table)


@app.command()
@handles_errors
def rate(
    server: ServerOpt,
    token: TokenOpt,
    order_id: Annotated[str, typer.Argument(help="Order id / 订单 id")],
    stars: Annotated[int, typer.Option(help="1..5 / 评分")],
    comment: Annotated[str, typer.Option(help="Comment / 评语")] = "",
    as_json: JsonOpt = False,
    ca: CaOpt = None,
) -> None:
    """Rate a finished order, once. 评价订单。"""
    row = Client(server, token, ca).call(
        "POST", f"/v1/orders/{order_id}/rating", json={"stars": stars, "comment": comment}
    )
    print_json(row) if as_json else out.print(row["id"], markup=False)
