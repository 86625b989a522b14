"""TLS on the client side: how the CLI and the agent verify the server.

Owns `client_verify(ca)`: with a CA file (`--ca FILE`, else the `SUANLI_CA` environment
variable) an `ssl.SSLContext` that trusts that CA (and checks the host name); without one, the
system's trust store (httpx's default). A missing or unreadable CA file is an `InvalidValue`
naming the field. `certificate_problem(error)` finds the certificate failure inside an httpx
error, so that the edges can say it in one line instead of a traceback.
Invariant: verification is never turned off.
"""

from __future__ import annotations

import os
import ssl

from suanli.errors import InvalidValue

CA_ENV = "SUANLI_CA"


def client_verify(ca: str | None = None) -> ssl.SSLContext | bool:
    """What httpx's `verify=` gets: a context trusting `ca` (or $SUANLI_CA), else True."""
    path = ca or os.environ.get(CA_ENV) or None
    if path is None:
        return True
    try:
        return ssl.create_default_context(cafile=path)
    except (OSError, ssl.SSLError) as error:
        raise InvalidValue(
            "ca",
            path,
            f"a readable PEM file of CA certificates ({error})",
            f"可读取的 PEM 格式 CA 证书文件（{error}）",
        ) from None


def certificate_problem(error: BaseException) -> str | None:
    """The server-certificate failure behind `error` (e.g. an httpx.ConnectError), if any."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            return str(current.verify_message or current.reason or current)
        if isinstance(current, ssl.SSLError):
            return str(current.reason or current)
        current = current.__cause__ or current.__context__
    text = str(error)
    return text if "CERTIFICATE_VERIFY_FAILED" in text else None
