"""The `suanli` command line: a thin Typer edge over the pure core.

Every command prints a Rich table for people and, with `--json`, one JSON document for scripts
(UTF-8, stable keys). Bad input never shows a traceback: a `SuanliError` becomes one bilingual
line on stderr and exit code 2. Estimates and unverified figures carry a visible mark ("est.",
"unverified") in tables and an explicit flag in JSON.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from typer.exceptions import TyperException

from suanli import __version__, checks, cli_carbon, cli_forecast, cli_platform, cli_sim, twin_worker
from suanli.catalog import Site, clusters, find_site, hubs, latency_between
from suanli.catalog.fleet import DEMO_FLEET_LABEL, demo_fleet, parse_fleet
from suanli.cli_client import handles_errors
from suanli.errors import InvalidValue
from suanli.indicators import Indicators, national, per_hub, published_progress
from suanli.metering import (
    CEPS_LABEL,
    all_devices,
    electricity_cost_fen,
    find_device,
    meter,
    parse_precision,
    parse_workload,
)
from suanli.scheduler import POLICIES, Policy, custom_policy, place, policy_named
from suanli.scheduler.problem import (
    decide_problem,
    decisions_document,
    decisions_plan,
    load_problem,
    plan_document,
)

app = typer.Typer(
    name="suanli",
    help="suanli 算力: meter, schedule and trade computing across data centres "
    "(东数西算). 计量、调度与交易跨数据中心的算力。",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console(soft_wrap=False, width=200)
err = Console(stderr=True, soft_wrap=True)

F = TypeVar("F", bound=Callable[..., Any])

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts / 输出 JSON")]
EST = " (est.)"


_handles_errors = handles_errors  # one error mapping for every command (cli_client)


def _print_json(document: object) -> None:
    sys.stdout.write(json.dumps(document, ensure_ascii=False, indent=2) + "\n")


def _read_text(path: Path, field: str, expected: str, expected_zh: str) -> str:
    """A user's file as UTF-8 text; an unreadable one is a one-line error naming it."""
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InvalidValue(field, str(path), expected, expected_zh) from error


def _mark(flag: bool, text: str = EST) -> str:
    return text if flag else ""


# ---------------------------------------------------------------------------------------------
# catalog


def _cluster_json(site: Site) -> dict[str, Any]:
    return {
        "id": site.id,
        "name_zh": site.name_zh,
        "name_en": site.name_en,
        "hub": site.hub_id,
        "province": site.province,
        "province_en": site.province_en,
        "lat": site.lat,
        "lon": site.lon,
        "east_west": site.east_west,
        "scheme_group": site.scheme_group,
        "pue": site.pue,
        "pue_basis": site.pue_basis,
        "pue_verified": site.pue_verified,
        "grid_kgco2_per_kwh": site.grid_kgco2_per_kwh,
        "grid_year": site.grid.year,
        "grid_level": site.grid.level,
        "grid_verification": site.grid.verification,
        "green_share": site.green_share,
        "green_share_basis": site.green_share_basis,
        "price_cny_per_kwh": site.price_cny_per_kwh,
        "price_low_cny_per_kwh": site.price.low_cny_per_kwh,
        "price_high_cny_per_kwh": site.price.high_cny_per_kwh,
        "price_estimate": site.price.estimate,
        "price_quality": site.price.quality,
        "rack_utilization": site.rack_utilization,
        "rack_utilization_target_min": site.rack_utilization_target_min,
        "source": site.source,
    }


