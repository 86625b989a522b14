"""suanli.ledger — double-entry bookkeeping in integer fen (分).

Pure: no I/O, no clock. Every movement of money is a `Transaction` of `Posting`s that sum to
exactly zero; anything else is refused with `UnbalancedTransaction`. Sign convention: a posting
adds its amount to its account's balance (positive = the balance grows), and `balances()` is the
plain sum per account, so the balances of all accounts always sum to zero.

Accounts:
- `wallet(consumer_id)` = 'wallet:<id>': the consumer's spendable money (>= 0 when the builders
  are used as documented).
- `escrow(consumer_id)` = 'escrow:<id>': money held for the consumer's accepted orders.
- `receivable(provider_id)` = 'receivable:<id>': owed to the provider until paid out.
- `PLATFORM_REVENUE` = 'platform:revenue': the platform's fees.
- `NETWORK_OPERATOR` = 'network:operator': the network operator's transfer charges.
- `SLA_CREDITS` = 'platform:sla-credits': a clearing account that SLA credits pass through
  from the provider's receivable to the consumer's wallet; its balance is always 0.
- `voucher(voucher_id)` = 'voucher:<id>': what is left of a compute voucher (算力券), >= 0.
- `VOUCHERS_ISSUED` = 'vouchers:issued': the voucher issuer's side (negative by what it funded).
- `EXTERNAL` = 'external:bank': the world outside. Top-ups come from it and payouts go to it, so
  `-balance(EXTERNAL) == top-ups - payouts`.

`never_negative(account)` is true for wallets, escrow, receivables and vouchers: no transaction
may leave one of them below zero. With vouchers, `-(balance(EXTERNAL) + balance(VOUCHERS_ISSUED))`
is the sum of every other balance.

Builders: `top_up`, `hold` (vouchers first, then the wallet -> escrow), `issue_voucher`,
`expire_voucher`, `settle` (escrow -> provider / platform / network shares, the refund back to
vouchers and the wallet, SLA credit to the wallet, from a `Settlement`: any value with the
shares' fields, such as `suanli.market.Settlement`; the ledger imports nothing from the
market), `payout`.
"""

from suanli.ledger.book import (
    CNY,
    MoneyNotConserved,
    Posting,
    Transaction,
    UnbalancedTransaction,
    balances,
    check_conservation,
)
from suanli.ledger.entries import (
    EXTERNAL,
    NETWORK_OPERATOR,
    PLATFORM_REVENUE,
    SLA_CREDITS,
    VOUCHERS_ISSUED,
    escrow,
    expire_voucher,
    hold,
    issue_voucher,
    never_negative,
    payout,
    receivable,
    settle,
    top_up,
    voucher,
    wallet,
)

__all__ = [
    "CNY",
    "EXTERNAL",
    "NETWORK_OPERATOR",
    "PLATFORM_REVENUE",
    "SLA_CREDITS",
    "VOUCHERS_ISSUED",
    "MoneyNotConserved",
    "Posting",
    "Transaction",
    "UnbalancedTransaction",
    "balances",
    "check_conservation",
    "escrow",
    "expire_voucher",
    "hold",
    "issue_voucher",
    "never_negative",
    "payout",
    "receivable",
    "settle",
    "top_up",
    "voucher",
    "wallet",
]
