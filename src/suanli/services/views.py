"""Read models of the HTTP API: what the services answer a request with, built from the rows they
return by the converters here, so that the API never imports `suanli.store`.

Each model is the response body of its route (`TaskRead` of `/v1/tasks`, `SiteRead`, `PoolRead`,
`OrderRead`, `QuoteRead`, `RatingRead`, `TaskLogs`, `LeasedTask` of the agent protocol,
`TokenRead` and `AgentTokenRead` of the token routes). Converters read the rows they are given and
write nothing; times are timezone-aware UTC, money is `market.money` (integer fen and a yuan
string). `Actor` (`services.core.Actor`, a protocol: id, name, role) is who a request acts as:
the API receives it from the unit of work and hands it back to services; `StoredTask` (a
protocol of the attributes the TES view reads) is a task as the services return it. Neither is
a store class: the edges depend on these shapes, not on the store's models.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from suanli.services import capacity as capacity_service
from suanli.services import market
from suanli.services.core import Actor as Actor  # re-exported: the API's caller type
from suanli.services.core import aware
from suanli.services.readmodels import metered_share
from suanli.store.models import OrderRow, PoolRow, Principal, QuoteRow, RatingRow, SiteRow, TaskRow
from suanli.store.models import Token as TokenRow


class StoredTask(Protocol):
    """A task as the services return it, as the edges read it (the store's task row is one)."""

    @property
    def id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def spec(self) -> dict[str, Any]: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def cancel_requested(self) -> bool: ...
    @property
    def pool_id(self) -> str | None: ...
    @property
    def site_id(self) -> str | None: ...
    @property
    def unplaced_reason(self) -> str | None: ...
    @property
    def exit_code(self) -> int | None: ...
    @property
    def stdout_tail(self) -> str | None: ...
    @property
    def stderr_tail(self) -> str | None: ...
    @property
    def usage(self) -> dict[str, Any] | None: ...
    @property
    def executor_logs(self) -> list[dict[str, Any]] | None: ...
    @property
    def output_logs(self) -> list[dict[str, Any]] | None: ...


class EnergyFigure(BaseModel):
    """One figure of a task's energy, labelled with how it was obtained (`task_energy`)."""

    basis: Literal["modelled", "measured"]
    energy_kwh: float
    # modelled: the devices' TDP x utilisation x time x the site's PUE (facility energy);
    # measured: what the accelerators' own meters counted (devices only, no PUE)
    scope: Literal["facility", "devices"]
    utilisation: float | None = None  # measured: mean over the devices and the run, 0..1


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
    preempt_requested: bool = False  # its agent is asked to preempt it
    preemptions: int = 0  # how often it was preempted and queued again
    energy: list[EnergyFigure] = []  # modelled first, then measured when the agent measured


class TaskLogs(BaseModel):
    id: str
    state: str
    exit_code: int | None
    stdout_tail: str
    stderr_tail: str


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
    buckets: list[str] = []  # the object-storage buckets it serves


class PoolRead(BaseModel):
    id: str
    site_id: str
    device: str
    count: int
    free: int
    price_fen_per_device_hour: int
    queue_depth: int = 0
    devices_per_node: int | None = None  # as the engine reports per node; None: not reported


class LeasedTask(BaseModel):
    id: str
    executors: list[dict[str, Any]]
    devices: int  # on each of `nodes` (a gang: all or none)
    nodes: int = 1
    device_kind: str = "cpu"
    device: str | None = None  # the catalog id of the pool's device model
    inputs: list[dict[str, Any]] = []  # staged before executor 1 (see suanli.agent.staging)
    outputs: list[dict[str, Any]] = []  # copied out after the last executor succeeds
    volumes: list[str] = []  # empty directories made before executor 1
    max_run_s: float | None = None  # the agent stops the task after this long
    lease_expires_at: datetime


class QuoteRead(BaseModel):
    id: str
    options: list[dict[str, Any]]
    unavailable: str
    expires_at: datetime


class OrderRead(BaseModel):
    id: str
    task_id: str
    quote_id: str | None  # None: the order the pass opened at admission
    state: str
    escrow: dict[str, Any]
    offer: dict[str, Any]
    settlement: dict[str, Any] | None


class RatingRead(BaseModel):
    id: str
    order_id: str
    stars: int
    comment: str


class TokenRead(BaseModel):
    """A token without its secret."""

    id: str
    principal: str
    role: str
    name: str
    site_id: str | None = Field(description="Set for an agent token: the one site it acts for")
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


class AgentTokenRead(BaseModel):
    """The new token, shown this once."""

    id: str
    token: str
    site_id: str
    name: str
    expires_at: datetime | None


# --- converters ---------------------------------------------------------------------------------


def task_energy(
    placement: Mapping[str, Any] | None, usage: Mapping[str, Any] | None, devices: int
) -> list[EnergyFigure]:
    """A task's energy figures, each labelled. Modelled: the placement's estimate, scaled to
    the device-seconds the agent reported once it did (as the site's finished-energy total);
    none before the task is placed. Measured: the agent's `usage.energy_kwh`, when it measured
    one. Settlement uses neither: money stays on the metered device-seconds."""
    figures = []
    usage = usage or {}
    if placement and isinstance(placement.get("energy_kwh"), int | float):
        share = metered_share(placement, usage, devices)
        kwh = float(placement["energy_kwh"]) * (1.0 if share is None else share)
        figures.append(EnergyFigure(basis="modelled", energy_kwh=kwh, scope="facility"))
    measured = usage.get("energy_kwh")
    if isinstance(measured, int | float) and not isinstance(measured, bool):
        busy = usage.get("utilisation")
        figures.append(
            EnergyFigure(
                basis="measured",
                energy_kwh=float(measured),
                scope="devices",
                utilisation=float(busy) if isinstance(busy, int | float) else None,
            )
        )
    return figures


def task_read(task: TaskRow) -> TaskRead:
    return TaskRead(
        id=task.id,
        name=task.name,
        state=task.state,
        owner=task.owner_id,
        devices=task.devices,
        pool=task.pool_id,
        site=task.site_id,
        placement=task.placement,
        unplaced_reason=task.unplaced_reason,
        requeues=task.requeues,
        exit_code=task.exit_code,
        usage=task.usage,
        cancel_requested=task.cancel_requested,
        created_at=aware(task.created_at),
        updated_at=aware(task.updated_at),
        spec=task.spec,
        preempt_requested=task.preempt_requested,
        preemptions=task.preemptions,
        energy=task_energy(task.placement, task.usage, task.devices),
    )


def task_logs(task: TaskRow) -> TaskLogs:
    return TaskLogs(
        id=task.id,
        state=task.state,
        exit_code=task.exit_code,
        stdout_tail=task.stdout_tail or "",
        stderr_tail=task.stderr_tail or "",
    )


def site_read(site: SiteRow, reputation: float | None = None) -> SiteRead:
    return SiteRead(
        id=site.id,
        name=site.name,
        owner=site.owner_id,
        cluster=site.cluster_id,
        province=site.province,
        lat=site.lat,
        lon=site.lon,
        pue=site.pue,
        green_share=site.green_share,
        reputation=reputation,
        buckets=list(site.buckets or []),
    )


def sites_with_reputation(session: Session) -> list[SiteRead]:
    """Every site, with its owner's reputation."""
    reputation = market.reputation(session)
    return [site_read(s, reputation.get(s.owner_id)) for s in capacity_service.list_sites(session)]


def pool_read(pool: PoolRow, free: int) -> PoolRead:
    return PoolRead(
        id=pool.id,
        site_id=pool.site_id,
        device=pool.device,
        count=pool.count,
        free=free,
        price_fen_per_device_hour=pool.price_fen_per_device_hour,
        queue_depth=pool.queue_depth or 0,
        devices_per_node=pool.devices_per_node,
    )


def pools_with_free(session: Session) -> list[PoolRead]:
    """Every pool, with its free devices."""
    return [pool_read(p, free) for p, free in capacity_service.list_pools(session)]


def leased_task(
    task: TaskRow, default_max_run_s: float | None = None, device: str | None = None
) -> LeasedTask:
    """A leased task as its agent receives it, on a pool of `device` (a catalog id); `max_run_s`
    is the spec's, else the server's `default_max_run_s`, so an agent never needs the server's
    settings."""
    nodes = int(task.spec["resources"].get("nodes") or 1)
    return LeasedTask(
        id=task.id,
        executors=task.spec["executors"],
        devices=task.devices // nodes,
        nodes=nodes,
        device_kind=task.spec["resources"].get("device_kind") or "cpu",
        device=device,
        inputs=task.spec.get("inputs") or [],
        outputs=task.spec.get("outputs") or [],
        volumes=task.spec.get("volumes") or [],
        max_run_s=task.spec.get("max_run_s") or default_max_run_s,
        lease_expires_at=aware(task.lease_expires_at or task.updated_at),
    )


def quote_read(row: QuoteRow) -> QuoteRead:
    return QuoteRead(
        id=row.id,
        options=row.options["options"],
        unavailable=row.options["unavailable"],
        expires_at=aware(row.expires_at),
    )


def order_read(order: OrderRow) -> OrderRead:
    return OrderRead(
        id=order.id,
        task_id=order.task_id,
        quote_id=order.quote_id,
        state=order.state,
        escrow=market.money(order.escrow_fen),
        offer=order.offer,
        settlement=order.settlement,
    )


def rating_read(row: RatingRow) -> RatingRead:
    return RatingRead(id=row.id, order_id=row.order_id, stars=row.stars, comment=row.comment)


def token_read(row: TokenRow, principal: Actor) -> TokenRead:
    return TokenRead(
        id=row.id,
        principal=principal.id,
        role=principal.role,
        name=row.name,
        site_id=row.site_id,
        created_at=aware(row.created_at),
        expires_at=None if row.expires_at is None else aware(row.expires_at),
        revoked_at=None if row.revoked_at is None else aware(row.revoked_at),
    )


def token_of(session: Session, row: TokenRow, fallback: Actor) -> TokenRead:
    """A token with its principal read again (`fallback` if it is gone)."""
    principal = session.get(Principal, row.principal_id)
    return token_read(row, principal if principal is not None else fallback)


def agent_token_read(row: TokenRow, secret: str, site_id: str) -> AgentTokenRead:
    return AgentTokenRead(
        id=row.id,
        token=secret,
        site_id=site_id,
        name=row.name,
        expires_at=None if row.expires_at is None else aware(row.expires_at),
    )


def balances(session: Session, who: Actor) -> dict[str, dict[str, Any]]:
    """The balance of every account of `who`, as money."""
    return {
        account: market.money(market.balance(session, account))
        for account in market.accounts_of(who)
    }
