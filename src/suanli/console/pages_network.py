"""The operator's network overview and the sites page (operator: all sites; provider: its own).

`/overview` draws the 8 hubs, the 10 national clusters and every registered site on a map of
China (symbol size by devices in pools, colour by utilisation or carbon intensity, shape by
east/west), the flows of work from where tasks come from to where they ran, and the national
indicators of the platform's fleet against the 2025 targets (the same `indicators.national`
path as `suanli indicators`, fed with the registered pools instead of a CSV fleet).

`/sites` lists each site with its pools: capacity, free, unavailable, utilisation now and over
the last 24 hours, energy and carbon of finished tasks, PUE, the provider's earnings
(receivable balance) and reputation.

Where every figure comes from is said next to the code that computes it; figures that rest on
estimates or unverified targets keep their mark on the page. The store is read through
`services.readmodels` (fleet, placed_origins, busy_stretches, finished, earnings, names); this
module only arranges those values for the pages.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session

from suanli import indicators
from suanli.catalog import Site, clusters, find_place, hubs
from suanli.console import i18n
from suanli.console.web import Console, problem
from suanli.datafiles import read_rows
from suanli.errors import SuanliError
from suanli.services import market, readmodels
from suanli.services.core import Actor, Forbidden, Role, aware, now
from suanli.services.readmodels import BusyStretch, Fleet

MESSAGES: dict[str, tuple[str, str]] = {  # key: (English, 中文)
    "overview.map": ("Map of the network", "网络地图"),
    "overview.map_help": (
        "Symbol size: devices in registered pools. Shape: ● east, ▲ west (geographic). "
        "Hubs are drawn larger and faded. Grey: no devices registered there.",
        "符号大小：已登记资源池中的设备数。形状：● 东部，▲ 西部（地理）。"
        "枢纽以较大的半透明符号表示。灰色：该处尚无登记设备。",
    ),
    "overview.colour": ("Colour by", "颜色表示"),
    "overview.by_util": ("Utilisation (held / total devices)", "利用率（占用 / 总设备）"),
    "overview.by_carbon": (
        "Carbon intensity (grid factor × (1 − green share), kg CO₂/kWh)",
        "碳强度（电网因子 ×（1 − 绿电占比），kg CO₂/kWh）",
    ),
    "overview.hubs": ("Hubs", "算力枢纽"),
    "overview.clusters": ("National clusters", "国家数据中心集群"),
    "overview.sites": ("Registered sites", "已登记站点"),
    "overview.flows": ("Flows of work", "任务流向"),
    "overview.flows_help": (
        "Tasks placed in the last 30 days, from the province they were submitted from to the "
        "site they were placed on; line width by task count.",
        "近 30 天已调度任务，从提交所在省份到所调度的站点；线宽表示任务数。",
    ),
    "overview.flows_none": (
        "No task has been placed in the last 30 days.",
        "近 30 天无已调度任务。",
    ),
    "overview.flows_unknown": (
        "tasks whose origin is not a known place are left out",
        "个任务的来源地无法识别，未计入",
    ),
    "overview.points": ("Hubs, clusters and sites (table)", "枢纽、集群与站点（表格）"),
    "overview.kind": ("Kind", "类型"),
    "overview.kind.hub": ("hub", "枢纽"),
    "overview.kind.cluster": ("cluster", "集群"),
    "overview.kind.site": ("site", "站点"),
    "overview.name": ("Name", "名称"),
    "overview.east_west": ("East / west", "东 / 西"),
    "overview.east": ("east", "东部"),
    "overview.west": ("west", "西部"),
    "overview.devices": ("Devices", "设备数"),
    "overview.util": ("Utilisation", "利用率"),
    "overview.carbon": ("Carbon intensity (kg CO₂/kWh)", "碳强度（kg CO₂/kWh）"),
    "overview.racks": ("Published racks", "公开机架数"),
    "overview.reported": ("reported", "公开报道"),
    "overview.from": ("From (province)", "来源省份"),
    "overview.to": ("To (site)", "目标站点"),
    "overview.tasks": ("Tasks", "任务数"),
    "overview.indicators": (
        "National indicators against the 2025 targets",
        "全国指标对照 2025 目标",
    ),
    "overview.indicators_help": (
        "Computed from the pools registered on this platform (not national statistics), the "
        "same way as `suanli indicators`.",
        "根据本平台登记的资源池计算（并非全国统计数据），与 `suanli indicators` 的算法相同。",
    ),
    "overview.metric": ("Indicator", "指标"),
    "overview.value": ("Value", "数值"),
    "overview.target": ("2025 target", "2025 目标"),
    "overview.met": ("Met?", "是否达标"),
    "overview.status.met": ("met", "达标"),
    "overview.status.not met": ("not met", "未达标"),
    "overview.status.unknown": ("unknown", "未知"),
    "overview.m.capacity_fp32_eflops": (
        "Total compute, EFLOPS (FP32 basis)",
        "算力总规模 EFLOPS（FP32）",
    ),
    "overview.m.capacity_fp16_eflops": ("Compute, EFLOPS (FP16 basis)", "算力规模 EFLOPS（FP16）"),
    "overview.m.intelligent_share": ("Intelligent-compute share", "智能算力占比"),
    "overview.m.weighted_pue": ("PUE (weighted by IT power)", "PUE（按 IT 功率加权）"),
    "overview.m.rack_utilization": ("Rack utilisation (reported)", "上架率（公开报道）"),
    "overview.m.green_share": ("Green-power share", "绿电占比"),
    "overview.m.ceps": ("CEPS, PFLOP per kg CO₂ (market-based)", "算力碳效 PFLOP/kg CO₂（市场法）"),
    "overview.excluded": (
        "devices without a figure at this precision left out",
        "台设备该精度无数据，未计入",
    ),
    "overview.sites_known": ("sites with a reported figure", "个站点有公开数据"),
    "overview.unverified": ("unverified", "未核实"),
    "overview.unofficial": ("unofficial", "非官方"),
    "overview.published": (
        "Published national progress (secondary sources)",
        "公开的全国进展（二手来源）",
    ),
    "overview.as_of": ("As of", "时间"),
    "overview.quality": ("Quality", "可信度"),
    "overview.note": ("Note", "说明"),
    "sites.empty": (
        "No site is registered yet (providers register sites with POST /v1/sites).",
        "尚未登记站点（提供方通过 POST /v1/sites 登记站点）。",
    ),
    "sites.owner": ("Provider", "提供方"),
    "sites.province": ("Province", "省份"),
    "sites.cluster": ("National cluster", "国家集群"),
    "sites.pools": ("Pools", "资源池"),
    "sites.pool": ("Pool", "资源池"),
    "sites.device": ("Device", "设备"),
    "sites.count": ("Capacity", "容量"),
    "sites.free": ("Free", "空闲"),
    "sites.unavailable": ("Unavailable", "不可用"),
    "sites.held": ("Held by tasks", "任务占用"),
    "sites.util_now": ("Utilisation now", "当前利用率"),
    "sites.price": ("Price / device-hour", "单价 / 设备·小时"),
    "sites.no_pools": ("No pool at this site yet.", "该站点尚无资源池。"),
    "sites.util_24h": ("Utilisation, last 24 hours", "近 24 小时利用率"),
    "sites.util_24h_help": (
        "Hourly share of the site's devices held by running tasks (from the audit log).",
        "每小时站点设备被运行中任务占用的比例（来自审计日志）。",
    ),
    "sites.util_peak": ("Peak", "峰值"),
    "sites.util_mean": ("Mean", "平均"),
    "sites.hour": ("Hour ending (CST)", "截至（北京时间）"),
    "sites.hourly": ("Hourly values", "逐小时数值"),
    "sites.energy": ("Energy of finished tasks", "已结束任务能耗"),
    "sites.carbon": ("Carbon of finished tasks", "已结束任务碳排放"),
    "sites.metered_help": (
        "Placement estimates scaled by the device-seconds each task reported.",
        "按各任务上报的设备·秒对调度估算值进行折算。",
    ),
    "sites.unmetered": (
        "finished tasks without a usage report not counted",
        "个已结束任务无用量上报，未计入",
    ),
    "sites.pue": ("PUE", "PUE"),
    "sites.pue_declared": (
        "as registered: declared by the provider, else the cluster's published ceiling",
        "登记值：提供方申报，未申报时取集群公开上限",
    ),
    "sites.earnings": ("Earnings (receivable)", "收入（应收余额）"),
    "sites.earnings_help": ("the provider's, across all its sites", "为该提供方全部站点合计"),
    "sites.reputation": ("Reputation", "信誉"),
    "sites.no_history": ("no history yet", "暂无记录"),
    "sites.tasks_done": ("Finished tasks", "已结束任务数"),
}
i18n.MESSAGES.update(MESSAGES)

FLOW_DAYS = 30
HOURS = 24


def _require(who: readmodels.Viewer, *roles: Role) -> None:
    if who.role not in {r.value for r in roles}:
        raise Forbidden(who.role, " / ".join(r.value for r in roles))


def _ratio(part: float, whole: float) -> float | None:
    return None if whole <= 0 else part / whole


def _carbon_intensity(site: Site) -> float:
    """Market-based kg CO2 per kWh at the site: the grid factor less its green-power share."""
    return site.grid_kgco2_per_kwh * (1.0 - site.green_share)


def _published_racks() -> dict[str, tuple[float, str]]:
    """The latest published rack figure of each cluster (hub_metrics.csv, 'reported')."""
    found: dict[str, tuple[float, str, str]] = {}
    for row in read_rows("suanli.catalog", "hub_metrics.csv"):
        if row["scope"] != "cluster" or not row["metric"].startswith("racks"):
            continue
        seen = found.get(row["scope_id"])
        if seen is None or row["as_of"] > seen[2]:
            found[row["scope_id"]] = (float(row["value"]), row["unit"], row["as_of"])
    return {cid: (value, f"{unit}, {as_of}") for cid, (value, unit, as_of) in found.items()}


# --- the overview -----------------------------------------------------------------------------


def _point(
    name: str,
    kind: str,
    east_west: str,
    lat: float,
    lon: float,
    devices: int,
    held: int,
    carbon: float,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    util = _ratio(held, devices)
    return {
        "name": name,
        "kind": kind,
        "ew": "west" if east_west.startswith("west") else "east",
        "lon": lon,
        "lat": lat,
        "devices": devices,
        "held": held,
        "util": util,
        "carbon": round(carbon, 4),
        **(extra or {}),
    }


def _points(fleet: Fleet, zh: bool) -> list[dict[str, Any]]:
    racks = _published_racks()
    by_cluster: dict[str, list[str]] = {}
    by_hub: dict[str, list[str]] = {}
    for row in fleet.rows:
        if row.cluster_id:
            by_cluster.setdefault(row.cluster_id, []).append(row.id)
        hub_id = fleet.sites[row.id].hub_id
        if hub_id:
            by_hub.setdefault(hub_id, []).append(row.id)
    catalog = clusters()
    points = []
    for hub in hubs():
        members = [c for c in catalog if c.hub_id == hub.id]
        # a hub's carbon intensity: the mean of its clusters' (catalog factors)
        carbon = sum(_carbon_intensity(c) for c in members) / max(1, len(members))
        total, held = fleet.devices(by_hub.get(hub.id, []))
        points.append(
            _point(
                hub.name_zh if zh else hub.name_en,
                "hub",
                hub.geo_east_west,
                hub.lat,
                hub.lon,
                total,
                held,
                carbon,
            )
        )
    for site in catalog:
        total, held = fleet.devices(by_cluster.get(site.id, []))
        published = racks.get(site.id)
        points.append(
            _point(
                site.name_zh if zh else site.name_en,
                "cluster",
                site.east_west,
                site.lat,
                site.lon,
                total,
                held,
                _carbon_intensity(site),
                {"racks": published[0], "racks_basis": published[1]} if published else None,
            )
        )
    for row in fleet.rows:
        total, held = fleet.devices([row.id])
        site = fleet.sites[row.id]
        points.append(
            _point(
                row.name,
                "site",
                site.east_west,
                row.lat,
                row.lon,
                total,
                held,
                _carbon_intensity(site),
            )
        )
    return points


def _flows(session: Session, fleet: Fleet, zh: bool) -> tuple[list[dict[str, Any]], int]:
    """Task counts by (origin province, site) over the last FLOW_DAYS days; and how many tasks
    had an origin that does not resolve to a place."""
    rows = readmodels.placed_origins(session, now(session) - timedelta(days=FLOW_DAYS))
    counts: dict[tuple[str, str], int] = {}
    provinces: dict[str, tuple[str, float, float]] = {}
    unknown = 0
    for origin, site_id in rows:
        if site_id not in fleet.sites:
            continue
        if origin not in provinces:
            try:
                place = find_place(origin)
                province = find_place(place.province_zh.split("/")[0])
                label = province.name_zh if zh else province.name_en
                provinces[origin] = (label, province.lat, province.lon)
            except SuanliError:
                provinces[origin] = ("", 0.0, 0.0)
        if not provinces[origin][0]:
            unknown += 1
            continue
        key = (origin, site_id)
        counts[key] = counts.get(key, 0) + 1
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    names = {r.id: r.name for r in fleet.rows}
    for (origin, site_id), count in counts.items():
        label, lat, lon = provinces[origin]
        site = fleet.sites[site_id]
        flow = merged.setdefault(
            (label, site_id),
            {
                "from": label,
                "to": names[site_id],
                "coords": [[lon, lat], [site.lon, site.lat]],
                "count": 0,
            },
        )
        flow["count"] += count
    flows = sorted(merged.values(), key=lambda f: -f["count"])
    return flows, unknown


def _fmt_share(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


def _indicator_rows(nation: indicators.Indicators, language: str) -> list[dict[str, Any]]:
    """One row per indicator: value, target, status and any mark that must stay visible."""

    def t(key: str) -> str:
        return i18n.translate(key, language)

    checks = {c.target.metric: c for c in nation.checks}
    values: dict[str, tuple[str, str]] = {  # metric: (value text, note)
        "capacity_fp32_eflops": (
            f"{nation.capacity_fp32_eflops:,.4f}",
            f"{nation.fp32_excluded_devices} {t('overview.excluded')}"
            if nation.fp32_excluded_devices
            else "",
        ),
        "capacity_fp16_eflops": (
            f"{nation.capacity_fp16_eflops:,.4f}",
            f"{nation.fp16_excluded_devices} {t('overview.excluded')}"
            if nation.fp16_excluded_devices
            else "",
        ),
        "intelligent_share": (_fmt_share(nation.intelligent_share), ""),
        "weighted_pue": (
            "—" if nation.weighted_pue is None else f"{nation.weighted_pue:.3f}",
            "",
        ),
        "rack_utilization": (
            _fmt_share(nation.rack_utilization),
            f"{nation.rack_sites_known}/{nation.sites} {t('overview.sites_known')}",
        ),
        "green_share": (_fmt_share(nation.green_share), ""),
        "ceps": ("—" if nation.ceps is None else f"{nation.ceps / 1e15:,.1f}", ""),
    }
    rows = []
    for metric, (value, note) in values.items():
        check = checks.get(metric)
        marks = []
        if metric == "ceps":
            marks.append(t("overview.unofficial"))
        target = "—"
        status = ""
        if check is not None:
            bound = check.target.value
            shown = (
                f"{bound:.0%}"
                if metric in {"intelligent_share", "rack_utilization", "green_share"}
                else f"{bound:g}"
            )
            target = f"{'≥' if check.target.comparator == '>=' else '≤'} {shown}"
            status = check.status.value
            if not check.target.verified:
                marks.append(t("overview.unverified"))
        rows.append(
            {
                "metric": metric,
                "label": t(f"overview.m.{metric}"),
                "value": value,
                "note": note,
                "target": target,
                "target_source": check.target.source if check else "",
                "target_text": (
                    check.target.description_zh if language == "zh" else check.target.description_en
                )
                if check
                else "",
                "status": status,
                "marks": marks,
            }
        )
    return rows


def _published() -> list[dict[str, Any]]:
    rows = []
    for figure in indicators.published_progress():
        rows.append(
            {
                "metric": figure.metric,
                "value": f"{figure.value:,g}",
                "unit": figure.unit,
                "as_of": figure.as_of,
                "quality": figure.quality,
                "source": figure.source,
                "target": "—"
                if figure.target is None
                else f"{'≥' if figure.target.comparator == '>=' else '≤'} {figure.target.value:g}",
                "status": figure.status.value,
                "note": figure.note,
            }
        )
    return rows


# --- the sites page -----------------------------------------------------------------------------


def _hourly(
    stretches: list[BusyStretch],
    capacity: dict[str, int],
    since: datetime,
) -> dict[str, list[float]]:
    """Each site's utilisation per hour since `since`: device-seconds held / (today's devices x
    3600). Pool sizes are today's (pools are not resized in the log)."""
    series = {sid: [0.0] * HOURS for sid in capacity}
    for stretch in stretches:
        sid, start, end, devices = stretch.site_id, stretch.start, stretch.end, stretch.devices
        if sid not in series:
            continue
        for hour in range(HOURS):
            lo = since + timedelta(hours=hour)
            hi = lo + timedelta(hours=1)
            overlap = (min(end, hi) - max(start, lo)).total_seconds()
            if overlap > 0:
                series[sid][hour] += overlap * devices
    return {
        sid: [round(v / (capacity[sid] * 3600), 4) if capacity[sid] else 0.0 for v in values]
        for sid, values in series.items()
    }


