"""The Ray backend against a real local Ray head (`scripts/ray.sh`): jobs run, fail, are
cancelled, are found again by a fresh backend, and the cluster's CPUs are reported.

No mocks. Without Ray the module fails with the reason, unless SUANLI_SKIP_RAY=1 (then it
skips). A head this module started is stopped at its end; one that was already up is left."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from suanli.agent.backends import Executor, Handle, Status, TaskState
from suanli.agent.backends.ray import RayBackend
from tests import waiting

pytestmark = pytest.mark.slow

DECLARED_CPUS = int(os.environ.get("SUANLI_RAY_CPUS", "4"))


@pytest.fixture
def ray_address(ray_dashboard: str) -> str:
    """The dashboard of the Ray head that scripts/ray.sh starts (conftest.py)."""
    return ray_dashboard


@pytest.fixture
def backend(ray_address: str) -> RayBackend:
    return RayBackend(ray_address)


def sh(script: str, *, ignore_error: bool = False) -> Executor:
    return Executor(command=("sh", "-c", script), ignore_error=ignore_error)


def wait_for(backend: RayBackend, handle: Handle, timeout_s: float = 60.0) -> Status:
    return waiting.wait_until(
        lambda: backend.poll(handle), f"job {handle.ref} to end", timeout_s, every_s=0.1
    )


def wait_until(condition: Callable[[], object], timeout_s: float = 30.0) -> None:
    waiting.wait_until(condition, "the condition", timeout_s, every_s=0.05)


def test_an_echo_job_completes_with_its_output(backend: RayBackend, tmp_path: Path) -> None:
    submitted = time.monotonic()
    handle = backend.start("echo-1", [Executor(command=("echo", "hello ray"))], tmp_path)
    status = wait_for(backend, handle)
    print(f"echo job: submission to COMPLETE in {time.monotonic() - submitted:.2f} s")
    assert handle.backend == "ray" and handle.ref.startswith("suanli-echo-1-")
    assert status.state is TaskState.COMPLETE
    assert status.exit_code == 0
    assert status.stdout_tail == "hello ray\n"
    assert (tmp_path / "stdout.txt").read_text() == "hello ray\n"
    assert status.usage.wall_s > 0
    assert status.usage.device_s == 0  # no devices held


def test_a_second_poll_after_the_end_raises_key_error(backend: RayBackend, tmp_path: Path) -> None:
    handle = backend.start("twice", [Executor(command=("true",))], tmp_path)
    assert wait_for(backend, handle).state is TaskState.COMPLETE
    with pytest.raises(KeyError):
        backend.poll(handle)
    backend.cancel(handle)  # forgotten: a no-op


def test_executors_run_in_order_with_their_own_logs(backend: RayBackend, tmp_path: Path) -> None:
    executors = [
        sh("echo first; echo one-err >&2; pwd"),
        Executor(
            command=("sh", "-c", 'echo "second $GREETING"; cat'),
            env={"GREETING": "ni hao"},
            workdir="/work/sub",
            stdin="/work/in.txt",
            stdout="/out/second.txt",
        ),
    ]
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "in.txt").write_text("from stdin\n")
    handle = backend.start("order", executors, tmp_path, devices=2)
    status = wait_for(backend, handle)
    assert status.state is TaskState.COMPLETE, status
    first, second = status.executors
    assert first.exit_code == 0 and second.exit_code == 0
    assert first.stdout_tail == f"first\n{tmp_path.resolve()}\n"
    assert first.stderr_tail == "one-err\n"
    assert second.stdout_tail == "second ni hao\nfrom stdin\n"
    assert (tmp_path / "out" / "second.txt").read_text() == "second ni hao\nfrom stdin\n"
    assert (tmp_path / "work" / "sub").is_dir()
    assert first.started_at is not None and first.ended_at is not None
    assert second.started_at is not None and first.ended_at <= second.started_at
    assert status.stdout_tail == f"first\n{tmp_path.resolve()}\n"  # the second wrote its own
    assert status.usage.device_s == pytest.approx(2 * status.usage.wall_s)


def test_a_failing_executor_ends_the_task_with_its_code(
    backend: RayBackend, tmp_path: Path
) -> None:
    handle = backend.start(
        "fails", [sh("echo before"), sh("echo oops >&2; exit 3"), sh("echo never")], tmp_path
    )
    status = wait_for(backend, handle)
    assert status.state is TaskState.EXECUTOR_ERROR
    assert status.exit_code == 3
    assert "executor 2 of 3 exited with code 3" in status.reason
    assert [log.exit_code for log in status.executors] == [0, 3]
    assert status.executors[1].stderr_tail == "oops\n"
    assert "never" not in status.stdout_tail


def test_a_missing_command_is_exit_127(backend: RayBackend, tmp_path: Path) -> None:
    handle = backend.start("missing", [Executor(command=("no-such-program-xyz",))], tmp_path)
    status = wait_for(backend, handle)
    assert status.state is TaskState.EXECUTOR_ERROR
    assert status.exit_code == 127
    assert "no-such-program-xyz" in status.stderr_tail


def test_ignore_error_lets_the_next_executor_run(backend: RayBackend, tmp_path: Path) -> None:
    handle = backend.start("ignored", [sh("exit 5", ignore_error=True), sh("echo after")], tmp_path)
    status = wait_for(backend, handle)
    assert status.state is TaskState.COMPLETE
    assert status.exit_code == 0
    assert [log.exit_code for log in status.executors] == [5, 0]
    assert "exited with code 5 (ignore_error)" in status.reason
    assert status.stdout_tail == "after\n"


def test_cancel_stops_a_running_job(backend: RayBackend, tmp_path: Path) -> None:
    marker = tmp_path / "running"
    handle = backend.start(
        "cancel-me", [sh(f"echo $$ > {marker}; exec sleep 60"), sh("echo never")], tmp_path
    )
    wait_until(lambda: marker.exists() and marker.read_text().strip())
    pid = int(marker.read_text())
    canceled_at = time.monotonic()
    backend.cancel(handle)
    assert time.monotonic() - canceled_at < 5  # cancel does not wait for the job to end
    backend.cancel(handle)  # idempotent
    status = wait_for(backend, handle, timeout_s=30)
    assert status.state is TaskState.CANCELED
    assert status.exit_code is None
    assert "never" not in status.stdout_tail
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_capacity_shows_the_declared_cpus_and_what_jobs_hold(
    backend: RayBackend, tmp_path: Path
) -> None:
    capacity = backend.capacity()
    assert capacity is not None
    assert capacity.nodes == 1
    assert capacity.cpus == DECLARED_CPUS
    assert 0 <= capacity.free_cpus <= capacity.cpus
    assert capacity.memory_mb > 0
    handle = backend.start("holder", [sh("sleep 60")], tmp_path, devices=DECLARED_CPUS - 1)

    def held() -> bool:  # the autoscaler's load report lags by a few seconds
        now = backend.capacity()
        return now is not None and now.free_cpus <= 1

    try:
        wait_until(held, timeout_s=30)
    finally:
        backend.cancel(handle)
    assert wait_for(backend, handle).state is TaskState.CANCELED


def test_a_fresh_backend_reattaches_to_a_running_job(ray_address: str, tmp_path: Path) -> None:
    marker = tmp_path / "started"
    first = RayBackend(ray_address)
    handle = first.start(
        "survivor", [sh(f"touch {marker}; sleep 2; echo survived")], tmp_path, devices=1
    )
    wait_until(marker.exists)
    del first  # the agent restarts: only the task id and the ref survive

    second = RayBackend(ray_address)
    assert second.reattach("another-task", handle.ref) is None  # not that task's job
    assert second.reattach("survivor", "suanli-survivor-00000000") is None  # unknown to Ray
    again = second.reattach("survivor", handle.ref)
    assert again == handle
    assert second.poll(again) is None  # still running
    status = wait_for(second, again)
    assert status.state is TaskState.COMPLETE
    assert status.stdout_tail == "survived\n"
    assert status.usage.device_s == pytest.approx(status.usage.wall_s)
    with pytest.raises(KeyError):
        second.poll(again)
