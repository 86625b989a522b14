"""Digital-twin runs queued in the store and run by worker processes (`suanli twin-worker`).

The console queues a run (`queue_run`); a worker claims the oldest queued one (`claim_next`:
one statement under the write lock on SQLite, `FOR UPDATE SKIP LOCKED` on PostgreSQL, so two
workers never take the same run), reports its progress while it replays (`report_progress`,
which is also its heartbeat) and ends it (`finish` or `fail`). Pages read runs back with
`get_run` and `list_runs` as plain frozen `TwinRun` values: a principal sees its own runs, the
operator everyone's, anyone else gets NotFound.

State machine (`TRANSITIONS`): QUEUED -> RUNNING -> DONE | FAILED, and RUNNING -> QUEUED when
its worker stops on purpose (`release`, on SIGTERM); every move is a `twin.state`
event in the audit chain (progress reports are not: they change no state). A worker that dies
leaves its run RUNNING with a heartbeat that stops moving: `reap` FAILS a run whose heartbeat is
older than `stale_after_s` (it is not re-queued: a replay that killed its worker, out of memory
on a large trace say, would kill the next one too; the planner starts it again with one click
and the replay is deterministic). Workers reap before each claim.

Stored layout: `request` holds what was asked (trace, policies, limit, seed, scale, the owner's
name); `result` holds what the worker found so far (jobs, dropped, note, step — the policy and
job counters — results per policy, wall_s, error as [English, 中文]); `progress` is 0..1.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from suanli.errors import InvalidValue, SuanliError
from suanli.services.core import Actor, NotFound, Role, append_event, aware, new_id, now
from suanli.store.models import TwinRunRow

QUEUED, RUNNING, DONE, FAILED = "QUEUED", "RUNNING", "DONE", "FAILED"
ENDED = frozenset({DONE, FAILED})
TRANSITIONS: dict[str | None, frozenset[str]] = {
    None: frozenset({QUEUED}),
    QUEUED: frozenset({RUNNING}),
    RUNNING: frozenset({DONE, FAILED, QUEUED}),  # QUEUED: its worker stopped on purpose
    DONE: frozenset(),
    FAILED: frozenset(),
}
TRACES = ("openb", "philly", "azure-llm", "dlrm")  # the shipped ones (suanli.sim.traces)
MAX_LIMIT = 5000
MAX_UNFINISHED = 4  # queued or running runs one principal may have at once


class TooManyRuns(SuanliError):
    """The principal already has MAX_UNFINISHED runs queued or running."""

    def __init__(self, unfinished: int) -> None:
        self.unfinished = unfinished
        super().__init__(
            f"you already have {unfinished} twin runs queued or running; wait for one to end",
            f"您已有 {unfinished} 个孪生运行在排队或运行；请等待其中一个结束",
        )


@dataclass(frozen=True)
class TwinRequest:
    """What a run replays: the first `limit` jobs of a shipped trace under each policy."""

    trace: str
    policies: tuple[str, ...]
    limit: int
    seed: int
    scale: float

    def check(self) -> None:
        """Refuse a value outside its domain, naming the field (InvalidValue)."""
        from suanli.scheduler import POLICIES

        if self.trace not in TRACES:
            raise InvalidValue("trace", self.trace, f"one of {', '.join(TRACES)}", "内置轨迹之一")
        unknown = [p for p in self.policies if p not in POLICIES]
        if not self.policies or unknown or len(set(self.policies)) != len(self.policies):
            raise InvalidValue(
                "policies",
                list(self.policies),
                f"one or more distinct of {', '.join(POLICIES)}",
                "至少一个、互不重复的调度策略",
            )
        if not 1 <= self.limit <= MAX_LIMIT:
            raise InvalidValue("limit", self.limit, f"1 to {MAX_LIMIT}", f"1 到 {MAX_LIMIT}")
        if self.seed < 0:
            raise InvalidValue("seed", self.seed, "a whole number >= 0", "不小于 0 的整数")
        if not (math.isfinite(self.scale) and 0 < self.scale <= 1):
            raise InvalidValue("scale", self.scale, "a number in (0, 1]", "大于 0 且不超过 1 的数")


@dataclass(frozen=True)
class TwinRun:
    """One run as pages and workers read it (a copy: changing it changes nothing stored)."""

    id: str
    owner_id: str
    owner_name: str
    state: str  # QUEUED RUNNING DONE FAILED
    request: TwinRequest
    progress: float  # 0..1
    message: str | None
    worker: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None
    jobs: int | None = None
    dropped: int | None = None
    note: str | None = None
    step: Mapping[str, Any] | None = None  # policies_done/total, current, jobs_done/total
    results: Mapping[str, Any] = field(default_factory=dict)  # policy -> metrics, timeline
    wall_s: float | None = None
    error: tuple[str, str] | None = None  # (English, 中文)

    @property
    def ended(self) -> bool:
        return self.state in ENDED


def _when(moment: datetime | None) -> datetime | None:
    return None if moment is None else aware(moment)


def _view(row: TwinRunRow) -> TwinRun:
    request = row.request or {}
    found = row.result or {}
    error = found.get("error")
    return TwinRun(
        id=row.id,
        owner_id=row.owner_id,
        owner_name=str(request.get("owner_name") or row.owner_id),
        state=row.state,
        request=TwinRequest(
            trace=str(request["trace"]),
            policies=tuple(request["policies"]),
            limit=int(request["limit"]),
            seed=int(request["seed"]),
            scale=float(request["scale"]),
        ),
        progress=float(row.progress or 0.0),
        message=row.message,
        worker=row.worker,
        created_at=aware(row.created_at),
        started_at=_when(row.started_at),
        finished_at=_when(row.finished_at),
        heartbeat_at=_when(row.heartbeat_at),
        jobs=found.get("jobs"),
        dropped=found.get("dropped"),
        note=found.get("note"),
        step=found.get("step"),
        results=dict(found.get("results") or {}),
        wall_s=found.get("wall_s"),
        error=(str(error[0]), str(error[1])) if error else None,
    )


def _move(session: Session, row: TwinRunRow, to: str, reason: str, actor: str) -> None:
    """The one writer of a run's state: legal moves only, each recorded in the chain."""
    if to not in TRANSITIONS[row.state]:
        raise SuanliError(
            f"twin run {row.id} cannot go from {row.state} to {to}",
            f"孪生运行 {row.id} 不能从 {row.state} 变为 {to}",
        )
    append_event(
        session, "twin.state", row.id, actor, {"from": row.state, "to": to, "reason": reason}
    )
    row.state = to


