"""The twin's HTML report: one self-contained file a planner reads offline, in any browser.

`render` writes the page: the policy comparison table (policies as columns, so that it fits a
desktop screen; units in every row header), the trade-offs against `nearest`, charts drawn by
Apache ECharts — busy GPUs and CPU cores, queue length, cumulative cost (CNY) and cumulative
carbon (market- and location-based, kg) over time per policy, GPU-hours, CPU core-hours and
utilisation by hub — one map per policy on the China outline, and the assumptions.

The page loads nothing: ECharts (the console's copy, `console/static/vendor/echarts.min.js`,
installed by scripts/console-assets.sh) and the China GeoJSON are inlined, with the chart data
as JSON in `<script type="application/json" id="report-data">`, which the page's own script
(`report.js` beside this module) reads. A missing vendor file raises `MissingAsset`.

Invariants of the chart data (`chart_data`): every series keeps at most SERIES_POINTS points
and the timeline's last point; the last point of each cumulative series is the run's total in
`metrics` (the table's figure): the timeline's last cumulative values are those totals up to
the order of a float sum, and where they are not, a point at the run's end is appended with
the totals and named in `closed_at_end`.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from suanli.catalog import hubs
from suanli.errors import MissingAsset
from suanli.sim.timeline import thin
from suanli.sim.twin import Network, RunResult

SERIES_POINTS = 1500  # the most points a chart series keeps (the last always among them)
DAYS_AFTER_H = 96.0  # runs longer than this are charted in days, shorter ones in hours
VENDOR = Path(__file__).resolve().parents[1] / "console" / "static" / "vendor"
INSTALLER = "scripts/console-assets.sh"
SCRIPT = Path(__file__).resolve().with_name("report.js")

ASSUMPTIONS = [
    "Pool sizes: published rack counts (hub_metrics.csv) where a cluster has one, their median "
    "elsewhere, x the scale (GPUs per rack) — an ESTIMATE; device mix of the Alibaba spot-GPU "
    "and openb fleets; generic CPU cores 8 per GPU (ESTIMATE).",
    "Prices: the problem generator's capital + energy estimate per device-hour (ESTIMATE); "
    "electricity time-of-use multipliers from tou_tariffs.csv.",
    "Carbon: annual MEE/NBS factors with a SYNTHETIC daily shape (western sites dip up to 25% "
    "at solar noon, mean preserved) — an ESTIMATE; no hourly provincial carbon data is public "
    "here.",
    "Trace: durations read as durations on the platform's reference device (A100 SXM4 for "
    "GPUs, a generic core for CPUs), as resources.duration_s is on the live platform — an "
    "ESTIMATE for traces measured on other devices; origins drawn 80% from demand-hub "
    "cities (ESTIMATE); QoS LS -> standard tier.",
    "Latency: catalog matrix and great-circle estimates (DERIVED); tiers 5 / 20 ms RTT.",
    "Charts: the values recorded at each scheduling tick, held until the next tick (the twin "
    "skips ticks while nothing can change), thinned to at most 1,500 points a series (every "
    "n-th tick and the last one); utilisation is device-hours run over the devices there "
    "(GPUs and CPU cores counted alike) x the run's span.",
]

# (chart key, timeline key, factor): the timeline's value x factor is the charted value
TIMELINE_SERIES = (
    ("busy_gpus", "busy_gpus", 1.0),
    ("busy_cpu_cores", "busy_cpu_cores", 1.0),
    ("queued", "queued", 1.0),
    ("cost_cny", "cost_fen", 0.01),
    ("carbon_kg", "carbon_kg", 1.0),
    ("carbon_location_kg", "carbon_location_kg", 1.0),
)


def cumulative_totals(result: RunResult) -> dict[str, float]:
    """The run's totals, as the table shows them: cost in CNY, carbon in kg (both kinds)."""
    m = result.metrics
    return {
        "cost_cny": m["cost_fen"] / 100,
        "carbon_kg": float(m["carbon_kg"]),
        "carbon_location_kg": float(m["carbon_location_kg"]),
    }


