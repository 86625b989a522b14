"""Moving a server's virtual clock (`suanli serve --clock virtual`), for tests and twin-driven
servers: only the operator may, only forward, and every move is an audit event (`clock.moved`).
A server on the system clock has no clock to move (404)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from suanli.clock import Clock, VirtualClock
from suanli.services.core import Actor, Conflict, NotFound, Role, append_event, require


def move_clock(
    session: Session,
    who: Actor,
    clock: Clock,
    advance_s: float | None = None,
    to: datetime | None = None,
) -> datetime:
    """Move `clock` forward by `advance_s` or to `to`; the new time. 404 unless it is a
    `VirtualClock`, 403 unless `who` is the operator, 409 for a move backwards."""
    if not isinstance(clock, VirtualClock):
        raise NotFound("virtual clock", "this server runs on the system clock")
    require(who, Role.OPERATOR)
    before = clock.now()
    target = to if to is not None else before + timedelta(seconds=advance_s or 0.0)
    if target < before:
        raise Conflict(
            f"the clock is at {before.isoformat()}; it does not go back to {target.isoformat()}",
            f"时钟已在 {before.isoformat()}，不能回到 {target.isoformat()}",
        )
    append_event(
        session,
        "clock.moved",
        "clock",
        who.id,
        {"from": before.isoformat(), "to": target.isoformat()},
    )
    return clock.set(target)
