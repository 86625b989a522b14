"""Token routes: agent tokens for one site, and a principal's own tokens (list, revoke).

`POST /v1/sites/{site_id}/agent-tokens` lets a provider (or the operator) issue a token for the
agents of ONE site it owns: the token is answered once (only its hash is stored) and can
register, heartbeat, lease and report for that site and nothing else (`services`
checks the scope). `GET /v1/tokens` lists the caller's tokens (the operator's: every token)
without the secrets; `POST /v1/tokens/{token_id}/revoke` revokes one of them at once (every
server process refuses it within a second). Agent tokens cannot use these routes (403).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import Field
from sqlalchemy.orm import Session

from suanli.api.deps import ERRORS, PlatformDep, Token, run
from suanli.services import agents as agents_service
from suanli.services.core import Role, list_tokens, revoke_token
from suanli.services.views import (
    Actor,
    AgentTokenRead,
    TokenRead,
    agent_token_read,
    token_of,
    token_read,
)
from suanli.specs import Name, StrictModel

TEN_YEARS_S = 10 * 366 * 86_400


class AgentTokenCreate(StrictModel):
    name: Name = "agent"
    expires_in_s: Annotated[int, Field(ge=1, le=TEN_YEARS_S)] | None = None


router = APIRouter(tags=["tokens"], responses=ERRORS)


@router.post(
    "/v1/sites/{site_id:path}/agent-tokens", status_code=201, response_model=AgentTokenRead
)
async def issue_agent_token(
    site_id: Annotated[str, Path(min_length=1, max_length=128)],
    body: AgentTokenCreate,
    token: Token,
    platform: PlatformDep,
) -> AgentTokenRead:
    def work(session: Session, who: Actor) -> AgentTokenRead:
        row, secret = agents_service.issue_agent_token(
            session, who, site_id, body.name, body.expires_in_s
        )
        return agent_token_read(row, secret, site_id)

    read: AgentTokenRead = await run(platform, token, True, work)
    return read


@router.get("/v1/tokens", response_model=list[TokenRead])
async def tokens(token: Token, platform: PlatformDep) -> list[TokenRead]:
    def work(session: Session, who: Actor) -> list[TokenRead]:
        owner = None if who.role == Role.OPERATOR.value else who.id
        return [token_read(row, p) for row, p in list_tokens(session, owner)]

    listed: list[TokenRead] = await run(platform, token, False, work)
    return listed


@router.post("/v1/tokens/{token_id}/revoke", response_model=TokenRead)
async def revoke(
    token_id: Annotated[str, Path(min_length=1, max_length=64)], token: Token, platform: PlatformDep
) -> TokenRead:
    def work(session: Session, who: Actor) -> TokenRead:
        owner = None if who.role == Role.OPERATOR.value else who.id
        return token_of(session, revoke_token(session, token_id, who.id, owner), who)

    read: TokenRead = await run(platform, token, True, work)
    return read
