"""Alembic environment: runs migrations on the engine the caller passes in
(`config.attributes["engine"]`), or on `SUANLI_DATABASE_URL` from the command line."""

from __future__ import annotations

from alembic import context

from suanli.config import load_settings
from suanli.store.db import make_engine
from suanli.store.models import Base

config = context.config
engine = config.attributes.get("engine") or make_engine(load_settings().url)
with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
