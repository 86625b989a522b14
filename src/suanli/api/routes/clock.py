"""`POST /v1/clock`: move a virtual clock (a server started with `suanli serve --clock
virtual`), so that tests and twin-driven servers move time instead of sleeping: leases expire,
tokens end and deferred work comes due when the clock says so. Operator only, forward only, an
audit event each; 404 on a server that runs on the system clock. The answer comes once this
process's scheduling pass has run at the new time (`passed`; false when this process does not
lead the scheduling, or the pass took longer than PASS_WAIT_S)."""

from __future__ import annotations

import asyncio
from datetime import datetime

from fastapi import APIRouter
from sqlalchemy.orm import Session

from suanli.api.deps import ERRORS, PlatformDep, Token, run
from suanli.api.schemas import ClockMove, ClockRead
from suanli.services.clocks import move_clock
from suanli.services.core import Actor

router = APIRouter(tags=["ops"], responses=ERRORS)
PASS_WAIT_S = 10.0  # real seconds to wait for this process's pass at the new time


@router.post("/v1/clock", response_model=ClockRead)
async def move(body: ClockMove, token: Token, platform: PlatformDep) -> ClockRead:
    def work(session: Session, who: Actor) -> datetime:
        return move_clock(session, who, platform.clock, body.advance_s, body.to)

    moved = await run(platform, token, True, work)
    platform.capacity_grew.set()  # a full pass: leases may have expired, deferred work come due
    platform.wake.set()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + PASS_WAIT_S
    passed = False
    while platform.elector.lead is not None and loop.time() < deadline:
        if platform.passed_at is not None and platform.passed_at >= moved:
            passed = True
            break
        await asyncio.sleep(0.005)
    return ClockRead(now=moved, passed=passed)
