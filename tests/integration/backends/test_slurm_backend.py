"""The Slurm backend against a real Slurm cluster of two nodes on this machine, each with four
GPUs of type a100 as GRES (`scripts/slurm.sh start`), no mocks.

If the cluster cannot be started the tests fail with the script's message, unless
SUANLI_SKIP_SLURM=1 is set (then they are skipped with it).
"""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from suanli.agent.backends import (
    Accelerator,
    Executor,
    Handle,
    NodeCapacity,
    StartRequest,
    Status,
    TaskState,
)
from suanli.agent.backends.slurm import SlurmBackend, parse_capacity
from suanli.errors import InvalidValue
from tests.processes import pids_of
from tests.waiting import poll, wait_until

REPO = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.slow


@pytest.fixture
def partition(slurm_partition: str) -> str:
    """The partition of the cluster that scripts/slurm.sh starts (conftest.py)."""
    return slurm_partition


@pytest.fixture
def backend(partition: str) -> SlurmBackend:
    return SlurmBackend(partition=partition)


def wait(backend: SlurmBackend, handle: Handle, timeout_s: float = 60.0) -> Status:
    """Poll until the terminal status (as an agent would, every 50 ms)."""
    status = poll(lambda: backend.poll(handle), timeout_s, every_s=0.05)
    if status is None:
        backend.cancel(handle)
        raise AssertionError(f"job {handle.ref} did not finish in {timeout_s} s")
    return status


def wait_running(backend: SlurmBackend, handle: Handle, marker: Path) -> None:
    """Wait until the job's first executor has written `marker` (it is really running)."""

    def started() -> bool:
        assert backend.poll(handle) is None
        return marker.exists()

    wait_until(started, f"job {handle.ref} to start", timeout_s=30, every_s=0.05)


def sh(script: str, **kwargs: object) -> Executor:
    return Executor(command=("sh", "-c", script), **kwargs)  # type: ignore[arg-type]


def test_a_job_completes_with_its_output(backend: SlurmBackend, tmp_path: Path) -> None:
    handle = backend.start("echo", [Executor(("echo", "hello slurm"))], tmp_path, devices=1)
    assert handle.backend == "slurm" and handle.ref.isdigit()
    status = wait(backend, handle)
    assert status.state is TaskState.COMPLETE and status.exit_code == 0
    assert status.stdout_tail == "hello slurm\n"
    assert (tmp_path / "stdout.txt").read_text() == "hello slurm\n"
    assert status.usage.wall_s >= 0 and status.usage.device_s == pytest.approx(status.usage.wall_s)


def test_the_second_poll_after_the_end_raises_key_error(
    backend: SlurmBackend, tmp_path: Path
) -> None:
    handle = backend.start("twice", [Executor(("true",))], tmp_path)
    assert wait(backend, handle).state is TaskState.COMPLETE
    with pytest.raises(KeyError):
        backend.poll(handle)
    backend.cancel(handle)  # a no-op for a forgotten handle


def test_executors_run_in_order_with_their_own_logs(backend: SlurmBackend, tmp_path: Path) -> None:
    executors = [
        sh("echo one; echo oops >&2"),
        sh('echo "$GREETING from $(pwd)"', env={"GREETING": "two"}, workdir="/work"),
        sh("tr a-z A-Z", stdin="/work/in.txt", stdout="/out/upper.txt"),
    ]
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "in.txt").write_text("three\n")
    status = wait(backend, backend.start("order", executors, tmp_path))
    assert status.state is TaskState.COMPLETE, status.reason
    assert status.stdout_tail == f"one\ntwo from {tmp_path.resolve()}/work\n"
    assert [log.exit_code for log in status.executors] == [0, 0, 0]
    first, second, third = status.executors
    assert (first.stdout_tail, first.stderr_tail) == ("one\n", "oops\n")
    assert (second.stdout_tail, second.stderr_tail) == (f"two from {tmp_path.resolve()}/work\n", "")
    assert third.stdout_tail == "THREE\n"
    assert (tmp_path / "out" / "upper.txt").read_text() == "THREE\n"
    assert first.started_at is not None and first.ended_at is not None
    assert second.started_at is not None and third.started_at is not None
    assert first.started_at <= first.ended_at <= second.started_at <= third.started_at


