"""The entrypoint of a Ray job that `RayBackend` submits: runs one task's executors in order.

`python -m suanli.agent.backends.ray_entry <task dir> <plan>` runs on whichever Ray node the
job's driver was placed on; `<plan>` is URL-safe base64 of `{"executors": [...], "tail_bytes":
int}` (each executor in the server's JSON form, see `Executor.from_json`). It does what the local
backend does, minus the private `/tmp`: every path is a task path (`container_path`), an
executor without its own `stdout`/`stderr` appends to the task's `stdout.txt`/`stderr.txt`, its
environment is its `env` over the minimal set of `task_environment` (never this process's, which
is the Ray cluster's), it runs in a session of its own (whatever
it leaves behind in its group gets SIGTERM, then SIGKILL after `grace_s`), the first non-zero
exit ends the task unless that executor has `ignore_error`, and a command that cannot be started
counts as exit 127 (126 for other OS errors) with the error appended to `stderr.txt`.

How it reports: one line per event on its own stdout, which is the Ray job's log (executors
never write there): `RESULT_PREFIX` followed by a JSON object, `{"kind": "executor", ...}` as
each executor ends (its exit code, tails of its own output, CPU seconds of its leader, start and
end in Unix seconds) and `{"kind": "end", "state": ..., "exit_code": ..., "reason": ...,
"stdout_tail": ..., "stderr_tail": ...}` last. `RayBackend.poll` reads those lines back from the
job's log, so the agent needs no shared filesystem to learn how the task ended. The process
exits 0 when the task is COMPLETE and 1 otherwise (Ray then marks the job FAILED).

Cancellation: Ray's `stop_job` sends SIGTERM to this process and all its descendants, then
SIGKILL after `RAY_JOB_STOP_WAIT_TIME_S` (3 s by default; `RayBackend` sets it per job from the
grace it is given). On SIGTERM or SIGINT this runner signals the running executor's group, waits
for it, reports it and ends with state CANCELED (`RayBackend` reports a job it stopped to
preempt it as PREEMPTED). A job cancelled before it started (Ray cannot stop a pending job)
finds `cancel_marker(task dir, ref)` when it does start, and ends CANCELED without running
anything.

Maximum run time: with the plan's `max_run_s`, a timer ends the run after that many seconds:
SIGTERM to the running executor's group, SIGKILL after the plan's `grace_s`, and the run ends
EXECUTOR_ERROR with `max_run_reason(max_run_s)`. The plan's `checkpoint_dir` is given to every
executor as `SUANLI_CHECKPOINT_DIR`.

Accelerators: what Ray sets in this process's environment to bind its accelerators
(`ENGINE_ENV`: `CUDA_VISIBLE_DEVICES` and its kin) is passed on to every executor, as the
engine's own binding (see `task_environment`); nothing else of this process's environment is.

Gangs: a plan with `nodes` > 1 makes this process a Ray driver (`ray.init()` inside the job) that
reserves a placement group of `nodes` bundles of `devices` each (`bundle` in the plan: Ray
resources such as `{"GPU": 2, "accelerator_type:A100": 0.001}` or `{"CPU": 2}`) with strategy
STRICT_SPREAD (each bundle on a distinct node). When fewer alive nodes than `nodes` could ever
hold a bundle it ends at once, SYSTEM_ERROR with the reason; otherwise it waits for the group
for at most the plan's `gang_wait_s`, then ends SYSTEM_ERROR too. It then starts one rank actor
per bundle; each runs the executors in order on its node (as above) with `SUANLI_NODE_RANK`
(0..nodes-1), `SUANLI_NODES` and `SUANLI_NODE_ID` (Ray's id of the node it runs on) added to
their environment. Rank 0 writes the task's `stdout.txt`/`stderr.txt`; rank r > 0 writes
`stdout-rank<r>.txt`/`stderr-rank<r>.txt` (executors' own stream paths are shared by all ranks).
The first rank that fails stops the others (they end CANCELED) and the task ends EXECUTOR_ERROR
with that rank's exit code and `rank r of n: ...` in the reason; SIGTERM stops every rank. The
executor records of every rank are reported (with their `rank`), the `end` record carries rank
0's tails and a `ranks` list (rank, node id, state, exit code); the placement group is removed
at the end.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType
from typing import IO, Any

from suanli.agent.backends import (
    Executor,
    TaskState,
    container_path,
    max_run_reason,
    task_environment,
)
from suanli.agent.backends.local import (
    STDERR_FILE,
    STDOUT_FILE,
    TAIL_BYTES,
    group_alive,
    read_tail,
    signal_group,
    start_failure,
)
from suanli.errors import SuanliError

__all__ = ["ENGINE_ENV", "RESULT_PREFIX", "cancel_marker", "decode_plan", "encode_plan", "main"]

RESULT_PREFIX = "suanli-ray-result "
# The variables by which Ray binds a process to its accelerators: passed on to executors.
ENGINE_ENV = (
    "CUDA_VISIBLE_DEVICES",
    "HIP_VISIBLE_DEVICES",
    "ROCR_VISIBLE_DEVICES",
    "ASCEND_RT_VISIBLE_DEVICES",
    "NEURON_RT_VISIBLE_CORES",
    "TPU_VISIBLE_CHIPS",
)
RANK_ENV = "SUANLI_NODE_RANK"
NODES_ENV = "SUANLI_NODES"
NODE_ID_ENV = "SUANLI_NODE_ID"
POLL_S = 0.2


def engine_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """What of `environ` is the engine's accelerator binding (`ENGINE_ENV`)."""
    return {name: environ[name] for name in ENGINE_ENV if name in environ}


