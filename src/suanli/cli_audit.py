"""`suanli audit`: `audit verify` proves the books (the event log, every posting, and a replay of
the ledger); `audit export` writes the events with their hashes as JSON lines."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from suanli.cli_client import (
    err,
    handles_errors,
    open_sessions,
    out,
)

app = typer.Typer(help="The audit trail. 审计。")


@app.command("verify")
@handles_errors
def audit_verify(
    db: Annotated[str | None, typer.Option(help="Database URL")] = None,
    home: Annotated[str | None, typer.Option(help="Data directory")] = None,
    full: Annotated[
        bool,
        typer.Option(
            "--full/--incremental",
            help="Walk from the first event (default), or resume from the last checkpoint "
            "/ 从第一条事件校验（默认），或从上次检查点继续",
        ),
    ] = True,
) -> None:
    """Prove the books: the hash chain, every posting, and a replay of the ledger in which
    no wallet, escrow or receivable goes below zero and each order settles once; exit 1
    naming the first breach. 校验审计链与账本（余额不为负、每单只结算一次）。"""
    from sqlalchemy.orm import Session

    from suanli.services import market
    from suanli.store.db import make_engine

    sessions = open_sessions(db, home)
    if full:
        # one consistent snapshot, without holding up the platform's writers
        engine = sessions.kw["bind"]
        reader = (
            engine.execution_options(isolation_level="REPEATABLE READ")
            if engine.dialect.name == "postgresql"
            else make_engine(engine.url.render_as_string(hide_password=False), reader=True)
        )
        with Session(reader) as session:
            result = market.walk(session, full=True)
        with sessions.begin() as session:
            market.save_checkpoint(session, result)
    else:
        with sessions.begin() as session:
            result = market.audit(session)
    if result.problem is not None:
        err.print(f"audit FAILED / 审计失败: {result.problem}", markup=False)
        raise typer.Exit(1)
    how = "from the first event" if full else f"{result.walked} since the checkpoint"
    out.print(
        f"audit OK: {result.events} events ({how}) and {result.transactions} transactions "
        f"verify; no balance below zero / 审计通过：{result.events} 条事件、"
        f"{result.transactions} 笔交易",
        markup=False,
    )


@app.command("export")
@handles_errors
def audit_export(
    start: Annotated[str | None, typer.Option("--from", help="ISO date-time")] = None,
    end: Annotated[str | None, typer.Option("--to", help="ISO date-time")] = None,
    db: Annotated[str | None, typer.Option(help="Database URL")] = None,
    home: Annotated[str | None, typer.Option(help="Data directory")] = None,
) -> None:
    """Write the events with their hashes as JSON lines. 导出审计记录。"""
    from datetime import datetime

    from sqlalchemy import select

    from suanli.services.core import aware
    from suanli.store.models import EventRow

    low = aware(datetime.fromisoformat(start)) if start else None
    high = aware(datetime.fromisoformat(end)) if end else None
    with open_sessions(db, home)() as session:
        for event in session.scalars(select(EventRow).order_by(EventRow.seq)):
            at = aware(event.at)
            if (low and at < low) or (high and at >= high):
                continue
            sys.stdout.write(
                json.dumps(
                    {
                        "seq": event.seq,
                        "stream": event.stream,
                        "stream_seq": event.stream_seq,
                        "at": at.isoformat(),
                        "kind": event.kind,
                        "subject": event.subject,
                        "actor": event.actor,
                        "data": event.data,
                        "prev_hash": event.prev_hash,
                        "hash": event.hash,
                    },
                    ensure_ascii=False,
                    sort_keys=True,
                )
                + "\n"
            )
