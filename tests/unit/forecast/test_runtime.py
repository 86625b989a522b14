"""Run-time prediction: the group a prediction comes from and the fallback, the upper quantile
on histories whose distribution is known, the chronological backtest (on hand-built histories
and on the shipped traces), bad input, and the CLI."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, replace

import numpy as np
import pytest
from typer.testing import CliRunner

from suanli.cli import app
from suanli.errors import InvalidValue
from suanli.forecast import (
    RUNTIME_TRACES,
    CompletedTask,
    TaskFeatures,
    backtest_runtime,
    fit_runtime,
    runtime_trace,
)
from suanli.forecast.runtime import DEFAULT, LEVELS, REQUESTED, basis_name

runner = CliRunner()
# an 8-GPU training task with an 80 GiB shape, batch tier: the request most tests vary
EIGHT = TaskFeatures(
    device_kind="gpu", devices=8, workload="training", shape="80G", latency_tier="batch"
)


def _ran(task: TaskFeatures, runtime_s: float, **more: float) -> CompletedTask:
    return CompletedTask(**asdict(task), runtime_s=runtime_s, **more)


def _level(*features: str) -> int:
    return LEVELS.index(tuple(features))


REQUEST = ("workload", "device_kind", "devices", "shape", "latency_tier")


@pytest.fixture
def history() -> list[CompletedTask]:
    """alice: six 8-GPU runs of 100..600 s and two 1-GPU runs (50, 70 s); bob: six 8-GPU runs
    of 1000..6000 s."""
    alice, bob = replace(EIGHT, owner="alice"), replace(EIGHT, owner="bob")
    return [
        *(_ran(alice, 100.0 * k) for k in range(1, 7)),
        *(_ran(replace(alice, devices=1), s) for s in (50.0, 70.0)),
        *(_ran(bob, 1000.0 * k) for k in range(1, 7)),
    ]


# (task, basis, median, upper at 0.8, members), worked by hand from the fixture: the upper of
# n run times is the ceil((n + 1) x 0.8)-th smallest
CASES = [
    # alice's own 8-GPU runs: n 6, median (300 + 400) / 2, upper the 6th
    (replace(EIGHT, owner="alice"), _level("owner", *REQUEST), 350.0, 600.0, 6),
    # a tier alice never used: her 8-GPU runs, whatever the tier
    (
        replace(EIGHT, owner="alice", latency_tier="interactive"),
        _level("owner", "device_kind", "devices"),
        350.0,
        600.0,
        6,
    ),
    # alice on 1 GPU: two runs are too few; all 8 of hers: median (200 + 300) / 2, 8th smallest
    (replace(EIGHT, owner="alice", devices=1), _level("owner"), 250.0, 600.0, 8),
    # an owner with no history: everyone's 8-GPU training runs, n 12: median (600 + 1000) / 2,
    # upper the 11th smallest
    (replace(EIGHT, owner="carol"), _level(*REQUEST), 800.0, 5000.0, 12),
    # no owner at all: the same group
    (EIGHT, _level(*REQUEST), 800.0, 5000.0, 12),
    # no workload: the owner and the workload levels are skipped
    (
        replace(EIGHT, workload=None),
        _level("device_kind", "devices", "shape", "latency_tier"),
        800.0,
        5000.0,
        12,
    ),
    # a device kind nobody ran: all 14 tasks, median (500 + 600) / 2, the 12th smallest
    (TaskFeatures(device_kind="npu", devices=1), _level(), 550.0, 4000.0, 14),
]


@pytest.mark.parametrize(("task", "basis", "median", "upper", "members"), CASES)
def test_the_most_specific_group_with_enough_members_answers(
    history: list[CompletedTask],
    task: TaskFeatures,
    basis: int,
    median: float,
    upper: float,
    members: int,
) -> None:
    made = fit_runtime(history).predict_one(task)
    assert (made.basis, made.runtime_s, made.upper_s, made.members) == (
        basis,
        median,
        upper,
        members,
    )
    assert made.level == 0.8


def test_the_result_names_its_group(history: list[CompletedTask]) -> None:
    model = fit_runtime(history)
    made = model.predict_one(replace(EIGHT, owner="alice"))
    assert made.group == (
        "owner=alice, workload=training, device_kind=gpu, devices=8, shape=80G, latency_tier=batch"
    )
    assert model.predict_one(TaskFeatures(device_kind="npu")).group == "all tasks"
    assert basis_name(_level("owner", "device_kind", "devices")) == "owner+device_kind+devices"


def test_a_group_too_small_falls_back_to_a_broader_one(history: list[CompletedTask]) -> None:
    """With at least 7 members needed, alice's six 8-GPU runs are too few: all 8 of hers."""
    made = fit_runtime(history, min_members=7).predict_one(replace(EIGHT, owner="alice"))
    assert (made.basis, made.runtime_s, made.members) == (_level("owner"), 250.0, 8)


