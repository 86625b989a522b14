"""The bare-stack floor for the submissions benchmark (`bench_submit.py`): what FastAPI, pydantic
and uvicorn do on this machine for a submission with nothing of suanli in it.

One endpoint, POST /v1/tasks: a pydantic body (executors with a command, resources), then, in
one SQLite WAL transaction (BEGIN IMMEDIATE), one row inserted in `tasks` and one event appended
to a hash chain (read the head, insert the event hashing the previous one, move the head);
201 with the task's id and state. Run: `python benchmarks/floor_app.py --db FILE --port N`
(uvicorn, one process, log level warning, as `suanli serve` runs it).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import secrets
import sqlite3
import threading
from datetime import UTC, datetime

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel, Field

SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS tasks (id TEXT PRIMARY KEY, spec TEXT NOT NULL, state TEXT NOT NULL,
    created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY, at TEXT NOT NULL, kind TEXT NOT NULL,
    subject TEXT NOT NULL, data TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS chain_head (id INTEGER PRIMARY KEY, seq INTEGER, hash TEXT);
"""
    + f"INSERT OR IGNORE INTO chain_head VALUES (1, 0, '{'0' * 64}');"
)


class Executor(BaseModel):
    command: list[str] = Field(min_length=1, max_length=64)


class Resources(BaseModel):
    devices: int = Field(default=1, ge=1, le=1024)


class TaskCreate(BaseModel):
    executors: list[Executor] = Field(min_length=1, max_length=16)
    resources: Resources = Resources()


class TaskRead(BaseModel):
    id: str
    state: str


def make_app(path: str) -> FastAPI:
    app = FastAPI()
    local = threading.local()

    def connection() -> sqlite3.Connection:
        found: sqlite3.Connection | None = getattr(local, "connection", None)
        if found is None:
            found = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            found.execute("PRAGMA journal_mode=WAL")
            found.execute("PRAGMA synchronous=NORMAL")
            found.execute("PRAGMA busy_timeout=30000")
            local.connection = found
        return found

    with sqlite3.connect(path) as setup:
        setup.executescript(SCHEMA)

    @app.post("/v1/tasks", status_code=201)
    def submit(body: TaskCreate) -> TaskRead:
        task_id = f"task-{secrets.token_hex(6)}"
        at = datetime.now(UTC).isoformat()
        spec = body.model_dump_json()
        db = connection()
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("INSERT INTO tasks VALUES (?, ?, 'QUEUED', ?)", (task_id, spec, at))
            seq, prev = db.execute("SELECT seq, hash FROM chain_head WHERE id = 1").fetchone()
            data = json.dumps({"devices": body.resources.devices})
            digest = hashlib.sha256(
                json.dumps([prev, seq + 1, at, "task.submitted", task_id, data]).encode()
            ).hexdigest()
            db.execute(
                "INSERT INTO events VALUES (?, ?, 'task.submitted', ?, ?, ?, ?)",
                (seq + 1, at, task_id, data, prev, digest),
            )
            db.execute("UPDATE chain_head SET seq = ?, hash = ? WHERE id = 1", (seq + 1, digest))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return TaskRead(id=task_id, state="QUEUED")

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", required=True)
    parser.add_argument("--port", type=int, required=True)
    arguments = parser.parse_args()
    uvicorn.run(make_app(arguments.db), host="127.0.0.1", port=arguments.port, log_level="warning")


if __name__ == "__main__":
    main()
