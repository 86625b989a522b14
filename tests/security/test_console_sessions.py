"""Console sessions and the console's security headers, attacked as reported:

* the cookie was the raw API token, and signing out only asked the browser to forget it: a
  copied cookie kept working. Now the cookie is a random session id (not the token), and after
  sign-out the copied cookie, replayed, is sent to sign-in (pages) or answered 401 (htmx
  fragments). The same for a session whose token is revoked; an agent token cannot sign in.
  (Sessions live in the database: both SQLite and PostgreSQL.)
* no Content-Security-Policy, X-Frame-Options, nosniff or Referrer-Policy: every console page
  now has them, with no inline script allowed, and a real browser reports no CSP violation on
  any page, charts and live (htmx) parts included; over https (`suanli serve --tls-cert`) they
  come with Strict-Transport-Security, and the session cookie is Secure.
"""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser

from suanli.services.core import Role
from tests.integration.platform.browser import (
    browser,
    form_csrf,
    http_sign_in,
    network,
    open_page,
    sign_in,
)
from tests.integration.platform.conftest import FAST, Platform, free_port
from tests.waiting import healthy, poll

__all__ = ["browser", "network"]
SESSION = "suanli_session"


def _session_cookie(http: httpx.Client) -> dict[str, str]:
    return {name: value for name, value in http.cookies.items() if name.startswith("suanli_")}


def _refused(cookies: dict[str, str], platform: Platform, task_id: str) -> None:
    """The replayed cookies open nothing: pages go to sign-in, htmx fragments get 401."""
    with httpx.Client(base_url=platform.url, cookies=cookies, timeout=30) as replay:
        for path in ("/console/tasks", f"/console/tasks/{task_id}", "/console/money"):
            page = replay.get(path)
            assert page.status_code == 303, (path, page.status_code)
            assert page.headers["location"].startswith("/console/signin"), path
        fragment = replay.get(f"/console/tasks/{task_id}/live", headers={"HX-Request": "true"})
        assert fragment.status_code == 401
        assert fragment.headers["HX-Redirect"] == "/console/signin"
        assert "task-" not in fragment.text


def _long_task(platform: Platform, token: str) -> str:
    with platform.client(token) as api:
        body = {"name": "mine", "executors": [{"command": ["sleep", "60"]}]}
        created = api.post("/v1/tasks", json=body)
        assert created.status_code == 201, created.text
        return str(created.json()["id"])


def test_signout_ends_the_session(platform: Platform) -> None:
    token = platform.token(Role.CONSUMER, "careful user")
    task_id = _long_task(platform, token)
    with http_sign_in(platform, token) as http:
        cookies = _session_cookie(http)
        assert SESSION in cookies
        assert token not in cookies.values()  # the cookie is not the API token
        assert all(token not in value for value in cookies.values())
        page = http.get(f"/console/tasks/{task_id}")
        assert page.status_code == 200 and task_id in page.text
        live = http.get(f"/console/tasks/{task_id}/live", headers={"HX-Request": "true"})
        assert live.status_code == 200
        csrf = form_csrf(page.text)
        out = http.post("/console/signout", data={"csrf": csrf}, headers={"Origin": platform.url})
        assert out.status_code == 303
    _refused(cookies, platform, task_id)  # the copied cookie, replayed after sign-out


def test_session_of_a_revoked_token_is_refused(platform: Platform) -> None:
    token = platform.token(Role.CONSUMER, "lost laptop")
    task_id = _long_task(platform, token)
    with http_sign_in(platform, token) as http:
        cookies = _session_cookie(http)
        assert http.get("/console/tasks").status_code == 200
    with platform.client(token) as api:
        (mine,) = api.get("/v1/tokens").json()
        assert api.post(f"/v1/tokens/{mine['id']}/revoke").status_code == 200
    _refused(cookies, platform, task_id)


def test_an_agent_token_cannot_sign_in(platform: Platform) -> None:
    provider = platform.token(Role.PROVIDER, "provider")
    site = platform.site_with_pool(provider)
    with platform.client(provider) as api:
        issued = api.post(f"/v1/sites/{site}/agent-tokens", json={"name": "agent"})
        assert issued.status_code == 201, issued.text
    agent_token = issued.json()["token"]
    with httpx.Client(base_url=platform.url, timeout=30) as http:
        form = http.get("/console/signin")
        refused = http.post(
            "/console/signin",
            data={"token": agent_token, "csrf": form_csrf(form.text)},
            headers={"Origin": platform.url},
        )
        assert refused.status_code == 403
        assert SESSION not in http.cookies
        assert http.get("/console/sites").status_code == 303  # still signed out


