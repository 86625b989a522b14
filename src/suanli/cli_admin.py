"""`suanli admin`: administration on the database directly (bootstrapping, and revoking a token
everywhere within a second): `admin token create|list|revoke`, and an operator's money moves
`admin credit` (a top-up) and `admin payout`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from suanli import cli_groups, cli_payouts, cli_vouchers
from suanli.cli_client import (
    JsonOpt,
    duration_s,
    err,
    handles_errors,
    open_sessions,
    out,
    print_json,
)

app = typer.Typer(help="Administration on the database directly. 直接操作数据库的管理命令。")
token_app = typer.Typer(help="Bearer tokens. 访问令牌。")
app.add_typer(token_app, name="token")
app.add_typer(cli_payouts.app, name="payouts")
app.add_typer(cli_vouchers.app, name="vouchers")
app.add_typer(cli_groups.app, name="groups")


def _admin_money(
    move: str, ident: str, fen: int, db: str | None, home: str | None, as_json: bool
) -> None:
    """An operator's top-up (`credit`) or payout, straight on the database."""
    from suanli.services import market
    from suanli.store.models import Principal

    operator = Principal(id="admin", name="admin (database)", role="operator")
    with open_sessions(db, home).begin() as session:
        left = getattr(market, move)(session, operator, ident, fen)
    account = "wallet" if move == "credit" else "receivable"
    if as_json:
        print_json({"id": ident, "balance": market.money(left)})
    else:
        out.print(f"{ident}: {account} {left} fen", markup=False)


@token_app.command("create")
@handles_errors
def token_create(
    role: Annotated[str, typer.Option(help="operator|provider|consumer / 角色")],
    name: Annotated[str, typer.Option(help="Owner name / 所有者名称")],
    expires_in: Annotated[
        str | None, typer.Option(help="Lifetime, e.g. 3600s, 90m, 12h, 90d / 有效期")
    ] = None,
    db: Annotated[str | None, typer.Option(help="Database URL")] = None,
    home: Annotated[str | None, typer.Option(help="Data directory")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a principal and print its token once. 创建令牌（仅显示一次）。"""
    from suanli.errors import InvalidValue
    from suanli.services.core import Role, create_token

    try:
        chosen = Role(role)
    except ValueError:
        raise InvalidValue(
            "role",
            role,
            "one of operator, provider, consumer",
            "operator、provider、consumer 之一",
        ) from None
    lifetime = None if expires_in is None else duration_s("expires_in", expires_in)
    with open_sessions(db, home).begin() as session:
        principal, token = create_token(session, chosen, name, expires_in_s=lifetime)
    if as_json:
        print_json({"id": principal.id, "role": chosen.value, "token": token})
    else:
        out.print(f"{chosen.value} {principal.id}: {token}", markup=False)
        err.print("store it now: it is shown only once / 请立即保存：仅显示一次")


@token_app.command("list")
@handles_errors
def token_list(
    db: Annotated[str | None, typer.Option(help="Database URL")] = None,
    home: Annotated[str | None, typer.Option(help="Data directory")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Every token, without its secret. 列出令牌（不含令牌本身）。"""
    from suanli.services.core import list_tokens
    from suanli.services.views import token_read

    with open_sessions(db, home)() as session:
        rows = [token_read(t, p).model_dump(mode="json") for t, p in list_tokens(session)]
    if as_json:
        print_json(rows)
        return
    table = Table(title="Tokens 令牌")
    for column in (
        "Token 令牌",
        "Principal 主体",
        "Role 角色",
        "Name 名称",
        "Scope 范围",
        "Created 创建",
        "Expires 到期",
        "Revoked 吊销",
    ):
        table.add_column(column)
    for r in rows:
        table.add_row(
            r["id"],
            r["principal"],
            r["role"],
            r["name"],
            f"agent of {r['site_id']}" if r["site_id"] else "all",
            r["created_at"][:19],
            (r["expires_at"] or "never")[:19],
            (r["revoked_at"] or "")[:19],
        )
    out.print(table)


@token_app.command("revoke")
@handles_errors
def token_revoke(
    token_id: Annotated[str, typer.Argument(help="Token id (tok-...) / 令牌 id")],
    db: Annotated[str | None, typer.Option(help="Database URL")] = None,
    home: Annotated[str | None, typer.Option(help="Data directory")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Revoke a token: every server refuses it within a second. 吊销令牌。"""
    from suanli.services.core import aware, revoke_token

    with open_sessions(db, home).begin() as session:
        row = revoke_token(session, token_id, "admin")
        revoked_at = aware(row.revoked_at or row.created_at).isoformat()
    if as_json:
        print_json({"id": token_id, "revoked_at": revoked_at})
    else:
        out.print(f"{token_id} revoked at {revoked_at} / 已吊销", markup=False)


@app.command("credit")
@handles_errors
def admin_credit(
    consumer: Annotated[str, typer.Option(help="Consumer id / 使用方 id")],
    fen: Annotated[int, typer.Option(help="Amount in fen / 金额（分）")],
    db: Annotated[str | None, typer.Option(help="Database URL")] = None,
    home: Annotated[str | None, typer.Option(help="Data directory")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Top up a consumer's wallet. 充值。"""
    _admin_money("credit", consumer, fen, db, home, as_json)


@app.command("payout")
@handles_errors
def admin_payout(
    provider: Annotated[str, typer.Option(help="Provider id / 提供方 id")],
    fen: Annotated[int, typer.Option(help="Amount in fen / 金额（分）")],
    db: Annotated[str | None, typer.Option(help="Database URL")] = None,
    home: Annotated[str | None, typer.Option(help="Data directory")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Pay a provider out of its receivable. 结算付款。"""
    _admin_money("payout", provider, fen, db, home, as_json)
