"""Clocks: real in production, virtual in the twin and in tests ("one scheduler, two clocks").

Services, leases and the scheduling pass read time from a `Clock` they are given instead of the
wall clock, so a test or the twin advances virtual time instead of sleeping.

* `SystemClock`: the wall clock (UTC), and real waits.
* `VirtualClock`: time moves only when `advance` or `set` is called, never backwards; a wait
  returns as soon as its event is set or virtual time has passed its deadline (the waiter is
  woken by `advance`), so a waiting thread never holds up a test.

Services read the clock of their unit of work (`services.core.now(session)`: the clock the
opener of the session put in `session.info["clock"]`, else `SYSTEM`).
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Protocol

from suanli.errors import InvalidValue


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...

    def wait(self, event: threading.Event, timeout_s: float) -> bool:
        """Wait until `event` is set or `timeout_s` of this clock's time has passed; whether the
        event was set."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def wait(self, event: threading.Event, timeout_s: float) -> bool:
        return event.wait(timeout_s)

    def __repr__(self) -> str:
        return "SystemClock()"


class VirtualClock:
    """Time that moves only when told to (thread-safe)."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)
        if self._now.tzinfo is None:
            raise ValueError("VirtualClock needs a timezone-aware start time")
        self._moved = threading.Condition()

    def now(self) -> datetime:
        with self._moved:
            return self._now

    def advance(self, seconds: float) -> datetime:
        if seconds < 0:
            raise ValueError("a clock does not go backwards")
        with self._moved:
            self._now += timedelta(seconds=seconds)
            self._moved.notify_all()
            return self._now

    def set(self, moment: datetime) -> datetime:
        with self._moved:
            if moment < self._now:
                raise ValueError("a clock does not go backwards")
            self._now = moment
            self._moved.notify_all()
            return self._now

    def wait(self, event: threading.Event, timeout_s: float) -> bool:
        with self._moved:
            deadline = self._now + timedelta(seconds=timeout_s)
            while not event.is_set() and self._now < deadline:
                # wake on advance; poll the event briefly (it has no link to this condition)
                self._moved.wait(0.01)
        return event.is_set()

    def __repr__(self) -> str:
        return f"VirtualClock({self.now().isoformat()})"


SYSTEM = SystemClock()
CLOCKS = ("system", "virtual")


def clock_named(name: str, start: datetime | None = None) -> SystemClock | VirtualClock:
    """The clock `suanli serve --clock NAME` runs on: `system`, or `virtual` (starting at `start`,
    by default the wall clock's now, so rows written meanwhile by system-clock tools such as the
    CLI stay in order with the server's)."""
    if name == "system":
        return SYSTEM
    if name == "virtual":
        return VirtualClock(start or datetime.now(UTC))
    raise InvalidValue(
        "clock", name, "one of: " + ", ".join(CLOCKS), "取值之一：" + ", ".join(CLOCKS)
    )
