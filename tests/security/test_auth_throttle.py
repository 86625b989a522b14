"""Attack: guessing tokens as fast as the server answers (300 bad-token requests a second were
all answered 401, each after a database lookup).

More than 20 failed authentications from one address within 10 s refuse that address with 429
and Retry-After, before any database work; another address is unaffected.
"""

from __future__ import annotations

import secrets
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from suanli.services.core import Role
from tests.integration.platform.conftest import Platform

GUESSES = 300
WORKERS = 8
ALLOWED_FAILURES = 20  # the default: more than this within 10 s blocks the address


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # no database involved
def test_bad_tokens_are_throttled(platform: Platform) -> None:
    consumer = platform.token(Role.CONSUMER, "lab")

    def guess(http: httpx.Client) -> httpx.Response:
        return http.get(
            "/v1/tasks", headers={"Authorization": f"Bearer sl_{secrets.token_urlsafe(32)}"}
        )

    with (
        httpx.Client(base_url=platform.url, timeout=30) as attacker,
        ThreadPoolExecutor(WORKERS) as pool,
    ):
        answers = list(pool.map(lambda _: guess(attacker), range(GUESSES)))
        statuses = Counter(a.status_code for a in answers)
        assert set(statuses) == {401, 429}, statuses
        # at most the allowed failures, plus the guesses already in flight when it blocked
        assert ALLOWED_FAILURES < statuses[401] <= ALLOWED_FAILURES + WORKERS, statuses
        assert statuses[429] == GUESSES - statuses[401]
        refused = next(a for a in answers if a.status_code == 429)
        assert int(refused.headers["Retry-After"]) > 0
        assert "message_zh" in refused.json()["error"]
        # while blocked, this address is refused even with a valid token
        blocked = attacker.get("/v1/tasks", headers={"Authorization": f"Bearer {consumer}"})
        assert blocked.status_code == 429
        assert attacker.get("/healthz").status_code == 200

    # a good token from another address is served as usual
    other = httpx.HTTPTransport(local_address="127.0.0.2")
    with httpx.Client(
        base_url=platform.url,
        transport=other,
        timeout=30,
        headers={"Authorization": f"Bearer {consumer}"},
    ) as neighbour:
        assert neighbour.get("/v1/tasks").status_code == 200
