"""One scheduling leader among any number of server processes ("one leader, stateless API
processes").

Owns the `scheduler_leader` row (id 1: `holder`, `term`, `expires_at`) and who may write a
scheduling pass:

* **Lease.** A process (holder id `hostname:pid:random`) leads while its lease is unexpired; the
  `Elector` renews it every schedule interval (and every write of the pass renews it through
  `fence`), and it lapses `LEASE_INTERVALS` intervals after the last renewal. A contender takes
  the row over only when the lease has lapsed, by one compare-and-set UPDATE on (holder, term,
  expired) whose row count says who won; a takeover increments `term`. This works on SQLite and
  PostgreSQL alike and bounds how long a hung leader (alive, but not renewing) blocks the loop.
* **Advisory lock (PostgreSQL).** The leader also holds the session-level advisory lock
  `ADVISORY_KEY` on a connection of its own, and says so in the row (`locked`). PostgreSQL
  releases the lock the moment that connection closes, so when the leader process dies its lock
  is free at once; a contender that gets the lock takes the row over without waiting for the
  lease to lapse (a crashed leader is replaced at the next interval, not after the lease), but
  only from a holder whose row says it held the lock: a holder that led by lease alone (it took
  over a lapsed lease while the old leader still held the lock) is not proved gone by the lock.
  A process that finds another holder in the row gives the lock up at once. Conversely a holder
  that still holds the lock is alive: a lapse of its lease displaces it only `HUNG_LEASES`
  leases after its last renewal (a loaded leader that renews late keeps the lead; a hung one is
  still replaced). The lease stays the authority: the lock only proves that the holder is gone
  or alive, it is never what lets a process write. The election runs on connections of its own
  (`election_connections`), so a server whose pool is drained by requests still renews.
* **Sole owner (SQLite).** One process owns a SQLite file (`own_database_file`: an exclusive
  `flock` on `<database>.lock`, held for the life of the process); it may take the row over at
  once too, for no other process can be leading on that file.
* **Fence.** Every write of a pass first runs `fence(session, lead)`: an UPDATE of the leader row
  that matches only the holder *and term* the pass was started under (and renews the lease). It
  locks the row until the pass's transaction ends, so a takeover waits for that write, and a
  paused old leader that resumes after a takeover matches nothing and writes nothing
  (`NotLeader`).

Every change of leader is an audit event `scheduler.leader` (`action`: `elected` with the
previous holder and term, or `resigned`). Invariant: nothing here commits except the `Elector`,
which runs each step in a unit of work it is given.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Connection, Engine, insert, text, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from suanli.errors import SuanliError
from suanli.services.core import append_event, aware, now
from suanli.store.db import make_engine, session_factory
from suanli.store.models import SchedulerLeader

log = logging.getLogger("suanli.leader")

LEADER_ROW = 1
# a lease lapses this many schedule intervals after its last renewal. A dead leader is replaced
# at the next interval through the advisory lock (PostgreSQL) or file ownership (SQLite), so the
# lease bounds only a hung leader; it is long enough that a loaded leader (a slow pass holding
# the row, a starved election thread) does not lose the lead to a lapse
LEASE_INTERVALS = 10
# a lapsed lease displaces a holder that still holds the advisory lock (alive, but not renewing:
# loaded or hung) only this many leases after its last renewal
HUNG_LEASES = 4
ADVISORY_KEY = 0x7375616E6C69  # "suanli": the PostgreSQL advisory lock of the scheduling leader
EVENT = "scheduler.leader"
SUBJECT = "scheduler"


class NotLeader(SuanliError):
    """A write of a pass started under a leadership this process no longer holds."""

    def __init__(self, holder: str, term: int) -> None:
        self.holder, self.term = holder, term
        super().__init__(
            f"{holder} no longer leads the scheduler (term {term} ended): the pass is dropped",
            f"{holder} 已不再是调度主节点（任期 {term} 已结束）：本轮调度作废",
        )


class DatabaseOwned(SuanliError):
    """A second server process on one SQLite file."""

    def __init__(self, database: str, lock: str, owner: str) -> None:
        self.database, self.lock, self.owner = database, lock, owner
        super().__init__(
            f"another suanli process ({owner}) already serves the SQLite database {database}: "
            "one process owns a SQLite file. Stop that process, give this one another --db or "
            "--home, or use PostgreSQL (--db postgresql://...) to run several servers "
            f"(lock file {lock})",
            f"另一个 suanli 进程（{owner}）已在服务 SQLite 数据库 {database}："
            "一个 SQLite 文件只能由一个进程使用。请停止该进程、为本进程指定其他 --db 或 --home，"
            f"或改用 PostgreSQL（--db postgresql://...）运行多个服务进程（锁文件 {lock}）",
        )


@dataclass(frozen=True)
class Lead:
    """A leadership: who holds it and the term it was taken in."""

    holder: str
    term: int


def holder_id() -> str:
    """This process's holder id: `hostname:pid:random` (random: a restarted process with a
    recycled pid is another holder)."""
    return f"{socket.gethostname()[:96]}:{os.getpid()}:{secrets.token_hex(4)}"


def holder_pid(holder: str) -> int:
    """The process id inside a holder id."""
    return int(holder.rsplit(":", 2)[-2])


def current(session: Session) -> SchedulerLeader | None:
    """The leader row (None before anyone ever led)."""
    return session.get(SchedulerLeader, LEADER_ROW, populate_existing=True)


def claim(
    session: Session,
    holder: str,
    lease_s: float,
    *,
    locked: bool = False,
    sole_owner: bool = False,
) -> tuple[Lead | None, bool]:
    """Try to lead: (the lead, whether it changed hands) or (None, False) when another process
    holds an unexpired lease. Renews the lease when `holder` leads already (same term); takes it
    over when it has lapsed, or at once when the holder is proved gone: the caller holds the
    advisory lock (`locked`) and the row says its holder held it, or the caller owns the SQLite
    file (`sole_owner`). The row records `locked`. The takeover is one compare-and-set UPDATE on
    the holder, term and expiry that were read, so of two contenders one wins."""
    moment = now(session)
    until = moment + timedelta(seconds=lease_s)
    row = current(session)
    if row is None:
        try:
            with session.begin_nested():
                session.execute(
                    insert(SchedulerLeader).values(
                        id=LEADER_ROW, holder=holder, term=1, expires_at=until, locked=locked
                    )
                )
        except IntegrityError:  # another process inserted it first
            return None, False
        _record(session, holder, 1, None, None, "first")
        return Lead(holder, 1), True
    old_holder, old_term = row.holder, row.term
    if old_holder == holder:
        renewed = _renew(session, holder, old_term, until, locked=locked)
        return (Lead(holder, old_term) if renewed else None), False
    # a holder whose row says it held the lock, while the caller could not take it, is alive
    # (its lock's connection is open): a lapse displaces it only HUNG_LEASES leases on (a
    # loaded leader that renews late keeps the lead; a hung one is still replaced)
    alive = row.locked and not locked and not sole_owner
    lapse = moment - timedelta(seconds=lease_s * (HUNG_LEASES - 1) if alive else 0)
    expired = aware(row.expires_at) <= lapse
    gone = sole_owner or (locked and row.locked)
    force = gone and not expired
    if not (expired or force):
        return None, False
    condition = [SchedulerLeader.holder == old_holder, SchedulerLeader.term == old_term]
    if not force:
        condition.append(SchedulerLeader.expires_at <= lapse)
    won = session.execute(
        update(SchedulerLeader)
        .where(SchedulerLeader.id == LEADER_ROW, *condition)
        .values(holder=holder, term=old_term + 1, expires_at=until, locked=locked)
        .execution_options(synchronize_session=False)
    )
    if _rowcount(won) != 1:
        return None, False
    reason = "expired" if expired else "holder gone"
    _record(session, holder, old_term + 1, old_holder, old_term, reason)
    return Lead(holder, old_term + 1), True


def _rowcount(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


def _renew(
    session: Session, holder: str, term: int, until: datetime, *, locked: bool | None = None
) -> bool:
    values: dict[str, Any] = {"expires_at": until}
    if locked is not None:
        values["locked"] = locked
    renewed = session.execute(
        update(SchedulerLeader)
        .where(
            SchedulerLeader.id == LEADER_ROW,
            SchedulerLeader.holder == holder,
            SchedulerLeader.term == term,
        )
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return _rowcount(renewed) == 1


def _record(
    session: Session,
    holder: str,
    term: int,
    previous: str | None,
    previous_term: int | None,
    reason: str,
) -> None:
    append_event(
        session,
        EVENT,
        SUBJECT,
        holder,
        {
            "action": "elected",
            "holder": holder,
            "term": term,
            "previous": previous,
            "previous_term": previous_term,
            "reason": reason,
        },
    )


def fence(session: Session, lead: Lead, lease_s: float) -> None:
    """The first statement of every write of a pass: NotLeader unless `lead` (holder and term)
    still holds the row; renews the lease, and keeps the row locked until the transaction ends,
    so no takeover can happen between this check and the pass's commit."""
    if not _renew(session, lead.holder, lead.term, now(session) + timedelta(seconds=lease_s)):
        raise NotLeader(lead.holder, lead.term)


