"""The web console in a real headless Chromium (Debian's, driven by Playwright) against a live
server with a real agent: sign in, submit from the form with a quote, watch the task complete
without reloading, switch language, download a statement, see the map; a consumer cannot open
another consumer's task. Every main page is loaded at 1280x800 and on a 390-px phone, with no
console errors (a violation of the console's Content Security Policy counts as one), labelled
form fields and no sideways scrolling; screenshots of each are saved
under `tests/artifacts/console/` (ignored by git; CI keeps them as artefacts).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page

from .browser import (
    ARTIFACTS,
    DESKTOP,
    PHONE,
    Watched,
    browser,
    funded_consumer,
    network,
    sign_in,
)
from .browser import open_page as _open
from .conftest import Platform

__all__ = ["browser", "network"]  # fixtures, shared with tests/security
pytestmark = [pytest.mark.slow, pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)]


def _sideways(page: Page) -> int:
    """How many pixels the page would scroll sideways (0 when it fits its viewport)."""
    return int(
        page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    )


def _shot(watched: Watched, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    watched.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_sign_in_submit_from_the_form_and_watch_it_complete(
    browser: Browser, platform: Platform, network: dict[str, str]
) -> None:
    watched = _open(browser)
    page = watched.page
    sign_in(watched, platform, network["consumer"])
    page.goto(f"{platform.url}/console/tasks/new")
    page.get_by_label("命令").fill("echo hello from the browser; sleep 4; echo done")
    page.get_by_label("名称").fill("from-the-form")
    page.locator("#get-quote").click()
    page.locator("#accept").wait_for()  # the quote, swapped in by htmx, before accepting
    assert page.locator("#quote").get_by_text("元").count() > 0  # prices shown, in yuan
    _shot(watched, "quote-desktop")
    page.locator("#accept").click()
    page.wait_for_url("**/console/tasks/task-*")
    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))
    page.locator("#log", has_text="hello from the browser").wait_for(timeout=60_000)
    assert page.locator("#task-state").inner_text() == "RUNNING"  # live output while it runs
    page.locator("#task-state", has_text="COMPLETE").wait_for(timeout=60_000)
    assert navigations == []  # it got there by htmx, without a reload
    assert page.locator("#log").inner_text().startswith("hello from the browser\ndone")
    assert page.locator("#cancel").count() == 0  # nothing left to cancel
    steps = page.locator(".timeline li")  # QUEUED -> INITIALIZING -> RUNNING -> COMPLETE
    assert steps.count() >= 3 and "→ COMPLETE" in steps.last.inner_text()
    _shot(watched, "task-desktop")
    assert watched.errors == []


def test_cancel_a_running_task_from_its_page(
    browser: Browser, platform: Platform, network: dict[str, str]
) -> None:
    with platform.client(network["consumer"]) as http:
        body = {"name": "long", "executors": [{"command": ["sleep", "60"]}]}
        task_id = http.post("/v1/tasks", json=body).json()["id"]
    watched = _open(browser)
    page = watched.page
    sign_in(watched, platform, network["consumer"])
    page.goto(f"{platform.url}/console/tasks/{task_id}")
    page.locator("#task-state", has_text="RUNNING").wait_for(timeout=30_000)
    page.locator("#cancel").click()
    page.locator("#task-state", has_text="CANCELED").wait_for(timeout=30_000)
    assert watched.errors == []


def test_language_switch_is_remembered(
    browser: Browser, platform: Platform, network: dict[str, str]
) -> None:
    watched = _open(browser)
    page = watched.page
    sign_in(watched, platform, network["consumer"])
    page.goto(f"{platform.url}/console/tasks")
    assert page.locator("h1").inner_text() == "我的任务"
    page.locator("#language").click()
    page.wait_for_load_state("networkidle")
    assert page.locator("h1").inner_text() == "Your tasks"
    assert page.locator("html").get_attribute("lang") == "en"
    page.goto(f"{platform.url}/console/tasks/new")  # another page, later: still English
    assert page.locator("h1").inner_text() == "Submit a task"
    page.locator("#language").click()
    page.wait_for_load_state("networkidle")
    assert page.locator("h1").inner_text() == "提交任务"
    assert watched.errors == []


def test_a_consumer_cannot_open_another_consumers_task(
    browser: Browser, platform: Platform, network: dict[str, str]
) -> None:
    _, bob = funded_consumer(platform, "bob")
    with platform.client(bob) as http:
        body = {"name": "bobs-secret", "executors": [{"command": ["echo", "bobs-output"]}]}
        bobs = http.post("/v1/tasks", json=body).json()["id"]
    watched = _open(browser)
    sign_in(watched, platform, network["consumer"])  # alice
    response = watched.page.goto(f"{platform.url}/console/tasks/{bobs}")
    assert response is not None and response.status == 404
    shown = watched.page.locator("main").inner_text()
    assert "bobs-secret" not in shown and "bobs-output" not in shown  # nothing of bob's task
    watched.page.goto(f"{platform.url}/console/tasks")
    assert watched.page.locator(f"a[href$='{bobs}']").count() == 0


def test_signed_out_pages_go_to_sign_in_and_a_bad_token_is_refused(
    browser: Browser, platform: Platform
) -> None:
    watched = _open(browser)
    page = watched.page
    page.goto(f"{platform.url}/console/tasks")
    assert "/console/signin" in page.url
    page.get_by_label("访问令牌").fill("sl_not-a-token")
    page.locator("button[type=submit].primary").click()
    assert page.locator("#token-error").is_visible()
    assert "/console/signin" in page.url


def test_keyboard_reaches_the_main_actions(
    browser: Browser, platform: Platform, network: dict[str, str]
) -> None:
    watched = _open(browser)
    page = watched.page
    sign_in(watched, platform, network["consumer"])
    page.goto(f"{platform.url}/console/tasks/new")
    reached: list[str] = []
    for _ in range(40):  # Tab through the page: skip link, navigation, the form, the button
        page.keyboard.press("Tab")
        reached.append(page.evaluate("document.activeElement.id || document.activeElement.tagName"))
        if reached[-1] == "get-quote":
            break
    assert reached[0] == "A"  # the skip link comes first
    assert {"command", "devices", "policy", "get-quote"} <= set(reached)
    page.keyboard.press("Enter")  # a quote from the keyboard alone
    page.locator("#accept").wait_for()
    page.locator("#accept").focus()
    page.keyboard.press("Enter")
    page.wait_for_url("**/console/tasks/task-*")


UNLABELLED = """() => [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
    .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))
    .map(e => e.name || e.id)"""
PAGES = {  # role -> the main pages it opens
    "consumer": ["tasks", "tasks/new", "money", "twin", "forecasts"],
    "provider": ["sites", "money", "twin", "forecasts"],
    "operator": ["overview", "sites", "tasks", "money", "twin", "forecasts"],
}


@pytest.mark.parametrize("role", sorted(PAGES))
def test_every_main_page_on_desktop_and_phone(
    browser: Browser, platform: Platform, network: dict[str, str], role: str
) -> None:
    for size_name, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        watched = _open(browser, viewport)
        page = watched.page
        sign_in(watched, platform, network[role])
        for path in PAGES[role]:
            response = page.goto(f"{platform.url}/console/{path}")
            assert response is not None and response.status == 200, (path, response)
            page.wait_for_load_state("networkidle")
            unlabelled = page.evaluate(UNLABELLED)
            assert unlabelled == [], (path, unlabelled)
            assert _sideways(page) <= 1, (path, size_name)  # no sideways scrolling
            _shot(watched, f"{role}-{path.replace('/', '-')}-{size_name}")
        assert watched.errors == [], watched.errors
        page.context.close()


def test_the_map_renders_with_the_clusters(
    browser: Browser, platform: Platform, network: dict[str, str]
) -> None:
    watched = _open(browser)
    page = watched.page
    sign_in(watched, platform, network["operator"])
    page.goto(f"{platform.url}/console/overview")
    page.locator("#network-map canvas").first.wait_for()
    drawn = page.evaluate(
        """() => {
            const chart = echarts.getInstanceByDom(document.getElementById('network-map'));
            const option = chart.getOption();
            return {
                maps: option.geo.map(g => g.map),
                series: option.series.map(s => [s.type, (s.data || []).length]),
            };
        }"""
    )
    assert drawn["maps"] == ["china"]
    counts = [n for kind, n in drawn["series"] if kind in ("scatter", "effectScatter")]
    assert counts[:2] == [8, 10]  # the 8 hubs and the 10 national clusters
    assert counts[2] >= 1  # the provider's registered site
    page.locator("#colour-carbon").check()  # recolour by carbon intensity
    assert page.locator("#indicators").get_by_text("EFLOPS").count() > 0
    _shot(watched, "overview-map-desktop")
    assert watched.errors == []


def test_download_a_statement(
    browser: Browser, platform: Platform, network: dict[str, str]
) -> None:
    watched = _open(browser, accept_downloads=True)
    page = watched.page
    sign_in(watched, platform, network["consumer"])
    page.goto(f"{platform.url}/console/money")
    with page.expect_download() as download:
        page.locator("#statement-csv").click()
    path = download.value.path()
    assert download.value.suggested_filename.endswith(".csv")
    rows = _csv_rows(Path(path).read_text(encoding="utf-8"))
    assert rows, "the funded consumer's statement has its top-up"
    assert any(int(r["amount_fen"]) == 10_000_000 for r in rows), rows[0]
    assert page.locator("#audit").inner_text()  # the chain's status is shown
    assert watched.errors == []


@pytest.mark.twin_workers
def test_run_the_digital_twin_and_read_its_report(
    browser: Browser, platform: Platform, network: dict[str, str]
) -> None:
    watched = _open(browser, PHONE)  # on a phone, to see the report fits one too
    page = watched.page
    sign_in(watched, platform, network["operator"])
    page.goto(f"{platform.url}/console/twin")
    page.locator("#twin-limit").fill("150")
    page.locator("#twin-run").click()
    page.wait_for_url("**/console/twin/runs/*")
    page.locator("#twin-report").wait_for(timeout=120_000)  # after the progress bar
    assert page.locator("#twin-report table").count() >= 1
    assert _sideways(page) <= 1
    _shot(watched, "twin-report-phone")
    page.goto(f"{platform.url}/console/twin")
    assert page.locator("#twin-runs a").count() >= 1  # listed among past runs
    assert watched.errors == []


def _csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text.lstrip("\ufeff"))))
