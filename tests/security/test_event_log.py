"""The event log's streams and seals: writers of different streams do not wait for each other,
and `suanli audit verify` still finds every edit or removal of a sealed event.

The log is a set of hash chains (stream 0 for money, streams 1..16 for the rest), each with its
own head row, and a chain of seals recording every stream's head. An insider with database
access edits an event, removes one from the middle of a stream, removes a stream's tail after
a seal (and rewinds the head row to match), or edits a seal: `audit verify` exits 1 naming the
event, the stream or the seal. The incremental audit resumes per stream, so an event whose
global seq is older than events already verified, but which committed later, is still walked.
The migration keeps the events logged before streams as stream 0, hashes unchanged.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from suanli.services import market
from suanli.services.core import (
    MONEY_STREAM,
    STREAMS,
    Role,
    append_event,
    create_token,
    event_hash,
    now,
    seal,
    stream_of,
    verify_log,
)
from suanli.store.db import _alembic_config, make_engine, session_factory, upgrade
from suanli.store.models import Principal
from tests.waiting import lock_waiters, wait_until


def _audit(url: str, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "suanli", "audit", "verify", "--db", url, *flags],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    upgrade(engine)
    yield engine
    engine.dispose()


def _subjects_in(stream: int, count: int) -> list[str]:
    """`count` subjects that hash to `stream`."""
    found: list[str] = []
    n = 0
    while len(found) < count:
        if stream_of(f"task-{n}") == stream:
            found.append(f"task-{n}")
        n += 1
    return found


def _fill(engine: Engine) -> dict[str, int]:
    """A small log: people and money (stream 0 and ordinary streams), then five events on each
    of two subjects in stream 3, one unit of work each; the first of them seq-wise by name."""
    with session_factory(engine).begin() as session:
        operator, _ = create_token(session, Role.OPERATOR, "op")
        consumer, _ = create_token(session, Role.CONSUMER, "c")
        market.credit(session, operator, consumer.id, 5_000)
    seqs: dict[str, int] = {}
    for subject in _subjects_in(3, 2):
        for n in range(5):
            with session_factory(engine).begin() as session:
                seqs[f"{subject}/{n}"] = append_event(session, "task.state", subject, "t", {"n": n})
    return seqs


def _sql(engine: Engine, statement: str, **values: object) -> None:
    with engine.begin() as connection:
        connection.execute(text(statement), values)


def test_events_go_to_streams_and_money_to_stream_0(engine: Engine) -> None:
    seqs = _fill(engine)
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT seq, stream, stream_seq, kind FROM events ORDER BY seq")
        ).all()
    assert {stream for _, stream, _, kind in rows if kind.startswith("money.")} == {MONEY_STREAM}
    assert all(1 <= stream <= STREAMS for _, stream, _, kind in rows if kind == "task.state")
    in_3 = [stream_seq for seq, stream, stream_seq, _ in rows if stream == 3]
    assert in_3 == list(range(1, len(in_3) + 1))  # one chain, no gap, in global order
    assert len(in_3) >= len(seqs)
    assert _audit(engine.url.render_as_string(hide_password=False)).returncode == 0


def test_seals_chain_and_skip_an_unchanged_log(engine: Engine) -> None:
    _fill(engine)
    with session_factory(engine).begin() as session:
        first = seal(session, every_s=0)
    with session_factory(engine).begin() as session:
        assert seal(session, every_s=0) is None  # nothing appended since
        append_event(session, "task.state", "task-x", "t", {})
    with session_factory(engine).begin() as session:
        second = seal(session, every_s=0)
    assert first == 1 and second == 2
    with session_factory(engine).begin() as session:
        append_event(session, "task.state", "task-z", "t", {})
        assert seal(session) is None  # the last seal is younger than SEAL_EVERY_S
    with Session(engine) as session:
        check = verify_log(session)
    assert check.problem is None and check.seal[0] == 2


TAMPERING = {
    # what the insider does (SQL on the filled, sealed log) -> what the audit must say
    "edit an event's data": (
        "UPDATE events SET data = '{\"n\": 9}' WHERE seq = :middle",
        "event #{middle} (stream 3 #",
    ),
    "remove an event in the middle of a stream": (
        "DELETE FROM events WHERE seq = :middle",
        "is missing (removed; the stream goes on at event #",
    ),
    "remove a stream's tail after a seal, rewinding its head": (
        "DELETE FROM events WHERE stream = 3 AND stream_seq > 2; "
        "UPDATE event_streams SET seq = 2, hash = "
        "(SELECT hash FROM events WHERE stream = 3 AND stream_seq = 2) WHERE stream = 3",
        "stream 3 was sealed at #",
    ),
    "remove a stream's tail, leaving its head": (
        "DELETE FROM events WHERE seq = :last",
        "(the stream's tail was removed)",
    ),
    "edit a seal": (
        "UPDATE seals SET heads = '{}' WHERE id = 1",
        "seal #1 does not match its root (edited)",
    ),
    "remove the first seal": (
        "DELETE FROM seals WHERE id = 1",
        "seal #1 does not match the chain of seals (removed)",
    ),
}


@pytest.mark.parametrize("attack", sorted(TAMPERING))
def test_audit_verify_finds_tampering(engine: Engine, attack: str) -> None:
    url = engine.url.render_as_string(hide_password=False)
    seqs = _fill(engine)
    with session_factory(engine).begin() as session:
        assert seal(session, every_s=0) == 1
    with session_factory(engine).begin() as session:
        # one more event (not in stream 3) and a second seal after it
        append_event(session, "task.state", _subjects_in(6, 1)[0], "t", {})
    with session_factory(engine).begin() as session:
        assert seal(session, every_s=0) == 2
    assert _audit(url).returncode == 0
    ordered = sorted(seqs.values())
    middle, last = ordered[len(ordered) // 2], ordered[-1]
    statement, said = TAMPERING[attack]
    for part in statement.split("; "):
        values = {"middle": middle, "last": last}
        _sql(engine, part, **{k: v for k, v in values.items() if f":{k}" in part})
    for flags in ((), ("--incremental",)):
        failed = _audit(url, *flags)
        assert failed.returncode == 1, (attack, flags, failed.stdout)
        assert said.format(middle=middle) in failed.stderr, (attack, failed.stderr)


@pytest.mark.parametrize(
    "database_url", ["postgresql"], indirect=True
)  # SQLite has one writer: units of work commit in seq order
def test_incremental_audit_walks_a_late_commit(engine: Engine) -> None:
    """On PostgreSQL a unit of work takes its global seq when it appends, but may commit after
    a later one: the checkpoint keeps each stream's head, so the late event is still walked."""
    url = engine.url.render_as_string(hide_password=False)
    _fill(engine)
    late_subject, early_subject = _subjects_in(5, 1)[0], _subjects_in(7, 1)[0]
    late = Session(engine)
    late_seq = append_event(late, "task.state", late_subject, "t", {"late": True})
    with session_factory(engine).begin() as session:
        # another stream's writer does not wait for the open unit of work (no lock shared)
        session.execute(text("SET LOCAL lock_timeout = '20s'"))
        early_seq = append_event(session, "task.state", early_subject, "t", {})
    assert early_seq > late_seq
    # the full walk reads a snapshot without locks and stores its checkpoint: past early_seq
    assert _audit(url).returncode == 0
    late.commit()
    late.close()
    _sql(engine, "UPDATE events SET actor = 'someone else' WHERE seq = :seq", seq=late_seq)
    failed = _audit(url, "--incremental")
    assert failed.returncode == 1 and f"event #{late_seq} (stream 5 #" in failed.stderr