@app.command()
@_handles_errors
def catalog(as_json: JsonOpt = False) -> None:
    """Hubs and clusters (sites) with their factors. 枢纽与集群（站点）及其参数。"""
    if as_json:
        _print_json(
            {
                "hubs": [
                    {
                        "id": h.id,
                        "name_zh": h.name_zh,
                        "name_en": h.name_en,
                        "provinces": list(h.provinces),
                        "scheme_group": h.scheme_group,
                        "east_west": h.geo_east_west,
                        "clusters": list(h.cluster_ids),
                        "pue_target_max": h.pue_target_max,
                        "rack_utilization_target_min": h.rack_utilization_target_min,
                        "lat": h.lat,
                        "lon": h.lon,
                        "source": h.source,
                    }
                    for h in hubs()
                ],
                "clusters": [_cluster_json(s) for s in clusters()],
            }
        )
        return
    hub_table = Table(title="National compute hubs 国家算力枢纽节点 (8)")
    for column in (
        "Hub 枢纽",
        "Name 名称",
        "Class 类型",
        "Clusters 集群",
        "PUE max",
        "Racks min 上架率",
    ):
        hub_table.add_column(column)
    for h in hubs():
        hub_table.add_row(
            h.id,
            f"{h.name_zh} {h.name_en}",
            h.scheme_group,
            ", ".join(h.cluster_ids),
            f"{h.pue_target_max:g}",
            f"{h.rack_utilization_target_min:.0%}",
        )
    out.print(hub_table)
    table = Table(title="National DC clusters 国家数据中心集群 (10) — sites 站点")
    for column in (
        "Site 站点",
        "Name 名称",
        "Hub",
        "Province 省份",
        "E/W 东西",
        "PUE",
        "Grid kgCO2/kWh 电网因子",
        "Green 绿电",
        "Price CNY/kWh 电价",
        "Racks 上架率",
    ):
        table.add_column(column)
    for s in clusters():
        table.add_row(
            s.id,
            s.name_zh,
            s.hub_id or "",
            s.province,
            s.east_west,
            f"{s.pue:g}" + _mark(not s.pue_verified, "*"),
            f"{s.grid_kgco2_per_kwh:.4f} ({s.grid.year} {s.grid.level})",
            f"{s.green_share:.1%}",
            f"{s.price_cny_per_kwh:.2f}" + _mark(s.price.estimate),
            "" if s.rack_utilization is None else f"{s.rack_utilization:.0%}",
        )
    out.print(table)
    out.print(
        "* PUE ceiling is the standard class wording, not seen verbatim / "
        "PUE 上限为同类标准表述，未见原文.\n"
        "est. = estimate, scenario input only / 估计值，仅作情景参数. "
        "Green share: reported where published, else 0 / 绿电占比：有公开数据则用之，否则为 0."
    )


# ---------------------------------------------------------------------------------------------
# devices


@app.command()
@_handles_errors
def devices(as_json: JsonOpt = False) -> None:
    """Device profiles: dense peaks per precision. 设备档案：各精度稠密峰值。"""
    profiles = all_devices()
    if as_json:
        _print_json(
            {
                "devices": [
                    {
                        "id": d.id,
                        "name": d.name,
                        "kind": d.kind.value,
                        "peak_tflops": {p.value: v / 1e12 for p, v in d.peak_flops.items()},
                        "memory_gb": d.memory_gb,
                        "tdp_w": d.tdp_w,
                        "quality": d.quality,
                        "unverified": d.unverified,
                        "source": d.source,
                    }
                    for d in profiles
                ]
            }
        )
        return
    table = Table(title="Device profiles 设备档案 (dense TFLOPS / TOPS 稠密峰值)")
    table.add_column("Device 设备")
    table.add_column("Kind 类型")
    for precision in ("fp64", "fp32", "tf32", "fp16", "bf16", "fp8", "int8"):
        table.add_column(precision, justify="right")
    table.add_column("TDP W", justify="right")
    table.add_column("Quality 质量")
    for d in profiles:
        peaks = {p.value: f"{v / 1e12:g}" for p, v in d.peak_flops.items()}
        table.add_row(
            d.name + _mark(d.unverified, " (unverified)"),
            d.kind.value,
            *(peaks.get(p, "") for p in ("fp64", "fp32", "tf32", "fp16", "bf16", "fp8", "int8")),
            "" if d.tdp_w is None else f"{d.tdp_w:g}",
            d.quality[:48],
        )
    out.print(table)


# ---------------------------------------------------------------------------------------------
# meter


def _fmt_duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.2f} h"
    return f"{seconds / 86400:.2f} d"


