"""Agent protocol routes: register, heartbeat (capacity, output tails, which tasks to cancel or
preempt, and the grace of a preemption), lease work (with each task's maximum run time) and
report a task's state. Each runs through `deps.run_agent`, so a site-scoped agent token may call
them for its own site only (the services check `site_scope`). A report that ends a task (or
preempts it) tells the scheduling pass its devices came free."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from sqlalchemy.orm import Session

from suanli.api.deps import ERRORS, PlatformDep, Token, run_agent
from suanli.api.longpoll import MAX_WAIT_S
from suanli.api.schemas import (
    AgentCreate,
    AgentRead,
    Heartbeat,
    HeartbeatReply,
    LeaseReply,
    LeaseRequest,
    Report,
)
from suanli.services import agents as agents_service
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
