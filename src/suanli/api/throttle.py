"""Throttling of failed authentication: an address that keeps presenting bad credentials is
refused with 429 for a while, before any database work.

Owns `AuthThrottle`, a pure ASGI middleware. Every response with status 401 (an unknown,
revoked or expired token, on the API, TES or the console) counts as one failure of the client
address (the TCP peer, or what uvicorn's proxy-headers handling made of it: by default only a
proxy on 127.0.0.1 may set X-Forwarded-For). More than `max_failures` failures within
`window_s` refuse every request from that address with 429 and `Retry-After` for `block_s`
(`/healthz` excepted); requests from other addresses are unaffected. The counts live in the
memory of each server process (several API processes each count their own), bounded to
`MAX_ADDRESSES` addresses. Invariant: a refused request never reaches the app, so a guessing
client costs no database work while it is blocked.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_ADDRESSES = 100_000
EXEMPT = frozenset({"/healthz"})


@dataclass
class _Record:
    failures: deque[float] = field(default_factory=deque)
    blocked_until: float = 0.0


class AuthThrottle:
    """Pure ASGI middleware: 429 for an address with too many recent 401s."""

    def __init__(
        self,
        app: ASGIApp,
        max_failures: int = 20,
        window_s: float = 10.0,
        block_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.max_failures = max_failures
        self.window_s = window_s
        self.block_s = block_s
        self.clock = clock
        self.records: dict[str, _Record] = {}
        self.lock = threading.Lock()

    def blocked_for(self, address: str) -> float:
        """Seconds `address` is still refused (0 when it is not)."""
        with self.lock:
            record = self.records.get(address)
            return 0.0 if record is None else max(0.0, record.blocked_until - self.clock())

    def failed(self, address: str) -> None:
        """Count one failed authentication; block the address past `max_failures`."""
        moment = self.clock()
        with self.lock:
            record = self.records.get(address)
            if record is None:
                if len(self.records) >= MAX_ADDRESSES:
                    self._forget(moment)
                record = self.records[address] = _Record()
            failures = record.failures
            failures.append(moment)
            while failures and failures[0] <= moment - self.window_s:
                failures.popleft()
            if len(failures) > self.max_failures:
                record.blocked_until = moment + self.block_s
                failures.clear()

    def _forget(self, moment: float) -> None:
        """Drop addresses neither blocked nor failing recently (all of them if none is)."""
        stale = [
            address
            for address, record in self.records.items()
            if record.blocked_until <= moment
            and (not record.failures or record.failures[-1] <= moment - self.window_s)
        ]
        for address in stale or list(self.records):
            del self.records[address]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in EXEMPT:
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        address = str(client[0]) if client else "unknown"
        wait_s = self.blocked_for(address)
        if wait_s > 0:
            await _refuse(send, math.ceil(wait_s))
            return

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 401:
                self.failed(address)
            await send(message)

        await self.app(scope, receive, sending)


async def _refuse(send: Send, retry_after_s: int) -> None:
    body = json.dumps(
        {
            "error": {
                "code": "too_many_failed_authentications",
                "message": "too many requests with a bad token from this address; "
                f"retry after {retry_after_s} s with a valid token",
                "message_zh": f"该地址使用无效令牌的请求过多；请在 {retry_after_s} 秒后"
                "使用有效令牌重试",
                "field": None,
            }
        },
        ensure_ascii=False,
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 429,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", str(retry_after_s).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
