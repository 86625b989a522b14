"""The Ray backend: each task is one Ray job, submitted through the Ray Jobs REST API.

A task becomes a job whose entrypoint is `python -m suanli.agent.backends.ray_entry <task dir>
<plan>` (see that module): it runs the executors in order exactly as the local backend does and
reports each executor's end on the job's log. A CPU task (`accelerator` None) asks for
`entrypoint_num_cpus` = max(1, devices), so Ray queues it (PENDING) until a node has that many
CPUs free; a GPU task asks for `entrypoint_num_gpus` = devices (Ray binds them with
`CUDA_VISIBLE_DEVICES`, which the runner passes on to the executors) plus 0.001 of the
`accelerator_type:<model>` resource when the accelerator names a model (Ray's own convention:
a node of that model declares 1 of it); another kind (`npu`) asks for `devices` of the custom
resource of that name in capitals (`NPU`). A gang (`nodes` > 1) asks nothing for the entrypoint
itself: the runner reserves a STRICT_SPREAD placement group of `nodes` bundles of those resources
(CPUs: max(1, devices)) and runs one rank per bundle (see `ray_entry`); a gang the cluster can
never hold fails at once, one that waits longer than `gang_wait_s` fails too (SYSTEM_ERROR, with
the reason). `Handle.ref`
is the job's submission id (`suanli-<task id>-<random>`); the job's metadata carries the task
id, its devices and its task directory, so a fresh backend can `reattach` to it after the agent
restarts: Ray jobs outlive the process that submitted them.

The backend talks to the Ray dashboard over HTTP (`/api/jobs/...`, `/api/cluster_status`,
`/api/v0/nodes`) with a timeout on every request, so nothing blocks for long and the agent
needs neither `ray` nor its `aiohttp` client stack at run time; the cluster needs
`ray[default]` (the dashboard). Addresses: `"local"` is the dashboard on `127.0.0.1:8265`, and
when none answers there the first request starts a head with the `ray` CLI next to this Python
(`ray start --head`, about 5-8 s, the only slow call); `http(s)://host:port` is a dashboard;
`ray://host[:port]` (a Ray Client address) means the dashboard on the same host, port 8265.
Token authentication (Ray's default on new clusters) is honoured: the token is `token`, else
`$RAY_AUTH_TOKEN`, else the file `$RAY_AUTH_TOKEN_PATH` or `~/.ray/auth_token`.

Outcomes on `poll`: PENDING/RUNNING is `None`; SUCCEEDED is COMPLETE; FAILED is EXECUTOR_ERROR
with the failing executor's exit code when the runner reported it, else SYSTEM_ERROR with Ray's
message (the entrypoint could not start, the node died, the job never got its CPUs); STOPPED is
CANCELED (PREEMPTED when this backend stopped it to `preempt` it). A job Ray no longer knows,
or a dashboard that has not answered for `lost_after_s`, ends SYSTEM_ERROR; a shorter outage
makes `poll` return `None`. A job cancelled while PENDING ends CANCELED (PREEMPTED) on the next
`poll`: Ray cannot stop a job that has not started, so `cancel` also leaves a marker in the task
directory (`ray_entry.cancel_marker`) that makes the runner exit at once should the job start
later (Ray itself fails a job still pending after `RAY_JOB_START_TIMEOUT_SECONDS`, 15 min).

Preemption and maximum run time, and what Ray cannot do: Ray's only way to end a job is
`stop_job` (`POST /api/jobs/{id}/stop`): SIGTERM to the entrypoint and every descendant, then
SIGKILL after `RAY_JOB_STOP_WAIT_TIME_S`, which Ray reads once, from the job's environment, when
the job is submitted, in whole seconds. So `preempt(handle, grace_s)` stops the job and the grace
the work gets is the one given to `start` (`grace_s`, rounded up to a second; the agent passes
the server's `preempt_grace_s`), not the one given to `preempt`; Ray has no way to send a signal
without the stop that follows it, nor to suspend a job. A stopped job cannot be resumed by Ray:
the task resumes from its checkpoint directory when the server places it again. `max_run_s` is
enforced by the runner on the node (`ray_entry`: a timer, SIGTERM, the grace, SIGKILL, the run
ends EXECUTOR_ERROR with `max_run_reason`), and, should the runner fail to end it, the backend
stops the job itself once Ray's clock says it has run `max_run_s` + grace + STOP_BACKSTOP_S.
`checkpoint_dir` goes into the plan and reaches every executor as `SUANLI_CHECKPOINT_DIR` (a path
the Ray node must see, like the task directory).

Metering: `wall_s` is Ray's end time minus its start time for the job (the driver's life, which
includes about a second of Ray's own set-up), `cpu_s` the sum of the executors' leaders' CPU time
as the runner measured it (0 for work that was cancelled before it reported), `device_s` =
`wall_s` x devices.

Where the files are: the runner runs on the node Ray picks, so on a cluster of several nodes the
task directory must be on a filesystem that all of them share, and the same Python (with suanli
importable) must exist there (`python`, default this interpreter). Tails come back in the job's
log, so the agent can report them even when it cannot read the task directory. No private /tmp.

Not thread-safe: one agent loop drives one backend.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from suanli.agent.backends import (
    PREEMPT_REASON,
    Accelerator,
    Capacity,
    Executor,
    ExecutorLog,
    Handle,
    NodeCapacity,
    Status,
    TaskState,
    Usage,
    max_run_reason,
)
from suanli.agent.backends.local import STDERR_FILE, STDOUT_FILE, TAIL_BYTES, read_tail
from suanli.agent.backends.ray_entry import RESULT_PREFIX, cancel_marker, encode_plan
from suanli.errors import InvalidValue

__all__ = ["DEFAULT_DASHBOARD", "RayBackend", "RayUnavailable", "dashboard_url"]

DEFAULT_DASHBOARD = "http://127.0.0.1:8265"
DASHBOARD_PORT = 8265
_META_TASK = "suanli_task_id"
_META_DEVICES = "suanli_devices"
_META_DIR = "suanli_task_dir"
_META_MAX_RUN = "suanli_max_run_s"
_META_NODES = "suanli_nodes"
ACCELERATOR_TYPE = "accelerator_type:"  # Ray's resource naming a node's accelerator model
ACCELERATOR_TYPE_SHARE = 0.001  # what a task asks of it (as Ray's `accelerator_type=` does)
STOP_BACKSTOP_S = 30.0  # past max_run_s + grace, the backend stops a job the runner did not end


class RayUnavailable(OSError):
    """The Ray dashboard did not answer (or answered with an unexpected error)."""


def dashboard_url(address: str) -> str:
    """The dashboard URL that a backend address names (see the module docstring)."""
    if address == "local":
        return DEFAULT_DASHBOARD
    if address.startswith("ray://"):
        host = urllib.parse.urlsplit(address).hostname or "127.0.0.1"
        return f"http://{host}:{DASHBOARD_PORT}"
    if "://" not in address:
        address = f"http://{address}"
    return address.rstrip("/")


def _default_token() -> str | None:
    token = os.environ.get("RAY_AUTH_TOKEN")
    if token:
        return token.strip()
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def ray_resources(devices: int, accelerator: Accelerator | None) -> dict[str, float]:
    """The Ray resources that `devices` of `accelerator` (CPUs when None) are on one node."""
    if accelerator is None or devices <= 0:
        return {"CPU": float(max(1, devices))}
    kind = "GPU" if accelerator.kind.lower() == "gpu" else accelerator.kind.upper()
    resources = {kind: float(devices)}
    if accelerator.model:
        resources[ACCELERATOR_TYPE + accelerator.model] = ACCELERATOR_TYPE_SHARE
    return resources


def _safe_id(task_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", task_id)[:64]


@dataclass
class _Run:
    """What this backend remembers of one job."""

    task_id: str
    task_dir: Path
    devices: int
    unreachable_since: float | None = None
    max_run_s: float | None = None
    grace_s: float = 3.0
    preempted: bool = False  # stopped by `preempt`: STOPPED is PREEMPTED
    timed_out: bool = False  # stopped by the backstop at max_run_s: EXECUTOR_ERROR
    canceled: bool = False  # `cancel` (or `preempt`) was asked


class RayBackend:
    """Runs each task as a Ray job; see the module docstring."""

    def __init__(
        self,
        address: str = "local",
        *,
        token: str | None = None,
        python: str | None = None,
        tail_bytes: int = TAIL_BYTES,
        timeout_s: float = 10.0,
        lost_after_s: float = 120.0,
        local_num_cpus: int | None = None,
        gang_wait_s: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`python`: the interpreter that runs the entrypoint on the node (default this one);
        `local_num_cpus`: CPUs a head started by this backend declares (default all);
        `gang_wait_s`: how long a gang waits for its placement group before it fails."""
        self.address = address
        self.url = dashboard_url(address)
        self.python = python or sys.executable
        self.tail_bytes = tail_bytes
        self.timeout_s = timeout_s
        self.lost_after_s = lost_after_s
        self.local_num_cpus = local_num_cpus
        self.gang_wait_s = gang_wait_s
        self._token = token if token is not None else _default_token()
        self._clock = clock
        self._runs: dict[str, _Run] = {}
        self._checked = False

    @property
    def name(self) -> str:
        return "ray"

    # -- the Backend protocol --------------------------------------------------------------

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
        if isinstance(nodes, bool) or not isinstance(nodes, int) or nodes < 1:
            raise InvalidValue("nodes", nodes, "a whole number of at least 1", "不小于 1 的整数")
        task_dir = Path(workdir).resolve()
        task_dir.mkdir(parents=True, exist_ok=True)
        devices = max(0, devices)
        per_node = ray_resources(devices, accelerator)
        ref = f"suanli-{_safe_id(task_id)}-{uuid.uuid4().hex[:8]}"
        stop_wait_s = max(1, math.ceil(3.0 if grace_s is None else grace_s))
        plan = encode_plan(
            list(executors),
            self.tail_bytes,
            max_run_s=max_run_s,
            grace_s=stop_wait_s,
            checkpoint_dir=None if checkpoint_dir is None else Path(checkpoint_dir).resolve(),
            nodes=nodes,
            bundle=per_node,
            gang_wait_s=self.gang_wait_s,
            ref=ref,
        )
        entrypoint = " ".join(
            shlex.quote(word)
            for word in (self.python, "-m", "suanli.agent.backends.ray_entry", str(task_dir), plan)
        )
        body: dict[str, object] = {
            "entrypoint": entrypoint,
            "submission_id": ref,
            # the grace between stop_job's SIGTERM and its SIGKILL, fixed at submission
            "runtime_env": {"env_vars": {"RAY_JOB_STOP_WAIT_TIME_S": str(stop_wait_s)}},
            "metadata": {
                _META_TASK: task_id,
                _META_DEVICES: str(devices * nodes),
                _META_NODES: str(nodes),
                _META_DIR: str(task_dir),
                _META_MAX_RUN: "" if max_run_s is None else repr(float(max_run_s)),
            },
        }
        if nodes == 1:  # a gang's entrypoint holds nothing: its placement group holds it all
            wanted = dict(per_node)
            if "CPU" in wanted:
                body["entrypoint_num_cpus"] = wanted.pop("CPU")
            if "GPU" in wanted:
                body["entrypoint_num_gpus"] = wanted.pop("GPU")
            if wanted:
                body["entrypoint_resources"] = wanted
        status, answer = self._request("POST", "/api/jobs/", body)
        if status != 200:
            raise RayUnavailable(f"Ray refused job {ref}: HTTP {status}: {answer}")
        self._runs[ref] = _Run(
            task_id=task_id,
            task_dir=task_dir,
            devices=devices * nodes,
            max_run_s=max_run_s,
            grace_s=float(stop_wait_s),
        )
        return Handle(task_id=task_id, backend=self.name, ref=ref)

    def poll(self, handle: Handle) -> Status | None:
        run = self._runs[handle.ref]
        try:
            status, info = self._request("GET", f"/api/jobs/{_quote(handle.ref)}")
        except RayUnavailable as exc:
            now = self._clock()
            if run.unreachable_since is None:
                run.unreachable_since = now
            if now - run.unreachable_since < self.lost_after_s:
                return None
            del self._runs[handle.ref]
            return self._system_error(run, f"Ray has not answered for {self.lost_after_s}s: {exc}")
        run.unreachable_since = None
        if status == 404:
            del self._runs[handle.ref]
            return self._system_error(run, f"Ray no longer knows job {handle.ref}")
        if status != 200 or not isinstance(info, dict):
            return None  # a transient dashboard error; ask again next time
        state = info.get("status")
        if state == "PENDING" and run.canceled:
            # Ray cannot stop a job that has not started (its stop waits for the job's
            # supervisor, which waits for resources); the cancel marker makes the runner exit at
            # once should the job ever start, so nothing of the task runs: it ends now.
            del self._runs[handle.ref]
            preempted = run.preempted
            return Status(
                state=TaskState.PREEMPTED if preempted else TaskState.CANCELED,
                exit_code=None,
                stdout_tail="",
                stderr_tail="",
                usage=Usage(wall_s=0.0, cpu_s=0.0, device_s=0.0),
                reason=PREEMPT_REASON if preempted else "canceled before it started",
            )
        if state not in ("SUCCEEDED", "FAILED", "STOPPED"):
            self._backstop(handle, run, info)
            return None
        final = self._final(handle.ref, run, info)
        del self._runs[handle.ref]
        return final

    def cancel(self, handle: Handle) -> None:
        run = self._runs.get(handle.ref)
        if run is None:
            return
        if not run.canceled:
            run.canceled = True
            with contextlib.suppress(OSError):  # the runner's guard against a late start
                cancel_marker(run.task_dir, handle.ref).touch()
        # Nothing to stop, or nobody to ask: either way the next poll tells.
        with contextlib.suppress(RayUnavailable):
            self._request("POST", f"/api/jobs/{_quote(handle.ref)}/stop")

    def preempt(self, handle: Handle, grace_s: float) -> None:
        """Stop the job (`stop_job`); it ends PREEMPTED. The work gets the grace fixed when the
        job was submitted (see the module docstring), not `grace_s`: Ray cannot change it."""
        run = self._runs.get(handle.ref)
        if run is None or run.preempted:
            return
        run.preempted = True
        self.cancel(handle)

    def _backstop(self, handle: Handle, run: _Run, info: Mapping[str, object]) -> None:
        """Stop a job that has run past its `max_run_s` (by Ray's clock) + grace +
        STOP_BACKSTOP_S: its runner should have ended it and did not."""
        started = info.get("start_time")
        if run.max_run_s is None or run.timed_out or not isinstance(started, int | float):
            return
        limit_s = run.max_run_s + run.grace_s + STOP_BACKSTOP_S
        if time.time() - started / 1000 >= limit_s:
            run.timed_out = True
            self.cancel(handle)

    def capacity(self) -> Capacity | None:
        """Ray's alive nodes and their resources, in total and node by node (`per_node`, named
        by Ray's node id). Totals come from the nodes themselves; what is in use comes from the
        autoscaler's load report, node by node (refreshed every few seconds, absent for a few
        seconds after the head starts: then everything counts as free). A node's GPUs are of
        the model its `accelerator_type:<model>` resource names (Ray declares one model per
        node); GPUs of a node without one count in `gpus` but in no model. None when the
        dashboard does not answer."""
        try:
            node_status, nodes = self._request("GET", "/api/v0/nodes?limit=10000")
            status, cluster = self._request("GET", "/api/cluster_status")
        except RayUnavailable:
            return None
        if node_status != 200 or not isinstance(nodes, dict):
            return None
        by_node: Mapping[str, Mapping[str, Sequence[float]]] = {}
        if status == 200 and isinstance(cluster, dict):
            try:
                by_node = cluster["data"]["clusterStatus"]["loadMetricsReport"]["usageByNode"]
            except (KeyError, TypeError):
                by_node = {}
        listed = nodes.get("data", {}).get("result", {}).get("result", [])
        # Ordering rule: nodes by Ray's node id, so the same cluster always reads the same way.
        alive = sorted(
            (n for n in listed if n.get("state") == "ALIVE"), key=lambda n: str(n.get("node_id"))
        )
        read = [_node_figures(n, by_node.get(str(n.get("node_id"))) or {}) for n in alive]
        gpus_by_model: dict[str, int] = {}
        for one in read:
            for model, count in one.node.gpus_by_model.items():
                gpus_by_model[model] = gpus_by_model.get(model, 0) + count
        return Capacity(
            nodes=len(read),
            cpus=sum(one.node.cpus for one in read),
            free_cpus=sum(one.node.free_cpus for one in read),
            gpus=sum(one.gpus for one in read),
            free_gpus=sum(one.free_gpus for one in read),
            gpus_by_model=gpus_by_model,
            memory_mb=sum(one.memory_b for one in read) // 2**20,
            per_node=tuple(one.node for one in read),
        )

    def reattach(self, task_id: str, ref: str) -> Handle | None:
        """The job `ref` if Ray still knows it and it was submitted for `task_id`."""
        if ref in self._runs:
            return Handle(task_id=task_id, backend=self.name, ref=ref)
        try:
            status, info = self._request("GET", f"/api/jobs/{_quote(ref)}")
        except RayUnavailable:
            return None
        if status != 200 or not isinstance(info, dict):
            return None
        metadata = info.get("metadata") or {}
        if metadata.get(_META_TASK) != task_id:
            return None
        try:
            devices = int(metadata.get(_META_DEVICES, "0"))
        except ValueError:
            devices = 0
        try:
            max_run_s: float | None = float(metadata.get(_META_MAX_RUN) or "")
        except ValueError:
            max_run_s = None
        task_dir = Path(metadata.get(_META_DIR) or ".")
        self._runs[ref] = _Run(
            task_id=task_id, task_dir=task_dir, devices=devices, max_run_s=max_run_s
        )
        return Handle(task_id=task_id, backend=self.name, ref=ref)

    # -- helpers -----------------------------------------------------------------------------

    def _final(self, ref: str, run: _Run, info: Mapping[str, object]) -> Status:
        """The terminal status of a finished job, from its info and the runner's records."""
        logs: list[ExecutorLog] = []
        end: dict[str, object] | None = None
        cpu_s = 0.0
        try:
            log_status, answer = self._request("GET", f"/api/jobs/{_quote(ref)}/logs")
        except RayUnavailable:
            log_status, answer = 0, None
        text = answer.get("logs", "") if log_status == 200 and isinstance(answer, dict) else ""
        for line in str(text).splitlines():
            if not line.startswith(RESULT_PREFIX):
                continue
            try:
                record = json.loads(line[len(RESULT_PREFIX) :])
            except ValueError:
                continue
            if record.get("kind") == "executor":
                cpu_s += float(record.get("cpu_s") or 0.0)
                if record.get("rank") not in (None, 0):  # a gang: rank 0's executors only
                    continue
                logs.append(
                    ExecutorLog(
                        exit_code=record.get("exit_code"),
                        stdout_tail=str(record.get("stdout_tail", "")),
                        stderr_tail=str(record.get("stderr_tail", "")),
                        wall_s=float(record.get("wall_s") or 0.0),
                        started_at=record.get("started_at"),
                        ended_at=record.get("ended_at"),
                    )
                )
            elif record.get("kind") == "end":
                end = record
        start_ms, end_ms = info.get("start_time"), info.get("end_time")
        wall_s = (
            max(0.0, (end_ms - start_ms) / 1000)
            if isinstance(start_ms, int | float) and isinstance(end_ms, int | float)
            else 0.0
        )
        usage = Usage(wall_s=wall_s, cpu_s=cpu_s, device_s=wall_s * run.devices)
        ray_state = info.get("status")
        message = str(info.get("message") or "")
        if run.preempted and (
            ray_state == "STOPPED" or end is None or end.get("state") == "CANCELED"
        ):
            state, exit_code, reason = TaskState.PREEMPTED, None, PREEMPT_REASON
        elif run.timed_out and ray_state == "STOPPED":
            assert run.max_run_s is not None
            state, exit_code, reason = TaskState.EXECUTOR_ERROR, None, max_run_reason(run.max_run_s)
        elif ray_state == "STOPPED":
            state, exit_code, reason = TaskState.CANCELED, None, "canceled"
        elif end is not None and end.get("state") in (
            TaskState.COMPLETE.value,
            TaskState.EXECUTOR_ERROR.value,
            TaskState.SYSTEM_ERROR.value,  # a gang that could not be placed, a lost rank
        ):
            state = TaskState(str(end["state"]))
            code = end.get("exit_code")
            exit_code = code if isinstance(code, int) else None
            reason = str(end.get("reason", ""))
        elif ray_state == "SUCCEEDED":
            state, exit_code, reason = TaskState.COMPLETE, 0, ""
        else:
            state, exit_code, reason = TaskState.SYSTEM_ERROR, None, f"Ray job failed: {message}"
        if end is not None:
            stdout_tail = str(end.get("stdout_tail", ""))
            stderr_tail = str(end.get("stderr_tail", ""))
        else:  # the runner was stopped or died before its last word: read what is here
            stdout_tail = read_tail(run.task_dir / STDOUT_FILE, self.tail_bytes)
            stderr_tail = read_tail(run.task_dir / STDERR_FILE, self.tail_bytes)
        return Status(
            state=state,
            exit_code=exit_code,
            stdout_tail=stdout_tail,
            stderr_tail=stderr_tail,
            usage=usage,
            reason=reason,
            executors=tuple(logs),
        )

    def _system_error(self, run: _Run, reason: str) -> Status:
        return Status(
            state=TaskState.SYSTEM_ERROR,
            exit_code=None,
            stdout_tail=read_tail(run.task_dir / STDOUT_FILE, self.tail_bytes),
            stderr_tail=read_tail(run.task_dir / STDERR_FILE, self.tail_bytes),
            usage=Usage(wall_s=0.0, cpu_s=0.0, device_s=0.0),
            reason=reason,
        )

    def _request(
        self, method: str, path: str, body: Mapping[str, object] | None = None
    ) -> tuple[int, object]:
        """One HTTP exchange with the dashboard: (status, parsed JSON or text). Raises
        `RayUnavailable` when nothing answers (after starting a local head, once, if this
        backend's address is "local")."""
        try:
            return self._http(method, path, body)
        except RayUnavailable:
            if self.address != "local" or self._checked:
                raise
            self._checked = True
            self._start_local_head()
            return self._http(method, path, body)

    def _http(
        self, method: str, path: str, body: Mapping[str, object] | None = None
    ) -> tuple[int, object]:
        headers = {"Content-Type": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        except (urllib.error.URLError, OSError) as exc:
            raise RayUnavailable(f"Ray dashboard at {self.url} did not answer: {exc}") from exc
        self._checked = True
        if status in (401, 403):
            raise RayUnavailable(f"Ray dashboard at {self.url} refused our token: HTTP {status}")
        text = raw.decode("utf-8", errors="replace")
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text

    def _start_local_head(self) -> None:
        """`ray start --head` on 127.0.0.1 with the dashboard, from this Python's `ray` CLI."""
        cli = Path(sys.executable).with_name("ray")
        ray = str(cli) if cli.exists() else shutil.which("ray")
        if ray is None:
            raise RayUnavailable("no Ray dashboard answers and no 'ray' command to start one")
        cpus = self.local_num_cpus or os.cpu_count() or 1
        argv = [
            ray,
            "start",
            "--head",
            f"--num-cpus={cpus}",
            "--node-ip-address=127.0.0.1",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            "--disable-usage-stats",
        ]
        try:
            subprocess.run(argv, capture_output=True, timeout=120, check=True)
        except (OSError, subprocess.SubprocessError) as exc:
            raise RayUnavailable(f"cannot start a local Ray head: {exc}") from exc
        self._token = self._token or _default_token()
        deadline = time.monotonic() + 30
        while True:
            try:
                self._http("GET", "/api/version")
                return
            except RayUnavailable:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)


