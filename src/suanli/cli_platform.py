"""The platform commands of the `suanli` CLI: the server, the agent and the HTTP client.

`serve` runs the FastAPI app under uvicorn (https with `--tls-cert` and `--tls-key`); `admin token
create|list|revoke` work on the database directly (bootstrapping, and revoking a token everywhere
within a second); `agent` runs a provider agent (its token from `--token-file` or `SUANLI_TOKEN`,
never from argv); the client commands (`submit`, `tasks`, `task`, `logs`, `cancel`, `sites`,
`pools`, `site add`, `site agent-token`, `pool add`, ...) read `SUANLI_SERVER`, `SUANLI_TOKEN` and
`SUANLI_CA` (or `--server` / `--token` / `--ca`), and verify an https server against that CA (an
untrusted certificate is one line). Every command has `--json`; ids and tokens are under the keys
`id` and `token`. Server errors are shown as the server's one-line message, exit 2.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Protocol, TypeVar

import httpx
import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from suanli.errors import SuanliError

out = Console(soft_wrap=False, width=200)
err = Console(stderr=True, soft_wrap=True)

F = TypeVar("F", bound=Callable[..., Any])


class Decorator(Protocol):
    """The CLI's error-mapping decorator (keeps the command's signature for Typer)."""

    def __call__(self, command: F, /) -> F: ...


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


def _print_json(document: object) -> None:
    sys.stdout.write(json.dumps(document, ensure_ascii=False, indent=2) + "\n")


def _tasks_table(tasks: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title)
    for column in (
        "Task 任务",
        "Name 名称",
        "State 状态",
        "Devices 设备",
        "Pool 资源池",
        "Exit 退出码",
        "Note 说明",
    ):
        table.add_column(column)
    for t in tasks:
        note = t.get("unplaced_reason") or ""
        if t.get("placement"):
            p = t["placement"]
            note = f"{p['cost_fen'] / 100:,.2f} CNY, {p['carbon_kg']:.3f} kg, {p['policy']}"
        table.add_row(
            t["id"],
            t["name"],
            t["state"],
            str(t["devices"]),
            t["pool"] or "—",
            "" if t["exit_code"] is None else str(t["exit_code"]),
            note[:90],
        )
    return table


def _task_body(
    command: list[str],
    devices: int,
    kind: str,
    model: list[str] | None,
    precision: str,
    work_flop: float | None,
    duration: float | None,
    memory_gb: float,
    tier: str,
    origin: str | None,
    data_gb: float,
    deadline: float | None,
    budget_fen: int | None,
    policy: str | None,
    name: str,
    env: list[str] | None,
    workdir: str | None,
) -> dict[str, Any]:
    """The JSON body of a task (submit and quote share it)."""
    from suanli.errors import InvalidValue

    variables: dict[str, str] = {}
    for item in env or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidValue("env", item, "KEY=VALUE", "KEY=VALUE 形式")
        variables[key] = value
    resources: dict[str, Any] = {
        "devices": devices,
        "device_kind": kind,
        "precision": precision,
        "memory_gb": memory_gb,
    }
    if model:
        resources["device_models"] = model
    if work_flop is not None:
        resources["work_flop"] = work_flop
    if duration is not None:
        resources["duration_s"] = duration
    body: dict[str, Any] = {
        "name": name or " ".join(command)[:200],
        "executors": [{"command": command, "env": variables, "workdir": workdir}],
        "resources": resources,
        "latency_tier": tier,
        "data_gb": data_gb,
    }
    optional: dict[str, Any] = {
        "origin": origin,
        "deadline_s": deadline,
        "max_price_fen": budget_fen,
        "policy": policy,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    return body


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


def _session(db: str | None, home: str | None) -> Any:
    """Sessions on the configured database, migrated (for the admin and audit commands)."""
    from suanli.config import load_settings
    from suanli.store.db import make_engine, session_factory, upgrade

    engine = make_engine(load_settings(database_url=db, home=home).url)
    upgrade(engine)
    return session_factory(engine)


def _admin_money(
    move: str, ident: str, fen: int, db: str | None, home: str | None, as_json: bool
) -> None:
    """An operator's top-up (`credit`) or payout, straight on the database."""
    from suanli.services import market
    from suanli.store.models import Principal

    operator = Principal(id="admin", name="admin (database)", role="operator")
    with _session(db, home).begin() as session:
        left = getattr(market, move)(session, operator, ident, fen)
    account = "wallet" if move == "credit" else "receivable"
    if as_json:
        _print_json({"id": ident, "balance": market.money(left)})
    else:
        out.print(f"{ident}: {account} {left} fen", markup=False)


