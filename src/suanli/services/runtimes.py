"""Run times: the duration the platform prices and places a task with when its spec gives
neither `resources.work_flop` nor `resources.duration_s`, predicted from the platform's own
completed tasks (`suanli.forecast.runtime`).

History (`completed_history`): the HISTORY_TASKS most recently completed tasks (state COMPLETE,
latest `updated_at` first), each with the features `TaskFeatures` takes from its spec and owner
(`task_features`) and its run time from the event log (`run_time_s`: the time it spent RUNNING,
or, for a task that ended straight from INITIALIZING, from its last lease to its end),
converted to seconds on its kind's reference device (what `resources.duration_s` means, see
`scheduler.tasks.engine_task`) by the ratio of its pool's peak to the reference's at its
precision. A row that cannot be read (a spec without a device kind, a pool gone, no run time)
is left out and counted in `Runtimes.skipped`; it never stops the pass.

Model (`runtimes(session)`): `fit_runtime` on that history, kept per database in this process
until a task has completed since (the count of COMPLETE tasks changed, and at least
REFIT_MIN_S have passed on the platform's clock) or REFIT_S (an hour) has passed, so a pass
reads one count and refits at most once a minute.

Use (`duration`): a task's duration is `given` (`resources.duration_s`), `work`
(`resources.work_flop`: no duration at all), `predicted` (the median run time of the most
specific group of at least MIN_MEMBERS similar completed tasks) or `default` (no group that
large, or no model: the engine's 60 s, `scheduler.tasks.DEFAULT_DURATION_S`, as before
prediction and as the twin reads the same spec). `engine_spec` hands `engine_task` a copy of the
spec with a predicted `resources.duration_s`; the stored spec is never changed.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from suanli.errors import InvalidValue, SuanliError
from suanli.forecast.runtime import (
    MIN_MEMBERS,
    REQUESTED,
    CompletedTask,
    RuntimeModel,
    TaskFeatures,
    basis_name,
    fit_runtime,
)
from suanli.metering import find_device, parse_kind, parse_precision, parse_workload
from suanli.scheduler.tasks import DEFAULT_DURATION_S, REFERENCE_DEVICE, latency_tier
from suanli.services.core import State, aware, now
from suanli.store.models import EventRow, PoolRow, TaskRow

log = logging.getLogger("suanli.runtimes")

HISTORY_TASKS = 5_000  # the most recent completed tasks a model is fitted on
REFIT_S = 3600.0  # a model is refitted at least this often (platform clock)
REFIT_MIN_S = 60.0  # and, when tasks have completed since, at most this often
CHUNK = 500  # ids per IN (...) query
KEPT = 16  # databases whose models a process keeps (tests open many; a server one)

GIVEN, WORK, PREDICTED, DEFAULT = "given", "work", "predicted", "default"
# the resources a task's features are read from (`task_features`), with its latency tier
REQUEST_FIELDS = ("device_kind", "devices", "precision", "workload", "memory_gb", "duration_s")


@dataclass(frozen=True)
class Runtimes:
    """A run-time model fitted on one database's history, and what it rested on."""

    model: RuntimeModel
    version: int  # unique in this process: a new one per fit
    fitted_at: datetime  # platform clock
    completed: int  # COMPLETE tasks in the database then
    tasks: int  # completed tasks it was fitted on (at most HISTORY_TASKS)
    skipped: int  # of the most recent completed tasks, those that could not be read


@dataclass(frozen=True)
class Duration:
    """Where the duration a task is priced and placed with comes from. `duration_s` is in
    seconds on the kind's reference device (None for `work`); `upper_s` the group's `level`
    quantile, `group` the group in words and `members` its size (for `predicted`);
    `history` the completed tasks the model was fitted on (`predicted`, `default`)."""

    source: str  # GIVEN | WORK | PREDICTED | DEFAULT
    duration_s: float | None
    upper_s: float | None = None
    level: float | None = None
    group: str | None = None
    basis: str | None = None
    members: int = 0
    history: int = 0

    @property
    def from_model(self) -> bool:
        """Whether it depends on the run-time model (so changes when the model does)."""
        return self.source in (PREDICTED, DEFAULT)

    def as_json(self) -> dict[str, Any]:
        """The `runtime` entry of a task's placement."""
        if self.source == WORK:
            return {"source": WORK}
        if self.source == GIVEN:
            return {"source": GIVEN, "duration_s": self.duration_s}
        if self.source == DEFAULT:
            return {
                "source": DEFAULT,
                "duration_s": self.duration_s,
                "history": self.history,
                "why": f"fewer than {MIN_MEMBERS} completed tasks like it",
            }
        return {
            "source": PREDICTED,
            "duration_s": round(self.duration_s or 0.0, 3),
            "upper_s": round(self.upper_s or 0.0, 3),
            "level": self.level,
            "group": self.group,
            "basis": self.basis,
            "members": self.members,
            "history": self.history,
        }


