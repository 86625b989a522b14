"""The platform service: `create_app(settings)` builds the FastAPI app; no import-time effects.

Owns the HTTP surface (thin routes over `services`), the unit of work per request
(commit on success, roll back on any error, so a failed request leaves nothing half-written),
bearer-token authentication (a token is looked up again after TOKEN_CACHE_S, so a revoked or
expired token is refused by every server process within a second; an agent token reaches only
the agent routes, through `run_agent`; repeated 401s from one address are throttled with 429 by
`api.throttle`), the background scheduling loop (lease expiry + a placement pass,
every `schedule_interval_s` and whenever a task is submitted), `/healthz` and Prometheus
`/metrics` (queue length, tasks by state, placements, re-queues, agents, request latency).
Every request passes `api.limits` first: a body over `max_body_bytes` is 413, a NUL in the URL
is refused; `GET /v1/tasks` returns at most `MAX_LIST_LIMIT` tasks.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager, asynccontextmanager, contextmanager, nullcontext
from datetime import datetime
from typing import Annotated, Any, TypeVar

from fastapi import Depends, FastAPI, Header, Query, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from suanli import __version__
from suanli.api import errors
from suanli.api.limits import RequestLimits, json_size, page_that_fits
from suanli.api.schemas import (
    AcceptQuote,
    AgentCreate,
    AgentRead,
    BalanceRead,
    ErrorBody,
    Heartbeat,
    HeartbeatReply,
    LeasedTask,
    LeaseReply,
    LeaseRequest,
    OrderRead,
    PoolCreate,
    PoolRead,
    QuoteRead,
    RatingCreate,
    RatingRead,
    Report,
    SiteCreate,
    SiteRead,
    StatementRead,
    TaskCreate,
    TaskLogs,
    TaskRead,
    Text,
)
from suanli.api.throttle import AuthThrottle
from suanli.config import Settings
from suanli.services import agents as agents_service
from suanli.services import capacity as capacity_service
from suanli.services import market
from suanli.services import scheduling as scheduling_service
from suanli.services import tasks as tasks_service
from suanli.services.core import Caller, Unauthorized, authenticate, aware, now
from suanli.store.db import check_schema, make_engine, session_factory, upgrade
from suanli.store.models import OrderRow, PoolRow, Principal, SiteRow, TaskRow

log = logging.getLogger("suanli.server")
R = TypeVar("R")
MIN_PASS_GAP_S = 0.05
MAX_LIST_LIMIT = 1000  # tasks per GET /v1/tasks (each under max_body_bytes: a bounded page)
TOKEN_CACHE_S = 0.5  # a revoked token works at most this long on any process
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (400, 401, 403, 404, 409, 413, 422, 429)
}
SUBMIT_RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    200: {"model": TaskRead, "description": "The task this Idempotency-Key already created"},
}


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


class Platform:
    """What the routes share: sessions, settings, metrics and the scheduler's wake-up call."""

    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        readers: sessionmaker[Session],
        serialise_writes: bool,
    ) -> None:
        self.settings = settings
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
        self.last_pass_at: datetime | None = None
        self.last_full_pass = 0.0
        self.stop = threading.Event()

    def caller(self, session: Session, token: str) -> Caller:
        """The token's caller, remembered for TOKEN_CACHE_S (so a revoked token may work that
        much longer, never past its expiry); unknown tokens are never cached."""
        moment = time.monotonic()
        cached = self.tokens.get(token)
        if cached is not None and moment - cached[0] < TOKEN_CACHE_S:
            if cached[1].expired(now()):
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
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise
            finally:
                session.close()

    def schedule_once(self) -> None:
        with self.unit_of_work() as session:
            expired = agents_service.expire_leases(session)
        if expired:
            self.capacity_grew.set()
            self.metrics.requeues.inc(len(expired))
            log.warning("re-queued %d task(s) after lease expiry: %s", len(expired), expired)
        # a full pass when capacity may have grown (or every interval); else only new tasks
        full = self.capacity_grew.is_set() or (
            time.monotonic() - self.last_full_pass >= self.settings.schedule_interval_s
        )
        started = now()
        self.capacity_grew.clear()
        with self.unit_of_work(write=False) as session:  # a short read
            since = None if full or self.last_pass_at is None else self.last_pass_at
            decided = scheduling_service.plan_pass(session, self.settings.policy, since)
        self.last_pass_at = started
        if full:
            self.last_full_pass = time.monotonic()
        with self.unit_of_work() as session:  # a short write
            placed = scheduling_service.apply_pass(session, decided)
        self.metrics.placements.inc(placed)

    def scheduling_loop(self) -> None:
        while not self.stop.is_set():
            self.wake.wait(self.settings.schedule_interval_s)
            time.sleep(MIN_PASS_GAP_S)  # let a burst of submissions gather into one pass
            self.wake.clear()
            if self.stop.is_set():
                return
            try:
                self.schedule_once()
            except Exception:  # the loop must survive a bad pass; the next one retries
                log.exception("scheduling pass failed")


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