def test_a_failing_executor_ends_the_task_with_its_code(
    backend: SlurmBackend, tmp_path: Path
) -> None:
    executors = [sh("echo before"), sh("echo failing >&2; exit 7"), sh("echo never")]
    status = wait(backend, backend.start("fail", executors, tmp_path))
    assert status.state is TaskState.EXECUTOR_ERROR
    assert status.exit_code == 7
    assert status.reason == "executor 2 of 3 exited with code 7"
    assert [log.exit_code for log in status.executors] == [0, 7]
    assert status.executors[1].stderr_tail == "failing\n"
    assert "never" not in status.stdout_tail


def test_ignore_error_lets_the_next_executor_run(backend: SlurmBackend, tmp_path: Path) -> None:
    executors = [sh("exit 3", ignore_error=True), sh("echo after")]
    status = wait(backend, backend.start("ignore", executors, tmp_path))
    assert status.state is TaskState.COMPLETE and status.exit_code == 0
    assert status.reason == "executor 1 of 2 exited with code 3 (ignore_error)"
    assert [log.exit_code for log in status.executors] == [3, 0]
    assert status.stdout_tail == "after\n"


def test_a_missing_program_is_an_executor_error(backend: SlurmBackend, tmp_path: Path) -> None:
    status = wait(backend, backend.start("missing", [Executor(("no-such-program-x",))], tmp_path))
    assert status.state is TaskState.EXECUTOR_ERROR and status.exit_code == 127
    assert "no-such-program-x" in status.stderr_tail


def test_a_path_outside_the_task_directory_fails_that_executor(
    backend: SlurmBackend, tmp_path: Path
) -> None:
    executors = [sh("echo ok"), Executor(("cat",), stdin="../../etc/passwd")]
    status = wait(backend, backend.start("escape", executors, tmp_path / "task"))
    assert status.state is TaskState.EXECUTOR_ERROR and status.exit_code == 126
    assert "executors[1].stdin" in status.stderr_tail


def test_cancel_of_a_running_job_ends_it_canceled(backend: SlurmBackend, tmp_path: Path) -> None:
    executors = [sh("touch started; sleep 60"), sh("echo never")]
    handle = backend.start("cancel", executors, tmp_path)
    wait_running(backend, handle, tmp_path / "started")
    began = time.monotonic()
    backend.cancel(handle)
    assert time.monotonic() - began < 5  # cancel does not wait for the job
    backend.cancel(handle)  # idempotent
    status = wait(backend, handle, timeout_s=30)
    assert status.state is TaskState.CANCELED and status.exit_code is None
    # the executor was ended by SIGTERM (128 + 15, as the local backend reports it); the batch
    # shell outlived the signal only to record that, and started nothing after it
    assert len(status.executors) == 1 and status.executors[0].exit_code == 143
    assert "never" not in status.stdout_tail
    backend.cancel(handle)  # a no-op once forgotten


def test_capacity_reports_the_nodes_cpus(backend: SlurmBackend) -> None:
    capacity = backend.capacity()
    assert capacity is not None
    assert capacity.nodes >= 1
    assert capacity.cpus >= 16  # scripts/slurm.sh declares 16 CPUs on the node
    assert 0 <= capacity.free_cpus <= capacity.cpus
    assert capacity.memory_mb > 0


def test_capacity_is_none_when_sinfo_fails() -> None:
    backend = SlurmBackend(commands={"sinfo": ["false"]})
    assert backend.capacity() is None


def test_a_fresh_backend_reattaches_to_a_running_job(
    backend: SlurmBackend, partition: str, tmp_path: Path
) -> None:
    executors = [
        sh("touch started; sleep 2; echo first"),
        sh("echo second; exit 4", ignore_error=True),
    ]
    handle = backend.start("reattach", executors, tmp_path, devices=2)
    wait_running(backend, handle, tmp_path / "started")

    fresh = SlurmBackend(partition=partition)  # as after an agent restart
    assert fresh.reattach("another-task", handle.ref) is None
    again = fresh.reattach("reattach", handle.ref)
    assert again == handle
    status = wait(fresh, again)
    assert status.state is TaskState.COMPLETE, status.reason
    assert status.stdout_tail == "first\nsecond\n"
    assert [log.exit_code for log in status.executors] == [0, 4]
    assert status.usage.wall_s >= 2
    assert status.usage.device_s == pytest.approx(2 * status.usage.wall_s)

    # The job has finished; Slurm still knows it, so it can be found once more.
    assert SlurmBackend(partition=partition).reattach("reattach", handle.ref) == handle