def test_many_at_once_agree_with_one_at_a_time(history: list[CompletedTask]) -> None:
    model = fit_runtime(history)
    tasks = [task for task, *_ in CASES]
    made = model.predict(tasks)
    assert len(made) == len(tasks)
    for i, task in enumerate(tasks):
        one = model.predict_one(task)
        assert (one.runtime_s, one.upper_s, one.basis, one.members) == (
            made.runtime_s[i],
            made.upper_s[i],
            made.basis[i],
            made.members[i],
        )


def test_the_requested_duration_groups_tasks_to_its_octave() -> None:
    """alice's runs asked for an hour ran 3,000 s; those asked for a minute ran 50 s. A task
    asking 3,500 s (the same power of two, 2^12 s) is predicted from the first."""
    alice = replace(EIGHT, owner="alice")
    history = [
        *(_ran(replace(alice, requested_s=3600.0), 3000.0) for _ in range(5)),
        *(_ran(replace(alice, requested_s=60.0), 50.0) for _ in range(5)),
    ]
    made = fit_runtime(history).predict_one(replace(alice, requested_s=3500.0))
    assert (made.basis, made.runtime_s, made.members) == (
        _level("owner", "requested", *REQUEST),
        3000.0,
        5,
    )
    assert "requested=~2^12 s" in made.group
    unasked = fit_runtime(history).predict_one(alice)  # no request: every alice run
    assert (unasked.basis, unasked.members) == (_level("owner", *REQUEST), 10)


def test_with_no_history_a_request_is_taken_at_its_word_else_the_default() -> None:
    """The default is Philly's run times: median 1,186 s, 80th percentile about 4,700 s."""
    model = fit_runtime([])
    asked = model.predict_one(replace(EIGHT, requested_s=900.0))
    assert (asked.basis, asked.runtime_s, asked.upper_s, asked.members) == (
        REQUESTED,
        900.0,
        900.0,
        0,
    )
    default = model.predict_one(EIGHT)
    assert default.basis == DEFAULT and default.group == "default"
    assert default.runtime_s == 1186.0 and 4000.0 < default.upper_s < 5500.0
    wider = fit_runtime([], level=0.9).predict_one(EIGHT)
    assert wider.upper_s > default.upper_s  # Philly's 90th percentile


@pytest.mark.parametrize(
    ("level", "n", "upper"),
    [
        (0.8, 10, 9.0),  # ceil(11 x 0.8) = 9th of 1..10
        (0.5, 10, 6.0),  # ceil(5.5) = 6th
        (0.8, 4, 4.0),  # ceil(4.0) = 4th: the longest
        (0.8, 3, 3.0),  # ceil(3.2) = 4 > 3: the longest
        (0.95, 20, 20.0),  # ceil(19.95) = 20th
    ],
)
def test_the_upper_quantile_is_the_conformal_rank(level: float, n: int, upper: float) -> None:
    history = [_ran(EIGHT, float(s)) for s in np.random.default_rng(n).permutation(n) + 1]
    made = fit_runtime(history, level=level, min_members=1).predict_one(EIGHT)
    assert made.upper_s == upper
    assert made.runtime_s == (n + 1) / 2  # the median of 1..n