def _tls_files(cert: Path | None, key: Path | None) -> tuple[str, str] | None:
    """The server's certificate and key files, both or neither, checked before it starts."""
    from suanli.errors import InvalidValue

    if cert is None and key is None:
        return None
    if cert is None or key is None:
        missing = "tls_cert" if cert is None else "tls_key"
        raise InvalidValue(
            missing,
            None,
            "both --tls-cert and --tls-key, or neither",
            "同时给出证书与私钥，或都不给",
        )
    import ssl

    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as error:
        raise InvalidValue(
            "tls_cert",
            str(cert),
            f"a PEM certificate matching --tls-key ({error})",
            f"与私钥匹配的 PEM 证书（{error}）",
        ) from None
    return str(cert), str(key)


def register(app: typer.Typer, handles_errors: Decorator) -> None:
    """Add the platform commands to the main Typer app."""

    @app.command()
    @handles_errors
    def serve(
        host: Annotated[str | None, typer.Option(help="Bind address / 监听地址")] = None,
        port: Annotated[int | None, typer.Option(help="Port / 端口")] = None,
        db: Annotated[str | None, typer.Option(help="Database URL (SQLite or PostgreSQL)")] = None,
        home: Annotated[str | None, typer.Option(help="Data directory / 数据目录")] = None,
        upgrade: Annotated[bool, typer.Option(help="Migrate the schema on start")] = True,
        tls_cert: Annotated[
            str | None, typer.Option(help="Serve https: certificate chain (PEM) / TLS 证书")
        ] = None,
        tls_key: Annotated[
            str | None, typer.Option(help="Serve https: private key (PEM) / TLS 私钥")
        ] = None,
    ) -> None:
        """Run the platform server (FastAPI + uvicorn). 运行平台服务。"""
        import uvicorn

        from suanli.api.app import create_app
        from suanli.config import load_settings

        settings = load_settings(
            host=host, port=port, database_url=db, home=home, tls_cert=tls_cert, tls_key=tls_key
        )
        tls = _tls_files(settings.tls_cert, settings.tls_key)
        application = create_app(settings, migrate=upgrade)
        err.print(
            f"suanli server on {'https' if tls else 'http'}://{settings.host}:{settings.port} "
            f"(docs at /docs), database {settings.url.split('@')[-1]}",
            markup=False,
        )
        uvicorn.run(
            application,
            host=settings.host,
            port=settings.port,
            log_level="warning",
            ssl_certfile=tls[0] if tls else None,
            ssl_keyfile=tls[1] if tls else None,
            proxy_headers=bool(settings.forwarded_allow_ips),
            forwarded_allow_ips=settings.forwarded_allow_ips or None,
        )

    admin = typer.Typer(help="Administration on the database directly. 直接操作数据库的管理命令。")
    token_app = typer.Typer(help="Bearer tokens. 访问令牌。")
    admin.add_typer(token_app, name="token")
    app.add_typer(admin, name="admin")

    @token_app.command("create")
    @handles_errors
    def token_create(
        role: Annotated[str, typer.Option(help="operator|provider|consumer / 角色")],
        name: Annotated[str, typer.Option(help="Owner name / 所有者名称")],
        expires_in: Annotated[
            str | None, typer.Option(help="Lifetime, e.g. 3600s, 90m, 12h, 90d / 有效期")
        ] = None,
        db: Annotated[str | None, typer.Option(help="Database URL")] = None,
        home: Annotated[str | None, typer.Option(help="Data directory")] = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Create a principal and print its token once. 创建令牌（仅显示一次）。"""
        from suanli.errors import InvalidValue
        from suanli.services.core import Role, create_token

        try:
            chosen = Role(role)
        except ValueError:
            raise InvalidValue(
                "role",
                role,
                "one of operator, provider, consumer",
                "operator、provider、consumer 之一",
            ) from None
        lifetime = None if expires_in is None else duration_s("expires_in", expires_in)
        with _session(db, home).begin() as session:
            principal, token = create_token(session, chosen, name, expires_in_s=lifetime)
        if as_json:
            _print_json({"id": principal.id, "role": chosen.value, "token": token})
        else:
            out.print(f"{chosen.value} {principal.id}: {token}", markup=False)
            err.print("store it now: it is shown only once / 请立即保存：仅显示一次")

    @token_app.command("list")
    @handles_errors
    def token_list(
        db: Annotated[str | None, typer.Option(help="Database URL")] = None,
        home: Annotated[str | None, typer.Option(help="Data directory")] = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Every token, without its secret. 列出令牌（不含令牌本身）。"""
        from suanli.api.tokens import token_read
        from suanli.services.core import list_tokens

        with _session(db, home)() as session:
            rows = [token_read(t, p).model_dump(mode="json") for t, p in list_tokens(session)]
        if as_json:
            _print_json(rows)
            return
        table = Table(title="Tokens 令牌")
        for column in (
            "Token 令牌",
            "Principal 主体",
            "Role 角色",
            "Name 名称",
            "Scope 范围",
            "Created 创建",
            "Expires 到期",
            "Revoked 吊销",
        ):
            table.add_column(column)
        for r in rows:
            table.add_row(
                r["id"],
                r["principal"],
                r["role"],
                r["name"],
                f"agent of {r['site_id']}" if r["site_id"] else "all",
                r["created_at"][:19],
                (r["expires_at"] or "never")[:19],
                (r["revoked_at"] or "")[:19],
            )
        out.print(table)

    @token_app.command("revoke")
    @handles_errors
    def token_revoke(
        token_id: Annotated[str, typer.Argument(help="Token id (tok-...) / 令牌 id")],
        db: Annotated[str | None, typer.Option(help="Database URL")] = None,
        home: Annotated[str | None, typer.Option(help="Data directory")] = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Revoke a token: every server refuses it within a second. 吊销令牌。"""
        from suanli.services.core import aware, revoke_token

        with _session(db, home).begin() as session:
            row = revoke_token(session, token_id, "admin")
            revoked_at = aware(row.revoked_at or row.created_at).isoformat()
        if as_json:
            _print_json({"id": token_id, "revoked_at": revoked_at})
        else:
            out.print(f"{token_id} revoked at {revoked_at} / 已吊销", markup=False)

    @app.command()
    @handles_errors
    def agent(
        server: ServerOpt,
        site: Annotated[str, typer.Option(help="Site id / 站点 id")],
        token_file: Annotated[
            str | None,
            typer.Option(help="File holding the agent token (else $SUANLI_TOKEN) / 令牌文件"),
        ] = None,
        token: Annotated[
            str | None, typer.Option(hidden=True, help="Refused: use --token-file")
        ] = None,
        backend: Annotated[str, typer.Option(help="local|slurm|ray / 执行后端")] = "local",
        slots: Annotated[int, typer.Option(help="Tasks at once / 并发任务数")] = 1,
        name: Annotated[str | None, typer.Option(help="Agent name / 代理名称")] = None,
        work_root: Annotated[str | None, typer.Option(help="Task directories / 工作目录")] = None,
        file_root: Annotated[
            list[str] | None,
            typer.Option(help="Directory tasks may read/write by file:// URL / 允许的文件目录"),
        ] = None,
        partition: Annotated[str | None, typer.Option(help="Slurm partition / Slurm 分区")] = None,
        account: Annotated[str | None, typer.Option(help="Slurm account / Slurm 账户")] = None,
        ray_address: Annotated[
            str, typer.Option(help="Ray dashboard address or 'local' / Ray 地址")
        ] = "local",
        poll_s: Annotated[
            float, typer.Option(help="Seconds between passes over the backend / 轮询间隔")
        ] = 0.5,
        ca: CaOpt = None,
    ) -> None:
        """Run a provider agent: lease tasks of a site and run them. 运行提供方代理。

        The token comes from --token-file or SUANLI_TOKEN, never from the command line."""
        from suanli.agent.backends import backend_named
        from suanli.agent.runner import agent_token, run_agent

        # first: SUANLI_TOKEN leaves the environment before anything is started
        secret = agent_token(
            token_file, argv_token=token, log=lambda line: err.print(line, markup=False)
        )
        options: dict[str, object] = {}
        if backend == "slurm":
            options = {"partition": partition, "account": account}
        elif backend == "ray":
            options = {"address": ray_address}
        run_agent(
            server,
            secret,
            site,
            backend=backend_named(backend, **options),
            slots=slots,
            name=name,
            work_root=work_root,
            file_roots=file_root or (),
            poll_s=poll_s,
            ca=ca,
        )

    @app.command()
    @handles_errors
    def submit(
        server: ServerOpt,
        token: TokenOpt,
        command: Annotated[list[str], typer.Argument(help="-- CMD ARGS... / 要运行的命令")],
        devices: Annotated[int, typer.Option(help="Devices / 设备数")] = 1,
        kind: Annotated[str, typer.Option(help="gpu|npu|cpu / 设备类型")] = "cpu",
        model: Annotated[list[str] | None, typer.Option(help="Allowed models / 型号")] = None,
        precision: Annotated[str, typer.Option(help="Precision / 精度")] = "fp32",
        work_flop: Annotated[float | None, typer.Option(help="Estimated work / 计算量")] = None,
        duration: Annotated[float | None, typer.Option(help="Estimated seconds / 预计时长")] = None,
        memory_gb: Annotated[float, typer.Option(help="Memory per device / 显存")] = 0.0,
        tier: Annotated[str, typer.Option(help="interactive|standard|batch / 时延等级")] = "batch",
        origin: Annotated[str | None, typer.Option(help="Where you are / 来源地")] = None,
        data_gb: Annotated[float, typer.Option(help="Input data, GB / 数据量")] = 0.0,
        deadline: Annotated[float | None, typer.Option(help="Seconds from now / 截止")] = None,
        budget_fen: Annotated[int | None, typer.Option(help="Price ceiling, fen / 预算")] = None,
        policy: Annotated[str | None, typer.Option(help="Placement policy / 调度策略")] = None,
        name: Annotated[str, typer.Option(help="Task name / 任务名称")] = "",
        env: Annotated[list[str] | None, typer.Option(help="KEY=VALUE / 环境变量")] = None,
        workdir: Annotated[str | None, typer.Option(help="Working directory / 工作目录")] = None,
        idempotency_key: Annotated[str | None, typer.Option(help="Retry-safe key / 幂等键")] = None,
        wait: Annotated[bool, typer.Option(help="Follow until it ends / 等待结束")] = False,
        as_json: JsonOpt = False,
        ca: CaOpt = None,
    ) -> None:
        """Submit a command as a task. 提交任务。"""
        body = _task_body(
            command,
            devices,
            kind,
            model,
            precision,
            work_flop,
            duration,
            memory_gb,
            tier,
            origin,
            data_gb,
            deadline,
            budget_fen,
            policy,
            name,
            env,
            workdir,
        )
        client = Client(server, token, ca)
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        task = client.call("POST", "/v1/tasks", json=body, headers=headers)
        if not wait:
            if as_json:
                _print_json(task)
            else:
                out.print(task["id"], markup=False)
            return
        task = _follow(client, task["id"], quiet=as_json)
        logs = client.call("GET", f"/v1/tasks/{task['id']}/logs")
        if as_json:
            _print_json(
                {**task, "stdout_tail": logs["stdout_tail"], "stderr_tail": logs["stderr_tail"]}
            )
        else:
            out.print(f"{task['id']} {task['state']} exit {task['exit_code']}", markup=False)
            if logs["stdout_tail"]:
                sys.stdout.write(logs["stdout_tail"])
            if logs["stderr_tail"]:
                sys.stderr.write(logs["stderr_tail"])
        code = task["exit_code"]
        if task["state"] == "COMPLETE":
            raise typer.Exit(0)
        raise typer.Exit(code if isinstance(code, int) and code > 0 else 1)

    def _follow(client: Client, task_id: str, quiet: bool) -> dict[str, Any]:
        task: dict[str, Any] = client.call("GET", f"/v1/tasks/{task_id}")
        started = time.monotonic()
        with Live(console=err, transient=True, auto_refresh=False) as live:
            while task["state"] not in TERMINAL:
                if not quiet:
                    where = task["pool"] or (task["unplaced_reason"] or "")[:80]
                    live.update(
                        f"{task_id}: {task['state']} · {where} · "
                        f"{time.monotonic() - started:.0f} s",
                        refresh=True,
                    )
                time.sleep(0.5)
                task = client.call("GET", f"/v1/tasks/{task_id}")
        return task

    @app.command()
    @handles_errors
    def tasks(
        server: ServerOpt,
        token: TokenOpt,
        state: Annotated[str | None, typer.Option(help="Only this state / 状态")] = None,
        limit: Annotated[int, typer.Option(help="At most / 最多")] = 100,
        as_json: JsonOpt = False,
        ca: CaOpt = None,
    ) -> None:
        """List your tasks. 列出任务。"""
        params: dict[str, Any] = {"limit": limit}
        if state:
            params["state"] = state
        rows = Client(server, token, ca).call("GET", "/v1/tasks", params=params)
        if as_json:
            _print_json(rows)
        else:
            out.print(_tasks_table(rows, "Tasks 任务"))

    @app.command()
    @handles_errors
    def task(
        server: ServerOpt,
        token: TokenOpt,
        task_id: Annotated[str, typer.Argument(help="Task id / 任务 id")],
        as_json: JsonOpt = False,
        ca: CaOpt = None,
    ) -> None:
        """Show one task. 查看任务。"""
        row = Client(server, token, ca).call("GET", f"/v1/tasks/{task_id}")
        if as_json:
            _print_json(row)
        else:
            out.print(_tasks_table([row], f"Task 任务 {task_id}"))

    @app.command()
    @handles_errors
    def logs(
        server: ServerOpt,
        token: TokenOpt,
        task_id: Annotated[str, typer.Argument(help="Task id / 任务 id")],
        as_json: JsonOpt = False,
        ca: CaOpt = None,
    ) -> None:
        """Show a task's output tails. 查看任务输出。"""
        row = Client(server, token, ca).call("GET", f"/v1/tasks/{task_id}/logs")
        if as_json:
            _print_json(row)
        else:
            sys.stdout.write(row["stdout_tail"])
            sys.stderr.write(row["stderr_tail"])

    @app.command()
    @handles_errors
    def cancel(
        server: ServerOpt,
        token: TokenOpt,
        task_id: Annotated[str, typer.Argument(help="Task id / 任务 id")],
        as_json: JsonOpt = False,
        ca: CaOpt = None,
    ) -> None:
        """Cancel a task. 取消任务。"""
        row = Client(server, token, ca).call("POST", f"/v1/tasks/{task_id}/cancel")
        if as_json:
            _print_json(row)
        else:
            out.print(
                f"{row['id']} {row['state']}"
                + (" (cancel requested / 已请求取消)" if row["cancel_requested"] else ""),
                markup=False,
            )

    @app.command()
    @handles_errors
    def sites(
        server: ServerOpt,
        token: TokenOpt,
        as_json: JsonOpt = False,
        ca: CaOpt = None,
    ) -> None:
        """List sites. 列出站点。"""
        rows = Client(server, token, ca).call("GET", "/v1/sites")
        if as_json:
            _print_json(rows)
            return
        table = Table(title="Sites 站点")
        for column in (
            "Site 站点",
            "Name 名称",
            "Cluster 集群",
            "Province 省份",
            "PUE",
            "Green 绿电",
        ):
            table.add_column(column)
        for s in rows:
            table.add_row(
                s["id"],
                s["name"],
                s["cluster"] or "—",
                s["province"],
                f"{s['pue']:g}",
                f"{s['green_share']:.0%}",
            )
        out.print(table)

    @app.command()
    @handles_errors
    def pools(
        server: ServerOpt,
        token: TokenOpt,
        as_json: JsonOpt = False,
        ca: CaOpt = None,
    ) -> None:
        """List pools with their free devices. 列出资源池。"""
        rows = Client(server, token, ca).call("GET", "/v1/pools")
        if as_json:
            _print_json(rows)
            return
        table = Table(title="Pools 资源池")
        for column in ("Pool 资源池", "Device 设备", "Count 总数", "Free 空闲", "Price fen/h 单价"):
            table.add_column(column)
        for p in rows:
            table.add_row(
                p["id"],
                p["device"],
                str(p["count"]),
                str(p["free"]),
                str(p["price_fen_per_device_hour"]),
            )
        out.print(table)

    site_app = typer.Typer(help="Provider sites. 提供方站点。")
    pool_app = typer.Typer(help="Provider pools. 提供方资源池。")
    app.add_typer(site_app, name="site")
    app.add_typer(pool_app, name="pool")

    @site_app.command("add")
    @handles_errors
    def site_add(
        server: ServerOpt,
        token: TokenOpt,
        name: Annotated[str, typer.Option(help="Site name / 站点名称")],
        cluster: Annotated[str | None, typer.Option(help="Catalog cluster id / 集群")] = None,
        province: Annotated[str | None, typer.Option(help="Province / 省份")] = None,
        lat: Annotated[float | None, typer.Option(help="Latitude / 纬度")] = None,
        lon: Annotated[float | None, typer.Option(help="Longitude / 经度")] = None,
        pue: Annotated[float | None, typer.Option(help="PUE")] = None,
        green_share: Annotated[float | None, typer.Option(help="Green power share / 绿电")] = None,
        as_json: JsonOpt = False,
        ca: CaOpt = None,
    ) -> None:
        """Register a site (a cluster, or a province with coordinates). 注册站点。"""
        body = {
            k: v
            for k, v in {
                "name": name,
                "cluster": cluster,
                "province": province,
                "lat": lat,
                "lon": lon,
                "pue": pue,
                "green_share": green_share,
            }.items()
            if v is not None
        }
        row = Client(server, token, ca).call("POST", "/v1/sites", json=body)
        _print_json(row) if as_json else out.print(row["id"], markup=False)

    @site_app.command("agent-token")
    @handles_errors
    def site_agent_token(
        server: ServerOpt,
        token: TokenOpt,
        site: Annotated[str, typer.Option(help="Site id / 站点 id")],
        name: Annotated[str, typer.Option(help="Token name / 令牌名称")] = "agent",
        expires_in: Annotated[
            str | None, typer.Option(help="Lifetime, e.g. 3600s, 90m, 12h, 30d / 有效期")
        ] = None,
        as_json: JsonOpt = False,
        ca: CaOpt = None,
    ) -> None:
        """Issue a token for the agents of one site (shown once). 签发站点代理令牌。"""
        body: dict[str, Any] = {"name": name}
        if expires_in is not None:
            body["expires_in_s"] = int(duration_s("expires_in", expires_in))
        row = Client(server, token, ca).call("POST", f"/v1/sites/{site}/agent-tokens", json=body)
        if as_json:
            _print_json(row)
        else:
            out.print(row["token"], markup=False)
            err.print(
                f"{row['id']}: agent token for {row['site_id']}, expires "
                f"{row['expires_at'] or 'never'}; give it to the agent with --token-file or "
                "SUANLI_TOKEN; it is shown only once / 仅显示一次，请通过 --token-file 或 "
                "SUANLI_TOKEN 交给代理",
                markup=False,
            )

    @pool_app.command("add")
    @handles_errors
    def pool_add(
        server: ServerOpt,
        token: TokenOpt,
        site: Annotated[str, typer.Option(help="Site id / 站点 id")],
        device: Annotated[str, typer.Option(help="Device model, or 'cpu' / 设备")],
        count: Annotated[int, typer.Option(help="Devices / 数量")],
        price_fen_per_hour: Annotated[int, typer.Option(help="Fen per device-hour / 单价")],
        as_json: JsonOpt = False,
        ca: CaOpt = None,
    ) -> None:
        """Add a pool of devices to a site. 添加资源池。"""
        row = Client(server, token, ca).call(
            "POST",
            "/v1/pools",
            json={
                "site_id": site,
                "device": device,
                "count": count,
                "price_fen_per_device_hour": price_fen_per_hour,
            },
        )
        _print_json(row) if as_json else out.print(row["id"], markup=False)

    @app.command()
    @handles_errors
    def quote(
        server: ServerOpt,
        token: TokenOpt,
        command: Annotated[list[str], typer.Argument(help="-- CMD ARGS... / 要运行的命令")],
        devices: Annotated[int, typer.Option(help="Devices / 设备数")] = 1,
        kind: Annotated[str, typer.Option(help="gpu|npu|cpu / 设备类型")] = "cpu",
        model: Annotated[list[str] | None, typer.Option(help="Allowed models / 型号")] = None,
        precision: Annotated[str, typer.Option(help="Precision / 精度")] = "fp32",
        work_flop: Annotated[float | None, typer.Option(help="Estimated work / 计算量")] = None,
        duration: Annotated[float | None, typer.Option(help="Estimated seconds / 预计时长")] = None,
        tier: Annotated[str, typer.Option(help="interactive|standard|batch / 时延等级")] = "batch",
        origin: Annotated[str | None, typer.Option(help="Where you are / 来源地")] = None,
        data_gb: Annotated[float, typer.Option(help="Input data, GB / 数据量")] = 0.0,
        deadline: Annotated[float | None, typer.Option(help="Seconds from now / 截止")] = None,
        policy: Annotated[str | None, typer.Option(help="Placement policy / 调度策略")] = None,
        as_json: JsonOpt = False,
        ca: CaOpt = None,
    ) -> None:
        """Priced options for a task, valid for a few minutes. 报价。"""
        body = _task_body(
            command,
            devices,
            kind,
            model,
            precision,
            work_flop,
            duration,
            0.0,
            tier,
            origin,
            data_gb,
            deadline,
            None,
            policy,
            "",
            None,
            None,
        )
        row = Client(server, token, ca).call("POST", "/v1/quotes", json=body)
        if as_json:
            _print_json(row)
            return
        table = Table(title=f"Quote 报价 {row['id']} (valid until {row['expires_at']})")
        for column in (
            "#",
            "Pool 资源池",
            "Province 省份",
            "Duration 时长",
            "Max CNY 最高价",
            "Carbon kg 碳排",
            "Why 原因",
        ):
            table.add_column(column)
        for n, option in enumerate(row["options"]):
            table.add_row(
                str(n),
                option["pool"],
                option["province"],
                f"{option['duration_s']:.0f} s",
                f"{option['price_range']['max']['fen'] / 100:,.2f}",
                f"{option['carbon_kg']:.3f}",
                option["reason"],
            )
        out.print(table)
        if not row["options"]:
            out.print(f"no option / 无可用选项: {row['unavailable']}", markup=False)

    @app.command()
    @handles_errors
    def accept(
        server: ServerOpt,
        token: TokenOpt,
        quote_id: Annotated[str, typer.Argument(help="Quote id / 报价 id")],
        option: Annotated[int, typer.Option(help="Option number / 选项序号")] = 0,
        as_json: JsonOpt = False,
        ca: CaOpt = None,
    ) -> None:
        """Accept a quote: escrow the price, create the order and the task. 接受报价。"""
        row = Client(server, token, ca).call(
            "POST", f"/v1/quotes/{quote_id}/accept", json={"option": option}
        )
        _print_json(row) if as_json else out.print(
            f"order {row['id']} task {row['task_id']} escrow {row['escrow']['fen']} fen",
            markup=False,
        )

    @app.command()
    @handles_errors
    def balance(
        server: ServerOpt,
        token: TokenOpt,
        as_json: JsonOpt = False,
        ca: CaOpt = None,
    ) -> None:
        """Your account balances (fen). 账户余额。"""
        row = Client(server, token, ca).call("GET", "/v1/balance")
        if as_json:
            _print_json(row)
            return
        for account, amount in row["accounts"].items():
            out.print(
                f"{account}: {amount['fen'] / 100:,.2f} {amount['currency']} ({amount['fen']} fen)",
                markup=False,
            )

    @app.command()
    @handles_errors
    def statement(
        server: ServerOpt,
        token: TokenOpt,
        account: Annotated[str, typer.Option(help="Account, e.g. wallet:cons-... / 账户")],
        start: Annotated[str | None, typer.Option("--from", help="ISO date-time / 起")] = None,
        end: Annotated[str | None, typer.Option("--to", help="ISO date-time / 止")] = None,
        format_: Annotated[str, typer.Option("--format", help="table|csv|json")] = "table",
        ca: CaOpt = None,
    ) -> None:
        """Postings of an account, for invoicing. 账单明细。"""
        params = {k: v for k, v in {"account": account, "from": start, "to": end}.items() if v}
        row = Client(server, token, ca).call("GET", "/v1/statement", params=params)
        if format_ == "json":
            _print_json(row)
        elif format_ == "csv":
            import csv

            writer = csv.writer(sys.stdout)
            writer.writerow(
                ["at", "transaction", "kind", "order", "amount_fen", "balance_fen", "currency"]
            )
            for line in row["lines"]:
                writer.writerow(
                    [
                        line["at"],
                        line["transaction"],
                        line["kind"],
                        line["order"],
                        line["amount"]["fen"],
                        line["balance"]["fen"],
                        "CNY",
                    ]
                )
        else:
            table = Table(title=f"Statement 账单 {account}")
            for column in ("At 时间", "Kind 类型", "Order 订单", "Amount 金额 fen", "Balance 余额"):
                table.add_column(column)
            for line in row["lines"]:
                table.add_row(
                    line["at"],
                    line["kind"],
                    line["order"] or "",
                    str(line["amount"]["fen"]),
                    str(line["balance"]["fen"]),
                )
            out.print(table)

    @app.command()
    @handles_errors
    def rate(
        server: ServerOpt,
        token: TokenOpt,
        order_id: Annotated[str, typer.Argument(help="Order id / 订单 id")],
        stars: Annotated[int, typer.Option(help="1..5 / 评分")],
        comment: Annotated[str, typer.Option(help="Comment / 评语")] = "",
        as_json: JsonOpt = False,
        ca: CaOpt = None,
    ) -> None:
        """Rate a finished order, once. 评价订单。"""
        row = Client(server, token, ca).call(
            "POST", f"/v1/orders/{order_id}/rating", json={"stars": stars, "comment": comment}
        )
        _print_json(row) if as_json else out.print(row["id"], markup=False)

    @admin.command("credit")
    @handles_errors
    def admin_credit(
        consumer: Annotated[str, typer.Option(help="Consumer id / 使用方 id")],
        fen: Annotated[int, typer.Option(help="Amount in fen / 金额（分）")],
        db: Annotated[str | None, typer.Option(help="Database URL")] = None,
        home: Annotated[str | None, typer.Option(help="Data directory")] = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Top up a consumer's wallet. 充值。"""
        _admin_money("credit", consumer, fen, db, home, as_json)

    @admin.command("payout")
    @handles_errors
    def admin_payout(
        provider: Annotated[str, typer.Option(help="Provider id / 提供方 id")],
        fen: Annotated[int, typer.Option(help="Amount in fen / 金额（分）")],
        db: Annotated[str | None, typer.Option(help="Database URL")] = None,
        home: Annotated[str | None, typer.Option(help="Data directory")] = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Pay a provider out of its receivable. 结算付款。"""
        _admin_money("payout", provider, fen, db, home, as_json)

    audit = typer.Typer(help="The audit trail. 审计。")
    app.add_typer(audit, name="audit")

    @audit.command("verify")
    @handles_errors
    def audit_verify(
        db: Annotated[str | None, typer.Option(help="Database URL")] = None,
        home: Annotated[str | None, typer.Option(help="Data directory")] = None,
        full: Annotated[
            bool,
            typer.Option(
                "--full/--incremental",
                help="Walk from the first event (default), or resume from the last checkpoint "
                "/ 从第一条事件校验（默认），或从上次检查点继续",
            ),
        ] = True,
    ) -> None:
        """Prove the books: the hash chain, every posting, and a replay of the ledger in which
        no wallet, escrow or receivable goes below zero and each order settles once; exit 1
        naming the first breach. 校验审计链与账本（余额不为负、每单只结算一次）。"""
        from sqlalchemy.orm import Session

        from suanli.services import market
        from suanli.store.db import make_engine

        sessions = _session(db, home)
        if full:
            # one consistent snapshot, without holding up the platform's writers
            engine = sessions.kw["bind"]
            reader = (
                engine.execution_options(isolation_level="REPEATABLE READ")
                if engine.dialect.name == "postgresql"
                else make_engine(engine.url.render_as_string(hide_password=False), reader=True)
            )
            with Session(reader) as session:
                result = market.walk(session, full=True)
            with sessions.begin() as session:
                market.save_checkpoint(session, result)
        else:
            with sessions.begin() as session:
                result = market.audit(session)
        if result.problem is not None:
            err.print(f"audit FAILED / 审计失败: {result.problem}", markup=False)
            raise typer.Exit(1)
        how = "from the first event" if full else f"{result.walked} since the checkpoint"
        out.print(
            f"audit OK: {result.events} events ({how}) and {result.transactions} transactions "
            f"verify; no balance below zero / 审计通过：{result.events} 条事件、"
            f"{result.transactions} 笔交易",
            markup=False,
        )

    @audit.command("export")
    @handles_errors
    def audit_export(
        start: Annotated[str | None, typer.Option("--from", help="ISO date-time")] = None,
        end: Annotated[str | None, typer.Option("--to", help="ISO date-time")] = None,
        db: Annotated[str | None, typer.Option(help="Database URL")] = None,
        home: Annotated[str | None, typer.Option(help="Data directory")] = None,
    ) -> None:
        """Write the events with their hashes as JSON lines. 导出审计记录。"""
        from datetime import datetime

        from sqlalchemy import select

        from suanli.services.core import aware
        from suanli.store.models import EventRow

        low = aware(datetime.fromisoformat(start)) if start else None
        high = aware(datetime.fromisoformat(end)) if end else None
        with _session(db, home)() as session:
            for event in session.scalars(select(EventRow).order_by(EventRow.seq)):
                at = aware(event.at)
                if (low and at < low) or (high and at >= high):
                    continue
                sys.stdout.write(
                    json.dumps(
                        {
                            "seq": event.seq,
                            "at": at.isoformat(),
                            "kind": event.kind,
                            "subject": event.subject,
                            "actor": event.actor,
                            "data": event.data,
                            "prev_hash": event.prev_hash,
                            "hash": event.hash,
                        },
                        ensure_ascii=False,
                        sort_keys=True,
                    )
                    + "\n"
                )