def executor_json(executor: Executor) -> dict[str, object]:
    """An executor in the server's JSON form (what `Executor.from_json` reads back)."""
    return {
        "command": list(executor.command),
        "env": dict(executor.env),
        "workdir": executor.workdir,
        "ignore_error": executor.ignore_error,
        "stdin": executor.stdin,
        "stdout": executor.stdout,
        "stderr": executor.stderr,
    }


def encode_plan(
    executors: list[Executor],
    tail_bytes: int = TAIL_BYTES,
    *,
    max_run_s: float | None = None,
    grace_s: float = 1.0,
    checkpoint_dir: Path | None = None,
    nodes: int = 1,
    bundle: Mapping[str, float] | None = None,
    gang_wait_s: float = 600.0,
    ref: str = "",
) -> str:
    """The `<plan>` argument for a list of executors: URL-safe base64, safe in a shell word.
    `nodes` > 1 makes a gang of `nodes` bundles of Ray resources `bundle` (see the module
    docstring)."""
    plan = {
        "executors": [executor_json(e) for e in executors],
        "tail_bytes": tail_bytes,
        "max_run_s": max_run_s,
        "grace_s": grace_s,
        "checkpoint_dir": None if checkpoint_dir is None else str(checkpoint_dir),
        "nodes": nodes,
        "bundle": dict(bundle or {}),
        "gang_wait_s": gang_wait_s,
        "ref": ref,
    }
    return base64.urlsafe_b64encode(json.dumps(plan).encode()).decode("ascii")


def decode_plan(text: str) -> tuple[list[Executor], int]:
    """The executors and tail size of an encoded plan."""
    plan = json.loads(base64.urlsafe_b64decode(text.encode("ascii")))
    return [Executor.from_json(e) for e in plan["executors"]], int(plan["tail_bytes"])


def plan_limits(text: str) -> tuple[float | None, float, Path | None]:
    """The maximum run time, the grace of a stop and the checkpoint directory of a plan."""
    plan = json.loads(base64.urlsafe_b64decode(text.encode("ascii")))
    max_run_s = plan.get("max_run_s")
    checkpoint = plan.get("checkpoint_dir")
    return (
        float(max_run_s) if isinstance(max_run_s, int | float) else None,
        float(plan.get("grace_s") or 1.0),
        Path(checkpoint) if isinstance(checkpoint, str) else None,
    )


def cancel_marker(task_dir: Path, ref: str) -> Path:
    """The file by which `RayBackend.cancel` tells job `ref`'s runner, should it start only
    after the cancel (Ray cannot stop a pending job), to run nothing."""
    return task_dir / f".suanli-canceled-{ref}"


def _canceled_before_start(task_dir: Path, plan_text: str) -> bool:
    plan = json.loads(base64.urlsafe_b64decode(plan_text.encode("ascii")))
    ref = plan.get("ref")
    return bool(ref) and cancel_marker(task_dir, str(ref)).exists()


