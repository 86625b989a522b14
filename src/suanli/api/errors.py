"""The one place where errors become HTTP responses.

Every error body is JSON: `{"error": {"code": ..., "message": ..., "message_zh": ...,
"field": ...}}`. Domain errors map to 401/403/404/409/422; request validation errors name the
field by its path (`body.resources.devices`) and say, in English and Chinese, what it would
accept (`specs.describe`); bad input is 422 on the native API and 400 on TES. A body over the
limit is 413 (`api.limits`). No error escapes as a 500 with a traceback: an unexpected
exception is logged and answered 500 with a request id, never with internals.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from suanli.errors import InvalidValue, SuanliError, UnknownName
from suanli.services.budgets import BudgetExceeded
from suanli.services.core import Conflict, Forbidden, NotFound, Unauthorized
from suanli.services.market import InsufficientFunds
from suanli.specs import describe

log = logging.getLogger("suanli.api")

STATUS: list[tuple[type[SuanliError], int, str]] = [
    (InsufficientFunds, 402, "insufficient_funds"),
    (BudgetExceeded, 402, "budget_exceeded"),
    (Unauthorized, 401, "unauthorized"),
    (Forbidden, 403, "forbidden"),
    (NotFound, 404, "not_found"),
    (Conflict, 409, "conflict"),
    (InvalidValue, 422, "invalid_value"),
    (UnknownName, 422, "unknown_name"),
]


def status_of(error: SuanliError) -> tuple[int, str]:
    """The HTTP status and error code of a domain error (`STATUS`; anything else is 422)."""
    for kind, kind_status, kind_code in STATUS:
        if isinstance(error, kind):
            return kind_status, kind_code
    return 422, "invalid"


def error_body(
    code: str, message: str, message_zh: str, field: str | None = None, **extra: Any
) -> dict[str, Any]:
    """The JSON body of every error response."""
    return {
        "error": {
            "code": code,
            "message": message,
            "message_zh": message_zh,
            "field": field,
            **extra,
        }
    }


def _allowed_methods(app: FastAPI, request: Request) -> set[str]:
    methods: set[str] = set()
    for route in app.router.routes:
        match, _ = route.matches({**request.scope, "type": "http"})
        if match is not Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return methods


TES_PREFIX = "/ga4gh/tes/"


def _invalid_status(request: Request) -> int:
    """422 for bad input on the native API; 400 on the TES API, as GA4GH TES specifies."""
    return 400 if request.url.path.startswith(TES_PREFIX) else 422


def install(app: FastAPI) -> None:
    @app.exception_handler(SuanliError)
    async def _domain(request: Request, error: SuanliError) -> JSONResponse:
        status, code = status_of(error)
        if status == 422:
            status = _invalid_status(request)
        field = getattr(error, "field", None)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return JSONResponse(
            error_body(code, error.message_en, error.message_zh, field), status, headers=headers
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = error.errors()
        first = problems[0] if problems else {"loc": (), "msg": "invalid request"}
        field = ".".join(str(part) for part in first.get("loc", ()))
        expected, expected_zh = describe(first)
        return JSONResponse(
            error_body(
                "invalid_request",
                f"invalid {field}: expected {expected}",
                f"请求字段 {field} 无效：应为{expected_zh}",
                field,
                count=len(problems),
            ),
            _invalid_status(request),
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, error: StarletteHTTPException) -> JSONResponse:
        detail = str(error.detail)
        headers = dict(getattr(error, "headers", None) or {})
        if error.status_code == 405:  # list every method the path accepts, not just one route's
            headers["Allow"] = ", ".join(sorted(_allowed_methods(app, request)))
        return JSONResponse(
            error_body("http_error", detail, detail), error.status_code, headers=headers or None
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        ident = secrets.token_hex(4)
        log.exception("unexpected error %s on %s %s", ident, request.method, request.url.path)
        return JSONResponse(
            error_body(
                "internal",
                f"internal error (request {ident}); the server log has details",
                f"服务器内部错误（请求 {ident}）",
            ),
            500,
        )
