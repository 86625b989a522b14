"""Payout routes (`services.payouts`): the operator's payout runs, providers' statements.

* `POST /v1/payouts/runs {"period": "2026-11"}` (operator): pay every provider's receivable
  earned up to the month's end in one run; 201 with the run, or 200 with the existing run when
  the period has run already (nothing changes);
* `GET /v1/payouts/runs` (operator), `GET /v1/payouts/runs/{period}`;
* `GET /v1/statements` (a provider: its own; the operator: all, or `?provider_id=`,
  `?period=`), `GET /v1/statements/{id}` (JSON), `/v1/statements/{id}.csv` and `.html`.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from suanli.api.deps import ERRORS, PlatformDep, Token, run
from suanli.console import i18n
from suanli.console.pages_statements import render_statement
from suanli.services import payouts
from suanli.services.core import Actor
from suanli.specs import StrictModel

router = APIRouter(tags=["payouts"])


class RunCreate(StrictModel):
    period: Annotated[str, Field(min_length=7, max_length=7, examples=["2026-11"])]


class RunRead(BaseModel):
    id: str
    period: str
    period_start: str
    period_end: str
    created_by: str
    created_at: str
    total_fen: int
    providers: int
    created: bool
    statements: list[dict[str, Any]]


class StatementRead(BaseModel):
    id: str
    run: str
    provider: str
    period: str
    opening_fen: int
    earned_fen: int
    paid_fen: int
    closing_fen: int
    lines: list[dict[str, Any]]
    created_at: str


class StatementList(BaseModel):
    statements: list[StatementRead]


class RunList(BaseModel):
    runs: list[RunRead]


@router.post(
    "/v1/payouts/runs",
    status_code=201,
    response_model=RunRead,
    responses={**ERRORS, 200: {"model": RunRead, "description": "The period had run already"}},
)
async def create_run(body: RunCreate, token: Token, platform: PlatformDep) -> Response:
    found = await run(
        platform,
        token,
        True,
        lambda session, who: payouts.run_read(payouts.run(session, who, body.period)),
    )
    return JSONResponse(RunRead(**found).model_dump(), status_code=201 if found["created"] else 200)


@router.get("/v1/payouts/runs", response_model=RunList, responses=ERRORS)
async def list_runs(token: Token, platform: PlatformDep) -> RunList:
    def work(session: Session, who: Actor) -> RunList:
        return RunList(
            runs=[
                RunRead(**payouts.run_read(payouts.get_run(session, who, row.period)))
                for row in payouts.runs(session, who)
            ]
        )

    return await run(platform, token, False, work)


@router.get("/v1/payouts/runs/{period}", response_model=RunRead, responses=ERRORS)
async def get_run(period: str, token: Token, platform: PlatformDep) -> RunRead:
    return await run(
        platform,
        token,
        False,
        lambda session, who: RunRead(**payouts.run_read(payouts.get_run(session, who, period))),
    )


@router.get("/v1/statements", response_model=StatementList, responses=ERRORS)
async def list_statements(
    token: Token,
    platform: PlatformDep,
    provider_id: Annotated[str | None, Query(max_length=64)] = None,
    period: Annotated[str | None, Query(max_length=7)] = None,
) -> StatementList:
    return await run(
        platform,
        token,
        False,
        lambda session, who: StatementList(
            statements=[
                StatementRead(**payouts.statement_read(row))
                for row in payouts.statements(session, who, provider_id, period)
            ]
        ),
    )


@router.get(
    "/v1/statements/{statement_id}.csv",
    response_class=Response,
    responses={
        **ERRORS,
        200: {
            "content": {"text/csv": {"schema": {"type": "string"}}},
            "description": "The statement as CSV (UTF-8 with a BOM)",
        },
    },
)
async def statement_csv(statement_id: str, token: Token, platform: PlatformDep) -> Response:
    text = await run(
        platform,
        token,
        False,
        lambda session, who: payouts.statement_csv(
            payouts.statement_read(payouts.get_statement(session, who, statement_id))
        ),
    )
    return Response(
        text.encode("utf-8"),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{statement_id}.csv"'},
    )


@router.get(
    "/v1/statements/{statement_id}.html",
    response_class=Response,
    responses={
        **ERRORS,
        200: {
            "content": {"text/html": {"schema": {"type": "string"}}},
            "description": "The statement as a printable HTML document",
        },
    },
)
async def statement_html(
    statement_id: str, request: Request, token: Token, platform: PlatformDep
) -> Response:
    language = i18n.pick_language(
        request.query_params.get("lang"), request.headers.get("accept-language")
    )
    html = await run(
        platform,
        token,
        False,
        lambda session, who: render_statement(
            payouts.statement_read(payouts.get_statement(session, who, statement_id)), language
        ),
    )
    return HTMLResponse(html)


@router.get("/v1/statements/{statement_id}", response_model=StatementRead, responses=ERRORS)
async def get_statement(statement_id: str, token: Token, platform: PlatformDep) -> StatementRead:
    return await run(
        platform,
        token,
        False,
        lambda session, who: StatementRead(
            **payouts.statement_read(payouts.get_statement(session, who, statement_id))
        ),
    )
