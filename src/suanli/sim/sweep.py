"""Sweeps: the twin over a grid of policies, seeds and scales, in parallel.

Local processes by default (`concurrent.futures`), or a Ray cluster (`ray_address`: an address,
or "local" to start a local instance for this sweep). Ray is imported only when asked for. Every
cell is an independent, seeded run, so results do not depend on where it ran.

`summarise` folds the runs over seeds: per (policy, scale), the mean, the sample standard
deviation (n - 1; None with a single seed) and the min and max of each of SUMMARY_METRICS.
"""

from __future__ import annotations

import itertools
import statistics
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from suanli.sim.traces import load_trace, shape
from suanli.sim.twin import national_network, run

# the metrics `summarise` folds over seeds (cost in fen, as the runs carry it)
SUMMARY_METRICS = (
    "tasks_completed",
    "tasks_rejected",
    "cost_fen",
    "energy_kwh",
    "carbon_kg",
    "carbon_location_kg",
    "latency_ms_mean",
    "latency_ms_p99",
    "wait_s_p50",
    "wait_s_p99",
    "west_share_gpu_hours",
    "west_share_cpu_core_hours",
    "busy_share_gpu",
    "busy_share_cpu",
)


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The runs over seeds, one entry per (policy, scale) in the order they first appear:
    `seeds`, `runs` and, per metric of SUMMARY_METRICS, {mean, std, min, max} (std: the sample
    standard deviation, None for a single run)."""
    cells: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for row in rows:
        cells.setdefault((row["policy"], row["scale"]), []).append(row)
    summary = []
    for (policy, scale), runs in cells.items():
        spread = {}
        for name in SUMMARY_METRICS:
            values = [float(r[name]) for r in runs]
            spread[name] = {
                "mean": statistics.fmean(values),
                "std": statistics.stdev(values) if len(values) > 1 else None,
                "min": min(values),
                "max": max(values),
            }
        summary.append(
            {
                "policy": policy,
                "scale": scale,
                "seeds": sorted(r["seed"] for r in runs),
                "runs": len(runs),
                "metrics": spread,
            }
        )
    return summary


def spread_text(stat: dict[str, float | None], fmt: str, factor: float = 1.0) -> str:
    """'mean ± std [min–max]' of one summarised metric, each value x `factor` in `fmt`."""

    def shown(value: float | None) -> str:
        return "—" if value is None else format(value * factor, fmt)

    return (
        f"{shown(stat['mean'])} ± {shown(stat['std'])} [{shown(stat['min'])}–{shown(stat['max'])}]"
    )


def cell(
    trace: str, policy: str, seed: int, scale: float, limit: int | None, time_scale: float
) -> dict[str, Any]:
    """One run of the grid (a plain function, so processes and Ray can both run it)."""
    shaped = shape(load_trace(trace), limit=limit, time_scale=time_scale, seed=seed)
    metrics = run(shaped, national_network(scale), policy).metrics
    return {"policy": policy, "seed": seed, "scale": scale, **metrics}


def sweep(
    trace: str,
    policies: list[str],
    seeds: list[int],
    scales: list[float],
    *,
    limit: int | None = None,
    time_scale: float = 1.0,
    workers: int = 2,
    ray_address: str | None = None,
) -> list[dict[str, Any]]:
    grid = list(itertools.product(policies, seeds, scales))
    if ray_address is None:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(cell, trace, p, s, x, limit, time_scale) for p, s, x in grid]
            return [f.result() for f in futures]
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        if ray_address == "local":
            ray.init(
                address="local",  # a cluster of its own, even when another runs here
                num_cpus=workers,
                include_dashboard=False,
                _node_ip_address="127.0.0.1",
                log_to_driver=False,
            )
        else:
            ray.init(address=ray_address, log_to_driver=False)
    try:
        remote = ray.remote(cell)
        return list(ray.get([remote.remote(trace, p, s, x, limit, time_scale) for p, s, x in grid]))
    finally:
        if started_here:
            ray.shutdown()
