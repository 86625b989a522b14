"""Settlement: how an order's escrow is divided once its usage is metered.

Owns `Outcome` (the TES terminal states), `Settlement` and `settle()`. Rules, in fen:

    ran      = min(1, used_device_s / planned_device_s)          (exact)
    charge   = 0 for SYSTEM_ERROR (the provider's fault: full refund), otherwise
               min(escrow, round(breakdown.total_fen x ran))     for COMPLETE, EXECUTOR_ERROR,
                                                                 CANCELED and PREEMPTED
                                                                 (charge what ran)
    provider, platform, network = split(charge, breakdown)      (largest remainder, exact sum)
    sla_credit = min(provider, round(charge x sla_credit_bp / 10000)) if the deadline was
                 missed, else 0 — paid by the provider to the consumer out of its share
    refund   = escrow - charge

Each `round` is once, half to even, from an exact Fraction. Invariants (checked when a
`Settlement` is built): every amount is an int >= 0, provider + platform + network == charge,
charge + refund == escrow, sla_credit <= provider.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from decimal import Decimal
from enum import StrEnum
from fractions import Fraction

from suanli.errors import InvalidValue
from suanli.market.exact import BP_PER_UNIT, exact, fen, round_fen
from suanli.market.pricing import PriceBreakdown, PricingRules, split


class Outcome(StrEnum):
    """How the task ended (GA4GH TES terminal states) and so who pays."""

    COMPLETE = "COMPLETE"
    EXECUTOR_ERROR = "EXECUTOR_ERROR"  # the consumer's command failed: charge what ran
    SYSTEM_ERROR = "SYSTEM_ERROR"  # the provider's side failed: full refund
    CANCELED = "CANCELED"  # charge what ran
    PREEMPTED = "PREEMPTED"  # reclaimed for guaranteed work: charge what ran


def voucher_refunds(charge_fen: int, drawn: Sequence[tuple[str, int]]) -> list[tuple[str, int]]:
    """What each voucher that funded an escrow gets back: a charge is paid from the vouchers
    first, in the order they were drawn (`drawn`: (voucher id, fen) pairs), then from the
    wallet; each voucher gets back what of its part the charge did not take (vouchers left
    out when nothing comes back). The wallet's refund is the settlement's refund less these.

    Example: 60 fen from voucher A and 30 from B, 10 from the wallet, charge 70: A paid 60, B
    10, so B gets 20 back, A nothing, the wallet its 10."""
    left = fen("charge_fen", charge_fen)
    back: list[tuple[str, int]] = []
    for ident, part in drawn:
        fen("vouchers", part)
        taken = min(left, part)
        left -= taken
        if part > taken:
            back.append((ident, part - taken))
    return back


@dataclass(frozen=True, slots=True)
class Settlement:
    """Where an order's escrow goes. `provider_fen` is the provider's gross share; it pays
    `sla_credit_fen` back to the consumer out of it (`provider_net_fen`)."""

    charge_fen: int
    provider_fen: int
    platform_fen: int
    network_fen: int
    sla_credit_fen: int
    refund_fen: int
    escrow_fen: int

    def __post_init__(self) -> None:
        for item in fields(self):
            fen(item.name, getattr(self, item.name))
        shares = self.provider_fen + self.platform_fen + self.network_fen
        if shares != self.charge_fen:
            raise InvalidValue(
                "charge_fen",
                self.charge_fen,
                f"provider + platform + network = {shares}",
                f"提供方 + 平台 + 网络 = {shares}",
            )
        if self.charge_fen + self.refund_fen != self.escrow_fen:
            raise InvalidValue(
                "refund_fen",
                self.refund_fen,
                f"escrow - charge = {self.escrow_fen - self.charge_fen}",
                f"托管 - 收费 = {self.escrow_fen - self.charge_fen}",
            )
        if self.sla_credit_fen > self.provider_fen:
            raise InvalidValue(
                "sla_credit_fen",
                self.sla_credit_fen,
                f"at most the provider's {self.provider_fen}",
                f"不超过提供方所得 {self.provider_fen}",
            )

    @property
    def provider_net_fen(self) -> int:
        """What the provider keeps: its share less the SLA credit it pays."""
        return self.provider_fen - self.sla_credit_fen


def settle(
    escrow_fen: int,
    breakdown: PriceBreakdown,
    planned_device_s: float,
    used_device_s: float,
    outcome: Outcome,
    deadline_missed: bool,
    rules: PricingRules,
) -> Settlement:
    """Divide `escrow_fen` by the rules in the module docstring."""
    escrow = fen("escrow_fen", escrow_fen)
    planned = exact("planned_device_s", planned_device_s, low=Decimal(0))
    if planned == 0:
        raise InvalidValue("planned_device_s", planned_device_s, "> 0", "大于 0")
    used = exact("used_device_s", used_device_s, low=Decimal(0))
    outcome = Outcome(outcome)
    if outcome is Outcome.SYSTEM_ERROR:
        charge = 0
    else:
        ran = min(Fraction(1), used / planned)
        charge = min(escrow, round_fen(breakdown.total_fen * ran))
    provider, platform, network = split(charge, breakdown)
    credit = 0
    if deadline_missed:
        credit = min(provider, round_fen(Fraction(charge * rules.sla_credit_bp, BP_PER_UNIT)))
    return Settlement(
        charge_fen=charge,
        provider_fen=provider,
        platform_fen=platform,
        network_fen=network,
        sla_credit_fen=credit,
        refund_fen=escrow - charge,
        escrow_fen=escrow,
    )
