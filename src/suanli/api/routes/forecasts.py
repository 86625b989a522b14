"""Forecast route: `GET /v1/forecasts?site=ID&hours=24&level=0.8`, each site's busy devices
per hour from the platform's own events, and the forecast of the hours ahead with its interval
(`services.forecasts`), beside the last 72 actual hours with their hour timestamps (what a chart
of "actual vs forecast" draws), and each pool's forecast price per device-hour for the same hours
(the market's pricing rules at the forecast utilisation and each hour's time of use). Any
principal may read it: load and price forecasts help consumers choose when to run and providers
plan capacity."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from suanli.api.deps import ERRORS, PlatformDep, Token, run
from suanli.forecast.model import LEVEL, MAX_HORIZON_H
from suanli.services import forecasts
from suanli.services.core import Actor

router = APIRouter(tags=["forecasts"], responses=ERRORS)


class HourValueRead(BaseModel):
    """One hour's actual value: the hour's start (UTC, ISO 8601, `Z`) and the mean over it."""

    hour: str = Field(description="start of the hour, UTC (ISO 8601)")
    value: float = Field(description="busy devices, mean over the hour")


class HourPriceRead(BaseModel):
    """One forecast hour's price of one device-hour on a pool (integer fen, the platform fee
    included, not preemptible, no data moved), at the forecast's mean load and at its interval's
    lower and upper load: a forecast of the posted price, not a quote."""

    hour: str = Field(description="start of the hour, UTC (ISO 8601)")
    local_hour: int = Field(description="the hour in China Standard Time (0-23), for time of use")
    time_of_use: str = Field(description="the site's time-of-use multiplier that hour (decimal)")
    utilisation: float = Field(
        description="the pool's forecast utilisation at the mean load, in [0, 1]: the site's "
        "forecast busy devices over all its devices"
    )
    utilisation_at_lower: float = Field(description="utilisation at the interval's lower load")
    utilisation_at_upper: float = Field(description="utilisation at the interval's upper load")
    price_fen: int = Field(description="price of one device-hour at `utilisation`, fen")
    price_fen_at_lower: int = Field(description="price at `utilisation_at_lower`, fen")
    price_fen_at_upper: int = Field(description="price at `utilisation_at_upper`, fen")


class PoolPricesRead(BaseModel):
    """A pool's price forecast for each forecast hour, and the cheapest of them."""

    pool: str
    device: str = Field(description="the pool's device model")
    count: int = Field(description="the pool's devices")
    posted_fen_per_device_hour: int = Field(
        description="the provider's posted price per device-hour (before time of use, "
        "utilisation and fee), fen"
    )
    hours: list[HourPriceRead] = Field(description="each forecast hour from `start`, in order")
    cheapest: HourPriceRead | None = Field(
        description="the hour with the lowest `price_fen` (the earliest on a tie)"
    )


class LeadWeightsRead(BaseModel):
    first_h: int = Field(description="the first lead of the block (1: the hour from `start`)")
    last_h: int = Field(description="its last lead")
    naive: float
    seasonal_naive: float
    holt_winters: float
    climatology: float = Field(description="each hour of the day's mean over the last 28 days")


class SiteForecastRead(BaseModel):
    site: str
    history_hours: int = Field(description="whole hours of history the forecast had")
    history: list[float] = Field(description="the last `hours` actual hours, oldest first")
    actual: list[HourValueRead] = Field(
        description="the last 72 actual hours (fewer since registration), oldest first, with "
        "their hours; the last is the hour before `start`"
    )
    mean: list[float] = Field(description="forecast for each hour from `start`; [] if none")
    lower: list[float] = Field(description="lower bound of the `level` interval, each hour")
    upper: list[float] = Field(description="upper bound of the `level` interval, each hour")
    weights: list[LeadWeightsRead] | None = Field(
        description="the weights of the four forecasters combined, by blocks of leads (null "
        "when there is no forecast)"
    )
    unavailable: str | None = Field(description="why there is no forecast, else null")
    prices: list[PoolPricesRead] = Field(
        description="each pool's price forecast, by pool id; [] when there is none"
    )
    prices_unavailable: str | None = Field(
        description="why there is no price forecast (no load forecast, no pools), else null"
    )


class ForecastsRead(BaseModel):
    start: str = Field(description="the first forecast hour (the current hour), UTC (ISO 8601)")
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
        prices = forecasts.price_forecasts(session, made)
        return ForecastsRead(**forecasts.forecast_read(start, made, hours, level, prices))

    return await run(platform, token, False, work)
