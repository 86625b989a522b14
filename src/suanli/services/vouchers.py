"""Compute vouchers (算力券): issued by the operator, spent before the wallet, swept on expiry.

A voucher is a `VoucherRow` (face value, expiry, who may spend it: `eligible.consumers` ids
and/or `eligible.groups` ids, matched against `Principal.group_id`) and a ledger account,
`voucher:<id>`, holding what is left of it (never negative). The issuer's side is one account,
`ledger.VOUCHERS_ISSUED` ('vouchers:issued'), which, like 'external:bank', goes negative: by
the face value of every voucher issued, less what expired vouchers gave back. So
`-balance('vouchers:issued')` is what the issuer has funded (left on vouchers, held in escrow,
or already paid to providers, the platform and the network).

* `issue`: the operator issues a voucher (ledger: vouchers:issued -> voucher:<id>, event
  `voucher.issued`);
* `draw`: an order's escrow is funded from the consumer's eligible, ACTIVE, unexpired vouchers
  first (earliest expiry first), then the wallet; the balances are locked before they are read
  (`market.lock_balances`: the money stream's head, then the accounts in sorted order, as
  every movement of money) and the hold is refused when they cannot cover it;
* `spendable`: what each consumer could spend now (vouchers and wallet), read in a few queries
  for a whole scheduling pass;
* `expire`: the sweep: every ACTIVE voucher past its expiry becomes EXPIRED and what is left
  returns to the issuer (ledger: voucher:<id> -> vouchers:issued, event `voucher.expired`).
  Spending reads only unexpired vouchers, so a voucher past its expiry is never spent even
  before the sweep runs; a refund to a voucher past its expiry goes to the issuer
  (`market.settle_task`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from suanli import ledger
from suanli.errors import InvalidValue
from suanli.services import market
from suanli.services.core import (
    Actor,
    NotFound,
    Role,
    append_event,
    aware,
    new_id,
    now,
    require,
)
from suanli.store.models import GroupRow, Principal, VoucherRow

ACTIVE, EXPIRED = "ACTIVE", "EXPIRED"
MAX_ELIGIBLE = 1000  # consumers or groups named on one voucher


def _ids(field: str, values: Iterable[Any] | None) -> list[str]:
    found = sorted({str(v).strip() for v in (values or []) if str(v).strip()})
    if len(found) > MAX_ELIGIBLE:
        raise InvalidValue(
            field, len(found), f"at most {MAX_ELIGIBLE} ids", f"至多 {MAX_ELIGIBLE} 个"
        )
    return found


def issue(
    session: Session,
    who: Actor,
    fen: int,
    expires_at: datetime,
    consumers: Iterable[str] | None = None,
    groups: Iterable[str] | None = None,
    memo: str = "",
) -> VoucherRow:
    """The operator issues a voucher of `fen`, spendable until `expires_at` by the named
    consumers and the members of the named groups (at least one of them)."""
    require(who, Role.OPERATOR)
    market.amount("fen", fen)
    moment = now(session)
    expires_at = aware(expires_at)
    if expires_at <= moment:
        raise InvalidValue(
            "expires_at",
            expires_at.isoformat(),
            f"a time after now ({moment.isoformat()})",
            f"晚于当前时间（{moment.isoformat()}）",
        )
    eligible = {"consumers": _ids("consumers", consumers), "groups": _ids("groups", groups)}
    if not eligible["consumers"] and not eligible["groups"]:
        raise InvalidValue(
            "consumers",
            [],
            "at least one eligible consumer id or group id (--consumer / --group)",
            "至少一个可用的使用方 id 或组 id（--consumer / --group）",
        )
    if eligible["consumers"]:
        known = set(
            session.scalars(
                select(Principal.id).where(
                    Principal.id.in_(eligible["consumers"]), Principal.role == Role.CONSUMER.value
                )
            )
        )
        for ident in eligible["consumers"]:
            if ident not in known:
                raise NotFound(Role.CONSUMER.value, ident)
    if eligible["groups"]:
        known = set(session.scalars(select(GroupRow.id).where(GroupRow.id.in_(eligible["groups"]))))
        for ident in eligible["groups"]:
            if ident not in known:
                raise NotFound("group", ident)
    if len(memo) > 500 or "\x00" in memo:
        raise InvalidValue("memo", memo[:40], "at most 500 characters, no NUL", "至多 500 字符")
    row = VoucherRow(
        id=new_id("voucher"),
        issuer_id=who.id,
        face_fen=fen,
        expires_at=expires_at,
        eligible=eligible,
        state=ACTIVE,
        memo=memo,
        created_at=moment,
        expired_at=None,
    )
    session.add(row)
    session.flush()
    market.record(session, ledger.issue_voucher(new_id("tx"), row.id, fen), who.id)
    append_event(
        session,
        "voucher.issued",
        row.id,
        who.id,
        {"fen": fen, "expires_at": expires_at.isoformat(), **eligible},
    )
    return row


def _eligible(voucher: VoucherRow, consumer_id: str, group_id: str | None) -> bool:
    eligible = voucher.eligible or {}
    return consumer_id in (eligible.get("consumers") or []) or (
        group_id is not None and group_id in (eligible.get("groups") or [])
    )


def eligible_for(session: Session, consumer_id: str, voucher_id: str) -> bool:
    """Whether the consumer may spend (and read the statement of) this voucher."""
    voucher = session.get(VoucherRow, voucher_id)
    principal = session.get(Principal, consumer_id)
    return (
        voucher is not None
        and principal is not None
        and _eligible(voucher, consumer_id, principal.group_id)
    )


def usable(session: Session, consumer_ids: Iterable[str], moment: datetime) -> dict[str, list[str]]:
    """Consumer -> the ids of the ACTIVE vouchers it may spend at `moment` (unexpired),
    earliest expiry first: two queries, whatever the number of consumers."""
    wanted = sorted(set(consumer_ids))
    found: dict[str, list[str]] = {c: [] for c in wanted}
    if not wanted:
        return found
    vouchers = [
        v
        for v in session.scalars(
            select(VoucherRow)
            .where(VoucherRow.state == ACTIVE, VoucherRow.expires_at > moment)
            .order_by(VoucherRow.expires_at, VoucherRow.id)
        )
        if aware(v.expires_at) > moment
    ]
    if not vouchers:
        return found
    groups: dict[str, str | None] = {}
    for i in range(0, len(wanted), market.CHUNK):
        groups.update(
            (a, b)
            for a, b in session.execute(
                select(Principal.id, Principal.group_id).where(
                    Principal.id.in_(wanted[i : i + market.CHUNK])
                )
            )
        )
    for consumer in wanted:
        found[consumer] = [v.id for v in vouchers if _eligible(v, consumer, groups.get(consumer))]
    return found


def spendable(
    session: Session, consumer_ids: Iterable[str], moment: datetime
) -> dict[str, tuple[int, int]]:
    """Consumer -> (fen left on its usable vouchers, fen in its wallet), read without locks
    (the pass's screen; `draw` locks and checks again when the order opens)."""
    wanted = sorted(set(consumer_ids))
    vouchers = usable(session, wanted, moment)
    accounts = [ledger.wallet(c) for c in wanted]
    accounts += sorted({ledger.voucher(v) for ids in vouchers.values() for v in ids})
    held = balances(session, accounts)
    return {
        c: (
            sum(held.get(ledger.voucher(v), 0) for v in vouchers[c]),
            held.get(ledger.wallet(c), 0),
        )
        for c in wanted
    }


def balances(session: Session, accounts: list[str]) -> dict[str, int]:
    """The balances of these accounts (0 for one never posted to), in chunked queries."""
    from suanli.store.models import AccountBalance

    found: dict[str, int] = {}
    for i in range(0, len(accounts), market.CHUNK):
        for account, fen in session.execute(
            select(AccountBalance.account, AccountBalance.balance_fen).where(
                AccountBalance.account.in_(accounts[i : i + market.CHUNK])
            )
        ):
            found[account] = int(fen)
    return found


def draw(
    session: Session,
    consumer_id: str,
    maximum: int,
    moment: datetime,
    refuse: Callable[[int, int], Exception] = market.InsufficientBalance,
) -> list[tuple[str, int]]:
    """Lock the consumer's usable vouchers, wallet and escrow (`market.lock_balances`, the one
    lock order) and say what funds an escrow of `maximum`: [(voucher id, fen)] drawn from the
    vouchers, earliest expiry first (the wallet gives the rest). Raises `refuse(needed,
    available)` (402) when vouchers and wallet together hold less."""
    ids = usable(session, [consumer_id], moment)[consumer_id]
    wallet = ledger.wallet(consumer_id)
    held = market.lock_balances(
        session, [wallet, ledger.escrow(consumer_id), *(ledger.voucher(v) for v in ids)]
    )
    available = held[wallet] + sum(held[ledger.voucher(v)] for v in ids)
    if maximum > available:
        raise refuse(maximum, available)
    drawn: list[tuple[str, int]] = []
    left = maximum
    for ident in ids:
        part = min(left, held[ledger.voucher(ident)])
        if part > 0:
            drawn.append((ident, part))
            left -= part
    return drawn


def any_due(session: Session, moment: datetime | None = None) -> bool:
    """Whether the sweep has a voucher to expire (a cheap read before a write is opened)."""
    moment = aware(moment or now(session))
    found = session.scalar(
        select(VoucherRow.id)
        .where(VoucherRow.state == ACTIVE, VoucherRow.expires_at <= moment)
        .limit(1)
    )
    return found is not None


def expire(session: Session, actor: str, moment: datetime | None = None) -> list[VoucherRow]:
    """The sweep: every ACTIVE voucher whose expiry is at or before `moment` (default now)
    becomes EXPIRED and what is left on it returns to the issuer (`ledger.expire_voucher`);
    the vouchers it expired. Idempotent (an expired voucher is left alone)."""
    moment = aware(moment or now(session))
    due = list(
        session.scalars(
            select(VoucherRow)
            .where(VoucherRow.state == ACTIVE, VoucherRow.expires_at <= moment)
            .order_by(VoucherRow.id)
            .with_for_update()
        )
    )
    if not due:
        return []
    accounts = [ledger.voucher(v.id) for v in due]
    held = market.lock_balances(session, accounts)
    for voucher in due:
        left = held[ledger.voucher(voucher.id)]
        if left > 0:
            market.record(session, ledger.expire_voucher(new_id("tx"), voucher.id, left), actor)
        voucher.state = EXPIRED
        voucher.expired_at = moment
        append_event(session, "voucher.expired", voucher.id, actor, {"returned_fen": left})
    return due


def expire_now(session: Session, who: Actor) -> list[VoucherRow]:
    """The operator runs the sweep (`suanli admin vouchers expire`, `POST /v1/vouchers/expire`)."""
    require(who, Role.OPERATOR)
    return expire(session, who.id)


def read(voucher: VoucherRow, left_fen: int) -> dict[str, Any]:
    """How a voucher leaves the API and the CLI."""
    eligible = voucher.eligible or {}
    return {
        "id": voucher.id,
        "issuer": voucher.issuer_id,
        "face": market.money(voucher.face_fen),
        "left": market.money(left_fen),
        "expires_at": aware(voucher.expires_at).isoformat(),
        "state": voucher.state,
        "consumers": list(eligible.get("consumers") or []),
        "groups": list(eligible.get("groups") or []),
        "memo": voucher.memo,
        "account": ledger.voucher(voucher.id),
        "created_at": aware(voucher.created_at).isoformat(),
        "expired_at": None if voucher.expired_at is None else aware(voucher.expired_at).isoformat(),
    }


def list_vouchers(session: Session, who: Actor, state: str | None = None) -> list[dict[str, Any]]:
    """The operator's view: every voucher; a consumer's: the vouchers it may spend (any
    state), newest first, each with what is left on it."""
    require(who, Role.OPERATOR, Role.CONSUMER)
    query = select(VoucherRow).order_by(VoucherRow.created_at.desc(), VoucherRow.id.desc())
    if state:
        if state.upper() not in (ACTIVE, EXPIRED):
            raise InvalidValue("state", state, "ACTIVE or EXPIRED", "ACTIVE 或 EXPIRED")
        query = query.where(VoucherRow.state == state.upper())
    rows = list(session.scalars(query))
    if who.role == Role.CONSUMER.value:
        principal = session.get(Principal, who.id)
        group = principal.group_id if principal is not None else None
        rows = [v for v in rows if _eligible(v, who.id, group)]
    left = balances(session, [ledger.voucher(v.id) for v in rows])
    return [read(v, left.get(ledger.voucher(v.id), 0)) for v in rows]
