"""Execution backends of the provider agent: one small Protocol, one module per backend.

A backend runs a leased task's executors on the provider's own machinery (a local process group
now; Slurm, Ray or Kubernetes later) and answers three questions, none of which may block for
long: `start` the work, `poll` whether it has finished, `cancel` it, `preempt` it. The agent owns
the network protocol and the task's lifecycle; a backend owns only execution and metering of what
it ran.

Invariants every backend keeps:
- `start` returns a `Handle` whose `ref` names the work inside that backend (a process group,
  a Slurm job id, a pod name), so a backend can find it again;
- `poll` never blocks: `None` while the work runs, then one terminal `Status` exactly once,
  after which the backend forgets the handle (a second `poll` raises `KeyError`);
- `cancel` never blocks, is idempotent and is a no-op for work that has already finished or
  that the backend has forgotten; the cancelled work ends with a `CANCELED` status on a later
  `poll` once nothing it started is still running;
- `preempt(handle, grace_s)` is `cancel` for work the platform takes back: SIGTERM (or the
  engine's equivalent) now, SIGKILL after `grace_s`; the work ends `PREEMPTED` (unless it had
  already finished: then its own outcome), with the usage of what ran;
- `start(..., max_run_s=N)` bounds the run: after N seconds the backend stops the work (SIGTERM,
  grace, SIGKILL; Slurm's `--time`) and it ends `EXECUTOR_ERROR` with `max_run_reason(N)`;
- `start(..., checkpoint_dir=D)` gives every executor `SUANLI_CHECKPOINT_DIR` = D, a directory
  that the agent keeps for the task across attempts (preemptions) and that the task can reach;
- usage is measured by the backend: `wall_s` from start to end, `cpu_s` of the processes it
  could account for, `device_s` = `wall_s` x the devices the task holds.

A task is untrusted code: it never sees the agent's credentials. Every backend gives an executor
only `task_environment(task_dir, executor.env)`: the executor's own `env` over a minimal set:
`PATH` = the agent's `PATH` (how a provider offers the software it installed on its hosts; no
secret lives there; `TASK_PATH` when the agent has none), `HOME` = the task directory, `TMPDIR`
= `<task dir>/tmp`, `LANG` = `C.UTF-8`; plus what the engine itself sets for a job (Slurm's
`SLURM_*` and GPU binding); nothing else of the agent's environment (no token, no cloud keys).

Heavy SDKs (ray, kubernetes) are imported lazily inside their backend module, so importing this
package costs nothing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from suanli.errors import InvalidValue

__all__ = [
    "BACKEND_NAMES",
    "CHECKPOINT_ENV",
    "PREEMPT_REASON",
    "TASK_PATH",
    "TERMINAL_STATES",
    "Accelerator",
    "Backend",
    "Capacity",
    "Executor",
    "Handle",
    "NodeCapacity",
    "StartRequest",
    "Status",
    "TaskState",
    "Usage",
    "backend_named",
    "container_path",
    "max_run_reason",
    "task_environment",
]

# The PATH a task gets when neither it nor the agent has one: the system's programs.
TASK_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class TaskState(StrEnum):
    """The task states an agent reports (the TES names). `poll` returns only terminal ones."""

    RUNNING = "RUNNING"
    COMPLETE = "COMPLETE"
    EXECUTOR_ERROR = "EXECUTOR_ERROR"
    SYSTEM_ERROR = "SYSTEM_ERROR"
    CANCELED = "CANCELED"
    PREEMPTED = "PREEMPTED"  # the end of this attempt: the server queues the task again


TERMINAL_STATES = frozenset(
    {
        TaskState.COMPLETE,
        TaskState.EXECUTOR_ERROR,
        TaskState.SYSTEM_ERROR,
        TaskState.CANCELED,
        TaskState.PREEMPTED,
    }
)

# The variable that names a task's checkpoint directory (see `task_environment`).
CHECKPOINT_ENV = "SUANLI_CHECKPOINT_DIR"
PREEMPT_REASON = "preempted / 被抢占"


def max_run_reason(max_run_s: float) -> str:
    """Why a task that ran past its maximum run time was stopped (English / Chinese)."""
    n = f"{max_run_s:g}"
    return f"exceeded its maximum run time of {n} s / 超过了最长运行时间 {n} 秒"


def container_path(task_dir: Path, path: str, field_name: str = "path") -> Path:
    """Where a task's path lives on the host: inside the task directory, always.

    Tasks name files as if they ran in a container of their own (`/data/in.txt`, `/tmp/x`);
    the host path is the task directory joined with that path (`<task dir>/data/in.txt`), and a
    relative path is taken from the task directory too. A path that would leave the task
    directory (`..`) is refused with `InvalidValue` naming `field_name`.
    """
    root = task_dir.resolve()
    target = (root / path.lstrip("/")).resolve()
    if target != root and root not in target.parents:
        raise InvalidValue(field_name, path, "a path inside the task directory", "任务目录内的路径")
    return target


def task_environment(
    task_dir: Path, env: Mapping[str, str], checkpoint_dir: Path | str | None = None
) -> dict[str, str]:
    """The whole environment of one executor: the minimal set (see the module docstring) with
    the executor's own `env` over it, and `SUANLI_CHECKPOINT_DIR` when the task has a
    checkpoint directory (the platform's, over the executor's). Nothing comes from the agent's
    environment."""
    base = {
        "PATH": os.environ.get("PATH") or TASK_PATH,
        "HOME": str(task_dir),
        "TMPDIR": str(task_dir / "tmp"),
        "LANG": "C.UTF-8",
    }
    merged = {**base, **env}
    if checkpoint_dir is not None:
        merged[CHECKPOINT_ENV] = str(checkpoint_dir)
    return merged


@dataclass(frozen=True)
class Executor:
    """One command of a task: argv, extra environment, an optional working directory, and
    optional files for its standard streams.

    `workdir`, `stdin`, `stdout` and `stderr` are task paths (see `container_path`): absolute
    or relative, they all land inside the task directory; `None` means the task's directory
    (for `workdir`), nothing (`stdin`), or the task's shared `stdout.txt`/`stderr.txt`.
    """

    command: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    workdir: str | None = None
    ignore_error: bool = False  # a non-zero exit does not stop the task; the next one runs
    stdin: str | None = None
    stdout: str | None = None
    stderr: str | None = None

    @staticmethod
    def from_json(obj: object) -> Executor:
        """Parse the server's `{"command": [...], "env": {...}, "workdir": str|null,
        "ignore_error": bool, "stdin"|"stdout"|"stderr": str|null}` (all but `command` may
        be absent)."""
        if not isinstance(obj, Mapping):
            raise InvalidValue("executor", obj, "an object with a command", "含 command 的对象")
        command = obj.get("command")
        if (
            not isinstance(command, list)
            or not command
            or not all(isinstance(arg, str) for arg in command)
        ):
            raise InvalidValue(
                "executor.command", command, "a non-empty list of strings", "非空字符串列表"
            )
        env = obj.get("env") or {}
        if not isinstance(env, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str | int | float) for k, v in env.items()
        ):
            raise InvalidValue("executor.env", env, "an object of strings", "字符串键值对象")
        paths = {}
        for name in ("workdir", "stdin", "stdout", "stderr"):
            value = obj.get(name)
            if value is not None and not isinstance(value, str):
                raise InvalidValue(f"executor.{name}", value, "a string or null", "字符串或 null")
            paths[name] = value or None
        ignore_error = obj.get("ignore_error") or False
        if not isinstance(ignore_error, bool):
            raise InvalidValue(
                "executor.ignore_error", ignore_error, "true or false", "true 或 false"
            )
        return Executor(
            command=tuple(command),
            env={str(k): str(v) for k, v in env.items()},
            ignore_error=ignore_error,
            **paths,
        )


@dataclass(frozen=True)
class Handle:
    """What `start` returns: the task, its backend, and the work's name inside that backend."""

    task_id: str
    backend: str
    ref: str


@dataclass(frozen=True)
class Usage:
    """Metered use of one task. `device_s` is wall time x the devices the task holds;
    `energy_kwh` and `utilisation` (0..1, mean over its devices and the run) are what the
    agent measured on those devices (`suanli.agent.energy`), None when nothing was."""

    wall_s: float
    cpu_s: float
    device_s: float
    energy_kwh: float | None = None
    utilisation: float | None = None

    def as_json(self) -> dict[str, float]:
        """The report's usage; the measured figures only when there are some."""
        body = {"wall_s": self.wall_s, "cpu_s": self.cpu_s, "device_s": self.device_s}
        if self.energy_kwh is not None:
            body["energy_kwh"] = self.energy_kwh
        if self.utilisation is not None:
            body["utilisation"] = self.utilisation
        return body


@dataclass(frozen=True)
class ExecutorLog:
    """How one executor ended: its exit code (None when it never started or was not reaped),
    the tails of what it wrote, its wall time, and when it started and ended (Unix seconds)."""

    exit_code: int | None
    stdout_tail: str
    stderr_tail: str
    wall_s: float
    started_at: float | None = None
    ended_at: float | None = None

    def as_json(self) -> dict[str, object]:
        return {
            "exit_code": self.exit_code,
            "stdout_tail": self.stdout_tail,
            "stderr_tail": self.stderr_tail,
            "wall_s": self.wall_s,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
        }


@dataclass(frozen=True)
class Status:
    """How a task ended. `exit_code` is the first failing executor's code, 0 when all succeed,
    `None` when no executor's exit could be observed (cancelled, or a system error)."""

    state: TaskState
    exit_code: int | None
    stdout_tail: str
    stderr_tail: str
    usage: Usage
    reason: str = ""
    executors: tuple[ExecutorLog, ...] = ()  # one per executor that ran, in order


@dataclass(frozen=True)
class Accelerator:
    """The accelerators a task holds on each of its nodes: `kind` (`gpu`, `npu`) and `model`
    as the engine names it (a Slurm GRES type such as `a100`, a Ray accelerator type); `None`
    takes any model of that kind."""

    kind: str
    model: str | None = None


@dataclass(frozen=True)
class NodeCapacity:
    """One node of the engine: its CPUs and accelerators by model (as the engine names them),
    with what no job holds now."""

    name: str
    cpus: int
    free_cpus: int
    gpus_by_model: Mapping[str, int] = field(default_factory=dict)
    free_gpus_by_model: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Capacity:
    """What the engine behind a backend holds now: for the pool the scheduler sees.

    `gpus_by_model` maps an accelerator model as the engine names it (a Slurm gres type, a Ray
    custom resource) to its count; the free figures are what no job holds at this moment.
    `per_node` breaks the same figures down by node where the engine tells (a gang task needs
    whole nodes: see `Backend.start`'s `nodes`).
    """

    nodes: int
    cpus: int
    free_cpus: int
    gpus: int = 0
    free_gpus: int = 0
    gpus_by_model: Mapping[str, int] = field(default_factory=dict)
    memory_mb: int = 0
    per_node: tuple[NodeCapacity, ...] = ()


@dataclass(frozen=True)
class StartRequest:
    """One task for `start_many`: the arguments of `Backend.start`."""

    task_id: str
    executors: Sequence[Executor]
    workdir: Path
    devices: int = 0
    nodes: int = 1
    accelerator: Accelerator | None = None
    max_run_s: float | None = None
    checkpoint_dir: Path | None = None
    grace_s: float | None = None


class Backend(Protocol):
    """Runs tasks' executors; see the module docstring for the invariants.

    A backend may also offer `start_many(requests) -> list[Handle | SuanliError]`: the tasks
    of one lease started together (Slurm: one job array for the tasks that ask the same
    resources), each answered in order with its handle or with the error `start` would have
    raised for it. The agent uses it where a backend has it.

    Besides `start`/`poll`/`cancel`, a backend answers `capacity()` (None when it cannot tell)
    and `reattach(task_id, ref)`: after the agent restarts, the `Handle` of work it started
    before (`ref` as `start` returned it, persisted by the agent), or `None` when that work
    cannot be found again (the local backend's children die with their agent's session).
    """

    @property
    def name(self) -> str: ...

    def start(
        self,
        task_id: str,
        executors: Sequence[Executor],
        workdir: Path,
        devices: int = 0,
        *,
        nodes: int = 1,
        accelerator: Accelerator | None = None,
        max_run_s: float | None = None,
        checkpoint_dir: Path | None = None,
        grace_s: float | None = None,
    ) -> Handle:
        """Start the executors, one after another, in `workdir` (created if missing); stop
        them after `max_run_s` seconds (None: no limit), with `grace_s` between SIGTERM and
        SIGKILL (None: the backend's own; an engine that fixes the grace when the job is
        submitted, Ray, uses it for every stop); tell them `checkpoint_dir`.

        The task holds `devices` on each of `nodes` distinct nodes (a gang: all or none):
        accelerators of `accelerator`'s kind and model, or CPU cores when `accelerator` is
        None. A backend that cannot hold a gang of `nodes` (the local backend: one node)
        raises `InvalidValue` naming `nodes`."""
        ...

    def poll(self, handle: Handle) -> Status | None:
        """`None` while running; the terminal status once, then the handle is forgotten."""
        ...

    def cancel(self, handle: Handle) -> None:
        """Ask the work to stop (politely first, then by force); never blocks."""
        ...

    def preempt(self, handle: Handle, grace_s: float) -> None:
        """Take the work back: SIGTERM now, SIGKILL after `grace_s`; it ends PREEMPTED (or
        with its own outcome if it finished first). Never blocks; idempotent."""
        ...

    def capacity(self) -> Capacity | None:
        """The engine's size and free share now; None when the backend cannot tell."""
        ...

    def reattach(self, task_id: str, ref: str) -> Handle | None:
        """Find work started before an agent restart; None when it is gone."""
        ...


BACKEND_NAMES = ("local", "slurm", "ray")


def backend_named(name: str, **options: object) -> Backend:
    """The backend called `name`; `options` go to its constructor (`partition`, `account`
    for slurm; `address` for ray). Each module is imported only when asked for."""
    if name == "local":
        from suanli.agent.backends.local import LocalBackend

        return LocalBackend(**options)  # type: ignore[arg-type]
    if name == "slurm":
        from suanli.agent.backends.slurm import SlurmBackend

        return SlurmBackend(**options)  # type: ignore[arg-type]
    if name == "ray":
        from suanli.agent.backends.ray import RayBackend

        return RayBackend(**options)  # type: ignore[arg-type]
    raise InvalidValue("backend", name, "one of " + ", ".join(BACKEND_NAMES), "local、slurm 或 ray")
