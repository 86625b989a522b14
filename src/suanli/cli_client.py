"""What the CLI's command modules share: the consoles, the error mapping, the common options,
the HTTP client of the platform API, JSON output, durations, and sessions on the database.

`handles_errors` maps the `SuanliError` hierarchy to one stderr line and exit code 2, in one
place, for every command. `Client` is a thin JSON client; over https it verifies the server
against `--ca` / `SUANLI_CA` (an untrusted certificate is one line, `Untrusted`); a refused request
is the server's own one-line message (`ServerError`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from typing import Annotated, Any, Protocol, TypeVar, cast

import httpx
import typer
from rich.console import Console

from suanli.errors import SuanliError

out = Console(soft_wrap=False, width=200)
err = Console(stderr=True, soft_wrap=True)

F = TypeVar("F", bound=Callable[..., Any])


class Decorator(Protocol):
    """The CLI's error-mapping decorator (keeps the command's signature for Typer)."""

    def __call__(self, command: F, /) -> F: ...


def handles_errors(command: F) -> F:
    """Map the error hierarchy to one stderr line and exit code 2, in one place."""

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except SuanliError as error:
            err.print(f"error: {error.one_line()}", markup=False, highlight=False)
            raise typer.Exit(2) from None

    return cast(F, wrapper)


TERMINAL = {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED"}

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts / 输出 JSON")]

ServerOpt = Annotated[str, typer.Option(envvar="SUANLI_SERVER", help="Server URL / 服务地址")]

TokenOpt = Annotated[str, typer.Option(envvar="SUANLI_TOKEN", help="Bearer token / 访问令牌")]

CaOpt = Annotated[
    str | None,
    typer.Option(
        envvar="SUANLI_CA",
        help="CA certificate (PEM) to verify an https server / 校验 https 服务端的 CA 证书",
    ),
]


class ServerError(SuanliError):
    """The server refused a request: its own message, with the status."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        error = body.get("error", {}) if isinstance(body, dict) else {}
        message = error.get("message") or f"HTTP {status}"
        self.status = status
        super().__init__(f"{message} (HTTP {status})", error.get("message_zh") or message)


class Unreachable(SuanliError):
    def __init__(self, server: str, why: str) -> None:
        super().__init__(
            f"cannot reach the suanli server at {server} ({why}); start it with 'suanli serve' "
            "or set SUANLI_SERVER",
            f"无法连接 suanli 服务 {server}（{why}）；请先运行 'suanli serve' 或设置 SUANLI_SERVER",
        )


class Untrusted(SuanliError):
    def __init__(self, server: str, why: str) -> None:
        super().__init__(
            f"the server at {server} presented a certificate this client does not trust ({why}); "
            "pass --ca FILE (or set SUANLI_CA) with the CA certificate that signed it",
            f"服务 {server} 的证书不受信任（{why}）；"
            "请用 --ca FILE（或 SUANLI_CA）指定签发它的 CA 证书",
        )


class Client:
    """A thin JSON client of the platform API; over https it verifies the server against `ca`
    (a PEM file, else $SUANLI_CA, else the system's trust store)."""

    def __init__(self, server: str, token: str, ca: str | None = None) -> None:
        from suanli.tls import client_verify

        self.server = server.rstrip("/")
        self.http = httpx.Client(
            base_url=self.server,
            timeout=30.0,
            headers={"Authorization": f"Bearer {token}"},
            verify=client_verify(ca),
        )

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        from suanli.tls import certificate_problem

        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            problem = certificate_problem(error)
            if problem is not None:
                raise Untrusted(self.server, problem) from None
            raise Unreachable(self.server, type(error).__name__) from None
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.status_code >= 400:
            raise ServerError(response.status_code, body)
        return body


def platform_client(
    server: str | None, token: str | None, ca: str | None, purpose: str = ""
) -> Client:
    """A `Client` of the platform at `server` with `token`, or InvalidValue naming the one
    missing (`purpose`: what it is needed for, appended to the English hint)."""
    if not server or not token:
        from suanli.errors import InvalidValue

        missing = "server" if not server else "token"
        raise InvalidValue(
            missing,
            None,
            f"--{missing} or SUANLI_{missing.upper()}{purpose}",
            f"--{missing} 或 SUANLI_{missing.upper()}",
        )
    return Client(server, token, ca)


def print_json(document: object) -> None:
    sys.stdout.write(json.dumps(document, ensure_ascii=False, indent=2) + "\n")


DURATION_UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


def duration_s(field: str, text: str) -> float:
    """Seconds in a duration such as `90`, `3600s`, `90m`, `12h` or `30d`."""
    from suanli.errors import InvalidValue

    value = text.strip().lower()
    unit = value[-1:] if value[-1:] in DURATION_UNITS_S else "s"
    number = value[:-1] if value[-1:] in DURATION_UNITS_S else value
    try:
        seconds = float(number) * DURATION_UNITS_S[unit]
    except ValueError:
        seconds = float("nan")
    if not (0 < seconds < float("inf")):
        raise InvalidValue(
            field,
            text,
            "a positive duration such as 3600s, 90m, 12h or 30d",
            "正的时长，如 3600s、90m、12h、30d",
        )
    return seconds


def open_sessions(db: str | None, home: str | None) -> Any:
    """Sessions on the configured database, migrated (for the admin and audit commands)."""
    from suanli.config import load_settings
    from suanli.store.db import make_engine, session_factory, upgrade

    engine = make_engine(load_settings(database_url=db, home=home).url)
    upgrade(engine)
    return session_factory(engine)
