"""What the browser tests share (the console's tests and the console attacks of tests/security):
a real headless Chromium (Debian's, driven by Playwright through executable_path), pages that
collect their console errors, uncaught exceptions and Content-Security-Policy violations, the
console's sign-in form, and a small network (a provider with a site and an agent, a funded
consumer, an operator).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, ViewportSize, sync_playwright

from suanli.services import market
from suanli.services.core import Role, create_token
from suanli.store.db import make_engine, session_factory

from .conftest import Platform

ROOT = Path(__file__).resolve().parents[3]
ARTIFACTS = Path(os.environ.get("SUANLI_ARTIFACTS", ROOT / "tests" / "artifacts")) / "console"
DESKTOP: ViewportSize = {"width": 1280, "height": 800}
PHONE: ViewportSize = {"width": 390, "height": 844}
# every violation of the page's Content Security Policy becomes a console error
REPORT_CSP = """document.addEventListener('securitypolicyviolation', (e) =>
    console.error('CSP violation: ' + e.violatedDirective + ' ' + e.blockedURI));"""


def chromium_path() -> str:
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "chromium.sh")],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"no Chromium for the browser tests: {done.stderr.strip()}")
    return done.stdout.strip()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = chromium_path()
    with sync_playwright() as p:
        launched = p.chromium.launch(
            executable_path=executable,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        yield launched
        launched.close()


@dataclass
class Watched:
    """A page with its console errors, uncaught exceptions and CSP violations collected."""

    page: Page
    errors: list[str] = field(default_factory=list)


def open_page(browser: Browser, viewport: ViewportSize | None = None, **options: Any) -> Watched:
    options.setdefault("locale", "zh-CN")  # the browser asks for Chinese: the console's default
    context = browser.new_context(viewport=viewport or DESKTOP, **options)
    context.add_init_script(REPORT_CSP)
    page = context.new_page()
    watched = Watched(page)

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            watched.errors.append(f"console: {message.text}")

    page.on("console", on_console)
    page.on("pageerror", lambda error: watched.errors.append(f"page error: {error}"))
    return watched


def sign_in(watched: Watched, platform: Platform, token: str) -> None:
    """Sign in through the console's form, as a person would."""
    page = watched.page
    page.goto(f"{platform.url}/console/signin")
    page.get_by_label("访问令牌").fill(token)  # the default language is Chinese
    page.locator("button[type=submit].primary").click()
    page.wait_for_load_state("networkidle")
    assert "/signin" not in page.url, page.content()[:500]


def form_csrf(html: str) -> str:
    """The CSRF token a console page's forms carry ('' when it has none)."""
    found = re.search(r'name="csrf" value="([^"]*)"', html)
    return found.group(1) if found else ""


@contextmanager
def http_sign_in(platform: Platform, token: str) -> Iterator[httpx.Client]:
    """A signed-in console session in an httpx client, through the sign-in form (its
    pre-session CSRF token and this server's Origin, as a browser sends them)."""
    with httpx.Client(base_url=platform.url, timeout=30) as http:
        form = http.get("/console/signin")
        assert form.status_code == 200, form.text
        signed = http.post(
            "/console/signin",
            data={"token": token, "csrf": form_csrf(form.text)},
            headers={"Origin": platform.url},
        )
        assert signed.status_code == 303, signed.text
        yield http


def funded_consumer(platform: Platform, name: str, fen: int = 10_000_000) -> tuple[str, str]:
    engine = make_engine(platform.database_url)
    with session_factory(engine).begin() as session:
        row, token = create_token(session, Role.CONSUMER, name)
        operator = create_token(session, Role.OPERATOR, f"{name} ops")[0]
        market.credit(session, operator, row.id, fen)
        ident = row.id
    engine.dispose()
    return ident, token


@pytest.fixture
def network(platform: Platform) -> dict[str, str]:
    """A provider with a site and an agent, a funded consumer, an operator."""
    provider = platform.token(Role.PROVIDER, "console provider")
    site = platform.site_with_pool(provider, count=4)
    platform.agent(provider, site, 2)
    _, consumer = funded_consumer(platform, "alice")
    return {
        "provider": provider,
        "site": site,
        "consumer": consumer,
        "operator": platform.token(Role.OPERATOR, "console operator"),
    }
