"""Preemption: asking agents to give running work back, for the scheduling pass and operators.

A preemption is a request, not an act: `request` marks running (or just leased) tasks
`preempt_requested` with a reason and writes a `task.preempt_requested` audit event; the agent
holding such a task learns it from its next heartbeat's answer (`services.agents.heartbeat`),
stops the work (SIGTERM, the server's `preempt_grace_s`, SIGKILL; `scancel --signal=TERM`
on Slurm; `stop_job` on Ray) and reports it PREEMPTED with the usage of what ran. The report
settles the attempt's order for what ran and queues the task again on the same pool, where its
checkpoint directory (`SUANLI_CHECKPOINT_DIR`) is kept (`services.agents.report`).

Who asks: the scheduling pass, for the victims its quota gate names (`sharing.Gate.preempt`:
preemptible or borrowed work giving way to guaranteed work), and the operator
(`POST /v1/tasks/{id}/preempt`, `suanli preempt ID`, `preempt_task`).
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from suanli.services.core import (
    Actor,
    Conflict,
    NotFound,
    Role,
    State,
    append_event,
    require,
)
from suanli.store.models import TaskRow

__all__ = ["OPERATOR_REASON", "preempt_task", "request"]

OPERATOR_REASON = "preempted by the operator"
PREEMPTABLE = (State.INITIALIZING.value, State.RUNNING.value)


def request(session: Session, reasons: dict[str, str], actor: str) -> list[str]:
    """Ask the agents of these tasks (id -> why) to preempt them; the ids asked now. A task
    that is not running or leased, is being cancelled, or was asked already is left alone."""
    if not reasons:
        return []
    rows = session.scalars(
        select(TaskRow)
        .where(
            TaskRow.id.in_(list(reasons)),
            TaskRow.state.in_(PREEMPTABLE),
            TaskRow.preempt_requested.is_(False),
            TaskRow.cancel_requested.is_(False),
        )
        .order_by(TaskRow.id)
        .with_for_update()
    ).all()
    for row in rows:
        row.preempt_requested, row.preempt_reason = True, reasons[row.id]
        append_event(session, "task.preempt_requested", row.id, actor, {"reason": reasons[row.id]})
    return [row.id for row in rows]


def preempt_task(session: Session, who: Actor, task_id: str, reason: str = "") -> TaskRow:
    """The operator preempts one running task (404 when unknown, 409 unless it is running or
    leased and not being cancelled); asking again while a preemption is pending is a no-op."""
    require(who, Role.OPERATOR)
    task = session.get(TaskRow, task_id)
    if task is None:
        raise NotFound("task", task_id)
    if task.preempt_requested:
        return task
    if task.state not in PREEMPTABLE or task.cancel_requested:
        raise Conflict(
            f"task {task_id} is {task.state}"
            + (" and being cancelled" if task.cancel_requested else "")
            + ": only a running (or leased) task can be preempted",
            f"任务 {task_id} 的状态为 {task.state}"
            + ("且正在取消" if task.cancel_requested else "")
            + "：只有运行中（或已租出）的任务可以被抢占",
        )
    request(session, {task.id: reason or OPERATOR_REASON}, who.id)
    return task
