"""The digital-twin worker: a process that runs the replays the console queues in `twin_runs`.

`suanli twin-worker` polls the store; each turn it first fails the runs whose worker went
silent (`twinruns.reap`: no heartbeat for `stale_s`), then claims the oldest queued run
(`twinruns.claim_next`, atomic across workers), replays it with `suanli.sim` (the trace's
first `limit` jobs on the national network, once per policy: `traces.load_trace` and `shape`,
`twin.national_network`, `twin.run`, `report.document`) and writes progress, partial results
and its heartbeat every `heartbeat_s` from a side thread, then the result (`finish`) or the
error (`fail`). A run taken from it meanwhile (reaped as stale) makes it drop the replay.

A worker asked to stop (SIGTERM) hands its run back to the queue (`release`) at the next
progress step; one that dies (SIGKILL, out of memory) leaves it RUNNING until a worker reaps it.

`suanli serve` starts `--twin-workers N` of these (default 1) as child processes, restarts
one that exits, and stops them when it stops; a worker started by a server also exits when
that server has gone (`--parent-pid`). Heavy CPU work thus never runs in a web process.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import typer

from suanli.sim.timeline import thin

if TYPE_CHECKING:  # the services (and SQLAlchemy) load only when a worker runs
    from suanli.services.twinruns import TwinRun

TIMELINE_POINTS = 200
POLL_S = 1.0
HEARTBEAT_S = 2.0
STALE_S = 30.0
RESTART_PAUSE_S = 1.0


class Abandoned(Exception):
    """The run is no longer this worker's (reaped as stale): stop replaying it."""


class Stopping(Exception):
    """The worker was asked to stop (SIGTERM): hand the run back to the queue."""


def _thin(timeline: list[dict[str, float]]) -> list[list[float]]:
    """At most TIMELINE_POINTS [hours, busy devices] points (the last one kept)."""
    return [[round(p["t"] / 3600, 4), p["busy_devices"]] for p in thin(timeline, TIMELINE_POINTS)]


class Progress:
    """What the replay has done so far, shared by the replaying thread and the heartbeat."""

    def __init__(self, stop: threading.Event | None = None) -> None:
        self.lock = threading.Lock()
        self.found: dict[str, Any] = {}
        self.fraction = 0.0
        self.abandoned = False
        self.stop = stop or threading.Event()

    def update(self, fraction: float | None = None, **found: Any) -> None:
        with self.lock:
            if self.abandoned:
                raise Abandoned
            if self.stop.is_set():
                raise Stopping
            if fraction is not None:
                self.fraction = fraction
            self.found.update(found)

    def snapshot(self) -> tuple[float, dict[str, Any]]:
        with self.lock:
            return self.fraction, dict(self.found)


def replay(run: TwinRun, progress: Progress) -> dict[str, Any]:
    """Replay `run` with suanli.sim; what it found (jobs, dropped, note, step, results)."""
    from suanli.sim import report
    from suanli.sim.traces import load_trace, shape
    from suanli.sim.twin import national_network
    from suanli.sim.twin import run as replay_policy

    asked = run.request
    trace = shape(load_trace(asked.trace), limit=asked.limit, seed=asked.seed)
    network = national_network(asked.scale)
    jobs = len(trace.jobs)
    policies = list(asked.policies)
    total = max(1, jobs * len(policies))
    step: dict[str, Any] = {
        "policies_done": 0,
        "policies_total": len(policies),
        "current": policies[0],
        "jobs_done": 0,
        "jobs_total": jobs * len(policies),
    }
    progress.update(0.0, jobs=jobs, dropped=trace.dropped, note=trace.note, step=dict(step))
    results: dict[str, Any] = {}
    for n, name in enumerate(policies):

        def advance(done: int, _total: int, n: int = n) -> None:
            step["jobs_done"] = n * jobs + done
            progress.update(step["jobs_done"] / total, step=dict(step))

        result = replay_policy(trace, network, name, progress=advance)
        results[name] = {
            "metrics": report.document([result])["policies"][name],
            "timeline": _thin(result.timeline),
        }
        step.update(
            policies_done=n + 1,
            jobs_done=(n + 1) * jobs,
            current=policies[n + 1] if n + 1 < len(policies) else None,
        )
        progress.update(step["jobs_done"] / total, step=dict(step), results=dict(results))
    return progress.snapshot()[1]


