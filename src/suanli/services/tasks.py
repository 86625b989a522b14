"""Tasks: submission (idempotent under races), visibility, listing, history and cancellation.

Every task spec passes the task model (`specs.check_task_spec`) and the catalog's names before
it is stored, whichever edge built it. A consumer sees only its tasks, a provider the tasks placed
on its sites, the operator everything; anything else is `NotFound` (404), so ids do not leak.
`submit` with an idempotency key creates one task per (owner, key) even when requests race: the
insert runs in a savepoint and the loser returns the winner's task.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import urlparse

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from suanli.catalog import find_place, zone_provinces
from suanli.errors import FieldError, InvalidValue, SuanliError
from suanli.metering import (
    match_devices,
    parse_kind,
    parse_precision,
    parse_workload,
)
from suanli.scheduler import policy_named
from suanli.services import runtimes as runtime_service
from suanli.services.core import (
    TERMINAL,
    Actor,
    Conflict,
    NotFound,
    Role,
    State,
    append_event,
    aware,
    new_id,
    now,
    require,
    transition,
)
from suanli.specs import check_task_spec, total_devices
from suanli.store.models import (
    EventRow,
    SiteRow,
    TaskRow,
)

DEFAULT_ORIGIN = "北京"


MAX_LIST_WINDOW = 2**31 - 1  # the largest offset or limit list_tasks hands the database


def check_spec(spec: dict[str, Any]) -> None:
    """A task spec must pass the task model (`specs.check_task_spec`: types, bounds, enums, no
    NUL, task paths) whichever edge built it (native, TES, console), and its names must
    resolve; errors name the field."""
    check_task_spec(spec)
    resources = spec["resources"]
    for field, parse, value in (
        ("resources.device_kind", parse_kind, resources["device_kind"]),
        ("resources.precision", parse_precision, resources["precision"]),
        ("resources.workload", parse_workload, resources["workload"]),
    ):
        try:
            parse(value)
        except SuanliError as error:
            raise FieldError(field, value, error) from None
    for n, name in enumerate(resources.get("device_models") or []):
        try:
            match_devices(name)
        except SuanliError as error:
            raise FieldError(f"resources.device_models[{n}]", name, error) from None
    for field in ("origin", "data_location"):
        if field == "origin" or spec.get(field):
            try:
                find_place(spec[field])
            except SuanliError as error:
                raise FieldError(field, spec[field], error) from None
    if spec.get("policy"):
        policy_named(spec["policy"])
    for n, zone in enumerate(spec.get("zones") or []):
        try:
            zone_provinces(zone)
        except SuanliError as error:
            raise FieldError(f"zones[{n}]", zone, error) from None


def data_location(session: Session, spec: Mapping[str, Any]) -> str | None:
    """Where a task's data lives, from its inputs: the place of the site that serves the bucket
    of its first `s3://` input whose bucket a site declares (`sites.buckets`; the site's cluster,
    else its province), or None (then its data is taken to be at its origin)."""
    buckets = [
        urlparse(entry["url"]).netloc
        for entry in spec.get("inputs") or []
        if isinstance(entry, Mapping)
        and isinstance(entry.get("url"), str)
        and entry["url"].startswith("s3://")
    ]
    if not buckets:
        return None
    serving: dict[str, SiteRow] = {}
    for site in session.scalars(
        select(SiteRow).where(SiteRow.buckets.is_not(None)).order_by(SiteRow.created_at, SiteRow.id)
    ):
        for bucket in site.buckets or []:
            serving.setdefault(bucket, site)
    for bucket in buckets:
        if bucket in serving:
            return serving[bucket].cluster_id or serving[bucket].province
    return None


def submit(
    session: Session, who: Actor, spec: dict[str, Any], idempotency_key: str | None
) -> tuple[TaskRow, bool]:
    """A new task (QUEUED), or the one this key already created: (task, created).

    Safe under concurrency: the row is inserted inside a SAVEPOINT, and when a concurrent
    request with the same key wins the unique index (owner, key), the savepoint is rolled back
    and that request's task is returned; only the creator appends `task.submitted`."""
    require(who, Role.CONSUMER, Role.OPERATOR)
    idempotency_key = (idempotency_key or "").strip() or None

    def existing() -> TaskRow | None:
        return session.scalars(
            select(TaskRow).where(
                TaskRow.owner_id == who.id, TaskRow.idempotency_key == idempotency_key
            )
        ).first()

    if idempotency_key:
        found = existing()
        if found is not None:
            return found, False
    spec = {**spec, "origin": spec.get("origin") or DEFAULT_ORIGIN}
    check_spec(spec)
    if not spec.get("data_location"):
        place = data_location(session, spec)
        if place is not None:
            spec["data_location"] = place
    moment = now(session)
    if spec.get("max_price_fen") is not None:
        _affordable(session, who.id, spec, moment)
    row = TaskRow(
        id=new_id("task"),
        owner_id=who.id,
        idempotency_key=idempotency_key,
        name=spec.get("name") or "",
        state=State.QUEUED.value,
        spec=spec,
        devices=total_devices(spec),
        policy=spec.get("policy") or "",
        pool_id=None,
        site_id=None,
        placement=None,
        unplaced_reason="waiting for a scheduling pass",
        agent_id=None,
        lease_expires_at=None,
        cancel_requested=False,
        preempt_requested=False,  # set here: the task is read back before it is flushed
        preemptions=0,
        requeues=0,
        exit_code=None,
        stdout_tail=None,
        stderr_tail=None,
        usage=None,
        created_at=moment,
        updated_at=moment,
    )
    if idempotency_key:
        try:
            with session.begin_nested():  # a key conflict undoes only this insert
                session.add(row)
                session.flush()
        except IntegrityError:
            found = existing()  # READ COMMITTED: the winner has committed by now
            if found is None:
                raise
            return found, False
    else:
        session.add(row)
    append_event(
        session,
        "task.submitted",
        row.id,
        who.id,
        {"devices": row.devices, "kind": spec["resources"]["device_kind"]},
    )
    return row, True


