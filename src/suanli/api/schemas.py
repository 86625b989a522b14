"""Request and response bodies of the HTTP API (Pydantic 2, strict: no silent coercion).

Separate create / read shapes; every create model refuses unknown keys, NaN and infinities.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Name = Annotated[str, Field(min_length=1, max_length=200)]


class _In(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)


TaskPath = Annotated[str, Field(min_length=1, max_length=4096)]  # inside the task directory


class Executor(_In):
    command: Annotated[list[Annotated[str, Field(max_length=10_000)]], Field(min_length=1)]
    env: dict[str, str] = {}
    workdir: TaskPath | None = None
    ignore_error: bool = False  # a non-zero exit does not stop the task
    stdin: TaskPath | None = None  # a file to read standard input from
    stdout: TaskPath | None = None  # a file of its own instead of the task's stdout.txt
    stderr: TaskPath | None = None


class Resources(_In):
    devices: Annotated[int, Field(ge=1, le=100_000)] = 1
    device_kind: Literal["gpu", "npu", "cpu"] = "cpu"
    device_models: Annotated[list[Name], Field(min_length=1)] | None = None
    precision: Literal["fp64", "fp32", "tf32", "fp16", "bf16", "fp8", "int8"] = "fp32"
    work_flop: Annotated[float, Field(gt=0)] | None = None
    duration_s: Annotated[float, Field(gt=0)] | None = None
    memory_gb: Annotated[float, Field(ge=0)] = 0.0
    disk_gb: Annotated[float, Field(ge=0)] = 0.0  # recorded; pools do not report disk yet
    workload: Literal["training", "inference", "hpc", "general"] = "general"


class TaskCreate(_In):
    name: Annotated[str, Field(max_length=200)] = ""
    executors: Annotated[list[Executor], Field(min_length=1, max_length=100)]
    resources: Resources = Resources()
    latency_tier: Literal["interactive", "standard", "batch"] = "batch"
    origin: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    data_gb: Annotated[float, Field(ge=0)] = 0.0
    deadline_s: Annotated[float, Field(gt=0)] | None = None
    max_price_fen: Annotated[int, Field(ge=0)] | None = None
    policy: Literal["nearest", "cost", "green", "latency", "balanced"] | None = None
    preemptible: bool = False  # priced with the operator's preemptible discount
    zones: Annotated[list[Name], Field(min_length=1, max_length=100)] | None = None  # residency
    tags: dict[str, str] = {}


class TaskRead(BaseModel):
    id: str
    name: str
    state: str
    owner: str
    devices: int
    pool: str | None
    site: str | None
    placement: dict[str, Any] | None
    unplaced_reason: str | None
    requeues: int
    exit_code: int | None
    usage: dict[str, Any] | None
    cancel_requested: bool
    created_at: datetime
    updated_at: datetime
    spec: dict[str, Any]


class TaskLogs(BaseModel):
    id: str
    state: str
    exit_code: int | None
    stdout_tail: str
    stderr_tail: str


class SiteCreate(_In):
    name: Name
    cluster: Annotated[str, Field(min_length=1, max_length=40)] | None = None
    province: Annotated[str, Field(min_length=1, max_length=40)] | None = None
    lat: Annotated[float, Field(ge=-90, le=90)] | None = None
    lon: Annotated[float, Field(ge=-180, le=180)] | None = None
    pue: Annotated[float, Field(ge=1.0, le=5.0)] | None = None
    green_share: Annotated[float, Field(ge=0.0, le=1.0)] | None = None


class SiteRead(BaseModel):
    id: str
    name: str
    owner: str
    cluster: str | None
    province: str
    lat: float
    lon: float
    pue: float
    green_share: float
    reputation: float | None = None  # the owner's, 0..1 (ratings and SLA adherence)


class PoolCreate(_In):
    site_id: Name
    device: Name
    count: Annotated[int, Field(ge=1, le=10_000_000)]
    price_fen_per_device_hour: Annotated[int, Field(ge=0, le=10_000_000_000)]
    # for engines with a queue of their own (Slurm): how many devices' worth of tasks may be
    # placed beyond the free devices, to wait there; 0 places only on free devices
    queue_depth: Annotated[int, Field(ge=0, le=10_000_000)] = 0


class PoolRead(BaseModel):
    id: str
    site_id: str
    device: str
    count: int
    free: int
    price_fen_per_device_hour: int
    queue_depth: int = 0


class AgentCreate(_In):
    site_id: Name
    name: Annotated[str, Field(max_length=200)] = "agent"
    slots: Annotated[int, Field(ge=1, le=10_000)] = 1
    backend: Literal["local", "slurm", "ray", "kubernetes"] = "local"


class AgentRead(BaseModel):
    id: str
    lease_s: float
    heartbeat_s: float


Count = Annotated[int, Field(ge=0, le=100_000_000)]


class CapacityReport(_In):
    """What the agent's engine holds now (its backend's `capacity()`)."""

    nodes: Count
    cpus: Count
    free_cpus: Count
    gpus: Count = 0
    free_gpus: Count = 0
    gpus_by_model: dict[Annotated[str, Field(max_length=100)], Count] = {}
    memory_mb: Count = 0


class Tails(_In):
    stdout: Annotated[str, Field(max_length=65_536)] = ""
    stderr: Annotated[str, Field(max_length=65_536)] = ""


class Heartbeat(_In):
    running: list[Name] = []
    tails: dict[Name, Tails] = {}  # output so far of running tasks (what changed since last time)
    capacity: CapacityReport | None = None  # sizes the site's pools (see platform.apply_capacity)


class HeartbeatReply(BaseModel):
    cancel: list[str]


class LeaseRequest(_In):
    max: Annotated[int, Field(ge=0, le=1000)] = 1


class LeasedTask(BaseModel):
    id: str
    executors: list[dict[str, Any]]
    devices: int
    inputs: list[dict[str, Any]] = []  # staged before executor 1 (see suanli.agent.staging)
    outputs: list[dict[str, Any]] = []  # copied out after the last executor succeeds
    volumes: list[str] = []  # empty directories made before executor 1
    lease_expires_at: datetime


class LeaseReply(BaseModel):
    tasks: list[LeasedTask]


class Usage(_In):
    wall_s: Annotated[float, Field(ge=0)] = 0.0
    cpu_s: Annotated[float, Field(ge=0)] = 0.0
    device_s: Annotated[float, Field(ge=0)] = 0.0


class ExecutorReport(_In):
    exit_code: int | None = None
    stdout_tail: Annotated[str, Field(max_length=65_536)] = ""
    stderr_tail: Annotated[str, Field(max_length=65_536)] = ""
    wall_s: Annotated[float, Field(ge=0)] = 0.0
    started_at: Annotated[float, Field(ge=0)] | None = None  # Unix seconds
    ended_at: Annotated[float, Field(ge=0)] | None = None


class OutputReport(_In):
    url: Annotated[str, Field(max_length=4096)]
    path: Annotated[str, Field(max_length=4096)]
    size_bytes: Annotated[str, Field(pattern=r"^[0-9]{1,20}$")]


class Report(_In):
    agent_id: Name
    state: Literal["RUNNING", "COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED"]
    exit_code: int | None = None
    stdout_tail: Annotated[str, Field(max_length=65_536)] = ""
    stderr_tail: Annotated[str, Field(max_length=65_536)] = ""
    usage: Usage | None = None
    reason: Annotated[str, Field(max_length=1000)] = ""
    executors: Annotated[list[ExecutorReport], Field(max_length=100)] = []  # one per executor run
    outputs: Annotated[list[OutputReport], Field(max_length=10_000)] = []  # files copied out


class ErrorBody(BaseModel):
    error: dict[str, Any]


class QuoteRead(BaseModel):
    id: str
    options: list[dict[str, Any]]
    unavailable: str
    expires_at: datetime


class AcceptQuote(_In):
    option: Annotated[int, Field(ge=0, le=100)] = 0


class OrderRead(BaseModel):
    id: str
    task_id: str
    quote_id: str
    state: str
    escrow: dict[str, Any]
    offer: dict[str, Any]
    settlement: dict[str, Any] | None


class RatingCreate(_In):
    stars: Annotated[int, Field(ge=1, le=5)]
    comment: Annotated[str, Field(max_length=2000)] = ""


class RatingRead(BaseModel):
    id: str
    order_id: str
    stars: int
    comment: str


class BalanceRead(BaseModel):
    accounts: dict[str, dict[str, Any]]


class StatementRead(BaseModel):
    account: str
    lines: list[dict[str, Any]]
