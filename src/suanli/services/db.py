"""Opening the store for a process: `open_store(url, migrate=...)` makes the engines and the
session factories, so that the edges (the API, the CLI) never import `suanli.store` themselves.

On SQLite the readers get an engine of their own (WAL lets them read beside the one writer) and
`serialise_writes` is true (one writer at a time: queue writers on a lock in the process rather
than on the database's busy handler); on PostgreSQL readers and writers share one engine.
`migrate` upgrades the schema to the newest migration; without it a stale schema is refused
(`store.db.SchemaMismatch`).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from suanli.store.db import check_schema, make_engine, session_factory, upgrade


@dataclass(frozen=True)
class Store:
    """The open store: writer and reader engines and their session factories."""

    engine: Engine
    reader: Engine
    sessions: sessionmaker[Session]
    readers: sessionmaker[Session]
    serialise_writes: bool  # SQLite: one writer at a time

    def dispose(self) -> None:
        self.engine.dispose()
        self.reader.dispose()


def open_store(url: str, *, migrate: bool = True) -> Store:
    """The store at `url`, its schema upgraded (`migrate`) or checked to be current."""
    engine = make_engine(url)
    if migrate:
        upgrade(engine)
    check_schema(engine)
    sqlite = engine.dialect.name == "sqlite"
    reader = make_engine(url, reader=True) if sqlite else engine
    return Store(engine, reader, session_factory(engine), session_factory(reader), sqlite)