def test_on_a_known_distribution_the_median_and_quantile_are_found() -> None:
    """Log-normal run times whose median and 80th percentile are known, by device count: with
    20,000 runs per group the fitted values are within 5% of them (about 4 standard errors),
    and 80% of fresh runs lie at or below the upper quantile."""
    rng = np.random.default_rng(11)
    sigma, z80 = 1.2, 0.8416212335729143  # the standard normal's 80th percentile
    mu = {1: math.log(600.0), 4: math.log(3600.0), 8: math.log(20000.0)}
    history = [
        _ran(replace(EIGHT, devices=d), float(s))
        for d, m in mu.items()
        for s in rng.lognormal(m, sigma, 20000)
    ]
    model = fit_runtime(history)
    for devices, m in mu.items():
        made = model.predict_one(replace(EIGHT, devices=devices))
        assert made.members == 20000
        assert made.runtime_s == pytest.approx(math.exp(m), rel=0.05)
        assert made.upper_s == pytest.approx(math.exp(m + z80 * sigma), rel=0.05)
        fresh = rng.lognormal(m, sigma, 20000)
        assert float(np.mean(fresh <= made.upper_s)) == pytest.approx(0.8, abs=0.02)


def test_small_groups_still_cover_at_the_level() -> None:
    """The conformal rank holds for any group size: in 2,000 groups of nine log-normal runs
    (each with its own median), a fresh run of the group lies at or below the group's upper
    quantile 8 times in 10 (the 8th of 9: 8 / (9 + 1))."""
    rng = np.random.default_rng(3)
    medians = rng.uniform(3.0, 10.0, 2000)
    history = [
        _ran(replace(EIGHT, owner=f"u{g}"), float(s))
        for g, m in enumerate(medians)
        for s in rng.lognormal(m, 1.0, 9)
    ]
    made = fit_runtime(history).predict([replace(EIGHT, owner=f"u{g}") for g in range(2000)])
    assert set(made.members.tolist()) == {9}
    fresh = rng.lognormal(medians[:, None], 1.0, (2000, 50))
    assert float(np.mean(fresh <= made.upper_s[:, None])) == pytest.approx(0.8, abs=0.015)


def test_a_backtest_uses_only_tasks_ended_before_each_refit() -> None:
    """Five 100 s tasks end by t=500; the next, submitted at t=1,000 with a run of 5,000 s, is
    predicted from them (100 s); the naive forecast is the same median, so both err by 4,900 s.
    The first five, submitted before five had ended, are not scored."""
    one = TaskFeatures(device_kind="gpu", devices=1)
    history = [_ran(one, 100.0, submit_s=100.0 * k) for k in range(5)]
    history.append(_ran(one, 5000.0, submit_s=1000.0))
    found = backtest_runtime(history, every_s=100.0)
    assert (found.jobs, found.unscored) == (1, 5)
    assert found.mae_s == found.mae_naive_s == 4900.0
    assert found.mdale == pytest.approx(math.log(50.0))
    assert found.coverage == 0.0
    assert found.bases == {"device_kind+devices": 1}


def test_a_backtest_beats_the_naive_median_where_groups_differ() -> None:
    """Two owners whose runs differ tenfold, arriving in turn: the model learns each owner's
    median, the naive forecast one median for both."""
    rng = np.random.default_rng(5)
    history = [
        _ran(
            TaskFeatures(device_kind="gpu", owner=owner),
            float(rng.lognormal(math.log(scale), 0.3)),
            submit_s=60.0 * k,
        )
        for k in range(2000)
        for owner, scale in [("short" if k % 2 else "long", 100.0 if k % 2 else 1000.0)]
    ]
    found = backtest_runtime(history, every_s=600.0)
    assert found.mdale < 0.5 * found.mdale_naive
    assert found.mae_s < 0.5 * found.mae_naive_s
    assert found.coverage == pytest.approx(0.8, abs=0.05)


