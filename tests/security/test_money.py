"""Attacks on money: many concurrent requests that each spend the same fen.

A wallet that affords N orders gets 3N concurrent accepts over HTTP; a receivable gets six
concurrent payouts from six operator processes. On PostgreSQL (READ COMMITTED) the old code read
balances with an unlocked SUM and let all of them through (wallet and receivable far below
zero, `audit verify` still OK); the balance rows are now locked before they are read. SQLite has
one writer, so it held before too; the attacks run on both. Exact counts throughout.
"""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import threading
from typing import Any

import httpx

from suanli.services import market
from suanli.services.core import Role, create_token
from suanli.store.db import make_engine, session_factory
from suanli.store.models import Principal
from tests.integration.platform.conftest import Platform, submit_body

FLAT_TARIFF = "河北"  # no time-of-use schedule: every quote made now has the same price
TERMINAL = {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED"}


def _people(platform: Platform) -> dict[str, str]:
    """A consumer, a provider and an operator made straight in the database: their ids and
    tokens."""
    found: dict[str, str] = {}
    engine = make_engine(platform.database_url)
    with session_factory(engine).begin() as session:
        for role in (Role.CONSUMER, Role.PROVIDER, Role.OPERATOR):
            principal, token = create_token(session, role, role.value)
            found[role.value], found[f"{role.value}_token"] = principal.id, token
    engine.dispose()
    return found


def _credit(platform: Platform, operator_id: str, consumer_id: str, fen: int) -> None:
    engine = make_engine(platform.database_url)
    with session_factory(engine).begin() as session:
        operator = session.get(Principal, operator_id)
        assert operator is not None
        market.credit(session, operator, consumer_id, fen)
    engine.dispose()


def _verify(platform: Platform) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "suanli", "audit", "verify", "--db", platform.database_url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _at_once(count: int, act: Any) -> list[Any]:
    """Run `act(i)` on `count` threads released together by a barrier; the results in order."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def one(i: int) -> None:
        barrier.wait()
        results[i] = act(i)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_concurrent_accepts_never_overdraw(platform: Platform) -> None:
    n = 6
    people = _people(platform)
    provider, consumer = people["provider_token"], people["consumer_token"]
    consumer_id, operator_id = people["consumer"], people["operator"]
    platform.site_with_pool(provider, count=4, province=FLAT_TARIFF, price=36_000)
    body = submit_body("true")
    body["resources"] = {"duration_s": 3600.0}
    with platform.client(consumer) as http:
        quotes = [http.post("/v1/quotes", json=body) for _ in range(3 * n)]
    assert all(q.status_code == 201 for q in quotes), [q.text for q in quotes]
    prices = {q.json()["options"][0]["price_range"]["max"]["fen"] for q in quotes}
    assert len(prices) == 1, prices  # nothing is held yet: one price
    price = prices.pop()
    assert price > 0
    _credit(platform, operator_id, consumer_id, n * price)  # exactly N orders' worth

    clients = [platform.client(consumer) for _ in range(3 * n)]
    try:
        replies = _at_once(
            3 * n,
            lambda i: clients[i].post(
                f"/v1/quotes/{quotes[i].json()['id']}/accept", json={"option": 0}
            ),
        )
    finally:
        for client in clients:
            client.close()
    codes = sorted(reply.status_code for reply in replies)
    assert codes == [201] * n + [402] * (2 * n), [r.text for r in replies]
    with platform.client(consumer) as http:
        accounts = http.get("/v1/balance").json()["accounts"]
        assert accounts[f"wallet:{consumer_id}"]["fen"] == 0
        assert accounts[f"escrow:{consumer_id}"]["fen"] == n * price
        assert len(http.get("/v1/tasks").json()) == n  # a refused accept creates nothing
    verified = _verify(platform)
    assert verified.returncode == 0, verified.stderr


def _pay_out(
    database_url: str, operator_id: str, provider_id: str, fen: int, barrier: Any, out: Any
) -> None:
    """One operator process: connect, wait for the others, pay out (what `suanli admin payout`
    runs), report the outcome."""
    from suanli.errors import SuanliError

    engine = make_engine(database_url)
    sessions = session_factory(engine)
    with sessions() as warm:  # connect before the barrier: the payouts race, not the start-up
        warm.get(Principal, operator_id)
    barrier.wait()
    try:
        with sessions.begin() as session:
            operator = session.get(Principal, operator_id)
            assert operator is not None
            market.payout(session, operator, provider_id, fen)
        out.put("paid")
    except SuanliError as error:
        out.put(f"refused: {error.message_en}")
    except Exception as error:  # reported to the test, which fails on it
        out.put(f"crashed: {error!r}")
    finally:
        engine.dispose()


def test_concurrent_payouts_never_overdraw(platform: Platform) -> None:
    people = _people(platform)
    provider, consumer = people["provider_token"], people["consumer_token"]
    consumer_id, operator_id, provider_id = (
        people["consumer"],
        people["operator"],
        people["provider"],
    )
    # 100 fen per device-second: a task of at least half a second earns the provider > 3 fen
    site = platform.site_with_pool(provider, count=4, province=FLAT_TARIFF, price=360_000)
    _credit(platform, operator_id, consumer_id, 1_000_000)
    platform.agent(provider, site)
    body = submit_body("sleep", "0.5")
    body["resources"] = {"duration_s": 600.0}
    with platform.client(consumer) as http:
        quote = http.post("/v1/quotes", json=body).json()
        order = http.post(f"/v1/quotes/{quote['id']}/accept", json={"option": 0})
        assert order.status_code == 201, order.text
    task = platform.wait_for(consumer, order.json()["task_id"], TERMINAL, timeout=60)
    assert task["state"] == "COMPLETE", task
    with platform.client(provider) as http:
        settled = http.get(f"/v1/orders/{order.json()['id']}").json()
        assert settled["state"] == "SETTLED", settled
        receivable = http.get("/v1/balance").json()["accounts"][f"receivable:{provider_id}"]["fen"]
    assert receivable == settled["settlement"]["provider"]["fen"] > 3
    each = receivable // 2
    affordable = receivable // each  # 2 (3 when the receivable is odd and tiny: not here)

    spawn = multiprocessing.get_context("spawn")
    barrier, out = spawn.Barrier(6), spawn.Queue()
    processes = [
        spawn.Process(
            target=_pay_out,
            args=(platform.database_url, operator_id, provider_id, each, barrier, out),
        )
        for _ in range(6)
    ]
    for process in processes:
        process.start()
    outcomes = sorted(out.get(timeout=120) for _ in processes)
    for process in processes:
        process.join(timeout=60)
    paid = [o for o in outcomes if o == "paid"]
    refused = [o for o in outcomes if o.startswith("refused: invalid fen")]
    assert len(paid) == affordable and len(refused) == 6 - affordable, outcomes
    with platform.client(provider) as http:
        left = http.get("/v1/balance").json()["accounts"][f"receivable:{provider_id}"]["fen"]
    assert left == receivable - affordable * each >= 0
    verified = _verify(platform)
    assert verified.returncode == 0, verified.stderr


def test_amounts_beyond_the_bound_are_refused_by_name(platform: Platform) -> None:
    """A quote whose price would not fit a sane money amount is a 422 naming the field, not an
    overflow 500; an operator's top-up beyond the bound is refused the same way."""
    people = _people(platform)
    provider, consumer, consumer_id = (
        people["provider_token"],
        people["consumer_token"],
        people["consumer"],
    )
    # 1,000 devices at 10^7 fen an hour for 10^8 s: about 2.8e14 fen, beyond MAX_FEN (1e13)
    platform.site_with_pool(provider, count=1_000, province=FLAT_TARIFF, price=10_000_000)
    body = submit_body("true")
    body["resources"] = {"devices": 1_000, "duration_s": 1e8}
    with platform.client(consumer) as http:
        reply = http.post("/v1/quotes", json=body)
    assert reply.status_code == 422, reply.text
    assert reply.json()["error"]["field"] == "price.total_fen"
    credit = subprocess.run(
        [
            sys.executable,
            "-m",
            "suanli",
            "admin",
            "credit",
            "--consumer",
            consumer_id,
            "--fen",
            str(10**19),
            "--db",
            platform.database_url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert credit.returncode != 0 and "fen" in credit.stderr, credit.stderr
    assert "Traceback" not in credit.stderr
    with httpx.Client(base_url=platform.url, timeout=30) as http:
        assert http.get("/healthz").status_code == 200
