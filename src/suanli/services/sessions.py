"""Console sessions: sign in with a token, act through a random session id, sign out.

Owns the `ConsoleSession` rows. Signing in checks the token (unknown, revoked or expired: 401;
an agent token, scoped to one site: refused) and opens a session: a random 256-bit id that goes
to the browser in a cookie and is stored here only as its SHA-256, with its own random CSRF
token. The token itself never reaches the browser after the sign-in form.

A session lives `SESSION_TTL` (12 hours) from sign-in, a fixed expiry that is not extended by
use; it ends earlier at sign-out (`ended_at`), and is refused as soon as the token it was opened
with is revoked or expires. Every lookup re-reads the session and its token from the database,
so an ended session or a revoked token stops working on every server process at once.
Signing in and out are audit events (`console.signin`, `console.signout`).
Invariant: nothing here commits; the caller owns the unit of work.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from suanli.errors import SuanliError
from suanli.services.core import Actor, Unauthorized, append_event, authenticate, aware, now
from suanli.store.models import ConsoleSession, Principal, Token

SESSION_TTL = timedelta(hours=12)


class AgentTokenRefused(SuanliError):
    """An agent token (scoped to one site) cannot open a console session."""

    def __init__(self) -> None:
        super().__init__(
            "an agent token cannot sign in to the console; sign in with the provider's own token",
            "代理令牌不能登录控制台；请使用提供方本人的令牌登录",
        )


@dataclass(frozen=True)
class Opened:
    """A new session: `cookie` goes to the browser (once), `csrf` into every form it posts."""

    cookie: str
    csrf: str
    principal: Actor
    expires_at: datetime


def digest(secret: str) -> str:
    """SHA-256 (hex) of a random secret: how tokens and session ids are stored (both are
    256-bit random, so a fast hash is enough)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def _live_token(row: Token | None, moment: datetime) -> bool:
    return (
        row is not None
        and row.revoked_at is None
        and (row.expires_at is None or aware(row.expires_at) > moment)
    )


def open_session(session: Session, token: str) -> Opened:
    """Sign in with `token`: Unauthorized when it is unknown, revoked or expired;
    AgentTokenRefused for an agent token."""
    caller = authenticate(session, token)  # 401: unknown, revoked or expired
    if caller.site_id is not None:
        raise AgentTokenRefused()
    principal = caller.principal
    moment = now(session)
    cookie = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    id_hash = digest(cookie)
    expires_at = moment + SESSION_TTL
    session.add(
        ConsoleSession(
            id_hash=id_hash,
            principal_id=principal.id,
            token_id=caller.token_id,
            csrf=csrf,
            created_at=moment,
            expires_at=expires_at,
            ended_at=None,
        )
    )
    session.flush()
    append_event(
        session,
        "console.signin",
        principal.id,
        principal.id,
        {"session": id_hash[:16], "token": caller.token_id, "expires_at": expires_at.isoformat()},
    )
    return Opened(cookie, csrf, principal, expires_at)


def resolve(session: Session, cookie: str) -> tuple[Principal, ConsoleSession]:
    """The principal acting through the session `cookie`, and the session; Unauthorized when
    the session is unknown, ended or expired, or its token is revoked or expired."""
    found = session.execute(
        select(ConsoleSession, Token, Principal)
        .join(Token, Token.id == ConsoleSession.token_id)
        .join(Principal, Principal.id == ConsoleSession.principal_id)
        .where(ConsoleSession.id_hash == digest(cookie))
    ).first()
    if found is None:
        raise Unauthorized()
    row, token, principal = found
    moment = now(session)
    if row.ended_at is not None or aware(row.expires_at) <= moment:
        raise Unauthorized()
    if not _live_token(token, moment) or token.site_id is not None:
        raise Unauthorized()
    return principal, row


def csrf_matches(row: ConsoleSession, given: str | None) -> bool:
    """Whether `given` is the session's CSRF token (compared in constant time)."""
    return bool(given) and hmac.compare_digest(row.csrf.encode(), str(given).encode())


def end_session(session: Session, cookie: str) -> bool:
    """Sign out: the session ends now (its cookie no longer works, even replayed). False when
    there was no live session for `cookie`."""
    row = session.scalars(
        select(ConsoleSession).where(ConsoleSession.id_hash == digest(cookie)).with_for_update()
    ).first()
    if row is None or row.ended_at is not None:
        return False
    moment = now(session)
    row.ended_at = moment
    session.flush()
    append_event(
        session,
        "console.signout",
        row.principal_id,
        row.principal_id,
        {"session": row.id_hash[:16]},
    )
    return True
