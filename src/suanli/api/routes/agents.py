"""Agent protocol routes: register, heartbeat (capacity, output tails, which tasks to cancel or
preempt, and the grace of a preemption), lease work (with each task's maximum run time) and
report tasks' states: in batches, `POST /v1/agents/{id}/reports` `{"reports": [{"task_id", ...the
fields of a report but the agent}]}` (1 to MAX_REPORTS) -> 200 `{"results": [{"task_id",
"status", "state", "detail"}]}`, one result per report in order, each report applied on its own
(one unit of work each: `status` 200 with the task's `state` after it, or the 404 / 409 / 422 the
single report would have got, with the error's English `detail`); or one at a time, `POST
/v1/tasks/{id}/report` (kept for other clients). Each runs through `deps.run_agent` (a batch
through `deps.run_agent_each`, which checks the caller once), so a site-scoped agent token may
call them for its own site only (the services check `site_scope`). A report that ends a task
(or preempts it) tells the scheduling pass its devices came free."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from sqlalchemy.orm import Session

from suanli.api.deps import ERRORS, PlatformDep, Token, run_agent, run_agent_each
from suanli.api.errors import status_of
from suanli.api.longpoll import MAX_WAIT_S
from suanli.api.schemas import (
    AgentCreate,
    AgentRead,
    Heartbeat,
    HeartbeatReply,
    LeaseReply,
    LeaseRequest,
    Report,
    ReportItem,
    ReportResult,
    Reports,
    ReportsReply,
)
from suanli.errors import SuanliError
from suanli.services import agents as agents_service
from suanli.services.commands import ReportCommand, ReportFields
from suanli.services.core import Caller
from suanli.services.views import TaskRead, leased_task, task_read

router = APIRouter(tags=["agents"], responses=ERRORS)


@router.post("/v1/agents", status_code=201, response_model=AgentRead)
async def register(body: AgentCreate, token: Token, platform: PlatformDep) -> AgentRead:
    def work(session: Session, caller: Caller) -> AgentRead:
        agent = agents_service.register_agent(session, caller.principal, body, caller.site_id)
        return AgentRead(
            id=agent.id,
            lease_s=platform.settings.lease_s,
            heartbeat_s=platform.settings.heartbeat_s,
            preempt_grace_s=platform.settings.preempt_grace_s,
        )

    return await run_agent(platform, token, work)


@router.post("/v1/agents/{agent_id}/heartbeat", response_model=HeartbeatReply)
async def beat(
    agent_id: str, body: Heartbeat, token: Token, platform: PlatformDep
) -> HeartbeatReply:
    def work(session: Session, caller: Caller) -> HeartbeatReply:
        beat = agents_service.heartbeat(
            session,
            caller.principal,
            agent_id,
            platform.settings.lease_s,
            body.capacity.model_dump() if body.capacity else None,
            {task: (t.stdout, t.stderr) for task, t in body.tails.items()},
            site_scope=caller.site_id,
            running=body.running,
        )
        return HeartbeatReply(
            cancel=beat.cancel,
            preempt=beat.preempt,
            preempt_grace_s=platform.settings.preempt_grace_s,
        )

    return await run_agent(platform, token, work)


@router.post("/v1/agents/{agent_id}/lease", response_model=LeaseReply)
async def take(
    agent_id: str, body: LeaseRequest, token: Token, platform: PlatformDep
) -> LeaseReply:
    """Up to `max` tasks placed on the agent's site. With `wait_s` and nothing to lease, the
    request is held (no transaction, no thread) until a pass places work on that site or
    `wait_s` runs out (`api.longpoll`), then the lease runs again."""

    def work(session: Session, caller: Caller) -> tuple[str, int, LeaseReply]:
        site = agents_service.agent_site(session, caller.principal, agent_id, caller.site_id)
        seen = platform.bell.generation(site)  # before leasing: later work wakes the wait
        leased = agents_service.lease(
            session,
            caller.principal,
            agent_id,
            body.max,
            platform.settings.lease_s,
            site_scope=caller.site_id,
        )
        default_max_run_s = platform.settings.default_max_run_s
        devices = agents_service.pool_devices(session, leased)
        tasks = [leased_task(t, default_max_run_s, devices.get(t.pool_id or "")) for t in leased]
        return site, seen, LeaseReply(tasks=tasks)

    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(body.wait_s, MAX_WAIT_S)
    while True:
        site, seen, reply = await run_agent(platform, token, work)
        remaining = deadline - loop.time()
        if reply.tasks or body.max == 0 or remaining <= 0 or platform.closing.is_set():
            return reply
        platform.listen_for_work()
        if not await platform.bell.wait(site, seen, remaining):
            return reply


@router.post("/v1/agents/{agent_id}/reports", response_model=ReportsReply)
async def report_many(
    agent_id: str, body: Reports, token: Token, platform: PlatformDep
) -> ReportsReply:
    """The agent's reports of its tasks, in order, each applied as `POST
    /v1/tasks/{id}/report` would apply it and in a transaction of its own: one refused report
    (404 / 409 / 422 in its result) leaves the others done. The token, the agent and its site
    are checked once: a 401 / 403 / 404 there fails the whole batch, as it would each report."""

    def check(session: Session, caller: Caller) -> str:
        return agents_service.agent_site(session, caller.principal, agent_id, caller.site_id)

    def work(session: Session, caller: Caller, item: ReportItem) -> str:
        spec = ReportCommand(
            agent_id=agent_id, **{name: getattr(item, name) for name in ReportFields.model_fields}
        )
        task = agents_service.report(session, caller.principal, item.task_id, spec, caller.site_id)
        return task.state

    done = await run_agent_each(platform, token, check, body.reports, work)
    results = [
        _result(item.task_id, outcome) for item, outcome in zip(body.reports, done, strict=True)
    ]
    if any(r.status == 200 and r.state not in ("RUNNING", "INITIALIZING") for r in results):
        platform.capacity_grew.set()  # some task's devices came free
        platform.wake.set()
    return ReportsReply(results=results)


def _result(task_id: str, outcome: str | SuanliError) -> ReportResult:
    if isinstance(outcome, SuanliError):
        return ReportResult(
            task_id=task_id, status=status_of(outcome)[0], detail=outcome.message_en
        )
    return ReportResult(task_id=task_id, status=200, state=outcome)


@router.post("/v1/tasks/{task_id}/report", response_model=TaskRead)
async def report(task_id: str, body: Report, token: Token, platform: PlatformDep) -> TaskRead:
    read = await run_agent(
        platform,
        token,
        lambda session, caller: task_read(
            agents_service.report(session, caller.principal, task_id, body, caller.site_id)
        ),
    )
    if read.state not in ("RUNNING", "INITIALIZING"):
        platform.capacity_grew.set()  # its devices came free
        platform.wake.set()
    return read
