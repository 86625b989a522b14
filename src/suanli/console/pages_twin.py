"""Digital-twin pages: pick a shipped trace and policies, queue a replay (the same `suanli.sim`
code as `suanli sim run --compare`), follow its progress, read the comparison.

Nothing heavy runs in the web process: the page queues the run in the store
(`services.twinruns.queue_run`, a `twin_runs` row) and a worker process (`suanli twin-worker`,
one started by `suanli serve` unless `--twin-workers 0`) claims it, replays it and writes its
progress and results there; the pages read them back (htmx polls the progress fragment). A
principal sees its own runs, the operator everyone's; one principal has at most
`twinruns.MAX_UNFINISHED` runs queued or running (429 beyond). A run whose worker died is shown
FAILED with the reason once a worker notices its heartbeat stopped (see `twinruns.reap`).
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from fastapi import Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from suanli.console import i18n
from suanli.console.web import PREFIX, Console, problem
from suanli.errors import SuanliError
from suanli.scheduler import POLICIES
from suanli.services import readmodels, twinruns
from suanli.services.core import Actor, NotFound
from suanli.services.readmodels import Viewer
from suanli.services.twinruns import MAX_LIMIT, TRACES, TwinRequest, TwinRun

DEFAULT_POLICIES = ("nearest", "cost", "green", "balanced")
DEFAULT_LIMIT = 500  # jobs: an openb run of four policies takes a few seconds
DEFAULT_SCALE = 0.004  # suanli.sim.twin.DEFAULT_SCALE (GPUs per published rack, an ESTIMATE)

MESSAGES: dict[str, tuple[str, str]] = {  # key: (English, 中文)
    "twin.intro": (
        "Replay a real workload trace on the national network under several scheduling policies "
        "and compare cost, carbon, latency and waiting, with the same placement engine as the "
        "live platform.",
        "在全国算力网络上以多种调度策略回放真实负载轨迹，对比费用、碳排放、时延与等待时间；"
        "使用与线上平台相同的调度引擎。",
    ),
    "twin.new": ("New comparison", "新建对比"),
    "twin.trace": ("Trace", "负载轨迹"),
    "twin.trace.openb": (
        "openb — Alibaba GPU cluster pods (2023)",
        "openb — 阿里巴巴 GPU 集群作业（2023）",
    ),
    "twin.trace.philly": (
        "philly — Microsoft Philly training runtimes (2017)",
        "philly — 微软 Philly 训练作业时长（2017）",
    ),
    "twin.trace.azure-llm": (
        "azure-llm — Azure LLM inference requests (2023)",
        "azure-llm — Azure 大模型推理请求（2023）",
    ),
    "twin.trace.dlrm": (
        "dlrm — Alibaba DLRM serving instances (2025; slow: about a minute per policy "
        "for 500 jobs)",
        "dlrm — 阿里巴巴 DLRM 推理服务实例（2025；较慢：500 个作业每个策略约 1 分钟）",
    ),
    "twin.policies": ("Policies to compare", "对比的调度策略"),
    "twin.policy.nearest": (
        "nearest — the closest site (today's practice, the baseline)",
        "nearest — 就近调度（现行做法，作为基线）",
    ),
    "twin.policy.cost": ("cost — the cheapest option", "cost — 费用最低"),
    "twin.policy.green": (
        "green — the lowest carbon, market-based (declared green power counted)",
        "green — 碳排放最低（市场法：计入申报的绿电）",
    ),
    "twin.policy.green-location": (
        "green-location — the lowest carbon, location-based (the grid's intensity alone)",
        "green-location — 碳排放最低（位置法：仅按电网排放因子）",
    ),
    "twin.policy.latency": ("latency — the lowest network latency", "latency — 网络时延最低"),
    "twin.policy.balanced": (
        "balanced — cost, carbon, latency, load and reputation weighed",
        "balanced — 综合费用、碳排、时延、负载与信誉",
    ),
    "twin.limit": ("Jobs to replay (the first N)", "回放作业数（前 N 个）"),
    "twin.limit_help": (
        "Small runs take seconds; at most {max}.",
        "小规模运行只需几秒；最多 {max} 个。",
    ),
    "twin.seed": ("Seed (job origins)", "随机种子（作业来源地）"),
    "twin.scale": ("Scale (GPUs per published rack)", "规模（每个公开机架折合 GPU 数）"),
    "twin.scale_help": (
        "An estimate; 0.004 sizes the network so that openb meets some contention.",
        "估计值；0.004 使 openb 轨迹出现一定资源竞争。",
    ),
    "twin.run": ("Run", "运行"),
    "twin.runs": ("Past runs", "历史运行"),
    "twin.none": ("No runs yet.", "暂无运行记录。"),
    "twin.started": ("Started", "开始时间"),
    "twin.by": ("By", "发起人"),
    "twin.state": ("State", "状态"),
    "twin.jobs": ("Jobs", "作业数"),
    "twin.open": ("Open", "查看"),
    "twin.state.queued": ("queued", "排队中"),
    "twin.state.running": ("running", "运行中"),
    "twin.state.done": ("done", "已完成"),
    "twin.state.failed": ("failed", "失败"),
    "twin.busy": (
        "You already have {n} runs queued or running; wait for one to finish and try again.",
        "您已有 {n} 个运行在排队或运行；请等待其中一个结束后再试。",
    ),
    "twin.waiting": ("Waiting for a twin worker…", "正在等待孪生工作进程…"),
    "twin.bad_trace": ("Pick one of the shipped traces.", "请选择一个内置负载轨迹。"),
    "twin.bad_policies": ("Pick at least one policy.", "请至少选择一个调度策略。"),
    "twin.bad_limit": (
        "The job count must be a whole number from 1 to {max}.",
        "作业数须为 1 到 {max} 之间的整数。",
    ),
    "twin.bad_seed": ("The seed must be a whole number ≥ 0.", "随机种子须为不小于 0 的整数。"),
    "twin.bad_scale": (
        "The scale must be a number above 0 and at most 1.",
        "规模须为大于 0 且不超过 1 的数。",
    ),
    "twin.run_title": ("Twin run", "孪生运行"),
    "twin.progress": ("Progress", "进度"),
    "twin.progress_policies": (
        "Policy {done} of {total} done",
        "已完成 {done}/{total} 个策略",
    ),
    "twin.progress_current": ("now replaying: {policy}", "正在回放：{policy}"),
    "twin.progress_jobs": ("{done} of {total} jobs replayed", "已回放 {done}/{total} 个作业"),
    "twin.progress_preparing": ("Loading the trace and the network…", "正在加载轨迹与网络…"),
    "twin.failed": ("The run failed:", "运行失败："),
    "twin.settings": ("Settings", "参数"),
    "twin.dropped": ("Dropped from the trace", "轨迹中被剔除"),
    "twin.wall": ("Run time", "运行耗时"),
    "twin.seconds": ("{s} s", "{s} 秒"),
    "twin.report": ("Policies compared", "策略对比"),
    "twin.col.policy": ("Policy", "策略"),
    "twin.col.completed": ("Completed", "完成"),
    "twin.col.rejected": ("Rejected", "拒绝"),
    "twin.col.cost": ("Cost", "费用"),
    "twin.col.energy": ("Energy (kWh)", "能耗（千瓦时）"),
    "twin.col.carbon": ("Carbon (kg CO₂)", "碳排放（千克 CO₂）"),
    "twin.col.ceps": ("Work per kg CO₂", "单位碳排算力"),
    "twin.col.latency": ("Mean latency (ms)", "平均时延（毫秒）"),
    "twin.col.wait": ("Wait p50 / p99 (s)", "等待 p50 / p99（秒）"),
    "twin.col.sla": ("SLA violations", "SLA 违约"),
    "twin.col.west": ("GPU-hours in the west", "西部承载 GPU 时占比"),
    "twin.col.utilisation": ("Mean utilisation", "平均利用率"),
    "twin.col.data": ("Data moved (GB)", "数据迁移（GB）"),
    "twin.est": ("est.", "估"),
    "twin.est_note": (
        "est. = rests on an estimate (see the assumptions below).",
        "估 = 基于估计值（见下方假设）。",
    ),
    "twin.ceps_note": (
        "Work per kg CO₂: reference device-seconds per kg CO₂ (unofficial).",
        "单位碳排算力：每千克 CO₂ 的参考设备秒数（非官方指标）。",
    ),
    "twin.utilisation_note": (
        "Mean utilisation: device-hours run ÷ (devices × the run's span), over the sites used.",
        "平均利用率：所用站点的设备小时数 ÷（设备数 × 运行时长）。",
    ),
    "twin.tradeoffs": ("Against the nearest-site baseline", "相对就近调度基线"),
    "twin.tradeoff": (
        "{policy}: cost {cost}, carbon {carbon}, mean latency {latency} ms (nearest {base} ms), "
        "GPU-hours in the west {west} (nearest {base_west}).",
        "{policy}：费用 {cost}，碳排放 {carbon}，平均时延 {latency} 毫秒（就近 {base} 毫秒），"
        "西部承载 GPU 时 {west}（就近 {base_west}）。",
    ),
    "twin.reasons": ("Why jobs were rejected", "作业被拒原因"),
    "twin.chart": ("Compared at a glance", "对比图"),
    "twin.chart_help": (
        "Each measure as a percentage of the highest policy (lower is better); the table above "
        "has the exact figures.",
        "各指标以最高策略为 100% 的百分比表示（越低越好）；精确数值见上表。",
    ),
    "twin.chart_alt": (
        "Bar chart of cost, carbon, energy, mean latency and p99 wait per policy, each as a "
        "percentage of the highest; the same figures are in the table above.",
        "柱状图：各策略的费用、碳排放、能耗、平均时延与 p99 等待，以最高者为 100%；数值同上表。",
    ),
    "twin.busy_chart": ("Busy devices over time", "设备占用随时间变化"),
    "twin.busy_alt": (
        "Line chart of busy devices over the replayed hours, one line per policy; peaks are "
        "listed below it.",
        "折线图：回放期间各策略的占用设备数；峰值列于图下。",
    ),
    "twin.peak": ("{policy}: peak {busy} busy devices", "{policy}：峰值 {busy} 台设备占用"),
    "twin.hours": ("hours", "小时"),
    "twin.measure.cost": ("Cost", "费用"),
    "twin.measure.carbon": ("Carbon", "碳排放"),
    "twin.measure.energy": ("Energy", "能耗"),
    "twin.measure.latency": ("Mean latency", "平均时延"),
    "twin.measure.wait": ("Wait p99", "等待 p99"),
    "twin.assumptions": ("Assumptions (estimates)", "假设（估计值）"),
    "twin.assumption.0": (
        "Pool sizes: published rack counts (hub_metrics.csv) where a cluster has one, their "
        "median elsewhere, x the scale (GPUs per rack) — an ESTIMATE; device mix of the Alibaba "
        "spot-GPU and openb fleets; generic CPU cores 8 per GPU (ESTIMATE).",
        "资源池规模：有公开机架数（hub_metrics.csv）的集群按其计，其余取中位数，再乘以规模"
        "（每机架 GPU 数）——估计值；设备构成取阿里巴巴 spot-GPU 与 openb 机群；"
        "每 GPU 配 8 个通用 CPU 核（估计值）。",
    ),
    "twin.assumption.1": (
        "Prices: the problem generator's capital + energy estimate per device-hour (ESTIMATE); "
        "electricity time-of-use multipliers from tou_tariffs.csv.",
        "价格：问题生成器按设备小时估算的资本 + 能源成本（估计值）；电价分时系数取自 "
        "tou_tariffs.csv。",
    ),
    "twin.assumption.2": (
        "Carbon: annual MEE/NBS factors with a synthetic daily shape (western sites dip up to "
        "25% at solar noon, mean preserved); no hourly provincial carbon data is public here.",
        "碳排放：生态环境部/国家统计局年度排放因子，叠加合成的日内曲线（西部站点正午最多下降 "
        "25%，日均不变）；此处无公开的分省逐时碳数据。",
    ),
    "twin.assumption.3": (
        "Trace: durations as measured on the reference device (T4 for GPUs, a generic core for "
        "CPUs); origins drawn 80% from demand-hub cities (ESTIMATE); QoS LS -> standard tier.",
        "轨迹：时长按参考设备计（GPU 为 T4，CPU 为通用核）；来源地 80% 取自需求枢纽城市"
        "（估计值）；QoS LS 对应标准时延等级。",
    ),
    "twin.assumption.4": (
        "Latency: catalog matrix and great-circle estimates (DERIVED); tiers 5 / 20 ms RTT.",
        "时延：目录时延矩阵与大圆距离估算（推导值）；等级阈值 5 / 20 毫秒往返。",
    ),
}
i18n.MESSAGES.update(MESSAGES)


def _shown(run: TwinRun) -> dict[str, Any]:
    """What the twin templates read of a run."""
    return {
        "id": run.id,
        "owner_name": run.owner_name,
        "trace": run.request.trace,
        "policies": list(run.request.policies),
        "limit": run.request.limit,
        "seed": run.request.seed,
        "scale": run.request.scale,
        "state": run.state.lower(),
        "created_at": run.created_at,
        "jobs": run.jobs,
        "dropped": run.dropped,
        "note": run.note,
        "wall_s": run.wall_s,
        "progress": run.step,
        "results": run.results,
        "error": run.error,
        "ended": run.ended,
    }


def _mean_utilisation(metrics: dict[str, Any]) -> float:
    used = [u for u in metrics.get("utilisation", {}).values() if u > 0]
    return sum(used) / len(used) if used else 0.0


def _west_gpu(metrics: dict[str, Any]) -> float:
    """The share of GPU-hours run in the west (runs stored before GPU-hours and CPU core-hours
    were told apart carry `west_share`, their mix of both)."""
    return float(metrics.get("west_share_gpu_hours", metrics.get("west_share", 0.0)))


def _report(run: dict[str, Any], language: str) -> dict[str, Any]:
    """What the run page shows from the results: table rows, trade-offs, chart data."""
    results = run.get("results") or {}
    names = [p for p in run["policies"] if p in results]
    rows = []
    for name in names:
        m = results[name]["metrics"]
        rows.append(
            {
                "policy": name,
                "m": m,
                "sla": sum((m.get("sla_violations") or {}).values()),
                "utilisation": _mean_utilisation(m),
                "west_gpu": _west_gpu(m),
            }
        )
    measures = [
        ("cost", "cost_fen"),
        ("carbon", "carbon_kg"),
        ("energy", "energy_kwh"),
        ("latency", "latency_ms_mean"),
        ("wait", "wait_s_p99"),
    ]
    bars = []
    for name in names:
        m = results[name]["metrics"]
        values = []
        for _, key in measures:
            top = max(float(results[p]["metrics"][key]) for p in names) or 1.0
            values.append(round(float(m[key]) / top * 100, 1))
        bars.append({"name": name, "values": values})
    tradeoffs = []
    if "nearest" in results:
        base = results["nearest"]["metrics"]
        for name in names:
            if name == "nearest":
                continue
            m = results[name]["metrics"]

            def change(key: str, m: dict[str, Any] = m) -> str:
                return f"{(m[key] - base[key]) / base[key]:+.1%}" if base[key] else "—"

            tradeoffs.append(
                i18n.translate("twin.tradeoff", language).format(
                    policy=name,
                    cost=change("cost_fen"),
                    carbon=change("carbon_kg"),
                    latency=f"{m['latency_ms_mean']:.1f}",
                    base=f"{base['latency_ms_mean']:.1f}",
                    west=f"{_west_gpu(m):.0%}",
                    base_west=f"{_west_gpu(base):.0%}",
                )
            )
    peaks = [(name, max((p[1] for p in results[name]["timeline"]), default=0.0)) for name in names]
    return {
        "rows": rows,
        "tradeoffs": tradeoffs,
        "chart": {
            "measures": [i18n.translate(f"twin.measure.{k}", language) for k, _ in measures],
            "bars": bars,
            "lines": [{"name": n, "data": results[n]["timeline"]} for n in names],
            "hours": i18n.translate("twin.hours", language),
        },
        "peaks": peaks,
        "reasons": {
            name: results[name]["metrics"].get("rejected_reasons") or {}
            for name in names
            if results[name]["metrics"].get("rejected_reasons")
        },
    }


def install(console: Console) -> None:
    router = console.router

    def listed(session: Session, actor: Actor) -> tuple[Viewer, list[dict[str, Any]]]:
        return readmodels.viewer(actor), [_shown(r) for r in twinruns.list_runs(session, actor)]

    def form_page(
        request: Request,
        who: Viewer,
        runs: list[dict[str, Any]],
        status: int = 200,
        error: str | None = None,
        chosen: dict[str, Any] | None = None,
    ) -> HTMLResponse:
        return console.page(
            request,
            "twin.html",
            who,
            status=status,
            traces=TRACES,
            policies=list(POLICIES),
            runs=runs,
            error=error,
            chosen=chosen
            or {
                "trace": "openb",
                "policies": list(DEFAULT_POLICIES),
                "limit": DEFAULT_LIMIT,
                "seed": 0,
                "scale": DEFAULT_SCALE,
            },
            max_limit=MAX_LIMIT,
        )

    @router.get("/twin", response_class=HTMLResponse)
    async def twin(request: Request) -> Response:
        who, runs = await console.act(request, False, listed)
        return form_page(request, who, runs)

    @router.post("/twin/runs", response_class=HTMLResponse)
    async def start(
        request: Request,
        trace: str = Form("openb", max_length=40),
        policies: Annotated[list[str] | None, Form()] = None,
        limit: str = Form(str(DEFAULT_LIMIT), max_length=12),
        seed: str = Form("0", max_length=12),
        scale: str = Form(str(DEFAULT_SCALE), max_length=20),
    ) -> Response:
        language = console.language(request)
        chosen_policies = [p for p in dict.fromkeys(policies or []) if p in POLICIES]
        chosen: dict[str, Any] = {
            "trace": trace,
            "policies": chosen_policies,
            "limit": limit,
            "seed": seed,
            "scale": scale,
        }
        error = None
        try:
            limit_n = int(limit)
            if not 1 <= limit_n <= MAX_LIMIT:
                raise ValueError
        except ValueError:
            error = i18n.translate("twin.bad_limit", language).format(max=MAX_LIMIT)
        try:
            seed_n = int(seed)
            if seed_n < 0:
                raise ValueError
        except ValueError:
            error = i18n.translate("twin.bad_seed", language)
        try:
            scale_x = float(scale)
            if not (math.isfinite(scale_x) and 0 < scale_x <= 1):
                raise ValueError
        except ValueError:
            error = i18n.translate("twin.bad_scale", language)
        if not chosen_policies:
            error = i18n.translate("twin.bad_policies", language)
        if trace not in TRACES:
            error = i18n.translate("twin.bad_trace", language)
        if error is not None:
            who, runs = await console.act(request, False, listed)
            return form_page(request, who, runs, 400, error, chosen)
        wanted = TwinRequest(trace, tuple(chosen_policies), limit_n, seed_n, scale_x)
        try:
            run = await console.act(
                request, True, lambda session, who: twinruns.queue_run(session, who, wanted)
            )
        except twinruns.TooManyRuns as exc:
            who, runs = await console.act(request, False, listed)
            busy = i18n.translate("twin.busy", language).format(n=exc.unfinished)
            return form_page(request, who, runs, 429, busy, chosen)
        except SuanliError as exc:
            return await problem(console, request, exc)
        return RedirectResponse(f"{PREFIX}/twin/runs/{run.id}", status_code=303)

    async def found_run(request: Request, run_id: str) -> tuple[Viewer, dict[str, Any] | None]:
        def work(session: Session, actor: Actor) -> tuple[Viewer, dict[str, Any] | None]:
            try:
                run = twinruns.get_run(session, actor, run_id)
            except NotFound:
                return readmodels.viewer(actor), None
            return readmodels.viewer(actor), _shown(run)

        return await console.act(request, False, work)

    def not_found(request: Request, who: Viewer) -> HTMLResponse:
        message = i18n.translate("error.not_found", console.language(request))
        return console.page(request, "error.html", who, status=404, message=message)

    def context(request: Request, run: dict[str, Any]) -> dict[str, Any]:
        language = console.language(request)
        return {
            "run": run,
            "ended": run["ended"],
            "report": _report(run, language) if run.get("results") else None,
            "error_text": (run.get("error") or ["", ""])[1 if language == "zh" else 0],
        }

    @router.get("/twin/runs/{run_id}", response_class=HTMLResponse)
    async def run_page(request: Request, run_id: str) -> Response:
        who, run = await found_run(request, run_id)
        if run is None:
            return not_found(request, who)
        return console.page(request, "twin_run.html", who, **context(request, run))

    @router.get("/twin/runs/{run_id}/progress", response_class=HTMLResponse)
    async def progress(request: Request, run_id: str) -> Response:
        """The progress fragment htmx polls; once the run has ended it asks for a reload."""
        who, run = await found_run(request, run_id)
        if run is None:
            return not_found(request, who)
        response = console.page(request, "twin_progress.html", who, **context(request, run))
        if run["ended"]:
            response.headers["HX-Refresh"] = "true"
        return response
