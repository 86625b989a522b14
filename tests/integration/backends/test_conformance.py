"""The conformance suite of the `Backend` Protocol: every case runs against every backend, each
on its real engine (a local process group, the Slurm cluster of `scripts/slurm.sh`, the Ray head
of `scripts/ray.sh`), through the Protocol only. No mocks.

What a backend may legitimately do differently is stated once, in the table below, and nowhere
else. An engine that cannot be started fails its backend's tests with the start script's message
(or skips them, loudly, with SUANLI_SKIP_SLURM=1 / SUANLI_SKIP_RAY=1; see conftest.py).

Commands name files by task-relative paths only: the local backend gives each task a private
/tmp, so a host path under /tmp may not be the same file inside a task.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from suanli.agent.backends import (
    TERMINAL_STATES,
    Backend,
    Capacity,
    Executor,
    Handle,
    Status,
    TaskState,
    max_run_reason,
)
from suanli.agent.backends.local import LocalBackend
from suanli.agent.backends.ray import RayBackend
from suanli.agent.backends.slurm import SlurmBackend
from tests.processes import pids_of
from tests.waiting import poll, wait_until

pytestmark = pytest.mark.slow

BACKENDS = ("local", "slurm", "ray")
# Whether a fresh instance finds work that an earlier instance (a dead agent) started. The local
# backend cannot: a previous agent's children are not the new agent's, so they cannot be reaped.
REATTACHES = {"local": False, "slurm": True, "ray": True}
# Whether `capacity()` can tell the engine's size (the Protocol allows None when it cannot). The
# local backend answers None: it cannot tell what else uses the host, so the provider's declared
# pool stands.
KNOWS_CAPACITY = {"local": False, "slurm": True, "ray": True}
assert set(REATTACHES) == set(KNOWS_CAPACITY) == set(BACKENDS)

TIMEOUT_S = 90.0  # a job's whole life; Slurm and Ray take ~1 s per job on a 2-core machine
CANCEL_TIMEOUT_S = 30.0  # from cancel to CANCELED (Ray waits up to 3 s before SIGKILL)
POLL_LIMIT_S = 5.0  # poll and cancel must not block; one engine round trip is far less
POLL_EVERY_S = 0.05

Factory = Callable[[], Backend]


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture(params=BACKENDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_backend(kind: str, request: pytest.FixtureRequest) -> Factory:
    """Builds fresh instances of the backend `kind`, each on the same engine (starting that
    engine first, once per process)."""
    if kind == "local":
        return LocalBackend
    if kind == "slurm":
        partition = str(request.getfixturevalue("slurm_partition"))
        return lambda: SlurmBackend(partition=partition)
    if kind == "ray":
        address = str(request.getfixturevalue("ray_dashboard"))
        return lambda: RayBackend(address=address)
    raise AssertionError(f"no factory for backend {kind!r}")


@pytest.fixture
def backend(make_backend: Factory, kind: str) -> Backend:
    made = make_backend()
    assert made.name == kind
    return made


@pytest.fixture
def task_id(kind: str) -> str:
    """Unique across workers and runs: Slurm names jobs after it, the local backend refs."""
    return f"conf-{kind}-{uuid.uuid4().hex[:10]}"


# -- helpers ---------------------------------------------------------------------------------


def sh(script: str, **options: object) -> Executor:
    return Executor(command=("sh", "-c", script), **options)  # type: ignore[arg-type]


def timed_poll(backend: Backend, handle: Handle) -> Status | None:
    began = time.monotonic()
    status = backend.poll(handle)
    took = time.monotonic() - began
    assert took < POLL_LIMIT_S, f"{backend.name}: poll blocked for {took:.1f} s"
    return status


def wait(backend: Backend, handle: Handle, timeout_s: float = TIMEOUT_S) -> Status:
    """Poll as an agent does until the terminal status; cancel and fail after `timeout_s`."""
    status = poll(lambda: timed_poll(backend, handle), timeout_s, every_s=POLL_EVERY_S)
    if status is None:
        backend.cancel(handle)
        raise AssertionError(f"{backend.name}: task {handle.task_id} not done in {timeout_s} s")
    assert status.state in TERMINAL_STATES, status
    return status


def wait_running(backend: Backend, handle: Handle, marker: Path) -> None:
    """Wait until the task's first executor has written `marker`: it is really running."""

    def written() -> bool:
        if marker.exists() and marker.read_text().strip():
            return True
        assert timed_poll(backend, handle) is None, "ended before it wrote its marker"
        return False

    if not poll(written, TIMEOUT_S, every_s=POLL_EVERY_S):
        backend.cancel(handle)
        raise AssertionError(f"{backend.name}: task {handle.task_id} never started")


