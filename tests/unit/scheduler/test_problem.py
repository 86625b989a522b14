"""PROBLEM.json: the documented example parses; every malformed value is named by its path."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from suanli.scheduler import POLICIES, place
from suanli.scheduler.problem import ProblemError, load_problem, parse_problem, plan_document

EXAMPLE = Path(__file__).resolve().parents[3] / "docs" / "examples" / "problem.json"


def _example() -> dict:
    return json.loads(EXAMPLE.read_text(encoding="utf-8"))


def test_the_documented_example_parses_and_places() -> None:
    problem = load_problem(EXAMPLE.read_text(encoding="utf-8"))
    assert [t.id for t in problem.tasks] == [
        "chat-api",
        "llm-pretrain",
        "finetune",
        "cfd",
        "too-big",
    ]
    assert set(problem.snapshot.sites) == {"YRD_DEMO", "ZJK", "HORINGER", "ZHONGWEI", "GUIAN"}
    plan = place(problem.tasks, problem.snapshot, POLICIES["balanced"], problem.now_s)
    doc = plan_document(plan)
    assert {p["task"] for p in doc["placements"]} == {"chat-api", "llm-pretrain", "finetune", "cfd"}
    assert [u["task"] for u in doc["unplaced"]] == ["too-big"]
    keys = {
        "task",
        "pool",
        "site",
        "start_s",
        "end_s",
        "cost_fen",
        "energy_kwh",
        "carbon_kg",
        "latency_ms",
        "runner_up",
    }
    assert keys <= set(doc["placements"][0])
    assert set(doc["totals"]) >= {"cost_fen", "energy_kwh", "carbon_kg"}
    assert set(doc["solver"]) >= {"name", "seconds", "lower_bound"}


def test_reference_duration_converts_to_work() -> None:
    # 16 x Ascend 910B, 7,200 s at its FP16 320 TFLOPS and training efficiency 0.40
    problem = parse_problem(_example())
    finetune = next(t for t in problem.tasks if t.id == "finetune")
    assert finetune.work_flop == pytest.approx(7200 * 16 * 320e12 * 0.40)


def test_time_of_use_series_come_from_the_tariffs() -> None:
    problem = parse_problem(_example())  # epoch 2026-07-15 09:00 +08:00
    series = problem.snapshot.series
    assert "HORINGER" in series  # 内蒙古 (Mengxi) has a July schedule
    # 09:00 in July on the Mengxi grid is flat (8-11 flat), 11:00-16:00 valley 0.44
    assert series["HORINGER"].energy_price_multiplier[0] == 1.0
    assert series["HORINGER"].energy_price_multiplier[3] == 0.44
    assert problem.snapshot.local_hour_at_start == 9.0


def test_a_province_becomes_a_provider_site() -> None:
    doc = _example()
    doc["pools"].append(
        {"id": "hz", "site": "浙江", "device": "H20", "count": 8, "price_fen_per_device_hour": 700}
    )
    doc["sites"] = [{"id": "浙江", "pue": 1.3, "reputation": 0.8}]
    problem = parse_problem(doc)
    site = problem.snapshot.sites["ZHEJIANG"]
    assert site.grid_kgco2_per_kwh == 0.5153
    assert site.pue == 1.3
    assert problem.snapshot.reputation["ZHEJIANG"] == 0.8


def _broken(path: list, value: object, delete: bool = False) -> dict:
    doc = copy.deepcopy(_example())
    target = doc
    for key in path[:-1]:
        target = target[key]
    if delete:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return doc


@pytest.mark.parametrize(
    ("path", "value", "delete", "where", "words"),
    [
        (["tasks", 1, "devices"], None, True, "tasks[1].devices", "Field required"),
        (["tasks", 0, "devices"], "8", False, "tasks[0].devices", "integer"),
        (["tasks", 0, "devices"], True, False, "tasks[0].devices", "integer"),
        (["tasks", 2, "work_flop"], 1e18, False, "tasks[2]", "exactly one of work_flop"),
        (["tasks", 3, "work_flop"], -5, False, "tasks[3].work_flop", "greater than 0"),
        (["tasks", 0, "origin"], "Atlantis", False, "tasks[0].origin", "unknown place 'Atlantis'"),
        (["tasks", 0, "precision"], "fp4", False, "tasks[0].precision", "fp4"),
        (["tasks", 1, "device_models", 0], "H900", False, "tasks[1].device_models[0]", "H900"),
        (
            ["tasks", 3, "allowed_provinces", 0],
            "Mars",
            False,
            "tasks[3].allowed_provinces[0]",
            "Mars",
        ),
        (["tasks", 0, "latency_tier"], "fast", False, "tasks[0].latency_tier", "interactive"),
        (["pools", 0, "device"], "H900", False, "pools[0].device", "unknown device 'H900'"),
        (["pools", 1, "site"], "ZJQ", False, "pools[1].site", "ZJQ"),
        (["pools", 1, "free"], 999, False, "pools[1]", "free"),
        (
            ["pools", 2, "price_fen_per_device_hour"],
            12.5,
            False,
            "pools[2].price_fen_per_device_hour",
            "integer",
        ),
        (["pools", 0, "colour"], "red", False, "pools[0].colour", "Extra inputs"),
        (["settings", "bandwidth_gbps"], 0, False, "settings.bandwidth_gbps", "greater than 0"),
    ],
)
def test_malformed_values_are_named_by_path(
    path: list, value: object, delete: bool, where: str, words: str
) -> None:
    with pytest.raises(ProblemError) as caught:
        parse_problem(_broken(path, value, delete))
    assert caught.value.path == where
    assert words in caught.value.message_en


def test_duplicate_ids_and_invalid_json() -> None:
    doc = _example()
    doc["tasks"][1]["id"] = "chat-api"
    with pytest.raises(ProblemError, match=r"tasks\[1\].id"):
        parse_problem(doc)
    with pytest.raises(ProblemError, match="line 1, column 2"):
        load_problem("{oops")
