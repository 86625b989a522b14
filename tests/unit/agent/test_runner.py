"""The agent against a real, minimal HTTP server that speaks the agent protocol from memory.

`FakeServer` is the protocol in a few dozen lines: it registers agents, leases queued tasks,
answers heartbeats with the cancellations a test asked for, and records every report. Tests
script it (reject the token, answer 409 or 503) and watch what the agent does, with intervals
short enough that each test takes about a second.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from suanli.agent import Agent, AgentRejected, run_agent
from suanli.agent.backends.local import LocalBackend
from suanli.agent.energy import AscendMeter, NvmlMeter
from tests import waiting
from tests.processes import pids_of
from tests.unit.agent.test_energy import DATA, RecordedNvml
from tests.unit.agent.test_local_backend import unique_sleep

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX process groups")

TOKEN = "secret-token"
PRINT_HI = [
    os.path.realpath(sys.executable),
    "-c",
    "print('hi')",
]  # not the venv link: /tmp is private
SLEEP_30 = ["sleep", "30"]


@dataclass
class ServerState:
    """In-memory protocol state, guarded by `lock`; tests read it through `wait_until`."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    queue: list[dict[str, Any]] = field(default_factory=list)
    agents: dict[str, dict[str, Any]] = field(default_factory=dict)
    leased: dict[str, str] = field(default_factory=dict)  # task id -> agent id
    cancel: set[str] = field(default_factory=set)
    conflict: set[str] = field(default_factory=set)  # task ids whose reports get 409
    conflict_gate: threading.Event = field(default_factory=threading.Event)  # ... once set
    unavailable: int = 0  # answer this many requests with 503 first
    reports: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    batches: list[list[tuple[str, str]]] = field(default_factory=list)  # (task, state) each
    batch_route: bool = True  # False: a server from before batched reports (404)
    heartbeats: list[list[str]] = field(default_factory=list)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (last path part, body)
    task_added: threading.Event = field(default_factory=threading.Event)  # wakes held leases
    lease_s: float = 30.0
    heartbeat_s: float = 0.1

    def take_report(self, task_id: str, body: dict[str, Any]) -> int:
        """Record one report (held under `lock`); its status, as the server's."""
        if task_id in self.conflict or self.leased.get(task_id) != body["agent_id"]:
            return 409
        self.reports.append((task_id, body))
        return 200

    def states(self, task_id: str) -> list[str]:
        with self.lock:
            return [body["state"] for tid, body in self.reports if tid == task_id]

    def report(self, task_id: str, state: str) -> dict[str, Any]:
        with self.lock:
            return next(b for t, b in self.reports if t == task_id and b["state"] == state)


