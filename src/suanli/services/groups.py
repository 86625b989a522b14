"""Groups of consumers (organisations) with quotas and fair share (issue 15, item 3): the
operator's use cases.

A group has a guaranteed share of each device kind's devices (`guaranteed_bp`, basis points;
the groups' guarantees together are at most 10000, the rest is the implicit `public` group of
consumers without a group), an optional cap of device-hours per calendar period (`day`, `week`
or `month`, China Standard Time), and members (consumers; a consumer is in at most one group).
How the scheduling pass uses them: `services.sharing` and `scheduler.fairshare`.

Every change is an audit event: `group.created`, `group.updated`, `group.member` (from, to).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from suanli.errors import InvalidValue
from suanli.scheduler.fairshare import FULL_BP, PUBLIC, period_start
from suanli.services.commands import Command
from suanli.services.core import (
    Actor,
    Conflict,
    NotFound,
    Role,
    append_event,
    aware,
    new_id,
    now,
    require,
)
from suanli.specs import Name
from suanli.store.models import GroupRow, Principal

Bp = Annotated[int, Field(ge=0, le=FULL_BP)]
Hours = Annotated[float, Field(ge=0, le=1e12)]
Period = Literal["day", "week", "month"]


class GroupCommand(Command):
    """Create a group: its name, guaranteed share (basis points of each device kind), cap of
    device-hours per period (none: no cap) and period."""

    name: Name
    guaranteed_bp: Bp = 0
    cap_device_hours: Hours | None = None
    period: Period = "month"


class GroupChange(Command):
    """Change a group: only the fields given (`cap_device_hours: null` removes the cap)."""

    name: Name | None = None
    guaranteed_bp: Bp | None = None
    cap_device_hours: Hours | None = None
    period: Period | None = None


class MemberCommand(Command):
    """Put a consumer in a group (`group_id`), or out of any (`null`: the public share)."""

    group_id: Name | None = None


@dataclass(frozen=True)
class GroupView:
    id: str
    name: str
    guaranteed_bp: int
    cap_device_hours: float | None
    period: str
    period_start: datetime
    members: list[str]
    created_at: datetime
    updated_at: datetime


def _check_name(session: Session, name: str, ident: str | None = None) -> None:
    if name.strip().lower() == PUBLIC:
        raise InvalidValue(
            "name",
            name,
            f"a name other than '{PUBLIC}' (the share of consumers without a group)",
            f"“{PUBLIC}”以外的名称（它是无组用户的份额）",
        )
    found = session.scalar(select(GroupRow.id).where(GroupRow.name == name))
    if found is not None and found != ident:
        raise Conflict(
            f"a group named '{name}' exists ({found})", f"已有名为“{name}”的组（{found}）"
        )


def _check_share(session: Session, bp: int, ident: str | None = None) -> None:
    """The groups' guarantees together may not exceed the whole network."""
    query = select(func.coalesce(func.sum(GroupRow.guaranteed_bp), 0))
    if ident is not None:
        query = query.where(GroupRow.id != ident)
    others = int(session.scalar(query) or 0)
    if others + bp > FULL_BP:
        raise InvalidValue(
            "guaranteed_bp",
            bp,
            f"at most {FULL_BP - others} (the other groups are guaranteed {others} of {FULL_BP} "
            "basis points); lower another group's share first",
            f"不超过 {FULL_BP - others}（其他组已保证 {others}/{FULL_BP} 基点）；"
            "请先降低其他组的份额",
        )


def _group(session: Session, ident: str) -> GroupRow:
    row = session.get(GroupRow, ident)
    if row is None:
        raise NotFound("group", ident)
    return row


