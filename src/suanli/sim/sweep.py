"""Sweeps: the twin over a grid of policies, seeds and scales, in parallel.

Local processes by default (`concurrent.futures`), or a Ray cluster (`ray_address`: an address,
or "local" to start a local instance for this sweep). Ray is imported only when asked for. Every
cell is an independent, seeded run, so results do not depend on where it ran.
"""

from __future__ import annotations

import itertools
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from suanli.sim.traces import load_trace, shape
from suanli.sim.twin import national_network, run


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
