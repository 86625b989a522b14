"""The local backend: a task's executors run as subprocesses of the agent, one after another.

Each task owns a directory (given by the agent, created if missing) that holds `stdout.txt` and
`stderr.txt`, appended to by every executor in turn unless it names its own `stdout`/`stderr` file;
an executor runs there unless it names a `workdir`. Every path a task names is a task path
(`container_path`): `/data/x` is `<task dir>/data/x`. Its environment is `task_environment`: the
executor's `env` over a minimal set (PATH, HOME = the task directory, TMPDIR = `/tmp` when it is
private, else `<task dir>/tmp`, LANG), never the agent's own environment, so no credential of the
agent reaches a task. Every executor starts in a new session (`start_new_session=True`), so its
process group id is its leader's pid and everything it spawns can be signalled at once.

Images: there is no container runtime here. An executor's `image` is recorded by the server and
not used; the command runs on the host, as the agent's user, with the host's programs. What a
container would give and this backend gives instead: a private working directory (the task
directory), and a private `/tmp` where the kernel allows it: each executor runs in its own mount
namespace (`unshare --mount`, with a user namespace when the agent is not root) in which
`<task dir>/tmp` is bind-mounted on `/tmp`, so `/tmp/x` in a command and the task path `/tmp/x`
are the same file. Where namespaces are refused the executor sees the host's `/tmp`
(`LocalBackend.private_tmp` is then False, and the agent says so when it starts).

A task runs at most once at a time: its executors die with their agent, even when the agent is
killed by SIGKILL. Each executor also gets a PID namespace of its own (`unshare --pid --fork
--kill-child --mount-proc`): its leader is `unshare`, which the kernel kills when the agent dies
(`PR_SET_PDEATHSIG`), which kills the namespace's first process (a shell that runs the command
in the foreground, so the command still gets SIGTERM on cancel), whose end makes the kernel kill
every process of the namespace, those that left the process group or the session included. The
private `/proc` also hides the agent's (and every other) process from the task. Where PID
namespaces are refused (`pid_namespace` False, the agent says so) only the leader gets the
parent-death signal; what it leaves behind in its group is killed by the next agent started on
the same work root, which finds the group in its state file (`executor_process`,
`kill_leftovers`).

Lifecycle, all driven by `poll` and never blocking: an executor's leader is reaped with
`os.wait4(pid, WNOHANG)`; if members of its group outlive it they get SIGTERM, then SIGKILL after
`grace_s` (a task leaves nothing running behind); then the next executor starts, unless the one
before failed. `cancel` sends SIGTERM to the running group and the next polls escalate to SIGKILL
after `grace_s`; the task ends `CANCELED` once the group is empty or has been sent SIGKILL.

Metering: `wall_s` is monotonic time from `start` to the poll that saw the end (so it overcounts
by at most one poll interval); `cpu_s` is user + system time from the rusage that `os.wait4`
returns for each executor's leader, which includes every descendant the leader itself waited for
(a shell's foreground commands) but not orphans it left behind; `device_s` = `wall_s` x devices.

Devices: a task that holds accelerators (`accelerator` given, `devices` > 0) is bound to that many
of this host's devices of the kind that no other running task holds, lowest first: its executors
see only them, through `CUDA_VISIBLE_DEVICES` and `HIP_VISIBLE_DEVICES` for `gpu` (NVIDIA and
Hygon DCU; with `CUDA_DEVICE_ORDER=PCI_BUS_ID`, so CUDA's indices are NVML's) and
`ASCEND_RT_VISIBLE_DEVICES` for `npu`, over the executor's own values. The host's devices are
the `accelerators` given to the backend, else those the agent itself may see (its own
`CUDA_VISIBLE_DEVICES`, `HIP_VISIBLE_DEVICES` or `ASCEND_RT_VISIBLE_DEVICES`), else one index per
`/dev/nvidiaN` (`gpu`) or `/dev/davinciN` (`npu`). A host with none of the kind binds nothing
(as before binding existed); one with too few free refuses the task (`InvalidValue` naming
`devices`). `bound_devices(handle)` tells the agent which, so it can meter them.

Outcomes: the first executor that exits non-zero ends the task `EXECUTOR_ERROR` with its exit code
(128 + N when killed by signal N, as a shell and the Slurm backend report it), unless it has
`ignore_error` (then the next one runs, and a task whose other executors succeed is `COMPLETE`, its
reason naming the ignored failures); a command that cannot be started (missing binary, missing
permission) ends it `EXECUTOR_ERROR` with 127 (126 for other OS errors) and the error appended to
stderr; a task directory that cannot be made is `SYSTEM_ERROR`. Tails are the last `tail_bytes`
bytes of each file, decoded as UTF-8 with replacement after dropping a character cut in half.

Not thread-safe: one agent loop drives one backend.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from suanli.agent.backends import (
    PREEMPT_REASON,
    Accelerator,
    Capacity,
    Executor,
    ExecutorLog,
    Handle,
    Status,
    TaskState,
    Usage,
    container_path,
    max_run_reason,
    task_environment,
)
from suanli.errors import InvalidValue, SuanliError

__all__ = [
    "STDERR_FILE",
    "STDOUT_FILE",
    "TAIL_BYTES",
    "VISIBLE_DEVICES_ENV",
    "LocalBackend",
    "binding_environment",
    "group_alive",
    "host_accelerators",
    "kill_leftovers",
    "pid_namespace_available",
    "private_tmp_available",
    "read_tail",
    "signal_group",
    "start_failure",
    "start_ticks",
]

STDOUT_FILE = "stdout.txt"
STDERR_FILE = "stderr.txt"
TAIL_BYTES = 4096
EXIT_NOT_FOUND = 127
EXIT_NOT_EXECUTABLE = 126
# Inside the namespaces unshare made: bind-mount "$2" on /tmp with the mount program "$1", then
# run the command. In a PID namespace the shell stays as its first process and runs the command
# in the foreground: a first process ignores signals it has no handler for, its child does not.
# A checkpoint directory "$3" that lives under the host's /tmp (so the private /tmp would hide
# it) is first bind-mounted at the same place ("$4", relative to /tmp) inside the private one.
_KEEP_CHECKPOINT = (
    'm=$1 t=$2 c=$3 r=$4; shift 4; if [ -n "$c" ]; then mkdir -p -- "$t/$r" && '
    '"$m" --bind "$c" "$t/$r" || exit 126; fi; '
)
_PRIVATE_TMP_SCRIPT = _KEEP_CHECKPOINT + '"$m" --rbind "$t" /tmp && exec "$@"'
_PID_INIT_SCRIPT = _KEEP_CHECKPOINT + '"$m" --rbind "$t" /tmp && "$@"'
_PR_SET_PDEATHSIG = 1
# The variables that bind a task to its accelerators, by kind; the first also names the devices
# an agent restricted by its provider may see (see `host_accelerators`).
VISIBLE_DEVICES_ENV: Mapping[str, tuple[str, ...]] = {
    "gpu": ("CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES"),
    "npu": ("ASCEND_RT_VISIBLE_DEVICES",),
}
_DEVICE_NODES = {"gpu": re.compile(r"^nvidia([0-9]+)$"), "npu": re.compile(r"^davinci([0-9]+)$")}
_STAT_START_FIELD = 19  # starttime in /proc/<pid>/stat, counted from the field after "(comm)"


def _unshare_prefix(pid_namespace: bool) -> list[str]:
    unshare = shutil.which("unshare") or "unshare"
    user = [] if os.geteuid() == 0 else ["--map-current-user"]
    pid = ["--pid", "--fork", "--kill-child", "--mount-proc"] if pid_namespace else []
    return [unshare, *pid, "--mount", "--propagation", "private", *user, "--"]


def _wrapped(
    argv: Sequence[str], private: Path, pid_namespace: bool, checkpoint: Path | None = None
) -> list[str]:
    """`argv` run in fresh namespaces with `private` on /tmp (see the module docstring), and
    `checkpoint` still reachable at its own path when it lies under the host's /tmp."""
    script = _PID_INIT_SCRIPT if pid_namespace else _PRIVATE_TMP_SCRIPT
    mount = shutil.which("mount") or "/bin/mount"
    hidden, under_tmp = "", ""
    if checkpoint is not None:
        resolved = checkpoint.resolve()
        if Path("/tmp") in resolved.parents:
            hidden, under_tmp = str(resolved), str(resolved.relative_to("/tmp"))
    return [
        *_unshare_prefix(pid_namespace),
        "/bin/sh",
        "-c",
        script,
        "suanli-task",
        mount,
        str(private),
        hidden,
        under_tmp,
        *argv,
    ]