def _run_end_s(result: RunResult) -> float:
    ends = [o.end_s for o in result.outcomes if o.end_s is not None]
    last_tick = result.timeline[-1]["t"] if result.timeline else 0.0
    return max([last_tick, *ends])


def _number(value: float) -> float | int:
    """A charted value: whole numbers as integers, others to the gram / fen (3 decimals)."""
    return int(value) if float(value).is_integer() else round(value, 3)


def _series(result: RunResult, per_s: float) -> tuple[dict[str, list[list[float]]], list[str]]:
    """The run's chart series ([time in the chart's unit, value]) and the cumulative ones that
    needed a point at the run's end to reach the run's totals."""
    points = thin(result.timeline, SERIES_POINTS)
    totals = cumulative_totals(result)
    series: dict[str, list[list[float]]] = {}
    closed: list[str] = []
    for key, source, factor in TIMELINE_SERIES:
        if any(source not in p for p in points):  # an older stored timeline: no such series
            continue
        series[key] = [[round(p["t"] / per_s, 4), _number(p[source] * factor)] for p in points]
        if key not in totals:
            continue
        total, line = totals[key], series[key]
        last = points[-1][source] * factor if points else None  # before rounding
        if last is not None and math.isclose(last, total, rel_tol=1e-9, abs_tol=1e-9):
            line[-1][1] = total  # the same sum, added in another order
        elif line or total:
            line.append([round(_run_end_s(result) / per_s, 4), total])
            closed.append(key)
    return series, closed


@dataclass(frozen=True)
class Group:
    """Where a site belongs in the per-hub breakdown: its hub, or its own city's DC."""

    id: str
    name_en: str
    name_zh: str


def _groups(network: Network) -> dict[str, Group]:
    """Each site's group: its catalog hub; a site outside every hub is a demand-city DC."""
    known = {h.id: Group(h.id, h.name_en, h.name_zh) for h in hubs()}
    return {
        site.id: known.get(site.hub_id or "")
        or Group(site.id, f"demand-city DC {site.name_en}", f"需求城市数据中心 {site.name_zh}")
        for site in network.sites.values()
    }


def _hours_by_site(result: RunResult) -> dict[str, dict[str, float]]:
    """GPU-hours and CPU core-hours each site ran (never added together)."""
    hours: dict[str, dict[str, float]] = {}
    for o in result.outcomes:
        if o.state != "completed" or o.site is None or o.start_s is None or o.end_s is None:
            continue
        kind = "cpu_core_hours" if o.job.device_kind.lower() == "cpu" else "gpu_hours"
        at = hours.setdefault(o.site, {"gpu_hours": 0.0, "cpu_core_hours": 0.0})
        at[kind] += (o.end_s - o.start_s) * o.job.devices / 3600
    return hours


def _by_hub(network: Network, results: list[RunResult]) -> list[dict[str, Any]]:
    """Per group: GPU-hours, CPU core-hours and utilisation (the sites' shares weighted by
    their devices) for each policy, groups in the catalog's hub order."""
    group_of = _groups(network)
    devices: dict[str, int] = {}
    for pool in network.pools:
        devices[pool.site_id] = devices.get(pool.site_id, 0) + pool.count
    order = list(dict.fromkeys(group_of[s].id for s in network.sites))
    hours_of = {r.policy: _hours_by_site(r) for r in results}
    rows = []
    for gid in order:
        group = next(g for g in group_of.values() if g.id == gid)
        members = [s for s in network.sites if group_of[s].id == gid]
        row: dict[str, Any] = {
            "id": gid,
            "name": f"{group.name_zh} {gid}",
            "title": _group_title(group),
            "sites": members,
            "gpu_hours": {},
            "cpu_core_hours": {},
            "utilisation": {},
        }
        capacity = sum(devices.get(s, 0) for s in members)
        for r in results:
            hours = hours_of[r.policy]
            share = r.metrics.get("utilisation", {})
            row["gpu_hours"][r.policy] = round(
                sum(hours.get(s, {}).get("gpu_hours", 0.0) for s in members), 3
            )
            row["cpu_core_hours"][r.policy] = round(
                sum(hours.get(s, {}).get("cpu_core_hours", 0.0) for s in members), 3
            )
            used = sum(share.get(s, 0.0) * devices.get(s, 0) for s in members)
            row["utilisation"][r.policy] = used / capacity if capacity else 0.0
        rows.append(row)
    return rows