def test_reattach_to_an_unknown_job_is_none(backend: SlurmBackend) -> None:
    assert backend.reattach("nothing", "999999") is None
    assert backend.reattach("nothing", "not-a-job") is None


def test_cpu_time_is_metered(backend: SlurmBackend, tmp_path: Path) -> None:
    burn = "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done"
    status = wait(backend, backend.start("burn", [Executor(("bash", "-c", burn))], tmp_path))
    assert status.state is TaskState.COMPLETE
    assert status.usage.cpu_s > 0.1
    assert status.usage.wall_s >= status.usage.cpu_s * 0.5


def test_a_failing_sbatch_is_a_system_error_on_the_next_poll(tmp_path: Path) -> None:
    backend = SlurmBackend(partition="no-such-partition")
    handle = backend.start("refused", [Executor(("true",))], tmp_path)
    status = backend.poll(handle)
    assert status is not None and status.state is TaskState.SYSTEM_ERROR
    assert "invalid partition" in status.reason.lower()
    with pytest.raises(KeyError):
        backend.poll(handle)


def test_poll_waits_out_an_unreachable_slurm_then_gives_up(
    backend: SlurmBackend, partition: str, tmp_path: Path
) -> None:
    handle = backend.start("unreachable", [Executor(("true",))], tmp_path)
    now = [0.0]
    broken = SlurmBackend(
        partition=partition,
        commands={"squeue": ["false"], "scontrol": ["false"]},
        unreachable_s=60,
        clock=lambda: now[0],
    )
    assert broken.reattach("unreachable", handle.ref) is None  # scontrol fails: cannot tell
    broken._jobs[handle.ref] = backend._jobs[handle.ref]  # the same job, seen by a broken client
    assert broken.poll(handle) is None
    now[0] = 59.0
    assert broken.poll(handle) is None
    now[0] = 61.0
    status = broken.poll(handle)
    assert status is not None and status.state is TaskState.SYSTEM_ERROR
    assert "Slurm unreachable" in status.reason and "false" in status.reason
    assert wait(backend, handle).state is TaskState.COMPLETE


def test_the_time_limit_comes_from_max_run_s(backend: SlurmBackend, tmp_path: Path) -> None:
    """`scontrol show job` shows TimeLimit = ceil(max_run_s / 60) minutes; the checkpoint
    directory is exported into the job's environment."""
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    script = 'echo "$SUANLI_CHECKPOINT_DIR" > ckpt; echo up > started; sleep 600'
    handle = backend.start(
        "timelimit", [sh(script)], tmp_path / "task", max_run_s=90.0, checkpoint_dir=checkpoint
    )
    try:
        shown = subprocess.run(
            ["scontrol", "show", "job", "-o", handle.ref],
            capture_output=True,
            text=True,
            check=True,
            timeout=15,
        ).stdout
        assert "TimeLimit=00:02:00" in shown, shown
        wait_running(backend, handle, tmp_path / "task" / "started")
        assert (tmp_path / "task" / "ckpt").read_text() == f"{checkpoint}\n"
    finally:
        backend.cancel(handle)
    assert wait(backend, handle).state is TaskState.CANCELED


def test_a_preempted_job_is_signalled_then_cancelled(backend: SlurmBackend, tmp_path: Path) -> None:
    """`scancel --signal=TERM --full` reaches the executor (its trap runs), then the job is
    cancelled after the grace; whatever Slurm calls its end, the task is PREEMPTED."""
    script = (
        "trap 'echo term > got-term; exit 0' TERM; echo up > started; while :; do sleep 0.1; done"
    )
    handle = backend.start("preempted", [sh(script), sh("touch after")], tmp_path)
    wait_running(backend, handle, tmp_path / "started")
    backend.preempt(handle, 1.0)
    status = wait(backend, handle)
    assert status.state is TaskState.PREEMPTED, status
    assert (tmp_path / "got-term").read_text() == "term\n"
    assert not (tmp_path / "after").exists()


