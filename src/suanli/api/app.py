"""The platform service: `create_app(settings)` builds the FastAPI app; no import-time effects.

Owns what the routes share (`Platform`: the unit of work per request, committed on success and
rolled back on any error, so a failed request leaves nothing half-written; bearer-token
authentication (a token is looked up again after TOKEN_CACHE_S, so a revoked or
expired token is refused by every server process within a second; an agent token reaches only
the agent routes, through `run_agent`; repeated 401s from one address are throttled with 429 by
`api.throttle`); the background scheduling loop (lease expiry + a placement pass,
every `schedule_interval_s` and whenever a task is submitted, run only while this process is
the elected leader among all processes on the database, every write fenced by its term:
`services.leader`; `start_scheduler` / `stop_scheduler`, which resigns the lead),
`/healthz` and Prometheus
`/metrics` counters) and the wiring: `create_app` adds the middlewares and includes one
`APIRouter` per resource (`api.routes.tasks`, `sites`, `agents`, `market`, `ops`, plus `api.tes`,
`api.tokens` and the console); the handlers reach this state through `api.deps`.
Everything time-based reads the `Platform`'s clock (`create_app(clock=...)`; every unit of work
carries it in `session.info["clock"]`), and a pass that places work rings the `WorkBell` of the
sites it placed on (and NOTIFYs them on PostgreSQL), waking agents' long-polls (`api.longpoll`).
Every request passes `api.limits` first: a body over `max_body_bytes` is 413, a NUL in the URL
is refused; `GET /v1/tasks` returns at most `deps.MAX_LIST_LIMIT` tasks.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import AbstractContextManager, asynccontextmanager, contextmanager, nullcontext
from datetime import datetime
from types import FrameType
from typing import Any

from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from suanli import __version__
from suanli.api import errors
from suanli.api.limits import RequestLimits
from suanli.api.longpoll import CHANNEL, PgListener, WorkBell
from suanli.api.throttle import AuthThrottle
from suanli.clock import SYSTEM, Clock
from suanli.config import Settings
from suanli.services import agents as agents_service
from suanli.services import scheduling as scheduling_service
from suanli.services import vouchers as vouchers_service
from suanli.services.core import SEAL_EVERY_S, Caller, Unauthorized, authenticate, seal
from suanli.services.db import open_store
from suanli.services.leader import LEASE_INTERVALS, Elector, NotLeader, election_connections

log = logging.getLogger("suanli.server")
MIN_PASS_GAP_S = 0.05
TOKEN_CACHE_S = 0.5  # a revoked token works at most this long on any process


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "suanli_http_requests", "HTTP requests", ["method", "route", "status"], registry=r
        )
        self.latency = Histogram(
            "suanli_http_request_seconds", "Request latency", ["route"], registry=r
        )
        self.placements = Counter("suanli_placements", "Tasks placed on a pool", registry=r)
        self.requeues = Counter(
            "suanli_requeues", "Tasks re-queued after a lease expired", registry=r
        )
        self.queue = Gauge("suanli_queue_length", "Tasks QUEUED (placed or not)", registry=r)
        self.unplaced = Gauge("suanli_unplaced_tasks", "QUEUED tasks without a pool", registry=r)
        self.tasks = Gauge("suanli_tasks", "Tasks by state", ["state"], registry=r)
        self.agents = Gauge("suanli_agents", "Agents heard from within 3 heartbeats", registry=r)
        self.long_polls = Gauge(
            "suanli_lease_long_polls", "Agents' lease requests held waiting for work", registry=r
        )
        self.leader = Gauge(
            "suanli_scheduler_leader", "1 while this process leads the scheduler", registry=r
        )


class Platform:
    """What the routes share: sessions, settings, metrics and the scheduler's wake-up call."""

    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        readers: sessionmaker[Session],
        serialise_writes: bool,
        clock: Clock = SYSTEM,
        *,
        sole_owner: bool = False,
    ) -> None:
        self.settings = settings
        self.clock = clock  # every unit of work reads time from it (`services.core.now`)
        self.sessions = sessions
        self.readers = readers
        # SQLite has one writer at a time: queue writers on a lock here instead of letting them
        # poll the database's busy handler (fairer, and far faster under contention)
        self.write_lock: AbstractContextManager[Any] = (
            threading.Lock() if serialise_writes else nullcontext()
        )
        self.metrics = Metrics()
        self.tokens: dict[str, tuple[float, Caller]] = {}
        self.wake = threading.Event()
        self.capacity_grew = threading.Event()
        self.last_pass_at: datetime | None = None  # the next incremental pass reads from here
        self._open_writes: dict[int, datetime] = {}  # write units of work open, since when
        self._open_writes_lock = threading.Lock()
        self.last_full_pass: datetime | None = None  # clock time of the last full pass
        self.last_seal: datetime | None = None  # clock time of the last call to `seal`
        self.passed_at: datetime | None = None  # clock time at the start of the last pass done
        self.stop = threading.Event()
        self.bell = WorkBell()  # wakes agents' long-polls when a pass places work on their site
        self.closing = threading.Event()  # set on shutdown: long-polls answer at once
        self._listener: PgListener | None = None
        self._listener_lock = threading.Lock()
        # one scheduling loop at a time among all processes on this database (services.leader).
        # On PostgreSQL the election has connections of its own: a server busy with requests
        # (its pool drained by them) must still renew its lease on time
        own = election_connections(sessions.kw.get("bind"), clock)
        self._election_engine = own[0] if own else None
        self.elector = Elector(
            own[1] if own else self.unit_of_work,
            LEASE_INTERVALS * settings.schedule_interval_s,
            self._election_engine,
            sole_owner=sole_owner,
        )

    def caller(self, session: Session, token: str) -> Caller:
        """The token's caller, remembered for TOKEN_CACHE_S (so a revoked token may work that
        much longer, never past its expiry); unknown tokens are never cached."""
        at = self.clock.now()
        moment = at.timestamp()
        cached = self.tokens.get(token)
        if cached is not None and moment - cached[0] < TOKEN_CACHE_S:
            if cached[1].expired(at):
                raise Unauthorized()
            return cached[1]
        caller = authenticate(session, token)
        session.expunge(caller.principal)
        if len(self.tokens) > 10_000:
            self.tokens.clear()
        self.tokens[token] = (moment, caller)
        return caller

    @contextmanager
    def unit_of_work(self, write: bool = True) -> Iterator[Session]:
        """One transaction: committed on success, rolled back on any error."""
        with self.write_lock if write else nullcontext():
            session = (self.sessions if write else self.readers)()
            session.info["clock"] = self.clock
            session.info["pricing_rules"] = self.settings  # services.market.pricing_rules
            if write:  # open from now until it commits: see `schedule_once`'s watermark
                with self._open_writes_lock:
                    self._open_writes[id(session)] = self.clock.now()
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise
            finally:
                if write:
                    with self._open_writes_lock:
                        self._open_writes.pop(id(session), None)
                session.close()

    def schedule_once(self) -> None:
        """One pass, if this process leads: expire leases, plan on a short read, write the plan,
        seal the event log when a seal is due. Each write is fenced by the lead it started under
        (`services.leader.fence`), so a pass of a leader that has been replaced writes nothing
        (NotLeader). A write transaction is opened only when there is something to write (on
        SQLite every write takes the one writer lock that submissions need too)."""
        lead = self.elector.lead
        if lead is None:
            return
        began = self.clock.now()  # `passed_at` once this pass has written
        with self.unit_of_work(write=False) as session:
            due = agents_service.leases_due(session)
        if due:
            with self.unit_of_work() as session:
                self.elector.fence(session, lead)
                expired = agents_service.expire_leases(session)
            if expired:
                self.capacity_grew.set()
                self.metrics.requeues.inc(len(expired))
                log.warning("re-queued %d task(s) after lease expiry: %s", len(expired), expired)
        # a full pass when capacity may have grown or every interval (of this platform's
        # clock: a virtual clock's time, not the wall's); else only the tasks new since the last
        started = self.clock.now()
        # the next incremental pass reads what was updated since this one began, or since the
        # oldest write of this process still open now began: a row that write stamps before
        # `started` commits after this pass's read, and must not be missed by the next one
        # (it waited for the next full pass: measured, a task placed 1.15 s late). Other
        # processes' writes are caught by the full passes.
        with self._open_writes_lock:
            watermark = min([started, *self._open_writes.values()])
        full = (
            self.capacity_grew.is_set()
            or self.last_full_pass is None
            or (started - self.last_full_pass).total_seconds() >= self.settings.schedule_interval_s
        )
        self.capacity_grew.clear()
        with self.unit_of_work(write=False) as session:  # a short read
            since = None if full or self.last_pass_at is None else self.last_pass_at
            decided = scheduling_service.plan_pass(
                session,
                self.settings.policy,
                since,
                max_wait_s=self.settings.max_queue_wait_s,
            )
        self.last_pass_at = watermark
        if full:
            self.last_full_pass = started
        placed = 0
        if decided.writes:
            with self.unit_of_work() as session:  # a short write
                self.elector.fence(session, lead)
                placed = scheduling_service.apply_pass(session, decided)
                woken = (
                    self.announce_work(session, decided.placements.values()) if placed else set()
                )
                # renew again as the write commits: a long write must not leave a lease that
                # lapsed while it held the row (contenders waiting on the row would see it so)
                self.elector.fence(session, lead)
            self.bell.ring(woken)
        self.passed_at = began
        self.metrics.placements.inc(placed)
        if self.last_seal is None or (began - self.last_seal).total_seconds() >= SEAL_EVERY_S:
            with self.unit_of_work(write=False) as session:
                expiring = vouchers_service.any_due(session)
            if expiring:  # what is left on expired vouchers returns to the issuer
                with self.unit_of_work() as session:
                    self.elector.fence(session, lead)
                    vouchers_service.expire(session, "scheduler")
            with self.unit_of_work() as session:  # the event log's periodic root (services.core)
                seal(session)
            self.last_seal = began

    def scheduling_loop(self) -> None:
        began = -MIN_PASS_GAP_S
        while not self.stop.is_set():
            self.clock.wait(self.wake, self.settings.schedule_interval_s)
            # passes start at most MIN_PASS_GAP_S apart: a wake after a quiet spell passes at
            # once (work reaches an idle agent at once); in a burst of submissions the next pass
            # waits out the gap, so the burst gathers into one pass
            time.sleep(max(0.0, began + MIN_PASS_GAP_S - time.monotonic()))
            began = time.monotonic()
            self.wake.clear()
            if self.stop.is_set():
                return
            try:
                self.schedule_once()
            except NotLeader as lost:  # replaced while planning: the new leader's pass counts
                log.warning("%s", lost.one_line())
            except Exception:  # the loop must survive a bad pass; the next one retries
                log.exception("scheduling pass failed")

    def election_loop(self) -> None:
        """Contend for the lead (or renew it) every schedule interval, from a thread of its
        own so that a long pass does not let the lease lapse; a new leader's first pass is a
        full one, at once."""
        while not self.stop.is_set():
            if self.elector.step():
                self.last_pass_at = None
                self.capacity_grew.set()
                self.wake.set()
            self.metrics.leader.set(1 if self.elector.lead is not None else 0)
            self.clock.wait(self.stop, self.settings.schedule_interval_s)

    def start_scheduler(self) -> list[threading.Thread]:
        """Start contending for the lead and the scheduling loop (which passes only while this
        process leads); `stop_scheduler` ends both."""
        threads = [
            threading.Thread(target=self.election_loop, name="suanli-leader", daemon=True),
            threading.Thread(target=self.scheduling_loop, name="suanli-scheduler", daemon=True),
        ]
        for thread in threads:
            thread.start()
        return threads

    def stop_scheduler(self, threads: list[threading.Thread]) -> None:
        """Stop the loops, then resign the lead (another process takes over at its next
        interval instead of waiting for the lease to lapse)."""
        self.stop.set()
        self.wake.set()
        for thread in threads:
            thread.join(timeout=10)
        self.elector.resign()
        if self._election_engine is not None:
            self._election_engine.dispose()

    def announce_work(
        self, session: Session, placements: Iterable[tuple[str, str, Any]]
    ) -> set[str]:
        """The sites a pass placed work on; on PostgreSQL also `NOTIFY`s them (delivered when
        the pass commits) so that every server process wakes its agents' long-polls."""
        sites = {site for _, site, _ in placements}
        if sites and session.get_bind().dialect.name == "postgresql":
            rest = sorted(sites)
            while rest:  # NOTIFY payloads stay under 8000 bytes
                session.execute(
                    text("SELECT pg_notify(:channel, :payload)"),
                    {"channel": CHANNEL, "payload": ",".join(rest[:200])},
                )
                rest = rest[200:]
        return sites

    def close_long_polls(self) -> None:
        """The server is stopping: held lease requests answer now (empty), so shutdown does not
        wait out their `wait_s`. Safe to call from a signal handler."""
        self.closing.set()
        self.bell.ring_all()

    def listen_for_work(self) -> None:
        """On PostgreSQL, start (once) the thread that wakes this process's long-polls when any
        process's pass places work (`longpoll.PgListener`); nothing on SQLite."""
        if self._listener is not None:
            return
        bind = self.sessions.kw["bind"]
        if bind.dialect.name != "postgresql":
            return
        with self._listener_lock:
            if self._listener is None:
                url = bind.url.set(drivername="postgresql").render_as_string(hide_password=False)
                self._listener = PgListener(url, self.bell, self.stop)
                self._listener.start()


