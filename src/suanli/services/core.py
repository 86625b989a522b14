"""Shared pieces of the use cases: errors, ids, identity, the audit chain and the task states.

Owns:
* the platform's errors (`NotFound` -> 404, `Conflict` -> 409, `Unauthorized` -> 401,
  `Forbidden` -> 403), mapped to HTTP in one place (`api/errors.py`);
* bearer tokens, stored only as SHA-256 hashes (tokens are 256-bit random, so a fast hash is
  enough), each belonging to a principal with a role;
* the append-only event log: every state change appends an event whose hash covers the previous
  event's hash, so that any edit of history breaks the chain (`verify_chain`);
* the TES state machine as data: one `TRANSITIONS` table and one `transition()` that refuses
  illegal moves and records (from, to, reason, at) in the chain.
Invariant: nothing here commits; the service that calls it owns the unit of work.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from suanli.errors import SuanliError
from suanli.store.models import ChainHead, EventRow, Principal, TaskRow, Token


class NotFound(SuanliError):
    def __init__(self, kind: str, ident: str) -> None:
        self.kind, self.ident = kind, ident
        super().__init__(f"{kind} '{ident}' not found", f"未找到{kind}“{ident}”")


class Conflict(SuanliError):
    def __init__(self, message_en: str, message_zh: str) -> None:
        super().__init__(message_en, message_zh)


class Unauthorized(SuanliError):
    def __init__(self) -> None:
        super().__init__(
            "missing or unknown bearer token; send 'Authorization: Bearer <token>'",
            "缺少或无效的访问令牌；请发送 'Authorization: Bearer <token>'",
        )


class Forbidden(SuanliError):
    def __init__(self, role: str, needed: str) -> None:
        super().__init__(
            f"a {role} token cannot do this; it needs a {needed} token",
            f"{role} 角色的令牌无权执行此操作；需要 {needed} 令牌",
        )


class Role(StrEnum):
    OPERATOR = "operator"
    PROVIDER = "provider"
    CONSUMER = "consumer"


def now() -> datetime:
    """The platform's wall clock (UTC). The pure core never calls this."""
    return datetime.now(UTC)


def aware(moment: datetime) -> datetime:
    """SQLite returns naive datetimes: they are UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(6)}"


def _hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(session: Session, role: Role, name: str) -> tuple[Principal, str]:
    """A new principal with one token; the token is returned once and stored only hashed."""
    moment = now()
    principal = Principal(id=new_id(role.value[:4]), name=name, role=role.value, created_at=moment)
    token = "sl_" + secrets.token_urlsafe(32)
    session.add(principal)
    session.flush()
    session.add(
        Token(
            id=new_id("tok"),
            principal_id=principal.id,
            token_hash=_hash_token(token),
            created_at=moment,
            revoked_at=None,
        )
    )
    append_event(
        session, "principal.created", principal.id, "admin", {"role": role.value, "name": name}
    )
    return principal, token


def authenticate(session: Session, token: str) -> Principal:
    row = session.scalars(
        select(Token).where(Token.token_hash == _hash_token(token), Token.revoked_at.is_(None))
    ).first()
    if row is None:
        raise Unauthorized()
    principal = session.get(Principal, row.principal_id)
    if principal is None:
        raise Unauthorized()
    return principal


def require(principal: Principal, *roles: Role) -> None:
    if principal.role not in {r.value for r in roles}:
        raise Forbidden(principal.role, " or ".join(r.value for r in roles))


# --- the audit chain ---------------------------------------------------------------------------


def _event_hash(
    prev: str, seq: int, at: datetime, kind: str, subject: str, actor: str, data: dict[str, Any]
) -> str:
    body = json.dumps(
        [prev, seq, aware(at).isoformat(), kind, subject, actor, data],
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(body.encode()).hexdigest()


def append_event(
    session: Session, kind: str, subject: str, actor: str, data: dict[str, Any]
) -> int:
    """Append one event to the chain; its seq. The head row is locked until the transaction
    ends, so appends are serialised and the chain never forks. (Core statements: this runs on
    every state change, so it skips the ORM's unit-of-work bookkeeping.)"""
    prev_seq, prev_hash = session.execute(
        select(ChainHead.seq, ChainHead.hash).where(ChainHead.id == 1).with_for_update()
    ).one()
    moment = now()
    seq = prev_seq + 1
    digest = _event_hash(prev_hash, seq, moment, kind, subject, actor, data)
    session.execute(
        insert(EventRow).values(
            seq=seq,
            at=moment,
            kind=kind,
            subject=subject,
            actor=actor,
            data=data,
            prev_hash=prev_hash,
            hash=digest,
        )
    )
    session.execute(update(ChainHead).where(ChainHead.id == 1).values(seq=seq, hash=digest))
    return int(seq)


def verify_chain(session: Session) -> int | None:
    """The seq of the first event whose hash does not match, or None when the chain is intact."""
    prev = "0" * 64
    for row in session.scalars(select(EventRow).order_by(EventRow.seq)):
        expected = _event_hash(prev, row.seq, row.at, row.kind, row.subject, row.actor, row.data)
        if row.prev_hash != prev or row.hash != expected:
            return row.seq
        prev = row.hash
    return None


# --- the TES state machine ---------------------------------------------------------------------


class State(StrEnum):
    QUEUED = "QUEUED"
    INITIALIZING = "INITIALIZING"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    COMPLETE = "COMPLETE"
    EXECUTOR_ERROR = "EXECUTOR_ERROR"
    SYSTEM_ERROR = "SYSTEM_ERROR"
    CANCELED = "CANCELED"
    PREEMPTED = "PREEMPTED"


TERMINAL = frozenset({State.COMPLETE, State.EXECUTOR_ERROR, State.SYSTEM_ERROR, State.CANCELED})
ENDS = (State.COMPLETE, State.EXECUTOR_ERROR, State.SYSTEM_ERROR, State.CANCELED)

# Every legal move. An agent may report the end of a task it has just leased (a fast command can
# finish before RUNNING is reported); an expired lease puts a task back in the queue.
TRANSITIONS: dict[State, frozenset[State]] = {
    State.QUEUED: frozenset({State.INITIALIZING, State.CANCELED, State.SYSTEM_ERROR}),
    State.INITIALIZING: frozenset({State.RUNNING, State.QUEUED, *ENDS}),
    State.RUNNING: frozenset({State.QUEUED, State.PAUSED, State.PREEMPTED, *ENDS}),
    State.PAUSED: frozenset({State.RUNNING, State.CANCELED, State.SYSTEM_ERROR}),
    State.PREEMPTED: frozenset({State.QUEUED, State.CANCELED}),
    State.COMPLETE: frozenset(),
    State.EXECUTOR_ERROR: frozenset(),
    State.SYSTEM_ERROR: frozenset(),
    State.CANCELED: frozenset(),
}


def transition(session: Session, task: TaskRow, to: State, reason: str, actor: str) -> None:
    """Move `task` to `to`, or refuse with 409; the move is recorded in the chain."""
    current = State(task.state)
    if to not in TRANSITIONS[current]:
        raise Conflict(
            f"task {task.id} cannot go from {current.value} to {to.value}",
            f"任务 {task.id} 不能从 {current.value} 变为 {to.value}",
        )
    moment = now()
    task.state = to.value
    task.updated_at = moment
    append_event(
        session,
        "task.state",
        task.id,
        actor,
        {"from": current.value, "to": to.value, "reason": reason},
    )