def test_the_shipped_traces_are_completed_jobs_in_order() -> None:
    sizes = {name: len(runtime_trace(name)) for name in RUNTIME_TRACES}
    assert sizes == {"openb": 7221, "dlrm": 12374}  # scripts/forecast-runtime-jobs.py
    for name in RUNTIME_TRACES:
        jobs = runtime_trace(name)
        submit = [j.submit_s for j in jobs]
        assert submit == sorted(submit)
        assert all(j.runtime_s > 0 and j.end_s is not None and j.end_s >= j.submit_s for j in jobs)
    dlrm = runtime_trace("dlrm")
    assert {j.workload for j in dlrm} == {"inference"} and all(j.owner for j in dlrm)
    assert {j.owner for j in runtime_trace("openb")} == {None}


@pytest.mark.parametrize(
    ("trace", "log_ratio", "mae_below_naive"),
    [
        # measured: 0.756 against 1.214; MAE 1.30 h against 1.38 h
        ("openb", 0.75, True),
        # measured: 1.641 against 1.916; MAE 28.2 h against 27.6 h (not better: the MAE is
        # the instances living for days, which neither forecast sees coming)
        ("dlrm", 0.95, False),
    ],
)
def test_on_the_shipped_traces_the_model_beats_the_naive_median(
    trace: str, log_ratio: float, mae_below_naive: bool
) -> None:
    found = backtest_runtime(runtime_trace(trace))
    assert found.jobs > 7000 and found.unscored < 100
    assert found.mdale < log_ratio * found.mdale_naive, found
    if mae_below_naive:
        assert found.mae_s < found.mae_naive_s, found
    assert 0.65 <= found.coverage <= 0.9, found


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: fit_runtime([_ran(EIGHT, 0.0)]), "history[0].runtime_s"),
        (lambda: fit_runtime([_ran(EIGHT, 9.0), _ran(EIGHT, math.nan)]), "history[1].runtime_s"),
        (lambda: fit_runtime([_ran(replace(EIGHT, devices=0), 9.0)]), "history[0].devices"),
        (lambda: fit_runtime([_ran(replace(EIGHT, owner=""), 9.0)]), "history[0].owner"),
        (lambda: fit_runtime([_ran(EIGHT, 9.0)], level=1.0), "level"),
        (lambda: fit_runtime([_ran(EIGHT, 9.0)], min_members=0), "min_members"),
        (
            lambda: fit_runtime([]).predict([EIGHT, replace(EIGHT, requested_s=-5.0)]),
            "tasks[1].requested_s",
        ),
        (lambda: fit_runtime([]).predict([replace(EIGHT, device_kind="")]), "tasks[0].device_kind"),
        (lambda: backtest_runtime([_ran(EIGHT, 9.0)], every_s=0.0), "every_s"),
        (lambda: backtest_runtime([]), "history"),
        (lambda: backtest_runtime([_ran(EIGHT, 9.0, submit_s=5.0, end_s=1.0)]), "history[0].end_s"),
        (lambda: runtime_trace("philly"), "trace"),
    ],
)
def test_bad_input_names_the_field(call: Callable[[], object], field: str) -> None:
    with pytest.raises(InvalidValue) as caught:
        call()
    assert caught.value.field == field


def test_cli_forecast_runtime() -> None:
    done = runner.invoke(
        app, ["forecast", "runtime", "--trace", "openb", "--every", "24", "--json"]
    )
    assert done.exit_code == 0, done.output
    [row] = json.loads(done.stdout)
    assert row["trace"] == "openb" and row["level"] == 0.8 and row["jobs"] > 7000
    assert row["mdale"] < row["mdale_naive"] and 0.0 <= row["coverage"] <= 1.0
    shown = runner.invoke(app, ["forecast", "runtime", "--trace", "openb", "--every", "24"])
    assert shown.exit_code == 0 and "openb" in shown.stdout and "coverage" in shown.stdout
    bad = runner.invoke(app, ["forecast", "runtime", "--trace", "philly"])
    assert bad.exit_code == 2 and "openb, dlrm" in bad.stderr
    hours = runner.invoke(app, ["forecast", "runtime", "--every", "0"])
    assert hours.exit_code == 2 and "every" in hours.stderr
