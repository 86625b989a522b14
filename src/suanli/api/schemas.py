"""Request and response bodies of the HTTP API that are the API's own (Pydantic 2, strict).

The shared shapes live elsewhere: the value types and the task spec in `suanli.specs` (the one
validation path of every API), the typed commands in `services.commands` (`SiteCreate` is a
`SiteCommand`, `PoolCreate` a `PoolCommand`, `AgentCreate` an `AgentCommand`, `Report` a
`ReportCommand`: a request body is handed to the service as it is; a batch's `ReportItem` is a
`ReportFields` with its task), and the read models the services answer with in
`services.views`. Here: the agent protocol's heartbeat, lease and batched-report bodies,
the virtual clock's, and the market's small request and response bodies.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, Field, model_validator
from pydantic_core import PydanticCustomError

from suanli.services.commands import (
    AgentCommand,
    PoolCommand,
    ReportCommand,
    ReportFields,
    SiteCommand,
)
from suanli.services.views import LeasedTask
from suanli.specs import Name, OutputText, StrictModel, Text


class SiteCreate(SiteCommand):
    """A new site (the request body of `POST /v1/sites`)."""


class PoolCreate(PoolCommand):
    """A new pool (the request body of `POST /v1/pools`)."""


class AgentCreate(AgentCommand):
    """A new agent (the request body of `POST /v1/agents`)."""


class Report(ReportCommand):
    """A task's progress (the request body of `POST /v1/tasks/{id}/report`)."""


MAX_REPORTS = 1000  # items in one `POST /v1/agents/{id}/reports`


class ReportItem(ReportFields):
    """One task's report in a batch: the fields of `Report`, with the task instead of the agent
    (the batch's path names the agent)."""

    task_id: Name


class Reports(StrictModel):
    """A batch of an agent's reports (the request body of `POST /v1/agents/{id}/reports`),
    applied in order, each on its own."""

    reports: Annotated[list[ReportItem], Field(min_length=1, max_length=MAX_REPORTS)]


class ReportResult(BaseModel):
    """What became of one report of a batch: `status` the HTTP code the single report would
    have got (200, or 404 / 409 / 422 with the error's English `detail`); `state` the task's
    state after it, when 200."""

    task_id: str
    status: int
    state: str | None = None
    detail: str | None = None


class ReportsReply(BaseModel):
    results: list[ReportResult]  # one per report, in the batch's order


class AgentRead(BaseModel):
    id: str
    lease_s: float
    heartbeat_s: float
    preempt_grace_s: float = 30.0  # a preempted task's SIGTERM-to-SIGKILL grace


Count = Annotated[int, Field(ge=0, le=100_000_000)]
ModelCounts = Annotated[dict[Annotated[Text, Field(max_length=100)], Count], Field(max_length=1000)]


class NodeReport(StrictModel):
    """One node of the agent's engine (`Capacity.per_node`)."""

    name: Annotated[Text, Field(max_length=200)]
    cpus: Count
    free_cpus: Count
    gpus_by_model: ModelCounts = {}  # noqa: RUF012 (pydantic copies defaults)
    free_gpus_by_model: ModelCounts = {}  # noqa: RUF012


class CapacityReport(StrictModel):
    """What the agent's engine holds now (its backend's `capacity()`)."""

    nodes: Count
    cpus: Count
    free_cpus: Count
    gpus: Count = 0
    free_gpus: Count = 0
    gpus_by_model: ModelCounts = {}  # noqa: RUF012 (pydantic copies defaults)
    memory_mb: Count = 0
    per_node: Annotated[list[NodeReport], Field(max_length=100_000)] = []  # noqa: RUF012


class Tails(StrictModel):
    stdout: Annotated[OutputText, Field(max_length=65_536)] = ""
    stderr: Annotated[OutputText, Field(max_length=65_536)] = ""


class Heartbeat(StrictModel):
    running: Annotated[list[Name], Field(max_length=10_000)] = []  # noqa: RUF012
    # output so far of running tasks (what changed since last time)
    tails: Annotated[dict[Name, Tails], Field(max_length=10_000)] = {}  # noqa: RUF012
    capacity: CapacityReport | None = None  # sizes the site's pools (see platform.apply_capacity)


class HeartbeatReply(BaseModel):
    cancel: list[str]
    preempt: list[str] = []  # tasks to preempt: SIGTERM, the grace, SIGKILL
    preempt_grace_s: float = 30.0


class LeaseRequest(StrictModel):
    max: Annotated[int, Field(ge=0, le=1000)] = 1
    # long-poll: with no work for the agent's site, hold the request up to this many seconds
    # until a scheduling pass places work there (0: answer at once)
    wait_s: Annotated[float, Field(ge=0, le=30)] = 0.0


class ClockMove(StrictModel):
    """Move a virtual clock forward (`suanli serve --clock virtual`): by `advance_s` seconds, or
    `to` a moment (timezone-aware); exactly one of them."""

    advance_s: Annotated[float | None, Field(ge=0, le=10 * 366 * 86400)] = None
    to: Annotated[datetime | None, Field(strict=False)] = None

    @model_validator(mode="after")
    def _one_move(self) -> ClockMove:
        if (self.advance_s is None) == (self.to is None):
            raise PydanticCustomError("clock_move", "either advance_s or to, not both")
        if self.to is not None and self.to.tzinfo is None:
            raise PydanticCustomError("clock_to", "a time with its UTC offset")
        return self


class ClockRead(BaseModel):
    now: datetime
    passed: bool  # a scheduling pass of this process has run at the new time


class LeaseReply(BaseModel):
    tasks: list[LeasedTask]


class ErrorBody(BaseModel):
    error: dict[str, Any]


class AcceptQuote(StrictModel):
    option: Annotated[int, Field(ge=0, le=100)] = 0


class RatingCreate(StrictModel):
    stars: Annotated[int, Field(ge=1, le=5)]
    comment: Annotated[Text, Field(max_length=2000)] = ""


class BalanceRead(BaseModel):
    accounts: dict[str, dict[str, Any]]


class StatementRead(BaseModel):
    account: str
    lines: list[dict[str, Any]]
