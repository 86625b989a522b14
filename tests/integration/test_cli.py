"""The command line through Typer's runner, and once through a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from suanli.cli import app

runner = CliRunner()


def _json(*args: str) -> dict:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_catalog_json_has_the_contract_keys() -> None:
    doc = _json("catalog")
    assert len(doc["hubs"]) == 8
    assert len(doc["clusters"]) == 10
    keys = {
        "id",
        "name_zh",
        "name_en",
        "hub",
        "province",
        "lat",
        "lon",
        "east_west",
        "pue",
        "grid_kgco2_per_kwh",
        "green_share",
        "price_cny_per_kwh",
    }
    for cluster in doc["clusters"]:
        assert keys <= set(cluster)
    zjk = doc["clusters"][0]
    assert (zjk["id"], zjk["hub"], zjk["grid_kgco2_per_kwh"]) == ("ZJK", "JJJ", 0.7252)
    assert zjk["price_estimate"] is True


def test_catalog_table_marks_estimates() -> None:
    result = runner.invoke(app, ["catalog"])
    assert result.exit_code == 0
    assert "(est.)" in result.stdout and "张家口数据中心集群" in result.stdout


def test_meter_one_site_by_hand() -> None:
    # 8 x H800 bf16 training at ZJK: 3.1664e15 FLOP/s -> 10,000 s;
    # energy = 8 x 0.7 x 10000/3600 x 1.25 = 19.4444 kWh; carbon = x 0.7252 (no green share)
    doc = _json(
        "meter",
        "--device",
        "h800",
        "--count",
        "8",
        "--precision",
        "bf16",
        "--work-flop",
        "3.1664e19",
        "--workload",
        "training",
        "--site",
        "ZJK",
    )
    (row,) = doc["results"]
    assert row["site"] == "ZJK"
    assert row["duration_s"] == pytest.approx(10_000)
    assert row["energy_kwh"] == pytest.approx(19.444444, rel=1e-6)
    assert row["carbon_kg"] == pytest.approx(19.444444 * 0.7252, rel=1e-6)
    assert row["carbon_location_kg"] == row["carbon_kg"]
    assert row["ceps"] == pytest.approx(3.1664e19 / (19.444444 * 0.7252), rel=1e-6)
    assert row["electricity_cost_fen"] == 1108  # 19.4444 kWh x 0.57 CNY = 11.08 CNY
    assert doc["effective_precision"] == "bf16" and doc["fallback"] is False


def test_meter_all_sites_are_ranked_by_market_carbon() -> None:
    doc = _json("meter", "--device", "A800", "--precision", "fp16", "--work-flop", "1e20")
    carbons = [r["carbon_kg"] for r in doc["results"]]
    assert len(carbons) == 10
    assert carbons == sorted(carbons)
    assert doc["results"][0]["site"] == "HORINGER"  # 84.57% green power


def test_meter_reports_a_fallback() -> None:
    doc = _json(
        "meter", "--device", "V100", "--precision", "bf16", "--work-flop", "1e18", "--site", "GUIAN"
    )
    assert (doc["precision"], doc["effective_precision"], doc["fallback"]) == ("bf16", "fp32", True)


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["--device", "h900", "--precision", "fp16", "--work-flop", "1e18"], ["h900", "H800"]),
        (["--device", "h800", "--precision", "fp16", "--work-flop", "-5"], ["work_flop", "> 0"]),
        (
            ["--device", "h800", "--precision", "fp16", "--work-flop", "1e18", "--site", "ZJQ"],
            ["ZJQ", "ZJK"],
        ),
        (["--device", "t4", "--precision", "fp64", "--work-flop", "1e18"], ["fp64", "fp32"]),
        (["--device", "h800", "--precision", "fp4", "--work-flop", "1e18"], ["fp4", "bf16"]),
        (
            ["--device", "h800", "--precision", "fp16", "--work-flop", "1e18", "--count", "0"],
            ["count", ">= 1"],
        ),
    ],
)
def test_bad_input_is_one_line_exit_2(args: list[str], names: list[str]) -> None:
    result = runner.invoke(app, ["meter", *args])
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for name in names:
        assert name in lines[0]


def test_indicators_json() -> None:
    doc = _json("indicators")
    assert doc["fleet"].startswith("illustrative")
    assert doc["national"]["scope"] == "national"
    assert len(doc["hubs"]) == 8
    statuses = {c["metric"]: c["status"] for c in doc["national"]["checks"]}
    assert statuses["capacity_fp32_eflops"] == "not met"
    assert {p["metric"] for p in doc["published"]} >= {"total_compute_scale"}


def test_indicators_from_a_fleet_file(tmp_path) -> None:
    fleet = tmp_path / "fleet.csv"
    fleet.write_text("pool_id,site_id,device,count\na,ZJK,H800,10\nb,HORINGER,EPYC 9654,100\n")
    doc = _json("indicators", "--fleet", str(fleet))
    assert doc["national"]["devices"] == 110
    assert doc["national"]["capacity_fp32_eflops"] == pytest.approx(1.40728e-3)


def test_a_bad_fleet_row_names_its_line(tmp_path) -> None:
    fleet = tmp_path / "fleet.csv"
    fleet.write_text("pool_id,site_id,device,count\na,ZJK,H800,10\nb,ZJK,H999,4\n")
    result = runner.invoke(app, ["indicators", "--fleet", str(fleet)])
    assert result.exit_code == 2
    assert "fleet.csv:3" in result.stderr and "H999" in result.stderr


def test_latency_command() -> None:
    doc = _json("latency", "ZHONGWEI", "北京")
    assert doc["one_way_ms"] == 10.0 and doc["measured"] is True


def test_devices_command_lists_every_profile() -> None:
    assert len(_json("devices")["devices"]) == 34  # 33 data rows + the generic CPU core


@pytest.mark.slow
def test_real_subprocess() -> None:
    ok = subprocess.run(
        [
            sys.executable,
            "-m",
            "suanli",
            "meter",
            "--device",
            "NVIDIA H800",
            "--precision",
            "fp8",
            "--work-flop",
            "1e21",
            "--site",
            "all",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert len(json.loads(ok.stdout)["results"]) == 10
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "suanli",
            "meter",
            "--device",
            "nope",
            "--precision",
            "fp8",
            "--work-flop",
            "1e21",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and "unknown device 'nope'" in bad.stderr
    assert "Traceback" not in bad.stderr


@pytest.mark.slow
def test_real_subprocess_usage_error_is_one_line() -> None:
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "suanli",
            "meter",
            "--device",
            "h800",
            "--precision",
            "fp16",
            "--work-flop",
            "1e18",
            "--count",
            "abc",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and "--count" in bad.stderr


EXAMPLE = str(Path(__file__).resolve().parents[2] / "docs" / "examples" / "problem.json")


def test_schedule_the_documented_example() -> None:
    doc = _json("schedule", EXAMPLE, "--policy", "cost", "--solver", "optimal")
    assert doc["solver"]["name"] == "optimal"
    assert doc["solver"]["seconds"] >= 0
    assert doc["solver"]["lower_bound"] <= doc["solver"]["objective"] + 1e-6
    placed = {p["task"]: p["pool"] for p in doc["placements"]}
    assert placed["llm-pretrain"] == "nm-h800"  # cheapest H800 within its deadline
    assert doc["unplaced"][0]["task"] == "too-big"
    assert doc["totals"]["cost_fen"] == sum(p["cost_fen"] for p in doc["placements"])


def test_schedule_the_documented_example_as_a_flow() -> None:
    optimal = _json("schedule", EXAMPLE, "--policy", "green", "--solver", "optimal")
    flow = _json("schedule", EXAMPLE, "--policy", "green", "--solver", "flow")
    assert flow["solver"]["name"] == "flow"
    assert flow["solver"]["lower_bound"] <= flow["solver"]["objective"] + 1e-9
    assert flow["totals"]["placed"] == optimal["totals"]["placed"]
    assert flow["solver"]["objective"] == pytest.approx(optimal["solver"]["objective"], rel=1e-6)
    assert all(p["runner_up"] != p["pool"] for p in flow["placements"])


def test_schedule_table_output() -> None:
    result = runner.invoke(app, ["schedule", EXAMPLE, "--policy", "green"])
    assert result.exit_code == 0, result.output
    assert "llm-pretrain" in result.stdout and "unplaced 未放置 too-big" in result.stdout


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ('{"pools": [], "tasks": [{"id": "a"}]}', "tasks[0].devices"),
        ("{not json", "line 1, column 2"),
        (
            '{"pools": [{"id": "p", "site": "ZJK", "device": "H800", "count": -1, '
            '"price_fen_per_device_hour": 1}], "tasks": []}',
            "pools[0].count",
        ),
    ],
)
def test_schedule_malformed_problem_exits_2_with_the_path(
    tmp_path, content: str, words: str
) -> None:
    problem = tmp_path / "problem.json"
    problem.write_text(content, encoding="utf-8")
    result = runner.invoke(app, ["schedule", str(problem)])
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert words in result.stderr


def test_schedule_rejects_an_unknown_policy() -> None:
    result = runner.invoke(app, ["schedule", EXAMPLE, "--policy", "fastest"])
    assert result.exit_code == 2
    assert "policy" in result.stderr and "balanced" in result.stderr


def test_schedule_custom_weights() -> None:
    doc = _json("schedule", EXAMPLE, "--weights", "cost=1")
    assert doc["policy"] == "custom"


@pytest.mark.slow
def test_real_subprocess_generate_then_schedule_from_stdin() -> None:
    generated = subprocess.run(
        [
            sys.executable,
            "-m",
            "suanli",
            "schedule",
            "--generate",
            "200",
            "--pools",
            "20",
            "--seed",
            "7",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert len(json.loads(generated.stdout)["tasks"]) == 200
    planned = subprocess.run(
        [
            sys.executable,
            "-m",
            "suanli",
            "schedule",
            "-",
            "--policy",
            "green",
            "--solver",
            "auto",
            "--json",
        ],
        input=generated.stdout,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert planned.returncode == 0, planned.stderr
    plan = json.loads(planned.stdout)
    assert plan["totals"]["placed"] + plan["totals"]["unplaced"] == 200
    assert plan["solver"]["name"] == "flow"  # auto: a batch this size is solved as a flow
    assert plan["solver"]["lower_bound"] <= plan["solver"]["objective"] + 1e-9


def test_generate_rejects_a_zero_size() -> None:
    result = runner.invoke(app, ["schedule", "--generate", "0"])
    assert result.exit_code == 2 and "generate" in result.stderr


def test_admin_tokens_credit_payout_and_audit_on_a_database(tmp_path) -> None:
    db = f"sqlite:///{tmp_path / 'admin.db'}"
    consumer = _json("admin", "token", "create", "--role", "consumer", "--name", "lab", "--db", db)
    provider = _json("admin", "token", "create", "--role", "provider", "--name", "dc", "--db", db)
    assert consumer["token"].startswith("sl_") and consumer["id"]
    credited = _json("admin", "credit", "--consumer", consumer["id"], "--fen", "500", "--db", db)
    assert credited["balance"] == {"fen": 500, "currency": "CNY"}
    refused = runner.invoke(
        app, ["admin", "payout", "--provider", provider["id"], "--fen", "1", "--db", db]
    )
    assert refused.exit_code == 2 and "at most the receivable, 0 fen" in refused.stderr
    wrong = runner.invoke(
        app, ["admin", "credit", "--consumer", provider["id"], "--fen", "5", "--db", db]
    )
    assert wrong.exit_code == 2 and "not found" in wrong.stderr
    verified = runner.invoke(app, ["audit", "verify", "--db", db])
    assert verified.exit_code == 0 and "audit OK" in verified.stdout