def _sites(network: Network, result: RunResult) -> list[dict[str, Any]]:
    group_of = _groups(network)
    hours = _hours_by_site(result)
    points = []
    for site in network.sites.values():
        ran = hours.get(site.id, {"gpu_hours": 0.0, "cpu_core_hours": 0.0})
        points.append(
            {
                "id": site.id,
                "name": f"{site.name_en} / {site.name_zh}",
                "hub": _group_title(group_of[site.id]),
                "ew": site.east_west,
                "lon": site.lon,
                "lat": site.lat,
                "gpu_hours": round(ran["gpu_hours"], 3),
                "cpu_core_hours": round(ran["cpu_core_hours"], 3),
                "device_hours": round(ran["gpu_hours"] + ran["cpu_core_hours"], 3),
            }
        )
    return points


def _group_title(group: Group) -> str:
    return f"{group.name_en} / {group.name_zh}"


def chart_data(trace_name: str, network: Network, results: list[RunResult]) -> dict[str, Any]:
    """What the page's script draws (and what tests read back), as plain JSON values."""
    end_s = max((_run_end_s(r) for r in results), default=0.0)
    in_days = end_s / 3600 > DAYS_AFTER_H
    per_s = 86400.0 if in_days else 3600.0
    series: dict[str, dict[str, list[list[float]]]] = {}
    closed: dict[str, list[str]] = {}
    for r in results:
        series[r.policy], ends = _series(r, per_s)
        if ends:
            closed[r.policy] = ends
    return {
        "trace": trace_name,
        "policies": [r.policy for r in results],
        "time_unit": "d" if in_days else "h",
        "end": round(end_s / per_s, 4),
        "series_points": SERIES_POINTS,
        "series": series,
        "totals": {r.policy: cumulative_totals(r) for r in results},
        "closed_at_end": closed,
        "hubs": _by_hub(network, results),
        "sites": {r.policy: _sites(network, r) for r in results},
    }


def _vendor(name: str) -> str:
    path = VENDOR / name
    if not path.is_file():
        raise MissingAsset(str(path), INSTALLER)
    return path.read_text(encoding="utf-8")


def _script_text(text: str, what: str) -> str:
    """Text safe inside a <script> element (nothing that would end it early)."""
    lowered = text.lower()
    if "</script" in lowered or "<!--" in lowered:
        raise ValueError(f"{what} cannot be inlined in a <script> element")
    return text