async def bearer(authorization: Annotated[str | None, Header()] = None) -> str:
    """The bearer token of a request (checked against the database in the unit of work)."""
    if not authorization or not authorization.lower().startswith("bearer "):
        raise Unauthorized()
    return authorization.split(" ", 1)[1].strip()


Token = Annotated[str, Depends(bearer)]


def _task_read(task: TaskRow) -> TaskRead:
    return TaskRead(
        id=task.id,
        name=task.name,
        state=task.state,
        owner=task.owner_id,
        devices=task.devices,
        pool=task.pool_id,
        site=task.site_id,
        placement=task.placement,
        unplaced_reason=task.unplaced_reason,
        requeues=task.requeues,
        exit_code=task.exit_code,
        usage=task.usage,
        cancel_requested=task.cancel_requested,
        created_at=aware(task.created_at),
        updated_at=aware(task.updated_at),
        spec=task.spec,
    )


def _site_read(site: SiteRow, reputation: float | None = None) -> SiteRead:
    return SiteRead(
        id=site.id,
        name=site.name,
        owner=site.owner_id,
        cluster=site.cluster_id,
        province=site.province,
        lat=site.lat,
        lon=site.lon,
        pue=site.pue,
        green_share=site.green_share,
        reputation=reputation,
    )


def _sites_with_reputation(session: Session) -> list[SiteRead]:
    reputation = market.reputation(session)
    return [_site_read(s, reputation.get(s.owner_id)) for s in capacity_service.list_sites(session)]


def _pool_read(pool: PoolRow, free: int) -> PoolRead:
    return PoolRead(
        id=pool.id,
        site_id=pool.site_id,
        device=pool.device,
        count=pool.count,
        free=free,
        price_fen_per_device_hour=pool.price_fen_per_device_hour,
        queue_depth=pool.queue_depth or 0,
    )


