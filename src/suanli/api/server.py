"""The platform as processes: `serve` (the API under uvicorn, in one or `workers` processes) and
`run_scheduler` (the scheduling loop alone, no HTTP: `suanli scheduler`).

Any number of these may run on one PostgreSQL database: every process that runs a scheduling
loop contends for the one lead (`services.leader`) and only the leader passes; the others, and
every process started with `run_scheduler=False` (`suanli serve --no-scheduler`), serve the API
only. On SQLite one process owns the file (`services.leader.own_database_file`): a second
server or scheduler on it is refused, and so is `workers > 1`.

Worker processes are started by uvicorn (spawned: they import `app_from_environment`, which
builds the app from the settings the parent put in `SUANLI_SERVE_APP`); the parent migrates the
schema once before it starts them.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Callable
from typing import IO, Any

from fastapi import FastAPI

from suanli.api.app import Platform, create_app
from suanli.clock import SYSTEM, Clock
from suanli.config import Settings
from suanli.errors import InvalidValue
from suanli.services.db import open_store
from suanli.services.leader import own_database_file, sqlite_path

APP_ENV = "SUANLI_SERVE_APP"  # the worker processes' settings (JSON), set by `serve`


def app_from_environment() -> FastAPI:
    """The app of one uvicorn worker process (`serve(workers=N)`), from `SUANLI_SERVE_APP`."""
    spec = json.loads(os.environ[APP_ENV])
    settings = Settings.model_validate(spec["settings"])
    return create_app(settings, migrate=False, run_scheduler=bool(spec["scheduler"]))


def _own(settings: Settings, workers: int) -> IO[str] | None:
    """On SQLite: refuse more than one worker, then take the file (DatabaseOwned when another
    process serves it). None on PostgreSQL."""
    if workers < 1:
        raise InvalidValue("workers", workers, "at least 1", "至少 1")
    if sqlite_path(settings.url) is not None and workers > 1:
        raise InvalidValue(
            "workers",
            workers,
            "1 on SQLite (one process owns a SQLite file); use PostgreSQL "
            "(--db postgresql://...) to serve from several processes",
            "SQLite 上只能为 1（一个 SQLite 文件只能由一个进程使用）；多进程服务请改用 "
            "PostgreSQL（--db postgresql://...）",
        )
    return own_database_file(settings.url)


def serve(
    settings: Settings,
    *,
    workers: int = 1,
    run_scheduler: bool = True,
    migrate: bool = True,
    tls: tuple[str, str] | None = None,
    starting: Callable[[], None] | None = None,
    clock: Clock = SYSTEM,
) -> None:
    """Serve the API until stopped: in this process (`workers=1`), or in `workers` uvicorn
    worker processes, each contending for the scheduling lead unless `run_scheduler` is off.
    A virtual `clock` (moved by `POST /v1/clock`) needs a single process.
    `starting` is called once the database is this process's to serve, before uvicorn starts."""
    import uvicorn

    if workers > 1 and clock is not SYSTEM:
        raise InvalidValue(
            "clock",
            repr(clock),
            "the system clock when serving from several processes (each would have its own "
            "virtual clock): use --workers 1 with --clock virtual",
            "多进程服务时只能使用系统时钟（每个进程会有各自的虚拟时钟）：--clock virtual 请配合 "
            "--workers 1",
        )
    owner = _own(settings, workers)
    common: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": "warning",
        "ssl_certfile": tls[0] if tls else None,
        "ssl_keyfile": tls[1] if tls else None,
        "proxy_headers": bool(settings.forwarded_allow_ips),
        "forwarded_allow_ips": settings.forwarded_allow_ips or None,
    }
    try:
        if workers == 1:
            application = create_app(
                settings,
                migrate=migrate,
                run_scheduler=run_scheduler,
                sole_owner=owner is not None,
                clock=clock,
            )
            if starting is not None:
                starting()
            uvicorn.run(application, **common)
            return
        open_store(settings.url, migrate=migrate).dispose()  # migrate (or check) once
        if starting is not None:
            starting()
        os.environ[APP_ENV] = json.dumps(
            {"settings": settings.model_dump(mode="json"), "scheduler": run_scheduler}
        )
        uvicorn.run(
            "suanli.api.server:app_from_environment", factory=True, workers=workers, **common
        )
    finally:
        if owner is not None:
            owner.close()


def run_scheduler(settings: Settings, *, migrate: bool = True) -> None:
    """Run the scheduling loop alone (no HTTP) until SIGINT or SIGTERM: contend for the lead,
    pass while leading, resign on the way out."""
    owner = _own(settings, 1)
    stop = threading.Event()
    try:
        store = open_store(settings.url, migrate=migrate)
        platform = Platform(
            settings,
            store.sessions,
            store.readers,
            store.serialise_writes,
            sole_owner=owner is not None,
        )
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda _signum, _frame: stop.set())
        threads = platform.start_scheduler()
        try:
            while not stop.wait(0.5):
                pass
        finally:
            platform.stop_scheduler(threads)
            store.dispose()
    finally:
        if owner is not None:
            owner.close()