class MeasureRequests:
    """Pure ASGI middleware: request count and latency per route (no body buffering)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            path = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.latency.labels(path).observe(time.perf_counter() - started)
            self.metrics.requests.labels(scope["method"], path, str(status)).inc()


def _close_long_polls_on_exit_signals(state: Platform) -> None:
    """Chain SIGINT/SIGTERM (uvicorn's handlers stay in charge) so that held long-polls answer
    at once when the server is told to stop, instead of holding its graceful shutdown for up
    to `longpoll.MAX_WAIT_S`. Only in the main thread (an app run by a test client in another
    thread has no signals to chain)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous = signal.getsignal(sig)

        def handler(signum: int, frame: FrameType | None, previous: Any = previous) -> None:
            state.close_long_polls()
            if callable(previous):
                previous(signum, frame)
            elif previous == signal.SIG_DFL:
                raise SystemExit(128 + signum)

        signal.signal(sig, handler)


def create_app(
    settings: Settings,
    *,
    migrate: bool = True,
    run_scheduler: bool = True,
    clock: Clock = SYSTEM,
    sole_owner: bool = False,
) -> FastAPI:
    """The app for `settings`; `migrate` upgrades the schema, else a stale schema is refused.
    Everything time-based (leases, token expiry, the pass's waits) reads `clock`.
    `run_scheduler`: contend for the scheduling lead (`services.leader`) and pass while leading;
    False serves the API only. `sole_owner`: this process holds the SQLite file's lock
    (`services.leader.own_database_file`), so a lead left on it is a dead process's."""
    store = open_store(settings.url, migrate=migrate)
    engine, reader = store.engine, store.reader
    state = Platform(
        settings,
        store.sessions,
        store.readers,
        store.serialise_writes,
        clock,
        sole_owner=sole_owner,
    )

    @asynccontextmanager
    async def lifespan(served: FastAPI) -> AsyncIterator[None]:
        _close_long_polls_on_exit_signals(state)
        # build the OpenAPI document now, off the event loop (FastAPI caches it): the first
        # client to ask for it must not wait seconds for it on a loaded machine
        threading.Thread(target=served.openapi, name="suanli-openapi", daemon=True).start()
        threads = state.start_scheduler() if run_scheduler else []
        yield
        state.stop_scheduler(threads)
        engine.dispose()
        reader.dispose()

    app = FastAPI(
        title="suanli",
        version=__version__,
        lifespan=lifespan,
        description="The suanli compute network: providers plug in, consumers submit, "
        "tasks really run. 算力网络平台服务。",
    )
    app.state.platform = state
    errors.install(app)

    app.add_middleware(RequestLimits, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(
        AuthThrottle,
        max_failures=settings.auth_failures_max,
        window_s=settings.auth_failures_window_s,
        block_s=settings.auth_block_s,
    )
    app.add_middleware(MeasureRequests, metrics=state.metrics)

    from suanli.api import tes, tokens
    from suanli.api.routes import agents, budgets, market, ops, payouts, sites, tasks, vouchers
    from suanli.api.routes import carbon as carbon_routes
    from suanli.api.routes import clock as clock_routes
    from suanli.api.routes import forecasts as forecast_routes
    from suanli.api.routes import groups as group_routes
    from suanli.console import web

    app.include_router(ops.router)
    app.include_router(tasks.router)
    app.include_router(tes.router)
    app.include_router(tokens.router)
    web.install(app, state.unit_of_work, state.wake.set)
    app.include_router(sites.router)
    app.include_router(market.router)
    app.include_router(agents.router)
    app.include_router(clock_routes.router)
    app.include_router(vouchers.router)
    app.include_router(budgets.router)
    app.include_router(payouts.router)
    app.include_router(group_routes.router)
    app.include_router(forecast_routes.router)
    app.include_router(carbon_routes.router)
    return app
