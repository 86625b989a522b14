"""Cross-site request forgery against the console, as it was done: a page served from another
port of the same host (same site, so SameSite=Strict cookies still go with its requests) makes
the victim's real browser post to the console.

* A signed-in victim opens the attacker's page; it auto-submits a form that cancels the
  victim's task, and another that starts a digital-twin run: both are refused, the task keeps
  running and no twin run starts. The victim's own cookie replayed with httpx, without the
  CSRF token, with a wrong one, or with the right one but another Origin: 403 each, and the
  task still runs (the right token from the console's own origin then cancels it: the
  refusals were the checks, not a broken route).
* Login CSRF: the attacker's page posts the sign-in form with the attacker's token, once
  plainly and once after planting a pre-session CSRF cookie it knows (cookies do not separate
  ports): the victim's browser is not signed in as the attacker.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Browser, Page
from sqlalchemy import select

from suanli.services.core import Role
from suanli.store.db import make_engine, session_factory
from suanli.store.models import TwinRunRow
from tests.integration.platform.browser import (
    browser,
    form_csrf,
    network,
    open_page,
    sign_in,
)
from tests.integration.platform.conftest import Platform, free_port

__all__ = ["browser", "network"]
pytestmark = [pytest.mark.slow, pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)]


class Attacker:
    """The attacker's web server: a few HTML pages on another port of 127.0.0.1."""

    def __init__(self) -> None:
        self.pages: dict[str, str] = {}
        pages = self.pages

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = pages.get(self.path, "not here").encode()
                self.send_response(200 if self.path in pages else 404)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def page(self, path: str, action: str, fields: dict[str, str], script: str = "") -> str:
        """Serve at `path` a page that posts `fields` to `action` as soon as it loads."""
        inputs = "".join(
            f'<input type="hidden" name="{name}" value="{value}">' for name, value in fields.items()
        )
        self.pages[path] = (
            f'<!doctype html><form method="post" action="{action}">{inputs}</form>'
            f"<script>{script}document.forms[0].submit();</script>"
        )
        return self.url + path

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def attacker() -> Iterator[Attacker]:
    running = Attacker()
    yield running
    running.close()


def _forged_post(page: Page, platform: Platform, url: str) -> int:
    """Open the attacker's `url` in the victim's page; the status of the console's answer to
    the post it makes."""
    with page.expect_response(
        lambda r: r.request.method == "POST" and r.url.startswith(platform.url)
    ) as answer:
        page.goto(url)
    return answer.value.status


def _twin_runs(platform: Platform) -> list[str]:
    """The ids of the twin runs queued in the store."""
    engine = make_engine(platform.database_url)
    with session_factory(engine).begin() as session:
        ids = list(session.scalars(select(TwinRunRow.id)))
    engine.dispose()
    return ids


def test_cross_origin_page_cannot_cancel_a_task(
    browser: Browser, platform: Platform, network: dict[str, str], attacker: Attacker
) -> None:
    consumer = network["consumer"]
    with platform.client(consumer) as api:
        body = {"name": "victim's work", "executors": [{"command": ["sleep", "120"]}]}
        task_id = api.post("/v1/tasks", json=body).json()["id"]
    assert platform.wait_for(consumer, task_id, {"RUNNING"})["state"] == "RUNNING"
    victim = open_page(browser)
    sign_in(victim, platform, consumer)

    cancel = attacker.page("/cancel", f"{platform.url}/console/tasks/{task_id}/cancel", {})
    twin = attacker.page(
        "/twin",
        f"{platform.url}/console/twin/runs",
        {"trace": "openb", "policies": "nearest", "limit": "20", "seed": "0", "scale": "0.004"},
    )
    assert _forged_post(victim.page, platform, cancel) == 403
    assert _forged_post(victim.page, platform, twin) == 403

    cookies = {
        c["name"]: c["value"] for c in victim.page.context.cookies(f"{platform.url}/console/")
    }
    with httpx.Client(base_url=platform.url, cookies=cookies, timeout=30) as stolen:
        right = form_csrf(stolen.get(f"/console/tasks/{task_id}").text)
        assert right, "the task page carries the session's CSRF token"
        target = f"/console/tasks/{task_id}/cancel"
        assert stolen.post(target).status_code == 403  # no token
        assert stolen.post(target, data={"csrf": "forged"}).status_code == 403
        assert stolen.post(target, headers={"X-CSRF-Token": "forged"}).status_code == 403
        foreign = {"Origin": attacker.url}
        assert stolen.post(target, data={"csrf": right}, headers=foreign).status_code == 403
        referer = {"Referer": f"{attacker.url}/cancel"}
        assert stolen.post(target, data={"csrf": right}, headers=referer).status_code == 403
        site = {"Sec-Fetch-Site": "same-site"}
        assert stolen.post(target, data={"csrf": right}, headers=site).status_code == 403

        task = platform.wait_for(consumer, task_id, {"RUNNING"})
        assert task["state"] == "RUNNING" and task["cancel_requested"] is False
        assert _twin_runs(platform) == []  # no twin run started

        own = stolen.post(target, data={"csrf": right}, headers={"Origin": platform.url})
        assert own.status_code == 303  # the console's own form still cancels
    assert platform.wait_for(consumer, task_id, {"CANCELED"})["state"] == "CANCELED"


def test_login_csrf_is_refused(browser: Browser, platform: Platform, attacker: Attacker) -> None:
    own = platform.token(Role.CONSUMER, "the attacker")
    signin = f"{platform.url}/console/signin"
    plain = attacker.page("/login", signin, {"token": own, "next": "/console/tasks"})
    with httpx.Client(base_url=platform.url, timeout=30) as http:  # a genuine pre-session pair
        form = http.get("/console/signin")
        pair = (form.cookies.get("suanli_csrf") or "planted", form_csrf(form.text) or "planted")
    planted = attacker.page(
        "/login-planted",
        signin,
        {"token": own, "next": "/console/tasks", "csrf": pair[1]},
        script=f"document.cookie = 'suanli_csrf={pair[0]}; path=/console';",
    )
    victim = open_page(browser)
    for url in (plain, planted):
        assert _forged_post(victim.page, platform, url) == 403
        page = victim.page
        page.goto(f"{platform.url}/console/tasks")
        assert "/console/signin" in page.url  # not signed in at all, least of all as the attacker
        assert "the attacker" not in page.content()
