"""`services.runtimes`: a completed task's run time from its state changes, its conversion to
seconds on the reference device, a task's features, and where a task's duration comes from.
Hand-made state changes and specs; the real catalog and run-time model."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from suanli.errors import SuanliError
from suanli.forecast.runtime import CompletedTask, fit_runtime
from suanli.services.runtimes import (
    Duration,
    Runtimes,
    duration,
    engine_spec,
    reference_ratio,
    run_time_s,
    task_features,
)

T0 = datetime(2026, 3, 2, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ([(0, "INITIALIZING"), (10, "RUNNING"), (7_210, "COMPLETE")], 7_200.0),
        # a fast command: ended straight from INITIALIZING, its lease counts
        ([(0, "INITIALIZING"), (30, "COMPLETE")], 30.0),
        # a PAUSED spell is left out
        ([(0, "RUNNING"), (100, "PAUSED"), (1_000, "RUNNING"), (1_100, "COMPLETE")], 200.0),
        # preempted and run again: both RUNNING spells
        (
            [
                (0, "INITIALIZING"),
                (0, "RUNNING"),
                (500, "PREEMPTED"),
                (600, "QUEUED"),
                (900, "INITIALIZING"),
                (950, "RUNNING"),
                (1_450, "COMPLETE"),
            ],
            1_000.0,
        ),
        ([(0, "INITIALIZING"), (10, "RUNNING")], None),  # still running
        ([(0, "INITIALIZING"), (0, "RUNNING"), (0, "COMPLETE")], None),  # ran no time
        ([], None),
    ],
)
def test_a_run_time_is_the_time_spent_running(
    changes: list[tuple[float, str]], expected: float | None
) -> None:
    assert run_time_s([(at(s), to) for s, to in changes]) == expected


def test_run_times_are_counted_on_the_reference_device() -> None:
    assert reference_ratio("cpu", "fp32", "cpu") == 1.0
    # an H100 SXM5 runs bf16 989.5 / 312 times as fast as the reference A100 SXM4
    assert reference_ratio("gpu", "bf16", "H100 SXM5") == pytest.approx(989.5 / 312)
    with pytest.raises(SuanliError):
        reference_ratio("gpu", "bf16", "no such device")


SPEC: dict[str, Any] = {
    "resources": {
        "devices": 8,
        "device_kind": "GPU",
        "precision": "BF16",
        "workload": "training",
        "memory_gb": 80.0,
        "device_models": ["H100", "A100"],
    },
    "latency_tier": None,
}


def test_features_are_read_as_the_engine_reads_the_spec() -> None:
    features = task_features("alice", SPEC)
    assert features.device_kind == "gpu" and features.devices == 8
    assert (features.owner, features.workload, features.latency_tier) == (
        "alice",
        "training",
        "batch",
    )
    assert features.shape == "bf16, 80 GB, A100|H100"
    assert features.requested_s is None
    given = {**SPEC, "resources": {**SPEC["resources"], "duration_s": 3_000.0}}
    assert task_features("alice", given).requested_s == 3_000.0
    with pytest.raises(SuanliError):
        task_features("alice", {**SPEC, "resources": {**SPEC["resources"], "devices": 0}})


def model(runs_s: list[float]) -> Runtimes:
    features = task_features("alice", SPEC)
    history = [
        CompletedTask(
            device_kind=features.device_kind,
            devices=features.devices,
            owner="alice",
            workload=features.workload,
            latency_tier=features.latency_tier,
            shape=features.shape,
            runtime_s=run,
        )
        for run in runs_s
    ]
    return Runtimes(fit_runtime(history), 1, T0, len(history), len(history), 0)


def test_a_duration_is_given_worked_predicted_or_the_default() -> None:
    runtimes = model([3_000.0, 3_500.0, 3_600.0, 3_700.0, 9_000.0])
    made = duration("alice", SPEC, runtimes)
    assert (made.source, made.duration_s, made.upper_s, made.members) == (
        "predicted",
        3_600.0,
        9_000.0,
        5,
    )
    assert made.group is not None and made.group.startswith("owner=alice, workload=training")
    spec = engine_spec(SPEC, made)
    assert spec["resources"]["duration_s"] == 3_600.0
    assert "duration_s" not in SPEC["resources"]  # a copy: the spec is not changed
    given = {**SPEC, "resources": {**SPEC["resources"], "duration_s": 60.0}}
    assert duration("alice", given, runtimes) == Duration("given", 60.0)
    worked = {**SPEC, "resources": {**SPEC["resources"], "work_flop": 1e18}}
    assert duration("alice", worked, runtimes) == Duration("work", None)
    assert engine_spec(worked, Duration("work", None)) == worked
    # fewer than 5 like it, or no model: the engine's 60 s, and the spec goes as it is
    few = duration("alice", SPEC, model([3_000.0] * 4))
    assert (few.source, few.duration_s, few.history) == ("default", 60.0, 4)
    assert engine_spec(SPEC, few) == SPEC
    assert duration("alice", SPEC, None) == Duration("default", 60.0)