# -- the cases -------------------------------------------------------------------------------


def test_submit_and_complete(backend: Backend, kind: str, task_id: str, tmp_path: Path) -> None:
    handle = backend.start(task_id, [Executor(("echo", "hello conformance"))], tmp_path, devices=2)
    assert (handle.task_id, handle.backend) == (task_id, kind) and handle.ref
    status = wait(backend, handle)
    assert status.state is TaskState.COMPLETE, status
    assert status.exit_code == 0
    assert status.stdout_tail == "hello conformance\n"
    assert status.usage.wall_s > 0
    assert status.usage.cpu_s >= 0
    assert status.usage.device_s == pytest.approx(2 * status.usage.wall_s)
    assert [log.exit_code for log in status.executors] == [0]


def test_poll_is_none_while_running_then_one_terminal_status(
    backend: Backend, task_id: str, tmp_path: Path
) -> None:
    handle = backend.start(task_id, [sh("sleep 2; echo slept")], tmp_path)
    assert timed_poll(backend, handle) is None  # just started: still running
    polls = 1

    def counted() -> Status | None:
        nonlocal polls
        polls += 1
        return timed_poll(backend, handle)

    status = wait_until(counted, "the task to finish", TIMEOUT_S, every_s=POLL_EVERY_S)
    assert polls > 2, "a 2 s sleep was seen running for less than two polls"
    assert status.state is TaskState.COMPLETE, status
    assert status.stdout_tail == "slept\n"
    with pytest.raises(KeyError):
        backend.poll(handle)  # the terminal status came exactly once; the handle is forgotten


def test_a_failing_executor_stops_the_task(backend: Backend, task_id: str, tmp_path: Path) -> None:
    handle = backend.start(task_id, [sh("exit 3"), sh("touch after-failure")], tmp_path)
    status = wait(backend, handle)
    assert status.state is TaskState.EXECUTOR_ERROR, status
    assert status.exit_code == 3
    assert [log.exit_code for log in status.executors] == [3]
    assert not (tmp_path / "after-failure").exists(), "the executor after a failure ran"


def test_ignore_error_lets_the_next_executor_run(
    backend: Backend, task_id: str, tmp_path: Path
) -> None:
    executors = [sh("exit 3", ignore_error=True), sh("touch after-failure")]
    status = wait(backend, backend.start(task_id, executors, tmp_path))
    assert status.state is TaskState.COMPLETE, status
    assert status.exit_code == 0
    assert [log.exit_code for log in status.executors] == [3, 0]
    assert (tmp_path / "after-failure").exists()


