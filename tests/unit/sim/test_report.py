"""The twin's HTML report from real runs: its embedded chart data ends at the runs' totals (cost
in CNY, both kinds of carbon in kg), long timelines are thinned to the cap with their last
point, older timelines without the newer series still render, the page loads nothing from the
network and carries ECharts inline, and a missing ECharts says how to install it."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import pytest

from suanli.errors import MissingAsset
from suanli.sim import report
from suanli.sim.timeline import thin
from suanli.sim.traces import load_trace, shape
from suanli.sim.twin import Network, RunResult, national_network, run
from suanli.twin_worker import TIMELINE_POINTS
from suanli.twin_worker import _thin as worker_thin

POLICIES = ("nearest", "green")
CUMULATIVE = ("cost_cny", "carbon_kg", "carbon_location_kg")


@pytest.fixture(scope="module")
def replay() -> tuple[Network, list[RunResult]]:
    trace = shape(load_trace("openb"), limit=150, time_scale=0.01, seed=0)
    network = national_network()
    return network, [run(trace, network, p) for p in POLICIES]


def embedded(page: str, element_id: str) -> object:
    found = re.search(
        rf'<script type="application/json" id="{element_id}">(.*?)</script>', page, re.S
    )
    assert found, f"no #{element_id} in the page"
    return json.loads(found.group(1))


def last_points(data: dict, policy: str) -> dict[str, float]:
    return {key: data["series"][policy][key][-1][1] for key in CUMULATIVE}


def test_the_cumulative_series_end_at_the_runs_totals(
    replay: tuple[Network, list[RunResult]],
) -> None:
    network, results = replay
    data = embedded(report.render("openb", network, results), "report-data")
    assert isinstance(data, dict)
    assert data["policies"] == list(POLICIES)
    for result in results:
        m = result.metrics
        assert m["cost_fen"] > 0 and m["carbon_kg"] > 0
        assert last_points(data, result.policy) == {
            "cost_cny": m["cost_fen"] / 100,
            "carbon_kg": m["carbon_kg"],
            "carbon_location_kg": m["carbon_location_kg"],
        }
        # a real run's last tick already holds the totals: nothing appended
        assert result.policy not in data["closed_at_end"]
        series = data["series"][result.policy]
        assert set(series) == {"busy_gpus", "busy_cpu_cores", "queued", *CUMULATIVE}
        for line in series.values():  # time never runs backwards
            times = [t for t, _ in line]
            assert times == sorted(times)
        cost = [v for _, v in series["cost_cny"]]
        assert cost == sorted(cost)  # cumulative
    # the green policy put less market-based carbon out than nearest
    assert data["totals"]["green"]["carbon_kg"] < data["totals"]["nearest"]["carbon_kg"]


def test_a_long_timeline_is_thinned_to_the_cap_with_its_last_point(
    replay: tuple[Network, list[RunResult]],
) -> None:
    network, results = replay
    real = results[0]
    totals = report.cumulative_totals(real)
    n = 20_001
    # a timeline of a long run: one tick a minute, the cumulative values growing to the totals
    timeline = [
        {
            "t": 60.0 * i,
            "busy_devices": float(i % 97 + i % 13),
            "busy_gpus": float(i % 97),
            "busy_cpu_cores": float(i % 13),
            "queued": float(i % 5),
            "cost_fen": real.metrics["cost_fen"] * i / (n - 1),
            "carbon_kg": totals["carbon_kg"] * i / (n - 1),
            "carbon_location_kg": totals["carbon_location_kg"] * i / (n - 1),
        }
        for i in range(n)
    ]
    long = replace(real, timeline=timeline)
    data = report.chart_data("long", network, [long])
    assert data["time_unit"] == "d"  # 20,000 minutes: charted in days
    for key, line in data["series"][real.policy].items():
        assert 2 <= len(line) <= report.SERIES_POINTS, key
        assert line[0][0] == 0.0
        assert line[-1][0] == pytest.approx(timeline[-1]["t"] / 86400, abs=1e-4)
    assert data["series"][real.policy]["busy_gpus"][-1][1] == timeline[-1]["busy_gpus"]
    assert last_points(data, real.policy) == totals


def test_a_timeline_ending_before_the_totals_gets_a_point_at_the_runs_end(
    replay: tuple[Network, list[RunResult]],
) -> None:
    network, results = replay
    real = results[0]
    cut = replace(real, timeline=real.timeline[: len(real.timeline) // 2])
    data = report.chart_data("cut", network, [cut])
    assert data["closed_at_end"] == {real.policy: list(CUMULATIVE)}
    assert last_points(data, real.policy) == report.cumulative_totals(real)
    end_s = max(o.end_s for o in real.outcomes if o.end_s is not None)
    unit_s = 86400 if data["time_unit"] == "d" else 3600
    assert data["series"][real.policy]["cost_cny"][-1][0] == round(end_s / unit_s, 4)


def test_an_older_timeline_without_the_newer_series_still_renders(
    replay: tuple[Network, list[RunResult]],
) -> None:
    network, results = replay
    old = [
        replace(
            r,
            timeline=[
                {k: v for k, v in p.items() if k in ("t", "busy_devices", "queued", "cost_fen")}
                | {"carbon_kg": p["carbon_kg"]}
                for p in r.timeline
            ],
        )
        for r in results
    ]
    page = report.render("old", network, old)
    data = embedded(page, "report-data")
    assert isinstance(data, dict)
    for r in results:
        assert set(data["series"][r.policy]) == {"queued", "cost_cny", "carbon_kg"}
        assert data["series"][r.policy]["carbon_kg"][-1][1] == r.metrics["carbon_kg"]


class _Loads(HTMLParser):
    """Every URL an element of the page would load (src, href, srcset, poster, data)."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.scripts_with_src = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href", "srcset", "poster", "data", "action") and value:
                self.urls.append(value)
            if tag == "script" and name == "src":
                self.scripts_with_src += 1