def task_features(owner: str | None, spec: Mapping[str, Any]) -> TaskFeatures:
    """A task's features as the run-time model takes them (built alike for the history and
    new tasks): device kind and count, owner, workload class, latency tier (`batch` when not
    given, as the engine reads it), the requested duration, and the shape: precision, memory
    per device and allowed models. Raises for a spec the engine could not read either."""
    resources = spec["resources"]
    devices = resources["devices"]
    if isinstance(devices, bool) or not isinstance(devices, int | float) or devices < 1:
        raise InvalidValue("resources.devices", devices, "a whole number >= 1", "不小于 1 的整数")
    precision = parse_precision(resources["precision"]).value
    memory = float(resources.get("memory_gb") or 0.0)
    models = sorted(str(m) for m in resources.get("device_models") or [])
    shape = f"{precision}, {memory:g} GB" + (f", {'|'.join(models)}" if models else "")
    requested = resources.get("duration_s")
    return TaskFeatures(
        device_kind=parse_kind(resources["device_kind"]).value,
        devices=int(devices),
        owner=owner or None,
        workload=parse_workload(resources.get("workload") or "general").value,
        latency_tier=latency_tier(spec.get("latency_tier") or "batch").value,
        shape=shape,
        requested_s=float(requested) if requested else None,
    )


def predicted(spec: Mapping[str, Any]) -> bool:
    """Whether the spec gives neither its work nor its duration (so its duration is predicted:
    `duration` needs the model)."""
    resources = spec["resources"]
    return resources.get("work_flop") is None and not resources.get("duration_s")


def duration(owner: str | None, spec: Mapping[str, Any], runtimes: Runtimes | None) -> Duration:
    """Where this task's duration comes from (the module docstring): its spec's own work or
    duration, else the model's prediction, else the engine's default (`runtimes` None: no
    model, as on an empty platform)."""
    resources = spec["resources"]
    if resources.get("work_flop") is not None:
        return Duration(WORK, None)
    if not predicted(spec):
        return Duration(GIVEN, float(resources["duration_s"]))
    if runtimes is None:
        return Duration(DEFAULT, DEFAULT_DURATION_S)
    made = runtimes.model.predict_one(task_features(owner, spec))
    if made.basis >= REQUESTED:  # no group of MIN_MEMBERS (and no requested duration)
        return Duration(DEFAULT, DEFAULT_DURATION_S, history=runtimes.tasks)
    return Duration(
        PREDICTED,
        made.runtime_s,
        made.upper_s,
        made.level,
        made.group,
        basis_name(made.basis),
        made.members,
        runtimes.tasks,
    )


def engine_spec(spec: Mapping[str, Any], made: Duration) -> dict[str, Any]:
    """The spec to hand `engine_task`: a copy, with the predicted duration in
    `resources.duration_s` (other sources: the spec as it is, whose own work or duration, or
    the engine's default, applies)."""
    if made.source != PREDICTED:
        return dict(spec)
    return {**spec, "resources": {**spec["resources"], "duration_s": made.duration_s}}


# --- the history -----------------------------------------------------------------------------


def run_time_s(changes: Sequence[tuple[datetime, str]]) -> float | None:
    """Seconds a completed task ran, from its state changes (time, new state) in log order: the
    time it spent RUNNING over all its leases (PAUSED and queued spells left out), plus, when
    its last lease ended COMPLETE without a RUNNING report (a command that finished at once),
    that lease's time. None when it never completed or ran no time at all."""
    ran = 0.0
    running_since: datetime | None = None
    leased_at: datetime | None = None
    lease_ran = completed = False
    for at, to in changes:
        if running_since is not None:
            ran += (at - running_since).total_seconds()
        running_since = at if to == State.RUNNING.value else None
        if to == State.INITIALIZING.value:
            leased_at, lease_ran = at, False
        elif to == State.RUNNING.value:
            lease_ran = True
        elif to == State.COMPLETE.value:
            if not lease_ran and leased_at is not None:
                ran += (at - leased_at).total_seconds()
            completed = True
    return ran if completed and math.isfinite(ran) and ran > 0 else None


def reference_ratio(kind: str, precision: str, pool_device: str) -> float:
    """Seconds on the kind's reference device per second on `pool_device`, for work of this
    precision: the ratio of their peaks (the engine's rate, `devices x peak x efficiency`, with
    the same devices and efficiency on both)."""
    asked = parse_precision(precision)
    reference = find_device(REFERENCE_DEVICE[parse_kind(kind).value])
    pool = find_device(pool_device)
    ratio = (
        pool.peak_flops[pool.resolve_precision(asked)]
        / reference.peak_flops[reference.resolve_precision(asked)]
    )
    if not (math.isfinite(ratio) and ratio > 0):
        raise InvalidValue("pool.device", pool_device, "a device with a peak", "有峰值算力的设备")
    return ratio


