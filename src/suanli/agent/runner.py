"""The provider agent loop: register, heartbeat, lease, run on a backend, report.

An agent runs on a provider's machine and only ever calls the server (agents pull, so firewalls
and NAT stay closed). The protocol is JSON over HTTP with `Authorization: Bearer <token>`; the
token comes from a file or `$SUANLI_TOKEN`, never from the command line (`agent_token`), and is
removed from this process's environment as soon as it is read, so no task or engine command
started by the agent inherits it (tasks get a clean environment anyway, see `backends`):

1. `POST /v1/agents` `{"site_id", "name", "slots", "backend"}` -> 201
   `{"id", "lease_s", "heartbeat_s", "preempt_grace_s"}`;
2. every `heartbeat_s`: `POST /v1/agents/{id}/heartbeat` `{"running": [task ids]}` -> 200
   `{"cancel": [task ids], "preempt": [task ids], "preempt_grace_s": s}`; it renews the leases
   of the listed tasks; a task to preempt gets SIGTERM, then SIGKILL after the grace
   (`Backend.preempt`), and is reported PREEMPTED with the usage of what ran;
3. while slots are free: `POST /v1/agents/{id}/lease` `{"max": free, "wait_s": s}` -> 200
   `{"tasks": [{"id", "executors", "devices", "inputs", "outputs", "volumes", "max_run_s",
   "lease_expires_at"}]}` (inputs, outputs and volumes as in `suanli.agent.staging`;
   `max_run_s` the task's maximum run time, which the backend enforces); this is
   a long-poll: with no work for the site the server holds it until a pass places some, or
   `wait_s` passes (up to IDLE_WAIT_S when the agent is idle, `poll_s` while tasks run, never
   past the next heartbeat), so work starts as soon as it is placed; after a report frees a
   slot the agent leases again at once;
4. reports, in batches: `POST /v1/agents/{id}/reports` `{"reports": [report, ...]}` -> 200
   `{"results": [{"task_id", "status", "state", "detail"}, ...]}`, one result per report in
   order; a report is `{"task_id", "state": "RUNNING"}` after the start, then `{"task_id",
   "state", "exit_code", "stdout_tail", "stderr_tail", "usage", "reason", "executors",
   "outputs"}` at the end (`executors`: one `{"exit_code", "stdout_tail", "stderr_tail",
   "wall_s", "started_at", "ended_at"}` per executor that ran; `outputs`: one `{"url", "path",
   "size_bytes"}` per file copied out), `state` one of COMPLETE, EXECUTOR_ERROR, SYSTEM_ERROR,
   CANCELED, PREEMPTED. The server applies each report on its own; its result's `status` is
   what `POST /v1/tasks/{task}/report` `{"agent_id", ...}` would have answered for it alone
   (200 with the task's `state`, or 404 / 409 / 422 with the error's `detail`), and the agent
   acts on it as on that answer. The outbox goes out oldest first, up to REPORT_BATCH reports
   (REPORT_BATCH_BYTES of JSON) a request, so N tasks that end together cost one request, not
   N; a batch refused as a whole is sent again one report at a time through that route.

Checkpoints: every task gets `SUANLI_CHECKPOINT_DIR`, the directory `<checkpoint root>/<task>`
(`checkpoint_root`, default `<work root>/checkpoints`) that this agent keeps for the task across
its attempts: a preempted task that the server places on this site again finds there what it
wrote. It is deleted once the server has taken the task's final report (COMPLETE,
EXECUTOR_ERROR, SYSTEM_ERROR, CANCELED), never after PREEMPTED. Agents of one site that should
share checkpoints point `checkpoint_root` at one shared directory.

Restarts: the agent keeps its id, its server, its site and the backend's `ref` of every task it
runs in `<work root>/agent-state.json`. Started again with the same work root, it resumes that
id (if the server still knows it, its leases are renewed by the first heartbeat) and asks the
backend to `reattach` each task: work the engine still has (a Slurm job, a Ray job) is followed
to its end and reported once; work that cannot be found again (the local backend's processes)
is reported SYSTEM_ERROR, after the process groups the state file records for it (the local
backend's `executor_process`) are killed: whatever a previous agent on this work root left
running is no longer leased to anyone. A task whose lease ran out meanwhile is answered 409 and
dropped, as always, so nothing runs twice. Every `capacity_every_s` the heartbeat also carries the
backend's `capacity()`, from which the server sizes the site's pools.

Energy: for a task the backend bound to accelerators (the local backend's `bound_devices`), the
agent opens the meter of that kind (`meters`, by default `energy.host_meters()`: NVML or `hy-smi`
for `gpu`, `npu-smi` for `npu`) when the task starts, reads it then, every `sample_every_s` while it
runs (the power of sampled sources; every source's utilisation) and at its end, and reports the
measured `energy_kwh` and mean `utilisation` in its usage. Where nothing can be measured (no
library, no tool, a backend that does not tell which devices) the usage carries neither and the
platform's figure stays modelled; a meter that fails never fails the task (the agent logs one
line).

Files: inputs are staged into the task directory before the backend starts, and outputs are
copied out after the backend reports COMPLETE; a staging failure ends the task SYSTEM_ERROR
with the reason, naming the URL (the agent's `file_roots` bound which local files tasks may read
or write, its `s3` configuration which buckets, with the provider's keys, `s3_config`). A task
whose inputs or outputs name remote URLs (`s3://`, `http(s)://`) moves them in a worker thread
(`_transfer`, one per slot) while the loop goes on heartbeating: the task keeps its slot and its
lease (the heartbeat lists it), a cancel that arrives while its inputs move ends it CANCELED
once they are in (never started), and a lease lost meanwhile drops the result.

Invariants:
- a task is reported in order (RUNNING before its terminal state) and at most once terminally;
- a report answered 409 or 404 means the task is no longer this agent's: it is cancelled on the
  backend, drained silently and never reported again; so is a task whose lease the agent could
  not renew within `lease_s` (the server will have put it back in the queue);
- transient failures (network errors, timeouts, 5xx, 429, malformed answers) never end the loop:
  the agent logs one line and retries after a capped exponential backoff (0.5 s .. 10 s by
  default), keeping pending reports in an outbox; the backend is still polled every `poll_s`;
- 401 or 403 ends the agent with `AgentRejected`, a one-line bilingual error;
- on stop, running tasks are cancelled and reported CANCELED with reason "agent stopped".

A running task's backend is polled after a quarter of its age (at least MIN_POLL_S, at most
`poll_s`), so short tasks are reported within milliseconds. All timing is injectable (`poll_s`,
`backoff_s`, `clock`); one progress line per task state change goes to the `log` callable
(stderr by default). One thread drives an `Agent`.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import Any, TypeGuard
from urllib.parse import quote

import httpx

from suanli.agent import energy, staging
from suanli.agent.backends import (
    TERMINAL_STATES,
    Accelerator,
    Backend,
    Executor,
    Handle,
    StartRequest,
    Status,
    TaskState,
    Usage,
    backend_named,
)
from suanli.agent.backends.local import STDERR_FILE, STDOUT_FILE, read_tail
from suanli.agent.objects import Remote, S3Config
from suanli.config import suanli_home
from suanli.errors import InvalidValue, SuanliError
from suanli.metering import engine_device_ids
from suanli.tls import certificate_problem, client_verify

__all__ = [
    "STOP_REASON",
    "TOKEN_ENV",
    "Agent",
    "AgentRejected",
    "Backoff",
    "ServerUnavailable",
    "TokenOnCommandLine",
    "agent_token",
    "run_agent",
]

STOP_REASON = "agent stopped"
STATE_FILE = "agent-state.json"
CHECKPOINTS_DIR = "checkpoints"  # under the work root, unless `checkpoint_root` says otherwise
FINAL_STATES = frozenset(TERMINAL_STATES - {TaskState.PREEMPTED})  # the task ends for good
LOST_REASON = "lost when the agent restarted: the backend cannot find it again"
SERVER_CANCEL_REASON = "canceled by the server"
LEASE_LOST_REASON = "lease not renewed in time"
REASON_CHARS = 1000  # the server's limit on a report's reason
MIN_POLL_S = 0.005  # the shortest pause between backend polls while a task runs
IDLE_WAIT_S = 5.0  # an idle agent's long-poll for work (bounded by the next heartbeat)
MAX_LEASE_WAIT_S = 30.0  # the server's limit on a lease's wait_s
REPORT_BATCH = 200  # reports per POST /v1/agents/{id}/reports (the server takes up to 1000)
REPORT_BATCH_BYTES = 512 * 1024  # and their JSON: well under the server's body limit (1 MiB)
TOKEN_ENV = "SUANLI_TOKEN"


class TokenOnCommandLine(SuanliError):
    """`--token` on the agent's command line: every local user and every task could read it."""

    def __init__(self) -> None:
        super().__init__(
            "the agent does not take --token: a command line is readable by every process on "
            "the host (ps, /proc/<pid>/cmdline), tasks included; put the token in a file only "
            "you can read and pass --token-file FILE, or set SUANLI_TOKEN",
            "代理不接受 --token：命令行对本机所有进程（ps、/proc/<pid>/cmdline）包括任务可见；"
            "请把令牌存入仅自己可读的文件并使用 --token-file FILE，或设置环境变量 SUANLI_TOKEN",
        )


