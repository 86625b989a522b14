"""`suanli carbon record|forecast`: observed hourly carbon intensity of provinces' grids, fed
to the platform by its operator, and the forecast the scheduling pass defers work on (over the
API: `POST /v1/carbon`, `GET /v1/carbon`)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from suanli.cli_client import CaOpt, JsonOpt, platform_client, print_json
from suanli.cli_platform import Decorator
from suanli.errors import InvalidValue

out = Console(soft_wrap=False, width=200)
BATCH = 10_000  # hours per request (the API's limit)

ServerOpt = Annotated[
    str | None, typer.Option(envvar="SUANLI_SERVER", help="Server URL / 服务地址")
]
TokenOpt = Annotated[
    str | None, typer.Option(envvar="SUANLI_TOKEN", help="Bearer token / 访问令牌")
]


def read_observations(path: Path) -> list[dict[str, Any]]:
    """The rows of a CSV file with a header naming `hour` (ISO 8601 with its zone) and
    `kg_per_kwh`; InvalidValue naming the line of a bad one."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as error:
        raise InvalidValue("file", str(path), "a readable CSV file", "可读取的 CSV 文件") from error
    reader = csv.DictReader(text.splitlines())
    if reader.fieldnames is None or not {"hour", "kg_per_kwh"} <= set(reader.fieldnames):
        raise InvalidValue(
            "file",
            str(path),
            "a CSV file whose header names the columns hour and kg_per_kwh",
            "表头含 hour 与 kg_per_kwh 两列的 CSV 文件",
        )
    values = []
    for line, found in enumerate(reader, start=2):
        try:
            kg = float(found["kg_per_kwh"])
        except (TypeError, ValueError):
            raise InvalidValue(
                f"line {line}: kg_per_kwh",
                found["kg_per_kwh"],
                "a number of kg CO2 per kWh",
                "千克 CO2/千瓦时 数值",
            ) from None
        values.append({"hour": (found["hour"] or "").strip(), "kg_per_kwh": kg})
    if not values:
        raise InvalidValue("file", str(path), "at least one row of values", "至少一行数据")
    return values


def register(app: typer.Typer, handles_errors: Decorator) -> None:
    group = typer.Typer(
        help="Observed carbon intensity of provinces' grids, and its forecast. "
        "各省电网的实测碳强度及其预测。"
    )
    app.add_typer(group, name="carbon")

    @group.command("record")
    @handles_errors
    def record(
        file: Annotated[Path, typer.Argument(help="CSV: hour,kg_per_kwh / CSV 文件")],
        province: Annotated[str, typer.Option(help="The province / 省份")],
        source: Annotated[str, typer.Option(help="Where the values come from / 数据来源")],
        server: ServerOpt = None,
        token: TokenOpt = None,
        as_json: JsonOpt = False,
        ca: CaOpt = None,
    ) -> None:
        """Feed observed hours (operator). 录入实测小时碳强度（运营方）。"""
        values = read_observations(file)
        http = platform_client(server, token, ca)
        answers = []
        for first in range(0, len(values), BATCH):
            body = {"province": province, "source": source, "values": values[first : first + BATCH]}
            answers.append(http.call("POST", "/v1/carbon", json=body))
            if not as_json:
                done = answers[-1]
                out.print(
                    f"recorded 已录入 {done['recorded']:,} h of {done['province']} "
                    f"({done['first']} .. {done['last']}), replaced 替换 {done['replaced']:,}",
                    markup=False,
                )
        if as_json:
            print_json(answers)

    @group.command("forecast")
    @handles_errors
    def forecast(
        province: Annotated[str | None, typer.Option(help="One province / 单个省份")] = None,
        hours: Annotated[int, typer.Option(help="Hours ahead, 1-48 / 预测小时数")] = 24,
        server: ServerOpt = None,
        token: TokenOpt = None,
        as_json: JsonOpt = False,
        ca: CaOpt = None,
    ) -> None:
        """Each observed province's carbon intensity for the hours ahead.
        各省未来若干小时的碳强度预测。"""
        params: dict[str, object] = {"hours": hours}
        if province:
            params["province"] = province
        found = platform_client(server, token, ca).call("GET", "/v1/carbon", params=params)
        if as_json:
            print_json(found)
            return
        if not found["provinces"]:
            out.print(
                "no province has observations: the pass uses the documented daily shape "
                "(synthetic, ESTIMATE) / 暂无实测：使用文档化的日曲线（合成，估计值）",
                markup=False,
            )
        pct = f"{found['level']:.0%}"
        for row in found["provinces"]:
            title = f"{row['province']}: kg CO2/kWh from {row['start']} / 碳强度预测"
            if row["unavailable"]:
                out.print(
                    f"{row['province']}: no forecast 暂无预测: {row['unavailable']}", markup=False
                )
                continue
            table = Table(
                "hour 小时", "mean 预测", f"{pct} from 下限", f"{pct} to 上限", title=title
            )
            for h, (m, lo, hi) in enumerate(
                zip(row["mean"], row["lower"], row["upper"], strict=True)
            ):
                table.add_row(f"+{h}", f"{m:.3f}", f"{lo:.3f}", f"{hi:.3f}")
            out.print(table)
            out.print(f"  source 来源: {row['source']}", markup=False)
