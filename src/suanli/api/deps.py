"""What every route module shares: the bearer token (or, for TES, HTTP Basic with the token as the
password), the `Platform` dependency and the unit of work.

A handler takes `token: Token` (the bearer token of the request, checked against the database in
the unit of work) and `platform: PlatformDep` (the app's shared `Platform`, from
`request.app.state.platform`), and runs its work with `run(platform, token, write, work)`: one
transaction in the thread pool, as the token's principal (an agent token is refused with 403),
or with `run_agent(...)` for the agent protocol, where the caller may be an agent token whose
site scope the service checks (`site_scope=caller.site_id`); `run_agent_each(...)` runs a batch
of such writes, one unit of work per item, after checking the caller once. `ERRORS` documents
the error bodies every route may answer.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from fastapi import Depends, Header, Request
from starlette.concurrency import run_in_threadpool

from suanli.api.app import Platform
from suanli.api.schemas import ErrorBody
from suanli.errors import SuanliError
from suanli.services.core import Caller, Unauthorized
from suanli.services.views import Actor, TaskRead

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

R = TypeVar("R")
T = TypeVar("T")
MAX_LIST_LIMIT = 1000  # tasks per GET /v1/tasks (each under max_body_bytes: a bounded page)
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (400, 401, 403, 404, 409, 413, 422, 429)
}
SUBMIT_RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    200: {"model": TaskRead, "description": "The task this Idempotency-Key already created"},
}


async def bearer(authorization: Annotated[str | None, Header()] = None) -> str:
    """The bearer token of a request (checked against the database in the unit of work)."""
    if not authorization or not authorization.lower().startswith("bearer "):
        raise Unauthorized()
    return authorization.split(" ", 1)[1].strip()


Token = Annotated[str, Depends(bearer)]


async def bearer_or_basic(authorization: Annotated[str | None, Header()] = None) -> str:
    """The token of a request that sends it as a bearer token or as the password of HTTP Basic
    (any user name): TES clients and conformance suites know only `user:pass@host`."""
    scheme, _, value = (authorization or "").strip().partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            decoded = ""
        _, colon, password = decoded.partition(":")
        if colon and password:
            return password
    raise Unauthorized(basic=True)


BasicOrBearer = Annotated[str, Depends(bearer_or_basic)]


async def get_platform(request: Request) -> Platform:
    """The app's shared `Platform` (sessions, settings, metrics, the scheduler's wake-up).
    Async: FastAPI would run a plain `def` dependency in the thread pool, a thread hop per
    request for one attribute read."""
    platform: Platform = request.app.state.platform
    return platform


PlatformDep = Annotated[Platform, Depends(get_platform)]


def acted(platform: Platform, token: str, write: bool, work: Callable[[Session, Actor], R]) -> R:
    with platform.unit_of_work(write) as session:
        return work(session, platform.caller(session, token).unscoped())


async def run(
    platform: Platform, token: str, write: bool, work: Callable[[Session, Actor], R]
) -> R:
    """One unit of work in the thread pool: the only thread hop of a request. An agent
    token is refused (403): it may act only through `run_agent`."""
    return await run_in_threadpool(acted, platform, token, write, work)


def acted_as_agent(platform: Platform, token: str, work: Callable[[Session, Caller], R]) -> R:
    with platform.unit_of_work() as session:
        return work(session, platform.caller(session, token))


async def run_agent(platform: Platform, token: str, work: Callable[[Session, Caller], R]) -> R:
    """A write of the agent protocol: the caller may be an agent token, whose site scope
    the service checks (`site_scope=caller.site_id`)."""
    return await run_in_threadpool(acted_as_agent, platform, token, work)


def acted_as_agent_each(
    platform: Platform,
    token: str,
    check: Callable[[Session, Caller], object],
    items: Sequence[T],
    work: Callable[[Session, Caller, T], R],
) -> list[R | SuanliError]:
    """`check` the caller once (its errors fail the whole call), then `work` on each item in
    order, each in a unit of work of its own: an item's domain error rolls back that item only
    and stands in its place in the answer; any other error fails the call (the items before it
    stay done, as separate requests would)."""
    with platform.unit_of_work(write=False) as session:  # a read: no writer lock held
        caller = platform.caller(session, token)
        check(session, caller)
    done: list[R | SuanliError] = []
    for item in items:
        try:
            with platform.unit_of_work() as session:
                done.append(work(session, caller, item))
        except SuanliError as error:
            done.append(error)
    return done


async def run_agent_each(
    platform: Platform,
    token: str,
    check: Callable[[Session, Caller], object],
    items: Sequence[T],
    work: Callable[[Session, Caller, T], R],
) -> list[R | SuanliError]:
    """A batch of writes of the agent protocol in one thread hop (`acted_as_agent_each`)."""
    return await run_in_threadpool(acted_as_agent_each, platform, token, check, items, work)
