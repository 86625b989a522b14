"""Site and pool routes (providers): register a site, list sites with their owner's reputation,
add a pool (which tells the scheduling pass capacity grew), list pools with their free devices."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy.orm import Session

from suanli.api.deps import ERRORS, PlatformDep, Token, run
from suanli.api.schemas import PoolCreate, SiteCreate
from suanli.services import capacity as capacity_service
from suanli.services.views import (
    Actor,
    PoolRead,
    SiteRead,
    pool_read,
    pools_with_free,
    site_read,
    sites_with_reputation,
)

router = APIRouter(tags=["providers"], responses=ERRORS)


@router.post("/v1/sites", status_code=201, response_model=SiteRead)
async def add_site(body: SiteCreate, token: Token, platform: PlatformDep) -> SiteRead:
    return await run(
        platform,
        token,
        True,
        lambda session, who: site_read(capacity_service.add_site(session, who, body)),
    )


@router.get("/v1/sites", response_model=list[SiteRead])
async def sites(token: Token, platform: PlatformDep) -> list[SiteRead]:
    return await run(platform, token, False, lambda session, _: sites_with_reputation(session))


@router.post("/v1/pools", status_code=201, response_model=PoolRead)
async def add_pool(body: PoolCreate, token: Token, platform: PlatformDep) -> PoolRead:
    def work(session: Session, who: Actor) -> PoolRead:
        pool = capacity_service.add_pool(session, who, body)
        return pool_read(pool, pool.count)

    read = await run(platform, token, True, work)
    platform.capacity_grew.set()
    platform.wake.set()
    return read


@router.get("/v1/pools", response_model=list[PoolRead])
async def pools(token: Token, platform: PlatformDep) -> list[PoolRead]:
    return await run(platform, token, False, lambda session, _: pools_with_free(session))
