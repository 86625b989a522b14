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
* the append-only event log: every state change appends an event to one of its streams (stream
  0 for money, 1..16 for the rest), each a hash chain with its own head row, so that unrelated
  writers do not wait for each other; `seal` records every stream's head in a chain of seals;
  `verify_log` (and `verify_chain`, its one-line form) finds any edit or removal of a sealed
  event, stream by stream, from the start or from a verified position;
* the TES state machine as data: one `TRANSITIONS` table and one `transition()` that refuses
  illegal moves and records (from, to, reason, at) in the chain.
Invariant: nothing here commits; the service that calls it owns the unit of work.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from sqlalchemy import Connection, bindparam, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from suanli.clock import SYSTEM, Clock
from suanli.errors import InvalidValue, SuanliError
from suanli.store.models import EventRow, EventStream, Principal, SealRow, TaskRow, Token


class NotFound(SuanliError):
    def __init__(self, kind: str, ident: str) -> None:
        self.kind, self.ident = kind, ident
        super().__init__(f"{kind} '{ident}' not found", f"未找到{kind}“{ident}”")


class Conflict(SuanliError):
    def __init__(self, message_en: str, message_zh: str) -> None:
        super().__init__(message_en, message_zh)


class Unauthorized(SuanliError):
    def __init__(self, basic: bool = False) -> None:
        """`basic`: the route also takes HTTP Basic with the token as the password (TES)."""
        either = " or HTTP Basic with the token as the password (any user name)" if basic else ""
        either_zh = " 或 HTTP Basic（任意用户名，令牌作密码）" if basic else ""
        super().__init__(
            f"missing or unknown bearer token; send 'Authorization: Bearer <token>'{either}",
            f"缺少或无效的访问令牌；请发送 'Authorization: Bearer <token>'{either_zh}",
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


def clock_of(session: Session | None) -> Clock:
    """The clock of a unit of work: what its opener put in `session.info["clock"]` (the
    `Platform`'s clock, a CLI's, the twin's), else the system clock."""
    if session is None:
        return SYSTEM
    clock: Clock = session.info.get("clock", SYSTEM)
    return clock


def now(session: Session | None = None) -> datetime:
    """The current time (UTC) on the clock of `session`'s unit of work (`clock_of`); the wall
    clock without a session. The pure core never calls this: it is given `now`."""
    return clock_of(session).now()


def aware(moment: datetime) -> datetime:
    """SQLite returns naive datetimes: they are UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(6)}"


def _hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Actor(Protocol):
    """Who a request acts as, as the edges (API, console, CLI) hold it: an id, a display name
    and a role, handed back to services, which check ownership and roles with them. Any row or
    value with these attributes is one (the store's principal row is)."""

    @property
    def id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def role(self) -> str: ...


@dataclass(frozen=True)
class Caller:
    """Who a request acts as: the token's principal and id, and for an agent token the one site
    it may act for (`site_id`, else None); `expires_at` is the token's end, if it has one."""

    principal: Actor
    token_id: str
    site_id: str | None = None
    expires_at: datetime | None = None

    def unscoped(self) -> Actor:
        """The principal, for anything but the agent protocol; 403 for an agent token."""
        if self.site_id is not None:
            raise AgentScope(self.site_id)
        return self.principal

    def expired(self, at: datetime) -> bool:
        return self.expires_at is not None and aware(self.expires_at) <= at


def issue_token(
    session: Session,
    principal: Actor,
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
    moment = now(session)
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
    moment = now(session)
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
    if caller.expired(at or now(session)):
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
    row.revoked_at = now(session)
    append_event(session, "token.revoked", row.id, actor, {"principal": row.principal_id})
    return row


def require(principal: Actor, *roles: Role) -> None:
    if principal.role not in {r.value for r in roles}:
        raise Forbidden(principal.role, " or ".join(r.value for r in roles))


# --- the audit log: per-stream hash chains sealed into roots -----------------------------------
#
# The log is split into streams, each a hash chain of its own with its own head row, so that
# writers of different streams do not wait for each other. Stream 0 carries money (`money.*`,
# `order.*`: the ledger replay reads one totally ordered stream, and `lock_balances` locks its
# head before any balance row); streams 1..STREAMS carry the rest. A unit of work appends to
# one ordinary stream, the one its first event's subject hashes to (so one task's events,
# written one unit of work at a time, usually share a stream); once it has touched the money
# stream, its later events go there too. So a unit of work holds at most one ordinary head and
# then the money head, never the reverse: no two writers can wait for each other's heads.
# `seal` records every stream's head in a chain of seals (as transparency logs sign tree
# heads), so that removing the tail of a stream, which its own chain cannot show, is caught.

MONEY_STREAM = 0
STREAMS = 16  # ordinary streams, numbered 1..STREAMS
GENESIS_HASH = "0" * 64  # the `prev_hash` of the money stream's first event (the old chain's)
Heads = dict[int, tuple[int, str]]  # stream -> (its seq, its hash) at its head
_UNIT = "suanli.event_stream"  # session.info: [transaction, the stream it appends to]


def stream_genesis(stream: int) -> str:
    """The `prev_hash` of a stream's first event: binds a chain to its stream's number."""
    if stream == MONEY_STREAM:
        return GENESIS_HASH
    return hashlib.sha256(f"suanli stream {stream}".encode()).hexdigest()


def genesis_heads() -> Heads:
    return {s: (0, stream_genesis(s)) for s in range(STREAMS + 1)}


def carries_money(kind: str) -> bool:
    return kind.startswith(("money.", "order."))


def stream_of(subject: str) -> int:
    """The ordinary stream a subject hashes to (stable: CRC-32, not Python's salted hash)."""
    return zlib.crc32(subject.encode()) % STREAMS + 1


def event_hash(
    prev: str, seq: int, at: datetime, kind: str, subject: str, actor: str, data: dict[str, Any]
) -> str:
    """An event's hash; `seq` is its seq within its stream."""
    body = json.dumps(
        [prev, seq, aware(at).isoformat(), kind, subject, actor, data],
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(body.encode()).hexdigest()


def _unit_stream(session: Session, kind: str, subject: str) -> tuple[Connection, int]:
    """The unit of work's connection and the stream it appends `kind` to (see the rule above)."""
    connection = session.connection()  # begins the unit of work, so that it can be recognised
    transaction = session.get_transaction()
    unit = session.info.get(_UNIT)
    if unit is None or unit[0] is not transaction:
        unit = session.info[_UNIT] = [transaction, None]
    if carries_money(kind):
        unit[1] = MONEY_STREAM
    elif unit[1] is None:
        unit[1] = stream_of(subject)
    return connection, int(unit[1])


# Built once (their cache keys too) and run on the unit's connection: `append_event` runs on
# every state change, so it skips the ORM's statement handling and unit-of-work bookkeeping.
_LOCK_HEAD = (
    select(EventStream.seq, EventStream.hash)
    .where(EventStream.stream == bindparam("stream"))
    .with_for_update()
)
_INSERT_EVENT = insert(EventRow.__table__)  # type: ignore[arg-type]
_MOVE_HEAD = (
    update(EventStream.__table__)  # type: ignore[arg-type]
    .where(EventStream.__table__.c.stream == bindparam("head"))
    .values(seq=bindparam("seq"), hash=bindparam("digest"))
)


def lock_money_stream(session: Session) -> None:
    """Lock the money stream's head until the unit of work ends (the first lock of every
    movement of money, before the balance rows); the unit's later events go to that stream."""
    connection, stream = _unit_stream(session, "money.lock", "")
    connection.execute(_LOCK_HEAD, {"stream": stream})


def append_event(
    session: Session, kind: str, subject: str, actor: str, data: dict[str, Any]
) -> int:
    """Append one event to its stream; its global seq. The stream's head row is locked until
    the transaction ends, so appends to one stream are serialised and its chain never forks;
    other streams' writers proceed."""
    connection, stream = _unit_stream(session, kind, subject)
    prev_seq, prev_hash = connection.execute(_LOCK_HEAD, {"stream": stream}).one()
    moment = now(session)
    stream_seq = prev_seq + 1
    digest = event_hash(prev_hash, stream_seq, moment, kind, subject, actor, data)
    inserted = connection.execute(
        _INSERT_EVENT,
        {
            "stream": stream,
            "stream_seq": stream_seq,
            "at": moment,
            "kind": kind,
            "subject": subject,
            "actor": actor,
            "data": data,
            "prev_hash": prev_hash,
            "hash": digest,
        },
    )
    connection.execute(_MOVE_HEAD, {"head": stream, "seq": stream_seq, "digest": digest})
    key = inserted.inserted_primary_key
    if key is None:
        raise RuntimeError("the database gave no seq for the appended event")
    return int(key[0])


def stream_heads(session: Session, *, lock: bool = False) -> Heads:
    """Every stream's head; with `lock`, held FOR SHARE until the unit of work ends (appenders
    wait: an auditor reads one consistent state). The ordinary streams are locked first and
    the money stream last, the order in which a writer takes them (an auditor holding the
    money head while waiting for an ordinary one could deadlock with a writer holding that
    ordinary head and waiting for money)."""
    query = select(EventStream.stream, EventStream.seq, EventStream.hash).order_by(
        EventStream.stream
    )
    if not lock:
        return {int(s): (int(n), str(h)) for s, n, h in session.execute(query)}
    heads: Heads = {}
    for part in (EventStream.stream != MONEY_STREAM, EventStream.stream == MONEY_STREAM):
        rows = session.execute(query.where(part).with_for_update(read=True))
        heads.update({int(s): (int(n), str(h)) for s, n, h in rows})
    return dict(sorted(heads.items()))


def heads_json(heads: Heads) -> dict[str, list[Any]]:
    return {str(s): [n, h] for s, (n, h) in sorted(heads.items())}


def heads_from(value: dict[str, Any]) -> Heads:
    return {int(s): (int(n), str(h)) for s, (n, h) in value.items()}


def heads_digest(heads: Heads) -> str:
    """One hash over every stream's head."""
    body = json.dumps(heads_json(heads), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


def _seal_root(prev_root: str, seal_id: int, at: datetime, heads: dict[str, Any]) -> str:
    body = json.dumps(
        [prev_root, seal_id, aware(at).isoformat(), heads],
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(body.encode()).hexdigest()


SEAL_EVERY_S = 10.0  # `seal` makes at most one seal per this many seconds


def seal(session: Session, every_s: float = SEAL_EVERY_S) -> int | None:
    """Seal the log: record every stream's committed head in a new seal chained to the last
    one; its id, or None when the last seal is younger than `every_s`, when nothing was
    appended since it, or when another process sealed at the same moment. Safe from any
    process at any time (the scheduling loop calls it every pass): it locks nothing the
    writers take (the seal's id is its primary key: of two concurrent seals one is kept)."""
    moment = now(session)
    last = session.execute(
        select(SealRow.id, SealRow.root, SealRow.heads, SealRow.at)
        .order_by(SealRow.id.desc())
        .limit(1)
    ).first()
    if last is not None and (moment - aware(last.at)).total_seconds() < every_s:
        return None
    heads = heads_json(stream_heads(session))
    if last is None and all(n == 0 for n, _ in heads.values()):
        return None
    if last is not None and heads_from(last.heads) == heads_from(heads):
        return None
    seal_id = 1 if last is None else int(last.id) + 1
    prev_root = GENESIS_HASH if last is None else str(last.root)
    row = dict(
        id=seal_id,
        at=moment,
        heads=heads,
        prev_root=prev_root,
        root=_seal_root(prev_root, seal_id, moment, heads),
    )
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    kept = session.execute(
        dialect.insert(SealRow).values(**row).on_conflict_do_nothing().returning(SealRow.id)
    ).first()
    return None if kept is None else seal_id


@dataclass(frozen=True, slots=True)
class LogCheck:
    """The outcome of `verify_log`: `problem` names the first breach (None when the log is
    intact); `heads` and `seal` (id, root) are where it verified up to (the start when a
    problem was found); `walked` counts the events it hashed."""

    problem: str | None
    heads: Heads
    seal: tuple[int, str]
    walked: int


def verify_log(
    session: Session,
    start: Heads | None = None,
    start_seal: tuple[int, str] = (0, GENESIS_HASH),
    heads: Heads | None = None,
) -> LogCheck:
    """Verify the log from `start` (each stream's verified head; every stream's first event
    when None: a full check) to `heads` (the stream heads now, read when None).

    Each stream's new events must follow each other (stream seq without a gap), chain from the
    verified head and hash to what they hold, and end at the stream's head row; every seal
    made since `start_seal` must chain to the one before it and name heads that are still in
    their streams; `start_seal` itself must be unchanged. A full check also counts the events:
    one outside every stream's chain is found. Cost: one SHA-256 per new event, one indexed
    range read per stream, one look-up per sealed head older than `start`."""
    full = start is None
    begin = genesis_heads() | (start or {})
    now_heads = stream_heads(session) if heads is None else heads
    walked = 0

    def failed(problem: str) -> LogCheck:
        return LogCheck(problem, begin, start_seal, walked)

    for stream in sorted(set(begin) - set(now_heads)):
        return failed(f"stream {stream} has no head row (removed)")
    for stream, (n, _) in sorted(begin.items()):
        if now_heads[stream][0] < n:
            return failed(
                f"stream {stream} ends at #{now_heads[stream][0]} but was verified up to #{n}: "
                "events were removed"
            )

    # the seals since the last verified one: a chain of their own
    sealed: dict[tuple[int, int], tuple[str, int]] = {}  # (stream, seq) -> (hash, seal id)
    seal_id, root = start_seal
    if seal_id > 0:
        kept = session.scalar(select(SealRow.root).where(SealRow.id == seal_id))
        if kept != root:
            return failed(f"seal #{seal_id} was edited or removed after the last audit")
    previous = None
    for row in session.scalars(select(SealRow).where(SealRow.id > seal_id).order_by(SealRow.id)):
        if row.id != seal_id + 1 or row.prev_root != root:
            return failed(f"seal #{seal_id + 1} does not match the chain of seals (removed)")
        if _seal_root(row.prev_root, row.id, row.at, row.heads) != row.root:
            return failed(f"seal #{row.id} does not match its root (edited)")
        for stream, (n, digest) in heads_from(row.heads).items():
            if previous is not None and previous.get(stream) == (n, digest):
                continue  # unchanged since the seal before: already required
            head = now_heads.get(stream, (0, ""))[0]
            if n > head:
                return failed(
                    f"stream {stream} was sealed at #{n} (seal #{row.id}) but ends at #{head}: "
                    "sealed events were removed"
                )
            sealed.setdefault((stream, n), (digest, row.id))
        previous = heads_from(row.heads)
        seal_id, root = row.id, row.root

    # each stream's new events
    for stream, (head_n, head_hash) in sorted(now_heads.items()):
        if stream not in begin:
            return failed(f"stream {stream} is not one of the log's streams (0..{STREAMS})")
        n, prev = begin[stream]
        for (s, seq_in_stream), (digest, by) in sealed.items():
            if s == stream and seq_in_stream <= n:  # sealed before `start`: look it up
                found = (
                    prev
                    if seq_in_stream == n
                    else session.scalar(
                        select(EventRow.hash).where(
                            EventRow.stream == s, EventRow.stream_seq == seq_in_stream
                        )
                    )
                )
                if found != digest:
                    return failed(
                        f"stream {s} #{seq_in_stream} does not match seal #{by} (edited or removed)"
                    )
        rows = session.execute(
            select(
                EventRow.seq,
                EventRow.stream_seq,
                EventRow.at,
                EventRow.kind,
                EventRow.subject,
                EventRow.actor,
                EventRow.data,
                EventRow.prev_hash,
                EventRow.hash,
            )
            .where(
                EventRow.stream == stream, EventRow.stream_seq > n, EventRow.stream_seq <= head_n
            )
            .order_by(EventRow.stream_seq)
            .execution_options(yield_per=2000)
        )
        for seq, stream_seq, at, kind, subject, actor, data, prev_hash, digest in rows:
            if stream_seq != n + 1:
                return failed(
                    f"stream {stream} #{n + 1} is missing (removed; the stream goes on at "
                    f"event #{seq})"
                )
            expected = event_hash(prev, stream_seq, at, kind, subject, actor, data)
            if prev_hash != prev or digest != expected:
                return failed(
                    f"event #{seq} (stream {stream} #{stream_seq}) does not match its stream's "
                    "hash chain (edited or removed)"
                )
            if carries_money(kind) and stream != MONEY_STREAM:
                return failed(f"event #{seq} ({kind}) carries money outside the money stream")
            want = sealed.get((stream, stream_seq))
            if want is not None and want[0] != digest:
                return failed(
                    f"event #{seq} (stream {stream} #{stream_seq}) does not match seal #{want[1]}"
                )
            n, prev = stream_seq, digest
            walked += 1
        if n < head_n:
            return failed(
                f"stream {stream} #{n + 1} to #{head_n} are missing (the stream's tail was removed)"
            )
        if prev != head_hash:
            return failed(
                f"stream {stream}'s head does not match its last event #{head_n} "
                "(edited or removed)"
            )
    if full:
        total = int(session.scalar(select(func.count()).select_from(EventRow)) or 0)
        chained = sum(n for n, _ in now_heads.values())
        if total != chained:
            return failed(
                f"{total - chained} events are in no stream's chain "
                "(their stream or seq was edited)"
            )
    return LogCheck(None, dict(now_heads), (seal_id, root), walked)


def verify_chain(session: Session) -> str | None:
    """None when the whole log is intact (a full `verify_log`), else its first breach."""
    return verify_log(session).problem


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
    moment = now(session)
    task.state = to.value
    task.updated_at = moment
    if to is State.QUEUED:  # back in the queue (preempted, lease expired): its wait restarts
        task.queued_at = moment
    append_event(
        session,
        "task.state",
        task.id,
        actor,
        {"from": current.value, "to": to.value, "reason": reason},
    )