def test_executors_log_in_order_with_their_own_output_and_task_paths(
    backend: Backend, task_id: str, tmp_path: Path
) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "words.txt").write_text("three\n")
    executors = [
        sh("echo one; echo err-one >&2"),
        sh("echo two"),
        # Task paths: absolute (rooted at the task directory) and relative (from it).
        Executor(("tr", "a-z", "A-Z"), stdin="/in/words.txt", stdout="out/upper.txt"),
        sh("cat /dev/null; echo four >&2", stderr="/err/four.txt"),
    ]
    status = wait(backend, backend.start(task_id, executors, tmp_path))
    assert status.state is TaskState.COMPLETE, status
    logs = status.executors
    assert [log.exit_code for log in logs] == [0, 0, 0, 0]
    assert [log.stdout_tail for log in logs] == ["one\n", "two\n", "THREE\n", ""]
    assert [log.stderr_tail for log in logs] == ["err-one\n", "", "", "four\n"]
    assert status.stdout_tail == "one\ntwo\n"  # the third wrote its own file
    assert status.stderr_tail == "err-one\n"  # and so did the fourth
    assert (tmp_path / "out" / "upper.txt").read_text() == "THREE\n"
    assert (tmp_path / "err" / "four.txt").read_text() == "four\n"
    times: list[float] = []
    for log in logs:
        assert log.started_at is not None and log.ended_at is not None, log
        times += [log.started_at, log.ended_at]
    assert times == sorted(times), f"executors overlap or run out of order: {times}"


def test_cancel_stops_running_work(backend: Backend, task_id: str, tmp_path: Path) -> None:
    marker = f"60.{uuid.uuid4().int % 10**9:09d}"  # a sleep no other process has
    handle = backend.start(
        task_id, [sh(f"echo $$ > pid; exec sleep {marker}"), sh("touch after")], tmp_path
    )
    wait_running(backend, handle, tmp_path / "pid")
    began = time.monotonic()
    backend.cancel(handle)
    backend.cancel(handle)  # idempotent
    assert time.monotonic() - began < 2 * POLL_LIMIT_S, "cancel blocked"
    status = wait(backend, handle, timeout_s=CANCEL_TIMEOUT_S)
    assert status.state is TaskState.CANCELED, status
    assert status.exit_code is None
    assert pids_of(marker, word=True) == [], "CANCELED while the work it started still runs"
    assert not (tmp_path / "after").exists(), "an executor ran after the cancel"
    backend.cancel(handle)  # forgotten now: a no-op
    with pytest.raises(KeyError):
        backend.poll(handle)


def test_cancel_of_finished_or_unknown_work_is_a_no_op(
    backend: Backend, kind: str, task_id: str, tmp_path: Path
) -> None:
    handle = backend.start(task_id, [Executor(("true",))], tmp_path)
    status = wait(backend, handle)
    assert status.state is TaskState.COMPLETE, status
    backend.cancel(handle)
    backend.cancel(Handle(task_id="never-started", backend=kind, ref="9999999"))
    with pytest.raises(KeyError):
        backend.poll(handle)


def test_capacity(backend: Backend, kind: str) -> None:
    capacity = backend.capacity()
    assert (capacity is not None) is KNOWS_CAPACITY[kind], f"capacity() gave {capacity}"
    if capacity is None:
        return
    assert isinstance(capacity, Capacity)
    assert capacity.nodes >= 1
    assert capacity.cpus >= 1
    assert 0 <= capacity.free_cpus <= capacity.cpus
    assert 0 <= capacity.free_gpus <= capacity.gpus
    assert sum(capacity.gpus_by_model.values()) <= capacity.gpus


def test_a_fresh_instance_reattaches_to_running_work(
    make_backend: Factory, kind: str, task_id: str, tmp_path: Path
) -> None:
    first = make_backend()
    handle = first.start(task_id, [sh("echo up > started; sleep 2; echo survived")], tmp_path)
    wait_running(first, handle, tmp_path / "started")

    second = make_backend()  # the agent restarted: only the task id and the ref survive
    assert second.reattach(f"{task_id}-other", handle.ref) is None  # not that task's work
    again = second.reattach(task_id, handle.ref)
    assert (again is not None) is REATTACHES[kind], f"reattach gave {again}"
    if again is not None:
        assert (again.task_id, again.backend, again.ref) == (task_id, kind, handle.ref)
    # Whoever still holds the work sees it to its end: the fresh instance when it reattached
    # (the first is dropped, as when an agent dies), else the first (its children are its own).
    holder, held = (second, again) if again is not None else (first, handle)
    del first
    status = wait(holder, held)
    assert status.state is TaskState.COMPLETE, status
    assert status.stdout_tail == "survived\n"
    with pytest.raises(KeyError):
        holder.poll(held)


