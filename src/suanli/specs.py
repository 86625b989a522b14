"""The validated shapes of what comes from outside (Pydantic 2, strict: no silent coercion): the
value types (`Text`, `Name`, `TaskPath`, ...), the task spec (`TaskCreate`, `TaskSpec`,
`check_task_spec`) and the bilingual descriptions of validation errors.

A neutral module: the API, the services and the console import it, and it imports none of them.
This is the one validation path for input: the native API, the TES API (which builds a native
spec and validates it with `TaskSpec`) and the console (through `services`, which validates every
task spec with `check_task_spec`) share these models; `services.commands` builds the typed
commands of the services on the same value types.
Every input model refuses unknown keys, NaN and infinities; every text is `Text` (no NUL, which
PostgreSQL cannot store); task paths are `TaskPath` (inside the task directory: no `..`
component, on every API); every number is bounded, integers within their database columns
(32-bit `Integer`, 64-bit `BigInteger`). The bounds are sane rather than tight, and chosen so that
no task the engine can price costs more than a 64-bit number of fen:

| field | bound |
| --- | --- |
| `resources.devices` | 1 .. 100,000 |
| `resources.work_flop` | > 0 .. 1e25 FLOP |
| `resources.duration_s` | > 0 .. 1e8 s (about 3 years) |
| `deadline_s` | > 0 .. 1e9 s |
| `max_run_s` | > 0 .. 2,592,000 s (30 days); unset: the server's `default_max_run_s` |
| `memory_gb`, `disk_gb`, `data_gb` | 0 .. 1e7 GB |
| `max_price_fen` | 0 .. 1e15 fen |
| `price_fen_per_device_hour` | 0 .. 10,000,000 fen (100,000 yuan) |
| exit codes | 32-bit |

Errors are described in English and Chinese by `describe` (one table for pydantic's error types
and ours), so every 4xx names the field and what would be accepted.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from suanli.errors import InvalidValue

INT32 = (-(2**31), 2**31 - 1)
MAX_DEVICES = 100_000  # of one task, over all its nodes
MAX_NODES = 1024
MAX_WORK_FLOP = 1e25
MAX_DURATION_S = 1e8
MAX_DEADLINE_S = 1e9
MAX_RUN_S = 30 * 86_400  # a task's maximum run time: at most 30 days
MAX_GB = 1e7
MAX_BUDGET_FEN = 10**15
MAX_PRICE_FEN_PER_DEVICE_HOUR = 10_000_000
MAX_INPUT_BYTES = 1_000_000  # inline input content of one task, all together
NUL = "\x00"


def no_nul(value: str) -> str:
    """A text without NUL characters (PostgreSQL refuses them in text; no name needs one)."""
    if NUL in value:
        raise PydanticCustomError("nul_character", "must not contain a NUL character (\\u0000)")
    return value


def _replace_nul(value: str) -> str:
    return value.replace(NUL, "\ufffd")


def task_path_ok(path: str) -> bool:
    """The one rule for task paths, on every API: inside the task directory (not empty, not
    the root, no `..` component) and no NUL."""
    return bool(path.strip("/")) and ".." not in path.split("/") and NUL not in path


def _task_path(value: str) -> str:
    if not task_path_ok(value):
        raise PydanticCustomError("task_path", "a path inside the task directory, without '..'")
    return value


def _env_name(value: str) -> str:
    if "=" in value:
        raise PydanticCustomError("env_name", "an environment variable name: no '='")
    return value


INPUT_SCHEMES = ("file", "s3", "http", "https")  # where an input may come from
OUTPUT_SCHEMES = ("file", "s3")  # where an output may go
DATA_URL = {
    "input_url": (
        "a file:// URL (or an absolute path), s3://bucket/key, or an http(s):// URL",
        "file:// 网址（或绝对路径）、s3://bucket/key 或 http(s):// 网址",
    ),
    "output_url": (
        "a file:// URL (or an absolute path) or s3://bucket/key (http(s) cannot be written)",
        "file:// 网址（或绝对路径）或 s3://bucket/key（http(s) 不可写入）",
    ),
}


def data_url_ok(url: str, schemes: tuple[str, ...]) -> bool:
    """Whether `url` names data by one of `schemes`: `file://` (or a bare absolute path), or a
    scheme that needs a host (the bucket of `s3://`, the server of `http(s)://`)."""
    if url.startswith("/"):
        return "file" in schemes
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in schemes:
        return False
    return scheme == "file" or bool(rest.split("/", 1)[0])


def _input_url(value: str) -> str:
    if not data_url_ok(value, INPUT_SCHEMES):
        raise PydanticCustomError("input_url", DATA_URL["input_url"][0])
    return value


def _output_url(value: str) -> str:
    if not data_url_ok(value, OUTPUT_SCHEMES):
        raise PydanticCustomError("output_url", DATA_URL["output_url"][0])
    return value


Text = Annotated[str, AfterValidator(no_nul)]  # any text from outside: no NUL
# free text an agent relays from a task's output: a NUL there is replaced, not refused (a task
# that prints one must still be reported)
OutputText = Annotated[str, AfterValidator(_replace_nul)]
Name = Annotated[Text, Field(min_length=1, max_length=200)]
TaskPath = Annotated[Text, Field(min_length=1, max_length=4096), AfterValidator(_task_path)]
InputUrl = Annotated[Text, Field(min_length=1, max_length=4096), AfterValidator(_input_url)]
OutputUrl = Annotated[Text, Field(min_length=1, max_length=4096), AfterValidator(_output_url)]
EnvKey = Annotated[Text, Field(min_length=1, max_length=1024), AfterValidator(_env_name)]
Int32 = Annotated[int, Field(ge=INT32[0], le=INT32[1])]
GB = Annotated[float, Field(ge=0, le=MAX_GB)]


class StrictModel(BaseModel):
    """The base of every input model: strict types, no unknown keys, no NaN or infinity."""

    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)


class Executor(StrictModel):
    command: Annotated[list[Annotated[Text, Field(max_length=10_000)]], Field(min_length=1)]
    # at most 128 KiB a value: Linux's limit on one string of a new process's environment
    env: Annotated[
        dict[EnvKey, Annotated[Text, Field(max_length=131_072)]], Field(max_length=1000)
    ] = {}
    workdir: TaskPath | None = None
    ignore_error: bool = False  # a non-zero exit does not stop the task
    stdin: TaskPath | None = None  # a file to read standard input from
    stdout: TaskPath | None = None  # a file of its own instead of the task's stdout.txt
    stderr: TaskPath | None = None


class Resources(StrictModel):
    devices: Annotated[int, Field(ge=1, le=MAX_DEVICES)] = 1  # on each node
    # a gang of this many distinct nodes of one pool, `devices` on each: all or none
    nodes: Annotated[int, Field(ge=1, le=MAX_NODES)] = 1
    device_kind: Literal["gpu", "npu", "cpu"] = "cpu"
    device_models: Annotated[list[Name], Field(min_length=1, max_length=100)] | None = None
    precision: Literal["fp64", "fp32", "tf32", "fp16", "bf16", "fp8", "int8"] = "fp32"
    work_flop: Annotated[float, Field(gt=0, le=MAX_WORK_FLOP)] | None = None
    duration_s: Annotated[float, Field(gt=0, le=MAX_DURATION_S)] | None = None
    memory_gb: GB = 0.0
    disk_gb: GB = 0.0  # recorded; pools do not report disk yet
    workload: Literal["training", "inference", "hpc", "general"] = "general"

    @model_validator(mode="after")
    def _total(self) -> Resources:
        if self.devices * self.nodes > MAX_DEVICES:
            raise PydanticCustomError(
                "too_many_devices",
                "devices x nodes is {total}: at most {limit} devices in all (fewer nodes or "
                "fewer devices per node) / 设备总数（devices x nodes）最多 {limit}",
                {"total": self.devices * self.nodes, "limit": MAX_DEVICES},
            )
        return self


def total_devices(spec: Mapping[str, Any]) -> int:
    """The devices a stored task spec holds in all: `devices` on each of its `nodes`."""
    resources = spec["resources"]
    return int(resources["devices"]) * int(resources.get("nodes") or 1)


class TaskCreate(StrictModel):
    name: Annotated[Text, Field(max_length=200)] = ""
    executors: Annotated[list[Executor], Field(min_length=1, max_length=100)]
    resources: Resources = Resources()
    latency_tier: Literal["interactive", "standard", "batch"] = "batch"
    origin: Annotated[Text, Field(min_length=1, max_length=100)] | None = None
    data_gb: GB = 0.0
    # where its data lives (a province, city or cluster); unset: at `origin`, or where a site
    # serves the bucket of its first s3:// input (`services.tasks.data_location`)
    data_location: Annotated[Text, Field(min_length=1, max_length=100)] | None = None
    deadline_s: Annotated[float, Field(gt=0, le=MAX_DEADLINE_S)] | None = None
    # the agent stops the task after this many seconds of running (EXECUTOR_ERROR, "exceeded
    # its maximum run time"); unset: the server's `default_max_run_s`
    max_run_s: Annotated[float, Field(gt=0, le=MAX_RUN_S)] | None = None
    max_price_fen: Annotated[int, Field(ge=0, le=MAX_BUDGET_FEN)] | None = None
    # the names of `scheduler.POLICIES` (a test keeps them equal; the OpenAPI enum reads these)
    policy: Literal["nearest", "cost", "green", "green-location", "latency", "balanced"] | None = (
        None
    )
    preemptible: bool = False  # priced with the operator's preemptible discount
    # may start up to 24 h later, within `deadline_s`, when that is cheaper or greener
    deferrable: bool = False
    zones: Annotated[list[Name], Field(min_length=1, max_length=100)] | None = None  # residency
    tags: Annotated[
        dict[Annotated[Text, Field(max_length=256)], Annotated[Text, Field(max_length=4096)]],
        Field(max_length=1000),
    ] = {}


class InputFile(StrictModel):
    """A file staged in before the first executor: inline `content`, or a `url` to copy."""

    path: TaskPath
    content: Text | None = None
    url: InputUrl | None = None
    type: Literal["FILE", "DIRECTORY"] = "FILE"

    @model_validator(mode="after")
    def _one_source(self) -> InputFile:
        if (self.content is None) == (self.url is None):
            raise PydanticCustomError("input_source", "either content or url, not both")
        return self


class OutputFile(StrictModel):
    """A file (or, with wildcards, the files) copied out after the last executor."""

    path: TaskPath
    url: OutputUrl
    type: Literal["FILE", "DIRECTORY"] = "FILE"
    path_prefix: TaskPath | None = None


def _json_document(value: dict[str, Any]) -> dict[str, Any]:
    """A stored JSON document (the TES task as sent): no NUL in any key or text, and no NaN
    or infinity (PostgreSQL's JSON refuses both)."""
    stack: list[object] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            no_nul(item)
        elif isinstance(item, float) and not math.isfinite(item):
            raise PydanticCustomError("finite_number", "Input should be a finite number")
        elif isinstance(item, dict):
            for key, inner in item.items():
                no_nul(str(key))
                stack.append(inner)
        elif isinstance(item, list):
            stack.extend(item)
    return value


class TaskSpec(TaskCreate):
    """A task spec as stored: what `TaskCreate` takes, plus what the TES API adds (files to
    stage, volumes, and the TES document as sent). Every spec is checked with it before it is
    stored, whichever API it came from (`check_task_spec`)."""

    inputs: Annotated[list[InputFile], Field(max_length=10_000)] | None = None
    outputs: Annotated[list[OutputFile], Field(max_length=10_000)] | None = None
    volumes: Annotated[list[TaskPath], Field(max_length=1000)] | None = None
    tes: Annotated[dict[str, Any], AfterValidator(_json_document)] | None = None

    @field_validator("inputs")
    @classmethod
    def _content_bounded(cls, inputs: list[InputFile] | None) -> list[InputFile] | None:
        size = sum(len((i.content or "").encode()) for i in inputs or [])
        if size > MAX_INPUT_BYTES:
            raise PydanticCustomError("content_too_large", "at most 1 MB of inline content")
        return inputs


# --- bilingual descriptions of validation errors ---------------------------------------------

_PLAIN: dict[str, tuple[str, str]] = {
    "missing": ("a value: this field is required", "必填字段，请提供"),
    "extra_forbidden": ("no such field: remove it", "不存在该字段，请删除"),
    "finite_number": ("a finite number (not NaN or Infinity)", "有限数（不能是 NaN 或 Infinity）"),
    "nul_character": ("text without NUL characters (\\u0000)", "不含 NUL 字符（\\u0000）的文本"),
    "task_path": (
        "a path inside the task directory, without '..' components",
        "任务目录内的路径，不含 '..'",
    ),
    **DATA_URL,
    "env_name": (
        "an environment variable name (not empty, no '=')",
        "环境变量名（非空，不含 '='）",
    ),
    "input_source": ("either content or url, not both", "content 与 url 二选一"),
    "content_too_large": (
        f"at most {MAX_INPUT_BYTES:,} bytes of inline content in all",
        f"内联内容合计不超过 {MAX_INPUT_BYTES:,} 字节",
    ),
    "int_type": ("a whole number", "整数"),
    "int_parsing": ("a whole number", "整数"),
    "int_from_float": ("a whole number", "整数"),
    "float_type": ("a number", "数字"),
    "float_parsing": ("a number", "数字"),
    "string_type": ("a string", "字符串"),
    "bool_type": ("true or false", "true 或 false"),
    "bool_parsing": ("true or false", "true 或 false"),
    "list_type": ("a list", "列表"),
    "dict_type": ("an object", "对象"),
    "model_type": ("an object", "对象"),
    "model_attributes_type": ("an object", "对象"),
    "datetime_type": ("an ISO 8601 date and time", "ISO 8601 日期时间"),
    "datetime_parsing": ("an ISO 8601 date and time", "ISO 8601 日期时间"),
    "datetime_from_date_parsing": ("an ISO 8601 date and time", "ISO 8601 日期时间"),
    "string_pattern_mismatch": ("text in the documented format", "符合格式的文本"),
    "json_invalid": ("valid JSON", "合法的 JSON"),
}
_BOUNDS: dict[str, tuple[str, str, str]] = {  # type: (context key, English, Chinese)
    "greater_than": ("gt", "a number > {}", "大于 {} 的数"),
    "greater_than_equal": ("ge", "a number >= {}", "不小于 {} 的数"),
    "less_than": ("lt", "a number < {}", "小于 {} 的数"),
    "less_than_equal": ("le", "a number <= {}", "不大于 {} 的数"),
    "string_too_short": ("min_length", "at least {} characters", "至少 {} 个字符"),
    "string_too_long": ("max_length", "at most {} characters", "至多 {} 个字符"),
    "too_short": ("min_length", "at least {} items", "至少 {} 项"),
    "too_long": ("max_length", "at most {} items", "至多 {} 项"),
    "literal_error": ("expected", "one of {}", "{} 之一"),
    "enum": ("expected", "one of {}", "{} 之一"),
}


def describe(problem: Any) -> tuple[str, str]:
    """What a validation error (one item of `ValidationError.errors()`) would have accepted,
    in English and Chinese."""
    kind = str(problem.get("type", ""))
    if kind in _PLAIN:
        return _PLAIN[kind]
    context = problem.get("ctx") or {}
    if kind in _BOUNDS and _BOUNDS[kind][0] in context:
        key, english, chinese = _BOUNDS[kind]
        value = context[key]
        shown = f"{value:,}" if isinstance(value, int) and abs(value) >= 10_000 else str(value)
        return english.format(shown), chinese.format(shown.replace(" or ", "、"))
    message = str(problem.get("msg") or "a valid value")
    return message, message


def field_path(loc: tuple[int | str, ...] | list[int | str]) -> str:
    """A location as a field path: `executors[0].env.HOME`; a bad key of an object as
    `tags[key]` (the key itself is the value shown)."""
    parts = list(loc)
    path = ""
    for n, part in enumerate(parts):
        if n + 1 < len(parts) and parts[n + 1] == "[key]":
            continue  # the key is the bad value: not part of the path
        if isinstance(part, int):
            path += f"[{part}]"
        elif part == "[key]":
            path += "[key]"
        else:
            path += f".{part}" if path else str(part)
    return path


def invalid_value(error: ValidationError, renames: dict[str, str] | None = None) -> InvalidValue:
    """The first problem of `error` as an `InvalidValue` naming the field (renamed by the
    longest matching prefix in `renames`: a TES field for a native one, say)."""
    problem = error.errors()[0]
    field = field_path(tuple(problem.get("loc", ())))
    for native in sorted(renames or {}, key=len, reverse=True):
        if field == native or field.startswith((native + ".", native + "[")):
            field = (renames or {})[native] + field[len(native) :]
            break
    expected, expected_zh = describe(problem)
    value = problem.get("input")
    if isinstance(value, dict | list):
        value = type(value).__name__
    elif isinstance(value, str) and len(value) > 80:
        value = value[:80] + "..."
    elif isinstance(value, int) and abs(value) > 10**30:
        value = f"a {len(str(abs(value)))}-digit number"
    return InvalidValue(field or "body", value, expected, expected_zh)


def check_task_spec(spec: dict[str, Any], renames: dict[str, str] | None = None) -> None:
    """Validate a task spec as stored (`TaskSpec`), whichever API built it; `InvalidValue`
    naming the field (renamed with `renames`) when it is not."""
    try:
        TaskSpec.model_validate(spec)
    except ValidationError as error:
        raise invalid_value(error, renames) from None