def _die_with_parent(parent: int) -> Callable[[], None]:
    """A `preexec_fn` that makes the kernel SIGKILL the child when `parent` dies (Linux), and
    kills it at once if the parent died before the request was made."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux: nothing to ask for
        return lambda: None

    def request() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)

    return request


def start_ticks(pid: int) -> int | None:
    """When process `pid` started (clock ticks since boot, from /proc), or None when it is gone:
    with the pid, it names one process even after the pid is reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    try:
        return int(fields[_STAT_START_FIELD])
    except (IndexError, ValueError):
        return None


def kill_leftovers(pgid: int, started: int) -> bool:
    """SIGKILL what is left of an executor's process group that a previous agent started
    (its leader's pid `pgid` and start time `started`, as `executor_process` gave them); False
    when the pid now names another process (it was reused), so nothing is signalled."""
    now = start_ticks(pgid)
    if now is not None and now != started:
        return False
    signal_group(pgid, signal.SIGKILL)  # the leader or, once it is gone, its orphans
    return True


def start_failure(exc: OSError | SuanliError, program: str) -> tuple[int, str]:
    """The exit code and message of an executor that could not be started: 127 when the
    program is missing, 126 otherwise (a shell's codes)."""
    missing = isinstance(exc, FileNotFoundError) or getattr(exc, "errno", None) == errno.ENOENT
    detail = exc.one_line() if isinstance(exc, SuanliError) else str(exc)
    return (
        EXIT_NOT_FOUND if missing else EXIT_NOT_EXECUTABLE
    ), f"cannot start {program!r}: {detail}"


