"""The Ray backend against a real local two-node Ray cluster (`scripts/ray.sh`): jobs run, fail,
are cancelled, are found again by a fresh backend; GPU tasks hold their GPUs, gang tasks span
distinct nodes (or fail at once when the cluster cannot hold them), and the cluster's nodes,
CPUs and GPUs are reported.

No mocks. Without Ray the module fails with the reason, unless SUANLI_SKIP_RAY=1 (then it
skips). A head this module started is stopped at its end; one that was already up is left."""

from __future__ import annotations

import json
import os
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from suanli.agent.backends import (
    Accelerator,
    Executor,
    Handle,
    Status,
    TaskState,
    max_run_reason,
)
from suanli.agent.backends.ray import RayBackend
from suanli.errors import InvalidValue
from tests import waiting

pytestmark = pytest.mark.slow

# What each of the two nodes of scripts/ray.sh declares (the same variables as the script).
NODES = 2
DECLARED_CPUS = int(os.environ.get("SUANLI_RAY_CPUS", "4"))
DECLARED_GPUS = int(os.environ.get("SUANLI_RAY_GPUS", "2"))
GPU_MODEL = os.environ.get("SUANLI_RAY_GPU_MODEL", "A100")
A_GPU = Accelerator("gpu", GPU_MODEL)


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
    assert capacity.nodes == NODES
    assert capacity.cpus == NODES * DECLARED_CPUS
    assert 0 <= capacity.free_cpus <= capacity.cpus
    assert capacity.memory_mb > 0
    handle = backend.start("holder", [sh("sleep 60")], tmp_path, devices=DECLARED_CPUS - 1)

    def held() -> bool:  # the autoscaler's load report lags by a few seconds
        now = backend.capacity()
        return now is not None and now.free_cpus <= capacity.cpus - (DECLARED_CPUS - 1)

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


def entrypoint_resources(address: str, ref: str) -> dict[str, float]:
    """The resources Ray reserved for a job's entrypoint: the `required_resources` of the job's
    supervisor actor (Ray's State API; the Jobs API's job details do not carry them). The
    cluster of scripts/ray.sh has no token."""
    query = urllib.parse.urlencode(
        {
            "detail": "true",
            "filter_keys": "name",
            "filter_predicates": "=",
            "filter_values": f"_ray_internal_job_actor_{ref}",
        }
    )
    with urllib.request.urlopen(f"{address}/api/v0/actors?{query}", timeout=10) as answer:
        actors = json.loads(answer.read())["data"]["result"]["result"]
    assert len(actors) == 1, actors
    resources: dict[str, float] = actors[0]["required_resources"]
    return resources


def test_capacity_reports_both_nodes_with_their_gpus(backend: RayBackend) -> None:
    capacity = backend.capacity()
    assert capacity is not None
    assert capacity.nodes == NODES and len(capacity.per_node) == NODES
    assert capacity.gpus == NODES * DECLARED_GPUS
    assert capacity.gpus_by_model == {GPU_MODEL: NODES * DECLARED_GPUS}
    assert 0 <= capacity.free_gpus <= capacity.gpus
    assert len({node.name for node in capacity.per_node}) == NODES
    for node in capacity.per_node:
        assert node.cpus == DECLARED_CPUS and 0 <= node.free_cpus <= node.cpus
        assert node.gpus_by_model == {GPU_MODEL: DECLARED_GPUS}
        assert 0 <= node.free_gpus_by_model[GPU_MODEL] <= DECLARED_GPUS
    assert sum(node.cpus for node in capacity.per_node) == capacity.cpus


def test_a_gpu_task_holds_its_gpus(backend: RayBackend, ray_address: str, tmp_path: Path) -> None:
    handle = backend.start(
        "gpu-2",
        [sh('echo "visible=$CUDA_VISIBLE_DEVICES"')],
        tmp_path,
        devices=DECLARED_GPUS,
        accelerator=A_GPU,
    )
    status = wait_for(backend, handle)
    assert status.state is TaskState.COMPLETE, status
    # a GPU task asks for GPUs of its model, not CPUs
    assert entrypoint_resources(ray_address, handle.ref) == {
        "GPU": DECLARED_GPUS,
        f"accelerator_type:{GPU_MODEL}": 0.001,
    }
    # Ray binds the entrypoint to its GPUs; the runner passes that binding on to the executor
    visible = status.stdout_tail.strip().removeprefix("visible=").split(",")
    assert len(visible) == DECLARED_GPUS and all(v.isdigit() for v in visible), status.stdout_tail
    assert status.usage.device_s == pytest.approx(DECLARED_GPUS * status.usage.wall_s)


def test_a_gpu_task_of_a_model_the_cluster_lacks_waits(backend: RayBackend, tmp_path: Path) -> None:
    handle = backend.start(
        "no-h100", [sh("echo ran")], tmp_path, devices=1, accelerator=Accelerator("gpu", "H100")
    )
    try:
        # a job of the model the cluster has, submitted after it, runs and ends meanwhile
        other = backend.start(
            "an-a100", [sh("true")], tmp_path / "a100", devices=1, accelerator=A_GPU
        )
        assert wait_for(backend, other).state is TaskState.COMPLETE
        assert backend.poll(handle) is None  # pending: no node has accelerator_type:H100
        assert not (tmp_path / "stdout.txt").exists()
    finally:
        backend.cancel(handle)
    assert wait_for(backend, handle).state is TaskState.CANCELED


