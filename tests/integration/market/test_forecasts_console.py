"""The console's load-forecast page in a real headless Chromium against a live server whose
database holds a site's real task history (`make_history`: 100 whole hours of a daily pattern,
made through the services the server runs). The page draws the site's actual hours, the forecast
and its 80% interval with ECharts; read back from the live chart instance, they carry exactly the
numbers `GET /v1/forecasts` answers. A site with too little history says how much it needs. The
page fits a 1280-px desktop and a 390-px phone with no console errors (a Content Security Policy
violation counts as one); screenshots go to tests/artifacts/console/forecast-{desktop,phone}.png.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from playwright.sync_api import Browser, Page

from suanli.forecast import min_history_h
from tests.integration.platform.browser import DESKTOP, PHONE, browser, http_sign_in, sign_in
from tests.integration.platform.browser import open_page as _open
from tests.integration.platform.conftest import Platform, database_url, platform
from tests.integration.platform.test_console import UNLABELLED, _shot, _sideways

from .test_forecasts import PATTERN, make_history

__all__ = ["browser", "database_url", "platform"]  # fixtures
pytestmark = [pytest.mark.slow, pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)]

HOUR = timedelta(hours=1)


def varied(at: datetime) -> int:
    """The daily pattern, one device busier in some hours of some days: the forecast is then
    not the pattern itself, and its interval has a width to draw."""
    return PATTERN[at.hour] + (1 if (at.day * 7 + at.hour) % 5 == 0 else 0)


# what the page's chart holds, read from the live ECharts instance
DRAWN = """() => {
    const el = document.getElementById('forecast-chart');
    const chart = echarts.getInstanceByDom(el);
    const option = chart.getOption();
    const byId = Object.fromEntries(option.series.map(s => [s.id, s]));
    return {
        types: Object.fromEntries(option.series.map(s => [s.id, s.type])),
        actual: byId.actual.data,
        mean: byId.mean.data,
        interval: byId.interval.data,
        now: byId.actual.markLine.data.map(d => [d.xAxis, d.name]),
        legend: option.legend[0].data,
        x_name: option.xAxis[0].name,
        y_name: option.yAxis[0].name,
        start: JSON.parse(document.getElementById('forecast-data').textContent).start,
        band: chart.getZr().storage.getDisplayList().filter(e => e.type === 'polygon')
            .map(e => e.shape.points.length),
        right: el.getBoundingClientRect().right,
        width: document.documentElement.clientWidth,
    };
}"""
SHOW_TIP = """(hour) => {
    const chart = echarts.getInstanceByDom(document.getElementById('forecast-chart'));
    const index = chart.getOption().series.findIndex(s => s.id === 'mean');
    chart.dispatchAction({type: 'showTip', seriesIndex: index, dataIndex: hour});
}"""
TIP = "(hour) => document.getElementById('forecast-chart').innerText.includes('+' + hour + ' h')"


def _at(moment: str) -> datetime:
    return datetime.fromisoformat(moment.replace("Z", "+00:00"))


def _expected(body: dict[str, Any]) -> dict[str, Any]:
    """The chart's series as the API's answer for one site gives them: x in hours from the
    forecast's start (the current hour), the actual hours before it."""
    start = _at(body["start"])
    row = body["sites"][0]
    return {
        "actual": [[round((_at(a["hour"]) - start) / HOUR), a["value"]] for a in row["actual"]],
        "mean": [[k, v] for k, v in enumerate(row["mean"])],
        "interval": [
            [k, lo, hi] for k, (lo, hi) in enumerate(zip(row["lower"], row["upper"], strict=True))
        ],
    }


def _drawn(page: Page, platform: Platform, token: str, site: str) -> tuple[dict[str, Any], dict]:
    """The chart read from the page, and the API's answer for the same hour (the hour may turn
    between the two: then both are read again)."""
    for _ in range(2):
        page.locator("#forecast-chart canvas").first.wait_for()
        drawn = page.evaluate(DRAWN)
        with platform.client(token) as http:
            answer = http.get("/v1/forecasts", params={"site": site, "hours": 24})
        assert answer.status_code == 200, answer.text
        if answer.json()["start"] == drawn["start"]:
            return drawn, answer.json()
        page.reload()
    raise AssertionError("the hour kept turning")


