"""Suite-wide settings: a `suanli serve` started by a test runs no digital-twin worker process
unless the test asks for one (`@pytest.mark.twin_workers` on the platform fixture, or
SUANLI_TWIN_WORKERS=1 in the server's environment): most tests never replay the twin, and a
worker per server would double every server's start-up on a two-core machine.

The test process builds httpx's default TLS context once (see `_one_default_tls_context`)."""

from __future__ import annotations

import os
import ssl
from collections.abc import Callable
from typing import Any

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
