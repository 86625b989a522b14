"""Attacks on the books that the hash chain alone does not catch, and the audit's checkpoint.

An insider with database access writes a transaction that is balanced and correctly chained (the
same rows `record` writes, with its checks skipped, and an event hashed as `append_event` does):
one that overdraws a wallet, one that settles an order a second time. The old `audit verify`
checked only the chain and each transaction's own balance, and said OK. It now replays the
ledger in chain order, names the first breach and exits 1.

The audit resumes from a stored checkpoint (`suanli audit verify --incremental`, and the
console's money page): it walks only what was appended since, so an edit made before the
checkpoint is found by the full walk (the CLI's default), an edit after it by either.
"""

from __future__ import annotations

import subprocess
import sys

from sqlalchemy import insert, inspect, text
from sqlalchemy.orm import Session

from suanli import ledger
from suanli.services import market
from suanli.services.core import (
    Role,
    append_event,
    create_token,
    heads_digest,
    now,
    stream_heads,
)
from suanli.store.db import make_engine, session_factory
from suanli.store.models import LedgerPosting, LedgerTransaction, Principal
from tests.integration.platform.conftest import Platform, submit_body

FLAT_TARIFF = "河北"


def _audit(platform: Platform, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "suanli", "audit", "verify", "--db", platform.database_url, *flags],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _people(platform: Platform, fen: int) -> dict[str, str]:
    """A consumer topped up with `fen`, a provider and an operator: ids and tokens."""
    found: dict[str, str] = {}
    engine = make_engine(platform.database_url)
    with session_factory(engine).begin() as session:
        for role in (Role.CONSUMER, Role.PROVIDER, Role.OPERATOR):
            principal, token = create_token(session, role, role.value)
            found[role.value], found[f"{role.value}_token"] = principal.id, token
        operator = session.get(Principal, found["operator"])
        assert operator is not None
        market.credit(session, operator, found["consumer"], fen)
    engine.dispose()
    return found


def _forge(session: Session, tx: ledger.Transaction, order_id: str | None) -> None:
    """What an insider writes: `record`'s rows without its checks, the stored balances kept in
    step (where the database has them), and a correctly hashed `money.posted` event."""
    session.execute(
        insert(LedgerTransaction).values(
            id=tx.id, kind=tx.kind, memo="forged", order_id=order_id, at=now()
        )
    )
    session.execute(
        insert(LedgerPosting),
        [
            {"transaction_id": tx.id, "account": p.account, "amount_fen": p.amount_fen}
            | {"currency": p.currency}
            for p in tx.postings
        ],
    )
    if "account_balances" in inspect(session.connection()).get_table_names():
        for p in tx.postings:
            changed = session.execute(
                text(
                    "UPDATE account_balances SET balance_fen = balance_fen + :f WHERE account = :a"
                ),
                {"f": p.amount_fen, "a": p.account},
            )
            if changed.rowcount == 0:  # type: ignore[attr-defined]
                session.execute(
                    text("INSERT INTO account_balances (account, balance_fen) VALUES (:a, :f)"),
                    {"f": p.amount_fen, "a": p.account},
                )
    append_event(
        session,
        "money.posted",
        tx.id,
        "insider",
        {
            "kind": tx.kind,
            "order": order_id,
            "postings": [[p.account, p.amount_fen, p.currency] for p in tx.postings],
        },
    )


def _accept(platform: Platform, people: dict[str, str], count: int) -> list[dict[str, int | str]]:
    """`count` real orders (quote, accept over HTTP) on a flat-tariff pool: id and escrow."""
    platform.site_with_pool(people["provider_token"], province=FLAT_TARIFF, price=36_000)
    body = submit_body("true")
    body["resources"] = {"duration_s": 600.0}
    orders: list[dict[str, int | str]] = []
    with platform.client(people["consumer_token"]) as http:
        for _ in range(count):
            quote = http.post("/v1/quotes", json=body).json()
            order = http.post(f"/v1/quotes/{quote['id']}/accept", json={"option": 0})
            assert order.status_code == 201, order.text
            orders.append({"id": order.json()["id"], "escrow": order.json()["escrow"]["fen"]})
    return orders


def test_audit_verify_names_a_negative_balance(platform: Platform) -> None:
    people = _people(platform, 5_000)
    assert _audit(platform).returncode == 0
    engine = make_engine(platform.database_url)
    with session_factory(engine).begin() as session:  # hold 8,000 fen from a 5,000 fen wallet
        _forge(session, ledger.hold("tx-forged-overdraw", people["consumer"], 8_000), None)
    engine.dispose()
    failed = _audit(platform)
    assert failed.returncode == 1, failed.stdout
    assert "tx-forged-overdraw" in failed.stderr
    assert f"wallet:{people['consumer']} at -3000 fen, below zero" in failed.stderr