@functools.cache
def _namespaces_work(pid_namespace: bool) -> bool:
    with tempfile.TemporaryDirectory(prefix="suanli-probe-") as scratch:
        probe = _wrapped(["true"], Path(scratch), pid_namespace)
        try:
            done = subprocess.run(probe, capture_output=True, timeout=10, check=False)
        except (OSError, subprocess.SubprocessError):
            return False
        return done.returncode == 0


def private_tmp_available() -> bool:
    """Whether this kernel and user may give a process a private /tmp (probed once)."""
    return _namespaces_work(False)


def pid_namespace_available() -> bool:
    """Whether this kernel and user may give a process its own PID namespace and /proc (with a
    private /tmp), probed once."""
    return _namespaces_work(True)


def read_tail(path: Path, limit_bytes: int = TAIL_BYTES, start: int = 0) -> str:
    """The last `limit_bytes` of a file from byte `start` on, as text; '' when it is missing."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(start, size - limit_bytes))
            data = f.read(limit_bytes)
    except FileNotFoundError:
        return ""
    if len(data) == limit_bytes and size - start > limit_bytes:
        # Drop UTF-8 continuation bytes of a character whose first byte was cut off.
        cut = 0
        while cut < min(3, len(data)) and data[cut] & 0xC0 == 0x80:
            cut += 1
        data = data[cut:]
    return data.decode("utf-8", errors="replace")


def group_alive(pgid: int) -> bool:
    """Whether any process (zombies included) is still in process group `pgid`."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def host_accelerators(
    kind: str, environ: Mapping[str, str] | None = None, dev: Path = Path("/dev")
) -> tuple[str, ...]:
    """This host's devices of `kind` that the agent may hand out (see the module docstring):
    the ids in the agent's own visibility variable when set, else one index per device node."""
    environ = os.environ if environ is None else environ
    for name in VISIBLE_DEVICES_ENV.get(kind, ()):
        if name in environ:
            return tuple(d.strip() for d in environ[name].split(",") if d.strip())
    pattern = _DEVICE_NODES.get(kind)
    try:
        nodes = [n for n in os.listdir(dev) if pattern is not None and pattern.match(n)]
    except OSError:
        return ()
    return tuple(str(i) for i in range(len(nodes)))