def create_app(settings: Settings, *, migrate: bool = True, run_scheduler: bool = True) -> FastAPI:
    """The app for `settings`; `migrate` upgrades the schema, else a stale schema is refused."""
    engine = make_engine(settings.url)
    if migrate:
        upgrade(engine)
    check_schema(engine)
    sqlite = engine.dialect.name == "sqlite"
    reader = make_engine(settings.url, reader=True) if sqlite else engine
    state = Platform(settings, session_factory(engine), session_factory(reader), sqlite)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        thread = None
        if run_scheduler:
            thread = threading.Thread(
                target=state.scheduling_loop, name="suanli-scheduler", daemon=True
            )
            thread.start()
        yield
        state.stop.set()
        state.wake.set()
        if thread is not None:
            thread.join(timeout=10)
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

    def acted(token: str, write: bool, work: Callable[[Session, Principal], R]) -> R:
        with state.unit_of_work(write) as session:
            return work(session, state.caller(session, token).unscoped())

    async def run(token: str, write: bool, work: Callable[[Session, Principal], R]) -> R:
        """One unit of work in the thread pool: the only thread hop of a request. An agent
        token is refused (403): it may act only through `run_agent`."""
        return await run_in_threadpool(acted, token, write, work)

    def acted_as_agent(token: str, work: Callable[[Session, Caller], R]) -> R:
        with state.unit_of_work() as session:
            return work(session, state.caller(session, token))

    async def run_agent(token: str, work: Callable[[Session, Caller], R]) -> R:
        """A write of the agent protocol: the caller may be an agent token, whose site scope
        the service checks (`site_scope=caller.site_id`)."""
        return await run_in_threadpool(acted_as_agent, token, work)

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    @app.get("/metrics", tags=["ops"], response_class=Response)
    async def metrics() -> Response:
        def gauges() -> tuple[dict[str, int], int, int]:
            with state.unit_of_work(write=False) as session:
                unplaced = (
                    session.query(TaskRow)
                    .filter(TaskRow.state == "QUEUED", TaskRow.pool_id.is_(None))
                    .count()
                )
                agents = agents_service.agent_count(session, 3 * state.settings.heartbeat_s)
                return tasks_service.task_counts(session), unplaced, agents

        counts, unplaced, agents = await run_in_threadpool(gauges)
        for name in (
            "QUEUED",
            "INITIALIZING",
            "RUNNING",
            "COMPLETE",
            "EXECUTOR_ERROR",
            "SYSTEM_ERROR",
            "CANCELED",
        ):
            state.metrics.tasks.labels(name).set(counts.get(name, 0))
        state.metrics.queue.set(counts.get("QUEUED", 0))
        state.metrics.unplaced.set(unplaced)
        state.metrics.agents.set(agents)
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # --- tasks (consumers) -------------------------------------------------------------------

    @app.post(
        "/v1/tasks",
        status_code=201,
        response_model=TaskRead,
        responses=SUBMIT_RESPONSES,
        tags=["tasks"],
    )
    async def submit(
        body: TaskCreate,
        token: Token,
        response: Response,
        idempotency_key: Annotated[Text | None, Header(max_length=200)] = None,
    ) -> TaskRead:
        spec = body.model_dump()

        def work(session: Session, who: Principal) -> tuple[TaskRead, bool]:
            task, created = tasks_service.submit(session, who, spec, idempotency_key)
            return _task_read(task), created

        read, created = await run(token, True, work)
        if created:
            state.wake.set()
        else:
            response.status_code = 200
        return read

    @app.get("/v1/tasks", response_model=list[TaskRead], responses=ERRORS, tags=["tasks"])
    async def tasks(
        token: Token,
        response: Response,
        state_: Annotated[Text | None, Query(alias="state", max_length=20)] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIST_LIMIT)] = 100,
        offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
    ) -> list[TaskRead]:
        """Newest first; a page stops at about PAGE_BUDGET_BYTES (8 MiB) of tasks, and then
        the `X-Next-Offset` header says where the next page starts."""

        def work(session: Session, who: Principal) -> list[TaskRead]:
            rows = tasks_service.list_tasks(session, who, state_, limit + 1, offset=offset)
            fits = page_that_fits(rows[:limit], lambda t: json_size(t.spec))
            if fits < len(rows):
                response.headers["X-Next-Offset"] = str(offset + fits)
            return [_task_read(t) for t in rows[:fits]]

        return await run(token, False, work)

    @app.get("/v1/tasks/{task_id}", response_model=TaskRead, responses=ERRORS, tags=["tasks"])
    async def task(task_id: str, token: Token) -> TaskRead:
        return await run(
            token,
            False,
            lambda session, who: _task_read(tasks_service.get_task(session, who, task_id)),
        )

    @app.get("/v1/tasks/{task_id}/logs", response_model=TaskLogs, responses=ERRORS, tags=["tasks"])
    async def logs(task_id: str, token: Token) -> TaskLogs:
        def work(session: Session, who: Principal) -> TaskLogs:
            t = tasks_service.get_task(session, who, task_id)
            return TaskLogs(
                id=t.id,
                state=t.state,
                exit_code=t.exit_code,
                stdout_tail=t.stdout_tail or "",
                stderr_tail=t.stderr_tail or "",
            )

        return await run(token, False, work)

    @app.post(
        "/v1/tasks/{task_id}/cancel", response_model=TaskRead, responses=ERRORS, tags=["tasks"]
    )
    async def cancel(task_id: str, token: Token) -> TaskRead:
        read = await run(
            token,
            True,
            lambda session, who: _task_read(tasks_service.cancel_task(session, who, task_id)),
        )
        state.capacity_grew.set()
        return read

    from suanli.api import tes  # needs this module's bearer dependency: imported here

    tes.install(app, run, state.wake.set)
    from suanli.api import tokens

    tokens.install(app, run)
    from suanli.console import web

    web.install(app, state.unit_of_work, state.wake.set)

    # --- sites and pools (providers) ---------------------------------------------------------

    @app.post(
        "/v1/sites", status_code=201, response_model=SiteRead, responses=ERRORS, tags=["providers"]
    )
    async def add_site(body: SiteCreate, token: Token) -> SiteRead:
        spec = body.model_dump()
        return await run(
            token,
            True,
            lambda session, who: _site_read(capacity_service.add_site(session, who, spec)),
        )

    @app.get("/v1/sites", response_model=list[SiteRead], responses=ERRORS, tags=["providers"])
    async def sites(token: Token) -> list[SiteRead]:
        return await run(token, False, lambda session, _: _sites_with_reputation(session))

    @app.post(
        "/v1/pools", status_code=201, response_model=PoolRead, responses=ERRORS, tags=["providers"]
    )
    async def add_pool(body: PoolCreate, token: Token) -> PoolRead:
        spec = body.model_dump()

        def work(session: Session, who: Principal) -> PoolRead:
            pool = capacity_service.add_pool(session, who, spec)
            return _pool_read(pool, pool.count)

        read = await run(token, True, work)
        state.capacity_grew.set()
        state.wake.set()
        return read

    @app.get("/v1/pools", response_model=list[PoolRead], responses=ERRORS, tags=["providers"])
    async def pools(token: Token) -> list[PoolRead]:
        return await run(
            token,
            False,
            lambda session, _: [
                _pool_read(p, free) for p, free in capacity_service.list_pools(session)
            ],
        )

    # --- market: quotes, orders, ratings, money ----------------------------------------------

    def _order_read(order: OrderRow) -> OrderRead:
        return OrderRead(
            id=order.id,
            task_id=order.task_id,
            quote_id=order.quote_id,
            state=order.state,
            escrow=market.money(order.escrow_fen),
            offer=order.offer,
            settlement=order.settlement,
        )

    @app.post(
        "/v1/quotes", status_code=201, response_model=QuoteRead, responses=ERRORS, tags=["market"]
    )
    async def quote(body: TaskCreate, token: Token) -> QuoteRead:
        spec = body.model_dump()

        def work(session: Session, who: Principal) -> QuoteRead:
            row = market.quote(
                session, who, spec, state.settings.policy, market.rules_from(state.settings)
            )
            return QuoteRead(
                id=row.id,
                options=row.options["options"],
                unavailable=row.options["unavailable"],
                expires_at=aware(row.expires_at),
            )

        return await run(token, True, work)

    @app.post(
        "/v1/quotes/{quote_id}/accept",
        status_code=201,
        response_model=OrderRead,
        responses={**ERRORS, 402: {"model": ErrorBody}},
        tags=["market"],
    )
    async def accept(quote_id: str, body: AcceptQuote, token: Token) -> OrderRead:
        read = await run(
            token,
            True,
            lambda session, who: _order_read(
                market.accept(session, who, quote_id, body.option, state.settings.policy)
            ),
        )
        state.wake.set()
        return read

    @app.get("/v1/orders/{order_id}", response_model=OrderRead, responses=ERRORS, tags=["market"])
    async def order(order_id: str, token: Token) -> OrderRead:
        return await run(
            token, False, lambda session, who: _order_read(market.get_order(session, who, order_id))
        )

    @app.post(
        "/v1/orders/{order_id}/rating",
        status_code=201,
        response_model=RatingRead,
        responses=ERRORS,
        tags=["market"],
    )
    async def rate(order_id: str, body: RatingCreate, token: Token) -> RatingRead:
        def work(session: Session, who: Principal) -> RatingRead:
            row = market.rate(session, who, order_id, body.stars, body.comment)
            return RatingRead(
                id=row.id, order_id=row.order_id, stars=row.stars, comment=row.comment
            )

        return await run(token, True, work)

    @app.get("/v1/balance", response_model=BalanceRead, responses=ERRORS, tags=["market"])
    async def balance(token: Token) -> BalanceRead:
        return await run(
            token,
            False,
            lambda session, who: BalanceRead(
                accounts={
                    account: market.money(market.balance(session, account))
                    for account in market.accounts_of(who)
                }
            ),
        )

    @app.get("/v1/statement", response_model=StatementRead, responses=ERRORS, tags=["market"])
    async def statement(
        token: Token,
        account: Annotated[str, Query(min_length=1, max_length=160)],
        start: Annotated[datetime | None, Query(alias="from")] = None,
        end: Annotated[datetime | None, Query(alias="to")] = None,
    ) -> StatementRead:
        return await run(
            token,
            False,
            lambda session, who: StatementRead(
                account=account,
                lines=market.statement(
                    session,
                    who,
                    account,
                    None if start is None else aware(start),
                    None if end is None else aware(end),
                ),
            ),
        )

    # --- agents -------------------------------------------------------------------------------

    @app.post(
        "/v1/agents", status_code=201, response_model=AgentRead, responses=ERRORS, tags=["agents"]
    )
    async def register(body: AgentCreate, token: Token) -> AgentRead:
        spec = body.model_dump()

        def work(session: Session, caller: Caller) -> AgentRead:
            agent = agents_service.register_agent(session, caller.principal, spec, caller.site_id)
            return AgentRead(
                id=agent.id, lease_s=state.settings.lease_s, heartbeat_s=state.settings.heartbeat_s
            )

        return await run_agent(token, work)

    @app.post(
        "/v1/agents/{agent_id}/heartbeat",
        response_model=HeartbeatReply,
        responses=ERRORS,
        tags=["agents"],
    )
    async def beat(agent_id: str, body: Heartbeat, token: Token) -> HeartbeatReply:
        return await run_agent(
            token,
            lambda session, caller: HeartbeatReply(
                cancel=agents_service.heartbeat(
                    session,
                    caller.principal,
                    agent_id,
                    state.settings.lease_s,
                    body.capacity.model_dump() if body.capacity else None,
                    {task: (t.stdout, t.stderr) for task, t in body.tails.items()},
                    site_scope=caller.site_id,
                    running=body.running,
                )
            ),
        )

    @app.post(
        "/v1/agents/{agent_id}/lease", response_model=LeaseReply, responses=ERRORS, tags=["agents"]
    )
    async def take(agent_id: str, body: LeaseRequest, token: Token) -> LeaseReply:
        def work(session: Session, caller: Caller) -> LeaseReply:
            leased = agents_service.lease(
                session,
                caller.principal,
                agent_id,
                body.max,
                state.settings.lease_s,
                site_scope=caller.site_id,
            )
            return LeaseReply(
                tasks=[
                    LeasedTask(
                        id=t.id,
                        executors=t.spec["executors"],
                        devices=t.devices,
                        inputs=t.spec.get("inputs") or [],
                        outputs=t.spec.get("outputs") or [],
                        volumes=t.spec.get("volumes") or [],
                        lease_expires_at=aware(t.lease_expires_at or t.updated_at),
                    )
                    for t in leased
                ]
            )

        return await run_agent(token, work)

    @app.post(
        "/v1/tasks/{task_id}/report", response_model=TaskRead, responses=ERRORS, tags=["agents"]
    )
    async def report(task_id: str, body: Report, token: Token) -> TaskRead:
        spec = body.model_dump()
        read = await run_agent(
            token,
            lambda session, caller: _task_read(
                agents_service.report(session, caller.principal, task_id, spec, caller.site_id)
            ),
        )
        if read.state not in ("RUNNING", "INITIALIZING"):
            state.capacity_grew.set()  # its devices came free
            state.wake.set()
        return read

    return app