def _affordable(session: Session, owner: str, spec: dict[str, Any], moment: datetime) -> None:
    """Refuse (422 naming `max_price_fen`, nothing written) a task whose `max_price_fen` is
    below the cheapest total any pool could ever quote it (`market.cheapest_total`: every pool
    it could run on, idle, at its cheapest start hour, for the duration the pass would price it
    with: its own, or predicted, `runtimes.duration`): the pass could never admit it."""
    from suanli.services import market  # the market builds on this module

    ceiling = int(spec["max_price_fen"])
    # a task without a duration is priced with the one the pass will place it with
    model = runtime_service.runtimes(session) if runtime_service.predicted(spec) else None
    made = runtime_service.duration(owner, spec, model)
    probe = runtime_service.engine_spec(spec, made)
    cheapest = market.cheapest_total(session, probe, market.pricing_rules(session), moment)
    if cheapest is not None and ceiling < cheapest[0]:
        fen, pool = cheapest
        why = why_zh = ""
        if made.source == runtime_service.PREDICTED:
            why = (
                f" (it gives no resources.duration_s: priced for {made.duration_s:.0f} s, the "
                f"median run time of {made.members} completed tasks like it)"
            )
            why_zh = (
                f"（未给出 resources.duration_s：按 {made.members} 个同类已完成任务的"
                f"中位时长 {made.duration_s:.0f} 秒计价）"
            )
        raise InvalidValue(
            "max_price_fen",
            ceiling,
            f"at least {fen} fen, the cheapest total any pool quotes for this task (pool {pool}, "
            f"idle, at its cheapest hour){why}; raise max_price_fen or ask for fewer devices or "
            "a shorter duration",
            f"不低于 {fen} 分（任何资源池对该任务的最低报价，资源池 {pool}）{why_zh}；"
            "请提高 max_price_fen 或减少设备数、缩短时长",
        )


def _visible(session: Session, who: Actor, task: TaskRow | None, ident: str) -> TaskRow:
    if task is None:
        raise NotFound("task", ident)
    if who.role == Role.OPERATOR.value or task.owner_id == who.id:
        return task
    if who.role == Role.PROVIDER.value and task.site_id is not None:
        site = session.get(SiteRow, task.site_id)
        if site is not None and site.owner_id == who.id:
            return task
    raise NotFound("task", ident)