def resign(session: Session, lead: Lead) -> bool:
    """Give the lead up now (the lease ends; the next contender takes over at once)."""
    ended = session.execute(
        update(SchedulerLeader)
        .where(
            SchedulerLeader.id == LEADER_ROW,
            SchedulerLeader.holder == lead.holder,
            SchedulerLeader.term == lead.term,
        )
        .values(expires_at=now(session))
        .execution_options(synchronize_session=False)
    )
    if _rowcount(ended) != 1:
        return False
    append_event(
        session,
        EVENT,
        SUBJECT,
        lead.holder,
        {"action": "resigned", "holder": lead.holder, "term": lead.term},
    )
    return True


def election_connections(
    bind: Any, clock: Any
) -> tuple[Engine, Callable[[], AbstractContextManager[Session]]] | None:
    """On PostgreSQL, an engine of the election's own (two connections: the advisory lock's and
    the claim's) and a unit of work on it that reads time from `clock`: a server busy with
    requests, its pool drained by them, must still renew its lease on time. None on SQLite
    (one process owns the file; its election queues on the write lock like any writer)."""
    if not isinstance(bind, Engine) or bind.dialect.name != "postgresql":
        return None
    engine = make_engine(bind.url.render_as_string(hide_password=False), pool_size=1)
    factory = session_factory(engine)

    @contextmanager
    def unit_of_work() -> Iterator[Session]:
        with factory() as session:
            session.info["clock"] = clock
            with session.begin():
                yield session

    return engine, unit_of_work


