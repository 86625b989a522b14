"""The platform commands of the `suanli` CLI: the server, the scheduler and the agent here, and
one Typer sub-app per resource beside them.

`serve` runs the FastAPI app under uvicorn (https with `--tls-cert` and `--tls-key`);
`scheduler` runs the scheduling loop alone; `agent` runs a provider agent (its token from
`--token-file` or `SUANLI_TOKEN`, never from argv). The resources' commands live in their own
modules, each a Typer sub-app that `register` adds: `cli_tasks` (`submit`, `tasks`, `task`,
`logs`, `cancel`), `cli_sites` (`sites`, `pools`, `site add`, `site agent-token`, `pool add`),
`cli_market` (`quote`, `accept`, `balance`, `statement`, `rate`), `cli_admin` (`admin token
create|list|revoke`, `admin credit`, `admin payout`: on the database directly) and `cli_audit`
(`audit verify`, `audit export`); what they share (the HTTP client, options, error mapping) is in
`cli_client`. The client commands read `SUANLI_SERVER`, `SUANLI_TOKEN` and `SUANLI_CA` (or
`--server` / `--token` / `--ca`), and verify an https server against that CA (an untrusted
certificate is one line). Every command has `--json`; ids and tokens are under the keys `id` and
`token`. Server errors are shown as the server's one-line message, exit 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from suanli import (
    cli_admin,
    cli_audit,
    cli_budgets,
    cli_market,
    cli_payouts,
    cli_sites,
    cli_tasks,
    cli_vouchers,
)
from suanli.cli_client import CaOpt, Decorator, ServerOpt, err, handles_errors

__all__ = ["Decorator", "app", "register"]

app = typer.Typer()


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


def register(main: typer.Typer) -> None:
    """Add the platform commands to the main Typer app: `serve`, `scheduler` and `agent` (this
    module's `app`), and one sub-app per resource (their commands keep their names: `submit`,
    `site add`, ...)."""
    main.add_typer(app)
    main.add_typer(cli_tasks.app)
    main.add_typer(cli_sites.app)
    main.add_typer(cli_market.app)
    main.add_typer(cli_admin.app, name="admin")
    main.add_typer(cli_audit.app, name="audit")
    main.add_typer(cli_budgets.app, name="budget")
    main.add_typer(cli_payouts.statements_app, name="statements")
    main.add_typer(cli_vouchers.vouchers_app)


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
    workers: Annotated[
        int, typer.Option(help="Server processes (PostgreSQL only) / 服务进程数")
    ] = 1,
    scheduler: Annotated[
        bool,
        typer.Option(
            "--scheduler/--no-scheduler",
            help="Contend for the scheduling lead; --no-scheduler serves the API only "
            "/ 参与调度主节点选举；--no-scheduler 只提供 API",
        ),
    ] = True,
    twin_workers: Annotated[
        int,
        typer.Option(
            min=0,
            envvar="SUANLI_TWIN_WORKERS",
            help="Twin-replay worker processes (0: none) / 数字孪生工作进程数",
        ),
    ] = 1,
    clock: Annotated[
        str,
        typer.Option(
            help="system, or virtual: time moves only by POST /v1/clock (operator; for "
            "tests and twin-driven servers) / 时钟：system 或 virtual"
            "（仅由 POST /v1/clock 推进）"
        ),
    ] = "system",
) -> None:
    """Run the platform server (FastAPI + uvicorn). 运行平台服务。

    Any number of servers may share one PostgreSQL database: one scheduling loop among
    them places work (an elected leader). On SQLite one process owns the file."""
    from suanli.api.server import serve as serve_platform
    from suanli.clock import clock_named
    from suanli.config import load_settings
    from suanli.twin_worker import TwinWorkers

    settings = load_settings(
        host=host, port=port, database_url=db, home=home, tls_cert=tls_cert, tls_key=tls_key
    )
    tls = _tls_files(settings.tls_cert, settings.tls_key)
    twins = TwinWorkers(twin_workers, settings.url, str(settings.home))

    def starting() -> None:
        twins.start()  # the schema is migrated by now
        err.print(
            f"suanli server on {'https' if tls else 'http'}://{settings.host}:{settings.port} "
            f"(docs at /docs), database {settings.url.split('@')[-1]}, {workers} worker(s), "
            f"scheduler {'on' if scheduler else 'off'}",
            markup=False,
        )

    try:
        serve_platform(
            settings,
            workers=workers,
            run_scheduler=scheduler,
            migrate=upgrade,
            tls=tls,
            starting=starting,
            clock=clock_named(clock),
        )
    finally:
        twins.stop()


@app.command("scheduler")
@handles_errors
def scheduler_command(
    db: Annotated[str | None, typer.Option(help="Database URL (SQLite or PostgreSQL)")] = None,
    home: Annotated[str | None, typer.Option(help="Data directory / 数据目录")] = None,
    upgrade: Annotated[bool, typer.Option(help="Migrate the schema on start")] = True,
) -> None:
    """Run the scheduling loop alone, no HTTP (beside 'suanli serve --no-scheduler'); it
    places work while it is the elected leader. 单独运行调度循环（无 HTTP）。"""
    from suanli.api.server import run_scheduler
    from suanli.config import load_settings

    settings = load_settings(database_url=db, home=home)
    err.print(
        f"suanli scheduler, database {settings.url.split('@')[-1]}, "
        f"a pass every {settings.schedule_interval_s:g} s while leading",
        markup=False,
    )
    run_scheduler(settings, migrate=upgrade)


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
    work_root: Annotated[
        str | None,
        typer.Option(help="Task directories (default: under $SUANLI_HOME/agents) / 任务目录"),
    ] = None,
    file_root: Annotated[
        list[str] | None,
        typer.Option(help="Directory tasks may read/write by file:// URL / 允许的文件目录"),
    ] = None,
    s3_endpoint: Annotated[
        str | None,
        typer.Option(help="S3 service of this site (default: AWS) / 本站点的 S3 服务网址"),
    ] = None,
    s3_region: Annotated[
        str | None, typer.Option(help="S3 region (default us-east-1) / S3 区域")
    ] = None,
    s3_bucket: Annotated[
        list[str] | None,
        typer.Option(help="Bucket tasks may read/write by s3:// URL / 允许的存储桶"),
    ] = None,
    s3_credentials_file: Annotated[
        str | None,
        typer.Option(
            help="File with access_key_id/secret_access_key lines (else AWS_* variables) / "
            "S3 凭据文件"
        ),
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
    from suanli.agent.runner import agent_token, run_agent, s3_config

    # first: SUANLI_TOKEN and AWS_* keys leave the environment before anything is started
    secret = agent_token(
        token_file, argv_token=token, log=lambda line: err.print(line, markup=False)
    )
    s3 = s3_config(s3_endpoint, s3_region, s3_bucket or (), s3_credentials_file)
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
        s3=s3,
    )