# -- accelerators (GRES), gangs (MPI), capacity per node -----------------------------------

A100 = Accelerator("gpu", "a100")  # scripts/slurm.sh declares gpu:a100:4 on each node

# `sinfo -h -N -O NodeList:|,CPUsState:|,Gres:|,GresUsed:|,Memory:|` as Slurm 22.05 printed it
# on the test cluster while a task held two GPUs on node vm-1, plus a node of another site with
# untyped GPUs and an NPU, listed in two partitions (it counts once), and a line cut short.
RECORDED_SINFO = "".join(
    [
        "vm-1                |1/15/0/16           |gpu:a100:4          |",
        "gpu:a100:2(IDX:0-1),npu:0|4000                |\n",
        "vm-2                |0/16/0/16           |gpu:a100:4          |",
        "gpu:a100:0(IDX:N/A),npu:0|4000                |\n",
        "gx-7                |8/56/0/64           |gpu:8(S:0-1),npu:910b:2|",
        "gpu:3(IDX:0-2),npu:0|512000+            |\n",
        "gx-7                |8/56/0/64           |gpu:8(S:0-1),npu:910b:2|",
        "gpu:3(IDX:0-2),npu:0|512000+            |\n",
        "broken\n",
    ]
)


def scontrol_job(ref: str) -> str:
    return subprocess.run(
        ["scontrol", "show", "job", "-o", ref],
        capture_output=True,
        text=True,
        check=True,
        timeout=15,
    ).stdout


def test_capacity_is_parsed_per_node_and_per_gres_type() -> None:
    capacity = parse_capacity(RECORDED_SINFO)
    assert capacity is not None
    assert capacity.per_node == (
        NodeCapacity("gx-7", 64, 56, {"gpu": 8}, {"gpu": 5}),
        NodeCapacity("vm-1", 16, 15, {"a100": 4}, {"a100": 2}),
        NodeCapacity("vm-2", 16, 16, {"a100": 4}, {"a100": 4}),
    )
    assert (capacity.nodes, capacity.cpus, capacity.free_cpus) == (3, 96, 87)
    assert (capacity.gpus, capacity.free_gpus) == (16, 11)
    assert capacity.gpus_by_model == {"a100": 8, "gpu": 8}
    assert capacity.memory_mb == 4000 + 4000 + 512000
    assert parse_capacity("") is None


def test_capacity_reports_both_nodes_with_their_gpus_by_model(backend: SlurmBackend) -> None:
    capacity = backend.capacity()
    assert capacity is not None
    assert capacity.nodes == len(capacity.per_node) >= 2
    assert capacity.gpus_by_model["a100"] >= 8 and capacity.gpus >= 8
    for node in capacity.per_node:
        assert node.cpus >= 16 and node.gpus_by_model == {"a100": 4}
        assert 0 <= node.free_gpus_by_model["a100"] <= 4
    assert capacity.free_gpus == sum(sum(n.free_gpus_by_model.values()) for n in capacity.per_node)


def test_a_gpu_task_holds_its_gres_while_it_runs(backend: SlurmBackend, tmp_path: Path) -> None:
    """`--gres=gpu:a100:2`: scontrol shows it on the job, Slurm binds two (placeholder) GPUs
    with CUDA_VISIBLE_DEVICES, and the free GPUs drop by two while the task runs."""
    script = 'echo "$CUDA_VISIBLE_DEVICES" > gpus; sleep 60'
    handle = backend.start("gpu", [sh(script)], tmp_path, devices=2, accelerator=A100)
    try:
        wait_running(backend, handle, tmp_path / "gpus")
        shown = scontrol_job(handle.ref)
        assert "TresPerNode=gres:gpu:a100:2" in shown, shown
        assert "NumCPUs=1 " in shown, shown
        assert len((tmp_path / "gpus").read_text().strip().split(",")) == 2
        capacity = backend.capacity()
        assert capacity is not None
        node = shown.split(" NodeList=", 1)[1].split()[0]
        held = next(n for n in capacity.per_node if n.name == node)
        assert held.free_gpus_by_model["a100"] <= 2
        assert capacity.free_gpus <= capacity.gpus - 2
    finally:
        backend.cancel(handle)
    status = wait(backend, handle)
    assert status.state is TaskState.CANCELED
    assert status.usage.device_s == pytest.approx(2 * status.usage.wall_s)