@pytest.mark.parametrize(
    "database_url", ["postgresql"], indirect=True
)  # SQLite has one writer: every unit of work waits for the one before
def test_one_stream_serialises_its_writers(engine: Engine) -> None:
    """Two units of work on the same stream: the second waits for the first's head row."""
    first, second = _subjects_in(4, 2)
    holder = Session(engine)
    append_event(holder, "task.state", first, "t", {})
    with pytest.raises(Exception, match="lock timeout"), session_factory(engine).begin() as waiter:
        waiter.execute(text("SET LOCAL lock_timeout = '200ms'"))
        append_event(waiter, "task.state", second, "t", {})
    holder.rollback()
    holder.close()


def test_money_keeps_one_stream_in_a_unit_of_work(engine: Engine) -> None:
    """A unit of work that appends an ordinary event and then moves money holds the ordinary
    head, then the money head; its events after the money are in stream 0 too."""
    with session_factory(engine).begin() as session:
        operator, _ = create_token(session, Role.OPERATOR, "op")
        consumer, _ = create_token(session, Role.CONSUMER, "c")
    with session_factory(engine).begin() as session:
        who = session.get(Principal, operator.id)
        assert who is not None
        ordinary = append_event(session, "task.state", "task-1", "t", {})
        market.credit(session, who, consumer.id, 100)
        after = append_event(session, "task.state", "task-2", "t", {})
    with engine.connect() as connection:
        streams: dict[int, int] = dict(
            connection.execute(
                text("SELECT seq, stream FROM events WHERE seq IN (:a, :b)"),
                {"a": ordinary, "b": after},
            ).all()
        )
    assert streams[ordinary] == stream_of("task-1") and streams[after] == MONEY_STREAM
    assert _audit(engine.url.render_as_string(hide_password=False)).returncode == 0


