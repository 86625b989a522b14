"""The local backend against real subprocesses: outcomes, output, environment, order, cancel."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from suanli.agent.backends import (
    Accelerator,
    Executor,
    Handle,
    Status,
    TaskState,
    backend_named,
)
from suanli.agent.backends.local import (
    TAIL_BYTES,
    LocalBackend,
    host_accelerators,
    kill_leftovers,
    private_tmp_available,
    read_tail,
    start_ticks,
)
from suanli.errors import InvalidValue
from tests.processes import pids_of
from tests.waiting import poll, wait_until

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX process groups")


# The interpreter itself, not the venv's link to it: a checkout under /tmp is hidden from
# executors, which get a private /tmp.
PYTHON = os.path.realpath(sys.executable)


def sh(script: str, **env: str) -> Executor:
    return Executor(command=("sh", "-c", script), env=env)


def wait_for(backend: LocalBackend, handle: Handle, timeout_s: float = 10.0) -> Status:
    return wait_until(
        lambda: backend.poll(handle), f"task {handle.task_id} to end", timeout_s, every_s=0.01
    )


def alive(pid: int) -> bool:
    """`os.kill(pid, 0)` succeeds, and the process is not a zombie awaiting its reaper."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no procfs: trust kill(0)
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def unique_sleep() -> str:
    """A `sleep` argument no other process has: a task's pids are private to its namespace, so
    the tests find its processes on the host by their command line."""
    return f"60.{os.getpid()}{time.time_ns() % 10**9:09d}"


@pytest.fixture
def backend() -> LocalBackend:
    return LocalBackend(grace_s=0.5)


def test_a_successful_command_completes_with_its_output(
    backend: LocalBackend, tmp_path: Path
) -> None:
    handle = backend.start("t-1", [sh("echo hello")], tmp_path / "t-1", devices=2)
    status = wait_for(backend, handle)
    assert status.state is TaskState.COMPLETE
    assert status.exit_code == 0
    assert status.stdout_tail == "hello\n"
    assert status.stderr_tail == ""
    assert status.usage.wall_s > 0
    assert status.usage.device_s == pytest.approx(2 * status.usage.wall_s)
    assert (tmp_path / "t-1" / "stdout.txt").read_text() == "hello\n"


def test_poll_does_not_block_and_forgets_the_task_after_its_end(
    backend: LocalBackend, tmp_path: Path
) -> None:
    handle = backend.start("t-1", [sh("sleep 0.3")], tmp_path / "t-1")
    began = time.monotonic()
    assert backend.poll(handle) is None
    assert time.monotonic() - began < 0.1
    wait_for(backend, handle)
    with pytest.raises(KeyError):
        backend.poll(handle)
    backend.cancel(handle)  # a no-op once forgotten


def test_a_failing_command_is_an_executor_error_with_its_code_and_stderr(
    backend: LocalBackend, tmp_path: Path
) -> None:
    handle = backend.start("t-1", [sh("echo oops >&2; exit 3")], tmp_path / "t-1")
    status = wait_for(backend, handle)
    assert status.state is TaskState.EXECUTOR_ERROR
    assert status.exit_code == 3
    assert "oops" in status.stderr_tail


