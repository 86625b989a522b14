"""Capacity: sites, pools, what suanli's tasks hold and what the engines report busy.

A pool's free devices are its count less the devices held by suanli's tasks (queued on it,
initializing, running, paused) and those its engine reports busy with other work
(`unavailable`, from the agent's heartbeat); a Slurm-like engine's own queue (`queue_depth`)
extends what placement may use.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from suanli.catalog import Site, find_place, find_site, provider_site
from suanli.errors import FieldError, InvalidValue, SuanliError
from suanli.metering import (
    find_device,
    match_devices,
)
from suanli.services.core import (
    NotFound,
    Role,
    State,
    append_event,
    new_id,
    now,
    require,
)
from suanli.store.models import (
    AgentRow,
    PoolRow,
    Principal,
    SiteRow,
    TaskRow,
)

HOLDING = (State.QUEUED.value, State.INITIALIZING.value, State.RUNNING.value, State.PAUSED.value)


REFERENCE_DEVICE = {"gpu": "A100 SXM4", "npu": "Ascend 910B", "cpu": "cpu"}


def add_site(session: Session, who: Principal, spec: dict[str, Any]) -> SiteRow:
    """A provider's site: a catalog cluster (`cluster`) or a province with coordinates."""
    require(who, Role.PROVIDER, Role.OPERATOR)
    cluster = spec.get("cluster")
    if cluster:
        try:
            site = find_site(cluster)
        except SuanliError as error:
            raise FieldError("cluster", cluster, error) from None
        province, lat, lon = site.provinces[0], site.lat, site.lon
        pue = spec.get("pue") or site.pue
        green = site.green_share if spec.get("green_share") is None else spec["green_share"]
    else:
        where = spec.get("province")
        if not where:
            raise InvalidValue("province", None, "a province (or give cluster)", "省份（或集群）")
        try:
            place_ = find_place(where)
        except SuanliError as error:
            raise FieldError("province", where, error) from None
        province = place_.province_zh
        lat = place_.lat if spec.get("lat") is None else float(spec["lat"])
        lon = place_.lon if spec.get("lon") is None else float(spec["lon"])
        pue = spec.get("pue") or 1.42
        green = spec.get("green_share") or 0.0
        provider_site("check", province, pue=pue, green_share=green)  # validates the factors
    row = SiteRow(
        id=f"{who.id}/{new_id('site')}",
        owner_id=who.id,
        name=spec["name"],
        cluster_id=find_site(cluster).id if cluster else None,
        province=province,
        lat=float(lat),
        lon=float(lon),
        pue=float(pue),
        green_share=float(green),
        created_at=now(),
    )
    session.add(row)
    append_event(
        session,
        "site.added",
        row.id,
        who.id,
        {"name": row.name, "province": province, "cluster": row.cluster_id},
    )
    return row


def own_site(session: Session, who: Principal, site_id: str) -> SiteRow:
    site = session.get(SiteRow, site_id)
    if site is None or (who.role != Role.OPERATOR.value and site.owner_id != who.id):
        raise NotFound("site", site_id)
    return site


def add_pool(session: Session, who: Principal, spec: dict[str, Any]) -> PoolRow:
    require(who, Role.PROVIDER, Role.OPERATOR)
    site = own_site(session, who, spec["site_id"])
    try:
        device = find_device(spec["device"])
    except SuanliError as error:
        raise FieldError("device", spec["device"], error) from None
    row = PoolRow(
        id=f"{site.id}/{new_id('pool')}",
        site_id=site.id,
        device=device.id,
        count=int(spec["count"]),
        price_fen_per_device_hour=int(spec["price_fen_per_device_hour"]),
        queue_depth=int(spec.get("queue_depth") or 0),
        created_at=now(),
    )
    session.add(row)
    append_event(
        session,
        "pool.added",
        row.id,
        who.id,
        {
            "device": device.id,
            "count": row.count,
            "price_fen_per_device_hour": row.price_fen_per_device_hour,
            "queue_depth": row.queue_depth,
        },
    )
    return row


def list_sites(session: Session) -> list[SiteRow]:
    return list(session.scalars(select(SiteRow).order_by(SiteRow.created_at)))


def list_pools(session: Session) -> list[tuple[PoolRow, int]]:
    """Every pool with its free device count now."""
    held = held_devices(session)
    pools = session.scalars(select(PoolRow).order_by(PoolRow.created_at))
    return [(p, free_devices(p, held)) for p in pools]


def free_devices(pool: PoolRow, held: dict[str, int], *, queue: bool = False) -> int:
    """Devices of a pool neither held by suanli's tasks nor busy with the engine's other work;
    with `queue`, plus the pool's `queue_depth` (work that may wait in the engine's own queue,
    for engines that have one, such as Slurm; 0 by default): what placement may use."""
    free = pool.count - held.get(pool.id, 0) - (pool.unavailable or 0)
    return max(0, free + ((pool.queue_depth or 0) if queue else 0))


def held_devices(session: Session) -> dict[str, int]:
    rows = session.execute(
        select(TaskRow.pool_id, func.sum(TaskRow.devices))
        .where(TaskRow.pool_id.is_not(None), TaskRow.state.in_(HOLDING))
        .group_by(TaskRow.pool_id)
    )
    return {pool_id: int(total) for pool_id, total in rows if pool_id is not None}


def apply_capacity(session: Session, agent: AgentRow, capacity: dict[str, Any]) -> None:
    """Size the pools of the agent's site from what its engine reports (`sinfo`, Ray's
    resources): a CPU pool gets the engine's CPUs, a GPU or NPU pool the accelerators of its
    model (or all of them when the engine does not name models); devices the engine reports
    busy beyond what suanli's own tasks hold there become `unavailable`. Each change is an
    audit event; an unchanged report writes nothing."""
    held = held_devices(session)
    by_model = {str(k).lower(): int(v) for k, v in (capacity.get("gpus_by_model") or {}).items()}
    pools = session.scalars(
        select(PoolRow).where(PoolRow.site_id == agent.site_id).order_by(PoolRow.id)
    ).all()
    for pool in pools:
        device = find_device(pool.device)
        if device.kind.value == "cpu":
            total, free = int(capacity["cpus"]), int(capacity["free_cpus"])
        else:
            matched = [n for model, n in by_model.items() if device.id in _device_ids(model)]
            total = sum(matched) if by_model else int(capacity.get("gpus") or 0)
            free = min(total, int(capacity.get("free_gpus") or 0))
        busy_outside = max(0, (total - free) - held.get(pool.id, 0))
        if (pool.count, pool.unavailable) == (total, busy_outside):
            continue
        append_event(
            session,
            "pool.capacity",
            pool.id,
            agent.id,
            {
                "count": [pool.count, total],
                "unavailable": [pool.unavailable, busy_outside],
                "reported": {k: capacity.get(k) for k in ("nodes", "cpus", "free_cpus", "gpus")},
            },
        )
        pool.count, pool.unavailable = total, busy_outside


def _device_ids(name: str) -> set[str]:
    """The catalog devices an engine's accelerator name (a gres type, a Ray resource) means."""
    try:
        return {d.id for d in match_devices(name)}
    except SuanliError:
        return set()


def engine_site(row: SiteRow) -> Site:
    if row.cluster_id:
        base = find_site(row.cluster_id)
        return replace(base, id=row.id, pue=row.pue, green_share=row.green_share)
    return provider_site(
        row.id,
        row.province,
        pue=row.pue,
        green_share=row.green_share,
        lat=row.lat,
        lon=row.lon,
        name_en=row.name,
        name_zh=row.name,
    )
