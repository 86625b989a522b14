"""The scheduler's election, process by process on a real database: three `Elector`s, each with
its own connections (so on PostgreSQL each holds or contends for the advisory lock as a server
process would), on one virtual clock.

The attack is a loaded leader: its lease lapses while it is alive and still holds the advisory
lock. It now keeps the lead for `HUNG_LEASES` leases (CI's loaded servers lapsed the plain lease),
then another process takes over by the lapse. Before, the old leader then "proved" the new one
gone with the lock it had held all along and took the lead back (the lead flapped between
servers under load on CI). Now a lock proves only a holder that held it gone; a process that
finds another holder gives its lock up, and the holder by lapse gets the lock next.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from suanli.clock import VirtualClock
from suanli.services.leader import EVENT, HUNG_LEASES, Elector, current
from suanli.store.db import make_engine, session_factory, upgrade
from suanli.store.models import EventRow
from tests.waiting import wait_until

LEASE_S = 5.0


class Processes:
    """Electors on one database and one clock, each with an engine of its own."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.clock = VirtualClock()
        self.engines: list[Engine] = []

    def elector(self, name: str, *, sole_owner: bool = False) -> Elector:
        engine = make_engine(self.url)
        self.engines.append(engine)
        factory = session_factory(engine)
        clock = self.clock

        @contextmanager
        def unit_of_work() -> Iterator[Session]:
            with factory() as session:
                session.info["clock"] = clock
                with session.begin():
                    yield session

        return Elector(unit_of_work, LEASE_S, engine, sole_owner=sole_owner, holder=f"h:{name}:0")

    def row(self) -> tuple[str, int, bool]:
        with session_factory(self.engines[0])() as session:
            row = current(session)
            assert row is not None
            return row.holder, row.term, row.locked

    def elections(self) -> list[dict[str, object]]:
        with session_factory(self.engines[0])() as session:
            rows = session.query(EventRow).filter(EventRow.kind == EVENT).order_by(EventRow.seq)
            return [dict(event.data) for event in rows]

    def close(self) -> None:
        for engine in self.engines:
            engine.dispose()


@pytest.fixture
def processes(database_url: str) -> Iterator[Processes]:
    engine = make_engine(database_url)
    upgrade(engine)
    engine.dispose()
    world = Processes(database_url)
    yield world
    world.close()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_lapsed_leader_that_keeps_its_lock_does_not_take_the_lead_back(
    processes: Processes,
) -> None:
    a, b, c = (processes.elector(name) for name in "abc")
    assert a.step() and a.lead is not None  # first: a leads, holding the lock
    assert processes.row() == ("h:a:0", 1, True)
    assert not b.step() and not c.step()  # the lock is a's, the lease unexpired

    # a is loaded: no renewal for longer than the lease. It still holds its lock, so it is
    # alive: b does not take over on the first lapse, only once a looks hung
    processes.clock.advance(LEASE_S + 1)
    assert not b.step() and b.lead is None
    processes.clock.advance(LEASE_S * (HUNG_LEASES - 1) - 2)
    assert not b.step() and b.lead is None
    processes.clock.advance(2)
    assert b.step() and b.lead is not None and b.lead.term == 2
    assert processes.row() == ("h:b:0", 2, False)  # b could not get a's lock

    # a comes back still holding its lock: it must not take the lead back, and it lets go
    for _ in range(3):
        assert not a.step() and a.lead is None
        assert processes.row()[:2] == ("h:b:0", 2)
    # b renews and now holds the lock a gave up; c cannot take over while b lives
    assert not b.step() and b.lead is not None
    assert processes.row() == ("h:b:0", 2, True)
    assert not c.step() and c.lead is None

    # b dies (its lock's connection closes): c gets the lock and takes over within a few of its
    # steps (the server ends b's backend asynchronously), with no lapse of the virtual clock
    b._drop_lock()
    wait_until(c.step, "c to take over from the dead b", 5)
    assert c.lead is not None and c.lead.term == 3
    elections = processes.elections()
    assert [(e["holder"], e["term"], e["reason"]) for e in elections] == [
        ("h:a:0", 1, "first"),
        ("h:b:0", 2, "expired"),
        ("h:c:0", 3, "holder gone"),
    ]


def test_a_leader_by_lapse_is_not_displaced_before_its_lease_ends(processes: Processes) -> None:
    a, b = processes.elector("a"), processes.elector("b")
    assert a.step()
    processes.clock.advance(LEASE_S * HUNG_LEASES + 1)  # lapsed, even for a holder of the lock
    assert b.step() and b.lead is not None
    assert not a.step() and a.lead is None
    processes.clock.advance(LEASE_S - 1)  # b does not renew, but its lease has not ended
    assert not a.step()
    processes.clock.advance(2)
    assert a.step() and a.lead is not None and a.lead.term == 3  # now it has