def queue_run(session: Session, who: Actor, request: TwinRequest) -> TwinRun:
    """Queue a replay for `who`; TooManyRuns when it already has MAX_UNFINISHED going."""
    request.check()
    unfinished = int(
        session.scalar(
            select(func.count())
            .select_from(TwinRunRow)
            .where(TwinRunRow.owner_id == who.id, TwinRunRow.state.in_((QUEUED, RUNNING)))
        )
        or 0
    )
    if unfinished >= MAX_UNFINISHED:
        raise TooManyRuns(unfinished)
    row = TwinRunRow(
        id=new_id("twin"),
        owner_id=who.id,
        state=QUEUED,
        request={
            "trace": request.trace,
            "policies": list(request.policies),
            "limit": request.limit,
            "seed": request.seed,
            "scale": request.scale,
            "owner_name": who.name,
        },
        progress=0.0,
        created_at=now(session),
    )
    append_event(  # the first move: from nowhere to QUEUED (TRANSITIONS[None])
        session, "twin.state", row.id, who.id, {"from": None, "to": QUEUED, "reason": "queued"}
    )
    session.add(row)
    session.flush()
    return _view(row)


def claim_next(session: Session, worker: str) -> TwinRun | None:
    """The oldest queued run, now RUNNING on `worker`; None when none is queued. Under the
    SQLite write lock (BEGIN IMMEDIATE) or a skipped row lock on PostgreSQL, so concurrent
    workers claim different runs."""
    row = session.scalars(
        select(TwinRunRow)
        .where(TwinRunRow.state == QUEUED)
        .order_by(TwinRunRow.created_at, TwinRunRow.id)
        .limit(1)
        .with_for_update(skip_locked=True)
    ).first()
    if row is None:
        return None
    moment = now(session)
    _move(session, row, RUNNING, f"claimed by worker {worker}", worker)
    row.worker = worker
    row.started_at = moment
    row.heartbeat_at = moment
    row.message = None
    return _view(row)


def _own_running(session: Session, run_id: str, worker: str) -> TwinRunRow | None:
    row = session.get(TwinRunRow, run_id, with_for_update=True)
    if row is None or row.state != RUNNING or row.worker != worker:
        return None
    return row


def report_progress(
    session: Session, run_id: str, worker: str, progress: float, found: Mapping[str, Any]
) -> bool:
    """Record progress (0..1) and what the worker found so far; also its heartbeat. False when
    the run is no longer this worker's to run (reaped as stale): the worker should stop."""
    row = _own_running(session, run_id, worker)
    if row is None:
        return False
    row.progress = min(1.0, max(0.0, float(progress)))
    row.result = {**(row.result or {}), **found}
    row.heartbeat_at = now(session)
    return True


def finish(session: Session, run_id: str, worker: str, found: Mapping[str, Any]) -> bool:
    """The run is DONE with `found` as its result; False when it is no longer this worker's."""
    row = _own_running(session, run_id, worker)
    if row is None:
        return False
    _move(session, row, DONE, "replay finished", worker)
    row.progress = 1.0
    row.result = {**(row.result or {}), **found}
    row.finished_at = row.heartbeat_at = now(session)
    return True


def fail(
    session: Session,
    run_id: str,
    worker: str,
    message_en: str,
    message_zh: str,
    found: Mapping[str, Any] | None = None,
) -> bool:
    """The run FAILED with this message; False when it is no longer this worker's."""
    row = _own_running(session, run_id, worker)
    if row is None:
        return False
    _failed(session, row, message_en, message_zh, worker, found)
    return True


def _failed(
    session: Session,
    row: TwinRunRow,
    message_en: str,
    message_zh: str,
    actor: str,
    found: Mapping[str, Any] | None = None,
) -> None:
    _move(session, row, FAILED, message_en, actor)
    row.message = message_en
    row.result = {**(row.result or {}), **(found or {}), "error": [message_en, message_zh]}
    row.finished_at = now(session)


def release(session: Session, run_id: str, worker: str) -> bool:
    """Hand a run back to the queue: its worker is stopping on purpose (SIGTERM) and another
    will start it afresh. False when it is no longer this worker's."""
    row = _own_running(session, run_id, worker)
    if row is None:
        return False
    _move(session, row, QUEUED, f"worker {worker} stopped; back in the queue", worker)
    row.worker = row.started_at = row.heartbeat_at = None
    row.progress = 0.0
    row.result = None
    return True


def reap(session: Session, stale_after_s: float, actor: str) -> list[str]:
    """FAIL every RUNNING run whose worker has not reported for `stale_after_s` seconds (it
    died: killed, out of memory, its machine lost); the ids."""
    cutoff = now(session) - timedelta(seconds=stale_after_s)
    stale = session.scalars(
        select(TwinRunRow)
        .where(TwinRunRow.state == RUNNING, TwinRunRow.heartbeat_at < cutoff)
        .order_by(TwinRunRow.id)
        .with_for_update(skip_locked=True)
    ).all()
    for row in stale:
        silent = (now(session) - aware(row.heartbeat_at or row.created_at)).total_seconds()
        _failed(
            session,
            row,
            f"the worker {row.worker} stopped reporting ({silent:.0f} s without a heartbeat, "
            f"limit {stale_after_s:g} s); start the run again",
            f"工作进程 {row.worker} 已停止上报（{silent:.0f} 秒无心跳，"
            f"上限 {stale_after_s:g} 秒）；请重新发起运行",
            actor,
        )
    return [row.id for row in stale]


def _visible(who: Actor, row: TwinRunRow | None) -> bool:
    return row is not None and (who.role == Role.OPERATOR.value or row.owner_id == who.id)


def get_run(session: Session, who: Actor, run_id: str) -> TwinRun:
    """One run `who` may see; NotFound otherwise (ids do not leak)."""
    row = session.get(TwinRunRow, run_id) if len(run_id) <= 64 else None
    if row is None or not _visible(who, row):
        raise NotFound("twin run", run_id)
    return _view(row)


def list_runs(session: Session, who: Actor, limit: int = 100) -> list[TwinRun]:
    """The runs `who` may see, newest first."""
    query = (
        select(TwinRunRow).order_by(TwinRunRow.created_at.desc(), TwinRunRow.id.desc()).limit(limit)
    )
    if who.role != Role.OPERATOR.value:
        query = query.where(TwinRunRow.owner_id == who.id)
    return [_view(row) for row in session.scalars(query)]
