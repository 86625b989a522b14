"""Market routes (consumers): quotes, accepting one (which queues an order's task and wakes the
scheduling pass), orders, ratings, balances and account statements. Money is answered as
`market.money` (integer fen plus a yuan string)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy.orm import Session

from suanli.api.deps import ERRORS, PlatformDep, Token, run
from suanli.api.schemas import AcceptQuote, BalanceRead, ErrorBody, RatingCreate, StatementRead
from suanli.services import market
from suanli.services.core import aware
from suanli.services.views import (
    Actor,
    OrderRead,
    QuoteRead,
    RatingRead,
    balances,
    order_read,
    quote_read,
    rating_read,
)
from suanli.specs import TaskCreate

router = APIRouter(tags=["market"])


@router.post("/v1/quotes", status_code=201, response_model=QuoteRead, responses=ERRORS)
async def quote(body: TaskCreate, token: Token, platform: PlatformDep) -> QuoteRead:
    """Priced options for a task, valid for 5 minutes (docs/market.md): the scheduler's choice
    (`listed_as` "best"), its runner-up and, for a deferrable task with a deadline, the
    cheapest and the greenest start within it ("cheapest-start", "greenest-start"). Each
    option has its pool, `start_s` / `starts_at`, duration, `carbon_kg`, price parts and total
    (what accepting it holds in escrow) and `reason`."""
    spec = body.model_dump()

    def work(session: Session, who: Actor) -> QuoteRead:
        row = market.quote(
            session, who, spec, platform.settings.policy, market.rules_from(platform.settings)
        )
        return quote_read(row)

    return await run(platform, token, True, work)


@router.post(
    "/v1/quotes/{quote_id}/accept",
    status_code=201,
    response_model=OrderRead,
    responses={**ERRORS, 402: {"model": ErrorBody}},
)
async def accept(
    quote_id: str, body: AcceptQuote, token: Token, platform: PlatformDep
) -> OrderRead:
    """Accept one option: its total held in escrow, the order and its task created, pinned to
    the option's pool and started at its `starts_at` (a later start defers the task)."""
    read = await run(
        platform,
        token,
        True,
        lambda session, who: order_read(
            market.accept(session, who, quote_id, body.option, platform.settings.policy)
        ),
    )
    platform.wake.set()
    return read


@router.get("/v1/orders/{order_id}", response_model=OrderRead, responses=ERRORS)
async def order(order_id: str, token: Token, platform: PlatformDep) -> OrderRead:
    return await run(
        platform,
        token,
        False,
        lambda session, who: order_read(market.get_order(session, who, order_id)),
    )


@router.post(
    "/v1/orders/{order_id}/rating", status_code=201, response_model=RatingRead, responses=ERRORS
)
async def rate(
    order_id: str, body: RatingCreate, token: Token, platform: PlatformDep
) -> RatingRead:
    def work(session: Session, who: Actor) -> RatingRead:
        return rating_read(market.rate(session, who, order_id, body.stars, body.comment))

    return await run(platform, token, True, work)


@router.get("/v1/balance", response_model=BalanceRead, responses=ERRORS)
async def balance(token: Token, platform: PlatformDep) -> BalanceRead:
    return await run(
        platform,
        token,
        False,
        lambda session, who: BalanceRead(accounts=balances(session, who)),
    )


@router.get("/v1/statement", response_model=StatementRead, responses=ERRORS)
async def statement(
    token: Token,
    platform: PlatformDep,
    account: Annotated[str, Query(min_length=1, max_length=160)],
    start: Annotated[datetime | None, Query(alias="from")] = None,
    end: Annotated[datetime | None, Query(alias="to")] = None,
) -> StatementRead:
    return await run(
        platform,
        token,
        False,
        lambda session, who: StatementRead(
            account=account,
            lines=market.statement(
                session,
                who,
                account,
                None if start is None else aware(start),
                None if end is None else aware(end),
            ),
        ),
    )