def test_an_unknown_command_is_exit_127(backend: Backend, task_id: str, tmp_path: Path) -> None:
    missing = f"suanli-no-such-command-{uuid.uuid4().hex[:6]}"
    status = wait(backend, backend.start(task_id, [Executor((missing,))], tmp_path))
    assert status.state is TaskState.EXECUTOR_ERROR, status
    assert status.exit_code == 127
    assert [log.exit_code for log in status.executors] == [127]


# -- preemption, maximum run time, checkpoints (issue 15) -----------------------------------

# How long after `preempt` the work may take to end: the grace the work is given, then the
# engine's own kill (Slurm's KillWait of 5 s after the scancel that follows the grace; Ray's
# stop wait, fixed at submission from `start`'s grace_s), then a poll. A bound, not a benchmark.
PREEMPT_GRACE_S = 2.0
PREEMPT_TIMEOUT_S = PREEMPT_GRACE_S + 20.0
# Every backend stops work at its max_run_s itself (Slurm's own limit, in whole minutes, is only
# the backstop): a max_run_s of 2 s ends within the grace, plus Slurm's KillWait and a poll.
MAX_RUN_S = 2.0
MAX_RUN_TIMEOUT_S = {"local": 30.0, "ray": 60.0, "slurm": 60.0}


def test_preempt_stops_running_work_and_ends_preempted(
    backend: Backend, task_id: str, tmp_path: Path
) -> None:
    marker = f"60.{uuid.uuid4().int % 10**9:09d}"  # a sleep no other process has
    handle = backend.start(
        task_id,
        [sh(f"echo $$ > pid; exec sleep {marker}"), sh("touch after")],
        tmp_path,
        grace_s=PREEMPT_GRACE_S,
    )
    wait_running(backend, handle, tmp_path / "pid")
    began = time.monotonic()
    backend.preempt(handle, PREEMPT_GRACE_S)
    backend.preempt(handle, PREEMPT_GRACE_S)  # idempotent
    assert time.monotonic() - began < 2 * POLL_LIMIT_S, "preempt blocked"
    status = wait(backend, handle, timeout_s=PREEMPT_TIMEOUT_S)
    assert status.state is TaskState.PREEMPTED, status
    assert status.exit_code is None
    assert status.usage.wall_s > 0, "a preempted task is charged for what ran: its usage"
    assert pids_of(marker, word=True) == [], "PREEMPTED while the work it started still runs"
    assert not (tmp_path / "after").exists(), "an executor ran after the preemption"
    backend.preempt(handle, PREEMPT_GRACE_S)  # forgotten now: a no-op
    with pytest.raises(KeyError):
        backend.poll(handle)


def test_preempt_sends_sigterm_first_so_the_task_can_save_its_state(
    backend: Backend, task_id: str, tmp_path: Path
) -> None:
    script = (
        "trap 'echo saved > saved-on-term; exit 0' TERM; echo $$ > pid; while :; do sleep 0.1; done"
    )
    handle = backend.start(task_id, [sh(script)], tmp_path, grace_s=PREEMPT_GRACE_S)
    wait_running(backend, handle, tmp_path / "pid")
    backend.preempt(handle, PREEMPT_GRACE_S)
    status = wait(backend, handle, timeout_s=PREEMPT_TIMEOUT_S)
    assert status.state is TaskState.PREEMPTED, status
    assert (tmp_path / "saved-on-term").read_text() == "saved\n", "no SIGTERM before the kill"


