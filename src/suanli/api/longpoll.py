"""Work reaches an idle agent at once: the bell that wakes agents' long-polls for work.

An agent that asks for work with `wait_s` (`POST /v1/agents/{id}/lease`) is answered at once if
work is placed on its site, else its request is held (an asyncio wait in the event loop: no
database transaction and no thread is held) until the scheduling pass places work on that site,
or `wait_s` (real time) runs out, and then the lease runs as one unit of work.

* `WorkBell`: per site, a generation counter and the waiters. A long-poll reads the site's
  generation *before* its first lease attempt and waits for it to move, so work placed between
  that attempt and the wait is never missed. `ring(sites)` may be called from any thread.
* Across server processes (PostgreSQL: one scheduling leader, many API processes) the pass
  announces the sites it placed work on with `NOTIFY suanli_work, '<site>,<site>'` inside its
  write transaction (delivered on commit); every process runs one `PgListener` thread, started
  by the first long-poll, that `LISTEN`s and rings its own bell. A lost notification (a
  listener reconnecting) costs at most one `wait_s`: the agent's next long-poll leases it.
  On SQLite one process owns the database, so the local ring suffices.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Iterable

log = logging.getLogger("suanli.server")
CHANNEL = "suanli_work"
MAX_WAIT_S = 30.0  # the longest a lease request may be held


class WorkBell:
    """Wakes the long-polls waiting for work on a site (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._generation: dict[str, int] = {}
        self._waiters: dict[str, list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]] = {}

    def generation(self, site_id: str) -> int:
        with self._lock:
            return self._generation.get(site_id, 0)

    def ring(self, site_ids: Iterable[str]) -> None:
        """Work was placed on these sites: wake their waiters (callable from any thread)."""
        woken = []
        with self._lock:
            for site in set(site_ids):
                self._generation[site] = self._generation.get(site, 0) + 1
                woken += self._waiters.pop(site, [])
        for loop, future in woken:
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                loop.call_soon_threadsafe(_resolve, future)

    def ring_all(self) -> None:
        """Wake every waiter (the server is shutting down: held requests answer at once)."""
        with self._lock:
            sites = list(self._waiters)
        self.ring(sites)

    async def wait(self, site_id: str, seen: int, timeout_s: float) -> bool:
        """Wait until the site's generation moves past `seen` or `timeout_s` (real seconds)
        passes; whether it moved."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        entry = (loop, future)
        with self._lock:
            if self._generation.get(site_id, 0) != seen:
                return True
            self._waiters.setdefault(site_id, []).append(entry)
        try:
            await asyncio.wait_for(future, timeout_s)
            return True
        except TimeoutError:
            return False
        finally:
            with self._lock:
                waiting = self._waiters.get(site_id, [])
                if entry in waiting:
                    waiting.remove(entry)
                    if not waiting:
                        del self._waiters[site_id]

    def waiting(self) -> int:
        """How many long-polls are held now."""
        with self._lock:
            return sum(len(w) for w in self._waiters.values())


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class PgListener:
    """One thread per process: `LISTEN suanli_work` on its own connection and ring the bell for
    the sites each notification names; reconnects after a failure, ends when `stop` is set."""

    def __init__(self, url: str, bell: WorkBell, stop: threading.Event) -> None:
        self.url = url
        self.bell = bell
        self.stop = stop
        self.listening = threading.Event()
        self.thread = threading.Thread(target=self._run, name="suanli-work-listener", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        import psycopg

        while not self.stop.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True) as connection:
                    connection.execute(f"LISTEN {CHANNEL}")
                    self.listening.set()
                    while not self.stop.is_set():
                        for note in connection.notifies(timeout=1.0):
                            self.bell.ring(s for s in note.payload.split(",") if s)
            except Exception:  # the database went away: listen again in a moment
                self.listening.clear()
                log.warning("work listener lost its connection; reconnecting", exc_info=True)
                self.stop.wait(1.0)