def test_a_gpu_task_of_any_model_asks_gpu_and_a_count(
    backend: SlurmBackend, tmp_path: Path
) -> None:
    handle = backend.start(
        "anygpu", [sh("echo up > started; sleep 60")], tmp_path, 1, accelerator=Accelerator("gpu")
    )
    try:
        wait_running(backend, handle, tmp_path / "started")
        assert "TresPerNode=gres:gpu:1" in scontrol_job(handle.ref)
    finally:
        backend.cancel(handle)
    assert wait(backend, handle).state is TaskState.CANCELED


MPI_HELLO = r"""
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
int main(int argc, char **argv) {
  int rank, size;
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  const char *node = getenv("SLURMD_NODENAME");
  printf("rank %d of %d on %s\n", rank, size, node ? node : "?");
  MPI_Finalize();
  return 0;
}
"""


def test_a_two_node_mpi_gang_gets_one_rank_per_node(backend: SlurmBackend, tmp_path: Path) -> None:
    mpicc = shutil.which("mpicc")
    assert mpicc is not None, "scripts/slurm.sh installs MPICH (mpicc)"
    (tmp_path / "hello.c").write_text(MPI_HELLO)
    subprocess.run([mpicc, "-o", str(tmp_path / "hello"), str(tmp_path / "hello.c")], check=True)
    executors = [Executor((str(tmp_path / "hello"),)), sh('echo "$SLURMD_NODENAME" >> nodes')]
    handle = backend.start("mpi", executors, tmp_path, devices=1, nodes=2)
    status = wait(backend, handle)
    assert status.state is TaskState.COMPLETE, status
    lines = sorted(status.executors[0].stdout_tail.splitlines())
    assert [line.split(" on ")[0] for line in lines] == ["rank 0 of 2", "rank 1 of 2"], lines
    nodes = {line.split(" on ")[1] for line in lines}
    assert len(nodes) == 2 and "?" not in nodes, lines
    # every executor of a gang runs once on each node
    assert set((tmp_path / "nodes").read_text().split()) == nodes
    assert status.usage.device_s == pytest.approx(2 * status.usage.wall_s)


def test_a_gang_larger_than_the_partition_is_refused(backend: SlurmBackend, tmp_path: Path) -> None:
    capacity = backend.capacity()
    assert capacity is not None
    with pytest.raises(InvalidValue) as refused:
        backend.start("huge", [Executor(("true",))], tmp_path, nodes=capacity.nodes + 1)
    assert refused.value.field == "nodes"
    assert f"at most the {capacity.nodes} nodes of partition" in str(refused.value)
    with pytest.raises(InvalidValue) as none:
        backend.start("none", [Executor(("true",))], tmp_path, nodes=0)
    assert none.value.field == "nodes"


def test_sbatch_refuses_a_gang_larger_than_the_partition_too(
    backend: SlurmBackend, partition: str, tmp_path: Path
) -> None:
    """Should sinfo not answer, sbatch refuses the gang ("Node count specification invalid":
    EnforcePartLimits=ALL) and the error still names `nodes`."""
    capacity = backend.capacity()
    assert capacity is not None
    blind = SlurmBackend(partition=partition, commands={"sinfo": ["false"]})
    with pytest.raises(InvalidValue) as refused:
        blind.start("huge", [Executor(("true",))], tmp_path, nodes=capacity.nodes + 1)
    assert refused.value.field == "nodes"


def test_an_accelerator_name_that_is_no_gres_name_is_refused(
    backend: SlurmBackend, tmp_path: Path
) -> None:
    with pytest.raises(InvalidValue) as refused:
        backend.start(
            "bad", [Executor(("true",))], tmp_path, 1, accelerator=Accelerator("gpu", "a 1")
        )
    assert refused.value.field == "accelerator"


