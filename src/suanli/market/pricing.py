"""Pricing rules, the price breakdown of a quote, and the revenue split of a charge.

Owns `PricingRules` (operator-set, validated, frozen), `tou_multiplier()`, `price()` and
`split()`. The compute price of an order is

    base       = posted_fen_per_device_hour x devices x duration_s / 3600
    compute    = base x tou x U(utilisation) x (1 - preemptible_discount_bp / 10000 if preemptible)
    fee        = compute x platform_fee_bp / 10000
    network    = data_gb x network_fen_per_gb
    total      = compute + fee + network

where U is the operator's utilisation curve, linearly interpolated and capped at
`utilisation_cap`. The time-of-use and utilisation multipliers apply to the compute price as a
whole: that is our pricing rule, not a published one (a 分时电价 tariff moves only the energy
price). Arithmetic is exact (`Fraction`); each money amount is rounded ONCE, half to even:
the running subtotals base, base x tou, base x tou x U and compute are each rounded once and
every adjustment is the difference of two consecutive rounded subtotals, so the parts add up
exactly and `provider_fen` is the exact compute price rounded once; fee and network are rounded
once each from their exact values. Revenue share: the provider gets the compute price
(`provider_fen`), the platform the fee, the network operator the transfer price (`network_fen`);
`split()` divides a (possibly partial) charge in those proportions.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from decimal import Decimal
from fractions import Fraction
from itertools import pairwise

from suanli.catalog.tariffs import tou_schedule
from suanli.errors import InvalidValue
from suanli.market.exact import BP_PER_UNIT, basis_points, decimal, exact, fen, round_fen

_ZERO = Decimal(0)
_ONE = Decimal(1)

DEFAULT_UTILISATION_CURVE: tuple[tuple[Decimal, Decimal], ...] = (
    (Decimal("0"), Decimal("1.00")),
    (Decimal("0.8"), Decimal("1.00")),
    (Decimal("1.0"), Decimal("1.20")),
)


@dataclass(frozen=True, slots=True)
class PricingRules:
    """The operator's pricing rules. Floats given for the Decimal fields are read via `str()`.

    - `platform_fee_bp`: the platform's fee, in basis points of the provider's compute price.
    - `network_fen_per_gb`: the network operator's transfer price per GB moved.
    - `utilisation_curve`: (utilisation 0..1, multiplier > 0) points, x strictly increasing from
      0 to 1, linearly interpolated; `utilisation_cap` bounds the multiplier from above.
    - `preemptible_discount_bp`: the discount on the compute price of preemptible work.
    - `sla_credit_bp`: the share of the charge credited to the consumer when a deadline is
      missed, paid from the provider's share.
    """

    platform_fee_bp: int = 1000
    network_fen_per_gb: int = 0
    utilisation_curve: tuple[tuple[Decimal, Decimal], ...] = DEFAULT_UTILISATION_CURVE
    utilisation_cap: Decimal = Decimal("1.5")
    preemptible_discount_bp: int = 3000
    sla_credit_bp: int = 1000

    def __post_init__(self) -> None:
        basis_points("platform_fee_bp", self.platform_fee_bp)
        basis_points("preemptible_discount_bp", self.preemptible_discount_bp)
        basis_points("sla_credit_bp", self.sla_credit_bp)
        fen("network_fen_per_gb", self.network_fen_per_gb)
        cap = decimal("utilisation_cap", self.utilisation_cap)
        if cap <= 0:
            raise InvalidValue("utilisation_cap", self.utilisation_cap, "> 0", "大于 0")
        object.__setattr__(self, "utilisation_cap", cap)
        object.__setattr__(self, "utilisation_curve", _curve(self.utilisation_curve))

    def utilisation_multiplier(self, utilisation: Decimal) -> Fraction:
        """U(utilisation 0..1): the curve linearly interpolated, capped; an exact Fraction."""
        u = _utilisation(utilisation)
        points = [(Fraction(x), Fraction(y)) for x, y in self.utilisation_curve]
        value = points[0][1]  # a one-point curve is constant
        for (x0, y0), (x1, y1) in pairwise(points):
            if x0 <= u <= x1:
                value = y0 + (y1 - y0) * (u - x0) / (x1 - x0)
                break
        return min(Fraction(self.utilisation_cap), value)


def _curve(raw: tuple[tuple[Decimal, Decimal], ...]) -> tuple[tuple[Decimal, Decimal], ...]:
    expected = "(utilisation, multiplier) points, x strictly increasing from 0 to 1, multiplier > 0"
    expected_zh = "(利用率, 系数) 点列，利用率从 0 严格递增到 1，系数大于 0"
    try:
        points = tuple(
            (decimal("utilisation_curve", x), decimal("utilisation_curve", y)) for x, y in raw
        )
    except (TypeError, ValueError):
        raise InvalidValue("utilisation_curve", raw, expected, expected_zh) from None
    xs = [x for x, _ in points]
    ok = (
        len(points) >= 1
        and xs[0] == _ZERO
        and (xs[-1] == _ONE or len(points) == 1)
        and all(a < b for a, b in pairwise(xs))
        and all(y > 0 for _, y in points)
    )
    if not ok:
        raise InvalidValue("utilisation_curve", raw, expected, expected_zh)
    return points


def _utilisation(value: object) -> Fraction:
    u = exact("utilisation", value)
    if not 0 <= u <= 1:
        raise InvalidValue("utilisation", value, "a number in [0, 1]", "区间 [0, 1] 内的数")
    return u


def tou_multiplier(province_zh: str, month: int, hour: float) -> tuple[Decimal, str]:
    """The site's electricity time-of-use multiplier at (month 1..12, local hour 0 <= h < 24),
    with a note saying where it came from; `Decimal(1)` (flat) where the province has no
    schedule in `tou_tariffs.csv`. Applied to the compute price as a whole (our rule)."""
    if isinstance(month, bool) or not isinstance(month, int) or not 1 <= month <= 12:
        raise InvalidValue("month", month, "a whole month 1..12", "1 到 12 的整数月份")
    if isinstance(hour, bool) or not isinstance(hour, int | float) or not 0 <= hour < 24:
        raise InvalidValue("hour", hour, "a local hour in [0, 24)", "区间 [0, 24) 内的当地时刻")
    schedule = tou_schedule(province_zh)
    if schedule is None:
        return Decimal(1), f"flat (no time-of-use tariff for {province_zh} in data/tou_tariffs.csv)"
    multiplier = Decimal(str(schedule.at(month, hour)))
    partial = ", partial schedule" if schedule.partial else ""
    note = (
        f"{schedule.province_zh} time-of-use {schedule.year}: x{multiplier} in month {month} "
        f"at {hour:g}h (quality {schedule.quality}{partial})"
    )
    return multiplier, note


@dataclass(frozen=True, slots=True)
class PriceBreakdown:
    """A quote's price in fen, part by part (see the module docstring for the formula).

    `provider_fen == base + time_of_use + utilisation + preemptible` (the compute price) and
    `total_fen == provider_fen + platform_fee_fen + network_fen`, exactly. Adjustments may be
    negative (a valley tariff, a curve below 1, the preemptible discount); the rest are >= 0.
    """

    base_fen: int
    time_of_use_fen: int
    utilisation_fen: int
    preemptible_fen: int
    platform_fee_fen: int
    network_fen: int
    total_fen: int
    provider_fen: int

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidValue(item.name, value, "a whole number of fen (int)", "以分计的整数")
        for name in ("base_fen", "platform_fee_fen", "network_fen", "total_fen", "provider_fen"):
            fen(name, getattr(self, name))
        if self.preemptible_fen > 0:
            raise InvalidValue("preemptible_fen", self.preemptible_fen, "<= 0", "不大于 0")
        compute = self.base_fen + self.time_of_use_fen + self.utilisation_fen + self.preemptible_fen
        if self.provider_fen != compute:
            raise InvalidValue(
                "provider_fen",
                self.provider_fen,
                f"the sum of the compute parts, {compute}",
                f"计算部分之和 {compute}",
            )
        total = self.provider_fen + self.platform_fee_fen + self.network_fen
        if self.total_fen != total:
            raise InvalidValue(
                "total_fen", self.total_fen, f"the sum of the parts, {total}", f"各部分之和 {total}"
            )


def price(
    posted_fen_per_device_hour: int,
    devices: int,
    duration_s: float,
    *,
    tou: Decimal,
    utilisation: Decimal,
    preemptible: bool,
    data_gb: float,
    rules: PricingRules,
) -> PriceBreakdown:
    """The breakdown of an order's price (formula and rounding: the module docstring)."""
    posted = fen("posted_fen_per_device_hour", posted_fen_per_device_hour)
    if isinstance(devices, bool) or not isinstance(devices, int) or devices < 1:
        raise InvalidValue("devices", devices, "a whole number >= 1", "不小于 1 的整数")
    hours = exact("duration_s", duration_s, low=_ZERO) / 3600
    tou_exact = exact("tou", tou)
    if tou_exact <= 0:
        raise InvalidValue("tou", tou, "a multiplier > 0", "大于 0 的系数")
    gb = exact("data_gb", data_gb, low=_ZERO)
    u = rules.utilisation_multiplier(utilisation)
    discount = Fraction(rules.preemptible_discount_bp, BP_PER_UNIT) if preemptible else Fraction(0)

    base = posted * devices * hours
    with_tou = base * tou_exact
    with_utilisation = with_tou * u
    compute = with_utilisation * (1 - discount)
    base_fen = round_fen(base)
    tou_fen = round_fen(with_tou)
    utilisation_fen = round_fen(with_utilisation)
    provider_fen = round_fen(compute)
    platform_fee_fen = round_fen(compute * Fraction(rules.platform_fee_bp, BP_PER_UNIT))
    network_fen = round_fen(gb * rules.network_fen_per_gb)
    return PriceBreakdown(
        base_fen=base_fen,
        time_of_use_fen=tou_fen - base_fen,
        utilisation_fen=utilisation_fen - tou_fen,
        preemptible_fen=provider_fen - utilisation_fen,
        platform_fee_fen=platform_fee_fen,
        network_fen=network_fen,
        total_fen=provider_fen + platform_fee_fen + network_fen,
        provider_fen=provider_fen,
    )


def split(charge_fen: int, breakdown: PriceBreakdown) -> tuple[int, int, int]:
    """(provider, platform, network) shares of `charge_fen`, proportional to the breakdown's
    (provider_fen, platform_fee_fen, network_fen), summing exactly to `charge_fen`, each >= 0.

    Largest remainder: each share is first floored; the fen left over go one each to the
    largest fractional remainders, ties broken in the order provider, platform, network. A
    breakdown whose total is 0 gives the whole charge to the provider.
    """
    charge = fen("charge_fen", charge_fen)
    weights = (breakdown.provider_fen, breakdown.platform_fee_fen, breakdown.network_fen)
    total = sum(weights)
    if total == 0:
        return charge, 0, 0
    quotas = [Fraction(charge * weight, total) for weight in weights]
    shares = [q.numerator // q.denominator for q in quotas]
    left = charge - sum(shares)
    # Order: the largest remainder first; on a tie, the earlier party (provider first).
    order = sorted(range(3), key=lambda i: (-(quotas[i] - shares[i]), i))
    for i in order[:left]:
        shares[i] += 1
    return shares[0], shares[1], shares[2]
