"""Task commands (consumers): `submit` (optionally `--wait`, following the task until it ends),
`tasks`, `task`, `logs`, `cancel` and the operator's `preempt`, over the platform API.
`task_body` builds the JSON body of a task from the options (`quote` shares it)."""

from __future__ import annotations

import sys
import time
from typing import Annotated, Any

import typer
from rich.live import Live
from rich.table import Table

from suanli.cli_client import (
    TERMINAL,
    CaOpt,
    Client,
    JsonOpt,
    ServerOpt,
    TokenOpt,
    err,
    handles_errors,
    out,
    print_json,
)

app = typer.Typer()


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
            note = (
                f"est. 预估 {p['cost_fen'] / 100:,.2f} CNY, {p['carbon_kg']:.3f} kg, {p['policy']}"
            )
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


def task_body(
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
    *,
    preemptible: bool = False,
    max_run: float | None = None,
    nodes: int = 1,
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
    if nodes != 1:
        resources["nodes"] = nodes
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
        "max_run_s": max_run,
        "preemptible": preemptible or None,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    return body


@app.command()
@handles_errors
def submit(
    server: ServerOpt,
    token: TokenOpt,
    command: Annotated[list[str], typer.Argument(help="-- CMD ARGS... / 要运行的命令")],
    devices: Annotated[int, typer.Option(help="Devices on each node / 每个节点的设备数")] = 1,
    nodes: Annotated[
        int, typer.Option(help="Nodes of one pool, all or none / 节点数（同一资源池，全有或全无）")
    ] = 1,
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
    preemptible: Annotated[
        bool, typer.Option(help="Discounted; may be preempted / 可抢占（折扣价）")
    ] = False,
    max_run: Annotated[
        float | None, typer.Option(help="Maximum run time, s / 最长运行时间（秒）")
    ] = None,
    idempotency_key: Annotated[str | None, typer.Option(help="Retry-safe key / 幂等键")] = None,
    wait: Annotated[bool, typer.Option(help="Follow until it ends / 等待结束")] = False,
    as_json: JsonOpt = False,
    ca: CaOpt = None,
) -> None:
    """Submit a command as a task. 提交任务。"""
    body = task_body(
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
        preemptible=preemptible,
        max_run=max_run,
        nodes=nodes,
    )
    client = Client(server, token, ca)
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    task = client.call("POST", "/v1/tasks", json=body, headers=headers)
    if not wait:
        if as_json:
            print_json(task)
        else:
            out.print(task["id"], markup=False)
        return
    task = _follow(client, task["id"], quiet=as_json)
    logs = client.call("GET", f"/v1/tasks/{task['id']}/logs")
    if as_json:
        print_json({**task, "stdout_tail": logs["stdout_tail"], "stderr_tail": logs["stderr_tail"]})
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
                    f"{task_id}: {task['state']} · {where} · {time.monotonic() - started:.0f} s",
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
        print_json(rows)
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
        print_json(row)
    else:
        out.print(_tasks_table([row], f"Task 任务 {task_id}"))
        out.print(duration_line(row), markup=False)
        energy = energy_line(row)
        if energy:
            out.print(energy, markup=False)


ENERGY_LABELS = {
    "modelled": "modelled 模型估算 (facility, devices' TDP x PUE / 设施能耗，含 PUE)",
    "measured": "measured 实测 (accelerators' meters / 加速卡实测)",
}


def energy_line(task: dict[str, Any]) -> str | None:
    """The task's energy figures side by side, each labelled modelled / 模型估算 or measured /
    实测 (the API's `energy`); None when it has none yet (not placed)."""
    parts = []
    for figure in task.get("energy") or []:
        label = ENERGY_LABELS.get(figure.get("basis"), str(figure.get("basis")))
        part = f"{figure['energy_kwh']:.4g} kWh {label}"
        if figure.get("utilisation") is not None:
            part += f", utilisation 利用率 {figure['utilisation']:.0%}"
        parts.append(part)
    return "Energy 能耗: " + " · ".join(parts) if parts else None


def duration_line(task: dict[str, Any]) -> str:
    """Where the duration the task is priced and placed with comes from: the placement's
    `runtime` once placed, else the spec (a task without one is predicted when placed)."""
    runtime = (task.get("placement") or {}).get("runtime")
    resources = (task.get("spec") or {}).get("resources") or {}
    head = "Duration 时长:"
    if runtime is None:
        if resources.get("work_flop") is not None:
            return f"{head} from its work, {resources['work_flop']:.3g} FLOP / 由计算量推算"
        if resources.get("duration_s"):
            return f"{head} given, {resources['duration_s']:,.0f} s / 用户给出"
        return f"{head} none given: predicted when placed / 未给出，调度时预测"
    source = runtime.get("source")
    if source == "work":
        return f"{head} from its work, {resources.get('work_flop', 0):.3g} FLOP / 由计算量推算"
    if source == "given":
        return f"{head} given, {runtime['duration_s']:,.0f} s / 用户给出"
    if source == "default":
        return (
            f"{head} default {runtime['duration_s']:,.0f} s: fewer than 5 completed tasks like it "
            f"({runtime.get('history', 0)} completed in all) / 默认时长：同类已完成任务不足 5 个"
        )
    return (
        f"{head} predicted {runtime['duration_s']:,.0f} s (median of {runtime['members']} "
        f"completed tasks like it: {runtime['group']}; {runtime['level']:.0%} within "
        f"{runtime['upper_s']:,.0f} s) / 预测：{runtime['members']} 个同类已完成任务的中位时长"
    )


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
        print_json(row)
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
        print_json(row)
    else:
        out.print(
            f"{row['id']} {row['state']}"
            + (" (cancel requested / 已请求取消)" if row["cancel_requested"] else ""),
            markup=False,
        )


@app.command()
@handles_errors
def preempt(
    server: ServerOpt,
    token: TokenOpt,
    task_id: Annotated[str, typer.Argument(help="Task id / 任务 id")],
    as_json: JsonOpt = False,
    ca: CaOpt = None,
) -> None:
    """Preempt a running task (operator): it stops, is charged for what ran and is queued
    again on the same pool, resuming from its checkpoint directory. 抢占运行中的任务（运营方）：
    任务停止，按已运行部分计费，并在同一资源池重新排队，从检查点目录恢复。"""
    row = Client(server, token, ca).call("POST", f"/v1/tasks/{task_id}/preempt")
    if as_json:
        print_json(row)
    else:
        out.print(
            f"{row['id']} {row['state']}"
            + (" (preemption requested / 已请求抢占)" if row.get("preempt_requested") else ""),
            markup=False,
        )