def create(session: Session, who: Actor, spec: GroupCommand) -> GroupRow:
    """A new group (operator only)."""
    require(who, Role.OPERATOR)
    _check_name(session, spec.name)
    _check_share(session, spec.guaranteed_bp)
    moment = now(session)
    row = GroupRow(
        id=new_id("grp"),
        name=spec.name,
        guaranteed_bp=spec.guaranteed_bp,
        cap_device_hours=spec.cap_device_hours,
        period=spec.period,
        created_at=moment,
        updated_at=moment,
    )
    session.add(row)
    append_event(
        session,
        "group.created",
        row.id,
        who.id,
        {
            "name": row.name,
            "guaranteed_bp": row.guaranteed_bp,
            "cap_device_hours": row.cap_device_hours,
            "period": row.period,
        },
    )
    return row


def update(session: Session, who: Actor, ident: str, change: GroupChange) -> GroupRow:
    """Change the fields given of a group (operator only); an event with each change."""
    require(who, Role.OPERATOR)
    row = session.get(GroupRow, ident, with_for_update=True)
    if row is None:
        raise NotFound("group", ident)
    given = change.model_fields_set
    changes: dict[str, list[object]] = {}
    if "name" in given and change.name is not None and change.name != row.name:
        _check_name(session, change.name, row.id)
        changes["name"] = [row.name, change.name]
        row.name = change.name
    if "guaranteed_bp" in given and change.guaranteed_bp is not None:
        _check_share(session, change.guaranteed_bp, row.id)
        if change.guaranteed_bp != row.guaranteed_bp:
            changes["guaranteed_bp"] = [row.guaranteed_bp, change.guaranteed_bp]
            row.guaranteed_bp = change.guaranteed_bp
    if "cap_device_hours" in given and change.cap_device_hours != row.cap_device_hours:
        changes["cap_device_hours"] = [row.cap_device_hours, change.cap_device_hours]
        row.cap_device_hours = change.cap_device_hours
    if "period" in given and change.period is not None and change.period != row.period:
        changes["period"] = [row.period, change.period]
        row.period = change.period
    if changes:
        row.updated_at = now(session)
        append_event(session, "group.updated", row.id, who.id, changes)
    return row


def set_group(session: Session, who: Actor, consumer_id: str, group_id: str | None) -> Principal:
    """Put a consumer in a group, or (None) in the public share (operator only)."""
    require(who, Role.OPERATOR)
    consumer = session.get(Principal, consumer_id, with_for_update=True)
    if consumer is None:
        raise NotFound("consumer", consumer_id)
    if consumer.role != Role.CONSUMER.value:
        raise InvalidValue(
            "principal_id",
            consumer_id,
            f"a consumer (this is a {consumer.role})",
            f"消费者（这是 {consumer.role}）",
        )
    if group_id is not None:
        _group(session, group_id)
    if consumer.group_id != group_id:
        append_event(
            session,
            "group.member",
            consumer.id,
            who.id,
            {"from": consumer.group_id, "to": group_id},
        )
        consumer.group_id = group_id
    return consumer


def view(session: Session, row: GroupRow, members: list[str] | None = None) -> GroupView:
    if members is None:
        members = list(
            session.scalars(
                select(Principal.id).where(Principal.group_id == row.id).order_by(Principal.id)
            )
        )
    return GroupView(
        row.id,
        row.name,
        row.guaranteed_bp,
        row.cap_device_hours,
        row.period,
        period_start(row.period, aware(now(session))),
        members,
        aware(row.created_at),
        aware(row.updated_at),
    )


def listing(session: Session, who: Actor) -> list[GroupView]:
    """Every group with its members (operator only)."""
    require(who, Role.OPERATOR)
    members: dict[str, list[str]] = {}
    for ident, group in session.execute(
        select(Principal.id, Principal.group_id)
        .where(Principal.group_id.is_not(None))
        .order_by(Principal.id)
    ):
        if group is not None:
            members.setdefault(group, []).append(ident)
    rows = session.scalars(select(GroupRow).order_by(GroupRow.name)).all()
    return [view(session, row, members.get(row.id, [])) for row in rows]


def find(session: Session, who: Actor, ident: str) -> GroupView:
    require(who, Role.OPERATOR)
    return view(session, _group(session, ident))