class Elector:
    """This process's side of the election: `step()` every schedule interval (from its own
    thread, so that a long pass does not let the lease lapse), `lead` for the pass to fence its
    writes with, `resign()` on shutdown.

    `unit_of_work` opens one committed transaction; `engine` is used for the advisory lock on
    PostgreSQL (a connection held while leading); `sole_owner`: this process owns the SQLite
    file, so any lease left on it is a dead process's."""

    def __init__(
        self,
        unit_of_work: Callable[[], AbstractContextManager[Session]],
        lease_s: float,
        engine: Engine | None = None,
        *,
        sole_owner: bool = False,
        holder: str | None = None,
    ) -> None:
        self.unit_of_work = unit_of_work
        self.lease_s = lease_s
        self.holder = holder or holder_id()
        self.sole_owner = sole_owner
        self.lead: Lead | None = None
        self._engine = (
            engine if engine is not None and engine.dialect.name == "postgresql" else None
        )
        self._lock: Connection | None = None  # the connection holding the advisory lock

    def step(self) -> bool:
        """Take, renew or lose the lead; whether this process became leader in this step."""
        locked = self._try_lock()
        try:
            with self.unit_of_work() as session:
                lead, changed = claim(
                    session, self.holder, self.lease_s, locked=locked, sole_owner=self.sole_owner
                )
        except Exception:
            log.exception("leader election step failed; the next interval retries")
            lead, changed = None, False
        was = self.lead
        self.lead = lead
        if lead is None:
            self._unlock()
            if was is not None:
                log.warning("%s lost the scheduler lead (term %d)", self.holder, was.term)
            return False
        if changed or was is None or was.term != lead.term:
            log.warning("%s leads the scheduler (term %d)", self.holder, lead.term)
            return True
        return False

    def fence(self, session: Session, lead: Lead) -> None:
        fence(session, lead, self.lease_s)

    def resign(self) -> None:
        """Give the lead up (on shutdown), so another process takes over at its next interval."""
        lead, self.lead = self.lead, None
        if lead is not None:
            try:
                with self.unit_of_work() as session:
                    resign(session, lead)
            except Exception:
                log.exception("could not resign the scheduler lead; it lapses on its own")
        self._unlock()

    # --- the PostgreSQL advisory lock --------------------------------------------------------

    def _try_lock(self) -> bool:
        """Whether this process holds the advisory lock (taking it when free)."""
        if self._engine is None:
            return False
        try:
            if self._lock is None:
                self._lock = self._engine.connect()
                got = bool(
                    self._lock.execute(
                        text("SELECT pg_try_advisory_lock(:key)"), {"key": ADVISORY_KEY}
                    ).scalar()
                )
                self._lock.commit()
                if not got:
                    self._lock.close()
                    self._lock = None
                return got
            self._lock.execute(text("SELECT 1"))  # the lock lives as long as this connection
            self._lock.commit()
            return True
        except DBAPIError:
            log.warning("the advisory lock's connection failed; relying on the lease")
            self._drop_lock()
            return False

    def _unlock(self) -> None:
        if self._lock is None:
            return
        try:
            self._lock.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_KEY})
            self._lock.commit()
            self._lock.close()  # back to the pool, without the lock
            self._lock = None
        except DBAPIError:
            self._drop_lock()

    def _drop_lock(self) -> None:
        """Close the lock's connection for good (never back to the pool: it may still hold the
        lock), which releases the lock on the server."""
        if self._lock is not None:
            try:
                self._lock.invalidate()
                self._lock.close()
            except DBAPIError:
                pass
            self._lock = None


# --- one process owns a SQLite file ------------------------------------------------------------


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL (None for PostgreSQL or an in-memory database)."""
    if not url.startswith("sqlite"):
        return None
    path = url.split("///", 1)[-1].split("?", 1)[0]
    return None if not path or path == ":memory:" else Path(path)


def own_database_file(url: str) -> IO[str] | None:
    """For a SQLite URL, take the exclusive lock that makes this process the file's one server
    (`<database>.lock`, held until the returned handle is closed or the process ends, however it
    ends); DatabaseOwned when another process holds it. None (nothing to own) for PostgreSQL."""
    path = sqlite_path(url)
    if path is None:
        return None
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.with_name(path.name + ".lock")
    handle = open(lock, "a+", encoding="utf-8")  # noqa: SIM115 - held for the process's life
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        owner = handle.read().strip() or "unknown"
        handle.close()
        raise DatabaseOwned(str(path), str(lock), f"pid {owner}") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle
