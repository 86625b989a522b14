"""Pricing, revenue split and settlement: hand-computed fen, refusals and invariants."""

from __future__ import annotations

import io
import re
import tokenize
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from suanli.catalog.tariffs import tou_schedule
from suanli.errors import InvalidValue
from suanli.market import (
    Outcome,
    PriceBreakdown,
    PricingRules,
    Settlement,
    price,
    settle,
    split,
    tou_multiplier,
)

RULES = PricingRules(network_fen_per_gb=50)
D = Decimal


def _quote(**overrides: object) -> PriceBreakdown:
    args: dict[str, object] = {
        "tou": D("1.7"),
        "utilisation": D("0.9"),
        "preemptible": False,
        "data_gb": 10.0,
        "rules": RULES,
    }
    args.update(overrides)
    return price(1500, 8, 7200.0, **args)  # type: ignore[arg-type]


# --- price: hand-computed -----------------------------------------------------------------------


def test_price_spelled_out() -> None:
    # base    = 1500 fen/h x 8 devices x 2 h                = 24000
    # tou     = 24000 x 1.7 = 40800                -> +16800
    # util    = U(0.9) = 1.00 + (1.20 - 1.00) x (0.9 - 0.8) / 0.2 = 1.10
    #           40800 x 1.10 = 44880               -> +4080
    # preempt = not preemptible                    -> 0
    # provider (compute) = 44880; fee 10% = 4488; network 10 GB x 50 = 500
    # total   = 44880 + 4488 + 500 = 49868
    assert _quote() == PriceBreakdown(
        base_fen=24000,
        time_of_use_fen=16800,
        utilisation_fen=4080,
        preemptible_fen=0,
        platform_fee_fen=4488,
        network_fen=500,
        total_fen=49868,
        provider_fen=44880,
    )


def test_price_preemptible() -> None:
    # compute = 44880 x (1 - 0.30) = 31416 -> preemptible -13464; fee 3141.6 -> 3142
    quote = _quote(preemptible=True)
    assert quote.preemptible_fen == -13464
    assert quote.provider_fen == 31416
    assert quote.platform_fee_fen == 3142
    assert quote.total_fen == 31416 + 3142 + 500


def test_price_valley_tariff_is_a_negative_adjustment() -> None:
    quote = _quote(tou=D("0.4"), utilisation=D("0.5"), data_gb=0)
    # 24000 x 0.4 = 9600 -> -14400; U(0.5) = 1 -> 0; fee 960
    assert (quote.base_fen, quote.time_of_use_fen, quote.utilisation_fen) == (24000, -14400, 0)
    assert (quote.provider_fen, quote.platform_fee_fen, quote.total_fen) == (9600, 960, 10560)


def test_utilisation_cap_bounds_the_multiplier() -> None:
    steep = PricingRules(utilisation_curve=((D(0), D(1)), (D(1), D(3))), utilisation_cap=D("1.5"))
    assert steep.utilisation_multiplier(D("0.1")) == Fraction(6, 5)
    assert steep.utilisation_multiplier(D(1)) == Fraction(3, 2)
    assert RULES.utilisation_multiplier(D("0.8")) == 1
    assert RULES.utilisation_multiplier(D(1)) == Fraction(6, 5)


@pytest.mark.parametrize(
    ("duration_s", "base_fen"),
    [(1800.0, 0), (5400.0, 2), (9000.0, 2), (12600.0, 4), (1.0, 0)],  # 0.5, 1.5, 2.5, 3.5 fen
)
def test_rounding_is_once_and_half_to_even(duration_s: float, base_fen: int) -> None:
    quote = price(
        1, 1, duration_s, tou=D(1), utilisation=D(0), preemptible=False, data_gb=0, rules=RULES
    )
    assert quote.base_fen == base_fen
    assert quote.total_fen == base_fen  # fee of 10% on < 5 fen rounds to 0


def test_float_inputs_are_read_by_their_decimal_text() -> None:
    # 0.1 GB x 50 fen = 5 fen exactly (float 0.1 would give 5.000000000000000277...)
    assert _quote(data_gb=0.1).network_fen == 5
    assert _quote(utilisation=0.9) == _quote()


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ({"posted": 1500.0}, "posted_fen_per_device_hour"),
        ({"posted": True}, "posted_fen_per_device_hour"),
        ({"posted": -1}, "posted_fen_per_device_hour"),
        ({"devices": 0}, "devices"),
        ({"duration_s": -1.0}, "duration_s"),
        ({"duration_s": float("nan")}, "duration_s"),
        ({"tou": D(0)}, "tou"),
        ({"utilisation": D("1.1")}, "utilisation"),
        ({"data_gb": float("inf")}, "data_gb"),
    ],
)
def test_price_refuses(args: dict[str, object], field: str) -> None:
    full: dict[str, object] = {"posted": 1500, "devices": 8, "duration_s": 7200.0}
    full.update(args)
    with pytest.raises(InvalidValue) as caught:
        price(
            full["posted"],  # type: ignore[arg-type]
            full["devices"],  # type: ignore[arg-type]
            full["duration_s"],  # type: ignore[arg-type]
            tou=full.get("tou", D(1)),  # type: ignore[arg-type]
            utilisation=full.get("utilisation", D(0)),  # type: ignore[arg-type]
            preemptible=False,
            data_gb=full.get("data_gb", 0.0),  # type: ignore[arg-type]
            rules=RULES,
        )
    assert caught.value.field == field


@pytest.mark.parametrize(
    "kwargs",
    [
        {"platform_fee_bp": 10001},
        {"platform_fee_bp": 0.1},
        {"preemptible_discount_bp": -1},
        {"sla_credit_bp": True},
        {"network_fen_per_gb": 0.5},
        {"utilisation_cap": D(0)},
        {"utilisation_curve": ((D("0.1"), D(1)), (D(1), D(1)))},  # does not start at 0
        {"utilisation_curve": ((D(0), D(1)), (D("0.9"), D(1)))},  # does not end at 1
        {"utilisation_curve": ((D(0), D(1)), (D(0), D(2)), (D(1), D(2)))},  # not increasing
        {"utilisation_curve": ((D(0), D(0)), (D(1), D(1)))},  # multiplier 0
        {"utilisation_curve": ()},
    ],
)
def test_pricing_rules_refuse(kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidValue):
        PricingRules(**kwargs)  # type: ignore[arg-type]


def test_breakdown_refuses_parts_that_do_not_add_up() -> None:
    with pytest.raises(InvalidValue):
        PriceBreakdown(100, 0, 0, 0, 10, 0, 111, 100)
    with pytest.raises(InvalidValue):
        PriceBreakdown(100, 0, 0, 0, 10, 0, 110, 99)


# --- time of use ----------------------------------------------------------------------------------


def test_tou_multiplier_from_the_schedule() -> None:
    schedule = tou_schedule("浙江")
    assert schedule is not None
    multiplier, note = tou_multiplier("浙江", 7, 19.5)
    assert multiplier == Decimal(str(schedule.at(7, 19.5)))
    assert "浙江" in note and "month 7" in note


def test_tou_multiplier_flat_where_no_schedule() -> None:
    assert tou_multiplier("新疆", 1, 12.0) == (
        D(1),
        "flat (no time-of-use tariff for 新疆 in data/tou_tariffs.csv)",
    )


@pytest.mark.parametrize(("month", "hour"), [(0, 1.0), (13, 1.0), (1, 24.0), (1, -0.5)])
def test_tou_multiplier_refuses(month: int, hour: float) -> None:
    with pytest.raises(InvalidValue):
        tou_multiplier("浙江", month, hour)


# --- split ----------------------------------------------------------------------------------------


def test_split_proportional_and_exact() -> None:
    quote = _quote()  # 44880 / 4488 / 500 of 49868
    assert split(49868, quote) == (44880, 4488, 500)
    assert split(24934, quote) == (22440, 2244, 250)
    # 3 parts of 1: 10 x 1/3 each -> 3, 3, 3 and one fen left: remainders tie, provider first
    even = PriceBreakdown(1, 0, 0, 0, 1, 1, 3, 1)
    assert split(10, even) == (4, 3, 3)
    assert split(0, even) == (0, 0, 0)
    assert split(7, PriceBreakdown(0, 0, 0, 0, 0, 0, 0, 0)) == (7, 0, 0)


breakdowns = st.builds(
    lambda base, fee, net: PriceBreakdown(base, 0, 0, 0, fee, net, base + fee + net, base),
    st.integers(0, 10**9),
    st.integers(0, 10**8),
    st.integers(0, 10**8),
)


