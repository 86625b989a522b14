"""`suanli sim run`: the digital twin from the command line, with a progress bar."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from suanli.cli_platform import Decorator

out = Console(soft_wrap=False, width=200)
err = Console(stderr=True)


def register(app: typer.Typer, handles_errors: Decorator) -> None:
    sim = typer.Typer(help="The digital twin: replay traces, compare policies. 数字孪生。")
    app.add_typer(sim, name="sim")

    @sim.command("run")
    @handles_errors
    def sim_run(
        trace: Annotated[str, typer.Option(help="'openb' or a CSV path / 负载轨迹")] = "openb",
        trace_format: Annotated[
            str | None,
            typer.Option(
                "--format",
                help="openb|azure-llm|dlrm|philly|generic; default: told by the header / 文件格式",
            ),
        ] = None,
        policy: Annotated[str, typer.Option(help="One policy / 单一策略")] = "balanced",
        compare: Annotated[str | None, typer.Option(help="P1,P2,... / 对比多个策略")] = None,
        seed: Annotated[int, typer.Option(help="Seed for origins / 随机种子")] = 0,
        scale: Annotated[float, typer.Option(help="GPUs per published rack / 规模")] = 0.004,
        utilisation: Annotated[
            float | None,
            typer.Option(
                help="Size the network so the trace keeps this share of its GPUs busy "
                "(instead of --scale) / 按目标 GPU 利用率确定网络规模"
            ),
        ] = None,
        calibrate: Annotated[
            bool,
            typer.Option(
                help="With --utilisation: replay once first and speed the arrivals up to the "
                "busy share asked for / 先回放一次，按实测利用率加快到达以达到目标"
            ),
        ] = False,
        limit: Annotated[int | None, typer.Option(help="First N jobs / 前 N 个作业")] = None,
        hours: Annotated[float | None, typer.Option(help="First H hours / 前 H 小时")] = None,
        time_scale: Annotated[float, typer.Option(help="Stretch time / 时间缩放")] = 1.0,
        deferrable_slack_h: Annotated[
            float | None,
            typer.Option(
                "--deferrable-slack-h",
                "--batch-slack",
                help="Make batch jobs deferrable, deadline = duration + H hours / "
                "批处理作业可延后，截止时间 = 时长 + H 小时",
            ),
        ] = None,
        foresight: Annotated[
            str,
            typer.Option(
                help="shape: the documented daily carbon shape, known in advance; forecast, "
                "bound or oracle: carbon that varies by day (synthetic weather, ESTIMATE), seen "
                "through day-ahead forecasts, through the weather's expectation (the best any "
                "forecaster could do) or known in advance / "
                "碳强度预见方式：shape|forecast|bound|oracle"
            ),
        ] = "shape",
        weather_seed: Annotated[
            int, typer.Option(help="Seed of the synthetic weather / 合成天气的随机种子")
        ] = 0,
        json_out: Annotated[Path | None, typer.Option("--json", help="Write JSON / 输出")] = None,
        report: Annotated[Path | None, typer.Option(help="Write HTML / 报告")] = None,
    ) -> None:
        """Replay a trace on the national network. 在全国算力网络上回放负载。"""
        from suanli import checks
        from suanli.errors import InvalidValue
        from suanli.scheduler import policy_named
        from suanli.sim import report as reports
        from suanli.sim import twin
        from suanli.sim.carbon import foresight_named, run_hours, synthetic_carbon
        from suanli.sim.traces import load_trace, shape

        checks.positive("scale", scale)
        if deferrable_slack_h is not None:
            checks.non_negative("deferrable_slack_h", deferrable_slack_h)
        policies = [p.strip() for p in compare.split(",")] if compare else [policy]
        for name in policies:
            policy_named(name)
        shaped = shape(
            load_trace(trace, trace_format),
            limit=limit,
            hours=hours,
            time_scale=time_scale,
            seed=seed,
        )
        sizing = None
        compression = 1.0
        if calibrate and utilisation is None:
            raise InvalidValue(
                "calibrate", True, "--utilisation U beside it", "需同时给出 --utilisation"
            )
        if utilisation is not None and calibrate:
            with Progress(console=err, transient=True) as progress:
                bar = progress.add_task("calibration 校准", total=None)

                def calibrating(done: int, total: int) -> None:
                    progress.update(bar, completed=done, total=total)

                shaped, network, calibration = twin.calibrate(
                    shaped, utilisation, policies[0], progress=calibrating
                )
            sizing, compression = calibration.sizing, calibration.factor
            tried = ", ".join(f"{f:.2f}x {m:.1%}" for f, m in calibration.replays)
            err.print(
                f"calibration: {len(calibration.replays)} replays under {policies[0]} "
                f"({tried}); arrivals sped up {compression:.2f}x, which measured "
                f"{calibration.measured:.1%} of the GPUs busy / 校准：回放 "
                f"{len(calibration.replays)} 次，到达加快 {compression:.2f} 倍，实测 GPU 利用率 "
                f"{calibration.measured:.1%}",
                markup=False,
            )
        elif utilisation is not None:
            shaped, network, sizing = twin.sized_for(shaped, utilisation)
        else:
            network = twin.national_network(scale)
        if sizing is not None:
            scale = sizing.scale
            err.print(
                f"sized for {utilisation:.0%} of the GPUs busy: {sizing.gpus:,} GPUs (scale "
                f"{scale:.3g} GPUs per published rack), the trace played {sizing.copies} "
                f"time(s) over, offering {sizing.offered_gpus:,.1f} GPUs on average while it "
                f"arrives; the table's Busy column is what the replay measured / 按利用率 "
                f"{utilisation:.0%} 确定规模：{sizing.gpus:,} 块 GPU，轨迹重复 {sizing.copies} 次",
                markup=False,
            )

        def world() -> Any:  # a fresh one a policy: its forecasts are made as the run goes
            if foresight == "shape":
                return None
            hours = run_hours(shaped)
            return synthetic_carbon(network, hours, foresight, seed=weather_seed)

        foresight_named(foresight)  # a bad --foresight is refused before any run
        results = []
        with Progress(console=err, transient=True) as progress:
            for name in policies:
                bar = progress.add_task(f"{name}", total=len(shaped.jobs))

                def advance(done: int, _total: int, bar: Any = bar) -> None:
                    progress.update(bar, completed=done)

                slack = None if deferrable_slack_h is None else deferrable_slack_h * 3600.0
                results.append(
                    twin.run(
                        shaped,
                        network,
                        name,
                        deferrable_slack_s=slack,
                        carbon=world(),
                        progress=advance,
                    )
                )
        table = Table(title=f"Digital twin 数字孪生 — {shaped.name}, {len(shaped.jobs):,} jobs")
        for column in (
            "Policy 策略",
            "Done 完成",
            "Rejected 拒绝",
            "Cost CNY 费用",
            "Energy kWh 能耗",
            "Carbon kg market/location 碳排 市场/位置",
            "Latency p50/p99 ms 时延",
            "Wait p50/p99 s 等待",
            "West GPU-h/CPU-h 西部占比",
            "Busy GPU/CPU 忙碌",
            "Events/s",
        ):
            table.add_column(column)
        for r in results:
            m = r.metrics
            table.add_row(
                m["policy"],
                f"{m['tasks_completed']:,}",
                f"{m['tasks_rejected']:,}",
                f"{m['cost_fen'] / 100:,.2f}",
                f"{m['energy_kwh']:,.1f}",
                f"{m['carbon_kg']:,.1f}/{m['carbon_location_kg']:,.1f}",
                f"{m['latency_ms_p50']:.1f}/{m['latency_ms_p99']:.1f}",
                f"{m['wait_s_p50']:,.0f}/{m['wait_s_p99']:,.0f}",
                f"{m['west_share_gpu_hours']:.0%}/{m['west_share_cpu_core_hours']:.0%}",
                f"{m['busy_share_gpu']:.1%}/{m['busy_share_cpu']:.1%}",
                f"{m['events_per_s']:,.0f}",
            )
        out.print(table)
        for r in results:
            m = r.metrics
            mape = m.get("carbon_forecast_mape")
            out.print(
                f"{m['policy']}: carbon {m['carbon_basis']}; {m['tasks_deferred']:,} jobs deferred"
                + ("" if mape is None else f"; day-ahead carbon forecast MAPE {mape:.1%}")
                + f" / 碳强度依据：{foresight}；延后 {m['tasks_deferred']:,} 个作业",
                markup=False,
            )
        document = {
            "trace": shaped.name,
            "jobs": len(shaped.jobs),
            "dropped": shaped.dropped,
            "scale": scale,
            "sizing": None if sizing is None else sizing.__dict__,
            "compression": compression,
            "seed": seed,
            "foresight": foresight,
            "weather_seed": None if foresight == "shape" else weather_seed,
            **reports.document(results),
        }
        if json_out is not None:
            json_out.write_text(
                json.dumps(document, ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
            )
        if report is not None:
            report.write_text(reports.render(shaped.name, network, results), encoding="utf-8")
            err.print(f"report written to {report}", markup=False)

    @sim.command("sweep")
    @handles_errors
    def sim_sweep(
        trace: Annotated[str, typer.Option(help="Trace / 负载轨迹")] = "openb",
        policies: Annotated[str, typer.Option(help="P1,P2,... / 策略")] = "nearest,cost,green",
        seeds: Annotated[str, typer.Option(help="S1,S2,... / 种子")] = "0",
        scales: Annotated[str, typer.Option(help="X1,X2,... / 规模")] = "0.004",
        limit: Annotated[int | None, typer.Option(help="First N jobs / 前 N 个作业")] = None,
        time_scale: Annotated[float, typer.Option(help="Stretch time / 时间缩放")] = 1.0,
        workers: Annotated[int, typer.Option(help="Parallel runs / 并行数")] = 2,
        ray: Annotated[str | None, typer.Option(help="Ray address, or 'local' / Ray 集群")] = None,
        json_out: Annotated[Path | None, typer.Option("--json", help="Write JSON / 输出")] = None,
    ) -> None:
        """Run a grid of policies, seeds and scales in parallel. 参数扫描。"""
        from suanli.errors import InvalidValue
        from suanli.scheduler import policy_named
        from suanli.sim.sweep import spread_text, summarise, sweep

        names = [p.strip() for p in policies.split(",") if p.strip()]
        for name in names:
            policy_named(name)
        try:
            seed_list = [int(s) for s in seeds.split(",")]
            scale_list = [float(x) for x in scales.split(",")]
        except ValueError:
            raise InvalidValue(
                "seeds/scales", f"{seeds} / {scales}", "comma-separated numbers", "逗号分隔的数字"
            ) from None
        rows = sweep(
            trace,
            names,
            seed_list,
            scale_list,
            limit=limit,
            time_scale=time_scale,
            workers=workers,
            ray_address=ray,
        )
        table = Table(title=f"Sweep 扫描 — {trace}, {len(rows)} runs")
        for column in (
            "Policy 策略",
            "Seed 种子",
            "Scale 规模",
            "Done 完成",
            "Cost CNY 费用",
            "Carbon kg 碳排",
            "Latency ms 时延",
            "West GPU-h 西部 GPU 时",
        ):
            table.add_column(column)
        for r in rows:
            table.add_row(
                r["policy"],
                str(r["seed"]),
                f"{r['scale']:g}",
                f"{r['tasks_completed']:,}",
                f"{r['cost_fen'] / 100:,.2f}",
                f"{r['carbon_kg']:,.1f}",
                f"{r['latency_ms_mean']:.1f}",
                f"{r['west_share_gpu_hours']:.0%}",
            )
        out.print(table)
        summary = summarise(rows)
        over = Table(title="Over seeds: mean ± sd [min–max] 跨种子：均值 ± 标准差 [最小–最大]")
        for column in (
            "Policy 策略",
            "Scale 规模",
            "Seeds 种子",
            "Done 完成",
            "Cost CNY 费用",
            "Carbon kg market/location 碳排 市场/位置",
            "Latency ms 时延",
            "West GPU-h 西部 GPU 时",
        ):
            over.add_column(column)
        for s in summary:
            m = s["metrics"]
            over.add_row(
                s["policy"],
                f"{s['scale']:g}",
                ",".join(str(seed) for seed in s["seeds"]),
                spread_text(m["tasks_completed"], ",.1f"),
                spread_text(m["cost_fen"], ",.2f", 0.01),
                spread_text(m["carbon_kg"], ",.1f")
                + " / "
                + spread_text(m["carbon_location_kg"], ",.1f"),
                spread_text(m["latency_ms_mean"], ".1f"),
                spread_text(m["west_share_gpu_hours"], ".1%"),
            )
        out.print(over)
        if json_out is not None:
            json_out.write_text(
                json.dumps({"runs": rows, "summary": summary}, ensure_ascii=False, indent=2) + "\n",
                encoding="utf-8",
            )
