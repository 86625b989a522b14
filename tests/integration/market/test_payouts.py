"""Payout runs and statements on a real database (SQLite and PostgreSQL), with real money: a
funded consumer, orders quoted, accepted, placed by the pass, run and settled by the agent's
reports on a virtual clock; then monthly payout runs. Sums are checked to the fen against the
orders' settlements, the runs are idempotent (also under two concurrent runs on PostgreSQL),
and the audit verifies after every run. Then the API and the CLI on a live server."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from suanli import ledger
from suanli.errors import InvalidValue
from suanli.services import market, payouts
from suanli.services.core import Conflict, Forbidden, NotFound
from suanli.store.models import EventRow, LedgerTransaction, PayoutRunRow, PayoutStatementRow
from tests.integration.platform.conftest import Platform, database_url, platform
from tests.waiting import lock_waiters, poll

from .money_world import World

__all__ = ["database_url", "platform"]  # fixtures

NOV = datetime(2026, 11, 10, 2, 0, tzinfo=UTC)  # 10 Nov 2026 10:00 CST


@pytest.fixture
def world(database_url: str) -> Iterator[World]:
    made = World(database_url, NOV)
    yield made
    made.close()


def _net(settled: dict[str, int]) -> int:
    return settled["provider"] - settled["sla_credit"]


def _transactions(world: World) -> int:
    with world.unit() as s:
        return int(s.scalar(select(func.count()).select_from(LedgerTransaction)) or 0)


def test_a_month_is_paid_once_to_the_fen(world: World) -> None:
    alpha, beta = world.provider("alpha", 36_000), world.provider("beta", 72_000)
    consumer = world.consumer("lab", 10_000_000)
    first = world.order(consumer, alpha, 600.0)
    world.clock.advance(3600)
    second = world.order(consumer, beta, 1200.0)
    third = world.order(consumer, alpha, 300.0)
    world.clock.advance(600)
    settled = {first: world.finish(first, 450.0), second: world.finish(second, 1200.0)}
    world.clock.advance(60)
    settled[third] = world.finish(third, 100.0)
    late = world.order(consumer, alpha, 600.0)  # opened in November, settled in December
    for order, money in settled.items():  # the shares add up to the charge, to the fen
        assert money["provider"] + money["platform"] + money["network"] == money["charge"]
        assert money["charge"] <= world.escrow(order)
    # 30 Nov 16:00 UTC is 1 Dec 00:00 in China Standard Time: November has ended there
    world.clock.set(datetime(2026, 11, 30, 16, 0, 30, tzinfo=UTC))
    late_money = world.finish(late, 600.0)
    alpha_nov = _net(settled[first]) + _net(settled[third])
    beta_nov = _net(settled[second])
    alpha_account, beta_account = (ledger.receivable(p.who.id) for p in (alpha, beta))
    assert world.balance(alpha_account) == alpha_nov + _net(late_money)

    with world.unit() as s:
        result = payouts.run(s, world.operator, "2026-11")
        done = payouts.run_read(result)
    assert done["created"] is True
    assert done["total_fen"] == alpha_nov + beta_nov
    assert done["providers"] == 2
    assert world.balance(alpha_account) == _net(late_money)  # December's earning waits
    assert world.balance(beta_account) == 0
    assert world.verify() is None
    with world.unit() as s:
        statements = {
            r.provider_id: payouts.statement_read(r) for r in payouts.statements(s, world.operator)
        }
    alpha_statement = statements[alpha.who.id]
    assert (alpha_statement["opening_fen"], alpha_statement["earned_fen"]) == (0, alpha_nov)
    assert (alpha_statement["paid_fen"], alpha_statement["closing_fen"]) == (alpha_nov, 0)
    assert [line["order"] for line in alpha_statement["lines"]] == [first, third]
    for line in alpha_statement["lines"]:
        money = settled[line["order"]]
        assert line["charge_fen"] == money["charge"]
        assert line["provider_fen"] == money["provider"]
        assert line["platform_fen"] == money["platform"]
        assert line["network_fen"] == money["network"]
        assert line["sla_credit_fen"] == money["sla_credit"]
        assert line["net_fen"] == _net(money)
    assert statements[beta.who.id]["paid_fen"] == beta_nov

    # again: the same run, nothing moves
    before = _transactions(world)
    with world.unit() as s:
        again = payouts.run_read(payouts.run(s, world.operator, "2026-11"))
    assert again["created"] is False and again["id"] == done["id"]
    assert again["total_fen"] == done["total_fen"]
    assert _transactions(world) == before
    assert world.balance(alpha_account) == _net(late_money)

    # a manual payout in December is counted: the December run pays only the rest
    with world.unit() as s:
        market.payout(s, world.operator, alpha.who.id, 1)
    world.clock.set(datetime(2027, 1, 2, tzinfo=UTC))
    with world.unit() as s:
        december = payouts.run_read(payouts.run(s, world.operator, "2026-12"))
    assert december["total_fen"] == _net(late_money) - 1
    assert world.balance(alpha_account) == 0
    with world.unit() as s:
        (dec_statement,) = [
            payouts.statement_read(r)
            for r in payouts.statements(s, world.operator, period="2026-12")
        ]
    assert dec_statement["opening_fen"] == -1  # paid in advance by the manual payout
    assert dec_statement["earned_fen"] == _net(late_money)
    assert dec_statement["paid_fen"] == _net(late_money) - 1
    assert dec_statement["closing_fen"] == 0
    assert [line["order"] for line in dec_statement["lines"]] == [late]
    assert world.verify() is None
    with world.unit() as s:
        kinds = s.scalars(select(EventRow.kind).where(EventRow.kind == "payout.run")).all()
    assert len(kinds) == 2  # one event per run, none for the repeated one


def test_what_a_run_refuses(world: World) -> None:
    provider = world.provider("alpha")
    consumer = world.consumer("lab", 1_000_000)
    world.clock.advance(60)
    with world.unit() as s, pytest.raises(InvalidValue) as bad:
        payouts.run(s, world.operator, "2026-13")
    assert bad.value.field == "period" and "YYYY-MM" in bad.value.message_en
    with world.unit() as s, pytest.raises(Conflict) as early:
        payouts.run(s, world.operator, "2026-11")  # November has not ended
    assert "has not ended" in early.value.message_en
    with world.unit() as s, pytest.raises(Forbidden):
        payouts.run(s, provider.who, "2026-10")
    with world.unit() as s, pytest.raises(Forbidden):
        payouts.run(s, consumer, "2026-10")
    with world.unit() as s:  # a month without earnings runs, and pays nobody
        empty = payouts.run_read(payouts.run(s, world.operator, "2026-10"))
    assert (empty["total_fen"], empty["providers"], empty["statements"]) == (0, 0, [])
    with world.unit() as s, pytest.raises(Conflict) as order:
        payouts.run(s, world.operator, "2026-09")  # before a period that has run
    assert "periods run in order" in order.value.message_en
    with world.unit() as s, pytest.raises(NotFound):
        payouts.get_statement(s, provider.who, "stmt-none")


def test_a_provider_sees_only_its_own_statements_csv_and_html(world: World) -> None:
    alpha, beta = world.provider("alpha"), world.provider("beta", 50_000)
    consumer = world.consumer("lab", 1_000_000)
    orders = [world.order(consumer, alpha, 60.0), world.order(consumer, beta, 60.0)]
    for order in orders:
        world.finish(order, 60.0)
    world.clock.set(datetime(2026, 12, 1, 1, tzinfo=UTC))
    with world.unit() as s:
        payouts.run(s, world.operator, "2026-11")
    with world.unit() as s:
        mine = payouts.statements(s, alpha.who)
        assert [r.provider_id for r in mine] == [alpha.who.id]
        theirs = payouts.statements(s, beta.who)[0].id
        with pytest.raises(NotFound):
            payouts.get_statement(s, alpha.who, theirs)
        read = payouts.statement_read(mine[0])
    document = payouts.statement_csv(read)
    assert document.startswith("\ufeff")
    rows = list(csv.reader(io.StringIO(document.lstrip("\ufeff"))))
    head = dict(r for r in rows if len(r) == 2)
    assert int(head["paid_fen"]) == read["paid_fen"] == read["earned_fen"]
    header = rows.index(list(payouts.CSV_COLUMNS))
    assert [r[0] for r in rows[header + 1 :]] == [orders[0]]
    from suanli.console.pages_statements import render_statement

    html = render_statement(read, "zh")
    assert "结算对账单" in html and orders[0] in html and "2026-11" in html
    assert "Payout statements" in render_statement(read, "en")


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_two_concurrent_runs_of_a_period_pay_once(world: World) -> None:
    provider = world.provider("alpha")
    consumer = world.consumer("lab", 1_000_000)
    order = world.order(consumer, provider, 600.0)
    net = _net(world.finish(order, 600.0))
    world.clock.set(datetime(2026, 12, 1, 1, tzinfo=UTC))
    hold, results, errors = threading.Event(), {}, []

    def first() -> None:
        try:
            with world.unit() as s:
                results["first"] = payouts.run_read(payouts.run(s, world.operator, "2026-11"))
                hold.wait(60)  # keep the run uncommitted until the second one waits on it
        except Exception as exc:
            errors.append(exc)

    def second() -> None:
        try:
            with world.unit() as s:
                results["second"] = payouts.run_read(payouts.run(s, world.operator, "2026-11"))
        except Exception as exc:
            errors.append(exc)

    one = threading.Thread(target=first)
    one.start()
    assert poll(lambda: "first" in results or bool(errors), timeout_s=30)
    two = threading.Thread(target=second)
    two.start()

    assert poll(lambda: lock_waiters(world.engine), timeout_s=30)
    hold.set()
    one.join(60)
    two.join(60)
    assert errors == []
    assert results["first"]["created"] is True and results["second"]["created"] is False
    assert results["second"]["id"] == results["first"]["id"]
    assert results["first"]["total_fen"] == net
    assert world.balance(ledger.receivable(provider.who.id)) == 0
    with world.unit() as s:
        assert s.scalar(select(func.count()).select_from(PayoutRunRow)) == 1
        assert s.scalar(select(func.count()).select_from(PayoutStatementRow)) == 1
        payouts_made = s.scalar(
            select(func.count())
            .select_from(LedgerTransaction)
            .where(LedgerTransaction.kind == "payout")
        )
    assert payouts_made == 1
    assert world.verify() is None


def test_payout_runs_and_statements_over_the_api_and_cli(platform: Platform) -> None:
    """A live server on a database where real orders settled two months ago (made while the
    server was stopped): the operator runs that month over the API (201, then 200 with the
    same run), the provider reads its statement as JSON, CSV and HTML, another provider and a
    consumer cannot; the CLI on the database prints the existing run."""
    ago = datetime.now(UTC) - timedelta(days=62)
    period = f"{ago.year}-{ago.month:02d}"
    platform.stop()
    world = World(platform.database_url, datetime(ago.year, ago.month, 3, 4, tzinfo=UTC))
    try:
        provider, other = world.provider("dc"), world.provider("other")
        consumer = world.consumer("lab", 1_000_000)
        order = world.order(consumer, provider, 600.0)
        net = _net(world.finish(order, 300.0))
    finally:
        world.close()
    platform.start()
    operator = world.tokens["op"]
    with platform.client(operator) as http:
        made = http.post("/v1/payouts/runs", json={"period": period})
        assert made.status_code == 201, made.text
        assert made.json()["total_fen"] == net and made.json()["providers"] == 1
        again = http.post("/v1/payouts/runs", json={"period": period})
        assert again.status_code == 200 and again.json()["id"] == made.json()["id"]
        bad = http.post("/v1/payouts/runs", json={"period": "2026-1"})
        assert bad.status_code == 422 and bad.json()["error"]["field"].endswith("period")
        assert [r["period"] for r in http.get("/v1/payouts/runs").json()["runs"]] == [period]
        (listed,) = http.get("/v1/statements").json()["statements"]
    with platform.client(world.tokens["dc"]) as http:
        (mine,) = http.get("/v1/statements").json()["statements"]
        assert mine == listed and mine["paid_fen"] == net and mine["lines"][0]["order"] == order
        document = http.get(f"/v1/statements/{mine['id']}.csv")
        assert document.status_code == 200 and document.headers["content-type"].startswith(
            "text/csv"
        )
        assert f"paid_fen,{net}" in document.text
        page = http.get(f"/v1/statements/{mine['id']}.html", headers={"Accept-Language": "en"})
        assert page.status_code == 200 and "Payout statements" in page.text and order in page.text
        assert http.post("/v1/payouts/runs", json={"period": period}).status_code == 403
    with platform.client(world.tokens["other"]) as http:
        assert http.get("/v1/statements").json() == {"statements": []}
        assert http.get(f"/v1/statements/{mine['id']}.csv").status_code == 404
    with platform.client(world.tokens["lab"]) as http:
        assert http.get("/v1/statements").status_code == 403
    del other
    ran = subprocess.run(
        [
            sys.executable,
            "-m",
            "suanli",
            "admin",
            "payouts",
            "run",
            "--period",
            period,
            "--json",
            "--db",
            platform.database_url,
        ],
        capture_output=True,
        text=True,
        env=platform.env,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    shown = json.loads(ran.stdout)
    assert shown["id"] == made.json()["id"] and shown["created"] is False
    listed_cli = subprocess.run(
        [sys.executable, "-m", "suanli", "statements", "list", "--json"],
        capture_output=True,
        text=True,
        env={**platform.env, "SUANLI_SERVER": platform.url, "SUANLI_TOKEN": world.tokens["dc"]},
        check=False,
    )
    assert listed_cli.returncode == 0, listed_cli.stderr
    assert [s["id"] for s in json.loads(listed_cli.stdout)] == [mine["id"]]
    for args, expected in (
        (["statements", "--period", period, "--json"], mine["id"]),
        (["statement", mine["id"], "--format", "csv"], f"paid_fen,{net}"),
        (["statement", mine["id"], "--format", "html"], "结算对账单"),
        (["statement", mine["id"]], order),
    ):
        shown_cli = subprocess.run(
            [
                sys.executable,
                "-m",
                "suanli",
                "admin",
                "payouts",
                *args,
                "--db",
                platform.database_url,
            ],
            capture_output=True,
            text=True,
            env={**platform.env, "COLUMNS": "200"},
            check=False,
        )
        assert shown_cli.returncode == 0, shown_cli.stderr
        assert expected in shown_cli.stdout, (args, shown_cli.stdout)