def binding_environment(kind: str, devices: Sequence[str]) -> dict[str, str]:
    """The variables that show a task only `devices` of `kind`; none when nothing is bound."""
    if not devices:
        return {}
    ids = ",".join(devices)
    env = dict.fromkeys(VISIBLE_DEVICES_ENV.get(kind, ()), ids)
    if kind == "gpu":
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # CUDA's indices as NVML's
    return env


@dataclass
class _Run:
    """Mutable state of one task in this backend; only `LocalBackend` touches it."""

    task_id: str
    executors: tuple[Executor, ...]
    task_dir: Path
    devices: int
    started_at: float
    kind: str = "cpu"  # the accelerators' kind, or cpu
    bound: tuple[str, ...] = ()  # this host's devices the task sees (see `binding_environment`)
    index: int = 0  # the executor running now, or the next one to start
    proc: subprocess.Popen[bytes] | None = None
    pgid: int | None = None  # group of the current executor, kept until it is empty
    pgid_started: int | None = None  # its leader's start time (see `start_ticks`)
    leader_code: int | None = None  # exit code of the current executor once reaped
    cpu_s: float = 0.0
    cancel_requested: bool = False
    max_run_s: float | None = None  # stopped after this long (EXECUTOR_ERROR)
    checkpoint_dir: Path | None = None  # SUANLI_CHECKPOINT_DIR
    preempted: bool = False  # stopped by `preempt`: ends PREEMPTED
    timed_out: bool = False  # stopped at `max_run_s`: ends EXECUTOR_ERROR
    grace_s: float | None = None  # `preempt`'s grace, over the backend's
    timeout_grace_s: float | None = None  # `start`'s grace, for a stop at `max_run_s`
    term_sent_at: float | None = None
    kill_sent: bool = False
    ignored: list[str] = field(default_factory=list)  # failures of ignore_error executors
    logs: list[ExecutorLog] = field(default_factory=list)  # executors that ended, in order
    segment: _Segment | None = None  # where the current executor's output starts
    final: Status | None = None


@dataclass(frozen=True)
class _Segment:
    """The current executor's output files, the offsets it started writing at, its start."""

    stdout: Path
    stdout_from: int
    stderr: Path
    stderr_from: int
    started: float  # backend clock
    started_at: float  # Unix time