def test_the_page_is_offline_and_carries_echarts_inline(
    replay: tuple[Network, list[RunResult]],
) -> None:
    network, results = replay
    page = report.render("openb", network, results)
    echarts = (report.VENDOR / "echarts.min.js").read_text(encoding="utf-8")
    assert f"<script>{echarts}</script>" in page
    loads = _Loads()
    loads.feed(page)
    assert loads.scripts_with_src == 0 and loads.urls == []
    # outside the library's own text (licence and XML namespace strings), no URL at all
    ours = page.replace(echarts, "")
    assert re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/", ours, re.I) is None
    assert "@import" not in ours and "url(" not in ours
    geo = embedded(page, "china-geo")
    assert isinstance(geo, dict) and geo["type"] == "FeatureCollection"
    # the table: money in CNY, both carbons, units in the headers, assumptions kept
    for text in (
        "Cost 费用 (CNY ¥ 元)",
        "Market-based 市场法 (kg CO₂)",
        "Location-based",
        "ESTIMATE",
    ):
        assert text in page
    cost = results[0].metrics["cost_fen"] / 100
    assert f"¥{cost:,.2f}</td>" in page
    assert "Assumptions 假设" in page and "SYNTHETIC daily shape" in page


def test_a_missing_echarts_says_how_to_install_it(
    replay: tuple[Network, list[RunResult]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    network, results = replay
    monkeypatch.setattr(report, "VENDOR", tmp_path)  # a checkout where the assets never ran
    with pytest.raises(MissingAsset) as raised:
        report.render("openb", network, results)
    line = raised.value.one_line()
    assert "scripts/console-assets.sh" in line and "echarts.min.js" in line
    assert "请运行" in line


@pytest.mark.parametrize("n", [0, 1, 2, 199, 200, 201, 399, 400, 401, 1500, 1501, 99_999])
@pytest.mark.parametrize("cap", [2, 3, 200, 1500])
def test_thin_keeps_at_most_the_cap_in_order_with_the_first_and_last(n: int, cap: int) -> None:
    points = list(range(n))
    kept = thin(points, cap)
    assert len(kept) <= cap
    assert kept == sorted(set(kept))
    if n:
        assert kept[0] == 0 and kept[-1] == n - 1
    if n <= cap:
        assert kept == points


def test_the_worker_thins_with_the_same_helper_in_its_own_format() -> None:
    timeline = [{"t": 36.0 * i, "busy_devices": float(i % 7)} for i in range(1001)]
    points = worker_thin(timeline)
    assert 0 < len(points) <= TIMELINE_POINTS
    assert points[-1] == [10.0, float(1000 % 7)]  # [hours, busy devices], the last kept
    assert all(len(p) == 2 for p in points)