def _json_in_script(value: Any) -> str:
    """JSON inside a <script>: '<' only occurs in JSON strings, where \\u003c means the same."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")


# --- the comparison table: policies as columns, one metric a row -----------------------------


def _cny(value: float) -> str:
    return f"¥{value:,.2f}"


def _percent(value: float) -> str:
    return f"{value:.1%}"


def _wait_unit(results: list[RunResult]) -> tuple[str, str, float]:
    """Waits in minutes, or in hours when the longest p99 wait is two hours or more."""
    longest = max((r.metrics["wait_s_p99"] for r in results), default=0.0)
    return ("h", "小时", 3600.0) if longest >= 7200 else ("min", "分钟", 60.0)


@dataclass(frozen=True)
class Row:
    key: str  # the cell's data-metric
    label: str  # English 中文 (unit)
    value: Callable[[dict[str, Any]], Any]
    shown: Callable[[Any], str]


def _rows(results: list[RunResult]) -> list[tuple[str, list[Row]]]:
    wait_en, wait_zh, wait_s = _wait_unit(results)
    count = "{:,}".format
    one = "{:,.1f}".format
    return [
        (
            "Tasks 任务",
            [
                Row(
                    "tasks_completed",
                    "Completed 完成 (tasks 个)",
                    lambda m: m["tasks_completed"],
                    count,
                ),
                Row(
                    "tasks_rejected",
                    "Rejected 拒绝 (tasks 个)",
                    lambda m: m["tasks_rejected"],
                    count,
                ),
                Row(
                    "tasks_deferred",
                    "Deferred, then completed 延后后完成 (tasks 个)",
                    lambda m: m.get("tasks_deferred", 0),
                    count,
                ),
            ],
        ),
        (
            "Cost and energy 费用与能耗 — ESTIMATE 估算",
            [
                Row("cost_cny", "Cost 费用 (CNY ¥ 元)", lambda m: m["cost_fen"] / 100, _cny),
                Row("energy_kwh", "Energy 能耗 (kWh 千瓦时)", lambda m: m["energy_kwh"], one),
            ],
        ),
        (
            "Carbon 碳排 (kg CO₂ 千克) — ESTIMATE 估算, synthetic daily shape 合成日曲线",
            [
                Row("carbon_kg", "Market-based 市场法 (kg CO₂)", lambda m: m["carbon_kg"], one),
                Row(
                    "carbon_location_kg",
                    "Location-based 位置法 (kg CO₂)",
                    lambda m: m["carbon_location_kg"],
                    one,
                ),
            ],
        ),
        (
            "Service 服务",
            [
                Row(
                    "latency_ms_p50",
                    "Network latency p50 时延中位数 (ms 毫秒)",
                    lambda m: m["latency_ms_p50"],
                    "{:,.1f}".format,
                ),
                Row(
                    "latency_ms_p99",
                    "Network latency p99 时延 p99 (ms 毫秒)",
                    lambda m: m["latency_ms_p99"],
                    "{:,.1f}".format,
                ),
                Row(
                    "wait_p50",
                    f"Wait p50 等待中位数 ({wait_en} {wait_zh})",
                    lambda m: m["wait_s_p50"] / wait_s,
                    one,
                ),
                Row(
                    "wait_p99",
                    f"Wait p99 等待 p99 ({wait_en} {wait_zh})",
                    lambda m: m["wait_s_p99"] / wait_s,
                    one,
                ),
            ],
        ),
        (
            "Where and how busy 分布与忙碌",
            [
                Row(
                    "west_share_gpu_hours",
                    "West share of GPU-hours 西部 GPU 时占比 (%)",
                    lambda m: m["west_share_gpu_hours"],
                    _percent,
                ),
                Row(
                    "west_share_cpu_core_hours",
                    "West share of CPU core-hours 西部 CPU 核时占比 (%)",
                    lambda m: m["west_share_cpu_core_hours"],
                    _percent,
                ),
                Row(
                    "busy_share_gpu",
                    "GPUs busy 忙碌 GPU 比例 (%)",
                    lambda m: m["busy_share_gpu"],
                    _percent,
                ),
                Row(
                    "busy_share_cpu",
                    "CPU cores busy 忙碌 CPU 核比例 (%)",
                    lambda m: m["busy_share_cpu"],
                    _percent,
                ),
                Row("data_moved_gb", "Data moved 数据迁移 (GB)", lambda m: m["data_moved_gb"], one),
            ],
        ),
    ]


def _table(results: list[RunResult]) -> str:
    esc = html.escape
    head = "".join(f'<th scope="col">{esc(r.policy)}</th>' for r in results)
    body = []
    for group, rows in _rows(results):
        body.append(f'<tr class="group"><th colspan="{len(results) + 1}">{esc(group)}</th></tr>')
        for row in rows:
            cells = "".join(
                f'<td data-metric="{esc(row.key)}" data-policy="{esc(r.policy)}" '
                f'data-value="{esc(repr(row.value(r.metrics)))}">'
                f"{esc(row.shown(row.value(r.metrics)))}</td>"
                for r in results
            )
            body.append(f'<tr><th scope="row">{esc(row.label)}</th>{cells}</tr>')
    return (
        '<div class="table-box" id="policy-table-box"><table id="policy-table">'
        f'<thead><tr><th scope="col">Metric 指标</th>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def _tradeoffs(results: list[RunResult]) -> str:
    by = {r.policy: r.metrics for r in results}
    if "nearest" not in by:
        return ""
    base = by["nearest"]
    items = []
    for name, m in by.items():
        if name == "nearest":
            continue
        cost = (m["cost_fen"] - base["cost_fen"]) / base["cost_fen"] if base["cost_fen"] else 0
        carbon = (
            (m["carbon_kg"] - base["carbon_kg"]) / base["carbon_kg"] if base["carbon_kg"] else 0
        )
        items.append(
            f"<li><b>{html.escape(name)}</b> vs nearest 对比就近: cost 费用 {cost:+.1%}, "
            f"carbon (market-based) 碳排 {carbon:+.1%}, mean latency 平均时延 "
            f"{m['latency_ms_mean']:.1f} ms vs {base['latency_ms_mean']:.1f} ms, GPU-hours in "
            f"the west 西部 GPU 时 {m['west_share_gpu_hours']:.0%} vs "
            f"{base['west_share_gpu_hours']:.0%}</li>"
        )
    return '<ul class="tradeoffs">' + "".join(items) + "</ul>"


# --- the page ---------------------------------------------------------------------------------

STYLE = """
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI","Noto Sans CJK SC","PingFang SC",sans-serif;
  margin:0;color:#1d2733;background:#fff;line-height:1.45}
