"""A real platform for the integration suite: the server as a `suanli serve` subprocess on a
free loopback port, real agents as `suanli agent` subprocesses, and a real database — a fresh
SQLite file, and a fresh database on the PostgreSQL server that `make test` starts
(`scripts/postgres.sh`, URL in SUANLI_TEST_PG_URL)."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from suanli.services.core import Role
from suanli.store.db import make_engine, session_factory, upgrade
from tests.money import FUNDS_FEN, principal_token
from tests.waiting import poll

FAST = {  # short leases and passes so that the suite runs in seconds
    "SUANLI_LEASE_S": "3",
    "SUANLI_HEARTBEAT_S": "0.5",
    "SUANLI_SCHEDULE_INTERVAL_S": "0.3",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pg_admin_url(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'suanli.db'}"
        return
    base = os.environ.get("SUANLI_TEST_PG_URL")
    if not base:
        pytest.skip("no PostgreSQL: run the suite with 'make test' (it starts one)")
    import psycopg

    name = f"test_{secrets.token_hex(4)}"
    with psycopg.connect(_pg_admin_url(base), autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    yield base.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(_pg_admin_url(base), autocommit=True) as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@dataclass
class Platform:
    """A running server, its database, and helpers to act as the three roles."""

    url: str
    database_url: str
    home: Path
    env: dict[str, str]
    server: subprocess.Popen[bytes] | None = None
    agents: list[subprocess.Popen[bytes]] = field(default_factory=list)
    port: int = 0
    clock: str = "system"  # "virtual": the server's time moves only by `advance` (POST /v1/clock)
    extra_args: tuple[str, ...] = ()  # more `suanli serve` arguments (e.g. --no-scheduler)

    def start(self) -> None:
        log = open(self.home / f"server-{len(self.agents)}-{time.time_ns()}.log", "wb")  # noqa: SIM115
        self.server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "suanli",
                "serve",
                "--port",
                str(self.port),
                "--db",
                self.database_url,
                "--home",
                str(self.home),
                *(["--clock", self.clock] if self.clock != "system" else []),
                *self.extra_args,
            ],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        if not poll(self._healthy, timeout_s=60):
            self.server.kill()  # never leave a server behind that a test cannot stop
            self.server.wait(timeout=10)
            raise RuntimeError("the server did not start in 60 s; see " + str(self.home))

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def advance(self, operator: str, seconds: float) -> dict[str, Any]:
        """Move the server's virtual clock forward (`clock="virtual"`); the answer comes once the
        server's scheduling pass has run at the new time (`passed`)."""
        with self.client(operator) as http:
            moved = http.post("/v1/clock", json={"advance_s": seconds})
        assert moved.status_code == 200, moved.text
        return dict(moved.json())

    def stop(self) -> None:
        if self.server is not None and self.server.poll() is None:
            self.server.send_signal(signal.SIGTERM)
            self.server.wait(timeout=20)
        self.server = None

    def token(self, role: Role, name: str, funded: int = FUNDS_FEN) -> str:
        """A new principal's token; a consumer's wallet is funded (`tests.money`)."""
        engine = make_engine(self.database_url)
        with session_factory(engine).begin() as session:
            _, token = principal_token(session, role, name, funded=funded)
        engine.dispose()
        return token

    def client(self, token: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, timeout=30, headers={"Authorization": f"Bearer {token}"}
        )

    def site_with_pool(
        self,
        provider: str,
        count: int = 4,
        province: str = "上海",
        price: int = 10,
        queue_depth: int = 0,
    ) -> str:
        with self.client(provider) as http:
            site = http.post("/v1/sites", json={"name": "test site", "province": province})
            assert site.status_code == 201, site.text
            pool = http.post(
                "/v1/pools",
                json={
                    "site_id": site.json()["id"],
                    "device": "cpu",
                    "count": count,
                    "price_fen_per_device_hour": price,
                    "queue_depth": queue_depth,
                },
            )
            assert pool.status_code == 201, pool.text
        return str(site.json()["id"])

    def agent(
        self,
        provider: str,
        site: str,
        slots: int = 2,
        *extra: str,
        env: dict[str, str] | None = None,
        work_root: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        """A `suanli agent` subprocess with a site-scoped agent token in SUANLI_TOKEN, as a
        provider runs one: issued with the `provider` token for `site` (a token that cannot
        issue one, an agent token say, or a server that is down, is passed as it is); `extra`
        arguments and `env` entries are added. Its work root is `home/work-<n>` unless given
        (give the same one to restart an agent)."""
        token = self.agent_token(provider, site) or provider
        log = open(self.home / f"agent-{len(self.agents)}.log", "wb")  # noqa: SIM115
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "suanli",
                "agent",
                "--server",
                self.url,
                "--site",
                site,
                "--slots",
                str(slots),
                "--work-root",
                str(work_root or self.home / f"work-{len(self.agents)}"),
                *extra,
            ],
            env={**self.env, "SUANLI_TOKEN": token, **(env or {})},  # never on argv
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.agents.append(process)
        return process

    def agent_token(self, provider: str, site: str) -> str | None:
        """A new agent token for `site`, issued with `provider`'s token; None when refused."""
        try:
            with self.client(provider) as http:
                issued = http.post(f"/v1/sites/{site}/agent-tokens", json={"name": "test agent"})
        except httpx.HTTPError:
            return None
        return str(issued.json()["token"]) if issued.status_code == 201 else None

    def wait_for(
        self, token: str, task_id: str, states: set[str], timeout: float = 30.0
    ) -> dict[str, Any]:
        with self.client(token) as http:

            def task() -> dict[str, Any]:
                return dict(http.get(f"/v1/tasks/{task_id}").json())

            last: dict[str, Any] = {}

            def reached() -> bool:
                last.update(task())
                return last["state"] in states

            poll(reached, timeout_s=timeout, every_s=0.05)
            return last


