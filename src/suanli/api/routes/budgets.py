"""Budget routes: a consumer's spending limits per period (`services.budgets`).

* `PUT /v1/budgets/{period}` (`day`, `week` or `month`, calendar periods in China Standard
  Time): create or replace a budget, `{"limit_fen": 10000, "alert_bp": [5000, 8000, 10000]}`;
  a consumer sets its own, the operator names the consumer with `consumer_id`;
* `GET /v1/budgets`: the budgets with this period's spend and the alerts crossed in it (the
  operator: every consumer's, or one with `?consumer_id=`);
* `DELETE /v1/budgets/{period}` (the operator with `?consumer_id=`).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from suanli.api.deps import ERRORS, PlatformDep, Token, run
from suanli.services import budgets
from suanli.services.core import Actor
from suanli.specs import StrictModel

router = APIRouter(tags=["budgets"])
Period = Annotated[str, Path(pattern="^(day|week|month)$", examples=["month"])]


class BudgetSet(StrictModel):
    limit_fen: Annotated[int, Field(ge=0, le=budgets.MAX_LIMIT_FEN)]
    alert_bp: list[Annotated[int, Field(ge=1, le=10_000)]] | None = None  # default: settings
    consumer_id: Annotated[str, Field(min_length=1, max_length=64)] | None = None


class AlertRead(BaseModel):
    threshold_bp: int
    spent_fen: int
    at: str


class BudgetRead(BaseModel):
    id: str
    consumer: str
    period: str
    limit_fen: int
    alert_bp: list[int]
    period_start: str
    period_end: str
    spent_fen: int
    left_fen: int
    alerts: list[AlertRead]
    created_by: str
    updated_at: str


class BudgetList(BaseModel):
    budgets: list[BudgetRead]


def budget_read(view: budgets.BudgetView) -> BudgetRead:
    return BudgetRead(**budgets.view_read(view))


@router.put("/v1/budgets/{period}", response_model=BudgetRead, responses=ERRORS)
async def put_budget(
    period: Period, body: BudgetSet, token: Token, platform: PlatformDep
) -> BudgetRead:
    thresholds = body.alert_bp if body.alert_bp is not None else platform.settings.budget_alert_bp

    def work(session: Session, who: Actor) -> BudgetRead:
        row = budgets.put(session, who, period, body.limit_fen, list(thresholds), body.consumer_id)
        views = budgets.listing(session, who, row.principal_id)
        return budget_read(next(v for v in views if v.budget.id == row.id))

    return await run(platform, token, True, work)


@router.get("/v1/budgets", response_model=BudgetList, responses=ERRORS)
async def list_budgets(
    token: Token,
    platform: PlatformDep,
    consumer_id: Annotated[str | None, Query(max_length=64)] = None,
) -> BudgetList:
    return await run(
        platform,
        token,
        False,
        lambda session, who: BudgetList(
            budgets=[budget_read(v) for v in budgets.listing(session, who, consumer_id)]
        ),
    )


@router.delete("/v1/budgets/{period}", status_code=204, responses=ERRORS)
async def delete_budget(
    period: Period,
    token: Token,
    platform: PlatformDep,
    consumer_id: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    await run(
        platform,
        token,
        True,
        lambda session, who: budgets.remove(session, who, period, consumer_id),
    )
    return Response(status_code=204)