def test_a_task_that_ignores_sigterm_is_killed_after_the_grace(
    backend: Backend, task_id: str, tmp_path: Path
) -> None:
    marker = f"61.{uuid.uuid4().int % 10**9:09d}"
    script = f"trap '' TERM; echo $$ > pid; sleep {marker}; echo survived > survived"
    handle = backend.start(task_id, [sh(script)], tmp_path, grace_s=PREEMPT_GRACE_S)
    wait_running(backend, handle, tmp_path / "pid")
    backend.preempt(handle, PREEMPT_GRACE_S)
    status = wait(backend, handle, timeout_s=PREEMPT_TIMEOUT_S)
    assert status.state is TaskState.PREEMPTED, status
    assert pids_of(marker, word=True) == [], "PREEMPTED while the work it started still runs"
    assert not (tmp_path / "survived").exists()


def test_preempt_of_finished_work_keeps_its_outcome(
    backend: Backend, kind: str, task_id: str, tmp_path: Path
) -> None:
    handle = backend.start(task_id, [Executor(("true",))], tmp_path)
    status = wait(backend, handle)
    assert status.state is TaskState.COMPLETE, status
    backend.preempt(handle, PREEMPT_GRACE_S)
    backend.preempt(Handle(task_id="never-started", backend=kind, ref="9999998"), 1.0)


def test_max_run_time_stops_the_task_with_the_reason(
    backend: Backend, kind: str, task_id: str, tmp_path: Path
) -> None:
    marker = f"600.{uuid.uuid4().int % 10**9:09d}"  # outlives even Slurm's time limit
    handle = backend.start(
        task_id,
        [sh(f"echo $$ > pid; exec sleep {marker}"), sh("touch after")],
        tmp_path,
        max_run_s=MAX_RUN_S,
        grace_s=1.0,
    )
    status = wait(backend, handle, timeout_s=MAX_RUN_TIMEOUT_S[kind])
    assert status.state is TaskState.EXECUTOR_ERROR, status
    assert status.reason == max_run_reason(MAX_RUN_S)
    assert "exceeded its maximum run time of 2 s" in status.reason
    assert "超过了最长运行时间 2 秒" in status.reason
    assert status.usage.wall_s >= MAX_RUN_S
    assert pids_of(marker, word=True) == [], "ended while the work it started still runs"
    assert not (tmp_path / "after").exists()


def test_work_within_its_max_run_time_completes(
    backend: Backend, task_id: str, tmp_path: Path
) -> None:
    handle = backend.start(task_id, [sh("echo quick")], tmp_path, max_run_s=600.0)
    status = wait(backend, handle)
    assert status.state is TaskState.COMPLETE, status
    assert status.stdout_tail == "quick\n"


def test_the_checkpoint_directory_is_given_and_kept(
    backend: Backend, task_id: str, tmp_path: Path
) -> None:
    """`SUANLI_CHECKPOINT_DIR` names the directory the agent keeps for the task (here under
    the host's /tmp, which the local backend's private /tmp would hide unless it keeps it)."""
    checkpoint = tmp_path / "checkpoints" / task_id
    checkpoint.mkdir(parents=True)
    (checkpoint / "step").write_text("41\n")
    script = (
        'test "$SUANLI_CHECKPOINT_DIR" = ' + str(checkpoint) + " || exit 9; "
        'n=$(cat "$SUANLI_CHECKPOINT_DIR/step"); echo "resumed at $n"; '
        'echo $((n + 1)) > "$SUANLI_CHECKPOINT_DIR/step"'
    )
    handle = backend.start(task_id, [sh(script)], tmp_path / "task", checkpoint_dir=checkpoint)
    status = wait(backend, handle)
    assert status.state is TaskState.COMPLETE, status
    assert status.stdout_tail == "resumed at 41\n"
    assert (checkpoint / "step").read_text() == "42\n"