@pytest.fixture
def platform(
    database_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Platform]:
    """A running server on `database_url`; on a virtual clock when the test is marked
    `@pytest.mark.virtual_clock` (then `platform.advance(operator, s)` moves its time); with a
    digital-twin worker process when marked `@pytest.mark.twin_workers`; with the operator's
    settings of `@pytest.mark.server_env(SUANLI_X="...")`."""
    engine = make_engine(database_url)
    upgrade(engine)
    engine.dispose()
    port = free_port()
    env = {**os.environ, **FAST, "SUANLI_HOME": str(tmp_path)}
    env.pop("SUANLI_DATABASE_URL", None)
    clock = "virtual" if request.node.get_closest_marker("virtual_clock") else "system"
    if request.node.get_closest_marker("twin_workers"):
        env["SUANLI_TWIN_WORKERS"] = "1"
    settings = request.node.get_closest_marker("server_env")
    if settings is not None:
        env.update(settings.kwargs)
    running = Platform(
        f"http://127.0.0.1:{port}", database_url, tmp_path, env, port=port, clock=clock
    )
    running.start()
    try:
        yield running
    finally:
        for agent in running.agents:
            if agent.poll() is None:
                os.killpg(agent.pid, signal.SIGTERM)
                try:
                    agent.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(agent.pid, signal.SIGKILL)
        running.stop()


def submit_body(*command: str, **extra: Any) -> dict[str, Any]:
    return {"executors": [{"command": list(command)}], **extra}


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A submitter's and an agent's shared filesystem (workflow engines' job stores): outside
    /tmp, which each task replaces with a private one."""
    path = Path(tempfile.mkdtemp(prefix="suanli-shared-", dir="/var/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


SLOW_S = 6.0  # how long the web server takes over a path under /slow/: twice an agent's lease


@pytest.fixture
def web_root(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A real HTTP server on loopback serving a directory: (the directory, its base URL). A path
    under `/slow/` is answered after `SLOW_S` seconds (a large download, as the agent sees it)."""
    import functools
    import http.server
    import threading

    root = tmp_path / "web"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.startswith("/slow/"):
                time.sleep(SLOW_S)
            super().do_GET()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
