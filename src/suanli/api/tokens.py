"""Token routes: agent tokens for one site, and a principal's own tokens (list, revoke).

`POST /v1/sites/{site_id}/agent-tokens` lets a provider (or the operator) issue a token for the
agents of ONE site it owns: the token is answered once (only its hash is stored) and can
register, heartbeat, lease and report for that site and nothing else (`services`
checks the scope). `GET /v1/tokens` lists the caller's tokens (the operator's: every token)
without the secrets; `POST /v1/tokens/{token_id}/revoke` revokes one of them at once (every
server process refuses it within a second). Agent tokens cannot use these routes (403).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, FastAPI, Path
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from suanli.api.app import ERRORS, Token
from suanli.api.schemas import Name, StrictModel
from suanli.services import agents as agents_service
from suanli.services.core import Role, aware, list_tokens, revoke_token
from suanli.store.models import Principal
from suanli.store.models import Token as TokenRow

R = TypeVar("R")
Runner = Callable[[str, bool, Callable[[Session, Principal], R]], Awaitable[R]]
TEN_YEARS_S = 10 * 366 * 86_400


class AgentTokenCreate(StrictModel):
    name: Name = "agent"
    expires_in_s: Annotated[int, Field(ge=1, le=TEN_YEARS_S)] | None = None


class AgentTokenRead(BaseModel):
    """The new token, shown this once."""

    id: str
    token: str
    site_id: str
    name: str
    expires_at: datetime | None


class TokenRead(BaseModel):
    """A token without its secret."""

    id: str
    principal: str
    role: str
    name: str
    site_id: str | None = Field(description="Set for an agent token: the one site it acts for")
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


def token_read(row: TokenRow, principal: Principal) -> TokenRead:
    return TokenRead(
        id=row.id,
        principal=principal.id,
        role=principal.role,
        name=row.name,
        site_id=row.site_id,
        created_at=aware(row.created_at),
        expires_at=None if row.expires_at is None else aware(row.expires_at),
        revoked_at=None if row.revoked_at is None else aware(row.revoked_at),
    )


def install(app: FastAPI, run: Runner[Any]) -> None:
    """Add the token routes to `app`; `run(token, write, work)` is the app's unit of work."""
    router = APIRouter(tags=["tokens"], responses=ERRORS)

    @router.post(
        "/v1/sites/{site_id:path}/agent-tokens", status_code=201, response_model=AgentTokenRead
    )
    async def issue_agent_token(
        site_id: Annotated[str, Path(min_length=1, max_length=128)],
        body: AgentTokenCreate,
        token: Token,
    ) -> AgentTokenRead:
        def work(session: Session, who: Principal) -> AgentTokenRead:
            row, secret = agents_service.issue_agent_token(
                session, who, site_id, body.name, body.expires_in_s
            )
            return AgentTokenRead(
                id=row.id,
                token=secret,
                site_id=site_id,
                name=row.name,
                expires_at=None if row.expires_at is None else aware(row.expires_at),
            )

        read: AgentTokenRead = await run(token, True, work)
        return read

    @router.get("/v1/tokens", response_model=list[TokenRead])
    async def tokens(token: Token) -> list[TokenRead]:
        def work(session: Session, who: Principal) -> list[TokenRead]:
            owner = None if who.role == Role.OPERATOR.value else who.id
            return [token_read(row, p) for row, p in list_tokens(session, owner)]

        listed: list[TokenRead] = await run(token, False, work)
        return listed

    @router.post("/v1/tokens/{token_id}/revoke", response_model=TokenRead)
    async def revoke(
        token_id: Annotated[str, Path(min_length=1, max_length=64)], token: Token
    ) -> TokenRead:
        def work(session: Session, who: Principal) -> TokenRead:
            owner = None if who.role == Role.OPERATOR.value else who.id
            row = revoke_token(session, token_id, who.id, owner)
            principal = session.get(Principal, row.principal_id)
            return token_read(row, principal if principal is not None else who)

        read: TokenRead = await run(token, True, work)
        return read

    app.include_router(router)
