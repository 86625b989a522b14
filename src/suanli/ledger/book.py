"""Postings, balanced transactions, balances and the conservation check.

Owns the double-entry rule: a `Transaction` cannot exist unless its postings are non-empty,
non-zero, in one currency, and sum to exactly zero (as beancount refuses an unbalanced
transaction; the check is not skippable). Sign convention: a posting's amount is added to its
account's balance, so a positive amount makes the balance grow and `balances()` is the plain sum
of each account's postings. Amounts are `int` fen; bool and float are refused (`fen()`, the one
rule for a money amount, which `market.exact` uses too).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from suanli.errors import InvalidValue, SuanliError

CNY = "CNY"


class UnbalancedTransaction(SuanliError):
    """A transaction refused: empty, a zero posting, mixed currencies, or a non-zero sum."""

    def __init__(self, tx_id: str, sum_fen: int, reason: str, reason_zh: str) -> None:
        self.tx_id = tx_id
        self.sum_fen = sum_fen
        self.reason = reason
        super().__init__(
            f"transaction '{tx_id}' refused: {reason} (postings sum to {sum_fen} fen)",
            f"交易“{tx_id}”被拒绝：{reason_zh}（分录合计 {sum_fen} 分）",
        )


class MoneyNotConserved(SuanliError):
    """The balances of a ledger do not sum to zero: money was created or destroyed."""

    def __init__(self, sum_fen: int) -> None:
        self.sum_fen = sum_fen
        super().__init__(
            f"ledger balances sum to {sum_fen} fen, expected 0",
            f"账户余额合计 {sum_fen} 分，应为 0",
        )


def fen(field: str, value: object, *, positive: bool = False) -> int:
    """A money amount in fen: an int (bool and float refused), >= 0 (> 0 when `positive`)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidValue(field, value, "a whole number of fen (int)", "以分计的整数")
    if value < (1 if positive else 0):
        bound = "> 0" if positive else ">= 0"
        raise InvalidValue(field, value, f"a whole number of fen {bound}", f"{bound} 的整数分")
    return value


def _text(field: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidValue(field, value, "a non-empty string", "非空字符串")
    return value


@dataclass(frozen=True, slots=True)
class Posting:
    """`amount_fen` added to `account`'s balance (positive: the balance grows)."""

    account: str
    amount_fen: int
    currency: str = CNY

    def __post_init__(self) -> None:
        _text("account", self.account)
        _text("currency", self.currency)
        if isinstance(self.amount_fen, bool) or not isinstance(self.amount_fen, int):
            raise InvalidValue(
                "amount_fen", self.amount_fen, "a whole number of fen (int)", "以分计的整数"
            )


@dataclass(frozen=True, slots=True)
class Transaction:
    """A balanced set of postings with an id, a kind ('top-up', 'hold', ...) and a memo."""

    id: str
    kind: str
    postings: tuple[Posting, ...]
    memo: str = ""

    def __post_init__(self) -> None:
        _text("id", self.id)
        _text("kind", self.kind)
        if not isinstance(self.memo, str):
            raise InvalidValue("memo", self.memo, "a string", "字符串")
        postings = tuple(self.postings)
        object.__setattr__(self, "postings", postings)
        for posting in postings:
            if not isinstance(posting, Posting):
                raise InvalidValue("postings", posting, "Posting values", "Posting 对象")
        total = sum(p.amount_fen for p in postings)
        if not postings:
            raise UnbalancedTransaction(self.id, 0, "it has no postings", "没有分录")
        if any(p.amount_fen == 0 for p in postings):
            zero = next(p.account for p in postings if p.amount_fen == 0)
            raise UnbalancedTransaction(
                self.id, total, f"zero posting to '{zero}'", f"“{zero}”的分录金额为 0"
            )
        currencies = sorted({p.currency for p in postings})
        if len(currencies) > 1:
            mixed = ", ".join(currencies)
            raise UnbalancedTransaction(
                self.id, total, f"mixed currencies {mixed}", f"混合币种 {mixed}"
            )
        if total != 0:
            raise UnbalancedTransaction(
                self.id, total, "postings do not sum to zero", "分录合计不为零"
            )


def balances(transactions: Iterable[Transaction]) -> dict[str, int]:
    """Each account's balance in fen: the sum of its postings (CNY only), keys sorted.

    An account that appeared keeps its key even at 0. A non-CNY posting is refused, since the
    result has no currency of its own."""
    totals: dict[str, int] = {}
    for transaction in transactions:
        for posting in transaction.postings:
            if posting.currency != CNY:
                raise InvalidValue("currency", posting.currency, "CNY", "人民币 CNY")
            totals[posting.account] = totals.get(posting.account, 0) + posting.amount_fen
    return dict(sorted(totals.items()))


def check_conservation(balances: Mapping[str, int]) -> None:
    """Raise `MoneyNotConserved` unless the balances sum to exactly zero."""
    total = sum(balances.values())
    if total != 0:
        raise MoneyNotConserved(total)