@dataclass(frozen=True)
class _NodeFigures:
    node: NodeCapacity
    gpus: int
    free_gpus: int
    memory_b: int


def _node_figures(node: Mapping[str, object], usage: Mapping[str, Sequence[float]]) -> _NodeFigures:
    """One alive node of Ray's node table, with its usage from the load report."""

    def used(key: str) -> float:
        pair = usage.get(key)
        return float(pair[0]) if pair else 0.0

    raw = node.get("resources_total")
    resources: Mapping[str, float] = raw if isinstance(raw, Mapping) else {}
    cpus, gpus = int(resources.get("CPU", 0)), int(resources.get("GPU", 0))
    free_gpus = max(0, int(gpus - used("GPU")))
    models = sorted(k[len(ACCELERATOR_TYPE) :] for k in resources if k.startswith(ACCELERATOR_TYPE))
    model = models[0] if models and gpus else None  # Ray declares one model per node
    return _NodeFigures(
        node=NodeCapacity(
            name=str(node.get("node_id", "")),
            cpus=cpus,
            free_cpus=max(0, int(cpus - used("CPU"))),
            gpus_by_model={model: gpus} if model else {},
            free_gpus_by_model={model: free_gpus} if model else {},
        ),
        gpus=gpus,
        free_gpus=free_gpus,
        memory_b=int(resources.get("memory", 0)),
    )


def _quote(ref: str) -> str:
    return urllib.parse.quote(ref, safe="")
