"""Waiting in tests without fixed sleeps: poll a condition until it holds, or fail naming it.

The only pause in the suite between looks at the world is here (`every`, short); a test waits for
what it needs (a state, a log line, a file), never for a length of time. Timeouts are generous
bounds for a loaded machine, not speed assertions (speed belongs in benchmarks/).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Literal, TypeVar

import httpx
from sqlalchemy import Engine, text

T = TypeVar("T")


def wait_until(
    condition: Callable[[], T | Literal[False] | None],
    what: str,
    timeout_s: float = 30.0,
    every_s: float = 0.02,
) -> T:
    """The first truthy value of `condition()`; AssertionError naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(every_s)


def poll(
    condition: Callable[[], T | Literal[False] | None],
    timeout_s: float = 30.0,
    every_s: float = 0.02,
) -> T | None:
    """The first truthy value of `condition()`, or None after `timeout_s` (for callers that
    judge the outcome themselves)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            return None
        time.sleep(every_s)


def healthy(url: str, verify: Any = True) -> bool:
    """Whether the server at `url` answers `/healthz` with 200 now (False while it starts)."""
    try:
        return httpx.get(f"{url}/healthz", verify=verify, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def lock_waiters(engine: Engine) -> int:
    """How many sessions of `engine`'s database wait on a lock now. Each look opens its own
    connection: PostgreSQL keeps one snapshot of `pg_stat_activity` per transaction, so looking
    again in the same transaction would never see a session that began waiting meanwhile."""
    with engine.connect() as connection:
        return int(
            connection.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            ).scalar_one()
        )
