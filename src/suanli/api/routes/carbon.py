"""Carbon routes: observed hourly carbon intensity of provinces' grids, fed by the operator,
and its forecast (`services.carbon`), which the scheduling pass, quotes and admission price
carbon on.

* `POST /v1/carbon` (operator) `{"province": "内蒙古", "source": "...", "values": [{"hour":
  "2026-03-09T13:00:00Z", "kg_per_kwh": 0.61}, ...]}`: record observed hours, all or nothing
  (201); an hour fed again is replaced;
* `GET /v1/carbon?province=P&hours=24` (any principal): each province with observations (or
  the one asked), its last 72 observed hours and its forecast with the 80% interval, or why
  there is none.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from suanli.api.deps import ERRORS, PlatformDep, Token, run
from suanli.api.routes.forecasts import HourValueRead, LeadWeightsRead
from suanli.forecast.model import LEVEL
from suanli.services import carbon, forecasts
from suanli.services.core import Actor

router = APIRouter(tags=["carbon"], responses=ERRORS)


class RecordedRead(BaseModel):
    province: str = Field(description="the province, as the catalog names it (Chinese)")
    recorded: int = Field(description="hours written")
    replaced: int = Field(description="of which were already recorded (their values replaced)")
    first: str = Field(description="the first hour written, UTC (ISO 8601)")
    last: str = Field(description="the last hour written, UTC (ISO 8601)")


class ProvinceCarbonRead(BaseModel):
    province: str
    source: str | None = Field(description="the latest observation's source")
    observed_hours: int = Field(description="contiguous observed hours the forecast is made from")
    observed: list[HourValueRead] = Field(
        description="the last 72 observed hours, oldest first (kg CO2 per kWh)"
    )
    start: str | None = Field(
        description="the first forecast hour: the hour after the latest observed, UTC"
    )
    mean: list[float] = Field(description="forecast for each hour from `start`; [] if none")
    lower: list[float] = Field(description="lower bound of the `level` interval, each hour")
    upper: list[float] = Field(description="upper bound of the `level` interval, each hour")
    weights: list[LeadWeightsRead] | None
    unavailable: str | None = Field(
        description="why there is no forecast (the pass then uses the documented daily "
        "shape, synthetic, ESTIMATE), else null"
    )


class CarbonRead(BaseModel):
    hours: int
    level: float
    unit: str
    provinces: list[ProvinceCarbonRead]


def _read(found: carbon.ProvinceForecast, hours: int) -> ProvinceCarbonRead:
    def rounded(values: np.ndarray) -> list[float]:
        return [round(float(v), 4) for v in values[:hours]]

    return ProvinceCarbonRead(
        province=found.province,
        source=found.source,
        observed_hours=found.observed_hours,
        observed=[
            HourValueRead(hour=forecasts.iso_utc(hour), value=value)
            for hour, value in found.observed
        ],
        start=None if found.start is None else forecasts.iso_utc(found.start),
        mean=rounded(found.ahead),
        lower=rounded(found.lower),
        upper=rounded(found.upper),
        weights=None
        if found.weights is None
        else [
            LeadWeightsRead(first_h=w.first_h, last_h=w.last_h, **w.named()) for w in found.weights
        ],
        unavailable=found.unavailable,
    )


@router.post("/v1/carbon", status_code=201, response_model=RecordedRead)
async def record_carbon(
    body: carbon.CarbonObservations, token: Token, platform: PlatformDep
) -> RecordedRead:
    def work(session: Session, who: Actor) -> RecordedRead:
        done = carbon.record(session, who, body)
        return RecordedRead(
            province=done.province,
            recorded=done.recorded,
            replaced=done.replaced,
            first=forecasts.iso_utc(done.first),
            last=forecasts.iso_utc(done.last),
        )

    read = await run(platform, token, True, work)
    platform.wake.set()  # queued deferrable work is decided on the new forecast
    return read


@router.get("/v1/carbon", response_model=CarbonRead)
async def get_carbon(
    token: Token,
    platform: PlatformDep,
    province: Annotated[str | None, Query(max_length=40)] = None,
    hours: Annotated[int, Query(ge=1, le=carbon.FORECAST_H)] = 24,
) -> CarbonRead:
    def work(session: Session, _: Actor) -> CarbonRead:
        asked = None if province is None else [carbon.province_named(province)]
        found = carbon.forecasts(session, asked)
        return CarbonRead(
            hours=hours,
            level=LEVEL,
            unit="kg CO2 per kWh, location-based",
            provinces=[_read(f, hours) for f in found.values()],
        )

    return await run(platform, token, False, work)
