"""Consumers' task pages: the list with filters, one task (timeline, placement and why, live
output, cost and carbon, cancel), and the submit form with a quote shown before accepting.

Reads go through `services.readmodels` (task_list, task_page: plain values), actions through
the services (market.quote, market.accept, tasks.cancel_task) with the API's checks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from suanli.console.web import PREFIX, Console, problem
from suanli.errors import SuanliError
from suanli.scheduler import POLICIES as ENGINE_POLICIES
from suanli.services import market, readmodels
from suanli.services import tasks as tasks_service
from suanli.services.core import Actor
from suanli.services.readmodels import TaskItem, Viewer
from suanli.services.views import task_energy

STATES = (
    "QUEUED",
    "INITIALIZING",
    "RUNNING",
    "COMPLETE",
    "EXECUTOR_ERROR",
    "SYSTEM_ERROR",
    "CANCELED",
)
# the form's choices: the default first, then the engine's other policies by name
POLICIES = ("balanced", *sorted(set(ENGINE_POLICIES) - {"balanced"}))


def _task_view(task_id: str) -> Callable[[Session, Actor], dict[str, Any]]:
    """What a task page (whole, or its live part) shows: the task, its timeline, its order,
    its energy figures (modelled, and measured when the agent measured)."""

    def work(session: Session, who: Actor) -> dict[str, Any]:
        found = readmodels.task_page(session, who, task_id)
        task = found.task
        return {
            "who": readmodels.viewer(who),
            "task": task,
            "energy": task_energy(task.placement, task.usage, task.devices),
            "events": found.events,
            "order": found.order,
            "terminal": found.terminal,
        }

    return work


def install(console: Console) -> None:
    router = console.router

    @router.get("/tasks", response_class=HTMLResponse)
    async def tasks(request: Request, state: str = "", name: str = "") -> Response:
        chosen = state if state in STATES else ""

        def work(session: Session, who: Actor) -> tuple[Viewer, list[TaskItem]]:
            rows = readmodels.task_list(session, who, chosen or None, name.strip() or None, 200)
            return readmodels.viewer(who), rows

        who, rows = await console.act(request, False, work)
        return console.page(
            request, "tasks.html", who, tasks=rows, states=STATES, state=chosen, name=name
        )

    @router.get("/tasks/new", response_class=HTMLResponse)
    async def new_task(request: Request) -> Response:
        who = await console.viewer(request)
        return console.page(request, "task_new.html", who, policies=POLICIES, quote=None)

    @router.post("/tasks/quote", response_class=HTMLResponse)
    async def quote(
        request: Request,
        command: str = Form(min_length=1, max_length=2000),
        name: str = Form("", max_length=200),
        devices: int = Form(1, ge=1, le=1000),
        kind: str = Form("cpu", pattern="^(cpu|gpu|npu)$"),
        duration_s: float = Form(60.0, gt=0, le=30 * 24 * 3600),
        policy: str = Form("balanced", max_length=20),
        origin: str = Form("", max_length=100),
    ) -> Response:
        spec: dict[str, Any] = {
            "name": name,
            "executors": [{"command": ["sh", "-c", command], "env": {}, "workdir": None}],
            "resources": {
                "devices": devices,
                "device_kind": kind,
                "device_models": None,
                "precision": "fp32",
                "work_flop": None,
                "duration_s": duration_s,
                "memory_gb": 0.0,
                "workload": "general",
            },
            "latency_tier": "batch",
            "origin": origin.strip() or None,
            "data_gb": 0.0,
            "deadline_s": None,
            "max_price_fen": None,
            "policy": policy if policy in POLICIES else None,
            "preemptible": False,
            "tags": {"source": "console"},
        }

        def work(session: Session, who: Actor) -> tuple[Viewer, str, dict[str, Any]]:
            settings = request.app.state.platform.settings
            row = market.quote(session, who, spec, settings.policy, market.rules_from(settings))
            return readmodels.viewer(who), row.id, dict(row.options)

        try:
            who, quote_id, offered = await console.act(request, True, work)
        except SuanliError as exc:
            return await problem(console, request, exc)
        return console.page(
            request,
            "quote.html",
            who,
            quote_id=quote_id,
            options=offered["options"],
            unavailable=offered["unavailable"],
        )

    @router.post("/tasks/accept")
    async def accept(
        request: Request,
        quote_id: str = Form(max_length=64),
        option: int = Form(0, ge=0, le=100),
    ) -> Response:
        def work(session: Session, who: Actor) -> str:
            settings = request.app.state.platform.settings
            return market.accept(session, who, quote_id, option, settings.policy).task_id

        try:
            task_id = await console.act(request, True, work)
        except SuanliError as exc:
            return await problem(console, request, exc)
        console.wake()
        return RedirectResponse(f"{PREFIX}/tasks/{task_id}", status_code=303)

    @router.get("/tasks/{task_id}", response_class=HTMLResponse)
    async def task(request: Request, task_id: str) -> Response:
        try:
            found = await console.act(request, False, _task_view(task_id))
        except SuanliError as exc:
            return await problem(console, request, exc)
        return console.page(request, "task.html", found.pop("who"), **found)

    @router.get("/tasks/{task_id}/live", response_class=HTMLResponse)
    async def live(request: Request, task_id: str) -> Response:
        """The parts of a task page that change (htmx polls this until the task ends)."""

        try:
            found = await console.act(request, False, _task_view(task_id))
        except SuanliError as exc:
            return await problem(console, request, exc)
        response = console.page(request, "task_live.html", found.pop("who"), **found)
        if found["terminal"]:
            response.headers["HX-Trigger"] = "task-ended"
        return response

    @router.post("/tasks/{task_id}/cancel")
    async def cancel(request: Request, task_id: str) -> Response:
        try:
            await console.act(
                request,
                True,
                lambda session, who: tasks_service.cancel_task(session, who, task_id).id,
            )
        except SuanliError as exc:
            return await problem(console, request, exc)
        return RedirectResponse(f"{PREFIX}/tasks/{task_id}", status_code=303)
