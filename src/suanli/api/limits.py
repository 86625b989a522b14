"""Limits on what a request may carry, enforced before any route runs (pure ASGI middleware).

- **Body size**: at most `max_body_bytes` (`Settings.max_body_bytes`, SUANLI_MAX_BODY_BYTES,
  1 MiB by default), else 413 with the usual JSON error naming the limit and the setting. A
  `Content-Length` over the limit is refused before the body is read; a body without one
  (chunked) is counted as it arrives and refused as soon as it passes the limit (the server
  discards what the client still sends, so that the client reads the 413). The body is read
  here in full (it is bounded) and handed to the app unchanged. An agent's report
  (`POST /v1/tasks/{id}/report`) may be `REPORT_FACTOR` times larger: it lists every file a task
  copied out (up to 10,000), and refusing it would leave the task unreported.
- **Pages of lists**: a page of tasks stops once its documents pass `PAGE_BUDGET_BYTES`
  (`page_that_fits`), whatever page size was asked for; the page says where the next one starts
  (TES `next_page_token`, the native list's `X-Next-Offset` header), so no list answer grows
  with the size of what consumers stored.
- **No NUL in the URL**: a path or query string holding a NUL (`%00`) is refused with 400 (TES)
  or 422 (native), naming `path` or `query`. No id, name or filter needs one, and PostgreSQL
  cannot compare text with one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from suanli.api.errors import TES_PREFIX, error_body

REPORT_FACTOR = 16
PAGE_BUDGET_BYTES = 8 * 1024 * 1024  # one page of a task list, at most about this much
T = TypeVar("T")


def json_size(document: Any) -> int:
    """The bytes of `document` as JSON (UTF-8)."""
    return len(json.dumps(document, ensure_ascii=False, default=str).encode())


def page_that_fits(
    items: Sequence[T], size: Callable[[T], int], budget: int = PAGE_BUDGET_BYTES
) -> int:
    """How many of `items`, in order, fit in `budget` bytes by `size` (at least one, so a
    page always moves forward)."""
    used = 0
    for n, item in enumerate(items):
        used += size(item)
        if used > budget and n > 0:
            return n
    return len(items)


REPORT_PATH = re.compile(r"^/v1/tasks/[^/]+/report$")


class TooLarge(Exception):
    """The body passed the limit while it was being read."""


class RequestLimits:
    """Refuse bodies over the limit (413) and NUL characters in the URL (400/422)."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = str(scope.get("path", ""))
        query = bytes(scope.get("query_string", b""))
        if "\x00" in path or b"\x00" in query or b"%00" in query:
            await _nul_in_url("path" if "\x00" in path else "query", path)(scope, receive, send)
            return
        limit = self.max_body_bytes * (REPORT_FACTOR if REPORT_PATH.match(path) else 1)
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _too_large(limit)(scope, receive, send)
            return
        try:
            body = await _read_body(receive, limit)
        except TooLarge:
            await _too_large(limit)(scope, receive, send)
            return
        if body is None:  # the client went away before its body was complete
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:  # after the body: what the client does next (a disconnect)
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole body, counted as it arrives; `TooLarge` as soon as it passes `limit`; None
    when the client disconnected first."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunk = bytes(message.get("body", b""))
        size += len(chunk)
        if size > limit:
            raise TooLarge()
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _too_large(limit: int) -> JSONResponse:
    return JSONResponse(
        error_body(
            "body_too_large",
            f"the request body is over the limit of {limit:,} bytes: send less (split the "
            "task's inputs, or stage them from files), or raise the server's max_body_bytes "
            "(SUANLI_MAX_BODY_BYTES)",
            f"请求体超过 {limit:,} 字节的上限：请减少内容（拆分任务输入或改用文件暂存），"
            "或调大服务器的 max_body_bytes（SUANLI_MAX_BODY_BYTES）",
            "body",
            limit_bytes=limit,
        ),
        413,
    )


def _nul_in_url(where: str, path: str) -> JSONResponse:
    return JSONResponse(
        error_body(
            "invalid_request",
            f"invalid {where}: expected text without NUL characters (%00); remove them",
            f"{'路径' if where == 'path' else '查询参数'}无效：不能包含 NUL 字符（%00），请删除",
            where,
        ),
        400 if path.startswith(TES_PREFIX) else 422,
    )
