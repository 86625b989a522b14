"""The twin's HTML report in the project's real headless Chromium, opened from a file with the
network off: every chart is drawn (ECharts, SVG renderer) without a console error, the last
point of each cumulative chart — read back from the live ECharts instances — is the total the
page's table shows and the run's metrics, the table fits a desktop screen, the charts fit a
phone's, and screenshots of both go to tests/artifacts/report/."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Request

from suanli.sim.report import render
from suanli.sim.traces import load_trace, shape
from suanli.sim.twin import RunResult, national_network, run
from tests.integration.platform.browser import DESKTOP, PHONE, ROOT, Watched, browser, open_page

__all__ = ["browser"]  # the fixture: a real headless Chromium

ARTIFACTS = Path(os.environ.get("SUANLI_ARTIFACTS", ROOT / "tests" / "artifacts")) / "report"
POLICIES = ("nearest", "green", "cost")
# chart container -> (timeline series in the chart data, table row, digits the table shows)
CUMULATIVE = {
    "chart-cost": ("cost_cny", "cost_cny", 2),
    "chart-carbon-market": ("carbon_kg", "carbon_kg", 1),
    "chart-carbon-location": ("carbon_location_kg", "carbon_location_kg", 1),
}
ALL_DRAWN = """() => {
  const boxes = [...document.querySelectorAll('.chart, .map')];
  return boxes.length > 0 && boxes.every((box) => box.querySelector('svg path, svg text'))
    && document.documentElement.getAttribute('data-charts-drawn') === String(boxes.length);
}"""
LAST_POINTS = """(ids) => Object.fromEntries(ids.map((id) => {
  const option = echarts.getInstanceByDom(document.getElementById(id)).getOption();
  return [id, Object.fromEntries(option.series.map((s) => [s.name, s.data[s.data.length - 1]]))];
}))"""


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[RunResult]]]:
    trace = shape(load_trace("openb"), limit=200, time_scale=0.01, seed=0)
    network = national_network()
    results = [run(trace, network, policy) for policy in POLICIES]
    path = tmp_path_factory.mktemp("report") / "report.html"
    path.write_text(render(trace.name, network, results), encoding="utf-8")
    yield path, results


def _open_offline(browser: Browser, path: Path, viewport: object) -> tuple[Watched, list[str]]:
    watched = open_page(browser, viewport, offline=True)  # type: ignore[arg-type]
    fetched: list[str] = []  # anything but the file itself

    def on_request(request: Request) -> None:
        if not request.url.startswith(("file:", "data:", "blob:", "about:")):
            fetched.append(request.url)

    watched.page.on("request", on_request)
    watched.page.goto(path.as_uri())
    watched.page.wait_for_function(ALL_DRAWN, timeout=60_000)
    return watched, fetched


def _shot(watched: Watched, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    watched.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _money_or_number(text: str) -> float:
    cleaned = re.sub(r"[¥,\s]", "", text)
    return float(cleaned)


def test_the_report_draws_offline_and_its_charts_end_at_the_tables_totals(
    browser: Browser, written: tuple[Path, list[RunResult]]
) -> None:
    path, results = written
    watched, fetched = _open_offline(browser, path, DESKTOP)
    page = watched.page
    assert watched.errors == []
    assert fetched == []
    last = page.evaluate(LAST_POINTS, list(CUMULATIVE))
    for chart_id, (series_key, metric, digits) in CUMULATIVE.items():
        assert set(last[chart_id]) == set(POLICIES), chart_id
        for result in results:
            m = result.metrics
            expected = m["cost_fen"] / 100 if series_key == "cost_cny" else m[series_key]
            x, y = last[chart_id][result.policy]
            cell = page.locator(f'td[data-metric="{metric}"][data-policy="{result.policy}"]')
            shown = _money_or_number(cell.inner_text())
            assert y == expected, (chart_id, result.policy)
            assert round(y, digits) == shown, (chart_id, result.policy, cell.inner_text())
            assert x > 0
    assert page.locator('td[data-metric="cost_cny"]').first.inner_text().startswith("¥")
    # one busy-GPU line per policy, each with its own dash pattern (overlaps stay apart)
    dashes = page.evaluate(
        """() => echarts.getInstanceByDom(document.getElementById('chart-busy-gpus'))
        .getOption().series.map((s) => JSON.stringify(s.lineStyle.type))"""
    )
    assert len(dashes) == len(POLICIES) and len(set(dashes)) == len(POLICIES)
    # the table fits a desktop screen: no horizontal scrolling, in its box or on the page
    fits = page.evaluate(
        """() => {
      const box = document.getElementById('policy-table-box');
      const table = document.getElementById('policy-table');
      return [table.scrollWidth, box.scrollWidth, box.clientWidth,
              document.documentElement.scrollWidth, window.innerWidth];
    }"""
    )
    table_w, box_scroll_w, box_w, page_w, viewport_w = fits
    assert table_w <= box_w and box_scroll_w <= box_w, fits
    assert page_w <= viewport_w, fits
    # the maps: one per policy, on the China outline, a point per site
    maps = page.evaluate(
        """() => [...document.querySelectorAll('.map')].map((el) => {
      const option = echarts.getInstanceByDom(el).getOption();
      return [option.geo[0].map, option.series.reduce((n, s) => n + s.data.length, 0)];
    })"""
    )
    assert maps == [["china", 14]] * len(POLICIES)
    _shot(watched, "report-desktop")
    page.context.close()


def test_the_report_fits_a_phone(browser: Browser, written: tuple[Path, list[RunResult]]) -> None:
    path, _ = written
    watched, fetched = _open_offline(browser, path, PHONE)
    page = watched.page
    assert watched.errors == [] and fetched == []
    widths = page.evaluate(
        """() => ({
      page: document.documentElement.scrollWidth,
      viewport: window.innerWidth,
      charts: [...document.querySelectorAll('.chart, .map')].map(
        (el) => el.querySelector('svg').getBoundingClientRect().right),
    })"""
    )
    assert widths["page"] <= widths["viewport"], widths  # only the table's own box may scroll
    assert max(widths["charts"]) <= widths["viewport"], widths
    _shot(watched, "report-phone")
    page.context.close()