def test_env_is_the_executors_over_a_minimal_set_and_runs_in_the_task_directory(
    backend: LocalBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SUANLI_AGENT_SECRET", "never-in-a-task")
    task_dir = tmp_path / "t-1"
    script = 'echo "$SUANLI_GREETING|$PATH|$(pwd)|$HOME|$LANG|$TMPDIR"; env'
    handle = backend.start("t-1", [sh(script, SUANLI_GREETING="你好")], task_dir)
    first, *env = wait_for(backend, handle).stdout_tail.strip().splitlines()
    greeting, path, cwd, home, lang, tmpdir = first.split("|")
    assert greeting == "你好"
    assert path == os.environ["PATH"]  # the agent's: how a provider offers its software
    assert Path(cwd).resolve() == task_dir.resolve()
    assert (home, lang) == (str(task_dir), "C.UTF-8")
    assert tmpdir == ("/tmp" if backend.private_tmp else str(task_dir / "tmp"))
    names = {line.split("=", 1)[0] for line in env}
    assert "SUANLI_AGENT_SECRET" not in names
    # what sh itself adds (PWD, SHLVL, _) aside, nothing beyond the minimal set and the task's
    assert names - {"PWD", "SHLVL", "_", "OLDPWD"} == {
        "PATH",
        "HOME",
        "TMPDIR",
        "LANG",
        "SUANLI_GREETING",
    }


def test_an_executor_workdir_is_a_task_path(backend: LocalBackend, tmp_path: Path) -> None:
    executors = [
        Executor(command=("sh", "-c", "echo 1 > marker"), workdir="/work/here"),
        Executor(command=("sh", "-c", "echo 2 > marker"), workdir="sub"),
    ]
    status = wait_for(backend, backend.start("t-1", executors, tmp_path / "t-1"))
    assert status.state is TaskState.COMPLETE, status
    # absolute or relative, a workdir lands inside the task directory
    assert (tmp_path / "t-1" / "work" / "here" / "marker").read_text() == "1\n"
    assert (tmp_path / "t-1" / "sub" / "marker").read_text() == "2\n"


def test_a_workdir_cannot_leave_the_task_directory(backend: LocalBackend, tmp_path: Path) -> None:
    executors = [Executor(command=("true",), workdir="../outside")]
    status = wait_for(backend, backend.start("t-1", executors, tmp_path / "t-1"))
    assert status.state is TaskState.EXECUTOR_ERROR
    assert "executors[0].workdir" in status.reason
    assert not (tmp_path / "outside").exists()


def test_executor_stdin_stdout_and_stderr_files(backend: LocalBackend, tmp_path: Path) -> None:
    task_dir = tmp_path / "t-1"
    (task_dir / "data").mkdir(parents=True)
    (task_dir / "data" / "in.txt").write_text("b\na\n")
    executors = [
        Executor(
            command=("sh", "-c", "sort; echo oops >&2"),
            stdin="/data/in.txt",
            stdout="/out/sorted.txt",
            stderr="/out/err.txt",
        ),
        sh("echo shared"),
    ]
    status = wait_for(backend, backend.start("t-1", executors, task_dir))
    assert status.state is TaskState.COMPLETE, status
    assert (task_dir / "out" / "sorted.txt").read_text() == "a\nb\n"
    assert (task_dir / "out" / "err.txt").read_text() == "oops\n"
    first, second = status.executors
    assert (first.stdout_tail, first.stderr_tail) == ("a\nb\n", "oops\n")  # from its files
    assert second.stdout_tail == "shared\n" and status.stdout_tail == "shared\n"
    assert first.started_at is not None and first.ended_at is not None
    assert first.started_at <= first.ended_at <= second.started_at  # type: ignore[operator]


@pytest.mark.skipif(not private_tmp_available(), reason="this kernel refuses mount namespaces")
def test_each_task_gets_a_private_tmp(tmp_path: Path) -> None:
    backend = LocalBackend(private_tmp=True)
    marker = f"suanli-{os.getpid()}-{time.time_ns()}"
    executors = [sh(f"echo inside > /tmp/{marker}; ls /tmp")]
    status = wait_for(backend, backend.start("t-1", executors, tmp_path / "t-1"))
    assert status.state is TaskState.COMPLETE, status
    assert status.stdout_tail == f"{marker}\n"  # the host's /tmp is not visible
    assert not Path("/tmp", marker).exists()
    assert (tmp_path / "t-1" / "tmp" / marker).read_text() == "inside\n"


def test_executors_run_in_order(backend: LocalBackend, tmp_path: Path) -> None:
    executors = [sh("echo one; sleep 0.1"), sh("echo two")]
    status = wait_for(backend, backend.start("t-1", executors, tmp_path / "t-1"))
    assert status.state is TaskState.COMPLETE
    assert status.stdout_tail == "one\ntwo\n"
    assert [e.stdout_tail for e in status.executors] == ["one\n", "two\n"]
    assert [e.exit_code for e in status.executors] == [0, 0]
    assert status.executors[0].wall_s >= 0.1


def test_the_second_executor_does_not_run_when_the_first_fails(
    backend: LocalBackend, tmp_path: Path
) -> None:
    marker = tmp_path / "t-1" / "second-ran"  # commands name task paths: cwd is the task dir
    executors = [sh("echo one; exit 5"), sh("touch second-ran; echo two")]
    status = wait_for(backend, backend.start("t-1", executors, tmp_path / "t-1"))
    assert status.state is TaskState.EXECUTOR_ERROR
    assert status.exit_code == 5
    assert status.stdout_tail == "one\n"
    assert "executor 1 of 2" in status.reason
    assert not marker.exists()


def test_an_ignore_error_executor_lets_the_next_one_run(
    backend: LocalBackend, tmp_path: Path
) -> None:
    first = Executor(command=("sh", "-c", "echo one; exit 5"), ignore_error=True)
    status = wait_for(backend, backend.start("t-1", [first, sh("echo two")], tmp_path / "t-1"))
    assert status.state is TaskState.COMPLETE
    assert status.exit_code == 0
    assert status.stdout_tail == "one\ntwo\n"
    assert status.reason == "executor 1 of 2 exited with code 5 (ignore_error)"
    assert [(e.exit_code, e.stdout_tail) for e in status.executors] == [(5, "one\n"), (0, "two\n")]
    # a later failure without ignore_error still ends the task
    executors = [first, sh("exit 7"), sh("echo never")]
    status = wait_for(backend, backend.start("t-2", executors, tmp_path / "t-2"))
    assert status.state is TaskState.EXECUTOR_ERROR and status.exit_code == 7


def test_ignore_error_must_be_a_boolean() -> None:
    with pytest.raises(InvalidValue, match="ignore_error"):
        Executor.from_json({"command": ["true"], "ignore_error": "yes"})
    assert Executor.from_json({"command": ["true"], "ignore_error": True}).ignore_error


def test_a_missing_binary_is_an_executor_error_127(backend: LocalBackend, tmp_path: Path) -> None:
    executors = [Executor(command=("suanli-no-such-binary-xyz", "--flag"))]
    status = wait_for(backend, backend.start("t-1", executors, tmp_path / "t-1"))
    assert status.state is TaskState.EXECUTOR_ERROR
    assert status.exit_code == 127
    assert "suanli-no-such-binary-xyz" in status.stderr_tail


def test_cancel_kills_the_whole_process_group(backend: LocalBackend, tmp_path: Path) -> None:
    marker = unique_sleep()
    script = f"sleep {marker} & sleep {marker} & echo started > pids; wait"
    handle = backend.start("t-1", [sh(script)], tmp_path / "t-1")

    def started() -> bool:
        assert backend.poll(handle) is None
        return len(pids_of(marker, word=True)) >= 2

    wait_until(started, "the script to start its children", timeout_s=5, every_s=0.01)
    children = pids_of(marker, word=True)
    everything = pids_of(marker)  # the children, their shell, and the wrappers around it

    began = time.monotonic()
    backend.cancel(handle)
    status = wait_for(backend, handle, timeout_s=5)
    assert time.monotonic() - began < 3
    assert status.state is TaskState.CANCELED
    poll(lambda: not any(alive(pid) for pid in children), timeout_s=3)
    assert [pid for pid in everything if alive(pid)] == []


def test_cancel_escalates_to_sigkill_when_sigterm_is_ignored(
    backend: LocalBackend, tmp_path: Path
) -> None:
    ready = tmp_path / "t-1" / "ready"
    script = "trap '' TERM; touch ready; while :; do sleep 0.05; done"
    handle = backend.start("t-1", [sh(script)], tmp_path / "t-1")

    def ready_now() -> bool:
        assert backend.poll(handle) is None
        return ready.exists()

    wait_until(ready_now, "the executor to start", timeout_s=10, every_s=0.01)
    began = time.monotonic()
    backend.cancel(handle)
    status = wait_for(backend, handle, timeout_s=5)
    assert status.state is TaskState.CANCELED
    assert backend.grace_s <= time.monotonic() - began < 3


def test_a_task_leaves_no_process_behind(backend: LocalBackend, tmp_path: Path) -> None:
    marker = unique_sleep()
    handle = backend.start("t-1", [sh(f"sleep {marker} & echo started")], tmp_path / "t-1")
    status = wait_for(backend, handle, timeout_s=5)
    assert status.state is TaskState.COMPLETE
    poll(lambda: not pids_of(marker), timeout_s=3)
    assert pids_of(marker) == []


def test_output_tails_are_at_most_4_kib(backend: LocalBackend, tmp_path: Path) -> None:
    script = (
        "import sys\nsys.stdout.write('算' * 5000 + 'END')\nsys.stderr.write('x' * 10000 + 'END')\n"
    )
    executors = [Executor(command=(PYTHON, "-c", script), env={"PYTHONIOENCODING": "utf-8"})]
    status = wait_for(backend, backend.start("t-1", executors, tmp_path / "t-1"))
    assert status.state is TaskState.COMPLETE
    for tail in (status.stdout_tail, status.stderr_tail):
        assert len(tail.encode()) <= TAIL_BYTES
        assert tail.endswith("END")
    assert set(status.stdout_tail[:-3]) == {"算"}  # the character cut in half is dropped
    assert len(status.stderr_tail) == TAIL_BYTES


def test_cpu_time_counts_the_work_of_the_executor(backend: LocalBackend, tmp_path: Path) -> None:
    burn = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass"
    executors = [sh(f"{PYTHON} -c '{burn}'")]
    status = wait_for(backend, backend.start("t-1", executors, tmp_path / "t-1"))
    assert status.state is TaskState.COMPLETE
    assert status.usage.cpu_s >= 0.25


def test_read_tail_of_a_missing_file_is_empty(tmp_path: Path) -> None:
    assert read_tail(tmp_path / "absent") == ""


def test_backend_named() -> None:
    assert backend_named("local").name == "local"
    assert backend_named("slurm", partition="debug").name == "slurm"  # constructing runs nothing
    with pytest.raises(InvalidValue, match="one of local, slurm, ray"):
        backend_named("kubernetes")


def test_an_executor_killed_by_a_signal_exits_128_plus_its_number(
    backend: LocalBackend, tmp_path: Path
) -> None:
    status = wait_for(backend, backend.start("t-1", [sh("kill -9 $$")], tmp_path / "t-1"))
    assert status.state is TaskState.EXECUTOR_ERROR
    assert status.exit_code == 128 + 9  # as a shell and the Slurm backend report it


def test_without_a_pid_namespace_a_task_still_runs(tmp_path: Path) -> None:
    backend = LocalBackend(grace_s=0.5, pid_namespace=False)
    assert not backend.pid_namespace
    status = wait_for(backend, backend.start("t-1", [sh("echo $$")], tmp_path / "t-1"))
    assert status.state is TaskState.COMPLETE
    assert int(status.stdout_tail) > 1  # a host pid: no namespace of its own


def test_kill_leftovers_spares_a_process_that_reused_the_pid(tmp_path: Path) -> None:
    marker = unique_sleep()
    group = subprocess.Popen(["sleep", marker], start_new_session=True)
    try:
        started = start_ticks(group.pid)
        assert started is not None
        assert not kill_leftovers(group.pid, started + 1)  # another process with that pid
        assert group.poll() is None
        assert kill_leftovers(group.pid, started)
        assert group.wait(timeout=5) == -9
    finally:
        if group.poll() is None:
            group.kill()
            group.wait()


# -- device binding -------------------------------------------------------------------------------


SHOW = (
    'echo "$CUDA_VISIBLE_DEVICES|$HIP_VISIBLE_DEVICES|$ASCEND_RT_VISIBLE_DEVICES|'
    '$CUDA_DEVICE_ORDER"'
)
SHOW_DEVICES = sh(SHOW)


def test_a_gpu_task_is_bound_to_free_devices_of_the_host(tmp_path: Path) -> None:
    backend = LocalBackend(grace_s=0.5, accelerators={"gpu": ["0", "1", "2"]})
    gpu = Accelerator("gpu")
    long = backend.start(
        "t-1", [sh(f"sleep {unique_sleep()}")], tmp_path / "t-1", 2, accelerator=gpu
    )
    assert backend.bound_devices(long) == ("gpu", ("0", "1"))
    with pytest.raises(InvalidValue) as refused:  # one free, two asked
        backend.start("t-2", [SHOW_DEVICES], tmp_path / "t-2", 2, accelerator=gpu)
    assert refused.value.field == "devices"
    own = sh(SHOW, CUDA_VISIBLE_DEVICES="7")
    show = backend.start("t-3", [own], tmp_path / "t-3", 1, accelerator=gpu)
    assert (
        wait_for(backend, show).stdout_tail == "2|2||PCI_BUS_ID\n"
    )  # the executor's own env loses
    backend.cancel(long)
    wait_for(backend, long)
    again = backend.start("t-4", [SHOW_DEVICES], tmp_path / "t-4", 2, accelerator=gpu)
    assert wait_for(backend, again).stdout_tail == "0,1|0,1||PCI_BUS_ID\n"  # freed at the end


def test_an_npu_task_sees_its_ascend_devices_and_a_cpu_task_none(tmp_path: Path) -> None:
    backend = LocalBackend(grace_s=0.5, accelerators={"npu": ["0", "1"]})
    npu = backend.start("t-1", [SHOW_DEVICES], tmp_path / "t-1", 1, accelerator=Accelerator("npu"))
    assert wait_for(backend, npu).stdout_tail == "||0|\n"
    cpu = backend.start("t-2", [SHOW_DEVICES], tmp_path / "t-2", 4)
    assert backend.bound_devices(cpu) == ("cpu", ())
    assert wait_for(backend, cpu).stdout_tail == "|||\n"


def test_a_host_without_devices_of_the_kind_binds_none(tmp_path: Path) -> None:
    backend = LocalBackend(grace_s=0.5, accelerators={})
    handle = backend.start(
        "t-1", [SHOW_DEVICES], tmp_path / "t-1", 8, accelerator=Accelerator("gpu")
    )
    assert backend.bound_devices(handle) == ("gpu", ())
    assert wait_for(backend, handle).stdout_tail == "|||\n"


def test_the_host_devices_come_from_the_agents_own_visibility_else_device_nodes(
    tmp_path: Path,
) -> None:
    assert host_accelerators("gpu", {"CUDA_VISIBLE_DEVICES": "2, 3"}, tmp_path) == ("2", "3")
    assert host_accelerators("gpu", {"CUDA_VISIBLE_DEVICES": ""}, tmp_path) == ()
    for name in ("nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm", "davinci0", "davinci_manager"):
        (tmp_path / name).touch()
    assert host_accelerators("gpu", {}, tmp_path) == ("0", "1")
    assert host_accelerators("npu", {}, tmp_path) == ("0",)
    assert host_accelerators("gpu", {}, tmp_path / "missing") == ()
