"""Group routes (operator): groups of consumers with a guaranteed share and a cap
(`services.groups`; how the pass uses them: `services.sharing`).

* `POST /v1/groups` `{"name": "lab-a", "guaranteed_bp": 5000, "cap_device_hours": 100,
  "period": "week"}`: create a group (201);
* `GET /v1/groups`, `GET /v1/groups/{id}`: groups with their members;
* `PATCH /v1/groups/{id}`: change the fields given (`"cap_device_hours": null` removes the cap);
* `PUT /v1/consumers/{id}/group` `{"group_id": "grp-..."}` (or `null`: the public share):
  a consumer's group.
"""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel
from sqlalchemy.orm import Session

from suanli.api.deps import ERRORS, PlatformDep, Token, run
from suanli.services import groups
from suanli.services.core import Actor

router = APIRouter(tags=["groups"], responses=ERRORS)


class GroupRead(BaseModel):
    id: str
    name: str
    guaranteed_bp: int
    cap_device_hours: float | None
    period: str
    period_start: str
    members: list[str]
    created_at: str
    updated_at: str


class MemberRead(BaseModel):
    consumer: str
    group_id: str | None


def group_read(view: groups.GroupView) -> GroupRead:
    return GroupRead(
        id=view.id,
        name=view.name,
        guaranteed_bp=view.guaranteed_bp,
        cap_device_hours=view.cap_device_hours,
        period=view.period,
        period_start=view.period_start.isoformat(),
        members=view.members,
        created_at=view.created_at.isoformat(),
        updated_at=view.updated_at.isoformat(),
    )


@router.post("/v1/groups", status_code=201, response_model=GroupRead)
async def create_group(body: groups.GroupCommand, token: Token, platform: PlatformDep) -> GroupRead:
    def work(session: Session, who: Actor) -> GroupRead:
        row = groups.create(session, who, body)
        session.flush()
        return group_read(groups.view(session, row, []))

    return await run(platform, token, True, work)


@router.get("/v1/groups", response_model=list[GroupRead])
async def list_groups(token: Token, platform: PlatformDep) -> list[GroupRead]:
    return await run(
        platform,
        token,
        False,
        lambda session, who: [group_read(v) for v in groups.listing(session, who)],
    )


@router.get("/v1/groups/{group_id}", response_model=GroupRead)
async def get_group(group_id: str, token: Token, platform: PlatformDep) -> GroupRead:
    return await run(
        platform, token, False, lambda session, who: group_read(groups.find(session, who, group_id))
    )


@router.patch("/v1/groups/{group_id}", response_model=GroupRead)
async def change_group(
    group_id: str, body: groups.GroupChange, token: Token, platform: PlatformDep
) -> GroupRead:
    def work(session: Session, who: Actor) -> GroupRead:
        row = groups.update(session, who, group_id, body)
        return group_read(groups.view(session, row))

    read = await run(platform, token, True, work)
    platform.capacity_grew.set()  # a full pass: shares changed for every queued task
    platform.wake.set()
    return read


@router.put("/v1/consumers/{consumer_id}/group", response_model=MemberRead)
async def set_consumer_group(
    consumer_id: str, body: groups.MemberCommand, token: Token, platform: PlatformDep
) -> MemberRead:
    def work(session: Session, who: Actor) -> MemberRead:
        consumer = groups.set_group(session, who, consumer_id, body.group_id)
        return MemberRead(consumer=consumer.id, group_id=consumer.group_id)

    read = await run(platform, token, True, work)
    platform.capacity_grew.set()
    platform.wake.set()
    return read
