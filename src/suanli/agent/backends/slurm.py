"""The Slurm backend: a task becomes one Slurm batch job whose script runs its executors in order.

`start` writes, in the task directory's `.suanli-slurm/` folder, a bash batch script (`job.sh`)
and the task's description (`task.json`: devices, and for each executor its output files and
`ignore_error`), then submits the script with `sbatch --parsable`; the `Handle`'s `ref` is the
job id. The script runs each executor as the local backend does: in its `workdir` (a task path,
see `container_path`; the task directory by default), with the executor's `env` over the
minimal set of `task_environment` and what Slurm sets for a job (`SLURM_*`, the GPUs it bound):
sbatch itself runs with a scrubbed environment (`submit_environment`: PATH, LANG, and Slurm's
own `SLURM_CONF` where the agent has it) and `--export=ALL`, so nothing else of the agent's
environment reaches the job, and the script sets PATH, HOME, TMPDIR (`<task dir>/tmp`) and LANG.
(Not `--export=NONE`: in Slurm 22.05 it, like `NIL` and a list of variables, makes slurmd load
the user's login environment for every job, `--get-user-env`, which cost ~0.15 s a job here
and leaks whatever the login shell sets into the task); its `stdin` from a task path or
`/dev/null`, and its output appended to the task's `stdout.txt`/`stderr.txt` (the job's own
streams, opened by Slurm in append mode) unless it names its own file (then truncated). A
non-zero exit stops the script with that code unless the executor has `ignore_error`. The script
records in `.suanli-slurm/results.txt` when each executor started (with the sizes of its output
files then, so each `ExecutorLog` gets the tails of its own output), how it ended and the CPU
time of the children so far; that file, `task.json` and Slurm's record of the job are all `poll`
needs, so a fresh backend can `reattach` to a job by id after an agent restart.

Resources: `devices` on each of `nodes` nodes. CPU cores (no `accelerator`):
`--ntasks=1 --cpus-per-task=devices`. Accelerators: `--gres=KIND:MODEL:devices` (`KIND:devices`
when the model is None; KIND `gpu`, or `npu` for a site that declares NPUs as a GRES named
`npu`), with one CPU; Slurm binds the GPUs it chose (`CUDA_VISIBLE_DEVICES`). A gang
(`nodes` > 1) is `--nodes=N --ntasks-per-node=1` with those per-node resources, and each
executor runs through `srun --mpi=pmi2 --nodes=N --ntasks-per-node=1 --export=ALL
--kill-on-bad-exit=1`: once on every node, an MPI program's ranks getting their rank and size
from PMI (MPICH; `SlurmBackend(mpi=...)` for another plugin); the batch script itself runs on
the first node. A gang's executor exits with srun's code: the highest of its ranks' (a rank
that fails gets the others killed, `--kill-on-bad-exit`, so often 143). A gang larger than
the partition raises `InvalidValue` naming `nodes` before anything is submitted (from
`sinfo`), or from sbatch's refusal ("Node count specification invalid", with
`EnforcePartLimits=ALL`; without it Slurm would leave the job PENDING for ever with reason
PartitionNodeLimit). `capacity` parses one `sinfo -N` into `per_node` and
GPUs by GRES type (`parse_capacity`); NPUs are not counted there.

Job arrays (`start_many`, the tasks of one lease): tasks of one node that ask the same sbatch
options (resources, time limit, partition, account) go as one job array (`--array=0-N`, up to
`max_array` a submission), so a lease of N tasks costs one sbatch rather than N. Each task still
gets its own task.json and job.sh; the array's batch script (`array.sh`, in the first task's
STATE_DIR, with `array.json` naming each index's task and directory) runs, at index i, task i's
job.sh in its own directory with its output appended to that task's stdout.txt/stderr.txt, as a
single job's would be. A task's ref is then `ARRAYID_INDEX`, which squeue (`-r`), scontrol and
scancel take as they take a job id, so poll, cancel, preempt and the time limit work on one task
of an array alone; in the jobcomp file an array's task is found by its `ArrayJobId` and
`ArrayTaskId`, and `reattach` finds its directory through `array.json`. Gangs and a task alone
in its group go as plain batch jobs; a task refused (`InvalidValue`) is answered in its place
and the others are submitted.

`poll` asks `squeue -h -r -j ID -o %T --states=all`; once the job has left the queue it reads
`scontrol show job ID` (while slurmctld remembers it, `MinJobAge`), else the job's line in the
jobcomp file (`JobCompType=jobcomp/filetxt`, see `scripts/slurm.sh`). Slurm's states map to
ours: PENDING/CONFIGURING/RUNNING/COMPLETING/SUSPENDED -> still running; COMPLETED -> COMPLETE;
FAILED/OUT_OF_MEMORY -> EXECUTOR_ERROR with the first failing executor's code (SYSTEM_ERROR if no
executor failed, e.g. the script could not start); CANCELLED -> CANCELED; TIMEOUT ->
EXECUTOR_ERROR, reason `max_run_reason(max_run_s)` ("time limit" when the task had none);
NODE_FAIL/PREEMPTED/BOOT_FAIL/DEADLINE -> SYSTEM_ERROR. A failing `sbatch` does not raise: the
next `poll` of the handle returns SYSTEM_ERROR with its error.

Maximum run time: the backend stops a job itself once its script began `max_run_s` ago (its
`begin` record in results.txt, so the count survives an agent restart): SIGTERM to every process
of it, SIGKILL after the `grace_s` given to `start`, as a preemption does; it ends
EXECUTOR_ERROR with `max_run_reason(max_run_s)`. `--time` (ceil(max_run_s / 60) minutes: Slurm
keeps limits in whole minutes) stays as the backstop for a job whose agent is gone (Slurm then
ends it TIMEOUT, up to a minute late plus the controller's check interval and `KillWait`).
Preemption (`preempt`): `scancel --signal=TERM --full`
signals every process of the job (the batch shell and the executor) at once, and once `grace_s`
has passed a later `poll` has the batch shell kill its whole process group at once
(`scancel --batch --signal=USR1`; its trap runs `kill -KILL 0`). Slurm itself signals the
processes one by one, and a shell whose executor died first would run on to its next command
meanwhile. Should the job still run `KILL_BACKSTOP_S` later, `scancel --signal=KILL --full`. A
job still pending is simply cancelled. So the job ends once nothing of it runs;
a job this backend preempted ends PREEMPTED whatever state Slurm gives it (FAILED by the signal,
CANCELLED), unless it COMPLETED first. The checkpoint directory is exported into the job's
environment as `SUANLI_CHECKPOINT_DIR` (a path the compute node must see, like the task
directory).

Metering: `wall_s` is from the script's first to its last record (microsecond clock); when the
script was killed before it could write its last record (cancel, preemption, time limit), to
the end of the second of Slurm's EndTime (which Slurm cuts to whole seconds), or now if that is
sooner, and from Slurm's StartTime to EndTime when the script left no record at all. `cpu_s` is
user + system time of the batch shell and its executors as its `times` builtin reports it (what
bash waited for), since Slurm without slurmdbd keeps no CPU time for finished jobs; 0 when the
script never recorded it (of a gang: the first node's `srun` only, not the
ranks on the nodes). `device_s` = `wall_s` x the task's devices x its nodes. Exit codes are bash's:
an executor killed by signal N shows as 128 + N.

SIGTERM: a preemption (`scancel --signal=TERM --full`), a cancel and a time limit signal every
process of the job, the batch shell included. The shell traps it (a handler, not an ignore,
which the executors would inherit): it waits for the running executor to end, records it, and
exits 143 without starting the next one. So the job lasts exactly as long as its work; were the
shell to die at once, Slurm would end the job and lose track of an executor that ignores
SIGTERM, leaving it running.

Differences from the local backend: no private `/tmp` (executors see the node's), the command
runs on whichever node Slurm picks (the task directory must be on a file system that node sees),
and `--time` comes from `max_run_s` (`default_time_limit_s` x `time_margin` when the agent gives
none).

Not thread-safe: one agent loop drives one backend. Every command has a timeout, and a failure
is a `SlurmCommandError` carrying the command's stderr. None escapes: `start` records it (see
above), `cancel` ignores it, `capacity` answers None, `reattach` None, and `poll` answers None
(still running) until Slurm's commands have failed for `unreachable_s`, then SYSTEM_ERROR with
the error, so a restarting slurmctld does not fail every task.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
import re
import shlex
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from suanli.agent.backends import (
    PREEMPT_REASON,
    TASK_PATH,
    Accelerator,
    Capacity,
    Executor,
    ExecutorLog,
    Handle,
    NodeCapacity,
    StartRequest,
    Status,
    TaskState,
    Usage,
    container_path,
    max_run_reason,
    task_environment,
)
from suanli.agent.backends.local import STDERR_FILE, STDOUT_FILE, TAIL_BYTES, read_tail
from suanli.errors import InvalidValue, SuanliError

__all__ = ["JOBCOMP_PATH", "STATE_DIR", "SlurmBackend", "SlurmCommandError", "parse_capacity"]

STATE_DIR = ".suanli-slurm"  # inside the task directory: job.sh, task.json, results.txt
ARRAY_JOB_NAME = "suanli-array"
MAX_ARRAY = 1000  # tasks in one job array (Slurm's MaxArraySize is 1001 by default)
# A job's ref: a job id, or an array job's id and index (`1524_3`, as Slurm's commands take it)
_JOB_REF = re.compile(r"(\d+)(?:_(\d+))?")
JOBCOMP_PATH = Path("/var/log/slurm/jobcomp.txt")
JOBCOMP_SCAN_BYTES = 8 << 20  # how much of the jobcomp file's end is searched for a job
# At the end of a grace the batch shell gets STOP_SIGNAL (`scancel --batch`) and kills its whole
# process group in one call: Slurm would signal the processes one by one, and a shell whose
# child died first would run on to its next command meanwhile. Should the job still run
# KILL_BACKSTOP_S later, `scancel --signal=KILL --full`.
STOP_SIGNAL = "USR1"
KILL_BACKSTOP_S = 5.0
PROGRAMS = ("sbatch", "squeue", "scontrol", "scancel", "sinfo", "srun")
EXIT_NOT_EXECUTABLE = 126

_RUNNING = frozenset(
    {
        "PENDING",
        "CONFIGURING",
        "RUNNING",
        "COMPLETING",
        "SUSPENDED",
        "REQUEUED",
        "REQUEUE_HOLD",
        "REQUEUE_FED",
        "RESIZING",
        "SIGNALING",
        "STAGE_OUT",
        "STOPPED",
        "RESV_DEL_HOLD",
        "SPECIAL_EXIT",
    }
)
_FIELD = re.compile(r"(\w+)=(\S*)")
_GRES_NAME = re.compile(r"[A-Za-z0-9_.-]+")  # a GRES name or type, as sbatch's --gres takes it
# What sbatch says when a gang asks more nodes than the partition has (EnforcePartLimits=ALL)
_TOO_MANY_NODES = ("node count specification invalid", "partitionnodelimit")
_TIMES = re.compile(r"(\d+)m([\d.,]+)s")


class SlurmCommandError(RuntimeError):
    """A Slurm command failed or timed out; carries its argv, exit status and stderr."""

    def __init__(self, argv: Sequence[str], returncode: int | None, stderr: str) -> None:
        self.argv = tuple(argv)
        self.returncode = returncode
        self.stderr = stderr.strip()
        how = "timed out" if returncode is None else f"exited with {returncode}"
        super().__init__(f"{shlex.join(self.argv)} {how}: {self.stderr or '(no stderr)'}")


@dataclass(frozen=True)
class _Stream:
    """Where one executor's stdout or stderr goes, and whether that file is its own."""

    path: Path
    own: bool