PAGES = {  # role -> the console pages it opens
    "consumer": ["tasks", "tasks/new", "money", "twin", "forecasts"],
    "provider": ["sites", "money", "twin", "forecasts"],
    "operator": ["overview", "sites", "tasks", "money", "twin", "forecasts"],
}


def _check_headers(response: httpx.Response | Any, path: str) -> None:
    headers = {k.lower(): v for k, v in dict(response.headers).items()}
    policy = headers.get("content-security-policy", "")
    directives = {part.split()[0]: part.split()[1:] for part in policy.split(";") if part.strip()}
    assert directives.get("script-src") == ["'self'"], (path, policy)  # no inline, no eval
    assert "'unsafe-inline'" not in directives.get("default-src", []), path
    assert directives.get("frame-ancestors") == ["'none'"], (path, policy)
    assert directives.get("object-src") == ["'none'"], (path, policy)
    assert headers.get("x-frame-options") == "DENY", path
    assert headers.get("x-content-type-options") == "nosniff", path
    assert headers.get("referrer-policy") in ("same-origin", "no-referrer"), path
    assert "strict-transport-security" not in headers, path  # plain http: no HSTS


@pytest.mark.slow
@pytest.mark.twin_workers  # the page runs a twin replay
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_security_headers(browser: Browser, platform: Platform, network: dict[str, str]) -> None:
    with httpx.Client(base_url=platform.url, timeout=30) as anonymous:
        _check_headers(anonymous.get("/console/signin"), "signin")
    task_id = _long_task(platform, network["consumer"])
    with http_sign_in(platform, network["operator"]) as http:  # a twin run with its charts
        form = http.get("/console/twin")
        started = http.post(
            "/console/twin/runs",
            data={
                "csrf": form_csrf(form.text),
                "trace": "openb",
                "policies": ["nearest", "green"],
                "limit": "30",
                "seed": "0",
                "scale": "0.004",
            },
            headers={"Origin": platform.url},
        )
        assert started.status_code == 303, started.text
        run_page = started.headers["location"].removeprefix("/console/")
    extra = {"consumer": [f"tasks/{task_id}"], "operator": [run_page]}
    for role, paths in PAGES.items():
        watched = open_page(browser)
        page = watched.page
        sign_in(watched, platform, network[role])
        for path in paths + extra.get(role, []):
            response = page.goto(f"{platform.url}/console/{path}")
            assert response is not None and response.status == 200, path
            _check_headers(response, path)
            if path == run_page:  # the charts, once the run has ended (drawn by console.js)
                page.locator("#twin-busy canvas").wait_for(timeout=120_000)
                assert page.locator("#twin-chart canvas").count() >= 1
            elif path.startswith("tasks/task-"):  # htmx keeps the live part fresh under CSP
                page.locator("#log").wait_for()
                with page.expect_response(lambda r: r.url.endswith("/live")) as live:
                    pass
                assert live.value.status == 200
            page.wait_for_load_state("networkidle")
        assert watched.errors == [], (role, watched.errors)  # no CSP violation, no error
        page.context.close()


def test_security_headers_under_tls(tmp_path: Path) -> None:
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
            *("-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    port = free_port()
    env = {**os.environ, **FAST, "SUANLI_HOME": str(tmp_path)}
    env.pop("SUANLI_DATABASE_URL", None)
    command = [sys.executable, "-m", "suanli", "serve", "--port", str(port)]
    command += ["--db", f"sqlite:///{tmp_path / 'tls.db'}", "--home", str(tmp_path)]
    command += ["--tls-cert", str(cert), "--tls-key", str(key)]
    with open(tmp_path / "server.log", "wb") as log:
        server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"https://127.0.0.1:{port}"
    trust = ssl.create_default_context(cafile=str(cert))
    try:
        with httpx.Client(base_url=url, verify=trust, timeout=30) as http:
            poll(lambda: server.poll() is not None or healthy(url, trust), timeout_s=30)
            assert server.poll() is None, (tmp_path / "server.log").read_text()
            form = http.get("/console/signin")
            assert form.status_code == 200
            assert form.headers["strict-transport-security"].startswith("max-age=")
            assert "frame-ancestors 'none'" in form.headers["content-security-policy"]
            assert "secure" in form.headers["set-cookie"].lower()  # the pre-session cookie
            assert "strict-transport-security" in http.get("/healthz").headers
    finally:
        server.terminate()
        server.wait(timeout=20)
