"""Suite-wide settings: a `suanli serve` started by a test runs no digital-twin worker process
unless the test asks for one (`@pytest.mark.twin_workers` on the platform fixture, or
SUANLI_TWIN_WORKERS=1 in the server's environment): most tests never replay the twin, and a
worker per server would double every server's start-up on a two-core machine.

The test process builds httpx's default TLS context once (see `_one_default_tls_context`), and
the suite's longest modules are collected first (see `pytest_collection_modifyitems`)."""

from __future__ import annotations

import os
import ssl
from collections.abc import Callable
from typing import Any

import pytest

from tests.objects import S3, s3_server

os.environ.setdefault("SUANLI_TWIN_WORKERS", "0")


def _one_default_tls_context() -> None:
    """Every `httpx.Client()` / `httpx.get()` with the default `verify=True` builds a new TLS
    context and loads the whole CA bundle into it (30-70 ms of CPU, even for a plain http://
    URL): the suite's health polls and per-request clients spent a quarter of the test
    process's time there, on a two-core machine where the servers under test need the CPU.
    Here the test process builds that default context once per CA setting and reuses it; it is
    the same context httpx would build (httpx's own function makes it). Clients that pass their
    own `verify` (a context, a CA file, False) or a `cert` are untouched, and so is every
    process the tests start (servers, agents, the CLI)."""
    try:
        from httpx._transports import default as transports
    except ImportError:  # pragma: no cover - another httpx layout: build contexts as before
        return
    build: Callable[..., ssl.SSLContext] | None = getattr(transports, "create_ssl_context", None)
    if build is None or getattr(build, "shared_default", False):  # pragma: no cover
        return
    shared: dict[tuple[Any, ...], ssl.SSLContext] = {}

    def create_ssl_context(
        verify: Any = True, cert: Any = None, trust_env: bool = True
    ) -> ssl.SSLContext:
        if verify is not True or cert is not None:
            return build(verify=verify, cert=cert, trust_env=trust_env)
        key = (trust_env, os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))
        if key not in shared:
            shared[key] = build(verify=verify, cert=cert, trust_env=trust_env)
        return shared[key]

    setattr(create_ssl_context, "shared_default", True)  # noqa: B010 - set once, in this process
    setattr(transports, "create_ssl_context", create_ssl_context)  # noqa: B010


_one_default_tls_context()

# The suite's longest modules (each holds a test of 25 s or more, `--durations`), collected
# first: pytest-xdist hands tests out in collection order, so a long test collected late can
# leave one worker running it alone while the other has nothing left. Order within a module is
# kept (module-scoped fixtures are set up once); a path no longer in the suite is ignored.
LONGEST_FIRST = (
    "tests/integration/platform/test_many_servers.py",
    "tests/integration/platform/test_tes_snakemake.py",
    "tests/integration/platform/test_schemathesis.py",
    "tests/integration/platform/test_fair_share.py",
    "tests/integration/market/test_money_machine.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        path = item.nodeid.split("::", 1)[0]
        return LONGEST_FIRST.index(path) if path in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: every other test keeps its place


@pytest.fixture(scope="session")
def s3() -> S3:
    """The S3-compatible test server (`tests.objects`)."""
    return s3_server()