def test_a_failing_rank_fails_the_gang(backend: SlurmBackend, tmp_path: Path) -> None:
    script = 'if [ "$SLURM_PROCID" = 1 ]; then exit 3; fi; sleep 30'
    status = wait(
        backend, backend.start("rankfail", [sh(script), sh("touch after")], tmp_path, nodes=2)
    )
    assert status.state is TaskState.EXECUTOR_ERROR, status
    # the executor's code is srun's: the highest of its ranks' (rank 0, killed by SIGTERM, 143)
    assert status.exit_code in (3, 143), status
    assert "task 1: Exited with exit code 3" in status.stderr_tail
    assert status.usage.wall_s < 25  # srun --kill-on-bad-exit stopped the other rank
    assert not (tmp_path / "after").exists()


def test_cancel_of_a_gang_stops_every_rank(backend: SlurmBackend, tmp_path: Path) -> None:
    marker = f"60.{uuid.uuid4().int % 10**9:09d}"  # a sleep no other process has
    script = f'echo "$SLURMD_NODENAME" >> started; exec sleep {marker}'
    handle = backend.start("gangcancel", [sh(script)], tmp_path, nodes=2)

    def both_started() -> bool:
        assert backend.poll(handle) is None
        path = tmp_path / "started"
        return path.exists() and len(path.read_text().split()) == 2

    wait_until(both_started, f"job {handle.ref} to start on both nodes", timeout_s=30, every_s=0.05)
    assert len(pids_of(marker, word=True)) == 2
    backend.cancel(handle)
    status = wait(backend, handle, timeout_s=30)
    assert status.state is TaskState.CANCELED, status
    assert pids_of(marker, word=True) == []


# -- job arrays: the tasks of one lease submitted together (`start_many`) -------------------


def requests_for(tmp_path: Path, scripts: dict[str, str], **kwargs: object) -> list[StartRequest]:
    """One request per task id, each in its own task directory under `tmp_path`."""
    return [
        StartRequest(task_id, [sh(script)], tmp_path / task_id, **kwargs)  # type: ignore[arg-type]
        for task_id, script in scripts.items()
    ]


def test_tasks_asking_the_same_resources_go_as_one_job_array(
    backend: SlurmBackend, tmp_path: Path
) -> None:
    scripts = {f"arr-{n}": f"echo task {n}; echo oops {n} >&2" for n in range(5)}
    scripts["arr-fails"] = "exit 7"
    answers = backend.start_many(requests_for(tmp_path, scripts, devices=1))
    assert all(isinstance(a, Handle) for a in answers)
    handles = [a for a in answers if isinstance(a, Handle)]
    assert [h.task_id for h in handles] == list(scripts)
    arrays = {h.ref.split("_")[0] for h in handles}
    assert len(arrays) == 1  # one sbatch for all six
    assert [h.ref.split("_")[1] for h in handles] == [str(n) for n in range(6)]
    assert "ArrayTaskId=3" in scontrol_job(handles[3].ref)
    statuses = {h.task_id: wait(backend, h) for h in handles}
    for n in range(5):
        status = statuses[f"arr-{n}"]
        assert status.state is TaskState.COMPLETE, status.reason
        # each task's output in its own directory, as a single job's would be
        assert status.stdout_tail == f"task {n}\n"
        assert status.stderr_tail == f"oops {n}\n"
        assert (tmp_path / f"arr-{n}" / "stdout.txt").read_text() == f"task {n}\n"
        assert status.usage.device_s == pytest.approx(status.usage.wall_s)
    failed = statuses["arr-fails"]
    assert failed.state is TaskState.EXECUTOR_ERROR and failed.exit_code == 7


def test_tasks_asking_different_resources_go_in_separate_submissions(
    backend: SlurmBackend, tmp_path: Path
) -> None:
    one = requests_for(tmp_path, {"cpu-a": "true", "cpu-b": "true"}, devices=1)
    two = requests_for(tmp_path, {"two-a": "nproc", "two-b": "nproc"}, devices=2)
    gpu = requests_for(tmp_path, {"gpu": "true"}, devices=1, accelerator=Accelerator("gpu", "a100"))
    answers = backend.start_many([one[0], two[0], gpu[0], one[1], two[1]])
    handles = [a for a in answers if isinstance(a, Handle)]
    assert [h.task_id for h in handles] == ["cpu-a", "two-a", "gpu", "cpu-b", "two-b"]
    job = {h.task_id: h.ref.partition("_") for h in handles}
    assert job["cpu-a"][0] == job["cpu-b"][0] != job["two-a"][0] == job["two-b"][0]
    assert job["gpu"][1] == ""  # alone: a plain batch job
    assert "gres:gpu:a100:1" in scontrol_job(job["gpu"][0])
    for handle in handles:
        status = wait(backend, handle)
        assert status.state is TaskState.COMPLETE, status.reason
        if handle.task_id.startswith("two"):
            assert status.stdout_tail == "2\n"  # its two CPUs