def agent_token(
    token_file: Path | str | None = None,
    *,
    argv_token: str | None = None,
    log: Callable[[str], None] | None = None,
) -> str:
    """The agent's credential: the first line of `token_file`, else `$SUANLI_TOKEN`; never the
    command line (`argv_token` given raises `TokenOnCommandLine`). `SUANLI_TOKEN` is removed
    from `os.environ` (and blanked in the environment block that /proc/<pid>/environ shows), so
    no child process inherits or reads it. A token file that group or others may read gets a
    warning through `log`."""
    if argv_token is not None:
        raise TokenOnCommandLine()
    _blank_environ_entry(TOKEN_ENV)  # first: popping unlinks the entry from the C block
    from_env = os.environ.pop(TOKEN_ENV, None)
    if token_file is not None:
        path = Path(token_file)
        try:
            token = path.read_text(encoding="utf-8").strip().split("\n", 1)[0].strip()
            mode = path.stat().st_mode
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidValue(
                "--token-file", str(path), f"a readable token file ({exc})", "可读的令牌文件"
            ) from None
        if mode & 0o044 and log is not None:
            log(
                f"warning: {path} is readable by group or others: chmod 600 {path} / "
                f"警告：{path} 对同组或其他用户可读，请执行 chmod 600 {path}"
            )
    else:
        token = (from_env or "").strip()
    if not token:
        raise InvalidValue(
            "token",
            "",
            "an agent token: --token-file FILE or the SUANLI_TOKEN environment variable",
            "代理令牌：--token-file FILE 或环境变量 SUANLI_TOKEN",
        )
    return token


S3_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


def s3_config(
    endpoint_url: str | None = None,
    region: str | None = None,
    buckets: Sequence[str] = (),
    credentials_file: Path | str | None = None,
) -> S3Config:
    """The agent's S3 configuration. Keys come from `credentials_file` (lines `access_key_id =
    ...`, `secret_access_key = ...`, optionally `session_token = ...`; `aws_`-prefixed names as
    in an AWS credentials file are accepted too), else from `AWS_ACCESS_KEY_ID` /
    `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN`, which leave this process's environment (and
    its /proc environ block) either way; else boto3's own chain. Errors name the option."""
    from_env = {}
    for name in S3_ENV:
        _blank_environ_entry(name)
        from_env[name] = os.environ.pop(name, None)
    keys = {
        "access_key_id": from_env["AWS_ACCESS_KEY_ID"],
        "secret_access_key": from_env["AWS_SECRET_ACCESS_KEY"],
        "session_token": from_env["AWS_SESSION_TOKEN"],
    }
    if credentials_file is not None:
        path = Path(credentials_file)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidValue(
                "--s3-credentials-file", str(path), f"a readable file ({exc})", "可读的凭据文件"
            ) from None
        keys = dict.fromkeys(keys)
        for line in lines:
            name, sep, value = line.partition("=")
            name = name.strip().lower().removeprefix("aws_")
            if sep and name in keys:
                keys[name] = value.strip()
        if not keys["access_key_id"] or not keys["secret_access_key"]:
            raise InvalidValue(
                "--s3-credentials-file",
                str(path),
                "lines 'access_key_id = ...' and 'secret_access_key = ...'",
                "包含 access_key_id 与 secret_access_key 两行",
            )
    if endpoint_url is not None:
        url = httpx.URL(endpoint_url)
        if url.scheme not in ("http", "https") or not url.host:
            raise InvalidValue(
                "--s3-endpoint", endpoint_url, "an http(s) URL of the S3 service", "S3 服务网址"
            )
    for bucket in buckets:
        if not bucket or "/" in bucket:
            raise InvalidValue("--s3-bucket", bucket, "a bucket name (no '/')", "存储桶名")
    return S3Config(
        endpoint_url=endpoint_url,
        region=region or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        buckets=tuple(buckets),
        access_key_id=keys["access_key_id"] or None,
        secret_access_key=keys["secret_access_key"] or None,
        session_token=keys["session_token"] or None,
    )


def _blank_environ_entry(name: str) -> None:
    """Overwrite the value of `name` in the C environment block with NUL bytes, so that
    /proc/<pid>/environ (the block the process started with) no longer shows it; best effort,
    and a no-op where libc's `environ` cannot be reached."""
    try:
        block = ctypes.POINTER(ctypes.c_void_p).in_dll(ctypes.CDLL(None), "environ")
    except (OSError, ValueError, AttributeError):
        return
    prefix = name.encode() + b"="
    index = 0
    while (address := block[index]) is not None:
        entry = ctypes.string_at(address)
        if entry.startswith(prefix):
            ctypes.memset(address + len(prefix), 0, len(entry) - len(prefix))
        index += 1


class AgentRejected(SuanliError):
    """The server refused the agent's credentials (HTTP 401 or 403): retrying cannot help."""

    def __init__(self, status_code: int, path: str, detail: str = "") -> None:
        self.status_code = status_code
        self.path = path
        self.detail = detail
        what = "token rejected" if status_code == 401 else "not allowed"
        what_zh = "令牌被拒绝" if status_code == 401 else "无权操作"
        suffix = f": {detail}" if detail else ""
        super().__init__(
            f"server refused the agent ({what}, HTTP {status_code} on POST {path}){suffix}; "
            "check the agent token and the site it is issued for",
            f"服务器拒绝了代理（{what_zh}，POST {path} 返回 HTTP {status_code}）{suffix}；"
            "请检查代理令牌及其所属站点",
        )