class Worker:
    """One worker process's loop over the store."""

    def __init__(
        self,
        unit_of_work: Callable[[], Any],
        name: str,
        poll_s: float = POLL_S,
        heartbeat_s: float = HEARTBEAT_S,
        stale_s: float = STALE_S,
        parent_pid: int | None = None,
    ) -> None:
        self.unit_of_work = unit_of_work  # () -> a context manager yielding a Session
        self.name = name
        self.poll_s = poll_s
        self.heartbeat_s = heartbeat_s
        self.stale_s = stale_s
        self.parent_pid = parent_pid
        self.stopping = threading.Event()

    def orphaned(self) -> bool:
        return self.parent_pid is not None and os.getppid() != self.parent_pid

    def turn(self) -> TwinRun | None:
        """Reap silent runs, then claim and run the next queued one; the run, or None."""
        from suanli.services import twinruns

        with self.unit_of_work() as session:
            twinruns.reap(session, self.stale_s, self.name)
        with self.unit_of_work() as session:
            run = twinruns.claim_next(session, self.name)
        if run is not None:
            self.run(run)
        return run

    def run(self, run: TwinRun) -> None:
        from suanli.services import twinruns

        progress = Progress(self.stopping)
        done = threading.Event()
        beating = threading.Thread(
            target=self._heartbeat, args=(run.id, progress, done), name="twin-heartbeat"
        )
        beating.start()
        started = time.perf_counter()
        try:
            found = replay(run, progress)
        except Abandoned:
            return
        except Stopping:
            with self.unit_of_work() as session:
                twinruns.release(session, run.id, self.name)
            return
        except Exception as exc:  # a run's failure is shown on its page, the worker goes on
            from suanli.errors import SuanliError

            en, zh = (
                (exc.message_en, exc.message_zh)
                if isinstance(exc, SuanliError)
                else (repr(exc), repr(exc))
            )
            with self.unit_of_work() as session:
                twinruns.fail(session, run.id, self.name, en, zh, {"wall_s": self._since(started)})
            return
        finally:
            done.set()
            beating.join()
        with self.unit_of_work() as session:
            twinruns.finish(session, run.id, self.name, {**found, "wall_s": self._since(started)})

    @staticmethod
    def _since(started: float) -> float:
        return round(time.perf_counter() - started, 3)

    def _heartbeat(self, run_id: str, progress: Progress, done: threading.Event) -> None:
        """Every heartbeat_s: write progress and partial results (the run's heartbeat); mark
        the replay abandoned when the run was taken from this worker."""
        from suanli.services import twinruns

        while not done.wait(self.heartbeat_s):
            fraction, found = progress.snapshot()
            try:
                with self.unit_of_work() as session:
                    still = twinruns.report_progress(session, run_id, self.name, fraction, found)
            except Exception as exc:  # the store is briefly away: try again next beat
                print(f"twin worker {self.name}: heartbeat failed: {exc!r}", file=sys.stderr)
                continue
            if not still:
                with progress.lock:
                    progress.abandoned = True
                return

    def loop(self, once: bool = False) -> None:
        """Run until stopped (SIGTERM), orphaned, or — with `once` — the queue is empty."""
        while not self.stopping.is_set() and not self.orphaned():
            try:
                ran = self.turn()
            except Exception as exc:  # the store is briefly away: try again after a pause
                print(f"twin worker {self.name}: {exc!r}", file=sys.stderr)
                ran = None
            if ran is None:
                if once:
                    return
                self.stopping.wait(self.poll_s)


