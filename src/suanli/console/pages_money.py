"""Money pages: the principal's accounts and balances, money held in escrow, the statement of one
account (newest first, with a CSV download) and the state of the audit (incremental, from the
stored checkpoint: see `market.audit`).

Everything goes through the services with the API's checks (`readmodels.visible_accounts` and
`escrow_held`, `market.balance`, `market.statement`, `market.audit`): a principal sees only its
own accounts, the operator any account in the ledger, exactly as `/v1/balance` and
`/v1/statement` answer.
"""

from __future__ import annotations

import csv
import io
import re
from datetime import datetime
from decimal import Decimal
from typing import Any

from fastapi import Query, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session

from suanli.console import i18n
from suanli.console.pages_statements import money_panel
from suanli.console.web import Console, problem
from suanli.errors import SuanliError
from suanli.services import market, readmodels
from suanli.services.core import Actor, Role, aware

STATEMENT_ROWS = 500  # the page shows the newest lines; the CSV has them all
CSV_COLUMNS = (
    "at",
    "transaction",
    "kind",
    "order",
    "memo",
    "amount_fen",
    "amount_yuan",
    "balance_fen",
    "balance_yuan",
)

MESSAGES: dict[str, tuple[str, str]] = {  # key: (English, 中文)
    "money.escrow": ("Held in escrow", "托管中"),
    "money.escrow_consumer": (
        "Reserved from your wallet for accepted orders until they settle.",
        "已接受订单在结算前从钱包中冻结的金额。",
    ),
    "money.escrow_provider": (
        "Held for your open orders; you are paid when each task ends.",
        "您的未结订单的托管金额；任务结束后结算给您。",
    ),
    "money.escrow_operator": (
        "Held in all consumers' escrow accounts, platform-wide.",
        "全平台所有使用方托管账户中的金额。",
    ),
    "money.open_orders": ("Open orders", "未结订单"),
    "money.kind": ("Kind", "类型"),
    "money.transaction": ("Transaction", "交易"),
    "money.order": ("Order", "订单"),
    "money.running": ("Balance after", "变动后余额"),
    "money.show": ("Show", "显示"),
    "money.empty": ("No postings on this account yet.", "该账户暂无记账。"),
    "money.newest": ("Newest first.", "按时间倒序。"),
    "money.truncated": (
        "Showing the newest {shown} of {total} lines; the CSV has them all.",
        "显示最新 {shown} 条（共 {total} 条）；CSV 含全部记录。",
    ),
    "money.audit_help": (
        "Every event is hash-chained; every posting must match its money.posted event and "
        "balance to zero; replayed in order, no wallet, escrow or receivable ever goes below "
        "zero and each order settles once. Checked from the last checkpoint on each visit.",
        "所有事件以哈希链串联，每笔记账须与其 money.posted 事件一致且借贷平衡；按序重放时钱包、"
        "托管与应收款从不为负，每个订单只结算一次。每次访问从上次检查点继续校验。",
    ),
    "money.audit_events": ("Events checked", "已校验事件"),
    "money.audit_transactions": ("Transactions checked", "已校验交易"),
    "money.kind.top-up": ("top-up", "充值"),
    "money.kind.hold": ("hold in escrow", "托管冻结"),
    "money.kind.settle": ("settlement", "结算"),
    "money.kind.payout": ("payout", "付款"),
    "money.acct.wallet": ("Wallet", "钱包"),
    "money.acct.escrow": ("Escrow", "托管"),
    "money.acct.receivable": ("Receivable", "应收款"),
    "money.acct.platform:revenue": ("Platform revenue", "平台收入"),
    "money.acct.network:operator": ("Network operator", "网络运营方"),
    "money.acct.platform:sla-credits": ("SLA credits (pass-through)", "SLA 赔付（过账）"),
    "money.acct.external:bank": ("Bank (outside the platform)", "银行（平台外）"),
    "money.acct.other": ("Account", "账户"),
}
i18n.MESSAGES.update(MESSAGES)