class ServerUnavailable(SuanliError):
    """A transient failure talking to the server; the agent retries after a backoff."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(
            f"server unavailable on POST {path}: {problem}",
            f"服务器暂不可用（POST {path}）：{problem}",
        )


class Backoff:
    """Capped exponential backoff: `min_s`, doubling on each failure up to `max_s`."""

    def __init__(self, min_s: float = 0.5, max_s: float = 10.0) -> None:
        if not 0 < min_s <= max_s:
            raise InvalidValue("backoff_s", (min_s, max_s), "0 < min <= max", "0 < 最小 <= 最大")
        self.min_s = min_s
        self.max_s = max_s
        self._next_s = min_s

    def failure(self) -> float:
        """The delay before the next try; the one after will be twice as long (capped)."""
        delay = self._next_s
        self._next_s = min(self.max_s, delay * 2)
        return delay

    def success(self) -> None:
        self._next_s = self.min_s


@dataclass
class _Task:
    """A task the backend is running for this agent."""

    id: str
    handle: Handle
    lease_deadline: float  # clock() after which the lease is presumed lost
    task_dir: Path
    outputs: list[dict[str, Any]]
    cancel_reason: str | None = None
    preempting: bool = False  # the server asked for it back: `Backend.preempt` was called
    dropped: bool = False  # no longer ours: drain on the backend, never report
    process: tuple[int, int] | None = None  # the local backend's running group (state file)
    started_at: float = float("-inf")  # clock() when this agent started it (resumed: unknown)
    meter: energy.EnergySession | None = None  # measuring its devices, when they can be
    readings: energy.Tally = field(default_factory=energy.Tally)  # the meter's, folded
    next_sample_at: float = float("inf")  # clock() of the meter's next periodic read


@dataclass
class _Transfer:
    """Files moving for a task in a worker thread (`Agent._transfer`): its inputs before it
    starts, or its outputs after it ended. The task keeps its slot and its lease meanwhile (the
    heartbeat lists it), and `then` runs on the agent's loop with the result."""

    id: str
    future: Future[Any]
    lease_deadline: float
    then: Callable[[Any, BaseException | None], None]
    inputs: bool  # inputs (a cancel applies) or outputs (the work is done: it is reported)
    cancel_reason: str | None = None
    dropped: bool = False  # the lease ran out meanwhile: the result is dropped


@dataclass(frozen=True)
class _Report:
    task_id: str
    body: dict[str, Any]
    terminal: bool


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def _dir_name(task_id: str) -> str:
    """A task id made safe as one path component."""
    name = _UNSAFE.sub("_", task_id).lstrip(".")
    return name or "task"