@given(charge=st.integers(0, 10**10), breakdown=breakdowns)
def test_split_sums_exactly_and_is_never_negative(charge: int, breakdown: PriceBreakdown) -> None:
    shares = split(charge, breakdown)
    assert sum(shares) == charge
    assert all(isinstance(s, int) and s >= 0 for s in shares)
    if breakdown.total_fen:  # each share is within one fen of its exact quota
        weights = (breakdown.provider_fen, breakdown.platform_fee_fen, breakdown.network_fen)
        for share, weight in zip(shares, weights, strict=True):
            assert abs(share - Fraction(charge * weight, breakdown.total_fen)) < 1


# --- settle ---------------------------------------------------------------------------------------


def test_settle_half_run_with_a_missed_deadline() -> None:
    # planned 8 x 7200 = 57600 device-s, ran 28800 -> charge 49868 / 2 = 24934
    # split 22440 / 2244 / 250; refund 50000 - 24934 = 25066; credit 10% = 2493.4 -> 2493
    result = settle(50000, _quote(), 57600, 28800, Outcome.CANCELED, True, RULES)
    assert result == Settlement(
        charge_fen=24934,
        provider_fen=22440,
        platform_fen=2244,
        network_fen=250,
        sla_credit_fen=2493,
        refund_fen=25066,
        escrow_fen=50000,
    )
    assert result.provider_net_fen == 22440 - 2493


def test_settle_complete_charges_the_quote_and_no_more() -> None:
    full = settle(50000, _quote(), 57600, 60000, Outcome.COMPLETE, False, RULES)
    assert (full.charge_fen, full.refund_fen, full.sla_credit_fen) == (49868, 132, 0)
    capped = settle(40000, _quote(), 57600, 57600, Outcome.EXECUTOR_ERROR, False, RULES)
    assert (capped.charge_fen, capped.refund_fen) == (40000, 0)


def test_settle_system_error_refunds_everything() -> None:
    result = settle(50000, _quote(), 57600, 57600, Outcome.SYSTEM_ERROR, True, RULES)
    assert (result.charge_fen, result.refund_fen, result.sla_credit_fen) == (0, 50000, 0)


def test_settlement_refuses_broken_invariants() -> None:
    with pytest.raises(InvalidValue):
        Settlement(10, 5, 1, 1, 0, 0, 10)  # shares 7 != charge 10
    with pytest.raises(InvalidValue):
        Settlement(10, 8, 1, 1, 0, 1, 10)  # charge + refund 11 != escrow 10
    with pytest.raises(InvalidValue):
        Settlement(10, 8, 1, 1, 9, 0, 10)  # credit 9 > provider 8
    with pytest.raises(InvalidValue):
        Settlement(10, 8, 1, 1, 0, 0.0, 10)  # type: ignore[arg-type]


def test_settle_refuses() -> None:
    with pytest.raises(InvalidValue):
        settle(100, _quote(), 0, 0, Outcome.COMPLETE, False, RULES)
    with pytest.raises(InvalidValue):
        settle(100.0, _quote(), 1, 1, Outcome.COMPLETE, False, RULES)  # type: ignore[arg-type]
    with pytest.raises(InvalidValue):
        settle(100, _quote(), 1, -1, Outcome.COMPLETE, False, RULES)


money = st.integers(0, 10**7)
rules_strategy = st.builds(
    PricingRules,
    platform_fee_bp=st.integers(0, 10000),
    network_fen_per_gb=st.integers(0, 1000),
    preemptible_discount_bp=st.integers(0, 10000),
    sla_credit_bp=st.integers(0, 10000),
)
quotes = st.builds(
    lambda rules, posted, devices, duration, tou, util, pre, gb: (
        rules,
        price(
            posted,
            devices,
            duration,
            tou=tou,
            utilisation=util,
            preemptible=pre,
            data_gb=gb,
            rules=rules,
        ),
    ),
    rules_strategy,
    st.integers(0, 10**5),
    st.integers(1, 64),
    st.floats(0, 10**6, allow_nan=False),
    st.decimals("0.1", "3", places=3),
    st.decimals(0, 1, places=3),
    st.booleans(),
    st.floats(0, 10**4, allow_nan=False),
)