def test_migration_keeps_the_old_chain_as_stream_0(database_url: str) -> None:
    """Events logged by the single chain (0007) become stream 0, hashes unchanged; the
    downgrade re-chains every event into one chain again."""
    engine = make_engine(database_url)
    config = _alembic_config(engine)
    command.upgrade(config, "0007")
    old_events = sa.table(  # the events table as 0007 has it
        "events",
        *(sa.column(name) for name in ("seq", "kind", "subject", "actor", "prev_hash", "hash")),
        sa.column("at", sa.DateTime(timezone=True)),
        sa.column("data", sa.JSON()),
    )
    prev = "0" * 64
    with engine.begin() as connection:
        for seq in (1, 2, 3):
            at = now()
            digest = event_hash(prev, seq, at, "task.state", f"task-{seq}", "t", {"n": seq})
            connection.execute(
                sa.insert(old_events).values(
                    seq=seq,
                    at=at,
                    kind="task.state",
                    subject=f"task-{seq}",
                    actor="t",
                    data={"n": seq},
                    prev_hash=prev,
                    hash=digest,
                )
            )
            prev = digest
        connection.execute(text("UPDATE chain_head SET seq = 3, hash = :h"), {"h": prev})
    command.upgrade(config, "head")
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT stream, stream_seq FROM events ORDER BY seq"))
        assert [tuple(row) for row in rows] == [(0, 1), (0, 2), (0, 3)]
        assert connection.execute(
            text("SELECT seq, hash FROM event_streams WHERE stream = 0")
        ).one() == (3, prev)
    with session_factory(engine).begin() as session:
        assert append_event(session, "task.state", "task-4", "t", {}) == 4  # the seq goes on
    with Session(engine) as session:
        assert verify_log(session).problem is None
    command.downgrade(config, "0007")
    with engine.connect() as connection:
        head = connection.execute(text("SELECT seq, hash FROM chain_head")).one()
        last = connection.execute(text("SELECT seq, hash FROM events ORDER BY seq DESC")).first()
    assert head == last and head[0] == 4
    command.upgrade(config, "head")
    engine.dispose()


@pytest.mark.parametrize(
    "database_url", ["postgresql"], indirect=True
)  # SQLite has one writer: an audit and a writer never overlap
def test_an_audit_and_a_money_writer_do_not_deadlock(engine: Engine) -> None:
    """A writer holds an ordinary stream's head and then moves money; an audit waiting for that
    head meanwhile must not hold the money head (the writer would wait for it: a deadlock)."""
    with session_factory(engine).begin() as session:
        operator, _ = create_token(session, Role.OPERATOR, "op")
        consumer, _ = create_token(session, Role.CONSUMER, "c")
    writer = Session(engine)
    append_event(writer, "task.state", _subjects_in(9, 1)[0], "t", {})  # holds stream 9
    outcome: dict[str, object] = {}

    def audit() -> None:
        try:
            with session_factory(engine).begin() as session:
                outcome["audit"] = market.audit(session).problem
        except Exception as error:  # reported below
            outcome["audit"] = error

    auditor = threading.Thread(target=audit)
    auditor.start()
    wait_until(lambda: lock_waiters(engine), "the audit to wait for the writer's stream head")
    who = writer.get(Principal, operator.id)
    assert who is not None
    market.credit(writer, who, consumer.id, 100)  # the money head, after stream 9's
    writer.commit()
    writer.close()
    auditor.join(timeout=120)
    assert outcome["audit"] is None, outcome