def _fmt_ceps(value: float | None) -> str:
    return "unbounded (0 kg)" if value is None else f"{value / 1e15:,.1f}"


RANK_KEYS = ("carbon", "carbon_location", "energy", "cost")


@app.command(name="meter")
@_handles_errors
def meter_command(
    device: Annotated[str, typer.Option(help="Device model, e.g. H800, 'Ascend 910B' / 设备型号")],
    precision: Annotated[str, typer.Option(help="fp64|fp32|tf32|fp16|bf16|fp8|int8 / 精度")],
    work_flop: Annotated[float, typer.Option(help="Work in FLOP at that precision / 计算量")],
    count: Annotated[int, typer.Option(help="Number of devices (CPU: sockets) / 设备数")] = 1,
    workload: Annotated[
        str, typer.Option(help="training|inference|hpc|general / 负载")
    ] = "general",
    site: Annotated[str, typer.Option(help="Cluster id, or 'all' to rank / 站点或 all")] = "all",
    utilisation: Annotated[float, typer.Option(help="Power draw as share of TDP / 功耗占比")] = 1.0,
    efficiency: Annotated[
        float | None, typer.Option(help="Override the workload efficiency (0, 1] / 效率")
    ] = None,
    no_fallback: Annotated[
        bool, typer.Option("--no-fallback", help="Refuse instead of widening precision / 禁止回退")
    ] = False,
    rank_by: Annotated[
        str, typer.Option(help="carbon|carbon_location|energy|cost / 排序")
    ] = "carbon",
    as_json: JsonOpt = False,
) -> None:
    """Duration, energy, carbon and CEPS of a run, at one site or ranked across all.
    估算运行时长、能耗、碳排放与算力碳效。"""
    profile = find_device(device)
    asked = parse_precision(precision)
    klass = parse_workload(workload)
    if rank_by not in RANK_KEYS:
        raise InvalidValue(
            "rank_by", rank_by, f"one of {', '.join(RANK_KEYS)}", f"{', '.join(RANK_KEYS)} 之一"
        )
    sites = list(clusters()) if site.strip().lower() == "all" else [find_site(site)]
    runs = [
        meter(
            profile,
            count,
            asked,
            work_flop,
            klass,
            s,
            utilisation=utilisation,
            efficiency=efficiency,
            allow_fallback=not no_fallback,
        )
        for s in sites
    ]
    rows: list[dict[str, Any]] = []
    for s, run in zip(sites, runs, strict=True):
        rows.append(
            {
                "site": s.id,
                "name_zh": s.name_zh,
                "duration_s": run.duration_s,
                "energy_kwh": run.energy_kwh,
                "carbon_kg": run.carbon_kg,
                "carbon_location_kg": run.carbon_location_kg,
                "ceps": run.ceps,
                "ceps_location": run.ceps_location,
                "electricity_cost_fen": electricity_cost_fen(run.energy_kwh, s.price_cny_per_kwh),
                "price_cny_per_kwh": s.price_cny_per_kwh,
                "price_estimate": s.price.estimate,
                "pue": s.pue,
                "grid_kgco2_per_kwh": s.grid_kgco2_per_kwh,
                "green_share": s.green_share,
            }
        )
    key = {
        "carbon": "carbon_kg",
        "carbon_location": "carbon_location_kg",
        "energy": "energy_kwh",
        "cost": "electricity_cost_fen",
    }[rank_by]
    rows.sort(key=lambda r: (r[key], r["site"]))  # ties broken by site id
    cap = runs[0].capacity
    if as_json:
        _print_json(
            {
                "device": {
                    "id": profile.id,
                    "name": profile.name,
                    "kind": profile.kind.value,
                    "quality": profile.quality,
                    "unverified": profile.unverified,
                },
                "count": count,
                "precision": asked.value,
                "effective_precision": cap.precision.value,
                "fallback": cap.fallback,
                "workload": klass.value,
                "efficiency": cap.efficiency,
                "efficiency_basis": cap.efficiency_basis,
                "utilisation": utilisation,
                "work_flop": work_flop,
                "ranked_by": rank_by,
                "ceps_unit": "FLOP per kg CO2 (" + CEPS_LABEL + ")",
                "results": rows,
            }
        )
        return
    used = cap.precision.value + (
        f" (fallback from {asked.value} / 精度回退)" if cap.fallback else ""
    )
    out.print(
        f"[bold]{count} x {profile.name}[/bold]{_mark(profile.unverified, ' (unverified figures)')}"
        f" · {klass.value} · precision 精度 {used} · peak {cap.peak_flops_per_device / 1e12:g} "
        f"TFLOPS · efficiency 效率 {cap.efficiency:.0%} ({cap.efficiency_basis})"
    )
    table = Table(title=f"Metering 计量 — {work_flop:.3g} FLOP, ranked by {rank_by} 按此排序")
    for column in (
        "Site 站点",
        "Duration 时长",
        "Energy kWh 能耗",
        "Carbon kg 碳排(市场法)",
        "Carbon kg 碳排(位置法)",
        "CEPS PFLOP/kgCO2 (unofficial)",
        "Electricity CNY 电费",
    ):
        table.add_column(column, justify="right" if column[0] != "S" else "left")
    for r in rows:
        table.add_row(
            f"{r['site']} {r['name_zh']}",
            _fmt_duration(r["duration_s"]),
            f"{r['energy_kwh']:,.1f}",
            f"{r['carbon_kg']:,.1f}",
            f"{r['carbon_location_kg']:,.1f}",
            _fmt_ceps(r["ceps"]),
            f"{r['electricity_cost_fen'] / 100:,.2f}" + _mark(r["price_estimate"]),
        )
    out.print(table)
    out.print(
        "Market-based carbon counts contracted green power as zero / 市场法将绿电计为零碳; "
        "location-based uses the grid average / 位置法用电网平均因子. CEPS 算力碳效 is unofficial."
    )