def test_a_gang_task_spans_distinct_nodes(backend: RayBackend, tmp_path: Path) -> None:
    report = 'echo "$SUANLI_NODE_RANK/$SUANLI_NODES $SUANLI_NODE_ID $CUDA_VISIBLE_DEVICES"'
    handle = backend.start(
        "gang-2", [sh(report)], tmp_path, devices=1, nodes=NODES, accelerator=A_GPU
    )
    status = wait_for(backend, handle, timeout_s=90)
    assert status.state is TaskState.COMPLETE, status
    lines = [
        (tmp_path / "stdout.txt").read_text(),
        (tmp_path / "stdout-rank1.txt").read_text(),
    ]
    assert status.stdout_tail == lines[0]  # the task reports rank 0's output
    ranks = [line.split() for line in lines]
    assert [rank[0] for rank in ranks] == ["0/2", "1/2"]
    node_ids = {rank[1] for rank in ranks}
    assert len(node_ids) == NODES  # STRICT_SPREAD: one rank per node
    capacity = backend.capacity()
    assert capacity is not None and node_ids == {node.name for node in capacity.per_node}
    assert all(rank[2].isdigit() for rank in ranks)  # each rank holds one GPU of its node
    assert len(status.executors) == 1 and status.executors[0].exit_code == 0
    assert status.usage.device_s == pytest.approx(NODES * status.usage.wall_s)


def test_a_failing_rank_stops_the_gang(backend: RayBackend, tmp_path: Path) -> None:
    script = 'if [ "$SUANLI_NODE_RANK" = 1 ]; then echo bad >&2; exit 3; fi; exec sleep 60'
    started = time.monotonic()
    handle = backend.start("gang-fails", [sh(script)], tmp_path, devices=1, nodes=NODES)
    status = wait_for(backend, handle, timeout_s=60)
    assert time.monotonic() - started < 40  # rank 0 did not sleep its 60 s
    assert status.state is TaskState.EXECUTOR_ERROR, status
    assert status.exit_code == 3
    assert "rank 1 of 2" in status.reason and "exited with code 3" in status.reason
    assert (tmp_path / "stderr-rank1.txt").read_text() == "bad\n"


def test_cancel_stops_every_rank_of_a_gang(backend: RayBackend, tmp_path: Path) -> None:
    script = 'echo $$ > "pid-$SUANLI_NODE_RANK"; exec sleep 60'
    handle = backend.start("gang-cancel", [sh(script)], tmp_path, devices=1, nodes=NODES)
    pid_files = [tmp_path / f"pid-{rank}" for rank in range(NODES)]
    wait_until(lambda: all(f.exists() and f.read_text().strip() for f in pid_files), 60)
    pids = [int(f.read_text()) for f in pid_files]
    backend.cancel(handle)
    status = wait_for(backend, handle, timeout_s=30)
    assert status.state is TaskState.CANCELED, status
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_preempt_gives_every_rank_its_grace(backend: RayBackend, tmp_path: Path) -> None:
    script = (
        'trap "echo term > term-$SUANLI_NODE_RANK; exit 0" TERM; '
        "touch ready-$SUANLI_NODE_RANK; sleep 60 & wait"
    )
    handle = backend.start(
        "gang-preempt", [sh(script)], tmp_path, devices=1, nodes=NODES, grace_s=5
    )
    wait_until(lambda: all((tmp_path / f"ready-{r}").exists() for r in range(NODES)), 60)
    backend.preempt(handle, grace_s=5)
    status = wait_for(backend, handle, timeout_s=30)
    assert status.state is TaskState.PREEMPTED, status
    for rank in range(NODES):  # SIGTERM reached each rank's executor, which ended in its grace
        assert (tmp_path / f"term-{rank}").read_text() == "term\n"


def test_a_gang_is_stopped_at_its_maximum_run_time(backend: RayBackend, tmp_path: Path) -> None:
    handle = backend.start(
        "gang-slow", [sh("exec sleep 60")], tmp_path, devices=1, nodes=NODES, max_run_s=2
    )
    status = wait_for(backend, handle, timeout_s=60)
    assert status.state is TaskState.EXECUTOR_ERROR, status
    assert max_run_reason(2) in status.reason


def test_a_gang_larger_than_the_cluster_fails_at_once(backend: RayBackend, tmp_path: Path) -> None:
    started = time.monotonic()
    handle = backend.start(
        "gang-3", [sh("echo never")], tmp_path, devices=1, nodes=NODES + 1, accelerator=A_GPU
    )
    status = wait_for(backend, handle, timeout_s=60)
    assert time.monotonic() - started < 30
    assert status.state is TaskState.SYSTEM_ERROR, status
    assert f"gang of {NODES + 1} nodes" in status.reason and "can never be placed" in status.reason
    assert "无法放置" in status.reason
    assert not (tmp_path / "stdout.txt").exists()


def test_a_gang_of_zero_nodes_is_refused(backend: RayBackend, tmp_path: Path) -> None:
    with pytest.raises(InvalidValue) as refused:
        backend.start("gang-0", [sh("true")], tmp_path, nodes=0)
    assert refused.value.field == "nodes"
