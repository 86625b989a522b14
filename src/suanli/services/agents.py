"""Agents: registration, heartbeats, leases and reports.

Agents act with their provider's token or with an agent token issued for one site
(`issue_agent_token`): such a token registers, heartbeats, leases and reports only for agents of
that site (`site_scope`); anything else is `AgentScope` (403).

Leases: an agent leases tasks placed on its site; a heartbeat renews those it lists as running
(only those: a task the agent dropped keeps its expiry); `expire_leases` puts a task whose lease
ran out back in the queue (counted in `requeues`), so it is never lost and never run by two
agents at once: reports from an agent that no longer holds the lease are refused (409).
Lease times are on the unit of work's clock (`core.now(session)`), so a server on a virtual
clock expires leases when its clock says so. `agent_site` tells the API's long-poll which
site's work to wait for (`api.longpoll`).

Preemption: a heartbeat answers, besides the tasks to cancel, the tasks to preempt (those with
`preempt_requested`, set by the scheduling pass or an operator, `services.preemption`). The
agent stops such a task (SIGTERM, the grace, SIGKILL) and reports it PREEMPTED with the usage of
what ran; `report` then records RUNNING -> PREEMPTED (an audit event with the reason), settles
the attempt's order (`market.settle_task`: charged for what ran), and queues the task again:
PREEMPTED -> QUEUED, its pool, site and agent cleared, `preemptions` + 1, pinned to the pool it
ran on (`pinned_pool_id`), where the agent keeps its checkpoint directory.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from suanli.services.capacity import HOLDING, apply_capacity, own_site
from suanli.services.commands import AgentCommand, ReportCommand
from suanli.services.core import (
    TERMINAL,
    Actor,
    AgentScope,
    Conflict,
    NotFound,
    Role,
    State,
    append_event,
    issue_token,
    new_id,
    now,
    require,
    transition,
)
from suanli.services.tasks import settle
from suanli.store.models import (
    AgentRow,
    PoolRow,
    Principal,
    TaskRow,
    Token,
)


def issue_agent_token(
    session: Session, who: Actor, site_id: str, name: str, expires_in_s: float | None
) -> tuple[Token, str]:
    """A token for the agents of one of `who`'s sites (the token is returned once): it can
    register, heartbeat, lease and report for that site and nothing else."""
    require(who, Role.PROVIDER, Role.OPERATOR)
    site = own_site(session, who, site_id)
    owner = session.get(Principal, site.owner_id) if who.id != site.owner_id else who
    if owner is None:
        raise NotFound("site", site_id)
    return issue_token(session, owner, name, who.id, site_id=site.id, expires_in_s=expires_in_s)


def register_agent(
    session: Session, who: Actor, spec: AgentCommand, site_scope: str | None = None
) -> AgentRow:
    """A new agent of one of `who`'s sites; with an agent token (`site_scope`), only of that
    site (403 for any other)."""
    require(who, Role.PROVIDER, Role.OPERATOR)
    if site_scope is not None and spec.site_id != site_scope:
        raise AgentScope(site_scope)
    site = own_site(session, who, spec.site_id)
    moment = now(session)
    row = AgentRow(
        id=new_id("agent"),
        site_id=site.id,
        owner_id=who.id,
        name=spec.name or "agent",
        slots=int(spec.slots or 1),
        backend=spec.backend or "local",
        registered_at=moment,
        last_heartbeat_at=moment,
    )
    session.add(row)
    append_event(session, "agent.registered", row.id, who.id, {"site": site.id})
    return row


def _own_agent(
    session: Session, who: Actor, agent_id: str, site_scope: str | None = None
) -> AgentRow:
    """`who`'s agent (any agent for the operator), else 404; with an agent token
    (`site_scope`), only an agent of that site (403 for another of `who`'s agents)."""
    agent = session.get(AgentRow, agent_id)
    if agent is None or (who.role != Role.OPERATOR.value and agent.owner_id != who.id):
        raise NotFound("agent", agent_id)
    if site_scope is not None and agent.site_id != site_scope:
        raise AgentScope(site_scope)
    return agent


@dataclass(frozen=True)
class Beat:
    """A heartbeat's answer: the agent's tasks to cancel and those to preempt."""

    cancel: list[str] = field(default_factory=list)
    preempt: list[str] = field(default_factory=list)


def heartbeat(
    session: Session,
    who: Actor,
    agent_id: str,
    lease_s: float,
    capacity: dict[str, Any] | None = None,
    tails: dict[str, tuple[str, str]] | None = None,
    site_scope: str | None = None,
    running: Collection[str] = (),
) -> Beat:
    """Renew the leases of the agent's tasks that it lists in `running` (and take its engine's
    capacity, and the output so far of its running tasks, if it sent them); the ids of its tasks
    that should be cancelled, and of those it should preempt. A task the agent holds but no
    longer lists keeps its expiry, so the normal expiry puts it back in the queue: an agent that
    dropped a task cannot keep it leased."""
    agent = _own_agent(session, who, agent_id, site_scope)
    if capacity is not None:
        apply_capacity(session, agent, capacity)
    moment = now(session)
    agent.last_heartbeat_at = moment
    tasks = session.scalars(
        select(TaskRow)
        .where(TaskRow.agent_id == agent.id, TaskRow.state.in_(HOLDING[1:]))
        .with_for_update()
    ).all()
    listed = set(running)
    for task in tasks:
        if task.id not in listed:
            continue
        task.lease_expires_at = moment + timedelta(seconds=lease_s)
        if tails and task.id in tails and task.state == State.RUNNING.value:
            task.stdout_tail, task.stderr_tail = tails[task.id]  # live output, not a state change
    return Beat(
        cancel=[t.id for t in tasks if t.cancel_requested],
        preempt=[t.id for t in tasks if t.preempt_requested and not t.cancel_requested],
    )


def agent_site(session: Session, who: Actor, agent_id: str, site_scope: str | None = None) -> str:
    """The site of `who`'s agent `agent_id` (404 / 403 as for its other calls): where a
    long-polling lease waits for work."""
    return _own_agent(session, who, agent_id, site_scope).site_id


def lease(
    session: Session,
    who: Actor,
    agent_id: str,
    limit: int,
    lease_s: float,
    site_scope: str | None = None,
) -> list[TaskRow]:
    """Up to `limit` tasks placed on the agent's site, now INITIALIZING under its lease."""
    agent = _own_agent(session, who, agent_id, site_scope)
    moment = now(session)
    agent.last_heartbeat_at = moment
    query = (
        select(TaskRow)
        .where(
            TaskRow.state == State.QUEUED.value,
            TaskRow.site_id == agent.site_id,
            TaskRow.pool_id.is_not(None),
            TaskRow.cancel_requested.is_(False),
        )
        .order_by(TaskRow.created_at)
        .limit(max(0, limit))
        .with_for_update(skip_locked=True)
    )
    leased = list(session.scalars(query))
    for task in leased:
        transition(session, task, State.INITIALIZING, f"leased by {agent.id}", agent.id)
        task.agent_id = agent.id
        task.lease_expires_at = moment + timedelta(seconds=lease_s)
    return leased


def pool_devices(session: Session, tasks: list[TaskRow]) -> dict[str, str]:
    """The device model (catalog id) of each pool that `tasks` are placed on."""
    ids = {t.pool_id for t in tasks if t.pool_id is not None}
    if not ids:
        return {}
    rows = session.execute(select(PoolRow.id, PoolRow.device).where(PoolRow.id.in_(ids)))
    return {pool_id: device for pool_id, device in rows}


def report(
    session: Session,
    who: Actor,
    task_id: str,
    spec: ReportCommand,
    site_scope: str | None = None,
) -> TaskRow:
    """An agent's report of a task's progress; 409 unless it holds the task's lease."""
    agent = _own_agent(session, who, spec.agent_id, site_scope)
    task = session.get(TaskRow, task_id, with_for_update=True)
    if task is None or task.site_id != agent.site_id:
        raise NotFound("task", task_id)
    if task.agent_id != agent.id or State(task.state) in TERMINAL:
        raise Conflict(
            f"agent {agent.id} does not hold task {task_id} (it may have been re-queued)",
            f"代理 {agent.id} 不再持有任务 {task_id}（可能已重新排队）",
        )
    to = State(spec.state)
    if to is State.RUNNING and task.state == State.RUNNING.value:
        return task
    if to is State.PREEMPTED:
        _preempted(session, task, spec, agent.id)
        return task
    if to in TERMINAL:
        task.exit_code = spec.exit_code
        task.stdout_tail = spec.stdout_tail
        task.stderr_tail = spec.stderr_tail
        task.usage = None if spec.usage is None else spec.usage.model_dump(exclude_none=True)
        task.executor_logs = [e.model_dump() for e in spec.executors] or None
        task.output_logs = [o.model_dump() for o in spec.outputs] or None
    reason = spec.reason or f"reported by {agent.id}"
    transition(session, task, to, reason, agent.id)
    if to in TERMINAL:
        task.lease_expires_at = None
        settle(session, task)
    return task


def _preempted(session: Session, task: TaskRow, spec: ReportCommand, agent_id: str) -> None:
    """The agent stopped the task to preempt it: record PREEMPTED with the reason, settle the
    attempt's order for what ran, and queue the task again on the same pool (its checkpoint
    directory lives on that site's agent)."""
    if task.state == State.INITIALIZING.value:  # stopped before its RUNNING report arrived
        transition(session, task, State.RUNNING, "started (reported with its preemption)", agent_id)
    why = task.preempt_reason or "preempted"
    reason = f"{why}; {spec.reason}" if spec.reason and spec.reason != why else why
    task.exit_code = spec.exit_code
    task.stdout_tail = spec.stdout_tail
    task.stderr_tail = spec.stderr_tail
    task.usage = None if spec.usage is None else spec.usage.model_dump(exclude_none=True)
    task.executor_logs = [e.model_dump() for e in spec.executors] or None
    transition(session, task, State.PREEMPTED, reason, agent_id)
    settle(session, task)  # charged for what ran (the market's PREEMPTED outcome)
    pool = task.pool_id
    transition(session, task, State.QUEUED, "re-queued after its preemption", "server")
    task.preemptions += 1
    task.preempt_requested = False
    task.pinned_pool_id = task.pinned_pool_id or pool
    task.agent_id = None
    task.lease_expires_at = None
    task.pool_id = None
    task.site_id = None
    task.placement = None
    task.unplaced_reason = (
        f"preempted ({why}); waiting to resume on pool {task.pinned_pool_id}, "
        "where its checkpoint directory is"
    )


def leases_due(session: Session) -> bool:
    """Whether a task's lease has run out (a read: the pass opens a write only then)."""
    moment = now(session)
    found = session.scalars(
        select(TaskRow.id)
        .where(TaskRow.state.in_(HOLDING[1:]), TaskRow.lease_expires_at < moment)
        .limit(1)
    ).first()
    return found is not None


def expire_leases(session: Session) -> list[str]:
    """Put every task whose lease ran out back in the queue; their ids."""
    moment = now(session)
    stale = session.scalars(
        select(TaskRow)
        .where(TaskRow.state.in_(HOLDING[1:]), TaskRow.lease_expires_at < moment)
        .with_for_update()
    ).all()
    for task in stale:
        if task.cancel_requested:
            transition(session, task, State.CANCELED, "lease expired while cancelling", "server")
            settle(session, task)
        else:
            transition(session, task, State.QUEUED, f"lease of {task.agent_id} expired", "server")
            task.requeues += 1
            task.preempt_requested = False  # no longer running: nothing left to preempt
        task.agent_id = None
        task.lease_expires_at = None
        task.pool_id = None
        task.site_id = None
        task.placement = None
        task.unplaced_reason = "re-queued after a lease expired; waiting for a scheduling pass"
    return [t.id for t in stale]


def agent_count(session: Session, within_s: float) -> int:
    since = now(session) - timedelta(seconds=within_s)
    return int(
        session.scalar(
            select(func.count()).select_from(AgentRow).where(AgentRow.last_heartbeat_at >= since)
        )
        or 0
    )