def _stderr_line(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class Agent:
    """One provider agent; `run(stop)` drives it until `stop` is set."""

    def __init__(
        self,
        server_url: str,
        token: str,
        site_id: str,
        backend: Backend | str = "local",
        *,
        slots: int = 1,
        name: str | None = None,
        work_root: Path | str | None = None,
        file_roots: Sequence[Path | str] = (),
        s3: S3Config | None = None,
        checkpoint_root: Path | str | None = None,
        capacity_every_s: float = 30.0,
        poll_s: float = 0.5,
        timeout_s: float = 10.0,
        backoff_s: tuple[float, float] = (0.5, 10.0),
        shutdown_s: float = 10.0,
        log: Callable[[str], None] = _stderr_line,
        clock: Callable[[], float] = time.monotonic,
        ca: str | None = None,
        meters: Mapping[str, energy.EnergyMeter] | None = None,
        sample_every_s: float = 10.0,
    ) -> None:
        url = httpx.URL(server_url)
        if url.scheme not in ("http", "https") or not url.host:
            raise InvalidValue("server_url", server_url, "an http(s) URL", "http(s) 网址")
        if slots < 1:
            raise InvalidValue("slots", slots, "at least 1", "至少 1")
        if poll_s <= 0:
            raise InvalidValue("poll_s", poll_s, "a positive number of seconds", "正的秒数")
        self.server_url = server_url
        self.site_id = site_id
        self.backend = backend_named(backend) if isinstance(backend, str) else backend
        self.slots = slots
        self.name = name or socket.gethostname()
        self.work_root = Path(work_root) if work_root else default_work_root()
        self.file_roots = tuple(Path(root) for root in file_roots)
        self.remote = Remote(s3)  # s3:// and http(s):// inputs and outputs
        self._transfers: dict[str, _Transfer] = {}  # remote files moving in worker threads
        self._transfer_pool: ThreadPoolExecutor | None = None
        self.checkpoint_root = (
            Path(checkpoint_root) if checkpoint_root else self.work_root / CHECKPOINTS_DIR
        )
        self.preempt_grace_s: float | None = None  # the server's, once it has said
        self.poll_s = poll_s
        self._timeout_s = timeout_s
        self.shutdown_s = shutdown_s
        self.agent_id: str | None = None
        self.lease_s = 0.0
        self.heartbeat_s = 0.0
        self._log_line = log
        self._clock = clock
        self._backoff = Backoff(*backoff_s)
        self._client = httpx.Client(
            base_url=server_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout_s,
            verify=client_verify(ca),  # an https server is verified against `ca` / $SUANLI_CA
        )
        if getattr(self.backend, "private_tmp", True) is False:
            self._log("this system refuses mount namespaces: tasks share the host's /tmp")
        elif Path("/tmp") in self.work_root.absolute().parents:
            self._log(
                f"work root {self.work_root} is under /tmp, which each task sees as its own "
                "private /tmp: a task cannot change into its own directory by path there; "
                "start the agent with --work-root outside /tmp (the default is under "
                "$SUANLI_HOME/agents)"
            )
        if getattr(self.backend, "pid_namespace", True) is False:
            self._log(
                "this system refuses PID namespaces: tasks see the host's processes, and what "
                "a task leaves running when the agent is killed is stopped by the next agent "
                "started on this work root"
            )
        self._tasks: dict[str, _Task] = {}
        self._outbox: deque[_Report] = deque()
        self._net_ready_at = 0.0
        self._next_heartbeat_at = 0.0
        self._sent_tails: dict[str, dict[str, str]] = {}
        self._engine_models: tuple[str, ...] = ()  # accelerator names in the last capacity
        self.meters = energy.host_meters() if meters is None else dict(meters)
        self.sample_every_s = sample_every_s
        self.capacity_every_s = capacity_every_s
        self._next_capacity_at = 0.0
        self._state_path = self.work_root / STATE_FILE
        self._kill_leftovers()
        self._recovered = self._load_state()

    # -- the loop -------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Register, then tick until `stop` is set; then shut down cleanly. With a free slot
        the wait between ticks is a long-poll for work (`lease_wait_s`), so work placed on the
        site starts at once; with every slot busy it is `poll_s`.

        Raises `AgentRejected` on 401/403 (after cancelling what runs).
        """
        try:
            while not stop.is_set():
                pause = self.tick(self.lease_wait_s())
                if pause > 0:
                    stop.wait(pause)
        finally:
            self.shutdown()

    def lease_wait_s(self) -> float:
        """How long the next lease may wait for work: `poll_s` while tasks run (the backend
        is polled between leases), up to IDLE_WAIT_S when idle; never past the next heartbeat,
        and well inside the HTTP timeout."""
        idle = not self._tasks and not self._outbox and not self._transfers
        limit = IDLE_WAIT_S if idle else self._busy_pause()
        until_beat = self._next_heartbeat_at - self._clock()
        return max(0.0, min(limit, until_beat, self._timeout_s / 2))

    def _busy_pause(self) -> float:
        """How long to leave the backend unpolled: a quarter of the youngest task's age
        (so a short task is seen finished within milliseconds and a long one costs few
        polls), between MIN_POLL_S and `poll_s`."""
        ages = [self._clock() - t.started_at for t in self._tasks.values() if not t.dropped]
        if not ages:
            return self.poll_s
        return max(min(MIN_POLL_S, self.poll_s), min(self.poll_s, min(ages) / 4))

    def tick(self, wait_s: float = 0.0) -> float:
        """One pass: poll the backend, then (unless backing off) talk to the server; a lease
        may wait up to `wait_s` for work (long-poll). The pause before the next tick: none
        after a lease that got work or waited its full time, else up to `poll_s`."""
        now = self._clock()
        self._poll_backend()
        self._collect_transfers()
        self._expire_leases(now)
        if now < self._net_ready_at:
            return self.poll_s
        pause = self._busy_pause()
        try:
            if self.agent_id is None:
                self.register()
            self._flush_outbox()
            if self._clock() >= self._next_heartbeat_at:
                self._heartbeat()
                wait_s = min(wait_s, max(0.0, self._next_heartbeat_at - self._clock()))
            if self.agent_id is not None and self.free_slots() > 0:
                asked_at = self._clock()
                got = self._lease(wait_s)
                self._flush_outbox()
                waited = self._clock() - asked_at
                pause = 0.0 if got or waited >= wait_s > 0 else max(0.0, pause - waited)
        except ServerUnavailable as error:
            delay = self._backoff.failure()
            self._net_ready_at = self._clock() + delay
            self._log(f"{error.one_line()}; retrying in {delay:.1f} s")
        else:
            self._backoff.success()
        return pause

    def register(self) -> str:
        """Resume the id of a previous run in this work root if the server still knows it,
        else `POST /v1/agents`; sets `agent_id`, `lease_s`, `heartbeat_s`."""
        if self._recovered is not None and self._resume(self._recovered):
            assert self.agent_id is not None
            return self.agent_id
        body = {
            "site_id": self.site_id,
            "name": self.name,
            "slots": self.slots,
            "backend": self.backend.name,
        }
        path = "/v1/agents"
        code, answer = self._post(path, body)
        if code == 404 or not 200 <= code < 300:
            raise ServerUnavailable(path, f"HTTP {code} {_detail(answer)}".strip())
        agent_id = answer.get("id")
        lease_s = answer.get("lease_s")
        heartbeat_s = answer.get("heartbeat_s")
        if (
            not isinstance(agent_id, str | int)
            or not _positive(lease_s)
            or not _positive(heartbeat_s)
        ):
            raise ServerUnavailable(path, f"malformed answer {answer!r}")
        self.agent_id = str(agent_id)
        self.lease_s = float(lease_s)
        self.heartbeat_s = float(heartbeat_s)
        self._take_grace(answer)
        self._next_heartbeat_at = self._clock() + self.heartbeat_s
        self._log(
            f"registered at {self.server_url} (site {self.site_id}, {self.slots} slot(s), "
            f"backend {self.backend.name}, work root {self.work_root})"
        )
        self._save_state()
        return self.agent_id

    def _resume(self, state: Mapping[str, Any]) -> bool:
        """Take up a previous run's id and tasks; False when the server has forgotten it."""
        saved_tasks: Mapping[str, Any] = state.get("tasks") or {}
        tasks = {k: v for k, v in saved_tasks.items() if not v.get("dropped")}
        self.agent_id = str(state["agent_id"])
        path = self._agent_path("heartbeat")
        try:
            code, _ = self._post(path, {"running": list(tasks)})
        except ServerUnavailable:
            self.agent_id = None  # try to resume again after the backoff
            raise
        self._recovered = None
        if code == 404 or not 200 <= code < 300:
            self._log(f"the server no longer knows agent {self.agent_id}; registering anew")
            self.agent_id = None
            for task_id, saved in tasks.items():  # not ours any more: stop what still runs
                with contextlib.suppress(Exception):
                    handle = self.backend.reattach(task_id, str(saved["ref"]))
                    if handle is not None:
                        self.backend.cancel(handle)
            return False
        self.lease_s = float(state["lease_s"])
        self.heartbeat_s = float(state["heartbeat_s"])
        self._next_heartbeat_at = self._clock() + self.heartbeat_s
        self._log(f"resumed at {self.server_url} with {len(tasks)} task(s) to find again")
        for task_id, saved in tasks.items():
            try:
                handle = self.backend.reattach(task_id, str(saved["ref"]))
            except Exception as exc:  # the engine cannot answer: treat as lost, say why
                self._log(f"task {task_id}: reattach failed: {exc}")
                handle = None
            if handle is None:
                self._finished_id(task_id, _no_status(TaskState.SYSTEM_ERROR, LOST_REASON))
                continue
            self._tasks[task_id] = _Task(
                id=task_id,
                handle=handle,
                lease_deadline=self._clock() + self.lease_s,
                task_dir=Path(saved["task_dir"]),
                outputs=list(saved.get("outputs") or []),
            )
            self._enqueue(task_id, {"state": TaskState.RUNNING.value}, terminal=False)
            self._log(f"task {task_id} found again on the backend ({handle.ref})")
        self._save_state()
        return True

    def _kill_leftovers(self) -> None:
        """Kill the process groups that a previous agent on this work root recorded: this
        process holds no lease for them, whichever server or site that agent worked for."""
        kill = getattr(self.backend, "kill_leftovers", None)
        try:
            state = json.loads(self._state_path.read_text())
            tasks = dict(state.get("tasks") or {})
        except (OSError, ValueError, TypeError, AttributeError):
            return
        for task_id, saved in tasks.items():
            process = saved.get("process") if isinstance(saved, dict) else None
            if kill is None or not isinstance(process, list) or len(process) != 2:
                continue
            with contextlib.suppress(OSError, TypeError, ValueError):
                if kill(int(process[0]), int(process[1])):
                    self._log(f"task {task_id}: killed what a previous agent left running")

    def _load_state(self) -> dict[str, Any] | None:
        """The state a previous run left in this work root, if it was for this server, site
        and backend."""
        try:
            state = json.loads(self._state_path.read_text())
        except (OSError, ValueError):
            return None
        same = (state.get("server_url"), state.get("site_id"), state.get("backend")) == (
            self.server_url,
            self.site_id,
            self.backend.name,
        )
        return state if same and state.get("agent_id") else None

    def _save_state(self) -> None:
        """Write the id and the tasks' refs (atomically: a crash leaves the old file or the new)."""
        if self.agent_id is None:
            return
        state = {
            "server_url": self.server_url,
            "site_id": self.site_id,
            "backend": self.backend.name,
            "agent_id": self.agent_id,
            "lease_s": self.lease_s,
            "heartbeat_s": self.heartbeat_s,
            "tasks": {
                t.id: {
                    "ref": t.handle.ref,
                    "task_dir": str(t.task_dir),
                    "outputs": t.outputs,
                    "process": t.process,
                    "dropped": t.dropped,
                }
                for t in self._tasks.values()
                if not t.dropped or t.process is not None  # dropped but still draining
            },
        }
        self.work_root.mkdir(parents=True, exist_ok=True)
        scratch = self._state_path.with_suffix(".tmp")
        scratch.write_text(json.dumps(state))
        os.replace(scratch, self._state_path)

    def free_slots(self) -> int:
        return max(0, self.slots - len(self._tasks) - len(self._transfers))

    def running(self) -> list[str]:
        """Ids of the tasks this agent holds: running, moving their files, or finished with a
        report still pending."""
        ids = [t.id for t in self._tasks.values() if not t.dropped]
        ids += [t.id for t in self._transfers.values() if not t.dropped and t.id not in ids]
        ids += [r.task_id for r in self._outbox if r.terminal and r.task_id not in ids]
        return ids

    def shutdown(self, reason: str = STOP_REASON) -> None:
        """Cancel what runs, report it CANCELED with `reason`, flush reports; bounded in time."""
        for task in self._tasks.values():
            if not task.dropped and task.cancel_reason is None:
                task.cancel_reason = reason
            self._cancel_on_backend(task)
        deadline = self._clock() + self.shutdown_s
        while self._tasks and self._clock() < deadline:
            self._poll_backend()
            if self._tasks:
                time.sleep(min(self.poll_s, 0.05))
        for task in list(self._tasks.values()):  # the backend did not confirm in time
            del self._tasks[task.id]
            self._close_meter(task)
            if not task.dropped:
                self._finished(task, _no_status(TaskState.CANCELED, "cancel not confirmed"))
        self._stop_transfers(reason, deadline)
        while self._outbox and self.agent_id is not None and self._clock() < deadline:
            try:
                self._flush_outbox()
            except ServerUnavailable as error:
                delay = min(self._backoff.failure(), max(0.0, deadline - self._clock()))
                self._log(f"{error.one_line()}; retrying in {delay:.1f} s")
                time.sleep(delay)
            except AgentRejected as error:
                self._log(error.one_line())
                break
        if self._outbox:
            self._log(f"{len(self._outbox)} report(s) not delivered before shutdown")
            self._outbox.clear()
        self._client.close()
        self._log("stopped")

    # -- server calls ---------------------------------------------------------------------

    def _post(self, path: str, body: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
        """POST JSON; raise `AgentRejected` on 401/403 and `ServerUnavailable` if transient."""
        try:
            response = self._client.post(path, json=body)
        except httpx.HTTPError as exc:
            problem = certificate_problem(exc)
            if problem is not None:  # retried too: the server may be given a new certificate
                why = f"untrusted server certificate ({problem}); pass --ca FILE or set SUANLI_CA"
                raise ServerUnavailable(path, why) from exc
            raise ServerUnavailable(path, f"{type(exc).__name__}: {exc}") from exc
        code = response.status_code
        try:
            answer = response.json() if response.content else {}
        except ValueError:
            answer = {"detail": response.text[:200]}
        if not isinstance(answer, dict):
            answer = {"detail": answer}
        if code in (401, 403):
            raise AgentRejected(code, path, _detail(answer))
        if code >= 500 or code == 429:
            raise ServerUnavailable(path, f"HTTP {code} {_detail(answer)}".strip())
        return code, answer

    def _agent_path(self, action: str) -> str:
        assert self.agent_id is not None
        return f"/v1/agents/{quote(self.agent_id, safe='')}/{action}"

    def _heartbeat(self) -> None:
        path = self._agent_path("heartbeat")
        sent_at = self._clock()
        ids = self.running()
        body: dict[str, Any] = {"running": ids}
        tails = self._new_tails()
        if tails:
            body["tails"] = tails
        if sent_at >= self._next_capacity_at:
            self._next_capacity_at = sent_at + self.capacity_every_s
            capacity = self._capacity()
            if capacity is not None:
                body["capacity"] = capacity
        code, answer = self._post(path, body)
        self._next_heartbeat_at = sent_at + self.heartbeat_s
        if code == 404:
            self._log("the server no longer knows this agent; registering again")
            self.agent_id = None
            return
        if not 200 <= code < 300:
            raise ServerUnavailable(path, f"HTTP {code} {_detail(answer)}".strip())
        for task_id in ids:
            if task_id in self._tasks:
                self._tasks[task_id].lease_deadline = sent_at + self.lease_s
            if task_id in self._transfers:
                self._transfers[task_id].lease_deadline = sent_at + self.lease_s
        cancel = answer.get("cancel") or []
        preempt = answer.get("preempt") or []
        if not isinstance(cancel, list) or not isinstance(preempt, list):
            raise ServerUnavailable(path, f"malformed answer {answer!r}")
        self._take_grace(answer)
        for task_id in map(str, cancel):
            moving = self._transfers.get(task_id)
            if moving is not None and moving.inputs and moving.cancel_reason is None:
                moving.cancel_reason = SERVER_CANCEL_REASON  # it ends once its inputs are in
                self._log(f"task {task_id} cancel requested by the server while staging")
            task = self._tasks.get(task_id)
            if task is None or task.dropped or task.cancel_reason is not None:
                continue
            task.cancel_reason = SERVER_CANCEL_REASON
            self._log(f"task {task_id} cancel requested by the server")
            self._cancel_on_backend(task)
        for task_id in map(str, preempt):
            task = self._tasks.get(task_id)
            if task is None or task.dropped or task.cancel_reason is not None or task.preempting:
                continue
            task.preempting = True
            grace_s = self.preempt_grace_s if self.preempt_grace_s is not None else 30.0
            self._log(f"task {task_id} preempted by the server ({grace_s:g} s grace)")
            try:
                self.backend.preempt(task.handle, grace_s)
            except Exception as exc:  # keep the loop alive; the next poll will tell
                self._log(f"task {task.id}: preempt failed on the backend: {exc}")

    def _take_grace(self, answer: Mapping[str, Any]) -> None:
        """The server's preemption grace (registration or heartbeat answer), if it gave one."""
        grace = answer.get("preempt_grace_s")
        if isinstance(grace, int | float) and not isinstance(grace, bool) and grace >= 0:
            self.preempt_grace_s = float(grace)

    def _new_tails(self) -> dict[str, dict[str, str]]:
        """The last 4 KiB of each running task's stdout.txt and stderr.txt, for the tasks whose
        output changed since the last heartbeat (every backend writes them in the task dir)."""
        tails = {}
        for task in self._tasks.values():
            if task.dropped:
                continue
            tail = {
                "stdout": read_tail(task.task_dir / STDOUT_FILE),
                "stderr": read_tail(task.task_dir / STDERR_FILE),
            }
            if tail != self._sent_tails.get(task.id):
                tails[task.id] = tail
        self._sent_tails = {t: self._sent_tails.get(t, {}) for t in self._tasks} | tails
        return tails

    def _capacity(self) -> dict[str, Any] | None:
        """The backend's capacity as the heartbeat carries it; None when it cannot tell."""
        try:
            capacity = self.backend.capacity()
        except Exception as exc:  # an engine that cannot answer now: try again next time
            self._log(f"capacity unknown: {exc}")
            return None
        if capacity is None:
            return None
        self._engine_models = tuple(capacity.gpus_by_model)
        return asdict(capacity)

    def _lease(self, wait_s: float = 0.0) -> int:
        """Lease up to the free slots' worth of work, waiting up to `wait_s` for some (the
        server holds the request until work is placed on the site); how many were leased."""
        path = self._agent_path("lease")
        body: dict[str, Any] = {"max": self.free_slots()}
        if wait_s > 0:
            body["wait_s"] = round(min(wait_s, MAX_LEASE_WAIT_S), 3)
        code, answer = self._post(path, body)
        if code == 404:
            self._log("the server no longer knows this agent; registering again")
            self.agent_id = None
            return 0
        tasks = answer.get("tasks")
        if not 200 <= code < 300 or not isinstance(tasks, list):
            raise ServerUnavailable(path, f"HTTP {code} {_detail(answer) or answer!r}")
        self._start_all(tasks)
        return len(tasks)

    def _accelerator(self, item: dict[str, Any]) -> Accelerator | None:
        """What a leased task holds on its nodes: None for CPU cores; else accelerators of its
        kind, of the model that the engine's name (a GRES type, a Ray resource, from the last
        capacity report) means for the pool's catalog device, or of any model when no name
        matches."""
        kind = str(item.get("device_kind") or "cpu")
        if kind == "cpu":
            return None
        device = item.get("device")
        named = [m for m in self._engine_models if device and device in engine_device_ids(m)]
        return Accelerator(kind, named[0] if len(named) == 1 else None)

    def _start_all(self, items: list[object]) -> None:
        """Start the leased tasks (those whose inputs are moving in the background start when
        they are in: `_inputs_staged`)."""
        self._start_prepared([p for p in (self._prepare(item) for item in items) if p is not None])

    def _start_prepared(self, prepared: list[tuple[StartRequest, list[dict[str, Any]]]]) -> None:
        """Start prepared tasks: together through the backend's `start_many` where it has one
        (Slurm: a job array), else one by one."""
        many = getattr(self.backend, "start_many", None)
        if many is None or len(prepared) < 2:
            for request, outputs in prepared:
                try:
                    handle: Handle | str = self.backend.start(
                        request.task_id,
                        request.executors,
                        request.workdir,
                        request.devices,
                        nodes=request.nodes,
                        accelerator=request.accelerator,
                        max_run_s=request.max_run_s,
                        checkpoint_dir=request.checkpoint_dir,
                        grace_s=request.grace_s,
                    )
                except Exception as exc:  # a bad spec or a backend failure: cannot run here
                    handle = _said(exc)
                self._started(request, outputs, handle)
            return
        try:
            answers = list(many([request for request, _ in prepared]))
        except Exception as exc:  # the backend failed them all: none can run here
            answers = [exc] * len(prepared)
        for (request, outputs), answer in zip(prepared, answers, strict=True):
            if isinstance(answer, Handle):
                self._started(request, outputs, answer)
            else:
                why = _said(answer)
                self._started(request, outputs, why)

    def _prepare(self, item: object) -> tuple[StartRequest, list[dict[str, Any]]] | None:
        """A leased task checked, its directories made and its inputs staged: what the backend
        starts, and its outputs; None (the task reported SYSTEM_ERROR) when it cannot run."""
        if not isinstance(item, dict) or not isinstance(item.get("id"), str | int):
            self._log(f"ignoring a malformed leased task {item!r}")
            return None
        task_id = str(item["id"])
        if task_id in self._tasks:
            self._log(f"task {task_id} leased again while running; keeping the running copy")
            return None
        try:
            executors = [Executor.from_json(e) for e in item.get("executors") or []]
            if not executors:
                raise InvalidValue("executors", [], "at least one executor", "至少一个执行器")
            max_run_s = item.get("max_run_s")
            if max_run_s is not None and not _positive(max_run_s):
                raise InvalidValue("max_run_s", max_run_s, "a positive number", "正数")
            request = StartRequest(
                task_id,
                executors,
                self.work_root / _dir_name(task_id),
                int(item.get("devices") or 0),
                nodes=int(item.get("nodes") or 1),
                accelerator=self._accelerator(item),
                max_run_s=None if max_run_s is None else float(max_run_s),
                checkpoint_dir=self.checkpoint_dir(task_id),
                grace_s=self.preempt_grace_s,
            )
            request.workdir.mkdir(parents=True, exist_ok=True)
            assert request.checkpoint_dir is not None
            request.checkpoint_dir.mkdir(parents=True, exist_ok=True)
            outputs = _objects(item, "outputs")
            inputs = _objects(item, "inputs")
            volumes = item.get("volumes") or []
            if staging.has_remote(inputs):  # minutes, maybe: off the loop, lease kept

                def staged(_: Any, error: BaseException | None) -> None:
                    self._inputs_staged(request, outputs, error)

                self._transfer(
                    task_id,
                    lambda: staging.stage_in(
                        request.workdir, inputs, volumes, self.file_roots, self.remote
                    ),
                    staged,
                    inputs=True,
                )
                return None
            staging.stage_in(request.workdir, inputs, volumes, self.file_roots, self.remote)
        except Exception as exc:  # a bad spec or a failed staging: the task cannot run here
            message = _said(exc)
            self._finished_id(task_id, _no_status(TaskState.SYSTEM_ERROR, message))
            return None
        return request, outputs

    def _inputs_staged(
        self, request: StartRequest, outputs: list[dict[str, Any]], error: BaseException | None
    ) -> None:
        """A task's inputs came in (or failed to) in the background: start it, or end it."""
        moving = self._transfers.pop(request.task_id)
        if error is not None:
            message = _said(error)
            self._finished_id(request.task_id, _no_status(TaskState.SYSTEM_ERROR, message))
        elif moving.cancel_reason is not None:
            self._finished_id(request.task_id, _no_status(TaskState.CANCELED, moving.cancel_reason))
        else:
            self._start_prepared([(request, outputs)])

    def _transfer(
        self,
        task_id: str,
        work: Callable[[], Any],
        then: Callable[[Any, BaseException | None], None],
        *,
        inputs: bool,
    ) -> None:
        """Run `work` (a staging) in a worker thread; `then(result, error)` on the loop when it
        ends (`_collect_transfers`). The task keeps its slot and its lease meanwhile."""
        if self._transfer_pool is None:
            self._transfer_pool = ThreadPoolExecutor(
                max_workers=self.slots, thread_name_prefix="suanli-staging"
            )
        self._transfers[task_id] = _Transfer(
            task_id,
            self._transfer_pool.submit(work),
            self._clock() + self.lease_s,
            then,
            inputs,
        )
        self._log(f"task {task_id}: moving its {'inputs' if inputs else 'outputs'}")

    def _collect_transfers(self) -> None:
        """Finish the transfers that ended: each one's `then`, on this thread."""
        for moving in [t for t in self._transfers.values() if t.future.done()]:
            if moving.dropped:
                del self._transfers[moving.id]
                continue
            error = moving.future.exception()
            moving.then(None if error is not None else moving.future.result(), error)
            self._transfers.pop(moving.id, None)

    def _stop_transfers(self, reason: str, deadline: float) -> None:
        """At shutdown: outputs still moving get until `deadline` to finish, then the task is
        reported SYSTEM_ERROR; tasks whose inputs are still moving are reported CANCELED."""
        while any(not t.inputs for t in self._transfers.values()) and self._clock() < deadline:
            self._collect_transfers()
            time.sleep(0.05)
        for moving in list(self._transfers.values()):
            del self._transfers[moving.id]
            if moving.dropped:
                continue
            if moving.inputs:
                self._finished_id(moving.id, _no_status(TaskState.CANCELED, reason))
            else:
                why = f"{reason} while copying outputs"
                self._finished_id(moving.id, _no_status(TaskState.SYSTEM_ERROR, why))
        if self._transfer_pool is not None:
            self._transfer_pool.shutdown(wait=False, cancel_futures=True)

    def _started(
        self, request: StartRequest, outputs: list[dict[str, Any]], handle: Handle | str
    ) -> None:
        """Follow a task the backend started (report it RUNNING), or report SYSTEM_ERROR with
        why it could not start (`handle` is then that reason)."""
        task_id = request.task_id
        if isinstance(handle, str):
            self._finished_id(task_id, _no_status(TaskState.SYSTEM_ERROR, handle))
            return
        self._tasks[task_id] = _Task(
            id=task_id,
            handle=handle,
            lease_deadline=self._clock() + self.lease_s,
            task_dir=request.workdir,
            outputs=outputs,
            process=self._process_of(handle),
            started_at=self._clock(),
        )
        self._open_meter(self._tasks[task_id])
        self._enqueue(task_id, {"state": TaskState.RUNNING.value}, terminal=False)
        self._save_state()
        self._log(f"task {task_id} {TaskState.RUNNING.value}")

    def checkpoint_dir(self, task_id: str) -> Path:
        """The task's checkpoint directory on this agent (see the module docstring)."""
        return self.checkpoint_root / _dir_name(task_id)

    def _flush_outbox(self) -> None:
        """Send the outbox, oldest first, in batches (`_next_batch`) to `POST
        /v1/agents/{id}/reports`. A batch leaves the outbox only once it is answered: when the
        server cannot be reached `ServerUnavailable` propagates with every report still queued
        (the tick backs off and sends them again). Each result is handled as the answer to that
        report alone (`_answered`). A batch refused as a whole (any other non-2xx: a body too
        large, a report the server cannot read, a server without the batch route) goes again
        one report at a time to `POST /v1/tasks/{id}/report`, as reports went before."""
        while self._outbox and self.agent_id is not None:
            batch = self._next_batch()
            path = self._agent_path("reports")
            items = [{"task_id": r.task_id, **r.body} for r in batch]
            code, answer = self._post(path, {"reports": items})
            if not 200 <= code < 300:
                for _ in batch:  # fewer may be left: a refused report drops its task's others
                    if self._outbox and self.agent_id is not None:
                        self._report_alone()
                continue
            results = _batch_results(path, answer, batch)
            for _ in batch:
                self._outbox.popleft()  # first: dropping a task filters what is left
            dropped: set[str] = set()
            for report, (status, said) in zip(batch, results, strict=True):
                if report.task_id not in dropped and self._answered(report, status, said):
                    dropped.add(report.task_id)

    def _next_batch(self) -> list[_Report]:
        """The outbox's oldest reports, in order: at least one, and at most REPORT_BATCH of
        them or REPORT_BATCH_BYTES of JSON."""
        batch: list[_Report] = []
        size = 0
        for report in self._outbox:
            size += len(json.dumps(report.body)) + len(report.task_id) + 16
            if batch and (len(batch) >= REPORT_BATCH or size > REPORT_BATCH_BYTES):
                break
            batch.append(report)
        return batch

    def _report_alone(self) -> None:
        """The outbox's first report, alone, through `POST /v1/tasks/{id}/report`."""
        report = self._outbox[0]
        path = f"/v1/tasks/{quote(report.task_id, safe='')}/report"
        code, answer = self._post(path, {"agent_id": self.agent_id, **report.body})
        self._outbox.popleft()
        self._answered(report, code, answer)

    def _answered(self, report: _Report, code: int, answer: Mapping[str, Any]) -> bool:
        """Act on the server's answer to one report (HTTP `code`, or its result's status in a
        batch): 404 / 409 drop the task; a final state taken removes its checkpoint directory;
        anything else refused is logged and not retried. Whether the task was dropped."""
        if code in (404, 409):
            self._drop(report.task_id, f"server answered {code} to a report")
            return True
        if 200 <= code < 300 and report.terminal and report.body["state"] in FINAL_STATES:
            shutil.rmtree(self.checkpoint_dir(report.task_id), ignore_errors=True)
        elif not 200 <= code < 300:
            self._log(
                f"task {report.task_id}: report {report.body['state']} refused with "
                f"HTTP {code} {_detail(answer)}; not retrying it"
            )
        return False

    # -- local bookkeeping ----------------------------------------------------------------

    def _poll_backend(self) -> None:
        for task in list(self._tasks.values()):
            try:
                status = self.backend.poll(task.handle)
            except Exception as exc:  # the backend lost the task: it cannot finish here
                status = _no_status(TaskState.SYSTEM_ERROR, f"backend poll failed: {exc}")
            if status is None:
                self._track_process(task)
                self._sample_meter(task)
                continue
            del self._tasks[task.id]
            self._save_state()
            status = self._with_energy(task, status)
            if not task.dropped:
                self._finished(task, status)

    def _open_meter(self, task: _Task) -> None:
        """Start measuring the devices the backend bound to `task`, when it tells and a meter
        of their kind can open them (see "Energy" in the module docstring)."""
        bound = getattr(self.backend, "bound_devices", None)
        try:
            kind, devices = bound(task.handle) if bound is not None else ("cpu", ())
            meter = self.meters.get(kind)
            if not devices or meter is None:
                return
            task.meter = meter.open(devices)
            if task.meter is None:
                return
            task.readings.add(task.meter.read())
        except Exception as exc:  # a meter never fails a task: its figure stays modelled
            message = _said(exc)
            self._log(f"task {task.id}: energy not measured: {message}")
            self._close_meter(task)
            return
        task.next_sample_at = self._clock() + self.sample_every_s

    def _sample_meter(self, task: _Task) -> None:
        """The periodic read, when it is due: the power of a sampled source, and the
        utilisation of every source (a read only at the end would see the devices idle)."""
        if task.meter is None or self._clock() < task.next_sample_at:
            return
        try:
            task.readings.add(task.meter.read())
        except Exception as exc:
            self._log(f"task {task.id}: energy not measured: {exc}")
            self._close_meter(task)
            return
        task.next_sample_at = self._clock() + self.sample_every_s

    def _close_meter(self, task: _Task) -> None:
        meter, task.meter = task.meter, None
        task.readings = energy.Tally()
        if meter is not None:
            with contextlib.suppress(Exception):
                meter.close()

    def _with_energy(self, task: _Task, status: Status) -> Status:
        """`status` with the measured energy and utilisation in its usage (unchanged when
        nothing was measured); the meter is read a last time and closed."""
        if task.meter is None:
            return status
        try:
            task.readings.add(task.meter.read())
            result = task.readings.result()
        except Exception as exc:
            self._log(f"task {task.id}: energy not measured: {exc}")
            result = None
        self._close_meter(task)
        if result is None:
            return status
        usage = replace(status.usage, energy_kwh=result.energy_kwh, utilisation=result.utilisation)
        return replace(status, usage=usage)

    def _process_of(self, handle: Handle) -> tuple[int, int] | None:
        where = getattr(self.backend, "executor_process", None)
        return where(handle) if where is not None else None

    def _track_process(self, task: _Task) -> None:
        """Record in the state file the process group the backend runs the task in now (the
        local backend's executors), so a restarted agent can kill it."""
        process = self._process_of(task.handle)
        if process != task.process:
            task.process = process
            self._save_state()

    def _finished(self, task: _Task, status: Status) -> None:
        reason = status.reason
        if status.state is TaskState.CANCELED and task.cancel_reason is not None:
            reason = task.cancel_reason

        def copied_out(logs: Any, error: BaseException | None) -> None:
            if error is None:
                self._finished_id(task.id, status, reason, logs)
                return
            why = f"copying outputs failed: {_said(error)}"  # the task ends SYSTEM_ERROR
            self._finished_id(
                task.id, replace(status, state=TaskState.SYSTEM_ERROR, reason=why), why
            )

        if status.state is not TaskState.COMPLETE or not task.outputs:
            copied_out([], None)
            return

        def copy() -> list[dict[str, str]]:
            return staging.stage_out(task.task_dir, task.outputs, self.file_roots, self.remote)

        if staging.has_remote(task.outputs):  # off the loop, as inputs: see `_transfer`
            self._transfer(task.id, copy, copied_out, inputs=False)
            return
        try:
            logs = copy()
        except Exception as exc:  # whatever failed, the task ends SYSTEM_ERROR saying why
            copied_out(None, exc)
        else:
            copied_out(logs, None)

    def _finished_id(
        self,
        task_id: str,
        status: Status,
        reason: str | None = None,
        outputs: list[dict[str, str]] | None = None,
    ) -> None:
        assert status.state in TERMINAL_STATES
        body = {
            "state": status.state.value,
            "exit_code": status.exit_code,
            "stdout_tail": status.stdout_tail,
            "stderr_tail": status.stderr_tail,
            "usage": status.usage.as_json(),
            "reason": (status.reason if reason is None else reason)[:REASON_CHARS],
            "executors": [log.as_json() for log in status.executors],
            "outputs": outputs or [],
        }
        self._enqueue(task_id, body, terminal=True)
        detail = f"exit {status.exit_code}, " if status.exit_code is not None else ""
        detail += f"{status.usage.wall_s:.1f} s"
        if body["reason"]:
            detail += f"; {body['reason']}"
        self._log(f"task {task_id} {status.state.value} ({detail})")

    def _enqueue(self, task_id: str, body: dict[str, Any], *, terminal: bool) -> None:
        self._outbox.append(_Report(task_id=task_id, body=body, terminal=terminal))

    def _drop(self, task_id: str, why: str) -> None:
        """The task is no longer ours: cancel it locally and forget its reports."""
        self._outbox = deque(r for r in self._outbox if r.task_id != task_id)
        task = self._tasks.get(task_id)
        if task is not None and not task.dropped:
            task.dropped = True
            self._cancel_on_backend(task)
            self._save_state()
        if task_id in self._transfers:
            self._transfers[task_id].dropped = True
        self._log(f"task {task_id} dropped: {why}")

    def _expire_leases(self, now: float) -> None:
        for task in list(self._tasks.values()):
            if not task.dropped and now > task.lease_deadline:
                self._drop(task.id, LEASE_LOST_REASON)
        for moving in self._transfers.values():
            if not moving.dropped and now > moving.lease_deadline:
                moving.dropped = True  # its result is dropped when the thread ends
                self._log(f"task {moving.id} dropped while moving files: {LEASE_LOST_REASON}")

    def _cancel_on_backend(self, task: _Task) -> None:
        try:
            self.backend.cancel(task.handle)
        except Exception as exc:  # keep the loop alive; the next poll will tell
            self._log(f"task {task.id}: cancel failed on the backend: {exc}")

    def _log(self, message: str) -> None:
        self._log_line(f"agent {self.agent_id or '(unregistered)'}: {message}")


def _batch_results(
    path: str, answer: Mapping[str, Any], batch: Sequence[_Report]
) -> list[tuple[int, dict[str, Any]]]:
    """The `(status, {"detail": ...})` of each report of `batch` from the server's answer to
    it, or `ServerUnavailable` when the answer does not match the batch."""
    results = answer.get("results")
    if isinstance(results, list) and len(results) == len(batch):
        found = [
            (r["status"], {"detail": r.get("detail") or ""})
            for r, report in zip(results, batch, strict=True)
            if isinstance(r, dict)
            and r.get("task_id") == report.task_id
            and isinstance(r.get("status"), int)
        ]
        if len(found) == len(batch):
            return found
    raise ServerUnavailable(path, f"malformed answer {str(answer)[:200]}")


def _positive(value: object) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def _detail(answer: Mapping[str, Any]) -> str:
    """The server's words: `{"error": {"message": ...}}` (suanli's API) or `{"detail": ...}`."""
    error = answer.get("error")
    if isinstance(error, Mapping) and isinstance(error.get("message"), str):
        return str(error["message"])
    detail = answer.get("detail", "")
    return detail if isinstance(detail, str) else repr(detail)


def _said(exc: BaseException) -> str:
    """What an error says, on one line (both languages for suanli's own)."""
    return exc.one_line() if isinstance(exc, SuanliError) else f"{exc}"


def _no_status(state: TaskState, reason: str) -> Status:
    """A terminal status for work the backend never ran or never confirmed."""
    return Status(state, None, "", "", Usage(0.0, 0.0, 0.0), reason)


def default_work_root() -> Path:
    """A new directory under `$SUANLI_HOME/agents`: not under /tmp, which a task sees as its own
    private /tmp, so that its directory is the same path inside the task as outside."""
    parent = suanli_home() / "agents"
    parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="agent-", dir=parent))


def run_agent(
    server_url: str,
    token: str,
    site_id: str,
    backend: Backend | str = "local",
    slots: int = 1,
    name: str | None = None,
    work_root: Path | str | None = None,
    stop: threading.Event | None = None,
    poll_s: float = 0.5,
    file_roots: Sequence[Path | str] = (),
    ca: str | None = None,
    s3: S3Config | None = None,
) -> None:
    """Run an agent until `stop` is set; with no `stop`, until SIGINT or SIGTERM (main thread).

    Raises `AgentRejected` when the server refuses the token (401/403) and `InvalidValue` for a
    bad argument; transient server failures are retried forever.
    """
    agent = Agent(
        server_url,
        token,
        site_id,
        backend,
        slots=slots,
        name=name,
        work_root=work_root,
        file_roots=file_roots,
        s3=s3,
        poll_s=poll_s,
        ca=ca,
    )
    if stop is not None:
        agent.run(stop)
        return
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        agent.run(stop)  # no signals off the main thread; the caller must stop the process
        return

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        agent.run(stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _objects(item: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    """A leased task's list of objects under `key` (inputs, outputs), checked for shape."""
    value = item.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise InvalidValue(key, value, "a list of objects", "对象列表")
    return value
