"""Migrations: `alembic upgrade head` on an empty SQLite and PostgreSQL; a stale schema refused."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from suanli.store.db import make_engine, schema_revision

ROOT = Path(__file__).resolve().parents[3]


def test_alembic_upgrade_head_on_an_empty_database(database_url: str) -> None:
    env = {**os.environ, "SUANLI_DATABASE_URL": database_url}
    done = subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    engine = make_engine(database_url)
    current, head = schema_revision(engine)
    engine.dispose()
    assert current == head == "0013"


def test_the_server_refuses_a_stale_schema(database_url: str, tmp_path: Path) -> None:
    refused = subprocess.run(
        [
            sys.executable,
            "-m",
            "suanli",
            "serve",
            "--no-upgrade",
            "--db",
            database_url,
            "--port",
            "0",
            "--home",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 2
    assert "suanli serve --upgrade" in refused.stderr
    assert refused.stderr.count("\n") == 1
