"""Every task is an order (issue 15): a task submitted through the native API, the CLI, the
console's form and GA4GH TES runs on a real agent and ends with its order settled to the fen:
provider + platform + network == charge, and the consumer's wallet statement nets to -charge
for it; `suanli audit verify` proves the books. A consumer who cannot pay stays queued with the
reason and runs after a top-up; a `max_price_fen` below every pool's price is refused at
submission. A real server on loopback and real agents, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import Any

from sqlalchemy import select

from suanli.services.core import Role
from suanli.store.db import make_engine, session_factory
from suanli.store.models import OrderRow, Principal
from tests.integration.platform.browser import form_csrf, http_sign_in
from tests.integration.platform.conftest import Platform, database_url, platform, submit_body
from tests.waiting import poll

__all__ = ["database_url", "platform"]

PRICE = 360_000  # fen per device-hour: a task of a few seconds costs whole fen
TES = "/ga4gh/tes/v1"


def _cli(platform: Platform, *args: str, db: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "suanli", *args, *(["--db", platform.database_url] if db else [])],
        env=platform.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _orders(platform: Platform, task_id: str) -> list[OrderRow]:
    engine = make_engine(platform.database_url)
    with session_factory(engine)() as session:
        rows = list(
            session.scalars(
                select(OrderRow).where(OrderRow.task_id == task_id).order_by(OrderRow.created_at)
            )
        )
        for row in rows:
            session.expunge(row)
    engine.dispose()
    return rows


def _principal(platform: Platform, name: str) -> str:
    engine = make_engine(platform.database_url)
    with session_factory(engine)() as session:
        found = session.scalars(select(Principal.id).where(Principal.name == name)).one()
    engine.dispose()
    return str(found)


def _network(platform: Platform) -> str:
    provider = platform.token(Role.PROVIDER, "dc")
    site = platform.site_with_pool(provider, count=4, price=PRICE)
    platform.agent(provider, site, slots=4)
    return site


def _by_console(platform: Platform, token: str) -> str:
    """The console's form, as a browser posts it: the quote, then accepting its first option."""
    with http_sign_in(platform, token) as http:
        form = http.get("/console/tasks/new")
        assert form.status_code == 200, form.text
        quoted = http.post(
            "/console/tasks/quote",
            data={"command": "sleep 1", "duration_s": "10", "csrf": form_csrf(form.text)},
            headers={"Origin": platform.url},
        )
        assert quoted.status_code == 200, quoted.text
        quote_id = re.search(r'name="quote_id" value="([^"]+)"', quoted.text)
        assert quote_id is not None, quoted.text[:2000]
        accepted = http.post(
            "/console/tasks/accept",
            data={"quote_id": quote_id.group(1), "option": "0", "csrf": form_csrf(quoted.text)},
            headers={"Origin": platform.url},
        )
        assert accepted.status_code == 303, accepted.text
        return str(accepted.headers["location"]).rsplit("/", 1)[-1]


def _fen(money: dict[str, Any]) -> int:
    return int(money["fen"])


def _audit(platform: Platform) -> None:
    verified = _cli(platform, "audit", "verify", db=True)
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_native_cli_console_and_tes_tasks_each_settle_an_order(platform: Platform) -> None:
    _network(platform)
    token = platform.token(Role.CONSUMER, "lab")  # funded (tests.money)
    consumer = _principal(platform, "lab")
    body = submit_body("sh", "-c", "sleep 1")
    body["resources"] = {"duration_s": 10.0}
    with platform.client(token) as http:
        native = http.post("/v1/tasks", json=body)
        assert native.status_code == 201, native.text
        tes = http.post(
            f"{TES}/tasks",
            json={"executors": [{"image": "alpine", "command": ["sh", "-c", "sleep 1"]}]},
        )
        assert tes.status_code == 200, tes.text
    by_cli = _cli(
        platform,
        "submit",
        "--server",
        platform.url,
        "--token",
        token,
        "--duration",
        "10",
        "--json",
        "--",
        "sh",
        "-c",
        "sleep 1",
    )
    assert by_cli.returncode == 0, by_cli.stderr
    tasks = {
        "native": native.json()["id"],
        "tes": tes.json()["id"],
        "cli": json.loads(by_cli.stdout)["id"],
        "console": _by_console(platform, token),
    }
    for task_id in tasks.values():
        ended = platform.wait_for(token, task_id, {"COMPLETE", "SYSTEM_ERROR"}, timeout=90)
        assert ended["state"] == "COMPLETE", ended
    with platform.client(token) as http:
        wallet = http.get("/v1/statement", params={"account": f"wallet:{consumer}"}).json()
    for path, task_id in tasks.items():
        (order,) = _orders(platform, task_id)
        assert order.state == "SETTLED", (path, order.state)
        assert order.source == ("quote" if path == "console" else "admission"), path
        s = order.settlement
        assert s is not None
        charge = _fen(s["charge"])
        assert charge > 0, (path, s)  # a real price for a real run
        assert _fen(s["provider"]) + _fen(s["platform"]) + _fen(s["network"]) == charge, path
        assert charge + _fen(s["refund"]) == order.escrow_fen, path
        lines = [line for line in wallet["lines"] if line["order"] == order.id]
        assert [line["kind"] for line in lines] == ["hold", "settle"], path
        assert sum(_fen(line["amount"]) for line in lines) == -charge, path
    _audit(platform)


