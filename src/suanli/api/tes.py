"""GA4GH Task Execution Service (TES 1.1.0) on the platform's own task model and scheduler.

Mounted at `/ga4gh/tes/v1` (this module's `router`). Clients that put `/v1/tasks` after their
base URL (py-tes before 1.0, and so Snakemake's TES executor) take `<server>/ga4gh/tes` as the
base URL. It is not also mounted at the root `/v1`: that prefix is suanli's native API, whose
`/v1/tasks` takes another body and answers with another shape.

A TES task becomes a native task: its executors' `command`, `env`, `workdir`, `stdin`,
`stdout` and `stderr` run in order on the chosen pool; `resources.cpu_cores` asks for that many
CPU cores unless `backend_parameters` names another device; `ram_gb` becomes memory per device;
`disk_gb` is recorded; `zones` (hubs, clusters, provinces) restrict placement to their
provinces; `preemptible` prices the task with the preemptible discount; suanli's own options
travel in `backend_parameters` (see `BACKEND_PARAMETERS`; unknown keys are dropped, or refused
with `backend_parameters_strict`). Their values are strings, as the spec says (numbers are
taken too): each is read as its native field's type, and the whole native spec is then
validated by the same models as the native API (`specs.check_task_spec`), so both APIs
accept exactly the same values; an error names the TES field
(`resources.backend_parameters.devices`, `resources.cpu_cores`). No text in the document may
hold a NUL, and no number may be NaN or infinite. The TES document is kept with the task, so
`GET /tasks/{id}` gives back what was sent. Responses carry only the fields of the spec:
suanli's placement and usage go in `logs[].metadata`. `next_page_token` is opaque (an encoded
offset, checked when it comes back: anything else is a 400 naming `page_token`).

Files: inputs with inline `content` (1 MB in all), inputs from `file://`, `s3://` and
`http(s)://` URLs and outputs to `file://` and `s3://` URLs are staged by the agent
(`suanli.agent.staging`); other URL schemes are refused at submission, naming the field. The
data's place counts in placement: `backend_parameters.data_gb` says how much a task reads, and it
is taken to live where a site serves the bucket of its first `s3://` input (`sites.buckets`)
unless `backend_parameters.data_location` says otherwise. Task paths (`/data/in.txt`) live
inside the task's directory on the agent. `image` is recorded and not used by the local backend,
which has no container runtime: see `docs/tes.md` for what each backend does with it.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session
from starlette.convertors import Convertor, register_url_convertor

from suanli import __version__
from suanli.agent.staging import WILDCARDS
from suanli.api.deps import ERRORS, BasicOrBearer, PlatformDep, run
from suanli.api.limits import json_size, page_that_fits
from suanli.errors import InvalidValue
from suanli.services import tasks as tasks_service
from suanli.services.core import TERMINAL, State, aware
from suanli.services.views import Actor, StoredTask
from suanli.specs import (
    DATA_URL,
    INPUT_SCHEMES,
    MAX_INPUT_BYTES,
    NUL,
    OUTPUT_SCHEMES,
    Text,
    check_task_spec,
    data_url_ok,
    task_path_ok,
)

PREFIX = "/ga4gh/tes/v1"
# the image TES views show for a task submitted through the native API (no image: it runs in
# the environment of the agent that takes it)
NATIVE_IMAGE = "suanli/native"
# the URL schemes an agent stages (service-info `storage`)
STORAGE = ("file:///", "s3://", "http://", "https://")

INTEGER = re.compile(r"[+-]?[0-9]{1,30}")


def _integer(value: Any) -> Any:
    """A whole number written as a string (TES parameters are strings), else the value as
    sent, for the model to refuse naming the field."""
    if isinstance(value, str) and INTEGER.fullmatch(value.strip()):
        return int(value.strip())
    return value


def _number(value: Any) -> Any:
    """A number written as a string; NaN and infinities are read as such, and refused by the
    model as not finite."""
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return value
    return value


def _text(value: Any) -> Any:
    return value


def _names(value: Any) -> Any:
    return [part.strip() for part in value.split(",")] if isinstance(value, str) else value


# backend_parameters suanli understands, the native field each one sets, and how its string
# is read (the native model then checks type, range and enum, as on the native API)
BACKEND_PARAMETERS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "policy": ("policy", _text),
    "latency_tier": ("latency_tier", _text),
    "origin": ("origin", _text),
    # how much data the task reads (GB) and where it lives (else: where a site serves the
    # bucket of its first s3:// input, else its origin): the engine charges and times moving it
    "data_gb": ("data_gb", _number),
    "data_location": ("data_location", _text),
    "deadline_s": ("deadline_s", _number),
    "max_run_s": ("max_run_s", _number),  # TES has no run-time field: suanli's own option
    "max_price_fen": ("max_price_fen", _integer),
    "devices": ("resources.devices", _integer),
    "device_kind": ("resources.device_kind", _text),
    "device_models": ("resources.device_models", _names),
    "precision": ("resources.precision", _text),
    "work_flop": ("resources.work_flop", _number),
}
VIEWS = ("MINIMAL", "BASIC", "FULL")
DEFAULT_PAGE_SIZE = 256
MAX_PAGE_SIZE = 2048
MAX_OFFSET = 2**31 - 1  # the largest offset a page token may carry


class TaskIdConvertor(Convertor[str]):
    """A task id in a TES path: no `/` and no `:` (so `/tasks/{id}:cancel` is never a GET)."""

    regex = "[^/:]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("tes_task_id", TaskIdConvertor())


def native_spec(tes: dict[str, Any]) -> dict[str, Any]:
    """The native task spec of a TES task document, validated as the native API validates its
    own (`check_task_spec`); errors name the TES field."""
    if not isinstance(tes, dict):
        raise InvalidValue("task", type(tes).__name__, "a JSON object", "JSON 对象")
    _check_document(tes)
    inputs = _inputs(tes.get("inputs") or [])
    outputs = _outputs(tes.get("outputs") or [])
    volumes = _paths("volumes", tes.get("volumes") or [])
    executors = tes.get("executors")
    if not isinstance(executors, list) or not executors:
        raise InvalidValue(
            "executors", executors, "a list of at least one executor", "至少一个执行器"
        )
    native_executors = []
    for n, executor in enumerate(executors):
        where = f"executors[{n}]"
        if not isinstance(executor, dict):
            raise InvalidValue(where, executor, "an object", "对象")
        command = executor.get("command")
        if (
            not isinstance(command, list)
            or not command
            or not all(isinstance(c, str) for c in command)
        ):
            raise InvalidValue(
                f"{where}.command", command, "a non-empty list of strings", "非空字符串列表"
            )
        ignore_error = executor.get("ignore_error") or False
        if not isinstance(ignore_error, bool):
            raise InvalidValue(
                f"{where}.ignore_error", ignore_error, "true or false", "true 或 false"
            )
        env = executor.get("env") or {}
        if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
            raise InvalidValue(f"{where}.env", env, "an object of strings", "字符串对象")
        native: dict[str, Any] = {"command": command, "env": env, "ignore_error": ignore_error}
        for field in ("workdir", "stdin", "stdout", "stderr"):
            value = executor.get(field) or None
            native[field] = value and _path(f"{where}.{field}", value)
        native_executors.append(native)

    resources = tes.get("resources") or {}
    for field, value, kind in (
        ("resources", resources, dict),
        ("tags", tes.get("tags") or {}, dict),
        ("name", tes.get("name") or "", str),
        ("resources.backend_parameters", resources.get("backend_parameters") or {}, dict),
    ):
        if not isinstance(value, kind):
            expected = "an object" if kind is dict else "a string"
            raise InvalidValue(field, value, expected, "对象" if kind is dict else "字符串")
    cores = resources.get("cpu_cores") or 1
    if not isinstance(cores, int) or isinstance(cores, bool) or not 1 <= cores <= 100_000:
        raise InvalidValue(
            "resources.cpu_cores", cores, "a whole number from 1 to 100000", "1 到 100000 的整数"
        )
    ram, disk = (_gb(f"resources.{f}", resources.get(f) or 0.0) for f in ("ram_gb", "disk_gb"))
    zones = resources.get("zones") or None
    if zones is not None and (
        not isinstance(zones, list) or not all(isinstance(z, str) and z for z in zones)
    ):
        raise InvalidValue("resources.zones", zones, "a list of zone names", "区域名称列表")
    spec: dict[str, Any] = {
        "name": str(tes.get("name") or ""),
        "executors": native_executors,
        "resources": {
            "devices": cores,
            "device_kind": "cpu",
            "device_models": None,
            "precision": "fp32",
            "work_flop": None,
            "duration_s": None,
            "memory_gb": ram / cores,
            "disk_gb": disk,
            "workload": "general",
        },
        "latency_tier": "batch",
        "origin": None,
        "data_gb": 0.0,
        "deadline_s": None,
        "max_price_fen": None,
        "policy": None,
        "preemptible": bool(resources.get("preemptible") or False),
        "zones": zones,
        "tags": {str(k): str(v) for k, v in (tes.get("tags") or {}).items()},
    }
    # where each native field came from in the TES document, to name it in errors
    renames = {
        "resources.devices": "resources.cpu_cores",
        "resources.memory_gb": "resources.ram_gb",
        "zones": "resources.zones",
        "preemptible": "resources.preemptible",
    }
    parameters = resources.get("backend_parameters") or {}
    strict = bool(resources.get("backend_parameters_strict") or False)
    for key, value in parameters.items():
        if key not in BACKEND_PARAMETERS:
            if strict:
                raise InvalidValue(
                    f"resources.backend_parameters.{key}",
                    value,
                    "one of " + ", ".join(BACKEND_PARAMETERS),
                    "已知参数之一",
                )
            continue
        target, convert = BACKEND_PARAMETERS[key]
        holder = spec["resources"] if target.startswith("resources.") else spec
        holder[target.removeprefix("resources.")] = convert(value)
        renames[target] = f"resources.backend_parameters.{key}"
    for key, value in (("inputs", inputs), ("outputs", outputs), ("volumes", volumes)):
        if value:
            spec[key] = value
    if any(key not in BACKEND_PARAMETERS for key in parameters):
        # the spec: a backend neither stores nor returns the keys it does not support
        known = {k: v for k, v in parameters.items() if k in BACKEND_PARAMETERS}
        tes = {**tes, "resources": {**resources, "backend_parameters": known}}
    spec["tes"] = tes
    check_task_spec(spec, renames)
    return spec


def _check_document(document: dict[str, Any]) -> None:
    """No NUL in any key or text and no NaN or infinity anywhere in a TES document (it is
    stored as sent, and PostgreSQL refuses both); errors name the path."""
    stack: list[tuple[str, object]] = [("", document)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str) and NUL in item:
            raise InvalidValue(
                path or "task", item[:80], "text without NUL characters", "不含 NUL 的文本"
            )
        if isinstance(item, float) and not math.isfinite(item):
            raise InvalidValue(path or "task", item, "a finite number", "有限数")
        if isinstance(item, dict):
            for key, inner in item.items():
                where = f"{path}.{key}" if path else str(key)
                if NUL in str(key):
                    raise InvalidValue(
                        f"{path}[key]" if path else "[key]",
                        key,
                        "a key without NUL characters",
                        "不含 NUL 的键",
                    )
                stack.append((where, inner))
        elif isinstance(item, list):
            stack.extend((f"{path}[{n}]", inner) for n, inner in enumerate(item))


def _gb(field: str, value: object) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value < 1e7:
        raise InvalidValue(field, value, "a number of GB >= 0", "不小于 0 的 GB 数")
    return float(value)


def _path(field: str, path: object) -> str:
    """A task path: a string that stays inside the task directory (no '..' component; the
    native API's rule, `specs.task_path_ok`)."""
    if not isinstance(path, str) or not task_path_ok(path):
        raise InvalidValue(field, path, "a file path without '..'", "不含 '..' 的文件路径")
    return path


def _paths(field: str, paths: object) -> list[str]:
    if not isinstance(paths, list):
        raise InvalidValue(field, paths, "a list of paths", "路径列表")
    return [_path(f"{field}[{n}]", p) for n, p in enumerate(paths)]


def _data_url(field: str, url: object, *, output: bool = False) -> str:
    """A URL an agent can read an input from (`file://`, `s3://`, `http(s)://`) or write an
    output to (`file://`, `s3://`), as `specs` checks it for every edge."""
    schemes = OUTPUT_SCHEMES if output else INPUT_SCHEMES
    if isinstance(url, str) and data_url_ok(url, schemes):
        return url
    raise InvalidValue(field, url, *DATA_URL["output_url" if output else "input_url"])


def _file_type(field: str, entry: dict[str, Any]) -> str:
    kind = entry.get("type") or "FILE"
    if kind not in ("FILE", "DIRECTORY"):
        raise InvalidValue(field, kind, "FILE or DIRECTORY", "FILE 或 DIRECTORY")
    return str(kind)


def _inputs(inputs: object) -> list[dict[str, str]]:
    """TES inputs as `{"path", "content"}` or `{"path", "url", "type"}`; sizes bounded."""
    if not isinstance(inputs, list):
        raise InvalidValue("inputs", inputs, "a list of inputs", "输入列表")
    staged = []
    size = 0
    for n, entry in enumerate(inputs):
        where = f"inputs[{n}]"
        if not isinstance(entry, dict):
            raise InvalidValue(where, entry, "an object", "对象")
        path = _path(f"{where}.path", entry.get("path"))
        content = entry.get("content")
        if content is not None:  # the spec: with content, url is ignored
            if not isinstance(content, str):
                raise InvalidValue(f"{where}.content", "...", "a string", "字符串")
            size += len(content.encode())
            if size > MAX_INPUT_BYTES:
                raise InvalidValue(
                    where, "...", "at most 1 MB of inline content in all", "内联内容合计不超过 1 MB"
                )
            staged.append({"path": path, "content": content})
            continue
        url = _data_url(f"{where}.url", entry.get("url"))
        staged.append({"path": path, "url": url, "type": _file_type(f"{where}.type", entry)})
    return staged


def _outputs(outputs: object) -> list[dict[str, str]]:
    """TES outputs as `{"path", "url", "type"[, "path_prefix"]}`."""
    if not isinstance(outputs, list):
        raise InvalidValue("outputs", outputs, "a list of outputs", "输出列表")
    copied = []
    for n, entry in enumerate(outputs):
        where = f"outputs[{n}]"
        if not isinstance(entry, dict):
            raise InvalidValue(where, entry, "an object", "对象")
        path = _path(f"{where}.path", entry.get("path"))
        output = {
            "path": path,
            "url": _data_url(f"{where}.url", entry.get("url"), output=True),
            "type": _file_type(f"{where}.type", entry),
        }
        if WILDCARDS & set(path):
            prefix = entry.get("path_prefix")
            if not isinstance(prefix, str) or not path.startswith(prefix) or not prefix:
                raise InvalidValue(
                    f"{where}.path_prefix",
                    prefix,
                    "the leading part of path to remove (required with wildcards)",
                    "通配路径需要的前缀",
                )
            output["path_prefix"] = _path(f"{where}.path_prefix", prefix)
        copied.append(output)
    return copied


def _state(task: StoredTask) -> str:
    if task.cancel_requested and State(task.state) not in TERMINAL:
        return "CANCELING"
    return task.state


def _rfc3339(moment: datetime) -> str:
    return aware(moment).isoformat().replace("+00:00", "Z")


def tes_view(task: StoredTask, view: str, history: list[str] | None = None) -> dict[str, Any]:
    """The TES document of a task in one view (fields exactly as the spec gives them).

    `history` (FULL only): the task's state changes, shown as `system_logs`."""
    if view == "MINIMAL":
        return {"id": task.id, "state": _state(task)}
    original: dict[str, Any] = dict(task.spec.get("tes") or {})
    document: dict[str, Any] = {
        "id": task.id,
        "state": _state(task),
        "name": task.name,
        "creation_time": _rfc3339(task.created_at),
        "executors": original.get("executors") or _native_executors(task.spec["executors"]),
    }
    for field in ("description", "resources", "tags"):
        if original.get(field) is not None:
            document[field] = original[field]
    if original.get("inputs"):  # BASIC leaves out inline content, as the spec says
        document["inputs"] = [
            entry if view == "FULL" else {k: v for k, v in entry.items() if k != "content"}
            for entry in original["inputs"]
        ]
    # BASIC and FULL always carry the task's log (a queued task's says why it waits)
    executor_logs = _executor_logs(task, view)
    metadata = {"pool": task.pool_id or "", "site": task.site_id or ""}
    if task.usage:
        metadata.update({k: str(v) for k, v in task.usage.items()})
    task_log: dict[str, Any] = {
        "logs": executor_logs,
        "metadata": metadata,
        "outputs": list(task.output_logs or []),
    }
    times = [e for e in task.executor_logs or [] if e.get("started_at") is not None]
    if times:
        task_log["start_time"] = _unix_rfc3339(times[0]["started_at"])
        if State(task.state) in TERMINAL and times[-1].get("ended_at") is not None:
            task_log["end_time"] = _unix_rfc3339(times[-1]["ended_at"])
    system_logs = list(history or [])
    if State(task.state) is State.QUEUED and task.unplaced_reason:
        system_logs.append(f"waiting: {task.unplaced_reason}")
    if view == "FULL" and system_logs:
        task_log["system_logs"] = system_logs
    document["logs"] = [task_log]
    return document


def _native_executors(executors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A native task's executors as TES executors: the spec requires an `image`, and a native
    task runs in its agent's own environment, which `NATIVE_IMAGE` names."""
    shown = []
    for executor in executors:
        entry: dict[str, Any] = {"image": NATIVE_IMAGE, "command": executor["command"]}
        for field in ("workdir", "stdin", "stdout", "stderr"):
            if executor.get(field) is not None:
                entry[field] = executor[field]
        if executor.get("env"):
            entry["env"] = executor["env"]
        if executor.get("ignore_error"):
            entry["ignore_error"] = True
        shown.append(entry)
    return shown


def _unix_rfc3339(seconds: float) -> str:
    return _rfc3339(datetime.fromtimestamp(seconds, UTC))


def _executor_logs(task: StoredTask, view: str) -> list[dict[str, Any]]:
    """One TES ExecutorLog per executor that ran (output only in FULL). Tasks reported by an
    agent that predates per-executor logs get one entry for the whole task."""
    reported = task.executor_logs
    if not reported:
        if task.exit_code is None:
            return []
        reported = [
            {
                "exit_code": task.exit_code,
                "stdout_tail": task.stdout_tail,
                "stderr_tail": task.stderr_tail,
            }
        ]
    logs = []
    for entry in reported:
        if entry.get("exit_code") is None:  # never reaped (canceled): ExecutorLog needs a code
            continue
        log: dict[str, Any] = {"exit_code": entry["exit_code"]}
        for ours, theirs in (("started_at", "start_time"), ("ended_at", "end_time")):
            if entry.get(ours) is not None:
                log[theirs] = _unix_rfc3339(entry[ours])
        if view == "FULL":
            log["stdout"] = entry.get("stdout_tail") or ""
            log["stderr"] = entry.get("stderr_tail") or ""
        logs.append(log)
    return logs


def page_token_of(offset: int) -> str:
    """The opaque token of the page that starts at `offset`."""
    return base64.urlsafe_b64encode(f"o{offset}".encode()).decode().rstrip("=")


def page_offset(token: str) -> int:
    """The offset a page token stands for (0 for none); a 400 naming `page_token` for anything
    that `page_token_of` did not make, and for offsets beyond `MAX_OFFSET`."""
    if not token:
        return 0
    try:
        decoded = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("ascii")
    except (binascii.Error, ValueError):
        decoded = ""
    match = re.fullmatch(r"o([0-9]{1,10})", decoded)
    if match is None or int(match.group(1)) > MAX_OFFSET:
        raise InvalidValue(
            "page_token",
            token,
            "the next_page_token of the previous page, unchanged",
            "上一页返回的 next_page_token（原样）",
        )
    return int(match.group(1))


def _view(view: str) -> str:
    upper = view.upper()
    if upper not in VIEWS:
        raise InvalidValue("view", view, "MINIMAL, BASIC or FULL", "MINIMAL、BASIC 或 FULL")
    return upper


def _matches_tags(task: StoredTask, keys: list[str], values: list[str]) -> bool:
    tags = task.spec.get("tags") or {}
    for n, key in enumerate(keys):
        if key not in tags:
            return False
        if n < len(values) and values[n] != "" and tags[key] != values[n]:
            return False
    return True


router = APIRouter(tags=["tes"], responses=ERRORS)


@router.get(f"{PREFIX}/service-info")
async def service_info() -> dict[str, Any]:
    return {
        "id": "org.suanli.tes",
        "name": "suanli",
        "type": {"group": "org.ga4gh", "artifact": "tes", "version": "1.1.0"},
        "description": "suanli compute network: TES tasks placed by the suanli scheduler",
        "organization": {"name": "suanli", "url": "https://github.com/suanli"},
        "version": __version__,
        "storage": list(STORAGE),
        "tesResources_backend_parameters": list(BACKEND_PARAMETERS),
    }


@router.get(f"{PREFIX}/tasks/service-info", include_in_schema=False)
async def legacy_service_info() -> dict[str, Any]:
    """The service-info of TES 0.3 where py-tes 0.4.x (Toil 5.12, older Snakemake) asks for it:
    exactly the three fields that client parses (it refuses any other)."""
    return {
        "name": "suanli",
        "doc": "suanli compute network: TES tasks placed by the suanli scheduler",
        "storage": list(STORAGE),
    }


@router.post(f"{PREFIX}/tasks")
async def create(
    token: BasicOrBearer, platform: PlatformDep, body: Annotated[dict[str, Any], Body()]
) -> dict[str, str]:
    spec = native_spec(body)
    task_id = await run(
        platform,
        token,
        True,
        lambda session, who: tasks_service.submit(session, who, spec, None)[0].id,
    )
    platform.wake.set()
    return {"id": task_id}


@router.get(f"{PREFIX}/tasks")
async def list_tasks(
    token: BasicOrBearer,
    platform: PlatformDep,
    name_prefix: Annotated[Text, Query(max_length=200)] = "",
    state: Annotated[Text, Query(max_length=20)] = "",
    tag_key: Annotated[list[Text], Query()] = [],  # noqa: B006 (FastAPI copies defaults)
    tag_value: Annotated[list[Text], Query()] = [],  # noqa: B006
    page_size: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
    page_token: Annotated[Text, Query(max_length=40)] = "",
    view: Annotated[Text, Query(max_length=10)] = "MINIMAL",
) -> dict[str, Any]:
    chosen = _view(view)
    offset = page_offset(page_token)

    def work(session: Session, who: Actor) -> dict[str, Any]:
        if tag_key:  # tags live in the JSON spec: filter them here, then page
            rows = tasks_service.list_tasks(
                session, who, state or None, None, name_prefix=name_prefix or None
            )
            picked = [t for t in rows if _matches_tags(t, tag_key, tag_value)]
            page, more = picked[offset : offset + page_size], offset + page_size < len(picked)
        else:  # one more row than the page says whether another page exists
            rows = tasks_service.list_tasks(
                session,
                who,
                state or None,
                page_size + 1,
                name_prefix=name_prefix or None,
                offset=offset,
            )
            page, more = rows[:page_size], len(rows) > page_size
        histories = (
            tasks_service.task_histories(session, [t.id for t in page]) if chosen == "FULL" else {}
        )
        views = [tes_view(t, chosen, histories.get(t.id)) for t in page]
        fits = len(views) if chosen == "MINIMAL" else page_that_fits(views, json_size)
        result: dict[str, Any] = {"tasks": views[:fits]}
        if more or fits < len(views):  # a page stops at PAGE_BUDGET_BYTES
            result["next_page_token"] = page_token_of(offset + fits)
        return result

    listed: dict[str, Any] = await run(platform, token, False, work)
    return listed


@router.get(PREFIX + "/tasks/{task_id:tes_task_id}")
async def get(
    task_id: str,
    token: BasicOrBearer,
    platform: PlatformDep,
    view: Annotated[str, Query(max_length=10)] = "MINIMAL",
) -> dict[str, Any]:
    chosen = _view(view)

    def work(session: Session, who: Actor) -> dict[str, Any]:
        task = tasks_service.get_task(session, who, task_id)
        history = tasks_service.task_histories(session, [task.id])[task.id]
        return tes_view(task, chosen, history if chosen == "FULL" else None)

    document: dict[str, Any] = await run(platform, token, False, work)
    return document


@router.post(PREFIX + "/tasks/{task_id:tes_task_id}:cancel")
async def cancel(task_id: str, token: BasicOrBearer, platform: PlatformDep) -> JSONResponse:
    def work(session: Session, who: Actor) -> None:
        task = tasks_service.get_task(session, who, task_id)
        if State(task.state) not in TERMINAL and not task.cancel_requested:
            tasks_service.cancel_task(session, who, task_id)

    await run(platform, token, True, work)
    return JSONResponse({})
