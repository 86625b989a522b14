"""Attack on idempotency: the same `Idempotency-Key` from many clients at once.

Eight clients send the same key at the same moment, thirty times over (a fresh key each round).
The old code checked for the key, then inserted; on PostgreSQL the losers of the race hit the
unique index and were answered 500. Now the insert runs in a savepoint and a conflict returns
the winner's task: one task per key, one 201 and seven 200s per round, every reply the same id.
"""

from __future__ import annotations

import threading
from collections import Counter

import httpx

from suanli.services.core import Role
from tests.integration.platform.conftest import Platform, submit_body

CLIENTS = 8
ROUNDS = 30


def test_concurrent_idempotent_submissions(platform: Platform) -> None:
    consumer = platform.token(Role.CONSUMER, "lab")
    barrier = threading.Barrier(CLIENTS)
    replies: list[list[httpx.Response]] = [[] for _ in range(CLIENTS)]
    failures: list[str] = []

    def client(i: int) -> None:
        with platform.client(consumer) as http:
            try:
                for n in range(ROUNDS):
                    barrier.wait()  # all eight send this round's key together
                    replies[i].append(
                        http.post(
                            "/v1/tasks",
                            json=submit_body("true", name=f"round {n}"),
                            headers={"Idempotency-Key": f"key-{n}"},
                        )
                    )
            except (httpx.HTTPError, threading.BrokenBarrierError) as error:
                failures.append(f"client {i}: {error!r}")  # e.g. a server that stopped answering
                barrier.abort()  # the others stop too

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert not failures, failures
    statuses = Counter(reply.status_code for row in replies for reply in row)
    assert statuses == {201: ROUNDS, 200: ROUNDS * (CLIENTS - 1)}, statuses  # zero 500s
    for n in range(ROUNDS):
        answered = [replies[i][n] for i in range(CLIENTS)]
        assert len({reply.json()["id"] for reply in answered}) == 1  # the same task for all
        assert sorted(reply.status_code for reply in answered) == [200] * (CLIENTS - 1) + [201]
    with platform.client(consumer) as http:
        tasks = http.get("/v1/tasks", params={"limit": 1000}).json()
    assert len(tasks) == ROUNDS  # exactly one task per key
    assert sorted(task["name"] for task in tasks) == sorted(f"round {n}" for n in range(ROUNDS))
