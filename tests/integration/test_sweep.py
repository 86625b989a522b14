"""Sweeps run the same seeded cells in local processes and on a real local Ray instance."""

from __future__ import annotations

from suanli.sim.sweep import sweep

GRID = {
    "trace": "openb",
    "policies": ["nearest", "green"],
    "seeds": [0, 1],
    "scales": [0.004],
    "limit": 120,
    "time_scale": 0.01,
}


def _key(rows: list[dict]) -> list[tuple]:
    return sorted(
        (r["policy"], r["seed"], r["tasks_completed"], r["cost_fen"], round(r["carbon_kg"], 9))
        for r in rows
    )


def test_local_processes_and_a_real_local_ray_agree() -> None:
    args = dict(GRID)
    local = sweep(
        args.pop("trace"),
        args.pop("policies"),
        args.pop("seeds"),
        args.pop("scales"),
        workers=2,
        **args,
    )
    assert len(local) == 4
    assert all(r["tasks_completed"] + r["tasks_rejected"] == 120 for r in local)
    on_ray = sweep(
        GRID["trace"],
        GRID["policies"],
        GRID["seeds"],
        GRID["scales"],
        limit=120,
        time_scale=0.01,
        workers=2,
        ray_address="local",
    )
    assert _key(on_ray) == _key(local)
    by = {(r["policy"], r["seed"]): r for r in local}
    for seed in (0, 1):
        assert by[("green", seed)]["carbon_kg"] < by[("nearest", seed)]["carbon_kg"]