class LocalBackend:
    """Runs executors as local process groups; see the module docstring."""

    def __init__(
        self,
        *,
        grace_s: float = 2.0,
        tail_bytes: int = TAIL_BYTES,
        clock: Callable[[], float] = time.monotonic,
        private_tmp: bool | None = None,
        pid_namespace: bool | None = None,
        accelerators: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        """`private_tmp`, `pid_namespace`: None = where available (probed), False = never,
        True = required. A PID namespace comes with a private /tmp. `accelerators`: this
        host's device ids by kind (`{"gpu": ["0", "1"]}`) to bind tasks to; None = found
        (`host_accelerators`) when first needed."""
        self.grace_s = grace_s
        self._accelerators = {k: tuple(v) for k, v in (accelerators or {}).items()}
        self._found_accelerators = accelerators is not None
        self.tail_bytes = tail_bytes
        self._clock = clock
        self._runs: dict[str, _Run] = {}
        self._die_with_agent = _die_with_parent(os.getpid())
        pid_ok = private_tmp is not False and pid_namespace is not False
        pid_ok = pid_ok and pid_namespace_available()
        if pid_namespace and not pid_ok:
            raise OSError("a PID namespace needs 'unshare --pid --mount-proc', which is refused")
        tmp_ok = pid_ok or (private_tmp is not False and private_tmp_available())
        if private_tmp and not tmp_ok:
            raise OSError("a private /tmp needs 'unshare --mount', which this system refuses")
        self.private_tmp = tmp_ok
        self.pid_namespace = pid_ok

    @property
    def name(self) -> str:
        return "local"

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
        if nodes != 1:
            raise InvalidValue(
                "nodes",
                nodes,
                "1 (the local backend runs a task on this one machine)",
                "1（本地后端只有一台机器）",
            )
        ref = task_id
        if ref in self._runs:
            raise ValueError(f"task {task_id!r} is already running on this backend")
        kind = "cpu" if accelerator is None else accelerator.kind
        run = _Run(
            task_id=task_id,
            executors=tuple(executors),
            task_dir=Path(workdir),
            devices=max(0, devices),
            kind=kind,
            bound=self._bind(kind, devices),
            started_at=self._clock(),
            max_run_s=max_run_s,
            checkpoint_dir=None if checkpoint_dir is None else Path(checkpoint_dir),
            timeout_grace_s=grace_s,
        )
        self._runs[ref] = run
        try:
            run.task_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self._finish(run, TaskState.SYSTEM_ERROR, None, f"cannot make task directory: {exc}")
        else:
            self._advance(run)
        return Handle(task_id=task_id, backend=self.name, ref=ref)

    def _bind(self, kind: str, devices: int) -> tuple[str, ...]:
        """The lowest `devices` of this host's devices of `kind` that no running task holds;
        none for CPU cores or a host with none of the kind; `InvalidValue` when too few are
        free."""
        if kind == "cpu" or devices <= 0:
            return ()
        if kind not in self._accelerators and not self._found_accelerators:
            self._accelerators[kind] = host_accelerators(kind)
        host = self._accelerators.get(kind, ())
        if not host:
            return ()
        held = {
            d for r in self._runs.values() if r.final is None and r.kind == kind for d in r.bound
        }
        free = [d for d in host if d not in held]
        if len(free) < devices:
            raise InvalidValue(
                "devices",
                devices,
                f"at most the {len(free)} free {kind} devices of this host "
                f"({', '.join(host)}; {len(held)} held by running tasks)",
                f"不超过本机空闲的 {len(free)} 个 {kind} 设备",
            )
        return tuple(free[:devices])

    def bound_devices(self, handle: Handle) -> tuple[str, tuple[str, ...]]:
        """The kind and ids of the devices the task is bound to (empty: none bound), for the
        agent's energy meter."""
        run = self._runs.get(handle.ref)
        return ("cpu", ()) if run is None else (run.kind, run.bound)

    def poll(self, handle: Handle) -> Status | None:
        run = self._runs[handle.ref]
        if run.final is None:
            self._advance(run)
        if run.final is None:
            return None
        del self._runs[handle.ref]
        return run.final

    def capacity(self) -> Capacity | None:
        """None: the local backend cannot tell what else uses this host, so the provider's
        declared pool stands (it may oversubscribe the host on purpose)."""
        return None

    def reattach(self, task_id: str, ref: str) -> Handle | None:
        """Never: processes of a previous agent are not this process's children, so their exit
        status cannot be reaped; the agent reports such tasks lost."""
        return None

    def executor_process(self, handle: Handle) -> tuple[int, int] | None:
        """The running executor's process group and its leader's start time, for the agent's
        state file (see `kill_leftovers`); None between executors or once the task ended."""
        run = self._runs.get(handle.ref)
        if run is None or run.pgid is None or run.pgid_started is None:
            return None
        return run.pgid, run.pgid_started

    def kill_leftovers(self, pgid: int, started: int) -> bool:
        """Kill what a previous agent's executor left running (see `kill_leftovers`)."""
        return kill_leftovers(pgid, started)

    def cancel(self, handle: Handle) -> None:
        run = self._runs.get(handle.ref)
        if run is None or run.final is not None or run.cancel_requested:
            return
        run.cancel_requested = True
        if run.pgid is not None:
            self._terminate(run)

    def preempt(self, handle: Handle, grace_s: float) -> None:
        """As `cancel`, with `grace_s` between SIGTERM and SIGKILL; the task ends PREEMPTED."""
        run = self._runs.get(handle.ref)
        if run is None or run.final is not None or run.cancel_requested:
            return  # a cancel (or a time-out) already under way keeps its outcome
        run.preempted = run.cancel_requested = True
        run.grace_s = max(0.0, grace_s)
        if run.pgid is not None:
            self._terminate(run)

    # -- the state machine, driven by start/poll/cancel ----------------------------------

    def _advance(self, run: _Run) -> None:
        """Move `run` as far as it can go without waiting."""
        if (
            run.max_run_s is not None
            and not run.cancel_requested
            and self._clock() - run.started_at >= run.max_run_s
        ):
            run.timed_out = run.cancel_requested = True
            if run.pgid is not None:
                self._terminate(run)
        while run.final is None:
            if run.pgid is not None and not self._group_done(run):
                return
            if run.leader_code is not None:
                code, run.leader_code = run.leader_code, None
                self._log_executor(run, code)
                if code != 0 and not run.cancel_requested:
                    n = len(run.executors)
                    reason = f"executor {run.index + 1} of {n} exited with code {code}"
                    if not run.executors[run.index].ignore_error:
                        self._finish(run, TaskState.EXECUTOR_ERROR, code, reason)
                        return
                    run.ignored.append(f"{reason} (ignore_error)")
                run.index += 1
            if run.cancel_requested:
                if run.preempted:
                    self._finish(run, TaskState.PREEMPTED, None, PREEMPT_REASON)
                elif run.timed_out:
                    assert run.max_run_s is not None
                    reason = max_run_reason(run.max_run_s)
                    self._finish(run, TaskState.EXECUTOR_ERROR, None, reason)
                else:
                    self._finish(run, TaskState.CANCELED, None, "canceled")
                return
            if run.index >= len(run.executors):
                self._finish(run, TaskState.COMPLETE, 0, "; ".join(run.ignored))
                return
            self._spawn(run)

    def _group_done(self, run: _Run) -> bool:
        """Reap the leader if it exited; then wait for (and clean up) the rest of its group."""
        assert run.pgid is not None
        if run.proc is not None:
            try:
                pid, wait_status, rusage = os.wait4(run.proc.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere; nothing to measure
                pid, wait_status, rusage = run.proc.pid, 0, None
            if pid == 0:
                self._escalate(run)
                return False
            code = os.waitstatus_to_exitcode(wait_status)
            code = 128 - code if code < 0 else code  # killed by signal N: 128 + N
            run.proc.returncode = code
            run.proc = None
            run.leader_code = code
            if rusage is not None:
                run.cpu_s += rusage.ru_utime + rusage.ru_stime
        if group_alive(run.pgid) and not run.kill_sent:
            if run.term_sent_at is None:
                self._terminate(run)  # leftovers of a finished leader get the same grace
            self._escalate(run)
            if not run.kill_sent:
                return False
        run.pgid = None
        run.pgid_started = None
        run.term_sent_at = None
        run.kill_sent = False
        return True

    def _terminate(self, run: _Run) -> None:
        assert run.pgid is not None
        run.term_sent_at = self._clock()
        signal_group(run.pgid, signal.SIGTERM)

    def _escalate(self, run: _Run) -> None:
        if run.pgid is None or run.term_sent_at is None or run.kill_sent:
            return
        grace_s = self.grace_s  # a cancel's
        if run.preempted and run.grace_s is not None:
            grace_s = run.grace_s
        elif run.timed_out and run.timeout_grace_s is not None:
            grace_s = run.timeout_grace_s
        if self._clock() - run.term_sent_at >= grace_s:
            signal_group(run.pgid, signal.SIGKILL)
            run.kill_sent = True

    def _spawn(self, run: _Run) -> None:
        executor = run.executors[run.index]
        argv = list(executor.command)
        try:
            where = f"executors[{run.index}]"
            task = run.task_dir
            cwd = (
                container_path(task, executor.workdir, f"{where}.workdir")
                if executor.workdir
                else task
            )
            cwd.mkdir(parents=True, exist_ok=True)
            out_path = self._stream_path(run, executor.stdout, f"{where}.stdout", STDOUT_FILE)
            err_path = self._stream_path(run, executor.stderr, f"{where}.stderr", STDERR_FILE)
            private = task / "tmp"
            private.mkdir(exist_ok=True)
            env = task_environment(task, executor.env, run.checkpoint_dir)
            env.update(binding_environment(run.kind, run.bound))
            if self.private_tmp:
                env["TMPDIR"] = executor.env.get("TMPDIR", "/tmp")  # the private one
                argv = _wrapped(argv, private, self.pid_namespace, run.checkpoint_dir)
            with contextlib.ExitStack() as files:
                source: IO[bytes] | int = subprocess.DEVNULL
                if executor.stdin:
                    stdin_path = container_path(task, executor.stdin, f"{where}.stdin")
                    source = files.enter_context(stdin_path.open("rb"))
                out = files.enter_context(out_path.open("ab" if executor.stdout is None else "wb"))
                err = files.enter_context(err_path.open("ab" if executor.stderr is None else "wb"))
                run.segment = _Segment(
                    stdout=out_path,
                    stdout_from=os.fstat(out.fileno()).st_size,
                    stderr=err_path,
                    stderr_from=os.fstat(err.fileno()).st_size,
                    started=self._clock(),
                    started_at=time.time(),
                )
                run.proc = subprocess.Popen(
                    argv,
                    cwd=cwd,
                    env=env,
                    stdin=source,
                    stdout=out,
                    stderr=err,
                    start_new_session=True,
                    preexec_fn=self._die_with_agent,
                )
        except (OSError, SuanliError) as exc:  # SuanliError: a path that leaves the task dir
            code, message = start_failure(exc, executor.command[0])
            with (
                contextlib.suppress(OSError),
                (run.task_dir / STDERR_FILE).open("ab") as err_file,
            ):
                err_file.write(f"suanli agent: {message}\n".encode())
            self._log_executor(run, code)
            self._finish(run, TaskState.EXECUTOR_ERROR, code, message)
            return
        run.pgid = run.proc.pid
        run.pgid_started = start_ticks(run.pgid)

    @staticmethod
    def _stream_path(run: _Run, named: str | None, field_name: str, default: str) -> Path:
        """The file an executor's stdout or stderr goes to (its own, or the task's shared one)."""
        if named is None:
            return run.task_dir / default
        path = container_path(run.task_dir, named, field_name)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def _log_executor(self, run: _Run, code: int | None) -> None:
        """Record how the current executor ended, with the tails of its own output."""
        segment = run.segment
        now = self._clock()
        if segment is None:  # it never got as far as opening its output
            segment = _Segment(
                run.task_dir / STDOUT_FILE, 0, run.task_dir / STDERR_FILE, 0, now, time.time()
            )
        run.logs.append(
            ExecutorLog(
                exit_code=code,
                stdout_tail=read_tail(segment.stdout, self.tail_bytes, segment.stdout_from),
                stderr_tail=read_tail(segment.stderr, self.tail_bytes, segment.stderr_from),
                wall_s=max(0.0, now - segment.started),
                started_at=segment.started_at,
                ended_at=segment.started_at + max(0.0, now - segment.started),
            )
        )
        run.segment = None

    def _finish(self, run: _Run, state: TaskState, exit_code: int | None, reason: str) -> None:
        wall_s = max(0.0, self._clock() - run.started_at)
        run.final = Status(
            state=state,
            exit_code=exit_code,
            stdout_tail=read_tail(run.task_dir / STDOUT_FILE, self.tail_bytes),
            stderr_tail=read_tail(run.task_dir / STDERR_FILE, self.tail_bytes),
            usage=Usage(wall_s=wall_s, cpu_s=run.cpu_s, device_s=wall_s * run.devices),
            reason=reason,
            executors=tuple(run.logs),
        )