main{max-width:1240px;margin:0 auto;padding:16px}
h1{font-size:1.5rem;margin:.2em 0 .4em}h2{font-size:1.2rem;margin:1.6em 0 .5em}
h3{font-size:1rem;margin:.4em 0}
.lead{color:#52606d;margin:0 0 1em}
.estimate{display:inline-block;font-size:.75rem;font-weight:600;color:#8a4b00;background:#fff3e0;
  border:1px solid #f0b46a;border-radius:3px;padding:0 .4em;margin-left:.4em;vertical-align:middle}
.table-box{max-width:100%;overflow-x:auto;border:1px solid #d9e2ec;border-radius:4px}
table{border-collapse:collapse;width:100%}
th,td{border-bottom:1px solid #e4e7eb;padding:5px 10px;text-align:right;vertical-align:top}
thead th{background:#f0f4f8;position:sticky;top:0;white-space:normal}
tbody th{text-align:left;font-weight:normal;min-width:14em;max-width:26em}
tr.group th{background:#f7f9fb;font-weight:600;text-align:left;color:#334e68}
tbody th[scope=row],thead th:first-child{position:sticky;left:0;background:#fff;z-index:1}
thead th:first-child{background:#f0f4f8;z-index:2}
td{white-space:nowrap;font-variant-numeric:tabular-nums}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,560px),1fr));gap:16px}
.maps{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,380px),1fr));gap:16px}
figure{margin:0;border:1px solid #e4e7eb;border-radius:4px;padding:8px;min-width:0}
figcaption{font-weight:600;font-size:.95rem}
.chart{width:100%;height:340px}
.map{width:100%;height:400px}
.note{color:#52606d;font-size:.85rem}
@media (max-width:600px){main{padding:10px}.chart{height:300px}.map{height:320px}
  tbody th{min-width:9em}}
"""


def _figure(chart_id: str, caption: str, *, estimate: bool = False, kind: str = "chart") -> str:
    badge = '<span class="estimate">ESTIMATE 估算</span>' if estimate else ""
    return (
        f"<figure><figcaption>{html.escape(caption)}{badge}</figcaption>"
        f'<div class="{kind}" id="{chart_id}" role="img" '
        f'aria-label="{html.escape(caption)}"></div></figure>'
    )


def render(trace_name: str, network: Network, results: list[RunResult]) -> str:
    """The report as one HTML document (raises MissingAsset without the vendored ECharts)."""
    echarts = _script_text(_vendor("echarts.min.js"), "echarts.min.js")
    china = json.loads(_vendor("china.json"))
    script = _script_text(SCRIPT.read_text(encoding="utf-8"), "report.js")
    data = chart_data(trace_name, network, results)
    unit = "days 天" if data["time_unit"] == "d" else "hours 小时"
    esc = html.escape
    bases = sorted({str(r.metrics.get("carbon_basis", "")) for r in results} - {""})
    told = [f"Carbon in these runs 本次碳强度依据: {basis}." for basis in bases]
    assumptions = "".join(f"<li>{esc(a)}</li>" for a in [*ASSUMPTIONS, *told])
    maps = "".join(_figure(f"map-{n}", f"{r.policy}", kind="map") for n, r in enumerate(results))
    closed = (
        '<p class="note">'
        + esc(
            "A cumulative series was closed with a point at the run's end at the run's totals "
            "(its last tick came before them) / 累计曲线在运行结束处补了一个点，取运行总计: "
            + ", ".join(f"{p}: {', '.join(keys)}" for p, keys in data["closed_at_end"].items())
        )
        + "</p>"
        if data["closed_at_end"]
        else ""
    )
    cumulative = "\n".join(
        _figure(chart_id, caption, estimate=True)
        for chart_id, caption in (
            ("chart-cost", "Cumulative cost 累计费用 (CNY 元)"),
            ("chart-carbon-market", "Cumulative carbon, market-based 累计碳排 市场法 (kg)"),
            ("chart-carbon-location", "Cumulative carbon, location-based 累计碳排 位置法 (kg)"),
        )
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>suanli digital twin 数字孪生: {esc(trace_name)}</title>
<style>{STYLE}</style></head>
<body><main>
<h1>Digital twin 数字孪生: {esc(trace_name)}</h1>
<p class="lead">{len(results)} {"policy" if len(results) == 1 else "policies"} compared on the
national network 在全国算力网络上对比策略; time is counted from the trace's start, in {unit}
时间自轨迹开始计。Costs and carbon are ESTIMATES 费用与碳排为估算 (see Assumptions 假设).</p>
<h2>Policies compared 策略对比</h2>
{_table(results)}
{_tradeoffs(results)}
<h2>Load over time 负载随时间变化</h2>
<div class="grid">
{_figure("chart-busy-gpus", "Busy GPUs 忙碌 GPU")}
{_figure("chart-busy-cpu", "Busy CPU cores 忙碌 CPU 核")}
{_figure("chart-queued", "Queue length 排队任务数")}
</div>
<h2>Cumulative cost and carbon 累计费用与碳排</h2>
<div class="grid">
{cumulative}
</div>
{closed}
<h2>By hub 按枢纽</h2>
<p class="note">Demand-city data centres count with their city's hub 需求城市数据中心计入其所在
枢纽; utilisation: device-hours run / (devices x the run's span) 利用率 = 运行设备时 /
(设备数 x 运行时长).</p>
<div class="grid">
{_figure("chart-hub-gpu", "GPU-hours by hub 各枢纽 GPU 时")}
{_figure("chart-hub-cpu", "CPU core-hours by hub 各枢纽 CPU 核时")}
{_figure("chart-hub-util", "Utilisation by hub 各枢纽利用率 (%)")}
</div>
<h2>Where the work ran 负载分布</h2>
<p class="note">One map per policy 每个策略一张图: a site's circle grows with the device-hours it
ran (GPU-hours + CPU core-hours) 圆点大小 = 设备时; blue east 蓝色东部, green west 绿色西部.</p>
<div class="maps">{maps}</div>
<h2>Assumptions 假设</h2><ul>{assumptions}</ul>
</main>
<script type="application/json" id="report-data">{_json_in_script(data)}</script>
<script type="application/json" id="china-geo">{_json_in_script(china)}</script>
<script>{echarts}</script>
<script>{script}</script>
</body></html>
"""


def document(results: list[RunResult]) -> dict[str, Any]:
    return {"policies": {r.policy: r.metrics for r in results}}