@dataclass
class _Job:
    """What this backend knows of one submitted task (rebuilt from task.json on reattach)."""

    task_id: str
    task_dir: Path
    devices: int
    stdouts: list[_Stream]
    stderrs: list[_Stream]
    ignore_error: list[bool]
    final: Status | None = None  # set at start when sbatch failed
    failing_since: float | None = None  # when squeue/scontrol began failing for this job
    max_run_s: float | None = None  # its --time came from this (TIMEOUT names it)
    checkpoint_dir: Path | None = None  # exported as SUANLI_CHECKPOINT_DIR
    preempted: bool = False  # `preempt` signalled it: it ends PREEMPTED
    kill_at: float | None = None  # clock() after which a signalled job gets SIGSTOP
    killed_at: float | None = None  # clock() when its shell was told to kill the job
    grace_s: float = 2.0  # between SIGTERM and SIGKILL when it overruns `max_run_s`
    timed_out: bool = False  # the agent stopped it at `max_run_s`
    nodes: int = 1  # `devices` on each of them: device_s counts them all

    def as_json(self) -> dict[str, object]:
        return {
            "task_id": self.task_id,
            "devices": self.devices,
            "nodes": self.nodes,
            "max_run_s": self.max_run_s,
            "executors": [
                {
                    "stdout": str(out.path),
                    "stdout_own": out.own,
                    "stderr": str(err.path),
                    "stderr_own": err.own,
                    "ignore_error": ignore,
                }
                for out, err, ignore in zip(
                    self.stdouts, self.stderrs, self.ignore_error, strict=True
                )
            ],
        }

    @staticmethod
    def from_json(task_dir: Path, obj: Mapping[str, object]) -> _Job:
        executors = obj["executors"]
        assert isinstance(executors, list)
        devices = obj["devices"]
        assert isinstance(devices, int)
        max_run_s = obj.get("max_run_s")
        nodes = obj.get("nodes", 1)
        return _Job(
            task_id=str(obj["task_id"]),
            task_dir=task_dir,
            devices=devices,
            stdouts=[_Stream(Path(e["stdout"]), bool(e["stdout_own"])) for e in executors],
            stderrs=[_Stream(Path(e["stderr"]), bool(e["stderr_own"])) for e in executors],
            ignore_error=[bool(e["ignore_error"]) for e in executors],
            max_run_s=float(max_run_s) if isinstance(max_run_s, int | float) else None,
            nodes=nodes if isinstance(nodes, int) and nodes > 0 else 1,
        )


