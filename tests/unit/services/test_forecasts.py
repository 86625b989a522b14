"""`services.forecasts.site_forecast`: one site's forecast from its hourly history, with the last
72 actual hours beside it, each with the hour it started (the history ends at the current hour,
where the forecast starts). Real forecaster, hand-made histories. `site_prices`: each pool's
price forecast is the market's own pricing (`services.market.price_at`) at the forecast
utilisation and each hour's time of use (浙江's tariff), on hand-made load forecasts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import numpy as np
import pytest

from suanli.forecast import LeadWeights, min_history_h
from suanli.market import PricingRules
from suanli.services.forecasts import (
    ACTUAL_H,
    SiteForecast,
    pool_share_utilisation,
    site_forecast,
    site_prices,
)
from suanli.services.market import price_at
from suanli.store.models import PoolRow, SiteRow

NOW = datetime(2026, 3, 9, 14, tzinfo=UTC)  # the current hour: the first forecast hour
HOUR = timedelta(hours=1)


def test_the_last_72_hours_come_with_their_hours_beside_the_forecast() -> None:
    hours = 120
    history = np.array([float((NOW - (hours - k) * HOUR).hour % 4) for k in range(hours)])
    made = site_forecast("s", history, NOW, 24, 0.8)
    assert made.unavailable is None and len(made.mean) == len(made.lower) == 24
    assert ACTUAL_H == 72 and len(made.actual) == 72
    assert made.actual[0] == (NOW - 72 * HOUR, float((NOW - 72 * HOUR).hour % 4))
    assert made.actual[-1] == (NOW - HOUR, float((NOW - HOUR).hour % 4))  # the last whole hour
    assert [hour for hour, _ in made.actual] == [NOW - (72 - k) * HOUR for k in range(72)]
    assert [value for _, value in made.actual] == history[-72:].tolist()
    assert [value for _, value in made.actual[-24:]] == made.history  # the same hours


def test_a_short_history_has_its_actual_hours_and_no_forecast() -> None:
    history = np.array([0.0, 1.5, 2.25, 1.0004])
    made = site_forecast("s", history, NOW, 24, 0.8)
    assert made.mean == [] and f"needs {min_history_h(24)} whole hours" in str(made.unavailable)
    assert made.actual == [
        (NOW - 4 * HOUR, 0.0),
        (NOW - 3 * HOUR, 1.5),
        (NOW - 2 * HOUR, 2.25),
        (NOW - HOUR, 1.0),  # rounded to 3 places, as every figure of the answer
    ]
    assert site_forecast("s", np.array([]), NOW, 24, 0.8).actual == []  # registered this hour


# --- price forecasts -------------------------------------------------------------------------

SITE = SiteRow(id="zj", province="浙江")  # a province with a time-of-use tariff (peak x1.85)
POOLS = [
    PoolRow(id="zj/a", site_id="zj", device="cpu", count=6, price_fen_per_device_hour=36_000),
    PoolRow(id="zj/b", site_id="zj", device="cpu", count=4, price_fen_per_device_hour=10_000),
]


def a_load(mean: list[float], spread: float = 2.0) -> SiteForecast:
    """A site forecast from NOW with `mean` busy devices each hour and an interval of +- spread."""
    return SiteForecast(
        "zj",
        200,
        [],
        NOW,
        [],
        mean,
        [m - spread for m in mean],
        [m + spread for m in mean],
        (LeadWeights(1, len(mean), (0.25, 0.5, 0.25, 0.0)),),
        None,
    )


def priced(pool: PoolRow, hour: datetime, utilisation: Decimal, rules: PricingRules) -> int:
    """The market's own price of one device-hour (what a quote for one device for one hour, not
    preemptible, without data, would total) at that utilisation and hour."""
    breakdown, _, _ = price_at(
        pool,
        SITE,
        1,
        3600.0,
        start=hour,
        utilisation=utilisation,
        preemptible=False,
        data_gb=0.0,
        rules=rules,
    )
    return breakdown.total_fen


@pytest.mark.parametrize("rules", [PricingRules(), PricingRules(platform_fee_bp=0)])
def test_each_hours_price_is_the_markets_at_the_forecast_utilisation(rules: PricingRules) -> None:
    mean = [float(k % 12) for k in range(24)]  # 0..11 busy of the site's 10 devices
    found = site_prices(SITE, POOLS, a_load(mean), rules)
    assert found.unavailable is None and [p.pool for p in found.pools] == ["zj/a", "zj/b"]
    for pool, prices in zip(POOLS, found.pools, strict=True):
        assert len(prices.hours) == 24
        for k, at in enumerate(prices.hours):
            assert at.hour == NOW + k * HOUR and at.local_hour == (NOW.hour + 8 + k) % 24
            assert at.utilisation == (
                pool_share_utilisation(mean[k], 10),
                pool_share_utilisation(mean[k] - 2, 10),
                pool_share_utilisation(mean[k] + 2, 10),
            )
            assert all(Decimal(0) <= u <= Decimal(1) for u in at.utilisation)  # clipped
            assert at.price_fen == tuple(priced(pool, at.hour, u, rules) for u in at.utilisation)
            assert all(type(fen) is int for fen in at.price_fen)
        assert prices.cheapest == min(prices.hours, key=lambda h: h.price_fen[0])


def test_a_sites_load_is_shared_by_device_count() -> None:
    # 5 busy of 10 devices: each pool is half used, whatever its size
    assert pool_share_utilisation(5.0, 10) == Decimal("0.5")
    assert pool_share_utilisation(-0.3, 10) == Decimal(0)  # clipped below
    assert pool_share_utilisation(12.0, 10) == Decimal(1)  # and above
    assert pool_share_utilisation(1.0, 3) == Decimal("0.3333")
    assert pool_share_utilisation(0.0, 0) == Decimal(1)


def test_a_peak_hour_is_dearer_than_an_off_peak_hour_at_the_same_load() -> None:
    found = site_prices(SITE, POOLS, a_load([9.0] * 24), PricingRules())
    hours = found.pools[0].hours
    peak = max(hours, key=lambda h: h.time_of_use)
    valley = min(hours, key=lambda h: h.time_of_use)
    assert peak.time_of_use == Decimal("1.85") and valley.time_of_use == Decimal("0.4")
    assert peak.utilisation == valley.utilisation
    assert peak.price_fen[0] > valley.price_fen[0]
    assert found.pools[0].cheapest is not None
    assert found.pools[0].cheapest.time_of_use == Decimal("0.4")  # the first valley hour
    assert found.pools[0].cheapest == next(h for h in hours if h.time_of_use == Decimal("0.4"))


def test_a_higher_load_never_gives_a_lower_price() -> None:
    loads = [float(n) for n in range(-1, 13)]  # below empty to beyond full
    found = site_prices(SITE, POOLS[:1], a_load([0.0] * 24), PricingRules())
    hour = found.pools[0].hours[0].hour
    prices = [priced(POOLS[0], hour, pool_share_utilisation(b, 6), PricingRules()) for b in loads]
    assert prices == sorted(prices) and prices[-1] > prices[0]  # the curve rises above 80%
    for at in site_prices(SITE, POOLS, a_load([8.5] * 24, 1.5), PricingRules()).pools[0].hours:
        lower, mean, upper = at.price_fen[1], at.price_fen[0], at.price_fen[2]
        assert lower <= mean <= upper and lower < upper


def test_a_site_without_enough_history_gets_no_price_forecast_and_says_why() -> None:
    short = site_forecast("zj", np.array([1.0] * 30), NOW, 24, 0.8)
    found = site_prices(SITE, POOLS, short, PricingRules())
    assert found.pools == []
    assert found.unavailable == f"no load forecast: {short.unavailable}"
    assert "needs 96 whole hours of history" in str(found.unavailable)
    empty = site_prices(SITE, [], a_load([1.0] * 24), PricingRules())
    assert empty.pools == [] and empty.unavailable == "the site has no pools to price"
