"""The platform service: `create_app(settings)` builds the FastAPI app; no import-time effects.

Owns the HTTP surface (thin routes over `services.platform`), the unit of work per request
(commit on success, roll back on any error, so a failed request leaves nothing half-written),
bearer-token authentication, the background scheduling loop (lease expiry + a placement pass,
every `schedule_interval_s` and whenever a task is submitted), `/healthz` and Prometheus
`/metrics` (queue length, tasks by state, placements, re-queues, agents, request latency).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Query, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from sqlalchemy.orm import Session, sessionmaker

from suanli import __version__
from suanli.api import errors
from suanli.api.schemas import (
    AgentCreate,
    AgentRead,
    ErrorBody,
    Heartbeat,
    HeartbeatReply,
    LeasedTask,
    LeaseReply,
    LeaseRequest,
    PoolCreate,
    PoolRead,
    Report,
    SiteCreate,
    SiteRead,
    TaskCreate,
    TaskLogs,
    TaskRead,
)
from suanli.config import Settings
from suanli.services import platform
from suanli.services.core import Unauthorized, authenticate, aware
from suanli.store.db import check_schema, make_engine, session_factory, upgrade
from suanli.store.models import PoolRow, Principal, SiteRow, TaskRow

log = logging.getLogger("suanli.server")
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (400, 401, 403, 404, 409, 422)
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

    def __init__(self, settings: Settings, sessions: sessionmaker[Session]) -> None:
        self.settings = settings
        self.sessions = sessions
        self.metrics = Metrics()
        self.wake = threading.Event()
        self.stop = threading.Event()

    @contextmanager
    def unit_of_work(self) -> Iterator[Session]:
        session = self.sessions()
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
            expired = platform.expire_leases(session)
        if expired:
            self.metrics.requeues.inc(len(expired))
            log.warning("re-queued %d task(s) after lease expiry: %s", len(expired), expired)
        with self.unit_of_work() as session:
            placed = platform.schedule_pass(session, self.settings.policy)
        self.metrics.placements.inc(placed)

    def scheduling_loop(self) -> None:
        while not self.stop.is_set():
            self.wake.wait(self.settings.schedule_interval_s)
            self.wake.clear()
            if self.stop.is_set():
                return
            try:
                self.schedule_once()
            except Exception:  # the loop must survive a bad pass; the next one retries
                log.exception("scheduling pass failed")


def bearer(authorization: Annotated[str | None, Header()] = None) -> str:
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


def _site_read(site: SiteRow) -> SiteRead:
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
    )


def _pool_read(pool: PoolRow, free: int) -> PoolRead:
    return PoolRead(
        id=pool.id,
        site_id=pool.site_id,
        device=pool.device,
        count=pool.count,
        free=free,
        price_fen_per_device_hour=pool.price_fen_per_device_hour,
    )


def create_app(settings: Settings, *, migrate: bool = True, run_scheduler: bool = True) -> FastAPI:
    """The app for `settings`; `migrate` upgrades the schema, else a stale schema is refused."""
    engine = make_engine(settings.url)
    if migrate:
        upgrade(engine)
    check_schema(engine)
    state = Platform(settings, session_factory(engine))

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

    app = FastAPI(
        title="suanli",
        version=__version__,
        lifespan=lifespan,
        description="The suanli compute network: providers plug in, consumers submit, "
        "tasks really run. 算力网络平台服务。",
    )
    app.state.platform = state
    errors.install(app)

    @app.middleware("http")
    async def _measure(request: Request, call_next: Callable[..., Any]) -> Response:
        started = time.perf_counter()
        response: Response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        state.metrics.latency.labels(path).observe(time.perf_counter() - started)
        state.metrics.requests.labels(request.method, path, str(response.status_code)).inc()
        return response

    @contextmanager
    def acting(token: str) -> Iterator[tuple[Session, Principal]]:
        with state.unit_of_work() as session:
            yield session, authenticate(session, token)

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    @app.get("/metrics", tags=["ops"], response_class=Response)
    def metrics() -> Response:
        with state.unit_of_work() as session:
            counts = platform.task_counts(session)
            unplaced = (
                session.query(TaskRow)
                .filter(TaskRow.state == "QUEUED", TaskRow.pool_id.is_(None))
                .count()
            )
            agents = platform.agent_count(session, 3 * state.settings.heartbeat_s)
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
    def submit(
        body: TaskCreate,
        token: Token,
        response: Response,
        idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
    ) -> TaskRead:
        with acting(token) as (session, who):
            task, created = platform.submit(session, who, body.model_dump(), idempotency_key)
            read = _task_read(task)
        if not created:
            response.status_code = 200
        else:
            state.wake.set()
        return read

    @app.get("/v1/tasks", response_model=list[TaskRead], responses=ERRORS, tags=["tasks"])
    def tasks(
        token: Token,
        state_: Annotated[str | None, Query(alias="state", max_length=20)] = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    ) -> list[TaskRead]:
        with acting(token) as (session, who):
            return [_task_read(t) for t in platform.list_tasks(session, who, state_, limit)]

    @app.get("/v1/tasks/{task_id}", response_model=TaskRead, responses=ERRORS, tags=["tasks"])
    def task(task_id: str, token: Token) -> TaskRead:
        with acting(token) as (session, who):
            return _task_read(platform.get_task(session, who, task_id))

    @app.get("/v1/tasks/{task_id}/logs", response_model=TaskLogs, responses=ERRORS, tags=["tasks"])
    def logs(task_id: str, token: Token) -> TaskLogs:
        with acting(token) as (session, who):
            t = platform.get_task(session, who, task_id)
            return TaskLogs(
                id=t.id,
                state=t.state,
                exit_code=t.exit_code,
                stdout_tail=t.stdout_tail or "",
                stderr_tail=t.stderr_tail or "",
            )

    @app.post(
        "/v1/tasks/{task_id}/cancel", response_model=TaskRead, responses=ERRORS, tags=["tasks"]
    )
    def cancel(task_id: str, token: Token) -> TaskRead:
        with acting(token) as (session, who):
            return _task_read(platform.cancel_task(session, who, task_id))

    # --- sites and pools (providers) ---------------------------------------------------------

    @app.post(
        "/v1/sites", status_code=201, response_model=SiteRead, responses=ERRORS, tags=["providers"]
    )
    def add_site(body: SiteCreate, token: Token) -> SiteRead:
        with acting(token) as (session, who):
            return _site_read(platform.add_site(session, who, body.model_dump()))

    @app.get("/v1/sites", response_model=list[SiteRead], responses=ERRORS, tags=["providers"])
    def sites(token: Token) -> list[SiteRead]:
        with acting(token) as (session, _):
            return [_site_read(s) for s in platform.list_sites(session)]

    @app.post(
        "/v1/pools", status_code=201, response_model=PoolRead, responses=ERRORS, tags=["providers"]
    )
    def add_pool(body: PoolCreate, token: Token) -> PoolRead:
        with acting(token) as (session, who):
            pool = platform.add_pool(session, who, body.model_dump())
            read = _pool_read(pool, pool.count)
        state.wake.set()
        return read

    @app.get("/v1/pools", response_model=list[PoolRead], responses=ERRORS, tags=["providers"])
    def pools(token: Token) -> list[PoolRead]:
        with acting(token) as (session, _):
            return [_pool_read(p, free) for p, free in platform.list_pools(session)]

    # --- agents -------------------------------------------------------------------------------

    @app.post(
        "/v1/agents", status_code=201, response_model=AgentRead, responses=ERRORS, tags=["agents"]
    )
    def register(body: AgentCreate, token: Token) -> AgentRead:
        with acting(token) as (session, who):
            agent = platform.register_agent(session, who, body.model_dump())
            return AgentRead(
                id=agent.id, lease_s=state.settings.lease_s, heartbeat_s=state.settings.heartbeat_s
            )

    @app.post(
        "/v1/agents/{agent_id}/heartbeat",
        response_model=HeartbeatReply,
        responses=ERRORS,
        tags=["agents"],
    )
    def beat(agent_id: str, body: Heartbeat, token: Token) -> HeartbeatReply:
        with acting(token) as (session, who):
            return HeartbeatReply(
                cancel=platform.heartbeat(session, who, agent_id, state.settings.lease_s)
            )

    @app.post(
        "/v1/agents/{agent_id}/lease", response_model=LeaseReply, responses=ERRORS, tags=["agents"]
    )
    def take(agent_id: str, body: LeaseRequest, token: Token) -> LeaseReply:
        with acting(token) as (session, who):
            leased = platform.lease(session, who, agent_id, body.max, state.settings.lease_s)
            return LeaseReply(
                tasks=[
                    LeasedTask(
                        id=t.id,
                        executors=t.spec["executors"],
                        devices=t.devices,
                        lease_expires_at=aware(t.lease_expires_at or t.updated_at),
                    )
                    for t in leased
                ]
            )

    @app.post(
        "/v1/tasks/{task_id}/report", response_model=TaskRead, responses=ERRORS, tags=["agents"]
    )
    def report(task_id: str, body: Report, token: Token) -> TaskRead:
        with acting(token) as (session, who):
            read = _task_read(platform.report(session, who, task_id, body.model_dump()))
        if read.state not in ("RUNNING", "INITIALIZING"):
            state.wake.set()  # capacity came free
        return read

    return app