def account_label(account: str) -> str:
    """The message key naming an account: its kind for party accounts, else the account."""
    kind = account.split(":", 1)[0]
    if kind in ("wallet", "escrow", "receivable"):
        return f"money.acct.{kind}"
    key = f"money.acct.{account}"
    return key if key in i18n.MESSAGES else "money.acct.other"


def audit(session: Session, who: Actor) -> dict[str, Any]:
    """The books' state: intact, or the first breach (a broken event or posting, a balance
    below zero, an order settled twice), named to the operator only (it may name another
    party's account). Incremental: `market.audit` resumes from the stored checkpoint and moves
    it forward, so a page load costs what was appended since the last check; it writes, so it
    runs in a write unit of its own."""
    result = market.audit(session)
    problem = result.problem
    if problem is not None and readmodels.viewer(who).role != Role.OPERATOR.value:
        problem = "the operator has the details / 详情见运营方"
    return {
        "ok": result.problem is None,
        "problem": problem,
        "events": result.events,
        "transactions": result.transactions,
    }


def _yuan(fen: int) -> str:
    return f"{(Decimal(fen) / 100).quantize(Decimal('0.01'))}"


def statement_csv(lines: list[dict[str, Any]]) -> str:
    """The statement as CSV (oldest first, like a bank statement), UTF-8 with a BOM."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for line in lines:
        amount, running = int(line["amount"]["fen"]), int(line["balance"]["fen"])
        writer.writerow(
            [
                line["at"],
                line["transaction"],
                line["kind"],
                line["order"] or "",
                line["memo"],
                amount,
                _yuan(amount),
                running,
                _yuan(running),
            ]
        )
    return "\ufeff" + out.getvalue()


def csv_filename(account: str) -> str:
    """statement-<account>.csv, with characters a file name cannot hold (':') made '-'."""
    return "statement-" + re.sub(r"[^A-Za-z0-9._-]", "-", account) + ".csv"


def install(console: Console) -> None:
    router = console.router

    @router.get("/money", response_class=HTMLResponse)
    async def money_page(request: Request, account: str = Query("", max_length=160)) -> Response:
        def work(session: Session, who: Actor) -> dict[str, Any]:
            accounts = readmodels.visible_accounts(session, who)
            chosen = account.strip() or accounts[0]
            lines = market.statement(session, who, chosen, None, None)  # 404s what is not yours
            for line in lines:
                line["at_time"] = aware(datetime.fromisoformat(line["at"]))
            escrow = readmodels.escrow_held(session, who)
            return {
                "who": readmodels.viewer(who),
                "balances": [(a, account_label(a), market.balance(session, a)) for a in accounts],
                "own": set(market.accounts_of(who)),
                "account": chosen,
                "lines": list(reversed(lines))[:STATEMENT_ROWS],
                "total_lines": len(lines),
                "held": escrow.held_fen,
                "open_orders": escrow.open_orders,
                "kinds": {key for key in i18n.MESSAGES if key.startswith("money.kind.")},
                "panel": money_panel(session, who),  # budgets and alerts, payout statements
            }

        try:
            found = await console.act(request, False, work)
            found["audit"] = await console.act(request, True, audit)
        except SuanliError as exc:
            return await problem(console, request, exc)
        return console.page(request, "money.html", found.pop("who"), **found)

    @router.get("/money/statement.csv")
    async def statement_download(
        request: Request, account: str = Query(min_length=1, max_length=160)
    ) -> Response:
        try:
            lines = await console.act(
                request,
                False,
                lambda session, who: market.statement(session, who, account, None, None),
            )
        except SuanliError as exc:
            return await problem(console, request, exc)
        return Response(
            statement_csv(lines).encode("utf-8"),
            media_type="text/csv; charset=utf-8",
            headers={
                "Content-Disposition": f'attachment; filename="{csv_filename(account)}"',
                "Cache-Control": "no-store",
            },
        )
