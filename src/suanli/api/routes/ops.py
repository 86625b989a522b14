"""Operations routes: `/healthz` and Prometheus `/metrics` (queue length, tasks by state,
unplaced tasks, agents heard from within three heartbeats, plus the request counters that
`app.MeasureRequests` keeps); the store's figures come from `services.readmodels.gauges`."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from suanli import __version__
from suanli.api.deps import PlatformDep
from suanli.services import readmodels

router = APIRouter(tags=["ops"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok", "version": __version__}


@router.get("/metrics", response_class=Response)
async def metrics(platform: PlatformDep) -> Response:
    state = platform

    def gauges() -> readmodels.Gauges:
        with state.unit_of_work(write=False) as session:
            return readmodels.gauges(session, 3 * state.settings.heartbeat_s)

    read = await run_in_threadpool(gauges)
    counts, unplaced, agents = read.tasks_by_state, read.unplaced, read.agents
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
    state.metrics.long_polls.set(state.bell.waiting())
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