def plan_gang(text: str) -> tuple[int, dict[str, float], float]:
    """The gang of a plan: its nodes, the Ray resources of one bundle, and how long to wait
    for the placement group."""
    plan = json.loads(base64.urlsafe_b64decode(text.encode("ascii")))
    bundle = plan.get("bundle") or {}
    return (
        int(plan.get("nodes") or 1),
        {str(k): float(v) for k, v in bundle.items()},
        float(plan.get("gang_wait_s") or 600.0),
    )


def _emit(record: dict[str, object]) -> None:
    sys.stdout.write(RESULT_PREFIX + json.dumps(record) + "\n")
    sys.stdout.flush()


class _Runner:
    """Runs the executors one after another; `stop` (a signal handler) cancels the rest."""

    def __init__(
        self,
        task_dir: Path,
        executors: list[Executor],
        tail_bytes: int,
        grace_s: float = 1.0,
        max_run_s: float | None = None,
        checkpoint_dir: Path | None = None,
        *,
        extra_env: Mapping[str, str] | None = None,
        emit: Callable[[dict[str, object]], None] = _emit,
        streams: tuple[str, str] = (STDOUT_FILE, STDERR_FILE),
    ) -> None:
        """`extra_env`: what the engine adds to every executor's environment (its accelerator
        binding, a gang's rank); `emit`: where records go (the job's log by default);
        `streams`: the task's default stdout and stderr file names."""
        self.extra_env = dict(extra_env or {})
        self.emit = emit
        self.stdout_name, self.stderr_name = streams
        self.task_dir = task_dir
        self.executors = executors
        self.tail_bytes = tail_bytes
        self.grace_s = grace_s
        self.max_run_s = max_run_s
        self.checkpoint_dir = checkpoint_dir
        self.stopping = False
        self.timed_out = False
        self.pgid: int | None = None

    def stop(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True
        if self.pgid is not None:
            signal_group(self.pgid, signal.SIGTERM)

    def time_out(self) -> None:
        """`max_run_s` has passed (a timer thread): SIGTERM, then SIGKILL after `grace_s`."""
        self.timed_out = True
        self.terminate()

    def terminate(self) -> None:
        """Stop the run: SIGTERM to the running group now, SIGKILL after `grace_s` (blocks for
        up to `grace_s`: call it from a thread)."""
        self.stop(signal.SIGTERM, None)
        pgid = self.pgid
        deadline = time.monotonic() + self.grace_s
        while pgid is not None and group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if pgid is not None:
            signal_group(pgid, signal.SIGKILL)

    def run(self) -> int:
        self.task_dir.mkdir(parents=True, exist_ok=True)
        if self.max_run_s is not None:
            timer = threading.Timer(self.max_run_s, self.time_out)
            timer.daemon = True
            timer.start()
        ignored: list[str] = []
        n = len(self.executors)
        for index, executor in enumerate(self.executors):
            if self.stopping:
                break
            code = self._run_one(index, executor)
            if self.stopping:
                break
            if code != 0:
                reason = f"executor {index + 1} of {n} exited with code {code}"
                if not executor.ignore_error:
                    self._end(TaskState.EXECUTOR_ERROR, code, reason)
                    return 1
                ignored.append(f"{reason} (ignore_error)")
        if self.stopping and self.timed_out:
            assert self.max_run_s is not None
            self._end(TaskState.EXECUTOR_ERROR, None, max_run_reason(self.max_run_s))
            return 1
        if self.stopping:
            self._end(TaskState.CANCELED, None, "canceled")
            return 1
        self._end(TaskState.COMPLETE, 0, "; ".join(ignored))
        return 0

    def _end(self, state: TaskState, exit_code: int | None, reason: str) -> None:
        self.emit(
            {
                "kind": "end",
                "state": state.value,
                "exit_code": exit_code,
                "reason": reason,
                "stdout_tail": read_tail(self.task_dir / self.stdout_name, self.tail_bytes),
                "stderr_tail": read_tail(self.task_dir / self.stderr_name, self.tail_bytes),
            }
        )

    def _stream_path(self, named: str | None, field_name: str, default: str) -> Path:
        if named is None:
            return self.task_dir / default
        path = container_path(self.task_dir, named, field_name)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def _run_one(self, index: int, executor: Executor) -> int:
        """Run one executor to its end (and its group's); report it; return its exit code."""
        where = f"executors[{index}]"
        task = self.task_dir
        started = time.monotonic()
        started_at = time.time()
        out_path, out_from = task / self.stdout_name, 0
        err_path, err_from = task / self.stderr_name, 0
        cpu_s = 0.0
        try:
            cwd = (
                container_path(task, executor.workdir, f"{where}.workdir")
                if executor.workdir
                else task
            )
            cwd.mkdir(parents=True, exist_ok=True)
            (task / "tmp").mkdir(exist_ok=True)  # TMPDIR
            out_path = self._stream_path(executor.stdout, f"{where}.stdout", self.stdout_name)
            err_path = self._stream_path(executor.stderr, f"{where}.stderr", self.stderr_name)
            with contextlib.ExitStack() as files:
                source: IO[bytes] | int = subprocess.DEVNULL
                if executor.stdin:
                    stdin_path = container_path(task, executor.stdin, f"{where}.stdin")
                    source = files.enter_context(stdin_path.open("rb"))
                out = files.enter_context(out_path.open("ab" if executor.stdout is None else "wb"))
                err = files.enter_context(err_path.open("ab" if executor.stderr is None else "wb"))
                out_from = os.fstat(out.fileno()).st_size
                err_from = os.fstat(err.fileno()).st_size
                proc = subprocess.Popen(
                    list(executor.command),
                    cwd=cwd,
                    env={
                        **task_environment(task, executor.env, self.checkpoint_dir),
                        **self.extra_env,
                    },
                    stdin=source,
                    stdout=out,
                    stderr=err,
                    start_new_session=True,
                )
        except (OSError, SuanliError) as exc:  # SuanliError: a path that leaves the task dir
            code, message = start_failure(exc, executor.command[0])
            with contextlib.suppress(OSError), (task / self.stderr_name).open("ab") as err_file:
                err_file.write(f"suanli agent: {message}\n".encode())
        else:
            self.pgid = proc.pid
            if self.stopping:  # the signal came before the group existed
                signal_group(proc.pid, signal.SIGTERM)
            _, wait_status, rusage = os.wait4(proc.pid, 0)
            proc.returncode = code = os.waitstatus_to_exitcode(wait_status)
            cpu_s = rusage.ru_utime + rusage.ru_stime
            self._clean_group(proc.pid)
            self.pgid = None
        wall_s = max(0.0, time.monotonic() - started)
        self.emit(
            {
                "kind": "executor",
                "index": index,
                "exit_code": code,
                "stdout_tail": read_tail(out_path, self.tail_bytes, out_from),
                "stderr_tail": read_tail(err_path, self.tail_bytes, err_from),
                "wall_s": wall_s,
                "cpu_s": cpu_s,
                "started_at": started_at,
                "ended_at": started_at + wall_s,
            }
        )
        return code

    def _clean_group(self, pgid: int) -> None:
        """SIGTERM what the executor left in its group, SIGKILL after `grace_s`."""
        if not group_alive(pgid):
            return
        signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + self.grace_s
        while group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
        signal_group(pgid, signal.SIGKILL)


class RankWorker:
    """One rank of a gang, as a Ray actor (threaded: `stop` runs while `run` does)."""

    def __init__(self) -> None:
        self.runner: _Runner | None = None
        self.stopped = False

    def run(self, task_dir: str, plan_text: str, rank: int, nodes: int) -> dict[str, object]:
        """Run the executors on this node as rank `rank`; its records and its node's id."""
        import ray

        node_id = ray.get_runtime_context().get_node_id()
        executors, tail_bytes = decode_plan(plan_text)
        max_run_s, grace_s, checkpoint_dir = plan_limits(plan_text)
        records: list[dict[str, object]] = []
        streams = (
            (STDOUT_FILE, STDERR_FILE)
            if rank == 0
            else (f"stdout-rank{rank}.txt", f"stderr-rank{rank}.txt")
        )
        extra = {
            **engine_environment(os.environ),
            RANK_ENV: str(rank),
            NODES_ENV: str(nodes),
            NODE_ID_ENV: node_id,
        }
        runner = _Runner(
            Path(task_dir),
            executors,
            tail_bytes,
            grace_s,
            max_run_s,
            checkpoint_dir,
            extra_env=extra,
            emit=records.append,
            streams=streams,
        )
        self.runner = runner
        if self.stopped:
            runner.stopping = True
        runner.run()
        return {"rank": rank, "node_id": node_id, "records": records}

    def stop(self) -> None:
        """Stop this rank: SIGTERM to its executor's group, SIGKILL after the grace."""
        self.stopped = True
        if self.runner is not None:
            threading.Thread(target=self.runner.terminate, daemon=True).start()


def _fits(resources: Mapping[str, float], bundle: Mapping[str, float]) -> bool:
    return all(resources.get(key, 0.0) >= need for key, need in bundle.items())


def _gang_end(state: TaskState, exit_code: int | None, reason: str, **more: object) -> None:
    _emit(
        {
            "kind": "end",
            "state": state.value,
            "exit_code": exit_code,
            "reason": reason,
            "stdout_tail": more.pop("stdout_tail", ""),
            "stderr_tail": more.pop("stderr_tail", ""),
            **more,
        }
    )


def _emit_end_canceled() -> None:
    _gang_end(TaskState.CANCELED, None, "canceled before it started")


class _Gang:
    """The driver of a gang: placement group, one rank actor per bundle, their outcome."""

    def __init__(self, task_dir: Path, plan_text: str) -> None:
        self.task_dir = task_dir
        self.plan_text = plan_text
        self.nodes, self.bundle, self.wait_s = plan_gang(plan_text)
        _, self.grace_s, _ = plan_limits(plan_text)
        self.stopping = False

    def stop(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    def run(self) -> int:
        import ray
        from ray.util.placement_group import placement_group, remove_placement_group

        self.task_dir.mkdir(parents=True, exist_ok=True)
        ray.init(log_to_driver=False)
        # ray.init installs Ray's own SIGTERM handler (it ends the driver at once): take it back,
        # so that a stop reaches every rank with its grace.
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        want = f"{self.nodes} nodes x {self.bundle}"
        table: list[dict[str, Any]] = ray.nodes()  # type: ignore[no-untyped-call]
        able = len(
            [n for n in table if n.get("Alive") and _fits(n.get("Resources") or {}, self.bundle)]
        )
        if able < self.nodes:
            _gang_end(
                TaskState.SYSTEM_ERROR,
                None,
                f"gang of {want} can never be placed: only {able} alive node(s) of the Ray "
                f"cluster can hold one bundle / 无法放置 {self.nodes} 个节点的组任务: Ray 集群"
                f"只有 {able} 个存活节点能容纳一份资源",
            )
            return 1
        group = placement_group([dict(self.bundle)] * self.nodes, strategy="STRICT_SPREAD")
        try:
            return self._run_placed(group)
        finally:
            with contextlib.suppress(Exception):
                remove_placement_group(group)

    def _run_placed(self, group: Any) -> int:
        import ray
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        deadline = time.monotonic() + self.wait_s
        ready = group.ready()
        while not ray.wait([ready], timeout=POLL_S)[0]:
            if self.stopping:
                _gang_end(TaskState.CANCELED, None, "canceled")
                return 1
            if time.monotonic() > deadline:
                _gang_end(
                    TaskState.SYSTEM_ERROR,
                    None,
                    f"gang of {self.nodes} nodes x {self.bundle} was not placed within "
                    f"{self.wait_s:g} s / 组任务在 {self.wait_s:g} 秒内未能放置",
                )
                return 1
        options: dict[str, Any] = {"num_cpus": self.bundle.get("CPU", 0)}
        if "GPU" in self.bundle:
            options["num_gpus"] = self.bundle["GPU"]
        custom = {k: v for k, v in self.bundle.items() if k not in ("CPU", "GPU")}
        if custom:
            options["resources"] = custom
        actor_class: Any = ray.remote(RankWorker)
        actors = [
            actor_class.options(
                max_concurrency=2,
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    placement_group=group, placement_group_bundle_index=rank
                ),
                **options,
            ).remote()
            for rank in range(self.nodes)
        ]
        try:
            return self._collect(actors)
        finally:
            for actor in actors:
                with contextlib.suppress(Exception):
                    ray.kill(actor)

    def _collect(self, actors: list[Any]) -> int:
        """Run every rank, stop the rest when one fails or on SIGTERM, report the outcome."""
        import ray

        refs = {
            actor.run.remote(str(self.task_dir), self.plan_text, rank, self.nodes): rank
            for rank, actor in enumerate(actors)
        }
        results: dict[int, dict[str, Any]] = {}
        lost: dict[int, str] = {}
        stopped_at: float | None = None
        first_failure: int | None = None
        while len(results) + len(lost) < len(refs):
            pending = [
                ref for ref, rank in refs.items() if rank not in results and rank not in lost
            ]
            done, _ = ray.wait(pending, num_returns=1, timeout=POLL_S)
            for ref in done:
                rank = refs[ref]
                try:
                    results[rank] = ray.get(ref)
                except Exception as exc:  # the actor or its node died
                    lost[rank] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                    first_failure = rank if first_failure is None else first_failure
                    continue
                end = self._end_of(results[rank])
                failed = end.get("state") != TaskState.COMPLETE.value
                if failed and first_failure is None and not self.stopping:
                    first_failure = rank
            if (self.stopping or first_failure is not None) and stopped_at is None:
                stopped_at = time.monotonic()
                for actor in actors:
                    with contextlib.suppress(Exception):
                        actor.stop.remote()
            if stopped_at is not None and time.monotonic() - stopped_at > self.grace_s + 5:
                for rank in refs.values():
                    if rank not in results:
                        lost.setdefault(rank, "did not stop in time")
        return self._report(results, lost, first_failure)

    @staticmethod
    def _end_of(result: Mapping[str, Any]) -> dict[str, Any]:
        for record in result.get("records", []):
            if record.get("kind") == "end":
                return dict(record)
        return {}

    def _report(
        self, results: dict[int, dict[str, Any]], lost: dict[int, str], first_failure: int | None
    ) -> int:
        ranks: list[dict[str, object]] = []
        for rank in range(self.nodes):
            if rank in lost:
                ranks.append(
                    {"rank": rank, "state": TaskState.SYSTEM_ERROR.value, "reason": lost[rank]}
                )
                continue
            result = results[rank]
            for record in result["records"]:
                if record.get("kind") == "executor":
                    _emit({**record, "rank": rank})
            end = self._end_of(result)
            ranks.append(
                {
                    "rank": rank,
                    "node_id": result["node_id"],
                    "state": end.get("state"),
                    "exit_code": end.get("exit_code"),
                }
            )
        zero = self._end_of(results.get(0, {}))
        tails = {
            "stdout_tail": zero.get("stdout_tail", ""),
            "stderr_tail": zero.get("stderr_tail", ""),
        }
        of = f"of {self.nodes}"
        if first_failure is not None and first_failure in lost:
            reason = f"rank {first_failure} {of} was lost: {lost[first_failure]}"
            _gang_end(TaskState.SYSTEM_ERROR, None, reason, ranks=ranks, **tails)
            return 1
        if first_failure is not None:
            end = self._end_of(results[first_failure])
            state = TaskState(end.get("state") or TaskState.EXECUTOR_ERROR.value)
            if state is TaskState.CANCELED and not self.stopping:
                state = TaskState.EXECUTOR_ERROR
            reason = f"rank {first_failure} {of}: {end.get('reason', '')}"
            code = end.get("exit_code")
            _gang_end(state, code if isinstance(code, int) else None, reason, ranks=ranks, **tails)
            return 1
        if self.stopping:
            _gang_end(TaskState.CANCELED, None, "canceled", ranks=ranks, **tails)
            return 1
        reasons = [
            f"rank {r} {of}: {self._end_of(results[r]).get('reason')}"
            for r in range(self.nodes)
            if self._end_of(results[r]).get("reason")
        ]
        _gang_end(TaskState.COMPLETE, 0, "; ".join(reasons), ranks=ranks, **tails)
        return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        sys.stderr.write("usage: python -m suanli.agent.backends.ray_entry <task dir> <plan>\n")
        return 2
    if _canceled_before_start(Path(args[0]), args[1]):
        _emit_end_canceled()
        return 1
    nodes, _, _ = plan_gang(args[1])
    if nodes > 1:
        gang = _Gang(Path(args[0]), args[1])
        signal.signal(signal.SIGTERM, gang.stop)
        signal.signal(signal.SIGINT, gang.stop)
        return gang.run()
    executors, tail_bytes = decode_plan(args[1])
    max_run_s, grace_s, checkpoint_dir = plan_limits(args[1])
    runner = _Runner(
        Path(args[0]),
        executors,
        tail_bytes,
        grace_s,
        max_run_s,
        checkpoint_dir,
        extra_env=engine_environment(os.environ),
    )
    signal.signal(signal.SIGTERM, runner.stop)
    signal.signal(signal.SIGINT, runner.stop)
    return runner.run()


if __name__ == "__main__":
    sys.exit(main())