@dataclass
class _Record:
    """One executor's lines in results.txt."""

    started_at: float
    stdout_from: int
    stderr_from: int
    exit_code: int | None = None
    ended_at: float | None = None
    stdout_to: int | None = None  # sizes when it ended: its output is [from, to)
    stderr_to: int | None = None


@dataclass
class _Results:
    """What the batch script wrote to results.txt."""

    began_at: float | None = None
    done_at: float | None = None
    cpu_s: float = 0.0
    executors: list[_Record] = field(default_factory=list)


def _number(text: str) -> float:
    """A float written by bash, whose decimal point follows the locale."""
    return float(text.replace(",", "."))


def _times_cpu_s(text: str) -> float:
    """User + system seconds from a line of bash's `times` (`0m1.5s 0m0.2s`)."""
    return sum(int(m) * 60 + _number(s) for m, s in _TIMES.findall(text))


def _read_results(path: Path) -> _Results:
    results = _Results()
    try:
        lines = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return results
    cpu_lines: list[str] = []  # the latest `times` output: cumulative, so the last one counts
    for line in lines:
        # begin T | start INDEX T STDOUT_SIZE STDERR_SIZE | end CODE T STDOUT_SIZE STDERR_SIZE
        # | done T | cpu, then the two lines of `times` ("0m0.01s 0m0.00s": the shell's user
        # and system time, then its children's), T a Unix time.
        if _TIMES.match(line):
            cpu_lines.append(line)
            results.cpu_s = sum(_times_cpu_s(cpu) for cpu in cpu_lines)
            continue
        word, _, rest = line.partition(" ")
        parts = rest.split(" ")
        try:
            if word == "cpu":
                cpu_lines = []
            elif word == "begin":
                results.began_at = _number(parts[0])
            elif word == "start":
                results.executors.append(_Record(_number(parts[1]), int(parts[2]), int(parts[3])))
            elif word == "end" and results.executors:
                record = results.executors[-1]
                record.exit_code = int(parts[0])
                record.ended_at = _number(parts[1])
                record.stdout_to, record.stderr_to = int(parts[2]), int(parts[3])
            elif word == "done":
                results.done_at = _number(parts[0])
        except (IndexError, ValueError):
            continue  # a line cut short by a kill: the rest of the file is still good
    return results


def _ref_key(ref: str) -> tuple[int, int]:
    """Job refs in Slurm's order: by job id, then array index."""
    found = _JOB_REF.fullmatch(ref)
    return (0, 0) if found is None else (int(found[1]), int(found[2] or -1))


def _slurm_time(value: str | None) -> float | None:
    """A Slurm timestamp (`2026-11-27T11:02:36`, the controller's local time) as Unix time."""
    if not value or value in ("Unknown", "None", "N/A"):
        return None
    try:
        return dt.datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


def _time_limit(seconds: float) -> str:
    """sbatch's `--time` in minutes (Slurm keeps limits in whole minutes), at least one."""
    return str(max(1, math.ceil(seconds / 60)))


def _script(job: _Job, executors: Sequence[Executor], launcher: Sequence[str] = ()) -> str:
    """The batch script that runs `executors` in order and writes results.txt."""
    q = shlex.quote
    results = q(str(job.task_dir / STATE_DIR / "results.txt"))
    base = task_environment(job.task_dir, {}, job.checkpoint_dir)
    lines = [
        "#!/bin/bash",
        f"# Written by suanli's Slurm backend for task {job.task_id}; see",
        "# suanli/agent/backends/slurm.py. Records go to results.txt beside this file.",
        # the job came with sbatch's scrubbed environment and SLURM_*: this is what a task gets
        "export " + " ".join(q(f"{key}={value}") for key, value in base.items()),
        'mkdir -p -- "$TMPDIR"',
        f"R={results}",
        'size() { stat -c %s -- "$1" 2>/dev/null || echo 0; }',
        # `times` in this shell (a subshell's would be its own): the shell's, then children's.
        'cpu() { echo cpu >>"$R"; times >>"$R"; }',
        # SIGTERM (a preemption, a cancel, a time limit) reaches every process of the job: this
        # shell outlives it, so the job lasts as long as its executor (Slurm would otherwise
        # end the job and lose track of an executor that ignores SIGTERM), then stops
        "trap 'stopped=1' TERM",
        # the end of a grace (`STOP_SIGNAL` to this shell only): SIGKILL to the whole process
        # group at once, this shell included. Signalled process by process, a shell whose
        # child died first would run on to its next command meanwhile
        f"trap 'kill -KILL 0' {STOP_SIGNAL}",
        # an executor runs in the background and the shell waits for it, so that a trap runs
        # at once (bash runs one only after a foreground command ends); a trap interrupts the
        # wait, so the shell waits again while the executor lives
        'reap() { local c; while :; do wait "$1"; c=$?; kill -0 "$1" 2>/dev/null || break;'
        ' done; return "$c"; }',
        'echo "begin $EPOCHREALTIME" >>"$R"',
    ]
    n = len(executors)
    for index, executor in enumerate(executors):
        out, err = job.stdouts[index], job.stderrs[index]
        lines.append(f"# executor {index + 1} of {n}")
        lines.append(
            f'echo "start {index} $EPOCHREALTIME $(size {q(str(out.path))})'
            f' $(size {q(str(err.path))})" >>"$R"'
        )
        try:
            body = _executor_command(job.task_dir, index, executor, out, err, launcher)
        except SuanliError as exc:  # a path that leaves the task directory
            message = f"suanli agent: cannot start {executor.command[0]!r}: {exc.one_line()}"
            body = f"echo {q(message)} >&2; (exit {EXIT_NOT_EXECUTABLE})"
        lines.append(body)
        lines.append(
            f'code=$?; echo "end $code $EPOCHREALTIME $(size {q(str(out.path))})'
            f' $(size {q(str(err.path))})" >>"$R"; cpu'
        )
        lines.append(
            'if [ -n "${stopped:-}" ]; then echo "done $EPOCHREALTIME" >>"$R"; exit 143; fi'
        )
        if not executor.ignore_error:
            lines.append('if [ "$code" -ne 0 ]; then echo "done $EPOCHREALTIME" >>"$R";')
            lines.append('  exit "$code"; fi')
    lines.append('echo "done $EPOCHREALTIME" >>"$R"')
    lines.append("exit 0")
    return "\n".join(lines) + "\n"


