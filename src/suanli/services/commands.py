"""Typed commands of the services: what a caller asks a service to do, validated once.

Each command is a frozen, strict Pydantic model (no unknown keys, no NaN, every text without NUL,
every number bounded), built on `suanli.specs`' value types. The HTTP API takes them as request
bodies (`api.schemas.SiteCreate` is a `SiteCommand`, and so on), the CLI and the console build
them, and `capacity.add_site` / `add_pool`, `agents.register_agent` and `agents.report` take
them instead of `dict[str, Any]`. A task's spec stays the validated `specs.TaskSpec` (stored in
its dict form).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field

from suanli.specs import MAX_PRICE_FEN_PER_DEVICE_HOUR, Int32, Name, OutputText, StrictModel, Text

# an S3 bucket name (3-63 lower-case letters, digits, dots and hyphens, a letter or digit at each
# end), as S3 and S3-compatible servers name buckets
BucketName = Annotated[
    Text, Field(min_length=3, max_length=63, pattern=r"^[a-z0-9][a-z0-9.-]*[a-z0-9]$")
]


class Command(StrictModel):
    """The base of every command: strict like every input model, and frozen."""

    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False, frozen=True)


class SiteCommand(Command):
    """Register a site: a catalog cluster (`cluster`), or a province with optional coordinates."""

    name: Name
    cluster: Annotated[Text, Field(min_length=1, max_length=40)] | None = None
    province: Annotated[Text, Field(min_length=1, max_length=40)] | None = None
    lat: Annotated[float, Field(ge=-90, le=90)] | None = None
    lon: Annotated[float, Field(ge=-180, le=180)] | None = None
    pue: Annotated[float, Field(ge=1.0, le=5.0)] | None = None
    green_share: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    # the object-storage buckets the site serves: tasks reading s3:// data from them have their
    # data here (the engine times and charges its transfer to sites elsewhere)
    buckets: Annotated[list[BucketName], Field(max_length=1000)] | None = None


class PoolCommand(Command):
    """Add a pool of `count` identical devices to one of the caller's sites."""

    site_id: Name
    device: Name
    count: Annotated[int, Field(ge=1, le=10_000_000)]
    price_fen_per_device_hour: Annotated[int, Field(ge=0, le=MAX_PRICE_FEN_PER_DEVICE_HOUR)]
    # for engines with a queue of their own (Slurm): how many devices' worth of tasks may be
    # placed beyond the free devices, to wait there; 0 places only on free devices
    queue_depth: Annotated[int, Field(ge=0, le=10_000_000)] = 0


class AgentCommand(Command):
    """Register an agent for one of the caller's sites."""

    site_id: Name
    name: Annotated[Text, Field(max_length=200)] = "agent"
    slots: Annotated[int, Field(ge=1, le=10_000)] = 1
    backend: Literal["local", "slurm", "ray", "kubernetes"] = "local"


class Usage(StrictModel):
    wall_s: Annotated[float, Field(ge=0)] = 0.0
    cpu_s: Annotated[float, Field(ge=0)] = 0.0
    device_s: Annotated[float, Field(ge=0)] = 0.0
    # measured by the agent on the task's accelerators (`suanli.agent.energy`); absent: not
    # measured, the task's energy is only modelled. Shown, never settled on.
    energy_kwh: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    utilisation: Annotated[float, Field(ge=0, le=1)] | None = None


class ExecutorReport(StrictModel):
    exit_code: Int32 | None = None
    stdout_tail: Annotated[OutputText, Field(max_length=65_536)] = ""
    stderr_tail: Annotated[OutputText, Field(max_length=65_536)] = ""
    wall_s: Annotated[float, Field(ge=0)] = 0.0
    started_at: Annotated[float, Field(ge=0)] | None = None  # Unix seconds
    ended_at: Annotated[float, Field(ge=0)] | None = None


class OutputReport(StrictModel):
    url: Annotated[Text, Field(max_length=4096)]
    path: Annotated[Text, Field(max_length=4096)]
    size_bytes: Annotated[str, Field(pattern=r"^[0-9]{1,20}$")]


class ReportFields(Command):
    """What an agent says of one task's progress or end: a `ReportCommand` without its agent
    (an item of a batch of reports names the agent once, in the path)."""

    state: Literal["RUNNING", "COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED", "PREEMPTED"]
    exit_code: Int32 | None = None
    stdout_tail: Annotated[OutputText, Field(max_length=65_536)] = ""
    stderr_tail: Annotated[OutputText, Field(max_length=65_536)] = ""
    usage: Usage | None = None
    reason: Annotated[OutputText, Field(max_length=1000)] = ""
    executors: Annotated[list[ExecutorReport], Field(max_length=100)] = []  # noqa: RUF012 (one per run)
    outputs: Annotated[list[OutputReport], Field(max_length=10_000)] = []  # noqa: RUF012 (copied out)


class ReportCommand(ReportFields):
    """An agent's report of a task's progress or end."""

    agent_id: Name
