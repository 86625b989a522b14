"""Task routes (consumers): submit (idempotent with `Idempotency-Key`), list (newest first, a
page bounded by `deps.MAX_LIST_LIMIT` tasks and about 8 MiB), get, logs and cancel; and the
operator's preempt. A new task wakes the scheduling pass; a cancel tells it capacity may have
grown."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Response
from sqlalchemy.orm import Session

from suanli.api.deps import (
    ERRORS,
    MAX_LIST_LIMIT,
    SUBMIT_RESPONSES,
    PlatformDep,
    Token,
    run,
)
from suanli.api.limits import json_size, page_that_fits
from suanli.services import preemption
from suanli.services import tasks as tasks_service
from suanli.services.views import Actor, TaskLogs, TaskRead, task_logs, task_read
from suanli.specs import TaskCreate, Text

router = APIRouter(tags=["tasks"])


@router.post(
    "/v1/tasks",
    status_code=201,
    response_model=TaskRead,
    responses=SUBMIT_RESPONSES,
)
async def submit(
    body: TaskCreate,
    token: Token,
    platform: PlatformDep,
    response: Response,
    idempotency_key: Annotated[Text | None, Header(max_length=200)] = None,
) -> TaskRead:
    spec = body.model_dump()

    def work(session: Session, who: Actor) -> tuple[TaskRead, bool]:
        task, created = tasks_service.submit(session, who, spec, idempotency_key)
        return task_read(task), created

    read, created = await run(platform, token, True, work)
    if created:
        platform.wake.set()
    else:
        response.status_code = 200
    return read


@router.get("/v1/tasks", response_model=list[TaskRead], responses=ERRORS)
async def tasks(
    token: Token,
    platform: PlatformDep,
    response: Response,
    state_: Annotated[Text | None, Query(alias="state", max_length=20)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIST_LIMIT)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> list[TaskRead]:
    """Newest first; a page stops at about PAGE_BUDGET_BYTES (8 MiB) of tasks, and then
    the `X-Next-Offset` header says where the next page starts."""

    def work(session: Session, who: Actor) -> list[TaskRead]:
        rows = tasks_service.list_tasks(session, who, state_, limit + 1, offset=offset)
        fits = page_that_fits(rows[:limit], lambda t: json_size(t.spec))
        if fits < len(rows):
            response.headers["X-Next-Offset"] = str(offset + fits)
        return [task_read(t) for t in rows[:fits]]

    return await run(platform, token, False, work)


@router.get("/v1/tasks/{task_id}", response_model=TaskRead, responses=ERRORS)
async def task(task_id: str, token: Token, platform: PlatformDep) -> TaskRead:
    return await run(
        platform,
        token,
        False,
        lambda session, who: task_read(tasks_service.get_task(session, who, task_id)),
    )


@router.get("/v1/tasks/{task_id}/logs", response_model=TaskLogs, responses=ERRORS)
async def logs(task_id: str, token: Token, platform: PlatformDep) -> TaskLogs:
    def work(session: Session, who: Actor) -> TaskLogs:
        return task_logs(tasks_service.get_task(session, who, task_id))

    return await run(platform, token, False, work)


@router.post("/v1/tasks/{task_id}/cancel", response_model=TaskRead, responses=ERRORS)
async def cancel(task_id: str, token: Token, platform: PlatformDep) -> TaskRead:
    read = await run(
        platform,
        token,
        True,
        lambda session, who: task_read(tasks_service.cancel_task(session, who, task_id)),
    )
    platform.capacity_grew.set()
    return read


@router.post("/v1/tasks/{task_id}/preempt", response_model=TaskRead, responses=ERRORS)
async def preempt(task_id: str, token: Token, platform: PlatformDep) -> TaskRead:
    """The operator preempts a running task: its agent stops it at its next heartbeat
    (SIGTERM, `preempt_grace_s`, SIGKILL), the task ends PREEMPTED, is charged for what ran and
    is queued again on the same pool, where its checkpoint directory is (409 unless running)."""
    return await run(
        platform,
        token,
        True,
        lambda session, who: task_read(preemption.preempt_task(session, who, task_id)),
    )