def test_a_refused_task_does_not_stop_the_others_of_its_lease(
    backend: SlurmBackend, tmp_path: Path
) -> None:
    good = requests_for(tmp_path, {"ok-1": "true", "ok-2": "true"})
    gang = requests_for(tmp_path, {"huge": "true"}, nodes=99)
    answers = backend.start_many([good[0], gang[0], good[1]])
    assert isinstance(answers[1], InvalidValue) and answers[1].field == "nodes"
    for answer in (answers[0], answers[2]):
        assert isinstance(answer, Handle)
        assert wait(backend, answer).state is TaskState.COMPLETE


def test_one_task_of_an_array_is_cancelled_alone(backend: SlurmBackend, tmp_path: Path) -> None:
    scripts = {"stay": "sleep 2; echo stayed", "go": "touch started; sleep 60"}
    stay, go = backend.start_many(requests_for(tmp_path, scripts))
    assert isinstance(stay, Handle) and isinstance(go, Handle)
    wait_running(backend, go, tmp_path / "go" / "started")
    backend.cancel(go)
    assert wait(backend, go, timeout_s=30).state is TaskState.CANCELED
    status = wait(backend, stay)
    assert status.state is TaskState.COMPLETE and status.stdout_tail == "stayed\n"


def test_a_fresh_backend_reattaches_to_an_array_task(
    backend: SlurmBackend, partition: str, tmp_path: Path
) -> None:
    scripts = {"first": "true", "second": "touch started; sleep 2; echo second"}
    _, second = backend.start_many(requests_for(tmp_path, scripts))
    assert isinstance(second, Handle) and "_" in second.ref
    wait_running(backend, second, tmp_path / "second" / "started")
    fresh = SlurmBackend(partition=partition)  # as after an agent restart
    assert fresh.reattach("first", second.ref) is None  # another index's task
    again = fresh.reattach("second", second.ref)
    assert again == second
    status = wait(fresh, again)
    assert status.state is TaskState.COMPLETE and status.stdout_tail == "second\n"


def test_a_finished_array_task_is_read_from_the_jobcomp_file(
    partition: str, tmp_path: Path
) -> None:
    """Once slurmctld has forgotten a job, its end comes from the jobcomp file, where an
    array's task has a job id of its own and is named by its array's id and index."""
    backend = SlurmBackend(partition=partition)
    scripts = {"c-0": "exit 0", "c-1": "exit 5", "c-2": "exit 0"}
    answers = backend.start_many(requests_for(tmp_path, scripts))
    refs = [h.ref for h in answers if isinstance(h, Handle)]
    assert len(refs) == 3

    def in_jobcomp(ref: str) -> bool:
        array, index = ref.split("_")
        lines = Path("/var/log/slurm/jobcomp.txt").read_text().splitlines()
        return any(f" ArrayJobId={array} ArrayTaskId={index} " in line for line in lines)

    wait_until(lambda: all(map(in_jobcomp, refs)), "the tasks in the jobcomp file", timeout_s=60)
    # a backend that reads only the jobcomp file: scontrol answers "Invalid job id"
    forgetful = SlurmBackend(
        partition=partition, commands={"scontrol": ["sh", "-c", "echo Invalid job id >&2; exit 1"]}
    )
    codes = []
    for task_id, ref in zip(scripts, refs, strict=True):
        job = backend._jobs[ref]  # the same description, as a reattach would rebuild it
        forgetful._jobs[ref] = job
        status = wait(forgetful, Handle(task_id, "slurm", ref))
        codes.append((status.state, status.exit_code))
    assert codes == [
        (TaskState.COMPLETE, 0),
        (TaskState.EXECUTOR_ERROR, 5),
        (TaskState.COMPLETE, 0),
    ]
