"""Compute vouchers (算力券) on the command line.

`suanli admin vouchers issue|list|expire` work on the database directly, as the operator
(like `admin credit`); `vouchers_app`'s `suanli vouchers` lists, over the API, the vouchers a
consumer may spend (or every voucher, with an operator token)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer
from rich.table import Table

from suanli.cli_client import (
    CaOpt,
    Client,
    JsonOpt,
    ServerOpt,
    TokenOpt,
    duration_s,
    handles_errors,
    open_sessions,
    out,
    print_json,
)

app = typer.Typer(help="Compute vouchers (算力券). 算力券：发放、查看、到期回收。")
vouchers_app = typer.Typer()


def _expiry(expires: str) -> datetime:
    """An RFC 3339 time, or a lifetime from now (90d, 12h, 3600s)."""
    from suanli.errors import InvalidValue

    try:
        found = datetime.fromisoformat(expires)
    except ValueError:
        return datetime.now(UTC) + timedelta(seconds=duration_s("expires", expires))
    if found.tzinfo is None:
        raise InvalidValue(
            "expires",
            expires,
            "a time with its zone, e.g. 2026-12-31T16:00:00+00:00",
            "带时区的时间",
        )
    return found


def _table(rows: list[dict[str, Any]]) -> None:
    table = Table(title="Vouchers 算力券")
    for column in (
        "Id",
        "State 状态",
        "Face 面值 fen",
        "Left 余额 fen",
        "Expires 到期",
        "Consumers 使用方",
        "Groups 组",
    ):
        table.add_column(column)
    for v in rows:
        table.add_row(
            v["id"],
            v["state"],
            str(v["face"]["fen"]),
            str(v["left"]["fen"]),
            v["expires_at"],
            ", ".join(v["consumers"]),
            ", ".join(v["groups"]),
        )
    out.print(table)


def _operator(session: Any, issuer: str | None) -> Any:
    """The operator principal the command acts as: `issuer`, else the first operator."""
    from sqlalchemy import select

    from suanli.services.core import NotFound, Role
    from suanli.store.models import Principal

    query = select(Principal).where(Principal.role == Role.OPERATOR.value)
    if issuer:
        query = query.where(Principal.id == issuer)
    found = session.scalars(query.order_by(Principal.created_at, Principal.id).limit(1)).first()
    if found is None:
        raise NotFound(
            Role.OPERATOR.value,
            issuer or "(none: create one with 'suanli admin token create --role operator')",
        )
    return found


@app.command("issue")
@handles_errors
def issue(
    fen: Annotated[int, typer.Option(help="Face value in fen / 面值（分）")],
    expires: Annotated[
        str, typer.Option(help="Expiry: RFC 3339, or a lifetime such as 90d / 到期时间或有效期")
    ],
    consumer: Annotated[
        list[str] | None, typer.Option(help="Eligible consumer id (repeat) / 可用使用方")
    ] = None,
    group: Annotated[
        list[str] | None, typer.Option(help="Eligible group id (repeat) / 可用组")
    ] = None,
    memo: Annotated[str, typer.Option(help="Memo / 备注")] = "",
    issuer: Annotated[
        str | None, typer.Option(help="Operator id issuing it (default: the first) / 发放者")
    ] = None,
    db: Annotated[str | None, typer.Option(help="Database URL")] = None,
    home: Annotated[str | None, typer.Option(help="Data directory")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Issue a voucher to consumers and/or groups. 发放算力券。"""
    from suanli.services import vouchers

    when = _expiry(expires)
    with open_sessions(db, home).begin() as session:
        row = vouchers.issue(
            session, _operator(session, issuer), fen, when, consumer or [], group or [], memo
        )
        shown = vouchers.read(row, row.face_fen)
    if as_json:
        print_json(shown)
    else:
        out.print(
            f"{shown['id']}: {fen} fen until {shown['expires_at']} / 已发放 {fen} 分", markup=False
        )


@app.command("list")
@handles_errors
def listing(
    state: Annotated[str | None, typer.Option(help="ACTIVE|EXPIRED / 状态")] = None,
    db: Annotated[str | None, typer.Option(help="Database URL")] = None,
    home: Annotated[str | None, typer.Option(help="Data directory")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Every voucher, with what is left on it. 列出算力券。"""
    from suanli.services import vouchers
    from suanli.store.models import Principal

    operator = Principal(id="admin", name="admin (database)", role="operator")
    with open_sessions(db, home).begin() as session:
        rows = vouchers.list_vouchers(session, operator, state)
    if as_json:
        print_json({"vouchers": rows})
    else:
        _table(rows)


@app.command("expire")
@handles_errors
def expire(
    db: Annotated[str | None, typer.Option(help="Database URL")] = None,
    home: Annotated[str | None, typer.Option(help="Data directory")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Expire every voucher past its expiry; what is left returns to the issuer. 到期回收。"""
    from suanli.services import vouchers

    with open_sessions(db, home).begin() as session:
        swept = vouchers.expire(session, "admin")
        rows = [vouchers.read(v, 0) for v in swept]
    if as_json:
        print_json({"vouchers": rows})
    else:
        out.print(f"{len(rows)} voucher(s) expired / 已回收 {len(rows)} 张", markup=False)


@vouchers_app.command("vouchers")
@handles_errors
def mine(
    server: ServerOpt,
    token: TokenOpt,
    state: Annotated[str | None, typer.Option(help="ACTIVE|EXPIRED / 状态")] = None,
    as_json: JsonOpt = False,
    ca: CaOpt = None,
) -> None:
    """The vouchers you may spend (spent before your wallet). 我的算力券。"""
    params = {"state": state} if state else {}
    found = Client(server, token, ca).call("GET", "/v1/vouchers", params=params)
    if as_json:
        print_json(found)
    else:
        _table(found["vouchers"])