def test_the_forecast_page_draws_what_the_api_answers(browser: Browser, platform: Platform) -> None:
    made = make_history(platform, varied)
    provider, lab = made.tokens["busy"], made.tokens["lab"]
    for viewport, size in ((DESKTOP, "desktop"), (PHONE, "phone")):
        watched = _open(browser, viewport, reduced_motion="reduce")  # drawn at once: no animation
        page = watched.page
        sign_in(watched, platform, provider)
        response = page.goto(f"{platform.url}/console/forecasts")  # the provider's own site
        assert response is not None and response.status == 200
        assert page.locator("#forecast").get_attribute("data-site") == made.busy_site
        drawn, body = _drawn(page, platform, lab, made.busy_site)
        expected = _expected(body)
        assert body["sites"][0]["unavailable"] is None and len(expected["actual"]) == 72
        assert drawn["types"] == {"actual": "line", "mean": "line", "interval": "custom"}
        assert drawn["actual"] == expected["actual"]  # the same numbers as the API's
        assert drawn["mean"] == expected["mean"]
        assert drawn["interval"] == expected["interval"]
        assert any(hi > lo for _, lo, hi in expected["interval"])  # an interval with a width
        assert drawn["band"] == [2 * 24]  # drawn as one band: 24 lower and 24 upper corners
        assert [x for x, _ in expected["actual"]] == list(range(-72, 0))  # then x = 0 is now
        assert drawn["now"] == [[0, "现在"]]
        assert drawn["legend"] == ["实际", "预测", "80% 区间"]
        assert (drawn["x_name"], drawn["y_name"]) == ("距现在（小时）", "忙碌设备数")
        assert page.evaluate(UNLABELLED) == []
        assert _sideways(page) <= 1, size  # no sideways scrolling
        assert drawn["right"] <= drawn["width"], size  # the chart inside the page
        _shot(watched, f"forecast-{size}")
        page.evaluate(SHOW_TIP, 3)  # the tooltip of the forecast's fourth hour
        page.wait_for_function(TIP, arg=3)
        tip = page.locator("#forecast-chart").inner_text()
        lo, hi = expected["interval"][3][1:]
        assert "预测" in tip and f"{expected['mean'][3][1]:.2f} 台" in tip, tip
        assert f"80% 区间: {lo:.2f} – {hi:.2f} 台" in tip, tip

        page.locator("#forecast-site").select_option(made.late_site)  # too little history
        page.locator("#forecast-show").click()
        page.wait_for_url("**/console/forecasts?site=*")
        assert page.locator("#forecast").get_attribute("data-site") == made.late_site
        notice = page.locator("#forecast-unavailable").inner_text()
        assert f"需要 {min_history_h(24)} 个整点小时" in notice, notice
        assert "只有 30 个" in notice or "只有 31 个" in notice, notice  # 31 once the hour turns
        late = page.evaluate(DRAWN)  # its actual hours are drawn, with no forecast
        assert len(late["actual"]) in (30, 31) and late["mean"] == late["interval"] == []
        assert late["legend"] == ["实际"] and late["now"] == [[0, "现在"]]
        assert _sideways(page) <= 1, size
        _shot(watched, f"forecast-empty-{size}")
        assert watched.errors == [], watched.errors
        page.context.close()

    with http_sign_in(platform, lab) as http:  # a consumer, in English
        http.cookies.set("suanli_lang", "en")
        page = http.get("/console/forecasts", params={"site": made.late_site})
        assert page.status_code == 200
        assert "Load forecasts" in page.text and "Hours from now" in page.text
        assert f"needs {min_history_h(24)} whole hours of history" in page.text
        assert http.get("/console/forecasts", params={"site": "nowhere"}).status_code == 404


CARBON_DRAWN = """() => {
    const chart = echarts.getInstanceByDom(document.getElementById('carbon-chart'));
    const option = chart.getOption();
    const byId = Object.fromEntries(option.series.map(s => [s.id, s]));
    return {
        actual: byId.actual.data,
        mean: byId.mean.data,
        legend: option.legend[0].data,
        y_name: option.yAxis[0].name,
        start: JSON.parse(document.getElementById('carbon-data').textContent).start,
    };
}"""


def test_the_forecast_page_draws_the_provinces_observed_carbon(
    browser: Browser, platform: Platform
) -> None:
    """Where the operator feeds the site's province's carbon intensity, the page draws the
    observed hours and the forecast the pass defers work on, with the numbers of
    `GET /v1/carbon`; without a feed it says the documented shape is used."""
    made = make_history(platform, varied)
    provider, lab, operator = made.tokens["busy"], made.tokens["lab"], made.tokens["op"]
    with platform.client(provider) as http:
        (site,) = [s for s in http.get("/v1/sites").json() if s["id"] == made.busy_site]
    province = site["province"]
    watched = _open(browser, DESKTOP, reduced_motion="reduce")
    page = watched.page
    sign_in(watched, platform, provider)
    page.goto(f"{platform.url}/console/forecasts")
    notice = page.locator("#carbon-unavailable").inner_text()
    assert province in notice and "ESTIMATE" in notice, notice

    last = made.end - HOUR  # the last whole hour
    values = [
        {
            "hour": (last - k * HOUR).isoformat().replace("+00:00", "Z"),
            "kg_per_kwh": 0.5 + 0.2 * (((last - k * HOUR).hour + 8) % 24 < 6),
        }
        for k in range(30 * 24)
    ]
    with platform.client(operator) as http:
        fed = http.post(
            "/v1/carbon", json={"province": province, "source": "test", "values": values}
        )
        assert fed.status_code == 201, fed.text
    for _ in range(2):
        page.goto(f"{platform.url}/console/forecasts")
        page.locator("#carbon-chart canvas").first.wait_for()
        drawn = page.evaluate(CARBON_DRAWN)
        with platform.client(lab) as http:
            answer = http.get("/v1/carbon", params={"province": province, "hours": 24}).json()
        (row,) = answer["provinces"]
        if _at(row["start"]) == _at(drawn["start"]):  # the hour did not turn in between
            break
    else:
        raise AssertionError("the hour kept turning")
    start = _at(row["start"])
    assert drawn["actual"] == [
        [round((_at(o["hour"]) - start) / HOUR), o["value"]] for o in row["observed"]
    ]
    assert drawn["mean"] == [[k, v] for k, v in enumerate(row["mean"])]
    assert len(drawn["actual"]) == 72 and len(drawn["mean"]) == 24
    assert drawn["legend"] == ["实测", "预测", "80% 区间"]
    assert drawn["y_name"] == "千克 CO2/千瓦时"
    summary = page.locator("#carbon-summary").inner_text()
    assert province in summary and "test" in summary, summary
    assert _sideways(page) <= 1
    _shot(watched, "forecast-carbon-desktop")
    assert watched.errors == [], watched.errors
    page.context.close()