def _executor_command(
    task_dir: Path,
    index: int,
    executor: Executor,
    out: _Stream,
    err: _Stream,
    launcher: Sequence[str] = (),
) -> str:
    """One executor as a subshell line: cd, redirections, environment, exec (through
    `launcher`, e.g. `srun ...` for a gang, when there is one)."""
    q = shlex.quote
    where = f"executors[{index}]"
    cwd = (
        container_path(task_dir, executor.workdir, f"{where}.workdir")
        if executor.workdir
        else task_dir
    )
    stdin = (
        container_path(task_dir, executor.stdin, f"{where}.stdin")
        if executor.stdin
        else Path("/dev/null")
    )
    redirects = [f"<{q(str(stdin))}"]
    if out.own:
        redirects.append(f">{q(str(out.path))}")
    if err.own:
        redirects.append(f"2>{q(str(err.path))}")
    env = [q(f"{key}={value}") for key, value in executor.env.items()]
    command = " ".join(q(arg) for arg in (*launcher, *executor.command))
    prefix = f"env -- {' '.join(env)} " if env else ""
    dirs = {cwd, *(s.path.parent for s in (out, err) if s.own)}
    mkdir = " ".join(q(str(d)) for d in sorted(dirs))
    run = f"exec {prefix}{command} {' '.join(redirects)}"
    return f'( mkdir -p -- {mkdir} && cd -- {q(str(cwd))} && {run} ) & reap "$!"'


ARRAY_SCRIPT = "array.sh"  # in the first task's STATE_DIR: the job array's batch script
ARRAY_INDEX = "array.json"  # beside it: the task id and directory of each array index


def _array_argv(jobs: Sequence[_Job], options: Sequence[str]) -> list[str]:
    """sbatch's arguments for `jobs` as one job array, after writing its batch script and
    index in the first job's STATE_DIR: index i runs job i's own `job.sh` in its own task
    directory, its output appended to that task's stdout.txt and stderr.txt, as a single job's
    would be (`--open-mode=append`)."""
    q = shlex.quote
    state_dir = jobs[0].task_dir / STATE_DIR
    lines = [
        "#!/bin/bash",
        "# Written by suanli's Slurm backend: one job array, index i runs task i's job.sh;",
        f"# see suanli/agent/backends/slurm.py and {ARRAY_INDEX} beside this file.",
        'case "${SLURM_ARRAY_TASK_ID:-}" in',
    ]
    for index, job in enumerate(jobs):
        d = job.task_dir
        lines.append(
            f"  {index}) cd -- {q(str(d))} && exec /bin/bash {q(str(d / STATE_DIR / 'job.sh'))}"
            f" >>{q(str(d / STDOUT_FILE))} 2>>{q(str(d / STDERR_FILE))} ;;"
        )
    lines += ['  *) echo "no task at array index ${SLURM_ARRAY_TASK_ID:-}" >&2; exit 1 ;;', "esac"]
    (state_dir / ARRAY_SCRIPT).write_text("\n".join(lines) + "\n")
    tasks = [{"task_id": job.task_id, "task_dir": str(job.task_dir)} for job in jobs]
    (state_dir / ARRAY_INDEX).write_text(json.dumps(tasks, indent=1) + "\n")
    return [
        "--parsable",
        f"--array=0-{len(jobs) - 1}",
        f"--job-name={ARRAY_JOB_NAME}",
        f"--chdir={jobs[0].task_dir}",
        f"--output={state_dir / 'array-%a.out'}",  # the script's own words, before its exec
        *options,
        str(state_dir / ARRAY_SCRIPT),
    ]


def submit_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The whole environment sbatch runs with, and so (`--export=ALL`) what the job starts
    with besides Slurm's own `SLURM_*`: PATH (to find sbatch, and the task's PATH until the
    script sets it), LANG, and `SLURM_CONF` when the agent names a configuration. No token, no
    cloud keys, nothing else of the agent's."""
    environ = os.environ if environ is None else environ
    kept = {"PATH": environ.get("PATH") or TASK_PATH, "LANG": "C.UTF-8"}
    if environ.get("SLURM_CONF"):
        kept["SLURM_CONF"] = environ["SLURM_CONF"]
    return kept