def get_task(session: Session, who: Actor, ident: str) -> TaskRow:
    return _visible(session, who, session.get(TaskRow, ident), ident)


def list_tasks(
    session: Session,
    who: Actor,
    state: str | None,
    limit: int | None,
    *,
    name_prefix: str | None = None,
    offset: int = 0,
) -> list[TaskRow]:
    """The tasks `who` may see, newest first; `limit` None means all. Bounds are checked here
    too (an offset or limit beyond 32 bits, a NUL in the prefix), so that no caller can hand
    the database a value it cannot take."""
    for field, number, low in (("offset", offset, 0), ("limit", limit, 1)):
        if number is not None and not low <= number <= MAX_LIST_WINDOW:
            raise InvalidValue(
                field, number, f"{low} to {MAX_LIST_WINDOW}", f"{low} 到 {MAX_LIST_WINDOW}"
            )
    if name_prefix and "\x00" in name_prefix:
        raise InvalidValue(
            "name_prefix", name_prefix, "text without NUL characters", "不含 NUL 字符的文本"
        )
    query = (
        select(TaskRow)
        .order_by(TaskRow.created_at.desc(), TaskRow.id.desc())
        .offset(offset)
        .limit(limit)
    )
    if name_prefix:
        query = query.where(TaskRow.name.startswith(name_prefix, autoescape=True))
    if state:
        try:
            query = query.where(TaskRow.state == State(state.upper()).value)
        except ValueError:
            accepted = ", ".join(s.value for s in State)
            raise InvalidValue("state", state, f"one of {accepted}", f"{accepted} 之一") from None
    if who.role == Role.CONSUMER.value:
        query = query.where(TaskRow.owner_id == who.id)
    elif who.role == Role.PROVIDER.value:
        owned = select(SiteRow.id).where(SiteRow.owner_id == who.id)
        query = query.where(TaskRow.site_id.in_(owned))
    return list(session.scalars(query))


def task_events(session: Session, task_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Each task's state changes from the audit chain, oldest first: `{"at", "from", "to",
    "reason", "actor"}`. The caller has already checked visibility."""
    found: dict[str, list[dict[str, Any]]] = {task_id: [] for task_id in task_ids}
    if not task_ids:
        return found
    events = session.scalars(
        select(EventRow)
        .where(EventRow.kind == "task.state", EventRow.subject.in_(task_ids))
        .order_by(EventRow.seq)
    )
    for event in events:
        found[event.subject].append({"at": aware(event.at), "actor": event.actor, **event.data})
    return found


def task_histories(session: Session, task_ids: list[str]) -> dict[str, list[str]]:
    """Each task's state changes as one line each (`<RFC 3339 time> FROM -> TO: reason`)."""
    return {
        task_id: [
            f"{e['at'].isoformat().replace('+00:00', 'Z')} {e['from']} -> {e['to']}: {e['reason']}"
            for e in events
        ]
        for task_id, events in task_events(session, task_ids).items()
    }


def cancel_task(session: Session, who: Actor, ident: str) -> TaskRow:
    task = session.get(TaskRow, ident, with_for_update=True)
    task = _visible(session, who, task, ident)
    if who.role == Role.PROVIDER.value and task.owner_id != who.id:
        raise NotFound("task", ident)
    state = State(task.state)
    if state in TERMINAL:
        raise Conflict(f"task {ident} already ended ({state.value})", f"任务 {ident} 已结束")
    if state is State.QUEUED:
        transition(session, task, State.CANCELED, "canceled before it started", who.id)
        task.pool_id = None
        settle(session, task)
    else:  # the agent kills it at its next heartbeat and reports CANCELED
        task.cancel_requested = True
        task.updated_at = now(session)
        append_event(session, "task.cancel_requested", task.id, who.id, {})
    return task


def settle(session: Session, task: TaskRow) -> None:
    """Settle the task's order, if it has one (the market owns the money)."""
    from suanli.services.market import settle_task  # the market builds on this module

    settle_task(session, task)


def task_counts(session: Session) -> dict[str, int]:
    rows = session.execute(select(TaskRow.state, func.count()).group_by(TaskRow.state))
    return {state: int(n) for state, n in rows}