# ---------------------------------------------------------------------------------------------
# indicators


def _indicators_json(ind: Indicators) -> dict[str, Any]:
    return {
        "scope": ind.scope,
        "name_zh": ind.name_zh,
        "name_en": ind.name_en,
        "sites": ind.sites,
        "pools": ind.pools,
        "devices": ind.devices,
        "capacity_fp32_eflops": ind.capacity_fp32_eflops,
        "fp32_excluded_devices": ind.fp32_excluded_devices,
        "capacity_fp16_eflops": ind.capacity_fp16_eflops,
        "fp16_excluded_devices": ind.fp16_excluded_devices,
        "headline_eflops": ind.headline_eflops,
        "intelligent_share": ind.intelligent_share,
        "weighted_pue": ind.weighted_pue,
        "green_share": ind.green_share,
        "ceps": ind.ceps,
        "ceps_location": ind.ceps_location,
        "rack_utilization": ind.rack_utilization,
        "rack_sites_known": ind.rack_sites_known,
        "checks": [
            {
                "metric": c.target.metric,
                "target": f"{c.target.comparator} {c.target.value:g}",
                "description": c.target.description_en,
                "actual": c.actual,
                "status": c.status.value,
                "target_verified": c.target.verified,
                "source": c.target.source,
            }
            for c in ind.checks
        ],
    }


def _fmt_opt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _rack_known(ind: Indicators) -> str:
    """How many sites the rack figure rests on, e.g. ' (1/10 sites)'."""
    return f" ({ind.rack_sites_known}/{ind.sites} sites)" if ind.rack_sites_known else ""


STATUS_STYLE = {
    "met": "[green]met 达标[/green]",
    "not met": "[red]not met 未达标[/red]",
    "unknown": "[yellow]unknown 未知[/yellow]",
}


