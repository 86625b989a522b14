"""Shared pieces of the use cases: errors, ids, identity, the audit chain and the task states.

Owns:
* the platform's errors (`NotFound` -> 404, `Conflict` -> 409, `Unauthorized` -> 401,
  `Forbidden` -> 403), mapped to HTTP in one place (`api/errors.py`);
* bearer tokens, stored only as SHA-256 hashes (tokens are 256-bit random, so a fast hash is
  enough), each belonging to a principal with a role; a token may expire (`expires_at`), be
  revoked (`revoked_at`), and be an agent token scoped to one site (`site_id`):
  `authenticate` answers a `Caller` (principal, token id, site scope) and refuses unknown,
  revoked or expired tokens (401); a scoped caller may act only as an agent of its site, which
  the services check (`AgentScope`, 403);
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
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from suanli.errors import InvalidValue, SuanliError
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


class AgentScope(Forbidden):
    """An agent token used beyond what it is for: one site's agent protocol."""

    def __init__(self, site_id: str) -> None:
        self.site_id = site_id
        SuanliError.__init__(
            self,
            f"this is an agent token for site {site_id}: it may only register, heartbeat, lease "
            "and report as an agent of that site; use the provider's own token for anything else",
            f"这是站点 {site_id} 的代理令牌：只能以该站点代理的身份注册、心跳、租用和上报任务；"
            "其他操作请使用提供方自己的令牌",
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


@dataclass(frozen=True)
class Caller:
    """Who a request acts as: the token's principal and id, and for an agent token the one site
    it may act for (`site_id`, else None); `expires_at` is the token's end, if it has one."""

    principal: Principal
    token_id: str
    site_id: str | None = None
    expires_at: datetime | None = None

    def unscoped(self) -> Principal:
        """The principal, for anything but the agent protocol; 403 for an agent token."""
        if self.site_id is not None:
            raise AgentScope(self.site_id)
        return self.principal

    def expired(self, at: datetime) -> bool:
        return self.expires_at is not None and aware(self.expires_at) <= at


def issue_token(
    session: Session,
    principal: Principal,
    name: str,
    actor: str,
    *,
    site_id: str | None = None,
    expires_in_s: float | None = None,
) -> tuple[Token, str]:
    """A new token for `principal` (scoped to one site's agents when `site_id` is given, ending
    after `expires_in_s` when given); the token is returned once and stored only hashed."""
    if expires_in_s is not None and not expires_in_s > 0:
        raise InvalidValue("expires_in_s", expires_in_s, "a positive number of seconds", "正的秒数")
    moment = now()
    token = "sl_" + secrets.token_urlsafe(32)
    row = Token(
        id=new_id("tok"),
        principal_id=principal.id,
        token_hash=_hash_token(token),
        created_at=moment,
        revoked_at=None,
        name=name,
        expires_at=None if expires_in_s is None else moment + timedelta(seconds=expires_in_s),
        site_id=site_id,
    )
    session.add(row)
    append_event(
        session,
        "token.issued",
        row.id,
        actor,
        {
            "principal": principal.id,
            "name": name,
            "site": site_id,
            "expires_at": None if row.expires_at is None else row.expires_at.isoformat(),
        },
    )
    return row, token


def create_token(
    session: Session, role: Role, name: str, *, expires_in_s: float | None = None
) -> tuple[Principal, str]:
    """A new principal with one token; the token is returned once and stored only hashed."""
    moment = now()
    principal = Principal(id=new_id(role.value[:4]), name=name, role=role.value, created_at=moment)
    session.add(principal)
    session.flush()
    append_event(
        session, "principal.created", principal.id, "admin", {"role": role.value, "name": name}
    )
    _, token = issue_token(session, principal, name, "admin", expires_in_s=expires_in_s)
    return principal, token


def authenticate(session: Session, token: str, at: datetime | None = None) -> Caller:
    """The caller a bearer token stands for; 401 when it is unknown, revoked or expired. The
    caller may be an agent token: use `Caller.unscoped()` for anything but the agent protocol."""
    row = session.scalars(
        select(Token).where(Token.token_hash == _hash_token(token), Token.revoked_at.is_(None))
    ).first()
    if row is None:
        raise Unauthorized()
    principal = session.get(Principal, row.principal_id)
    if principal is None:
        raise Unauthorized()
    caller = Caller(principal, row.id, row.site_id, row.expires_at)
    if caller.expired(at or now()):
        raise Unauthorized()
    return caller


def list_tokens(session: Session, owner: str | None = None) -> list[tuple[Token, Principal]]:
    """Every token (of `owner` only, when given) with its principal, oldest first. Only hashes
    are stored: a token itself is never shown again."""
    query = (
        select(Token, Principal)
        .join(Principal, Principal.id == Token.principal_id)
        .order_by(Token.created_at, Token.id)
    )
    if owner is not None:
        query = query.where(Token.principal_id == owner)
    rows = session.execute(query)
    return [(token, principal) for token, principal in rows.tuples()]


def revoke_token(session: Session, token_id: str, actor: str, owner: str | None = None) -> Token:
    """Revoke a token now (every server refuses it within a second); with `owner`, only a token
    of that principal (else 404). 409 if it was already revoked."""
    row = session.get(Token, token_id, with_for_update=True)
    if row is None or (owner is not None and row.principal_id != owner):
        raise NotFound("token", token_id)
    if row.revoked_at is not None:
        raise Conflict(
            f"token {token_id} was already revoked at {aware(row.revoked_at).isoformat()}",
            f"令牌 {token_id} 已于 {aware(row.revoked_at).isoformat()} 吊销",
        )
    row.revoked_at = now()
    append_event(session, "token.revoked", row.id, actor, {"principal": row.principal_id})
    return row


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


GENESIS_HASH = "0" * 64  # the `prev_hash` of event #1


def verify_chain(
    session: Session,
    after_seq: int = 0,
    after_hash: str = GENESIS_HASH,
    upto_seq: int | None = None,
) -> int | None:
    """The seq of the first event that does not match the hash chain or is missing, or None when
    the chain is intact. The walk starts after `after_seq`, whose hash the next event must
    continue from (`after_hash`; the genesis by default), and stops at `upto_seq` (all events
    when None); seqs must follow each other without a gap up to `upto_seq`."""
    prev, expected_seq = after_hash, after_seq + 1
    query = select(EventRow).where(EventRow.seq > after_seq).order_by(EventRow.seq)
    if upto_seq is not None:
        query = query.where(EventRow.seq <= upto_seq)
    for row in session.scalars(query):
        if row.seq != expected_seq:
            return expected_seq  # removed
        expected = _event_hash(prev, row.seq, row.at, row.kind, row.subject, row.actor, row.data)
        if row.prev_hash != prev or row.hash != expected:
            return row.seq
        prev, expected_seq = row.hash, expected_seq + 1
    if upto_seq is not None and expected_seq <= upto_seq:
        return expected_seq  # the tail was removed
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