def install(console: Console) -> None:
    router = console.router

    @router.get("/overview", response_class=HTMLResponse)
    async def overview(request: Request) -> Response:
        language = console.language(request)
        zh = language == "zh"

        def work(session: Session, actor: Actor) -> dict[str, Any]:
            who = readmodels.viewer(actor)
            _require(who, Role.OPERATOR)
            fleet = readmodels.fleet(session)
            nation = indicators.national(list(fleet.sites.values()), fleet.catalog_pools)
            flows, unknown = _flows(session, fleet, zh)
            points = _points(fleet, zh)
            return {
                "who": who,
                "points": points,
                "flows": flows,
                "unknown_origins": unknown,
                "indicator_rows": _indicator_rows(nation, language),
                "published": _published(),
                "chart": {
                    "points": points,
                    "flows": flows,
                    "labels": {
                        "hub": i18n.translate("overview.hubs", language),
                        "cluster": i18n.translate("overview.clusters", language),
                        "site": i18n.translate("overview.sites", language),
                        "flows": i18n.translate("overview.flows", language),
                        "util": i18n.translate("overview.util", language),
                        "carbon": i18n.translate("overview.carbon", language),
                        "devices": i18n.translate("overview.devices", language),
                        "tasks": i18n.translate("overview.tasks", language),
                        "east": i18n.translate("overview.east", language),
                        "west": i18n.translate("overview.west", language),
                        "racks": i18n.translate("overview.racks", language),
                    },
                },
            }

        try:
            found = await console.act(request, False, work)
        except SuanliError as exc:
            return await problem(console, request, exc)
        return console.page(request, "overview.html", found.pop("who"), **found)

    @router.get("/sites", response_class=HTMLResponse)
    async def sites(request: Request) -> Response:
        language = console.language(request)

        def work(session: Session, actor: Actor) -> dict[str, Any]:
            who = readmodels.viewer(actor)
            _require(who, Role.OPERATOR, Role.PROVIDER)
            fleet = readmodels.fleet(session, None if who.role == Role.OPERATOR.value else who.id)
            moment = now(session)
            since = moment - timedelta(hours=HOURS)
            capacity = {r.id: fleet.devices([r.id])[0] for r in fleet.rows}
            hourly = _hourly(readmodels.busy_stretches(session, since, moment), capacity, since)
            finished = readmodels.finished(session, [r.id for r in fleet.rows])
            reputation = market.reputation(session)
            owners = {r.owner_id for r in fleet.rows}
            earnings = readmodels.earnings(session, owners)
            names = readmodels.principal_names(session, owners)
            hours = [  # each bucket's end, China Standard Time
                f"{aware(since + timedelta(hours=h + 1)) + i18n.CST:%H:%M}" for h in range(HOURS)
            ]
            cards = []
            charts = []
            for n, row in enumerate(fleet.rows):
                total, held = fleet.devices([row.id])
                pools = fleet.pools[row.id]
                series = hourly[row.id]
                chart_id = f"util-{n}"
                charts.append({"id": chart_id, "name": row.name, "values": series})
                cards.append(
                    {
                        "row": row,
                        "owner": names[row.owner_id],
                        "pools": [
                            {
                                "pool": p.pool,
                                "free": p.free,
                                "held": p.held,
                                "util": _ratio(p.held, p.pool.count),
                            }
                            for p in pools
                        ],
                        "capacity": total,
                        "free": sum(p.free for p in pools),
                        "unavailable": sum(p.pool.unavailable for p in pools),
                        "held": held,
                        "util": _ratio(held, total),
                        "series": series,
                        "peak": max(series) if series else 0.0,
                        "mean": sum(series) / len(series) if series else 0.0,
                        "chart_id": chart_id,
                        "finished": finished[row.id],
                        "earnings": earnings[row.owner_id],
                        "reputation": reputation.get(row.owner_id),
                    }
                )
            return {
                "who": who,
                "cards": cards,
                "hours": hours,
                "chart": {
                    "hours": hours,
                    "sites": charts,
                    "label": i18n.translate("overview.util", language),
                },
            }

        try:
            found = await console.act(request, False, work)
        except SuanliError as exc:
            return await problem(console, request, exc)
        return console.page(request, "sites.html", found.pop("who"), **found)