class Handler(BaseHTTPRequestHandler):
    server: FakeServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        state = self.server.state
        with state.lock:
            gated = any(task_id in state.conflict for task_id in _reported_tasks(self.path, body))
        if gated:
            state.conflict_gate.wait(timeout=5)
        with state.lock:
            state.calls.append((self.path.rsplit("/", 1)[-1], body))
            empty = not state.queue
            state.task_added.clear()
        if self.path.endswith("/lease") and body.get("wait_s") and empty:  # held, as the server
            state.task_added.wait(timeout=min(float(body["wait_s"]), 5.0))
        with state.lock:
            code, answer = self.route(state, self.path.strip("/").split("/"), body)
        data = json.dumps(answer).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def route(
        self, state: ServerState, parts: list[str], body: dict[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            error = {"code": "unauthorized", "message": "invalid token", "message_zh": "令牌无效"}
            return 401, {"error": error}  # suanli's error body; the others use {"detail": ...}
        if state.unavailable > 0:
            state.unavailable -= 1
            return 503, {"detail": "try later"}
        match parts:
            case ["v1", "agents"]:
                agent_id = f"a-{len(state.agents) + 1}"
                state.agents[agent_id] = body
                return 201, {
                    "id": agent_id,
                    "lease_s": state.lease_s,
                    "heartbeat_s": state.heartbeat_s,
                }
            case ["v1", "agents", agent_id, "heartbeat"]:
                state.heartbeats.append(list(body["running"]))
                cancel = sorted(state.cancel & set(body["running"]))
                return 200, {"cancel": cancel}
            case ["v1", "agents", agent_id, "lease"]:
                tasks, state.queue = state.queue[: body["max"]], state.queue[body["max"] :]
                for task in tasks:
                    state.leased[task["id"]] = agent_id
                return 200, {"tasks": tasks}
            case ["v1", "tasks", task_id, "report"]:
                return state.take_report(task_id, body), {}
            case ["v1", "agents", agent_id, "reports"] if state.batch_route:
                results = []
                for item in body["reports"]:
                    report = {k: v for k, v in item.items() if k != "task_id"}
                    status = state.take_report(item["task_id"], {"agent_id": agent_id, **report})
                    results.append({"task_id": item["task_id"], "status": status})
                state.batches.append([(item["task_id"], item["state"]) for item in body["reports"]])
                return 200, {"results": results}
        return 404, {"detail": "no such route"}


def _reported_tasks(path: str, body: dict[str, Any]) -> list[str]:
    """The tasks a request reports on (one, or a batch's)."""
    parts = path.strip("/").split("/")
    if parts[-1] == "report":
        return [parts[-2]]
    if parts[-1] == "reports":
        return [item["task_id"] for item in body.get("reports", [])]
    return []


class FakeServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.state = ServerState()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def add_task(self, task_id: str, command: list[str], devices: int = 1) -> None:
        task = {
            "id": task_id,
            "executors": [{"command": command, "env": {}, "workdir": None}],
            "devices": devices,
            "lease_expires_at": "2030-01-01T00:00:00Z",
        }
        with self.state.lock:
            self.state.queue.append(task)
        self.state.task_added.set()


@pytest.fixture
def server() -> Iterator[FakeServer]:
    server = FakeServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@dataclass
class RunningAgent:
    agent: Agent
    stop: threading.Event
    thread: threading.Thread
    lines: list[str]
    errors: list[BaseException]

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(timeout=15)
        assert not self.thread.is_alive()
        assert self.errors == []


@pytest.fixture
def start_agent(server: FakeServer, tmp_path: Path) -> Iterator[Callable[..., RunningAgent]]:
    started: list[RunningAgent] = []

    def start(**options: Any) -> RunningAgent:
        lines: list[str] = []
        errors: list[BaseException] = []
        options.setdefault("slots", 2)
        agent = Agent(
            server.url,
            TOKEN,
            "site-1",
            options.pop("backend", None) or LocalBackend(grace_s=0.5),
            name="test-agent",
            work_root=options.pop("work_root", tmp_path / "work"),
            poll_s=0.02,
            backoff_s=(0.05, 0.2),
            log=lines.append,
            **options,
        )
        stop = threading.Event()

        def target() -> None:
            try:
                agent.run(stop)
            except BaseException as error:
                errors.append(error)

        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        running = RunningAgent(agent, stop, thread, lines, errors)
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop.set()
        running.thread.join(timeout=15)


def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    waiting.wait_until(condition, "the agent to get there", timeout_s, every_s=0.01)


def test_an_idle_agent_long_polls_and_leases_again_right_after_a_report(
    server: FakeServer, start_agent: Callable[..., RunningAgent]
) -> None:
    server.state.heartbeat_s = 30.0  # so the idle wait is the agent's own bound, IDLE_WAIT_S
    running = start_agent()

    def held() -> list[float]:
        with server.state.lock:
            return [
                b["wait_s"] for name, b in server.state.calls if name == "lease" and "wait_s" in b
            ]

    wait_until(lambda: bool(held()))  # after registering, an idle agent waits for work
    assert held()[0] == pytest.approx(5.0, abs=0.5)  # up to its own bound (IDLE_WAIT_S)
    server.add_task("t-1", PRINT_HI)  # wakes the held request
    wait_until(lambda: "COMPLETE" in server.state.states("t-1"))
    wait_until(lambda: server.state.calls[-1][0] == "lease")
    running.stop.set()
    server.state.task_added.set()  # answer the held request now: the agent stops after it
    running.finish()
    with server.state.lock:
        calls = list(server.state.calls)
    done = next(
        i
        for i, (name, body) in enumerate(calls)
        if name == "reports" and any(r["state"] == "COMPLETE" for r in body["reports"])
    )
    after = [name for name, _ in calls[done + 1 :] if name != "heartbeat"]
    assert after[:1] == ["lease"]  # the freed slot asks for work at once
    assert all(b.get("wait_s", 0) <= 5.0 for name, b in calls if name == "lease")


def test_an_agent_registers_runs_a_task_and_reports_it_complete(
    server: FakeServer, start_agent: Callable[..., RunningAgent]
) -> None:
    server.add_task("t-1", PRINT_HI, devices=2)
    running = start_agent()
    wait_until(lambda: "COMPLETE" in server.state.states("t-1"))
    running.finish()

    assert server.state.agents["a-1"] == {
        "site_id": "site-1",
        "name": "test-agent",
        "slots": 2,
        "backend": "local",
    }
    assert server.state.states("t-1") == ["RUNNING", "COMPLETE"]
    assert server.state.report("t-1", "RUNNING") == {"agent_id": "a-1", "state": "RUNNING"}
    done = server.state.report("t-1", "COMPLETE")
    assert done["agent_id"] == "a-1"
    assert done["exit_code"] == 0
    assert "hi" in done["stdout_tail"]
    assert done["usage"]["wall_s"] > 0
    assert done["usage"]["device_s"] == pytest.approx(2 * done["usage"]["wall_s"])
    assert set(done) == {
        "agent_id",
        "state",
        "exit_code",
        "stdout_tail",
        "stderr_tail",
        "usage",
        "reason",
        "executors",
        "outputs",
    }
    assert [e["exit_code"] for e in done["executors"]] == [0]
    assert "hi" in done["executors"][0]["stdout_tail"]
    assert "agent a-1: task t-1 RUNNING" in running.lines
    assert any(line.startswith("agent a-1: task t-1 COMPLETE") for line in running.lines)


def test_a_heartbeat_asking_to_cancel_makes_the_agent_cancel_and_report_canceled(
    server: FakeServer, start_agent: Callable[..., RunningAgent]
) -> None:
    server.add_task("t-long", SLEEP_30)
    running = start_agent()
    wait_until(lambda: "RUNNING" in server.state.states("t-long"))
    wait_until(lambda: any("t-long" in beat for beat in server.state.heartbeats))
    began = time.monotonic()
    with server.state.lock:
        server.state.cancel.add("t-long")
    wait_until(lambda: "CANCELED" in server.state.states("t-long"), timeout_s=5)
    assert time.monotonic() - began < 3
    canceled = server.state.report("t-long", "CANCELED")
    assert canceled["reason"] == "canceled by the server"
    assert canceled["usage"]["wall_s"] > 0
    running.finish()
    assert server.state.states("t-long") == ["RUNNING", "CANCELED"]


def test_a_409_answer_makes_the_agent_drop_the_task(
    server: FakeServer, start_agent: Callable[..., RunningAgent], tmp_path: Path
) -> None:
    marker = unique_sleep()  # the task's pids are private to its namespace: find it by argv
    with server.state.lock:
        server.state.conflict.add("t-lost")
    server.add_task("t-lost", ["sh", "-c", f"exec sleep {marker}"])
    running = start_agent()
    wait_until(lambda: pids_of(marker, word=True) != [])
    server.state.conflict_gate.set()  # the 409 comes only once the task surely runs
    wait_until(lambda: any("dropped" in line for line in running.lines))
    wait_until(lambda: running.agent.free_slots() == 2, timeout_s=5)  # drained on the backend
    beats = len(server.state.heartbeats)
    wait_until(lambda: len(server.state.heartbeats) >= beats + 2)
    with server.state.lock:
        assert server.state.heartbeats[-1] == []
    running.finish()
    assert server.state.states("t-lost") == []  # the 409 was the only answer; nothing recorded
    assert pids_of(marker) == []


def test_tasks_that_end_together_go_out_in_one_request_even_after_the_server_was_down(
    server: FakeServer, start_agent: Callable[..., RunningAgent]
) -> None:
    ids = [f"t-{n}" for n in range(6)]
    for task_id in ids:
        server.add_task(task_id, ["sleep", "1"])
    running = start_agent(slots=len(ids))
    wait_until(lambda: all(server.state.states(t) == ["RUNNING"] for t in ids))
    with server.state.lock:
        server.state.unavailable = 10**9  # down: every request is answered 503
    for task_id in ids:  # each ends while the server is down; its report waits in the outbox
        wait_until(lambda t=task_id: any(f"task {t} COMPLETE" in line for line in running.lines))
    assert all(server.state.states(t) == ["RUNNING"] for t in ids)
    with server.state.lock:
        server.state.unavailable = 0  # back
    wait_until(lambda: all(server.state.states(t) == ["RUNNING", "COMPLETE"] for t in ids))
    running.finish()
    with server.state.lock:
        batches = list(server.state.batches)
        singles = [name for name, _ in server.state.calls if name == "report"]
    ended = [b for b in batches if any(state == "COMPLETE" for _, state in b)]
    assert len(ended) == 1  # the six reports kept while it was down, then one request
    assert sorted(ended[0]) == [(t, "COMPLETE") for t in ids]
    assert singles == []


def test_a_server_without_the_batch_route_gets_the_reports_one_at_a_time(
    server: FakeServer, start_agent: Callable[..., RunningAgent]
) -> None:
    server.state.batch_route = False
    server.add_task("t-1", PRINT_HI)
    running = start_agent()
    wait_until(lambda: "COMPLETE" in server.state.states("t-1"))
    running.finish()
    assert server.state.states("t-1") == ["RUNNING", "COMPLETE"]
    with server.state.lock:
        names = [name for name, _ in server.state.calls]
    assert names.count("report") == 2 and server.state.batches == []


def test_stopping_the_agent_cancels_running_tasks_with_reason_agent_stopped(
    server: FakeServer, start_agent: Callable[..., RunningAgent]
) -> None:
    server.add_task("t-long", SLEEP_30)
    running = start_agent()
    wait_until(lambda: "RUNNING" in server.state.states("t-long"))
    running.finish()
    assert server.state.states("t-long") == ["RUNNING", "CANCELED"]
    assert server.state.report("t-long", "CANCELED")["reason"] == "agent stopped"
    assert running.lines[-1] == "agent a-1: stopped"


def test_transient_server_errors_are_retried(
    server: FakeServer, start_agent: Callable[..., RunningAgent]
) -> None:
    with server.state.lock:
        server.state.unavailable = 3  # registration fails three times
    server.add_task("t-1", PRINT_HI)
    running = start_agent()
    wait_until(lambda: "COMPLETE" in server.state.states("t-1"))
    running.finish()
    assert sum("HTTP 503" in line and "retrying" in line for line in running.lines) == 3


def test_the_default_work_root_is_under_suanli_home_where_a_task_can_enter_its_directory(
    server: FakeServer,
    start_agent: Callable[..., RunningAgent],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    home = Path(tempfile.mkdtemp(prefix="suanli-home-", dir="/var/tmp"))  # outside /tmp
    monkeypatch.setenv("SUANLI_HOME", str(home))
    try:
        # the task changes into its own directory by path, as Toil's worker does
        server.add_task("t-1", ["sh", "-c", 'cd "$(pwd)" && pwd'])
        running = start_agent(work_root=None)
        assert home / "agents" in running.agent.work_root.parents
        wait_until(lambda: "COMPLETE" in server.state.states("t-1"))
        running.finish()
        assert not any("under /tmp" in line for line in running.lines)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_a_work_root_under_tmp_is_warned_about(
    start_agent: Callable[..., RunningAgent], tmp_path: Path
) -> None:
    running = start_agent(work_root=Path("/tmp") / tmp_path.name)
    running.finish()
    warned = [line for line in running.lines if "under /tmp" in line]
    assert warned and "--work-root outside /tmp" in warned[0]


def test_an_unreachable_server_is_retried_until_stopped(tmp_path: Path) -> None:
    lines: list[str] = []
    agent = Agent(
        "http://127.0.0.1:9",  # discard port: connection refused
        TOKEN,
        "site-1",
        poll_s=0.02,
        backoff_s=(0.05, 0.1),
        work_root=tmp_path,
        log=lines.append,
    )
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    agent.run(stop)
    assert sum("retrying" in line for line in lines) >= 3
    assert lines[-1].endswith("stopped")


def test_a_401_on_registration_ends_run_agent_with_a_clear_error(
    server: FakeServer, tmp_path: Path
) -> None:
    with pytest.raises(AgentRejected) as caught:
        run_agent(server.url, "wrong-token", "site-1", work_root=tmp_path, poll_s=0.02)
    error = caught.value
    assert error.status_code == 401
    assert "\n" not in error.one_line()
    assert "HTTP 401" in error.message_en and "invalid token" in error.message_en
    assert "令牌" in error.message_zh


def add_gpu_task(server: FakeServer, task_id: str, devices: int) -> None:
    task = {
        "id": task_id,
        "executors": [{"command": PRINT_HI, "env": {}, "workdir": None}],
        "devices": devices,
        "device_kind": "gpu",
        "lease_expires_at": "2030-01-01T00:00:00Z",
    }
    with server.state.lock:
        server.state.queue.append(task)
    server.state.task_added.set()


def test_the_agent_reports_the_measured_energy_of_the_devices_it_bound(
    server: FakeServer, start_agent: Callable[..., RunningAgent], tmp_path: Path
) -> None:
    # GPU 1's counter (mJ) at open, at start, at the end: 7.2 kJ = 0.002 kWh; GPU 0 is not bound
    nvml = RecordedNvml(energy_mj=[[], [10_000, 10_000, 7_210_000]], util_pct=[[], [0, 75]])
    backend = LocalBackend(grace_s=0.5, accelerators={"gpu": ["1"]})
    add_gpu_task(server, "t-gpu", devices=1)
    running = start_agent(backend=backend, meters={"gpu": NvmlMeter(nvml)})
    wait_until(lambda: "COMPLETE" in server.state.states("t-gpu"))
    running.finish()
    usage = server.state.report("t-gpu", "COMPLETE")["usage"]
    assert usage["energy_kwh"] == pytest.approx(0.002)
    assert usage["utilisation"] == pytest.approx(0.75)
    assert nvml.calls[-1] == "shutdown"


def test_without_a_measurement_the_usage_carries_no_energy(
    server: FakeServer, start_agent: Callable[..., RunningAgent]
) -> None:
    backend = LocalBackend(grace_s=0.5, accelerators={"gpu": ["0"]})
    add_gpu_task(server, "t-gpu", devices=1)
    add_gpu_task(server, "t-gone", devices=1)
    meters = {"gpu": NvmlMeter(RecordedNvml(init_fails=True))}
    running = start_agent(backend=backend, meters=meters, slots=1)
    wait_until(lambda: "COMPLETE" in server.state.states("t-gone"))
    running.finish()
    for task_id in ("t-gpu", "t-gone"):
        usage = server.state.report(task_id, "COMPLETE")["usage"]
        assert set(usage) == {"wall_s", "cpu_s", "device_s"}


def test_a_meter_that_cannot_find_a_bound_device_never_fails_the_task(
    server: FakeServer, start_agent: Callable[..., RunningAgent]
) -> None:
    backend = LocalBackend(grace_s=0.5, accelerators={"gpu": ["3"]})  # NVML has one GPU
    add_gpu_task(server, "t-gpu", devices=1)
    meters = {"gpu": NvmlMeter(RecordedNvml(energy_mj=[[0]], util_pct=[[0]]))}
    running = start_agent(backend=backend, meters=meters)
    wait_until(lambda: "COMPLETE" in server.state.states("t-gpu"))
    running.finish()
    assert "energy_kwh" not in server.state.report("t-gpu", "COMPLETE")["usage"]
    assert any("t-gpu: energy not measured: invalid devices='3'" in line for line in running.lines)


def test_a_sampled_source_is_read_while_the_task_runs_and_integrated(
    server: FakeServer, start_agent: Callable[..., RunningAgent]
) -> None:
    # npu-smi says NPU 1 draws 312.5 W at 87 % AICore, whenever asked
    text = (DATA / "npu_smi_910b.txt").read_text()
    asked: list[float] = []

    def npu_smi(argv: Sequence[str]) -> str:
        asked.append(time.monotonic())
        return text

    with server.state.lock:
        server.state.queue.append(
            {
                "id": "t-npu",
                "executors": [{"command": ["sleep", "0.6"], "env": {}, "workdir": None}],
                "devices": 1,
                "device_kind": "npu",
                "lease_expires_at": "2030-01-01T00:00:00Z",
            }
        )
    server.state.task_added.set()
    backend = LocalBackend(grace_s=0.5, accelerators={"npu": ["1"]})
    meters = {"npu": AscendMeter(run=npu_smi)}
    running = start_agent(backend=backend, meters=meters, sample_every_s=0.1)
    wait_until(lambda: "COMPLETE" in server.state.states("t-npu"))
    running.finish()
    usage = server.state.report("t-npu", "COMPLETE")["usage"]
    assert len(asked) >= 4  # at open and start, a few times while it ran, at the end
    metered_s = asked[-1] - asked[0]
    assert usage["energy_kwh"] == pytest.approx(312.5 * metered_s / 3_600_000, rel=0.05)
    assert usage["utilisation"] == pytest.approx(0.87)
