"""Compute vouchers (算力券): the operator issues them (`POST /v1/vouchers`) and runs the expiry
sweep (`POST /v1/vouchers/expire`); the operator lists every voucher, a consumer the vouchers it
may spend (`GET /v1/vouchers`). Money is answered as `market.money` (integer fen). A voucher's
ledger account (`voucher:<id>`) has a statement at `GET /v1/statement?account=voucher:<id>`."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from suanli.api.deps import ERRORS, PlatformDep, Token, run
from suanli.services import vouchers
from suanli.services.core import Actor

router = APIRouter(tags=["market"], responses=ERRORS)


class VoucherCreate(BaseModel):
    """A voucher to issue: its value in fen, its expiry, who may spend it."""

    model_config = ConfigDict(extra="forbid")
    fen: int = Field(ge=1, le=10**13, description="face value in fen / 面值（分）")
    expires_at: datetime = Field(description="RFC 3339, with a zone / 到期时间")
    consumers: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default_factory=list, max_length=1000
    )
    groups: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default_factory=list, max_length=1000
    )
    memo: str = Field(default="", max_length=500)


class VoucherRead(BaseModel):
    id: str
    issuer: str
    face: dict[str, Any]
    left: dict[str, Any]
    expires_at: str
    state: str
    consumers: list[str]
    groups: list[str]
    memo: str
    account: str
    created_at: str
    expired_at: str | None


class VoucherList(BaseModel):
    vouchers: list[VoucherRead]


@router.post("/v1/vouchers", status_code=201, response_model=VoucherRead)
async def issue(body: VoucherCreate, token: Token, platform: PlatformDep) -> VoucherRead:
    def work(session: Session, who: Actor) -> VoucherRead:
        row = vouchers.issue(
            session,
            who,
            body.fen,
            body.expires_at,
            body.consumers,
            body.groups,
            body.memo,
        )
        return VoucherRead(**vouchers.read(row, row.face_fen))

    read = await run(platform, token, True, work)
    platform.capacity_grew.set()  # a full pass: a consumer waiting for money may run now
    return read


@router.get("/v1/vouchers", response_model=VoucherList)
async def listing(
    token: Token,
    platform: PlatformDep,
    state: Annotated[str | None, Query(max_length=16)] = None,
) -> VoucherList:
    def work(session: Session, who: Actor) -> VoucherList:
        found = vouchers.list_vouchers(session, who, state)
        return VoucherList(vouchers=[VoucherRead(**v) for v in found])

    return await run(platform, token, False, work)


@router.post("/v1/vouchers/expire", response_model=VoucherList)
async def expire(token: Token, platform: PlatformDep) -> VoucherList:
    def work(session: Session, who: Actor) -> VoucherList:
        swept = vouchers.expire_now(session, who)
        return VoucherList(vouchers=[VoucherRead(**vouchers.read(v, 0)) for v in swept])

    return await run(platform, token, True, work)
