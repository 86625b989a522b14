"""suanli.market — pricing rules, quotes' price breakdown, revenue share and settlement.

Pure: no I/O, no clock. Money is an `int` of fen (分); rates are `Decimal` or integer basis
points; arithmetic is exact (`Fraction`) and each money amount is rounded once, half to even.
`price()` turns a posted price into a `PriceBreakdown`; `split()` shares a charge between the
provider (compute price), the platform (fee) and the network operator (transfer price);
`settle()` divides an order's escrow into charge, shares, SLA credit and refund;
`voucher_refunds()` says which part of a refund goes back to the vouchers that funded it.
"""

from suanli.market.exact import BP_PER_UNIT, round_fen
from suanli.market.pricing import (
    DEFAULT_UTILISATION_CURVE,
    PriceBreakdown,
    PricingRules,
    price,
    split,
    tou_multiplier,
)
from suanli.market.settlement import Outcome, Settlement, settle, voucher_refunds

__all__ = [
    "BP_PER_UNIT",
    "DEFAULT_UTILISATION_CURVE",
    "Outcome",
    "PriceBreakdown",
    "PricingRules",
    "Settlement",
    "price",
    "round_fen",
    "settle",
    "split",
    "tou_multiplier",
    "voucher_refunds",
]