def completed_history(
    session: Session, limit: int = HISTORY_TASKS
) -> tuple[list[CompletedTask], int]:
    """The `limit` most recently completed tasks as `CompletedTask`s (oldest first), and how
    many of them could not be read and were left out."""
    rows = session.execute(
        select(
            TaskRow.id,
            TaskRow.owner_id,
            TaskRow.spec,
            TaskRow.pool_id,
            TaskRow.created_at,
            TaskRow.updated_at,
        )
        .where(TaskRow.state == State.COMPLETE.value)
        .order_by(TaskRow.updated_at.desc(), TaskRow.id.desc())
        .limit(limit)
    ).all()
    ids = [row.id for row in rows]
    pool_ids = sorted({row.pool_id for row in rows if row.pool_id is not None})
    devices: dict[str, str] = {}
    changes: dict[str, list[tuple[int, datetime, str]]] = {ident: [] for ident in ids}
    for start in range(0, max(len(ids), len(pool_ids)), CHUNK):
        if start < len(pool_ids):
            chunk = pool_ids[start : start + CHUNK]
            found = session.execute(select(PoolRow.id, PoolRow.device).where(PoolRow.id.in_(chunk)))
            devices.update({ident: device for ident, device in found})
        if start < len(ids):
            events = session.execute(
                select(EventRow.subject, EventRow.seq, EventRow.at, EventRow.data).where(
                    EventRow.kind == "task.state", EventRow.subject.in_(ids[start : start + CHUNK])
                )
            )
            for subject, seq, at, data in events:
                to = data.get("to") if isinstance(data, dict) else None
                if isinstance(to, str):
                    changes[subject].append((seq, aware(at), to))
    history: list[CompletedTask] = []
    skipped = 0
    reader = _Reader(devices)
    for row in reversed(rows):
        try:
            history.append(reader.completed(row, sorted(changes[row.id])))
        except Exception as error:  # a row that cannot be read must not stop the pass
            skipped += 1
            log.debug("run-time history: task %s left out: %r", row.id, error)
    if skipped:
        log.warning("run-time history: %d of %d completed tasks left out", skipped, len(rows))
    return history, skipped


@dataclass
class _Reader:
    """Completed task rows to `CompletedTask`s; features and device ratios are worked out once
    per distinct request (a history repeats a few requests many times)."""

    devices: Mapping[str, str]  # pool id -> device
    features: dict[tuple[Any, ...], TaskFeatures] = field(default_factory=dict)
    ratios: dict[tuple[str, str, str], float] = field(default_factory=dict)

    def completed(self, row: Any, changes: list[tuple[int, datetime, str]]) -> CompletedTask:
        spec, resources = row.spec, row.spec["resources"]
        key = (
            row.owner_id,
            spec.get("latency_tier"),
            *(resources.get(name) for name in REQUEST_FIELDS),
            tuple(resources.get("device_models") or ()),
        )
        features = self.features.get(key)
        if features is None:
            features = self.features[key] = task_features(row.owner_id, spec)
        ran = run_time_s([(at, to) for _, at, to in changes])
        if ran is None:
            raise InvalidValue("run time", None, "a RUNNING spell before COMPLETE", "运行时长")
        place = (features.device_kind, str(resources["precision"]), self.devices[row.pool_id])
        ratio = self.ratios.get(place)
        if ratio is None:
            ratio = self.ratios[place] = reference_ratio(*place)
        return CompletedTask(
            device_kind=features.device_kind,
            devices=features.devices,
            owner=features.owner,
            workload=features.workload,
            latency_tier=features.latency_tier,
            shape=features.shape,
            requested_s=features.requested_s,
            runtime_s=ran * ratio,
            submit_s=aware(row.created_at).timestamp(),
            end_s=aware(row.updated_at).timestamp(),
        )


# --- the model, kept per database --------------------------------------------------------------

_kept: dict[str, Runtimes] = {}
_kept_lock = threading.Lock()
_versions = itertools.count(1)


def _database(session: Session) -> str:
    return str(session.get_bind().engine.url)


def completed_count(session: Session) -> int:
    """COMPLETE tasks in the database (an index count: what says a task has completed)."""
    found = session.scalar(
        select(func.count()).select_from(TaskRow).where(TaskRow.state == State.COMPLETE.value)
    )
    return int(found or 0)


def _fresh(kept: Runtimes, completed: int, moment: datetime) -> bool:
    age = (moment - kept.fitted_at).total_seconds()
    if not 0 <= age < REFIT_S:
        return False
    return completed == kept.completed or age < REFIT_MIN_S


def runtimes(session: Session) -> Runtimes:
    """The run-time model of this session's database: the one kept in this process while it is
    fresh (see the module docstring), else fitted now on `completed_history`. A history that
    cannot be fitted (it cannot happen for rows read back: logged) gives the empty model."""
    key = _database(session)
    moment = now(session)
    completed = completed_count(session)
    with _kept_lock:
        kept = _kept.get(key)
    if kept is not None and _fresh(kept, completed, moment):
        return kept
    history, skipped = completed_history(session)
    try:
        model = fit_runtime(history)
    except SuanliError as error:
        log.error("run-time model: cannot fit %d completed tasks: %s", len(history), error)
        history, model = [], fit_runtime([])
    made = Runtimes(model, next(_versions), moment, completed, len(history), skipped)
    with _kept_lock:
        _kept.pop(key, None)
        _kept[key] = made
        while len(_kept) > KEPT:
            del _kept[next(iter(_kept))]  # the database fitted longest ago
    return made
