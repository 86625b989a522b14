"""Forecast route: `GET /v1/forecasts?site=ID&hours=24&level=0.8`, each site's busy devices
per hour from the platform's own events, and the forecast of the hours ahead with its interval
(`services.forecasts`). Any principal may read it: load forecasts help consumers choose when to
run and providers plan capacity."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel
from sqlalchemy.orm import Session

from suanli.api.deps import ERRORS, PlatformDep, Token, run
from suanli.forecast.model import LEVEL, MAX_HORIZON_H
from suanli.services import forecasts
from suanli.services.core import Actor

router = APIRouter(tags=["forecasts"], responses=ERRORS)


class SiteForecastRead(BaseModel):
    site: str
    history_hours: int
    history: list[float]
    mean: list[float]
    lower: list[float]
    upper: list[float]
    weights: dict[str, float] | None
    unavailable: str | None


class ForecastsRead(BaseModel):
    start: str
    hours: int
    level: float
    unit: str
    method: str
    sites: list[SiteForecastRead]


@router.get("/v1/forecasts", response_model=ForecastsRead)
async def get_forecasts(
    token: Token,
    platform: PlatformDep,
    site: Annotated[str | None, Query(max_length=128)] = None,
    hours: Annotated[int, Query(ge=1, le=MAX_HORIZON_H)] = 24,
    level: Annotated[float, Query(gt=0, lt=1)] = LEVEL,
) -> ForecastsRead:
    def work(session: Session, _: Actor) -> ForecastsRead:
        start, made = forecasts.site_forecasts(session, site, hours, level)
        return ForecastsRead(**forecasts.forecast_read(start, made, hours, level))

    return await run(platform, token, False, work)
