"""A sweep's runs folded over seeds: mean, sample standard deviation and range per (policy,
scale), by hand on a small table; and `suanli sim sweep` prints them and writes them to its
JSON beside the runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from suanli.cli import app
from suanli.sim.sweep import SUMMARY_METRICS, spread_text, summarise


def a_run(policy: str, seed: int, scale: float, cost_fen: int, carbon_kg: float) -> dict:
    row: dict = {name: 0.0 for name in SUMMARY_METRICS}
    return row | {
        "policy": policy,
        "seed": seed,
        "scale": scale,
        "cost_fen": cost_fen,
        "carbon_kg": carbon_kg,
    }


def test_runs_are_folded_over_seeds_per_policy_and_scale() -> None:
    rows = [
        a_run("green", 0, 0.004, 100, 1.0),
        a_run("green", 1, 0.004, 300, 3.0),
        a_run("green", 2, 0.004, 200, 8.0),
        a_run("green", 0, 0.008, 50, 2.0),
        a_run("nearest", 0, 0.004, 400, 9.0),
    ]
    summary = summarise(rows)
    assert [(s["policy"], s["scale"], s["seeds"], s["runs"]) for s in summary] == [
        ("green", 0.004, [0, 1, 2], 3),
        ("green", 0.008, [0], 1),
        ("nearest", 0.004, [0], 1),
    ]
    cost = summary[0]["metrics"]["cost_fen"]
    assert cost == {"mean": 200.0, "std": 100.0, "min": 100.0, "max": 300.0}
    carbon = summary[0]["metrics"]["carbon_kg"]
    # mean 4; squared deviations 9 + 1 + 16 = 26 over n - 1 = 2
    assert carbon["mean"] == 4.0 and carbon["std"] == pytest.approx(math.sqrt(13))
    assert summary[1]["metrics"]["cost_fen"] == {
        "mean": 50.0,
        "std": None,
        "min": 50.0,
        "max": 50.0,
    }
    assert spread_text(cost, ",.2f", 0.01) == "2.00 ± 1.00 [1.00–3.00]"
    assert spread_text(summary[1]["metrics"]["cost_fen"], ",.0f") == "50 ± — [50–50]"


def test_the_sweep_command_shows_and_writes_the_spread(tmp_path: Path) -> None:
    out = tmp_path / "sweep.json"
    result = CliRunner().invoke(
        app,
        [
            "sim",
            "sweep",
            "--policies",
            "nearest,green",
            "--seeds",
            "0,1",
            "--limit",
            "60",
            "--time-scale",
            "0.01",
            "--workers",
            "2",
            "--json",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "Over seeds" in result.output and "±" in result.output
    document = json.loads(out.read_text())
    assert len(document["runs"]) == 4
    by = {s["policy"]: s for s in document["summary"]}
    assert set(by) == {"nearest", "green"} and by["green"]["seeds"] == [0, 1]
    for policy, entry in by.items():
        costs = [r["cost_fen"] for r in document["runs"] if r["policy"] == policy]
        stat = entry["metrics"]["cost_fen"]
        assert stat["mean"] == pytest.approx(sum(costs) / 2)
        assert (stat["min"], stat["max"]) == (min(costs), max(costs))
        assert stat["std"] == pytest.approx(abs(costs[0] - costs[1]) / math.sqrt(2))