class SlurmBackend:
    """Runs each task as one Slurm batch job; see the module docstring."""

    def __init__(
        self,
        *,
        partition: str | None = None,
        account: str | None = None,
        time_margin: float = 1.5,
        default_time_limit_s: int = 3600,
        commands: Mapping[str, Sequence[str]] | None = None,
        jobcomp_path: Path = JOBCOMP_PATH,
        command_timeout_s: float = 15.0,
        unreachable_s: float = 300.0,
        tail_bytes: int = TAIL_BYTES,
        clock: Callable[[], float] = time.monotonic,
        queue_ttl_s: float = 0.05,
        mpi: str = "pmi2",
        max_array: int = MAX_ARRAY,
    ) -> None:
        """`queue_ttl_s`: how long one `squeue` answer for all this backend's jobs serves the
        polls of a round (an agent polls every task each tick; one call serves them all).
        `commands` maps a Slurm program (sbatch, squeue, scontrol, scancel, sinfo) to the
        argv that runs it (default: its name on PATH), e.g. to go through `ssh login-node`.
        `unreachable_s`: how long `poll` keeps answering None while Slurm's commands fail
        before it gives the job up as SYSTEM_ERROR with their error. `mpi`: the `srun --mpi`
        plugin through which a gang's executors (an MPI program's ranks) get PMI (`pmi2` for
        MPICH, `pmix` for an Open MPI built with PMIx where Slurm has that plugin)."""
        self.mpi = mpi
        self.max_array = max(1, max_array)
        self.partition = partition
        self.account = account
        self.time_limit_s = default_time_limit_s * time_margin
        self.jobcomp_path = jobcomp_path
        self.command_timeout_s = command_timeout_s
        self.tail_bytes = tail_bytes
        self.unreachable_s = unreachable_s
        self._clock = clock
        self._commands: dict[str, tuple[str, ...]] = {name: (name,) for name in PROGRAMS}
        self._commands.update({name: tuple(argv) for name, argv in (commands or {}).items()})
        self._jobs: dict[str, _Job] = {}
        self.queue_ttl_s = queue_ttl_s
        self._queue: dict[str, str] = {}  # job id -> state, from one squeue for all jobs
        # job id -> its state, start, end and reason in that squeue (scontrol's field names)
        self._queue_fields: dict[str, dict[str, str]] = {}
        self._queue_at = -math.inf

    @property
    def name(self) -> str:
        return "slurm"

    # -- the Protocol ---------------------------------------------------------------------

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
        """Submit the task as one batch job (see the module docstring). Raises `InvalidValue`
        naming `nodes` for a gang larger than the partition (or less than one node), and naming
        `accelerator` for a kind or model that is no GRES name; any other refusal of sbatch
        ends the task SYSTEM_ERROR on the next `poll`."""
        request = StartRequest(
            task_id,
            executors,
            workdir,
            devices,
            nodes,
            accelerator,
            max_run_s,
            checkpoint_dir,
            grace_s,
        )
        job, options = self._prepare(request)
        return self._submit([job], options)[0]

    def start_many(self, requests: Sequence[StartRequest]) -> list[Handle | SuanliError]:
        """Start the tasks of one lease: those that ask the same resources and time limit (and
        one node each) as one job array (up to `max_array` tasks an array; see "Job arrays" in
        the module docstring), the others one job each. In order, each task's handle, or the
        `SuanliError` that `start` would have raised for it."""
        answers: list[Handle | SuanliError | None] = [None] * len(requests)
        groups: dict[tuple[str, ...], list[tuple[int, _Job]]] = {}
        for n, request in enumerate(requests):
            try:
                job, options = self._prepare(request)
            except SuanliError as exc:
                answers[n] = exc
                continue
            key = tuple(options) if job.nodes == 1 else (f"gang:{n}", *options)
            groups.setdefault(key, []).append((n, job))
        for key, members in groups.items():
            options = [o for o in key if not o.startswith("gang:")]
            for first in range(0, len(members), self.max_array):
                chunk = members[first : first + self.max_array]
                try:
                    handles: list[Handle | SuanliError] = list(
                        self._submit([job for _, job in chunk], options)
                    )
                except SuanliError as exc:  # a gang larger than the partition
                    handles = [exc] * len(chunk)
                for (n, _), handle in zip(chunk, handles, strict=True):
                    answers[n] = handle
        return [a for a in answers if a is not None]

    def _prepare(self, request: StartRequest) -> tuple[_Job, list[str]]:
        """The task's `_Job`, with its description and batch script written in its task
        directory (a failure to write them is kept as the job's final status), and the sbatch
        options that size it. Raises `InvalidValue` as `start` does."""
        nodes, devices = request.nodes, request.devices
        resources = self._resources(nodes, devices, request.accelerator)
        task_dir = Path(request.workdir).resolve()
        job = _Job(request.task_id, task_dir, max(0, devices), [], [], [], nodes=nodes)
        job.max_run_s = request.max_run_s
        if request.grace_s is not None:
            job.grace_s = max(0.0, request.grace_s)
        checkpoint_dir = request.checkpoint_dir
        job.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir).resolve()
        limit_s = self.time_limit_s if request.max_run_s is None else request.max_run_s
        for index, executor in enumerate(request.executors):
            job.stdouts.append(self._stream(job, index, executor.stdout, "stdout", STDOUT_FILE))
            job.stderrs.append(self._stream(job, index, executor.stderr, "stderr", STDERR_FILE))
            job.ignore_error.append(executor.ignore_error)
        options = [
            *resources,
            f"--time={_time_limit(limit_s)}",
            "--no-requeue",
            "--export=ALL",  # of sbatch's scrubbed environment: the agent's stays home
        ]
        if self.partition:
            options.append(f"--partition={self.partition}")
        if self.account:
            options.append(f"--account={self.account}")
        try:
            state_dir = task_dir / STATE_DIR
            state_dir.mkdir(parents=True, exist_ok=True)
            (state_dir / "results.txt").unlink(missing_ok=True)
            (state_dir / "task.json").write_text(json.dumps(job.as_json(), indent=1) + "\n")
            script = _script(job, request.executors, self._launcher(nodes))
            (state_dir / "job.sh").write_text(script)
        except OSError as exc:
            reason = f"cannot submit the job: {exc}"
            job.final = self._status(job, TaskState.SYSTEM_ERROR, None, reason, None, None)
        return job, options

    def _submit(self, jobs: Sequence[_Job], options: Sequence[str]) -> list[Handle]:
        """Submit prepared jobs that share `options`: one alone as a batch job, several as one
        job array; their handles in order (`unsubmitted:<task id>` for one that failed, whose
        next `poll` answers SYSTEM_ERROR with why)."""
        ready = [job for job in jobs if job.final is None]
        refs: dict[str, str] = {}
        try:
            if len(ready) == 1:
                job = ready[0]
                argv = [
                    "--parsable",
                    f"--job-name=suanli-{job.task_id}",
                    f"--chdir={job.task_dir}",
                    f"--output={job.task_dir / STDOUT_FILE}",
                    f"--error={job.task_dir / STDERR_FILE}",
                    "--open-mode=append",
                    *options,
                    str(job.task_dir / STATE_DIR / "job.sh"),
                ]
                refs[job.task_id] = self._sbatch(argv, job.nodes)
            elif ready:
                array_id = self._sbatch(_array_argv(ready, options), 1)
                refs = {job.task_id: f"{array_id}_{i}" for i, job in enumerate(ready)}
        except (OSError, SlurmCommandError, ValueError) as exc:
            reason = f"cannot submit the job: {exc}"
            for job in ready:
                job.final = self._status(job, TaskState.SYSTEM_ERROR, None, reason, None, None)
            refs = {}
        handles = []
        for job in jobs:
            ref = refs.get(job.task_id, f"unsubmitted:{job.task_id}")
            self._jobs[ref] = job
            handles.append(Handle(task_id=job.task_id, backend=self.name, ref=ref))
        return handles

    def _sbatch(self, argv: Sequence[str], nodes: int) -> str:
        """sbatch with `argv`, the scrubbed environment; the job id. A gang larger than the
        partition raises `InvalidValue`; another refusal, `SlurmCommandError`."""
        try:
            out = self._run("sbatch", argv, env=submit_environment())
        except SlurmCommandError as exc:
            if nodes > 1 and any(m in exc.stderr.lower() for m in _TOO_MANY_NODES):
                raise self._too_many_nodes(nodes) from exc
            raise
        ref = out.strip().split(";", 1)[0]  # "id" or "id;cluster"
        if not ref.isdigit():
            raise SlurmCommandError(["sbatch"], 0, f"unexpected output {out.strip()!r}")
        return ref

    def _resources(self, nodes: int, devices: int, accelerator: Accelerator | None) -> list[str]:
        """sbatch's options for `devices` on each of `nodes` nodes: CPU cores
        (`--cpus-per-task`), or accelerators as GRES (`--gres=KIND[:MODEL]:N`, one CPU); a
        gang is `--nodes=N --ntasks-per-node=1`. Refuses what no partition could hold."""
        if nodes < 1:
            raise InvalidValue("nodes", nodes, "a whole number of at least 1", "不小于 1 的整数")
        if nodes > 1:
            size = self._partition_nodes()
            if size is not None and nodes > size:
                raise self._too_many_nodes(nodes, size)
            argv = [f"--nodes={nodes}", "--ntasks-per-node=1"]
        else:
            argv = ["--ntasks=1"]
        if accelerator is None:
            return [*argv, f"--cpus-per-task={max(1, devices)}"]
        names = [accelerator.kind] + ([accelerator.model] if accelerator.model else [])
        if not all(_GRES_NAME.fullmatch(name) for name in names):
            raise InvalidValue(
                "accelerator",
                ":".join(names),
                "a Slurm GRES name and type of letters, digits, '_', '.', '-'",
                "由字母、数字、_、.、- 组成的 Slurm GRES 名称和类型",
            )
        argv.append("--cpus-per-task=1")
        if devices > 0:
            argv.append(f"--gres={':'.join([*names, str(devices)])}")
        return argv

    def _launcher(self, nodes: int) -> tuple[str, ...]:
        """How each executor of a gang runs: one process per node through `srun` (the job's
        allocation; an MPI program's ranks get PMI from `--mpi`). Nothing for one node."""
        if nodes <= 1:
            return ()
        return (
            *self._commands["srun"],
            f"--mpi={self.mpi}",
            f"--nodes={nodes}",
            "--ntasks-per-node=1",
            "--export=ALL",  # the script's environment (see `submit_environment`)
            "--kill-on-bad-exit=1",
            "--",
        )

    def _partition_nodes(self) -> int | None:
        """How many nodes the partition (or the cluster) has; None when sinfo cannot tell."""
        capacity = self.capacity()
        return None if capacity is None else capacity.nodes

    def _too_many_nodes(self, nodes: int, size: int | None = None) -> InvalidValue:
        where = f"partition {self.partition}" if self.partition else "the cluster"
        where_zh = f"分区 {self.partition} " if self.partition else "集群"
        most = f"at most the {size} nodes of {where}" if size else f"no more nodes than {where} has"
        most_zh = f"不超过{where_zh}的 {size} 个节点" if size else f"不超过{where_zh}的节点数"
        return InvalidValue("nodes", nodes, most, most_zh)

    def poll(self, handle: Handle) -> Status | None:
        job = self._jobs[handle.ref]
        status = job.final
        if status is None and job.kill_at is not None and self._clock() >= job.kill_at:
            job.kill_at = None  # the grace is over: SIGKILL to every process of the job
            with contextlib.suppress(SlurmCommandError, OSError):
                if self._queue_state(handle.ref) == "PENDING":
                    self.cancel(handle)  # nothing runs: the job just leaves the queue
                else:
                    # not a plain scancel: Slurm would call the job CANCELLED at once, before
                    # its processes are gone; killed, the job ends once nothing of it runs.
                    # The batch shell kills its process group at once (see `_script`)
                    self._run(
                        "scancel",
                        ["--batch", f"--signal={STOP_SIGNAL}", handle.ref],
                        timeout_s=min(5.0, self.command_timeout_s),
                    )
                    job.killed_at = self._clock()
        if (
            status is None
            and job.killed_at is not None
            and self._clock() >= job.killed_at + KILL_BACKSTOP_S
        ):
            job.killed_at = None  # the shell did not: Slurm kills what it tracks
            with contextlib.suppress(SlurmCommandError, OSError):
                self._signal_all(handle.ref, "KILL")
        if status is None:
            try:
                self._stop_overrun(handle.ref, job)
                status = self._check(handle.ref, job)
                job.failing_since = None
            except SlurmCommandError as exc:  # slurmctld busy or restarting: ask again later
                now = self._clock()
                job.failing_since = job.failing_since if job.failing_since is not None else now
                if now - job.failing_since < self.unreachable_s:
                    return None
                reason = f"Slurm unreachable for {now - job.failing_since:.0f} s: {exc}"
                status = self._status(job, TaskState.SYSTEM_ERROR, None, reason, None, None)
        if status is not None:
            del self._jobs[handle.ref]
        return status

    def _stop_overrun(self, ref: str, job: _Job) -> None:
        """Stop a job whose script began `max_run_s` ago (its `begin` record, a Unix time, so
        the count survives an agent restart): SIGTERM to every process of it now, SIGKILL once
        its grace has passed (as `preempt`)."""
        if job.max_run_s is None or job.timed_out or job.preempted or not _JOB_REF.fullmatch(ref):
            return
        began = _read_results(job.task_dir / STATE_DIR / "results.txt").began_at
        if began is None or time.time() - began < job.max_run_s:
            return
        job.timed_out = True
        job.kill_at = self._clock() + job.grace_s
        self._signal_all(ref, "TERM")

    def cancel(self, handle: Handle) -> None:
        if handle.ref not in self._jobs or not _JOB_REF.fullmatch(handle.ref):
            return
        with contextlib.suppress(SlurmCommandError, OSError):
            self._run("scancel", [handle.ref], timeout_s=min(5.0, self.command_timeout_s))

    def preempt(self, handle: Handle, grace_s: float) -> None:
        """SIGTERM to every process of the job now (`scancel --signal=TERM --full`); the job
        is cancelled by a `poll` once `grace_s` has passed. It ends PREEMPTED."""
        job = self._jobs.get(handle.ref)
        if job is None or job.preempted or not _JOB_REF.fullmatch(handle.ref):
            return
        job.preempted = True
        job.kill_at = self._clock() + max(0.0, grace_s)
        with contextlib.suppress(SlurmCommandError, OSError):  # pending: the scancel does it
            self._signal_all(handle.ref, "TERM")

    def _signal_all(self, ref: str, signal: str) -> None:
        """`signal` to every process of job `ref`, the batch shell included."""
        self._run(
            "scancel",
            [f"--signal={signal}", "--full", ref],
            timeout_s=min(5.0, self.command_timeout_s),
        )

    def capacity(self) -> Capacity | None:
        """The partition's (or the cluster's) nodes, CPUs, GPUs (gres) and memory now, in all
        and node by node (`parse_capacity` of one `sinfo -N`)."""
        argv = ["-h", "-N", "-O", "NodeList:|,CPUsState:|,Gres:|,GresUsed:|,Memory:|"]
        if self.partition:
            argv += ["-p", self.partition]
        try:
            out = self._run("sinfo", argv)
        except (SlurmCommandError, OSError):
            return None
        return parse_capacity(out)

    def reattach(self, task_id: str, ref: str) -> Handle | None:
        """The job `ref` if Slurm still knows it as this task's (queued, running or finished
        recently enough to be in slurmctld or the jobcomp file) and its task directory still
        holds the description `start` wrote; else None. An array's task is found through the
        array's index (`array.json` in its working directory)."""
        found = _JOB_REF.fullmatch(ref)
        if found is None:
            return None
        try:
            info = self._job_info(ref)
        except (SlurmCommandError, OSError):
            return None
        name = f"suanli-{task_id}" if found[2] is None else ARRAY_JOB_NAME
        if info is None or info.get("JobName", info.get("Name")) != name:
            return None
        task_dir = Path(info.get("WorkDir", ""))
        try:
            if found[2] is not None:
                index = json.loads((task_dir / STATE_DIR / ARRAY_INDEX).read_text())
                task_dir = Path(index[int(found[2])]["task_dir"])
            obj = json.loads((task_dir / STATE_DIR / "task.json").read_text())
            job = _Job.from_json(task_dir, obj)
        except (OSError, ValueError, KeyError, IndexError, AssertionError, TypeError):
            return None
        if job.task_id != task_id:
            return None
        self._jobs[ref] = job
        return Handle(task_id=task_id, backend=self.name, ref=ref)

    # -- talking to Slurm -----------------------------------------------------------------

    def _queue_state(self, ref: str) -> str:
        """The job's state in the queue ('' once it has left), from one `squeue` for every job
        this backend follows, asked again once `queue_ttl_s` has passed or for a job the last
        answer did not cover."""
        now = self._clock()
        if now - self._queue_at > self.queue_ttl_s or ref not in self._queue:
            ids = sorted({ref, *(r for r in self._jobs if _JOB_REF.fullmatch(r))}, key=_ref_key)
            try:
                out = self._run(
                    "squeue",
                    # -r: an array's pending tasks one line each (`ID_INDEX`), not `ID_[0-9]`;
                    # a job that ended stays listed (COMPLETED...) while slurmctld remembers it
                    ["-h", "-r", "-j", ",".join(ids), "-o", "%i|%T|%S|%e|%r", "--states=all"],
                    timeout_s=None,
                )
            except SlurmCommandError as exc:  # every id forgotten: they have all left
                if "Invalid job id" not in str(exc):
                    raise
                out = ""
            self._queue = dict.fromkeys(ids, "")
            self._queue_fields = {}
            for line in out.splitlines():
                parts = line.split("|")
                if len(parts) == 5:
                    ident, state, start, end, reason = (part.strip() for part in parts)
                    self._queue[ident] = state
                    self._queue_fields[ident] = {
                        "JobState": state,
                        "StartTime": start,
                        "EndTime": end,
                        "Reason": reason,
                    }
            self._queue_at = now
        return self._queue.get(ref, "")

    def _run(
        self,
        program: str,
        args: Sequence[str],
        timeout_s: float | None = None,
        env: Mapping[str, str] | None = None,
    ) -> str:
        argv = [*self._commands[program], *args]
        try:
            done = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=timeout_s or self.command_timeout_s,
                check=False,
                stdin=subprocess.DEVNULL,
                env=None if env is None else dict(env),
            )
        except subprocess.TimeoutExpired as exc:
            stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else ""
            raise SlurmCommandError(argv, None, stderr) from exc
        except OSError as exc:
            raise SlurmCommandError(argv, EXIT_NOT_EXECUTABLE, str(exc)) from exc
        if done.returncode != 0:
            raise SlurmCommandError(argv, done.returncode, done.stderr)
        return done.stdout

    def _job_info(self, ref: str) -> dict[str, str] | None:
        """`scontrol show job` fields while slurmctld remembers the job, else its jobcomp line;
        None when neither knows it."""
        try:
            out = self._run("scontrol", ["show", "job", "-o", ref])
        except SlurmCommandError as exc:
            if "Invalid job id" not in exc.stderr:
                raise
            return self._jobcomp_info(ref)
        return dict(_FIELD.findall(out)) or self._jobcomp_info(ref)

    def _jobcomp_info(self, ref: str) -> dict[str, str] | None:
        """The last line of the jobcomp file for job `ref` (ids restart when Slurm's state is
        wiped, so the latest wins), or None."""
        try:
            with self.jobcomp_path.open("rb") as f:
                f.seek(0, 2)
                f.seek(max(0, f.tell() - JOBCOMP_SCAN_BYTES))
                text = f.read().decode(errors="replace")
        except OSError:
            return None
        found = _JOB_REF.fullmatch(ref)
        if found is None:
            return None
        # an array's task has a job id of its own there, and its array's id and index
        needle = f"JobId={ref} " if found[2] is None else f" ArrayTaskId={found[2]} "
        for line in reversed(text.splitlines()):
            if found[2] is None and line.startswith(needle):
                return dict(_FIELD.findall(line))
            if found[2] is not None and needle in line and f" ArrayJobId={found[1]} " in line:
                return dict(_FIELD.findall(line))
        return None

    def _check(self, ref: str, job: _Job) -> Status | None:
        """One look at the job: None while it runs, else its terminal status."""
        state = self._queue_state(ref)
        if state in _RUNNING:
            return None
        # a job that completed is read from the same squeue (one call for every job, not one
        # scontrol each: a 50-task array ends in one pass); other ends need scontrol's fields
        info = self._queue_fields.get(ref) if state == "COMPLETED" else None
        if info is None:
            info = self._job_info(ref)
        if info is None:
            return self._status(
                job, TaskState.SYSTEM_ERROR, None, f"Slurm has no record of job {ref}", None, None
            )
        state = info.get("JobState", "UNKNOWN").split()[0]
        if state in _RUNNING:
            return None
        started = _slurm_time(info.get("StartTime"))
        ended = _slurm_time(info.get("EndTime"))
        results = _read_results(job.task_dir / STATE_DIR / "results.txt")
        failed = next(
            (
                (index, record.exit_code)
                for index, record in enumerate(results.executors)
                if record.exit_code and not job.ignore_error[index]
            ),
            None,
        )
        n = len(job.ignore_error)
        if state == "COMPLETED":
            ignored = [
                f"executor {i + 1} of {n} exited with code {r.exit_code} (ignore_error)"
                for i, r in enumerate(results.executors)
                if r.exit_code
            ]
            return self._status(job, TaskState.COMPLETE, 0, "; ".join(ignored), started, ended)
        if job.preempted:
            return self._status(job, TaskState.PREEMPTED, None, PREEMPT_REASON, started, ended)
        if job.timed_out and job.max_run_s is not None:  # stopped by us at its max_run_s
            why = max_run_reason(job.max_run_s)
            return self._status(job, TaskState.EXECUTOR_ERROR, None, why, started, ended)
        if state in ("FAILED", "OUT_OF_MEMORY") and failed is not None:
            index, code = failed
            reason = f"executor {index + 1} of {n} exited with code {code}"
            if state == "OUT_OF_MEMORY":
                reason += " (out of memory)"
            return self._status(job, TaskState.EXECUTOR_ERROR, code, reason, started, ended)
        if state == "CANCELLED":
            return self._status(job, TaskState.CANCELED, None, "canceled", started, ended)
        if state == "TIMEOUT":
            why = "time limit" if job.max_run_s is None else max_run_reason(job.max_run_s)
            return self._status(job, TaskState.EXECUTOR_ERROR, None, why, started, ended)
        detail = f"Slurm job {ref} ended {state}"
        if info.get("Reason") not in (None, "None"):
            detail += f" ({info['Reason']})"
        if info.get("ExitCode"):
            detail += f", exit {info['ExitCode']}"
        # NODE_FAIL, PREEMPTED, BOOT_FAIL, DEADLINE, or a script that failed before any
        # executor did (its task directory vanished): the engine's fault, not the task's.
        return self._status(job, TaskState.SYSTEM_ERROR, None, detail, started, ended)

    # -- building statuses ----------------------------------------------------------------

    def _status(
        self,
        job: _Job,
        state: TaskState,
        exit_code: int | None,
        reason: str,
        slurm_start: float | None,
        slurm_end: float | None,
    ) -> Status:
        results = _read_results(job.task_dir / STATE_DIR / "results.txt")
        begin = results.began_at if results.done_at is not None else slurm_start
        end = results.done_at if results.done_at is not None else slurm_end
        if results.done_at is None and results.began_at is not None and slurm_end is not None:
            # killed (cancel, preemption, time limit): Slurm's EndTime is cut to the second, so
            # the end came within the second after it (and before now), after the last record
            last = max([results.began_at] + [r.ended_at or r.started_at for r in results.executors])
            begin, end = results.began_at, max(min(slurm_end + 1.0, time.time()), last)
        wall_s = max(0.0, end - begin) if begin is not None and end is not None else 0.0
        logs = []
        for index, record in enumerate(results.executors[: len(job.stdouts)]):
            out, err = job.stdouts[index], job.stderrs[index]
            ended_at = record.ended_at
            if ended_at is None and slurm_end is not None:
                ended_at = max(record.started_at, slurm_end)  # killed: the job's end
            logs.append(
                ExecutorLog(
                    exit_code=record.exit_code,
                    stdout_tail=self._tail(out, record.stdout_from, record.stdout_to),
                    stderr_tail=self._tail(err, record.stderr_from, record.stderr_to),
                    wall_s=max(0.0, (ended_at or record.started_at) - record.started_at),
                    started_at=record.started_at,
                    ended_at=ended_at,
                )
            )
        return Status(
            state=state,
            exit_code=exit_code,
            stdout_tail=read_tail(job.task_dir / STDOUT_FILE, self.tail_bytes),
            stderr_tail=read_tail(job.task_dir / STDERR_FILE, self.tail_bytes),
            usage=Usage(
                wall_s=wall_s, cpu_s=results.cpu_s, device_s=wall_s * job.devices * job.nodes
            ),
            reason=reason,
            executors=tuple(logs),
        )

    def _tail(self, stream: _Stream, start: int, end: int | None) -> str:
        """The tail of one executor's own output: bytes [start, end) of a shared file (to its
        end while the executor never finished), or all of a file it named for itself."""
        if stream.own:
            return read_tail(stream.path, self.tail_bytes)
        if end is None:
            return read_tail(stream.path, self.tail_bytes, start)
        try:
            with stream.path.open("rb") as f:
                f.seek(max(start, end - self.tail_bytes))
                data = f.read(max(0, end - max(start, end - self.tail_bytes)))
        except OSError:
            return ""
        if end - start > self.tail_bytes:  # drop a character cut in half at the front
            cut = 0
            while cut < min(3, len(data)) and data[cut] & 0xC0 == 0x80:
                cut += 1
            data = data[cut:]
        return data.decode("utf-8", errors="replace")

    @staticmethod
    def _stream(job: _Job, index: int, named: str | None, which: str, default: str) -> _Stream:
        """An executor's stdout/stderr file; a path outside the task directory falls back to
        the shared file (the script then fails that executor, see `_script`)."""
        if named is None:
            return _Stream(job.task_dir / default, own=False)
        try:
            return _Stream(container_path(job.task_dir, named, f"executors[{index}].{which}"), True)
        except SuanliError:
            return _Stream(job.task_dir / default, own=False)