def default_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class TwinWorkers:
    """`count` `suanli twin-worker` child processes for a server's lifetime: `start` them once
    the schema is migrated; one that exits is started again; `stop` ends them (SIGTERM, then
    SIGKILL after 10 s)."""

    def __init__(self, count: int, db: str | None, home: str | None) -> None:
        self.count = count
        self.command = [
            sys.executable,
            "-m",
            "suanli",
            "twin-worker",
            "--parent-pid",
            str(os.getpid()),
        ]
        if db:
            self.command += ["--db", db]
        if home:
            self.command += ["--home", home]
        self.children: list[subprocess.Popen[bytes]] = []
        self.stopping = threading.Event()
        self.watcher: threading.Thread | None = None

    def start(self) -> None:
        if self.count <= 0 or self.watcher is not None:
            return
        self.children = [subprocess.Popen(self.command) for _ in range(self.count)]
        self.watcher = threading.Thread(target=self._keep_alive, name="twin-workers", daemon=True)
        self.watcher.start()

    def _keep_alive(self) -> None:
        while not self.stopping.wait(RESTART_PAUSE_S):
            for n, child in enumerate(self.children):
                if child.poll() is not None and not self.stopping.is_set():
                    print(
                        f"twin worker {child.pid} exited ({child.returncode}); starting another",
                        file=sys.stderr,
                    )
                    self.children[n] = subprocess.Popen(self.command)

    def stop(self) -> None:
        self.stopping.set()
        if self.watcher is not None:
            self.watcher.join()
        for child in self.children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in self.children:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def register(app: typer.Typer, handles_errors: Callable[[Any], Any]) -> None:
    """Add `suanli twin-worker` to the main Typer app."""

    @app.command("twin-worker")
    @handles_errors
    def twin_worker(
        db: Annotated[str | None, typer.Option(help="Database URL (SQLite or PostgreSQL)")] = None,
        home: Annotated[str | None, typer.Option(help="Data directory / 数据目录")] = None,
        name: Annotated[
            str | None, typer.Option(help="Worker name (default host:pid) / 工作进程名称")
        ] = None,
        poll_s: Annotated[
            float, typer.Option(envvar="SUANLI_TWIN_POLL_S", help="Seconds between polls / 轮询")
        ] = POLL_S,
        heartbeat_s: Annotated[
            float,
            typer.Option(envvar="SUANLI_TWIN_HEARTBEAT_S", help="Progress/heartbeat every / 心跳"),
        ] = HEARTBEAT_S,
        stale_s: Annotated[
            float,
            typer.Option(
                envvar="SUANLI_TWIN_STALE_S",
                help="Fail a run silent this long / 无心跳多久判定失败",
            ),
        ] = STALE_S,
        once: Annotated[
            bool, typer.Option(help="Exit when the queue is empty / 队列空时退出")
        ] = False,
        parent_pid: Annotated[int | None, typer.Option(hidden=True)] = None,
    ) -> None:
        """Run queued digital-twin replays (started by `suanli serve`). 运行排队的数字孪生回放。"""
        from suanli.config import load_settings
        from suanli.errors import InvalidValue
        from suanli.store.db import check_schema, make_engine, session_factory

        if not 0 < heartbeat_s < stale_s:
            raise InvalidValue(
                "heartbeat_s",
                heartbeat_s,
                f"above 0 and below --stale-s ({stale_s:g})",
                f"大于 0 且小于 --stale-s（{stale_s:g}）",
            )
        engine = make_engine(load_settings(database_url=db, home=home).url)
        check_schema(engine)
        sessions = session_factory(engine)
        worker = Worker(
            sessions.begin, name or default_name(), poll_s, heartbeat_s, stale_s, parent_pid
        )
        signal.signal(signal.SIGTERM, lambda *_: worker.stopping.set())
        try:
            worker.loop(once=once)
        finally:
            engine.dispose()
