"""Attacks on the token lifecycle: a leaked token that could not be revoked (or was still
honoured for half a minute from a server's cache), and tokens that never expired.

Tokens are made, listed and revoked with the real CLI (`suanli admin token ...`) on the same
database as real `suanli serve` processes; every process must refuse a revoked token within a
second, and an expired token everywhere. The servers run on virtual clocks: the tests move their
time past the bound or the expiry (`POST /v1/clock`) instead of sleeping through it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from suanli.services.core import Role
from tests.integration.platform.conftest import Platform, free_port

REVOCATION_BOUND_S = 1.0  # what the platform promises: a revoked token works at most this long
pytestmark = pytest.mark.virtual_clock


def _run_cli(platform: Platform, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "suanli", *args, "--db", platform.database_url],
        env=platform.env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _cli(platform: Platform, *args: str) -> Any:
    done = _run_cli(platform, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _token_id(platform: Platform, principal: str) -> str:
    rows = _cli(platform, "admin", "token", "list")
    (row,) = [r for r in rows if r["principal"] == principal]
    assert "token" not in row  # the list never shows a secret
    return str(row["id"])


def _second_server(platform: Platform) -> Platform:
    """Another `suanli serve` process on the same database (a second API process)."""
    port = free_port()
    second = Platform(
        f"http://127.0.0.1:{port}",
        platform.database_url,
        platform.home,
        platform.env,
        port=port,
        clock="virtual",
    )
    second.start()
    return second


def test_revoked_token_is_refused_within_a_second(platform: Platform) -> None:
    """Every server process refuses it (on PostgreSQL a second one too: on SQLite one process
    owns the file)."""
    made = _cli(platform, "admin", "token", "create", "--role", "consumer", "--name", "leaky")
    token_id = _token_id(platform, made["id"])
    operator = platform.token(Role.OPERATOR, "ops")
    servers = [platform]
    if not platform.database_url.startswith("sqlite"):
        servers.append(_second_server(platform))
    try:
        auth = {"Authorization": f"Bearer {made['token']}"}
        clients = [httpx.Client(base_url=s.url, headers=auth, timeout=30) for s in servers]
        # every process knows (and caches) the token right before it is revoked
        assert [c.get("/v1/tasks").status_code for c in clients] == [200] * len(servers)
        revoked = _cli(platform, "admin", "token", "revoke", token_id)
        assert revoked["id"] == token_id
        assert clients[0].get("/v1/tasks").status_code in (200, 401)  # still cached, at most
        for server in servers:  # the promise is a bound in time: move past it
            server.advance(operator, REVOCATION_BOUND_S)
        for client in clients:
            refused = client.get("/v1/tasks")
            assert refused.status_code == 401, (client.base_url, refused.text)
            assert client.get("/ga4gh/tes/v1/tasks").status_code == 401
            client.close()
        rows = {r["id"]: r for r in _cli(platform, "admin", "token", "list")}
        assert rows[token_id]["revoked_at"] is not None
        again = _run_cli(platform, "admin", "token", "revoke", token_id)
        assert again.returncode == 2 and "already revoked" in again.stderr
    finally:
        for server in servers[1:]:
            server.stop()


def test_expired_token_is_refused(platform: Platform) -> None:
    create = ("admin", "token", "create", "--role", "consumer", "--name", "short-lived")
    made = _cli(platform, *create, "--expires-in", "8s")
    operator = platform.token(Role.OPERATOR, "ops")
    with (
        httpx.Client(
            base_url=platform.url, headers={"Authorization": f"Bearer {made['token']}"}, timeout=30
        ) as http,
        platform.client(operator) as ops,
    ):
        assert http.get("/v1/tasks").status_code == 200  # valid until it expires
        row = {r["principal"]: r for r in _cli(platform, "admin", "token", "list")}[made["id"]]
        expires_at = datetime.fromisoformat(row["expires_at"])
        just_before = expires_at - timedelta(milliseconds=1)
        assert ops.post("/v1/clock", json={"to": just_before.isoformat()}).status_code == 200
        assert http.get("/v1/tasks").status_code == 200  # not refused before it expires
        assert ops.post("/v1/clock", json={"to": expires_at.isoformat()}).status_code == 200
        assert http.get("/v1/tasks").status_code == 401  # refused once it has
        submitted = http.post("/v1/tasks", json={"executors": [{"command": ["true"]}]})
        assert submitted.status_code == 401
    # an expiry that is not a duration is refused before anything is written
    bad = _run_cli(platform, *create[:-1], "x", "--expires-in", "soon")
    assert bad.returncode == 2 and "expires_in" in bad.stderr


def test_provider_revokes_a_leaked_agent_token(platform: Platform) -> None:
    """The provider ends an agent token it issued, through the API, without the operator."""
    provider = platform.token(Role.PROVIDER, "dc-1")
    other = platform.token(Role.PROVIDER, "dc-2")
    operator = platform.token(Role.OPERATOR, "ops")
    site = platform.site_with_pool(provider)
    with platform.client(provider) as http:
        issued = http.post(f"/v1/sites/{site}/agent-tokens", json={"name": "rack"}).json()
    with platform.client(other) as http:  # someone else's token is not found
        assert http.post(f"/v1/tokens/{issued['id']}/revoke").status_code == 404
    with platform.client(issued["token"]) as agent:
        assert agent.post("/v1/agents", json={"site_id": site}).status_code == 201
        with platform.client(provider) as http:
            revoked = http.post(f"/v1/tokens/{issued['id']}/revoke")
            assert revoked.status_code == 200 and revoked.json()["revoked_at"], revoked.text
        platform.advance(operator, REVOCATION_BOUND_S)
        assert agent.post("/v1/agents", json={"site_id": site}).status_code == 401