def test_audit_verify_names_a_double_settlement(platform: Platform) -> None:
    people = _people(platform, 1_000_000)
    first, _ = _accept(platform, people, 2)  # two orders held: the escrow covers a second refund
    escrow, wallet = ledger.escrow(people["consumer"]), ledger.wallet(people["consumer"])
    held = int(first["escrow"])
    engine = make_engine(platform.database_url)
    with session_factory(engine).begin() as session:
        for n in (1, 2):  # the same order refunded twice
            refund = ledger.Transaction(
                f"tx-settle-{n}",
                "settle",
                (ledger.Posting(escrow, -held), ledger.Posting(wallet, held)),
            )
            _forge(session, refund, str(first["id"]))
    engine.dispose()
    failed = _audit(platform)
    assert failed.returncode == 1, failed.stdout
    assert f"order {first['id']} settled twice" in failed.stderr
    assert "tx-settle-2" in failed.stderr


def test_audit_verify_names_a_second_settled_event(platform: Platform) -> None:
    people = _people(platform, 1_000_000)
    (order,) = _accept(platform, people, 1)
    engine = make_engine(platform.database_url)
    with session_factory(engine).begin() as session:
        settled = {"outcome": "COMPLETE"}
        append_event(session, "order.settled", str(order["id"]), "insider", settled)
        second = append_event(session, "order.settled", str(order["id"]), "insider", settled)
    engine.dispose()
    failed = _audit(platform)
    assert failed.returncode == 1, failed.stdout
    assert f"order {order['id']} settled twice: event #{second}" in failed.stderr


def _head(platform: Platform) -> tuple[int, str]:
    """The log's length (events in all streams) and the digest of its stream heads: what the
    checkpoint row holds once an audit has verified everything."""
    engine = make_engine(platform.database_url)
    with session_factory(engine)() as session:
        heads = stream_heads(session)
    engine.dispose()
    return sum(n for n, _ in heads.values()), heads_digest(heads)


def _checkpoint(platform: Platform) -> list[tuple[int, str]]:
    engine = make_engine(platform.database_url)
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT seq, hash FROM audit_checkpoint")).all()
    engine.dispose()
    return [(int(seq), str(digest)) for seq, digest in rows]


def _edit_actor(platform: Platform, seq: int, actor: str) -> str:
    """Rewrite one event's actor behind the platform's back; the actor it had."""
    engine = make_engine(platform.database_url)
    with engine.begin() as connection:
        before = connection.execute(
            text("SELECT actor FROM events WHERE seq = :seq"), {"seq": seq}
        ).scalar_one()
        connection.execute(
            text("UPDATE events SET actor = :actor WHERE seq = :seq"), {"actor": actor, "seq": seq}
        )
    engine.dispose()
    return str(before)


def _credit(platform: Platform, people: dict[str, str], fen: int) -> None:
    engine = make_engine(platform.database_url)
    with session_factory(engine).begin() as session:
        operator = session.get(Principal, people["operator"])
        assert operator is not None
        market.credit(session, operator, people["consumer"], fen)
    engine.dispose()


def test_audit_checkpoint_incremental(platform: Platform) -> None:
    people = _people(platform, 5_000)
    _credit(platform, people, 7_000)
    assert _audit(platform).returncode == 0  # the full walk stores where it stopped
    assert _checkpoint(platform) == [_head(platform)]
    again = _audit(platform, "--incremental")
    assert again.returncode == 0 and "(0 since the checkpoint)" in again.stdout

    # an edit BEFORE the checkpoint: the incremental check does not walk there; the full does
    original = _edit_actor(platform, 1, "someone else")
    assert _audit(platform, "--incremental").returncode == 0
    full = _audit(platform, "--full")
    assert full.returncode == 1 and "event #1 " in full.stderr
    # a failed full walk drops the checkpoint: the next incremental check walks from #1 too
    assert _checkpoint(platform) == []
    assert "event #1 " in _audit(platform, "--incremental").stderr
    _edit_actor(platform, 1, original)
    assert _audit(platform).returncode == 0

    # an edit AFTER the checkpoint: found by the incremental check
    start, _ = _head(platform)
    _credit(platform, people, 1_000)
    _credit(platform, people, 2_000)
    ok = _audit(platform, "--incremental")
    assert ok.returncode == 0 and "(2 since the checkpoint)" in ok.stdout
    _credit(platform, people, 3_000)
    _edit_actor(platform, start + 3, "someone else")
    failed = _audit(platform, "--incremental")
    assert failed.returncode == 1 and f"event #{start + 3} " in failed.stderr
    assert [seq for seq, _ in _checkpoint(platform)] == [start + 2]  # not moved past a breach


def test_concurrent_audits_keep_one_checkpoint(platform: Platform) -> None:
    people = _people(platform, 5_000)
    for fen in (1, 2, 3):
        _credit(platform, people, fen)
    audits = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "suanli",
                "audit",
                "verify",
                "--incremental",
                "--db",
                platform.database_url,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(6)
    ]
    outcomes = [(process.wait(timeout=120), process.communicate()) for process in audits]
    assert all(code == 0 for code, _ in outcomes), outcomes
    assert _checkpoint(platform) == [_head(platform)]
