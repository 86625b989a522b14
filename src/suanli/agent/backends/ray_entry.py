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
preempt it as PREEMPTED).

Maximum run time: with the plan's `max_run_s`, a timer ends the run after that many seconds:
SIGTERM to the running executor's group, SIGKILL after the plan's `grace_s`, and the run ends
EXECUTOR_ERROR with `max_run_reason(max_run_s)`. The plan's `checkpoint_dir` is given to every
executor as `SUANLI_CHECKPOINT_DIR`.
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
from pathlib import Path
from types import FrameType
from typing import IO

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

__all__ = ["RESULT_PREFIX", "decode_plan", "encode_plan", "main"]

RESULT_PREFIX = "suanli-ray-result "


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
) -> str:
    """The `<plan>` argument for a list of executors: URL-safe base64, safe in a shell word."""
    plan = {
        "executors": [executor_json(e) for e in executors],
        "tail_bytes": tail_bytes,
        "max_run_s": max_run_s,
        "grace_s": grace_s,
        "checkpoint_dir": None if checkpoint_dir is None else str(checkpoint_dir),
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
    ) -> None:
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
        _emit(
            {
                "kind": "end",
                "state": state.value,
                "exit_code": exit_code,
                "reason": reason,
                "stdout_tail": read_tail(self.task_dir / STDOUT_FILE, self.tail_bytes),
                "stderr_tail": read_tail(self.task_dir / STDERR_FILE, self.tail_bytes),
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
        out_path, out_from = task / STDOUT_FILE, 0
        err_path, err_from = task / STDERR_FILE, 0
        cpu_s = 0.0
        try:
            cwd = (
                container_path(task, executor.workdir, f"{where}.workdir")
                if executor.workdir
                else task
            )
            cwd.mkdir(parents=True, exist_ok=True)
            (task / "tmp").mkdir(exist_ok=True)  # TMPDIR
            out_path = self._stream_path(executor.stdout, f"{where}.stdout", STDOUT_FILE)
            err_path = self._stream_path(executor.stderr, f"{where}.stderr", STDERR_FILE)
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
                    env=task_environment(task, executor.env, self.checkpoint_dir),
                    stdin=source,
                    stdout=out,
                    stderr=err,
                    start_new_session=True,
                )
        except (OSError, SuanliError) as exc:  # SuanliError: a path that leaves the task dir
            code, message = start_failure(exc, executor.command[0])
            with contextlib.suppress(OSError), (task / STDERR_FILE).open("ab") as err_file:
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
        _emit(
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


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        sys.stderr.write("usage: python -m suanli.agent.backends.ray_entry <task dir> <plan>\n")
        return 2
    executors, tail_bytes = decode_plan(args[1])
    max_run_s, grace_s, checkpoint_dir = plan_limits(args[1])
    runner = _Runner(Path(args[0]), executors, tail_bytes, grace_s, max_run_s, checkpoint_dir)
    signal.signal(signal.SIGTERM, runner.stop)
    signal.signal(signal.SIGINT, runner.stop)
    return runner.run()


if __name__ == "__main__":
    sys.exit(main())
