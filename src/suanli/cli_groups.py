"""`suanli admin groups create|set|list|add-member|remove-member`: groups of consumers with a
guaranteed share and a cap (quotas and fair share), on the database directly, as the operator
(like `admin credit`). The API has the same use cases (`/v1/groups`)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from suanli.cli_client import JsonOpt, handles_errors, open_sessions, out, print_json

app = typer.Typer(
    help="Groups of consumers: guaranteed share, cap, members. 用户组：保证份额、配额上限、成员。"
)

DbOpt = Annotated[str | None, typer.Option(help="Database URL / 数据库 URL")]
HomeOpt = Annotated[str | None, typer.Option(help="Data directory / 数据目录")]
ShareOpt = Annotated[
    int | None,
    typer.Option(
        "--guaranteed-bp",
        help="Guaranteed share of each device kind, basis points (5000 = 50%) / 保证份额（基点）",
    ),
]
CapOpt = Annotated[
    float | None,
    typer.Option(help="Cap of device-hours per period / 每期设备·小时上限"),
]
PeriodOpt = Annotated[
    str | None, typer.Option(help="day|week|month (China Standard Time) / 周期（北京时间）")
]


def _operator() -> Any:
    from suanli.store.models import Principal

    return Principal(id="admin", name="admin (database)", role="operator")


def _read(view: Any) -> dict[str, Any]:
    return {
        "id": view.id,
        "name": view.name,
        "guaranteed_bp": view.guaranteed_bp,
        "cap_device_hours": view.cap_device_hours,
        "period": view.period,
        "period_start": view.period_start.isoformat(),
        "members": view.members,
    }


def _show(views: list[Any], as_json: bool) -> None:
    rows = [_read(v) for v in views]
    if as_json:
        print_json(rows if len(rows) != 1 else rows[0])
        return
    table = Table(title="Groups 用户组")
    for column in (
        "Id",
        "Name 名称",
        "Share 份额",
        "Cap 上限 (device-h)",
        "Period 周期",
        "Members 成员",
    ):
        table.add_column(column)
    for row in rows:
        cap = row["cap_device_hours"]
        table.add_row(
            row["id"],
            row["name"],
            f"{row['guaranteed_bp'] / 100:g}%",
            "-" if cap is None else f"{cap:g}",
            row["period"],
            ", ".join(row["members"]) or "-",
        )
    out.print(table)


@app.command("create")
@handles_errors
def create(
    name: Annotated[str, typer.Option(help="Group name / 组名")],
    guaranteed_bp: ShareOpt = 0,
    cap_device_hours: CapOpt = None,
    period: PeriodOpt = "month",
    db: DbOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a group. 创建用户组。"""
    from suanli.services import groups

    spec = groups.GroupCommand.model_validate(
        {
            "name": name,
            "guaranteed_bp": guaranteed_bp or 0,
            "cap_device_hours": cap_device_hours,
            "period": period or "month",
        }
    )
    with open_sessions(db, home).begin() as session:
        row = groups.create(session, _operator(), spec)
        session.flush()
        view = groups.view(session, row, [])
    _show([view], as_json)


@app.command("set")
@handles_errors
def set_(
    group: Annotated[str, typer.Argument(help="Group id / 组 id")],
    name: Annotated[str | None, typer.Option(help="New name / 新名称")] = None,
    guaranteed_bp: ShareOpt = None,
    cap_device_hours: CapOpt = None,
    no_cap: Annotated[bool, typer.Option("--no-cap", help="Remove the cap / 取消上限")] = False,
    period: PeriodOpt = None,
    db: DbOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Change a group's name, share, cap or period. 修改用户组。"""
    from suanli.services import groups

    given: dict[str, Any] = {
        key: value
        for key, value in (
            ("name", name),
            ("guaranteed_bp", guaranteed_bp),
            ("cap_device_hours", cap_device_hours),
            ("period", period),
        )
        if value is not None
    }
    if no_cap:
        given["cap_device_hours"] = None
    change = groups.GroupChange.model_validate(given)
    with open_sessions(db, home).begin() as session:
        row = groups.update(session, _operator(), group, change)
        view = groups.view(session, row)
    _show([view], as_json)


@app.command("list")
@handles_errors
def list_(db: DbOpt = None, home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Every group with its members. 列出用户组。"""
    from suanli.services import groups

    with open_sessions(db, home).begin() as session:
        views = groups.listing(session, _operator())
    if as_json:
        print_json([_read(v) for v in views])
    else:
        _show(views, False)


def _member(
    consumer: str, group: str | None, db: str | None, home: str | None, as_json: bool
) -> None:
    from suanli.services import groups

    with open_sessions(db, home).begin() as session:
        principal = groups.set_group(session, _operator(), consumer, group)
        found = {"consumer": principal.id, "group_id": principal.group_id}
    if as_json:
        print_json(found)
    else:
        where = found["group_id"] or "public (no group) / 公共份额（无组）"
        out.print(f"{found['consumer']}: group {where}", markup=False)


@app.command("add-member")
@handles_errors
def add_member(
    group: Annotated[str, typer.Argument(help="Group id / 组 id")],
    consumer: Annotated[str, typer.Argument(help="Consumer id / 消费者 id")],
    db: DbOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Put a consumer in a group (out of any other). 将消费者加入用户组。"""
    _member(consumer, group, db, home, as_json)


@app.command("remove-member")
@handles_errors
def remove_member(
    consumer: Annotated[str, typer.Argument(help="Consumer id / 消费者 id")],
    db: DbOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Take a consumer out of its group (the public share). 将消费者移出用户组。"""
    _member(consumer, None, db, home, as_json)