def test_a_consumer_without_money_waits_and_runs_after_a_top_up(platform: Platform) -> None:
    _network(platform)
    token = platform.token(Role.CONSUMER, "broke lab", funded=0)
    consumer = _principal(platform, "broke lab")
    body = submit_body("true")
    body["resources"] = {"duration_s": 10.0}
    with platform.client(token) as http:
        task_id = http.post("/v1/tasks", json=body).json()["id"]

        def waiting() -> bool:
            reason = http.get(f"/v1/tasks/{task_id}").json().get("unplaced_reason") or ""
            return reason.startswith("insufficient balance")

        assert poll(waiting, timeout_s=30, every_s=0.1)
        task = http.get(f"/v1/tasks/{task_id}").json()
        assert task["state"] == "QUEUED" and "余额不足" in task["unplaced_reason"]
    assert _orders(platform, task_id) == []
    credited = _cli(platform, "admin", "credit", "--consumer", consumer, "--fen", "100000", db=True)
    assert credited.returncode == 0, credited.stderr
    ended = platform.wait_for(token, task_id, {"COMPLETE", "SYSTEM_ERROR"}, timeout=60)
    assert ended["state"] == "COMPLETE", ended
    (order,) = _orders(platform, task_id)
    assert order.state == "SETTLED"
    _audit(platform)


def test_a_ceiling_below_every_pool_is_refused_at_submission(platform: Platform) -> None:
    _network(platform)
    token = platform.token(Role.CONSUMER, "thrifty lab")
    body = submit_body("true")
    body["resources"] = {"duration_s": 3600.0}  # 3600 yuan an hour: far above 1 fen
    with platform.client(token) as http:
        refused = http.post("/v1/tasks", json={**body, "max_price_fen": 1})
        assert refused.status_code == 422, refused.text
        error = refused.json()["error"]
        assert "max_price_fen" in error["message"] and "max_price_fen" in error["message_zh"]
        assert http.get("/v1/tasks").json() == []  # nothing written
        quote = http.post("/v1/quotes", json={**body, "max_price_fen": 1}).json()
        assert quote["options"] == [] and "max_price_fen" in quote["unavailable"]
        fits = http.post("/v1/tasks", json={**body, "max_price_fen": 10**12})
        assert fits.status_code == 201, fits.text


def test_an_issued_voucher_pays_a_task_and_expires_back_to_the_issuer(platform: Platform) -> None:
    _network(platform)
    operator = platform.token(Role.OPERATOR, "ops")
    token = platform.token(Role.CONSUMER, "voucher lab", funded=0)
    consumer = _principal(platform, "voucher lab")
    with platform.client(operator) as http:
        refused = http.post(
            "/v1/vouchers",
            json={"fen": 10, "expires_at": "2000-01-01T00:00:00Z", "consumers": [consumer]},
        )
        assert refused.status_code == 422 and "expires_at" in refused.text
        issued = http.post(
            "/v1/vouchers",
            json={
                "fen": 1_000_000,
                "expires_at": "2999-01-01T00:00:00Z",
                "consumers": [consumer],
                "memo": "trial 算力券",
            },
        )
        assert issued.status_code == 201, issued.text
        voucher = issued.json()
    with platform.client(token) as http:
        assert http.post("/v1/vouchers/expire").status_code == 403  # the operator's
        body = submit_body("true")
        body["resources"] = {"duration_s": 10.0}
        task_id = http.post("/v1/tasks", json=body).json()["id"]
    ended = platform.wait_for(token, task_id, {"COMPLETE", "SYSTEM_ERROR"}, timeout=60)
    assert ended["state"] == "COMPLETE", ended
    (order,) = _orders(platform, task_id)
    assert order.voucher_fen == order.escrow_fen and order.state == "SETTLED"
    assert order.settlement is not None
    charge = _fen(order.settlement["charge"])
    with platform.client(token) as http:
        (mine,) = http.get("/v1/vouchers").json()["vouchers"]
        assert mine["id"] == voucher["id"] and _fen(mine["left"]) == 1_000_000 - charge
        own = http.get("/v1/statement", params={"account": voucher["account"]}).json()
        assert sum(_fen(line["amount"]) for line in own["lines"]) == 1_000_000 - charge
        wallet = http.get("/v1/statement", params={"account": f"wallet:{consumer}"}).json()
        assert wallet["lines"] == []  # the voucher paid it all
    listed = _cli(platform, "admin", "vouchers", "list", "--json", db=True)
    assert listed.returncode == 0, listed.stderr
    assert [v["state"] for v in json.loads(listed.stdout)["vouchers"]] == ["ACTIVE"]
    swept = _cli(platform, "admin", "vouchers", "expire", "--json", db=True)
    assert swept.returncode == 0 and json.loads(swept.stdout)["vouchers"] == []  # not due
    _audit(platform)
