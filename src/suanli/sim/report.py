"""The twin's HTML report: one self-contained file (inline SVG and CSS, no scripts, no network).

A map of the clusters sized by the device-hours they ran, the time series of busy devices per
policy, the policy comparison table, and the assumptions the run rests on.
"""

from __future__ import annotations

import html
from typing import Any

from suanli.sim.twin import Network, RunResult

ASSUMPTIONS = [
    "Pool sizes: published rack counts (hub_metrics.csv) where a cluster has one, their median "
    "elsewhere, x the scale (GPUs per rack) — an ESTIMATE; device mix of the Alibaba spot-GPU "
    "and openb fleets; generic CPU cores 8 per GPU (ESTIMATE).",
    "Prices: the problem generator's capital + energy estimate per device-hour (ESTIMATE); "
    "electricity time-of-use multipliers from tou_tariffs.csv.",
    "Carbon: annual MEE/NBS factors with a synthetic daily shape (western sites dip up to 25% "
    "at solar noon, mean preserved); no hourly provincial carbon data is public here.",
    "Trace: durations read as durations on the platform's reference device (A100 SXM4 for "
    "GPUs, a generic core for CPUs), as resources.duration_s is on the live platform — an "
    "ESTIMATE for traces measured on other devices; origins drawn 80% from demand-hub "
    "cities (ESTIMATE); QoS LS -> standard tier.",
    "Latency: catalog matrix and great-circle estimates (DERIVED); tiers 5 / 20 ms RTT.",
]


def _map(network: Network, result: RunResult) -> str:
    used: dict[str, float] = {}
    for outcome in result.outcomes:
        if outcome.site and outcome.start_s is not None and outcome.end_s is not None:
            used[outcome.site] = (
                used.get(outcome.site, 0.0)
                + (outcome.end_s - outcome.start_s) * outcome.job.devices / 3600
            )
    top = max(used.values(), default=1.0) or 1.0
    dots = []
    for site in network.sites.values():
        x = (site.lon - 73) / (135 - 73) * 560 + 20
        y = (54 - site.lat) / (54 - 18) * 360 + 20
        radius = 4 + 20 * (used.get(site.id, 0.0) / top) ** 0.5
        colour = "#2e7d32" if site.east_west == "west" else "#1565c0"
        label = html.escape(f"{site.id} {used.get(site.id, 0.0):,.0f} device-h")
        dots.append(
            f'<circle cx="{x:.0f}" cy="{y:.0f}" r="{radius:.1f}" fill="{colour}" '
            f'fill-opacity="0.6"><title>{label}</title></circle>'
            f'<text x="{x + 6:.0f}" y="{y - 6:.0f}" font-size="10">'
            f"{html.escape(site.id)}</text>"
        )
    return (
        '<svg width="600" height="400" role="img" aria-label="map">'
        '<rect width="600" height="400" fill="#f5f5f5"/>' + "".join(dots) + "</svg>"
    )


def _series(results: list[RunResult], key: str = "busy_devices") -> str:
    colours = ["#d32f2f", "#1976d2", "#388e3c", "#f57c00", "#7b1fa2", "#455a64"]
    end = max((p["t"] for r in results for p in r.timeline), default=1.0) or 1.0
    peak = max((p[key] for r in results for p in r.timeline), default=1.0) or 1.0
    lines = []
    for n, result in enumerate(results):
        points = " ".join(
            f"{20 + p['t'] / end * 560:.1f},{220 - p['busy_devices'] / peak * 200:.1f}"
            for p in result.timeline
        )
        colour = colours[n % len(colours)]
        lines.append(
            f'<polyline points="{points}" fill="none" stroke="{colour}" '
            f'stroke-width="1.2"/><text x="480" y="{20 + 14 * n}" fill="{colour}" '
            f'font-size="11">{html.escape(result.policy)}</text>'
        )
    return (
        '<svg width="600" height="240" role="img" aria-label="busy devices over time">'
        '<rect width="600" height="240" fill="#fafafa"/>' + "".join(lines) + "</svg>"
    )


def _table(results: list[RunResult]) -> str:
    columns = [
        ("policy", "{}"),
        ("tasks_completed", "{:,}"),
        ("tasks_rejected", "{:,}"),
        ("cost_fen", "{:,}"),
        ("energy_kwh", "{:,.1f}"),
        ("carbon_kg", "{:,.1f}"),
        ("carbon_location_kg", "{:,.1f}"),
        ("latency_ms_p50", "{:.1f}"),
        ("latency_ms_p99", "{:.1f}"),
        ("wait_s_p50", "{:,.0f}"),
        ("wait_s_p99", "{:,.0f}"),
        ("west_share_gpu_hours", "{:.1%}"),
        ("west_share_cpu_core_hours", "{:.1%}"),
        ("busy_share_gpu", "{:.1%}"),
        ("busy_share_cpu", "{:.1%}"),
        ("data_moved_gb", "{:,.1f}"),
    ]
    head = "".join(f"<th>{html.escape(c)}</th>" for c, _ in columns)
    rows = "".join(
        "<tr>"
        + "".join(f"<td>{html.escape(fmt.format(r.metrics[c]))}</td>" for c, fmt in columns)
        + "</tr>"
        for r in results
    )
    return f"<table><tr>{head}</tr>{rows}</table>"


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
            f"<li><b>{html.escape(name)}</b> vs nearest: cost {cost:+.1%}, carbon "
            f"{carbon:+.1%}, mean latency {m['latency_ms_mean']:.1f} ms vs "
            f"{base['latency_ms_mean']:.1f} ms, GPU-hours in the west "
            f"{m['west_share_gpu_hours']:.0%} vs {base['west_share_gpu_hours']:.0%}</li>"
        )
    return "<ul>" + "".join(items) + "</ul>"


def render(trace_name: str, network: Network, results: list[RunResult]) -> str:
    maps = "".join(
        f"<div><h3>{html.escape(r.policy)}</h3>{_map(network, r)}</div>" for r in results
    )
    assumptions = "".join(f"<li>{html.escape(a)}</li>" for a in ASSUMPTIONS)
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>suanli digital twin: {html.escape(trace_name)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}
.maps{{display:flex;flex-wrap:wrap;gap:1em}}</style></head><body>
<h1>Digital twin 数字孪生: {html.escape(trace_name)}</h1>
<h2>Policies compared 策略对比</h2>{_table(results)}{_tradeoffs(results)}
<h2>Busy devices over time 设备占用</h2>{_series(results)}
<h2>Cumulative cost (fen) 累计费用</h2>{_series(results, "cost_fen")}
<h2>Cumulative carbon (kg) 累计碳排</h2>{_series(results, "carbon_kg")}
<h2>Where the work ran 负载分布 (blue east, green west)</h2><div class="maps">{maps}</div>
<h2>Assumptions 假设</h2><ul>{assumptions}</ul></body></html>
"""


def document(results: list[RunResult]) -> dict[str, Any]:
    return {"policies": {r.policy: r.metrics for r in results}}