def _gres_gpus(gres: str) -> dict[str, int]:
    """GPUs by model from a sinfo gres cell: `gpu:a100:4(S:0-1),gpu:2` -> {a100: 4, gpu: 2}."""
    found: dict[str, int] = {}
    if not gres or gres == "(null)":
        return found
    for item in re.split(r",(?![^(]*\))", gres):
        parts = item.split("(", 1)[0].split(":")
        if parts[0] != "gpu" or len(parts) < 2:
            continue
        model = parts[1] if len(parts) > 2 else "gpu"
        with contextlib.suppress(ValueError):
            found[model] = found.get(model, 0) + int(parts[-1])
    return found


def parse_capacity(sinfo: str) -> Capacity | None:
    """The `Capacity` in the output of `sinfo -h -N -O
    NodeList:|,CPUsState:|,Gres:|,GresUsed:|,Memory:|`, one node a line (a node listed once
    per partition counts once): CPUs from CPUsState's allocated/idle/other/total (idle is
    free), GPUs by GRES type from Gres less GresUsed. None when no node is listed."""
    nodes: dict[str, NodeCapacity] = {}
    memory_mb = 0
    for line in sinfo.splitlines():
        cells = [cell.strip() for cell in line.split("|")]
        if len(cells) < 5 or not cells[0] or cells[0] in nodes:
            continue
        cpus = free_cpus = 0
        with contextlib.suppress(ValueError):
            _allocated, idle, _other, total = (int(x) for x in cells[1].split("/"))
            cpus, free_cpus = total, idle
        gpus = _gres_gpus(cells[2])
        used = _gres_gpus(cells[3])
        free = {model: max(0, count - used.get(model, 0)) for model, count in gpus.items()}
        nodes[cells[0]] = NodeCapacity(cells[0], cpus, free_cpus, gpus, free)
        with contextlib.suppress(ValueError):
            memory_mb += int(cells[4].rstrip("+"))
    if not nodes:
        return None
    by_model: dict[str, int] = {}
    for node in nodes.values():
        for model, count in node.gpus_by_model.items():
            by_model[model] = by_model.get(model, 0) + count
    per_node = tuple(nodes[name] for name in sorted(nodes))
    return Capacity(
        nodes=len(nodes),
        cpus=sum(n.cpus for n in per_node),
        free_cpus=sum(n.free_cpus for n in per_node),
        gpus=sum(by_model.values()),
        free_gpus=sum(sum(n.free_gpus_by_model.values()) for n in per_node),
        gpus_by_model=dict(sorted(by_model.items())),
        memory_mb=memory_mb,
        per_node=per_node,
    )
