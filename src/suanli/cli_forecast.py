"""`suanli forecast`: the platform's live load forecasts per site (over the API), forecasts of
the shipped public series with their backtests, and backtests of run-time prediction on the
shipped traces (local, no server)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import Progress, TaskID
from rich.table import Table

from suanli.cli_client import CaOpt, JsonOpt, platform_client, print_json
from suanli.cli_client import handles_errors as client_errors
from suanli.cli_platform import Decorator
from suanli.errors import InvalidValue

out = Console(soft_wrap=False, width=200)
err = Console(stderr=True)


def register(app: typer.Typer, handles_errors: Decorator) -> None:
    group = typer.Typer(
        help="Load forecasts: the platform's sites (no subcommand), public series and "
        "backtests; run-time prediction backtests. "
        "负载预测：各站点（无子命令）、公开序列与回测；运行时长预测回测。"
    )
    app.add_typer(group, name="forecast")

    @group.callback(invoke_without_command=True)
    def live(
        ctx: typer.Context,
        server: Annotated[
            str | None, typer.Option(envvar="SUANLI_SERVER", help="Server URL / 服务地址")
        ] = None,
        token: Annotated[
            str | None, typer.Option(envvar="SUANLI_TOKEN", help="Bearer token / 访问令牌")
        ] = None,
        site: Annotated[str | None, typer.Option(help="One site / 单个站点")] = None,
        hours: Annotated[int, typer.Option(help="Hours ahead / 预测小时数")] = 24,
        level: Annotated[float, typer.Option(help="Interval probability / 区间概率")] = 0.8,
        as_json: JsonOpt = False,
        ca: CaOpt = None,
    ) -> None:
        """Each site's busy devices for the hours ahead, from the platform's own history.
        各站点未来若干小时的忙碌设备数预测。"""
        if ctx.invoked_subcommand is not None:
            return
        _live(server, token, site, hours, level, as_json, ca)

    @group.command("series")
    @handles_errors
    def series(
        as_json: Annotated[bool, typer.Option("--json", help="JSON output / JSON 输出")] = False,
    ) -> None:
        """The public hourly series shipped for forecasting. 内置的公开小时序列。"""
        from suanli.forecast import public_series, series_ids

        rows: list[dict[str, Any]] = []
        for sid in series_ids():
            s = public_series(sid)
            rows.append(
                {
                    "id": s.id,
                    "name": s.name,
                    "name_zh": s.name_zh,
                    "unit": s.unit,
                    "hours": len(s.values),
                    "first_hour": s.first_hour,
                    "source": s.source,
                    "licence": s.licence,
                }
            )
        if as_json:
            out.print_json(json.dumps(rows, ensure_ascii=False))
            return
        table = Table("id", "name 名称", "unit 单位", "hours 小时", "licence 许可")
        for r in rows:
            table.add_row(
                r["id"], f"{r['name']}\n{r['name_zh']}", r["unit"], f"{r['hours']:,}", r["licence"]
            )
        out.print(table)

    @group.command("show")
    @handles_errors
    def show(
        series_id: Annotated[str, typer.Option("--series", help="Series id / 序列")],
        hours: Annotated[int, typer.Option(help="Horizon in hours / 预测小时数")] = 24,
        level: Annotated[float, typer.Option(help="Interval probability / 区间概率")] = 0.8,
        as_json: Annotated[bool, typer.Option("--json", help="JSON output / JSON 输出")] = False,
    ) -> None:
        """Forecast the hours after a shipped series ends. 预测序列结束后的若干小时。"""
        from suanli.forecast import forecast, public_series

        s = public_series(series_id)
        made = forecast(s.values, hours, level)
        rows = [
            {"hour": len(s.values) + h, "mean": m, "lower": lo, "upper": hi}
            for h, (m, lo, hi) in enumerate(
                zip(made.mean.tolist(), made.lower.tolist(), made.upper.tolist(), strict=True)
            )
        ]
        if as_json:
            body = {
                "series": s.id,
                "unit": s.unit,
                "level": made.level,
                "method": made.method,
                "hours": rows,
            }
            out.print_json(json.dumps(body, ensure_ascii=False))
            return
        pct = f"{made.level:.0%}"
        table = Table(
            "hour 小时",
            f"mean 预测 ({s.unit})",
            f"{pct} from 下限",
            f"{pct} to 上限",
            title=f"{s.name} / {s.name_zh}",
        )
        for r in rows:
            table.add_row(
                str(r["hour"]), f"{r['mean']:,.1f}", f"{r['lower']:,.1f}", f"{r['upper']:,.1f}"
            )
        out.print(table)
        out.print(f"method 方法: {made.method}")

    @group.command("backtest")
    @handles_errors
    def backtest_cmd(
        series_id: Annotated[
            str, typer.Option("--series", help="Series id or 'all' / 序列")
        ] = "all",
        hours: Annotated[int, typer.Option(help="Horizon in hours / 预测小时数")] = 24,
        origins: Annotated[
            int | None,
            typer.Option(help="Forecast origins; default all that fit / 预测起点数，默认全部"),
        ] = None,
        every: Annotated[int, typer.Option(help="Hours between origins / 起点间隔小时")] = 24,
        level: Annotated[float, typer.Option(help="Interval probability / 区间概率")] = 0.8,
        as_json: Annotated[bool, typer.Option("--json", help="JSON output / JSON 输出")] = False,
    ) -> None:
        """Rolling-origin backtests against seasonal naive. 滚动起点回测（对比季节性朴素预测）。"""
        from suanli.forecast import backtest, public_series, series_ids

        ids = series_ids() if series_id == "all" else [public_series(series_id).id]
        results: list[dict[str, Any]] = []
        with Progress(console=err, transient=True, disable=as_json) as bar:
            for sid in ids:
                job = bar.add_task(f"{sid}", total=None)

                def advance(done: int, total: int, job: TaskID = job) -> None:
                    bar.update(job, completed=done, total=total)

                found = backtest(
                    public_series(sid).values, hours, origins, every, level, progress=advance
                )
                results.append({"series": sid, **found.__dict__})
        if as_json:
            out.print_json(json.dumps(results, ensure_ascii=False))
            return
        table = Table(
            "series 序列",
            "origins 起点",
            "MASE",
            "seasonal naive 季节性朴素",
            "ratio 比值",
            f"{level:.0%} coverage 覆盖率",
            title=f"{hours} h horizon, origins {every} h apart / "
            f"预测 {hours} 小时，起点间隔 {every} 小时",
        )
        for r in results:
            table.add_row(
                r["series"],
                str(r["origins"]),
                f"{r['mase']:.3f}",
                f"{r['mase_seasonal_naive']:.3f}",
                f"{r['ratio']:.3f}",
                f"{r['coverage']:.1%}",
            )
        out.print(table)

    @group.command("runtime")
    @handles_errors
    def runtime_cmd(
        trace: Annotated[
            str, typer.Option("--trace", help="openb, dlrm or 'all' / 轨迹（openb、dlrm 或 all）")
        ] = "all",
        every: Annotated[
            float, typer.Option(help="Hours between refits / 重新拟合间隔（小时）")
        ] = 1.0,
        level: Annotated[
            float, typer.Option(help="Upper quantile's probability / 上分位数的概率")
        ] = 0.8,
        min_members: Annotated[
            int, typer.Option(help="Fewest tasks a group needs / 分组至少需要的任务数")
        ] = 5,
        as_json: Annotated[bool, typer.Option("--json", help="JSON output / JSON 输出")] = False,
    ) -> None:
        """Backtest run-time prediction on public traces, in time order, against the median
        of all past jobs. 运行时长预测的按时间回测（对比全部历史作业的中位数）。"""
        from suanli.forecast import RUNTIME_TRACES, backtest_runtime, runtime_trace

        if not every > 0:
            raise InvalidValue("every", every, "hours > 0", "大于 0 的小时数")
        names = list(RUNTIME_TRACES) if trace == "all" else [trace]
        results: list[dict[str, Any]] = []
        with Progress(console=err, transient=True, disable=as_json) as bar:
            for name in names:
                jobs = runtime_trace(name)
                job = bar.add_task(name, total=None)

                def advance(done: int, total: int, job: TaskID = job) -> None:
                    bar.update(job, completed=done, total=total)

                found = backtest_runtime(jobs, every * 3600.0, level, min_members, advance)
                results.append({"trace": name, "source": RUNTIME_TRACES[name], **found.__dict__})
        if as_json:
            out.print_json(json.dumps(results, ensure_ascii=False))
            return
        pct = f"{level:.0%}"
        table = Table(
            "trace 轨迹",
            "jobs 作业",
            "MAE h (naive) 平均绝对误差",
            "median |ln err| (naive) 对数误差中位数",
            f"{pct} quantile coverage (naive) 覆盖率",
            title=f"Run-time prediction, refit every {every:g} h / "
            f"运行时长预测，每 {every:g} 小时重新拟合",
        )
        for r in results:
            table.add_row(
                r["trace"],
                f"{r['jobs']:,}",
                f"{r['mae_s'] / 3600:,.2f} ({r['mae_naive_s'] / 3600:,.2f})",
                f"{r['mdale']:.3f} ({r['mdale_naive']:.3f})",
                f"{r['coverage']:.1%} ({r['coverage_naive']:.1%})",
            )
        out.print(table)
        for r in results:
            used = "; ".join(f"{basis} {count:,}" for basis, count in r["bases"].items())
            out.print(f"{r['trace']}: {r['source']}; groups used 所用分组: {used}", markup=False)


@client_errors
def _live(
    server: str | None,
    token: str | None,
    site: str | None,
    hours: int,
    level: float,
    as_json: bool,
    ca: str | None,
) -> None:
    http = platform_client(
        server,
        token,
        ca,
        " for the platform's forecasts (the public series need none: 'suanli forecast series')",
    )
    params: dict[str, object] = {"hours": hours, "level": level}
    if site:
        params["site"] = site
    found = http.call("GET", "/v1/forecasts", params=params)
    if as_json:
        print_json(found)
        return
    pct = f"{found['level']:.0%}"
    for row in found["sites"]:
        title = f"{row['site']}: busy devices from {found['start']} / 忙碌设备预测"
        if row["unavailable"]:
            out.print(f"{title}\n  no forecast yet 暂无预测: {row['unavailable']}", markup=False)
            continue
        table = Table("hour 小时", "mean 预测", f"{pct} from 下限", f"{pct} to 上限", title=title)
        for h, (m, lo, hi) in enumerate(zip(row["mean"], row["lower"], row["upper"], strict=True)):
            table.add_row(f"+{h}", f"{m:,.2f}", f"{lo:,.2f}", f"{hi:,.2f}")
        out.print(table)
        _print_prices(row, pct)


NEXT_PRICE_H = 6  # the hours of price shown per pool in the table (all in --json)


def _print_prices(row: dict[str, Any], pct: str) -> None:
    """A site's price forecasts: one line per pool, the next hours' price per device-hour (fen,
    at the mean load) and the cheapest hour of the horizon, with its price at the interval's
    lower and upper load."""
    if row.get("prices_unavailable"):
        out.print(f"  no price forecast 暂无价格预测: {row['prices_unavailable']}", markup=False)
        return
    pools = row.get("prices") or []
    if not pools:
        return
    shown = min(NEXT_PRICE_H, len(pools[0]["hours"]))
    table = Table(
        "pool 资源池",
        "posted 挂牌价",
        *(f"+{h}" for h in range(shown)),
        f"cheapest 最便宜 ({pct} load 负载区间)",
        title=f"{row['site']}: forecast price, fen per device-hour / 预测价格（分/设备·小时）",
    )
    for pool in pools:
        low = pool["cheapest"]
        cheapest = (
            "-"
            if low is None
            else f"{low['hour']} (CST {low['local_hour']:02d}h) {low['price_fen']:,} "
            f"[{low['price_fen_at_lower']:,}-{low['price_fen_at_upper']:,}]"
        )
        table.add_row(
            f"{pool['pool']} ({pool['device']} x{pool['count']})",
            f"{pool['posted_fen_per_device_hour']:,}",
            *(f"{h['price_fen']:,}" for h in pool["hours"][:shown]),
            cheapest,
        )
    out.print(table)
