"""The market end to end with the real server and agent: top up, quote, accept, run, settle;
and the audit trail catching an edit made directly in the database."""

from __future__ import annotations

import subprocess
import sys

from sqlalchemy import text

from suanli.services import market
from suanli.services.core import Role, create_token
from suanli.store.db import make_engine, session_factory
from tests.integration.platform.conftest import Platform, submit_body

TERMINAL = {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED"}


def _money(value: object) -> int:
    assert isinstance(value, dict) and set(value) == {"fen", "currency"}
    assert isinstance(value["fen"], int) and value["currency"] == "CNY"
    return value["fen"]


def test_top_up_quote_accept_run_settle(platform: Platform) -> None:
    provider = platform.token(Role.PROVIDER, "dc-1")
    engine = make_engine(platform.database_url)
    with session_factory(engine).begin() as session:
        consumer_row, consumer = create_token(session, Role.CONSUMER, "lab")
        consumer_id = consumer_row.id
        operator = create_token(session, Role.OPERATOR, "ops")[0]
        market.credit(session, operator, consumer_id, 100_000)
    engine.dispose()
    site = platform.site_with_pool(provider, price=36_000)
    with platform.client(provider) as http:
        pool = http.get("/v1/pools").json()[0]
    assert pool["site_id"] == site
    platform.agent(provider, site)
    with platform.client(consumer) as http:
        body = submit_body("sh", "-c", "sleep 1; echo paid work")
        body["resources"] = {"duration_s": 30.0}
        quote = http.post("/v1/quotes", json=body)
        assert quote.status_code == 201, quote.text
        offer = quote.json()["options"][0]
        for part in offer["price"].values():
            _money(part)
        maximum = _money(offer["price_range"]["max"])
        assert maximum == _money(offer["price"]["total_fen"]) > 0
        order = http.post(f"/v1/quotes/{quote.json()['id']}/accept", json={"option": 0})
        assert order.status_code == 201, order.text
        assert _money(order.json()["escrow"]) == maximum
        wallet = http.get("/v1/balance").json()["accounts"]
        assert _money(wallet[f"wallet:{consumer_id}"]) == 100_000 - maximum
        task = platform.wait_for(consumer, order.json()["task_id"], TERMINAL)
        assert task["state"] == "COMPLETE"
        settled = http.get(f"/v1/orders/{order.json()['id']}").json()
        assert settled["state"] == "SETTLED"
        s = settled["settlement"]
        charge = _money(s["charge"])
        assert charge == _money(s["provider"]) + _money(s["platform"]) + _money(s["network"])
        assert charge + _money(s["refund"]) == maximum
        # the consumer's statement: the debit equals the three shares, to the fen
        lines = http.get("/v1/statement", params={"account": f"wallet:{consumer_id}"}).json()
        net = sum(_money(line["amount"]) for line in lines["lines"])
        assert net == 100_000 - charge
        # rated once
        assert (
            http.post(
                f"/v1/orders/{order.json()['id']}/rating", json={"stars": 5, "comment": "fast"}
            ).status_code
            == 201
        )
        assert (
            http.post(f"/v1/orders/{order.json()['id']}/rating", json={"stars": 4}).status_code
            == 409
        )
        # a 5-star rating and an on-time, successful order: full reputation on the site
        shown = {row["id"]: row["reputation"] for row in http.get("/v1/sites").json()}
        assert shown[site] == 1.0
    with platform.client(provider) as http:
        receivable = http.get("/v1/balance").json()["accounts"]
        assert _money(receivable[next(iter(receivable))]) == _money(s["provider"])


def test_insufficient_funds_is_402_and_creates_nothing(platform: Platform) -> None:
    provider = platform.token(Role.PROVIDER, "dc-1")
    consumer = platform.token(Role.CONSUMER, "broke", funded=0)
    platform.site_with_pool(provider, price=36_000)
    with platform.client(consumer) as http:
        body = submit_body("true")
        body["resources"] = {"duration_s": 3600.0}
        quote = http.post("/v1/quotes", json=body).json()
        refused = http.post(f"/v1/quotes/{quote['id']}/accept", json={"option": 0})
        assert refused.status_code == 402
        assert "insufficient funds" in refused.json()["error"]["message"]
        assert http.get("/v1/tasks").json() == []


def _verify(platform: Platform) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "suanli", "audit", "verify", "--db", platform.database_url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_audit_verify_names_an_edited_event_and_an_edited_posting(platform: Platform) -> None:
    engine = make_engine(platform.database_url)
    with session_factory(engine).begin() as session:
        consumer, _ = create_token(session, Role.CONSUMER, "lab")
        operator = create_token(session, Role.OPERATOR, "ops")[0]
        market.credit(session, operator, consumer.id, 5_000)
        market.credit(session, operator, consumer.id, 7_000)
    assert _verify(platform).returncode == 0
    with engine.begin() as connection:  # a posting is changed behind the platform's back
        connection.execute(
            text(
                "UPDATE ledger_postings SET amount_fen = amount_fen + 1 WHERE id = "
                "(SELECT MIN(id) FROM ledger_postings)"
            )
        )
    failed = _verify(platform)
    assert failed.returncode == 1
    assert "transaction tx-" in failed.stderr and "differ" in failed.stderr
    with engine.begin() as connection:
        connection.execute(
            text(
                "UPDATE ledger_postings SET amount_fen = amount_fen - 1 WHERE id = "
                "(SELECT MIN(id) FROM ledger_postings)"
            )
        )
        seq = connection.execute(
            text("SELECT MIN(seq) FROM events WHERE kind = 'money.posted'")
        ).scalar_one()
        connection.execute(
            text("UPDATE events SET actor = 'someone else' WHERE seq = :seq"), {"seq": seq}
        )
    failed = _verify(platform)
    assert failed.returncode == 1
    assert f"event #{seq}" in failed.stderr
    engine.dispose()
