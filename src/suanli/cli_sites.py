"""Site and pool commands (providers): `sites` and `pools` list them; `site add`, `site
agent-token` (a token for one site's agents, shown once) and `pool add`, over the platform API."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from suanli.cli_client import (
    CaOpt,
    Client,
    JsonOpt,
    ServerOpt,
    TokenOpt,
    duration_s,
    err,
    handles_errors,
    out,
    print_json,
)

app = typer.Typer()
site_app = typer.Typer(help="Provider sites. 提供方站点。")
pool_app = typer.Typer(help="Provider pools. 提供方资源池。")
app.add_typer(site_app, name="site")
app.add_typer(pool_app, name="pool")


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
        print_json(rows)
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
        print_json(rows)
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
    bucket: Annotated[
        list[str] | None,
        typer.Option(
            help="Object-storage bucket the site serves (repeatable) / 站点存储桶（可重复）"
        ),
    ] = None,
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
            "buckets": bucket or None,
        }.items()
        if v is not None
    }
    row = Client(server, token, ca).call("POST", "/v1/sites", json=body)
    print_json(row) if as_json else out.print(row["id"], markup=False)


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
        print_json(row)
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
    print_json(row) if as_json else out.print(row["id"], markup=False)
