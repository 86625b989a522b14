"""Attack: tokens and task data in clear text on the wire (`suanli serve` could not do TLS), and
clients that would talk to whoever answers.

`suanli serve --tls-cert F --tls-key F` serves https; the CLI and the agent verify the server
against `--ca FILE` / `SUANLI_CA` (else the system's trust store): a certificate from another
CA is refused with one line, not a traceback. Certificates come from the real `openssl`.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from suanli.services.core import Role, create_token
from suanli.store.db import make_engine, session_factory, upgrade
from tests.integration.platform.conftest import FAST, free_port, submit_body
from tests.money import principal_token
from tests.waiting import healthy, poll, wait_until

TERMINAL = {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED"}


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _ca(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed CA: (certificate, key)."""
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    _openssl(
        *("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
        *("-subj", f"/CN={name}", "-keyout", str(key), "-out", str(cert)),
        *("-addext", "basicConstraints=critical,CA:TRUE"),
        *("-addext", "keyUsage=critical,keyCertSign,cRLSign"),
        cwd=directory,
    )
    return cert, key


def _server_cert(directory: Path, ca: tuple[Path, Path]) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost signed by `ca`: (certificate, key)."""
    key, request, cert = (
        directory / "server.key",
        directory / "server.csr",
        directory / "server.pem",
    )
    extensions = directory / "server.ext"
    extensions.write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
    )
    _openssl(
        *("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1"),
        *("-keyout", str(key), "-out", str(request)),
        cwd=directory,
    )
    _openssl(
        *("x509", "-req", "-in", str(request), "-CA", str(ca[0]), "-CAkey", str(ca[1])),
        *("-CAcreateserial", "-days", "2", "-extfile", str(extensions), "-out", str(cert)),
        cwd=directory,
    )
    return cert, key


@dataclass
class TlsPlatform:
    """A `suanli serve` over https, its CA (and another one), tokens and client settings."""

    url: str
    ca: str
    other_ca: str
    trust: ssl.SSLContext
    provider: str
    consumer: str
    env: dict[str, str]
    home: Path
    agents: list[subprocess.Popen[bytes]] = field(default_factory=list)


@pytest.fixture
def tls_platform(database_url: str, tmp_path: Path) -> Iterator[TlsPlatform]:
    ca = _ca(tmp_path, "test-ca")
    other_ca = _ca(tmp_path, "other-ca")
    cert, key = _server_cert(tmp_path, ca)
    engine = make_engine(database_url)
    upgrade(engine)
    with session_factory(engine).begin() as session:
        _, provider = create_token(session, Role.PROVIDER, "dc-1")
        _, consumer = principal_token(session, Role.CONSUMER, "lab")  # funded
    engine.dispose()
    port = free_port()
    env = {**os.environ, **FAST, "SUANLI_HOME": str(tmp_path)}
    for name in ("SUANLI_DATABASE_URL", "SUANLI_CA", "SUANLI_TOKEN", "SUANLI_SERVER"):
        env.pop(name, None)
    log = open(tmp_path / "server.log", "wb")  # noqa: SIM115
    tls = ("--tls-cert", str(cert), "--tls-key", str(key))
    server = subprocess.Popen(
        [sys.executable, "-m", "suanli", "serve", "--port", str(port), "--db", database_url, *tls],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"https://127.0.0.1:{port}"
    trust = ssl.create_default_context(cafile=str(ca[0]))
    if not poll(lambda: server.poll() is not None or healthy(url, trust), timeout_s=30) or (
        server.poll() is not None
    ):
        server.kill()
        raise RuntimeError("the https server did not start; see server.log")
    running = TlsPlatform(
        url, str(ca[0]), str(other_ca[0]), trust, provider, consumer, env, tmp_path
    )
    try:
        yield running
    finally:
        for agent in running.agents:
            agent.terminate()
            agent.wait(timeout=20)
        server.terminate()
        server.wait(timeout=20)


def _suanli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "suanli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # TLS: no database involved
def test_tls_server_and_verifying_clients(tls_platform: TlsPlatform) -> None:
    url, env, ca = tls_platform.url, tls_platform.env, tls_platform.ca
    provider, consumer = tls_platform.provider, tls_platform.consumer

    # a plain-http client, or one that does not trust the CA, gets nothing
    with pytest.raises(httpx.HTTPError):
        httpx.get(url.replace("https", "http") + "/healthz", timeout=5)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/healthz", timeout=5)

    # the CLI with --ca (or SUANLI_CA) works ...
    site = _suanli(
        env,
        *("site", "add", "--server", url, "--token", provider, "--ca", ca),
        *("--name", "tls site", "--province", "上海", "--json"),
    )
    assert site.returncode == 0, site.stderr
    site_id = json.loads(site.stdout)["id"]
    pool = _suanli(
        {**env, "SUANLI_CA": ca},
        *("pool", "add", "--server", url, "--token", provider, "--site", site_id),
        *("--device", "cpu", "--count", "2", "--price-fen-per-hour", "10", "--json"),
    )
    assert pool.returncode == 0, pool.stderr

    # ... without it, or with another CA, it fails with one line naming the certificate
    for extra in ((), ("--ca", tls_platform.other_ca)):
        refused = _suanli(env, "sites", "--server", url, "--token", consumer, *extra)
        assert refused.returncode == 2, refused.stdout
        lines = refused.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in refused.stderr, refused.stderr
        assert "certificate" in lines[0] and "--ca" in lines[0], lines[0]

    # the agent with --ca runs a task over https
    log = open(tls_platform.home / "agent.log", "wb")  # noqa: SIM115
    where = ("--site", site_id, "--work-root", str(tls_platform.home / "work"))
    agent = subprocess.Popen(
        [sys.executable, "-m", "suanli", "agent", "--server", url, "--ca", ca, *where],
        env={**env, "SUANLI_TOKEN": provider},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    tls_platform.agents.append(agent)
    with httpx.Client(
        base_url=url,
        verify=tls_platform.trust,
        timeout=30,
        headers={"Authorization": f"Bearer {consumer}"},
    ) as http:
        created = http.post("/v1/tasks", json=submit_body("sh", "-c", "echo over tls"))
        assert created.status_code == 201, created.text
        task_id = created.json()["id"]

        def ended() -> dict[str, Any] | None:
            task = dict(http.get(f"/v1/tasks/{task_id}").json())
            return task if task["state"] in TERMINAL else None

        task = wait_until(ended, "the task to end", timeout_s=60, every_s=0.1)
        assert task["state"] == "COMPLETE", task
        assert http.get(f"/v1/tasks/{task_id}/logs").json()["stdout_tail"].strip() == "over tls"


def test_serve_refuses_half_a_tls_configuration(tmp_path: Path) -> None:
    """A certificate without its key is refused before the server starts (exit 2, one line)."""
    ca = _ca(tmp_path, "test-ca")
    cert, _ = _server_cert(tmp_path, ca)
    env = {**os.environ, "SUANLI_HOME": str(tmp_path)}
    env.pop("SUANLI_DATABASE_URL", None)
    started = _suanli(
        env, "serve", "--port", str(free_port()), "--home", str(tmp_path), "--tls-cert", str(cert)
    )
    assert started.returncode == 2, started.stderr
    assert "tls_key" in started.stderr and "Traceback" not in started.stderr
