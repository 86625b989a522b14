"""Engines, sessions and schema migrations.

Owns how the platform talks to its database: SQLite (embedded, WAL mode, foreign keys on, write
transactions taken with BEGIN IMMEDIATE so that concurrent writers queue instead of failing) or
PostgreSQL (psycopg 3). `upgrade(engine)` applies the Alembic migrations; `check_schema` refuses
to run a server on a database that is behind or ahead of the code, with a message saying how to
fix it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from suanli.errors import SuanliError

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def make_engine(url: str, *, reader: bool = False, pool_size: int = 16) -> Engine:
    """An engine for `url` holding up to 2 × `pool_size` connections; SQLite gets WAL, a busy
    timeout and immediate write transactions (a `reader` engine's transactions are deferred:
    WAL lets them run beside a writer)."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=pool_size,
            max_overflow=pool_size,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(connection: Any) -> None:
            connection.exec_driver_sql("BEGIN" if reader else "BEGIN IMMEDIATE")

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def _alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest migration."""
    command.upgrade(_alembic_config(engine), "head")


def schema_revision(engine: Engine) -> tuple[str | None, str]:
    """(the database's revision, the code's head revision)."""
    head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    return current, head or ""


class SchemaMismatch(SuanliError):
    def __init__(self, current: str | None, head: str) -> None:
        super().__init__(
            f"database schema is at {current or 'nothing'} but this suanli needs {head}; run "
            "'suanli serve --upgrade' (or 'alembic upgrade head') to migrate it",
            f"数据库结构版本为 {current or '空'}，当前 suanli 需要 {head}；请运行 "
            "'suanli serve --upgrade' 迁移",
        )


def check_schema(engine: Engine) -> None:
    current, head = schema_revision(engine)
    if current != head:
        raise SchemaMismatch(current, head)