@app.command()
@_handles_errors
def indicators(
    fleet: Annotated[
        Path | None,
        typer.Option(help="Fleet CSV (pool_id,site_id,device,count[,free,price...]) / 资源池清单"),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """National and per-hub indicators against the 2025 targets. 全国及各枢纽指标对照 2025 目标。"""
    if fleet is None:
        sites, pools = demo_fleet()
        label = DEMO_FLEET_LABEL
    else:
        text = _read_text(fleet, "fleet", "a readable CSV file", "可读取的 CSV 文件")
        sites, pools = parse_fleet(text, fleet.name)
        label = f"fleet from {fleet}"
    nation = national(sites, pools)
    hub_rows = per_hub(sites, pools)
    published = published_progress()
    if as_json:
        _print_json(
            {
                "fleet": label,
                "ceps_unit": "FLOP per kg CO2 (" + CEPS_LABEL + ")",
                "national": _indicators_json(nation),
                "hubs": [_indicators_json(h) for h in hub_rows],
                "published": [
                    {
                        "metric": f.metric,
                        "value": f.value,
                        "unit": f.unit,
                        "as_of": f.as_of,
                        "source": f.source,
                        "quality": f.quality,
                        "target": None
                        if f.target is None
                        else f"{f.target.comparator} {f.target.value:g}",
                        "status": f.status.value,
                        "note": f.note,
                    }
                    for f in published
                ],
            }
        )
        return
    out.print(f"[bold]Fleet 资源:[/bold] {label}")
    table = Table(title="Indicators 指标 (national 全国 and per hub 各枢纽)")
    for column in (
        "Scope 范围",
        "Devices 设备",
        "EFLOPS FP32",
        "EFLOPS FP16",
        "AI share 智算占比",
        "PUE",
        "Green 绿电",
        "CEPS PFLOP/kg (unofficial)",
        "Racks 上架率",
    ):
        table.add_column(column, justify="left" if column.startswith("Scope") else "right")
    for ind in (nation, *hub_rows):
        table.add_row(
            f"{ind.scope} {ind.name_zh}",
            f"{ind.devices:,}",
            f"{ind.capacity_fp32_eflops:.3f}"
            + (f" (-{ind.fp32_excluded_devices})" if ind.fp32_excluded_devices else ""),
            f"{ind.capacity_fp16_eflops:.3f}"
            + (f" (-{ind.fp16_excluded_devices})" if ind.fp16_excluded_devices else ""),
            _fmt_opt(ind.intelligent_share, ".1%"),
            _fmt_opt(ind.weighted_pue, ".3f"),
            _fmt_opt(ind.green_share, ".1%"),
            _fmt_ceps(ind.ceps) if ind.ceps is not None or ind.devices else "n/a",
            _fmt_opt(ind.rack_utilization, ".0%") + _rack_known(ind),
        )
    out.print(table)
    out.print(
        "(-N) = devices without a figure at that precision, left out / 该精度无数据的设备数，未计入"
    )
    checks = Table(title="Against the 2025 targets 对照 2025 目标")
    for column in ("Scope 范围", "Target 目标", "Actual 实际", "Status 状态"):
        checks.add_column(column)
    for ind in (nation, *hub_rows):
        for c in ind.checks:
            checks.add_row(
                ind.scope,
                f"{c.target.description_en} / {c.target.description_zh}",
                _fmt_opt(c.actual, ".3f")
                + (_rack_known(ind) if c.target.metric == "rack_utilization" else ""),
                STATUS_STYLE[c.status.value],
            )
    out.print(checks)
    pub = Table(title="Published national progress 公开的全国进展 (secondary sources 二手来源)")
    for column in (
        "Metric 指标",
        "Value 数值",
        "As of 时间",
        "Target 目标",
        "Status 状态",
        "Note 说明",
    ):
        pub.add_column(column)
    for f in published:
        pub.add_row(
            f.metric,
            f"{f.value:g} {f.unit}",
            f.as_of,
            "" if f.target is None else f"{f.target.comparator} {f.target.value:g}",
            STATUS_STYLE[f.status.value],
            f.note or f.source[:60],
        )
    out.print(pub)


# ---------------------------------------------------------------------------------------------
# schedule

PLACEMENT_ROWS = 40  # rows shown in the table; --json always has all of them


def _policy_from(policy: str, weights: str | None) -> Policy:
    if weights is None:
        return policy_named(policy)
    parsed: dict[str, float] = {}
    for part in weights.split(","):
        name, _, value = part.partition("=")
        try:
            parsed[name.strip()] = float(value)
        except ValueError:
            raise InvalidValue(
                "weights",
                part,
                "name=number pairs, e.g. cost=0.5,carbon=0.5",
                "name=数值，例如 cost=0.5,carbon=0.5",
            ) from None
    return custom_policy(parsed)


@app.command()
@_handles_errors
def schedule(
    problem: Annotated[
        Path | None, typer.Argument(help="PROBLEM.json ('-' for stdin) / 调度问题文件")
    ] = None,
    policy: Annotated[str, typer.Option(help="|".join(POLICIES) + " / 调度策略")] = "balanced",
    weights: Annotated[
        str | None,
        typer.Option(
            help="Custom weights, e.g. cost=0.5,carbon=0.3,latency=0.2 (carbon: market-based; "
            "carbon_location: location-based) / 自定义权重"
        ),
    ] = None,
    solver: Annotated[
        str | None,
        typer.Option(
            help="greedy|flow|optimal|auto: the engine's plan with this solver; by default the "
            "decision step (greedy) / 求解器，默认使用统一决策步骤"
        ),
    ] = None,
    time_limit: Annotated[
        float, typer.Option(help="Optimal and flow solver limit, s / 求解时限")
    ] = 10.0,
    generate: Annotated[
        int | None, typer.Option(help="Print a generated problem of N tasks / 生成 N 个任务的问题")
    ] = None,
    pools: Annotated[int, typer.Option(help="Pools in a generated problem / 资源池数")] = 100,
    seed: Annotated[int, typer.Option(help="Seed of the generator / 随机种子")] = 0,
    as_json: JsonOpt = False,
) -> None:
    """Place the tasks of PROBLEM.json on its pools, or generate a problem.
    按策略把任务放到资源池上，或生成一个调度问题。"""
    if generate is not None:
        from suanli.scheduler.generate import generate_problem

        checks.count("generate", generate)
        checks.count("pools", pools)
        _print_json(generate_problem(generate, pools, seed))
        return
    if problem is None:
        raise InvalidValue(
            "PROBLEM",
            None,
            "a PROBLEM.json path, '-' for stdin, or --generate N",
            "PROBLEM.json 路径、'-'（标准输入）或 --generate N",
        )
    if str(problem) == "-":
        text = sys.stdin.read()
    else:
        text = _read_text(problem, "PROBLEM", "a readable JSON file", "可读取的 JSON 文件")
    chosen = _policy_from(policy, weights)
    parsed = load_problem(text)
    started = time.perf_counter()
    decisions = None
    if solver is None:  # the one decision step, as the live pass, quotes and the twin decide
        decisions = decide_problem(parsed, chosen)
        plan = decisions_plan(decisions, chosen.name)
    else:  # the engine's plan with the solver asked for (to compare solvers)
        plan = place(
            parsed.tasks,
            parsed.snapshot,
            chosen,
            parsed.now_s,
            solver=solver,
            time_limit_s=time_limit,
        )
    plan = replace(plan, solver=replace(plan.solver, seconds=time.perf_counter() - started))
    if as_json:
        _print_json(
            plan_document(plan) if decisions is None else decisions_document(decisions, plan)
        )
        return
    table = Table(
        title=f"Plan 调度方案 — policy 策略 {plan.policy}, solver 求解器 {plan.solver.name}"
    )
    for column in (
        "Task 任务",
        "Pool 资源池",
        "Site 站点",
        "Start 开始",
        "Duration 时长",
        "Cost CNY 费用",
        "Carbon kg 碳排",
        "RTT ms 时延",
        "Runner-up 次优",
        "Waited 等待",
    ):
        table.add_column(column)
    for pl in plan.placements[:PLACEMENT_ROWS]:
        b = pl.breakdown
        table.add_row(
            pl.task,
            pl.pool,
            pl.site,
            f"{pl.start_s:,.0f} s",
            _fmt_duration(b.duration_s),
            f"{b.cost_fen / 100:,.2f}",
            f"{b.carbon_kg:,.2f}",
            f"{b.latency_ms:.1f}",
            pl.runner_up or "—",
            ""
            if not pl.waited_s
            else f"{pl.waited_s / 3600:.0f} h (−{pl.saved_fen / 100:,.2f} CNY)",
        )
    out.print(table)
    hidden = len(plan.placements) - PLACEMENT_ROWS
    if hidden > 0:
        out.print(f"… and {hidden} more placements (use --json) / 另有 {hidden} 条，见 --json")
    for u in plan.unplaced[:PLACEMENT_ROWS]:
        out.print(f"[yellow]unplaced 未放置[/yellow] {u.task}: {u.sentence}", markup=True)
    bound = plan.solver.lower_bound
    out.print(
        f"placed 已放置 {len(plan.placements)}, unplaced 未放置 {len(plan.unplaced)} · "
        f"cost 费用 {plan.cost_fen / 100:,.2f} CNY · energy 能耗 {plan.energy_kwh:,.1f} kWh · "
        f"carbon 碳排 {plan.carbon_kg:,.1f} kg market-based 市场法, "
        f"{plan.carbon_location_kg:,.1f} kg location-based 位置法 · "
        f"objective 目标值 {plan.solver.objective:,.4g}"
        + (
            ""
            if bound is None
            else f" (LP bound 下界 {bound:,.4g}, "
            f"gap 差距 {_gap_text(plan.solver.objective, bound)})"
        )
        + f" · {plan.solver.seconds or 0:.2f} s"
    )


def _gap_text(objective: float, bound: float) -> str:
    """How far the objective is above the bound, as a percentage of the bound."""
    if bound <= 0:
        return "n/a"
    return f"{max(0.0, objective / bound - 1):.3%}"


# ---------------------------------------------------------------------------------------------
# latency


@app.command()
@_handles_errors
def latency(
    origin: Annotated[str, typer.Argument(help="Place or cluster / 地点或集群, e.g. 上海")],
    destination: Annotated[
        str, typer.Argument(help="Place or cluster / 地点或集群, e.g. ZHONGWEI")
    ],
    as_json: JsonOpt = False,
) -> None:
    """Latency between two places (matrix or great-circle estimate). 两地之间的时延。"""
    found = latency_between(origin, destination)
    if as_json:
        _print_json(
            {
                "from": origin,
                "to": destination,
                "one_way_ms": found.one_way_ms,
                "rtt_ms": found.rtt_ms,
                "distance_km": found.distance_km,
                "measured": found.measured,
                "basis": found.basis,
            }
        )
        return
    out.print(
        f"{origin} → {destination}: one-way 单向 {found.one_way_ms:.2f} ms, RTT 往返 "
        f"{found.rtt_ms:.2f} ms, {found.distance_km:,.0f} km — {found.basis}"
    )


@app.command()
def version() -> None:
    """Print the version. 显示版本。"""
    out.print(f"suanli {__version__}")


cli_platform.register(app)
cli_sim.register(app, _handles_errors)
cli_forecast.register(app, _handles_errors)
cli_carbon.register(app, _handles_errors)
twin_worker.register(app, _handles_errors)


def main() -> None:
    """Entry point: usage errors (bad option types, missing options) also become one line."""
    try:
        result = app(standalone_mode=False)
    except TyperException as error:
        if isinstance(error, typer.Abort):
            err.print("aborted / 已中止", markup=False)
            raise SystemExit(130) from None
        usage = getattr(error, "format_message", None)
        if usage is None:
            raise
        if not usage():  # `suanli` alone: the help was printed, nothing else to say
            raise SystemExit(getattr(error, "exit_code", 2)) from None
        err.print(
            f"error: {usage()} (see --help) / 参数错误：{usage()}（见 --help）",
            markup=False,
            highlight=False,
        )
        raise SystemExit(getattr(error, "exit_code", 2)) from None
    raise SystemExit(result if isinstance(result, int) else 0)


if __name__ == "__main__":
    main()