@settings(max_examples=300)
@given(
    quote=quotes,
    extra=money,
    planned=st.floats(1e-3, 1e7, allow_nan=False),
    used=st.floats(0, 2e7, allow_nan=False),
    outcome=st.sampled_from(Outcome),
    missed=st.booleans(),
    short=st.booleans(),
)
def test_settle_invariants(
    quote: tuple[PricingRules, PriceBreakdown],
    extra: int,
    planned: float,
    used: float,
    outcome: Outcome,
    missed: bool,
    short: bool,
) -> None:
    rules, breakdown = quote
    assert breakdown.total_fen == (
        breakdown.base_fen
        + breakdown.time_of_use_fen
        + breakdown.utilisation_fen
        + breakdown.preemptible_fen
        + breakdown.platform_fee_fen
        + breakdown.network_fen
    )
    escrow = max(0, breakdown.total_fen - extra) if short else breakdown.total_fen + extra
    s = settle(escrow, breakdown, planned, used, outcome, missed, rules)
    amounts = (s.charge_fen, s.provider_fen, s.platform_fen, s.network_fen, s.sla_credit_fen)
    assert all(type(a) is int and a >= 0 for a in (*amounts, s.refund_fen))
    assert s.provider_fen + s.platform_fen + s.network_fen == s.charge_fen
    assert s.charge_fen + s.refund_fen == escrow
    assert s.charge_fen <= min(escrow, breakdown.total_fen)
    assert s.sla_credit_fen <= s.provider_fen
    if outcome is Outcome.SYSTEM_ERROR:
        assert s.charge_fen == 0
    if not missed:
        assert s.sla_credit_fen == 0


# --- no float arithmetic on money ----------------------------------------------------------------

SOURCES = [Path(__file__).parents[3] / "src" / "suanli" / name for name in ("ledger", "market")]
# the market's use cases (quotes, escrow, settlement) are market code too
SERVICE = Path(__file__).parents[3] / "src" / "suanli" / "services" / "market.py"

# Float arithmetic that would touch money: a float() call anywhere; a float literal multiplied,
# divided, added to or compared with a *fen* name; true division of a *fen* name (int / int is a
# float in Python — use Fraction); any use of math (floats) at all.
FLOAT_ON_MONEY = [
    re.compile(r"\bfloat\s*\("),
    re.compile(r"\w*fen\w*\s*(?:\*|/|\+|-)\s*\d*\.\d"),
    re.compile(r"\d*\.\d+\s*(?:\*|/|\+|-)\s*\w*fen\w*"),
    re.compile(r"\w*fen\w*(?:\s*[)\]])?\s*/(?!/)"),
    re.compile(r"\bmath\s*\."),
]


def float_money_lines(source: str) -> list[str]:
    """Code lines (strings and comments removed) that match a FLOAT_ON_MONEY pattern."""
    kept: dict[int, list[str]] = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type in (tokenize.STRING, tokenize.COMMENT):
            continue
        kept.setdefault(token.start[0], []).append(token.string)
    lines = [" ".join(parts) for _, parts in sorted(kept.items())]
    return [line for line in lines if any(p.search(line) for p in FLOAT_ON_MONEY)]


@pytest.mark.parametrize(
    "bad",
    [
        "fee_fen = charge_fen * 0.1\n",
        "x = 0.9 * total_fen\n",
        "share = float(provider_fen)\n",
        "ratio = charge_fen / total_fen\n",
        "y = round(breakdown.total_fen / 3)\n",
        "z = math.floor(total_fen * r)\n",
    ],
)
def test_the_float_check_catches_float_money(bad: str) -> None:
    assert float_money_lines(bad)


def test_the_float_check_ignores_exact_code_and_text() -> None:
    good = (
        "x = Fraction(charge_fen * weight, total)  # fen * 0.1 in a comment\n"
        'doc = "fen / 3 and float(fen) in a string"\n'
        "q = charge_fen // 3\n"
    )
    assert float_money_lines(good) == []


def test_no_float_arithmetic_on_money_in_ledger_or_market() -> None:
    files = [*sorted(path for folder in SOURCES for path in folder.rglob("*.py")), SERVICE]
    assert len(files) >= 5
    offending = {
        str(path): hits for path in files if (hits := float_money_lines(path.read_text("utf-8")))
    }
    assert offending == {}
