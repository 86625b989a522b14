"""PROBLEM.json: the file format of a placement problem, and its translation into a snapshot.

Owns the schema (Pydantic, strict: no silent coercion of `true` to 1 or "8" to 8, no unknown
keys), the conversion of every name (device, site, place, province) through the catalog, and
errors that carry the JSON path of the bad value (`tasks[3].work_flop`). The format is
documented with a worked example in docs/scheduling.md.

A pool's `site` is a catalog cluster id (ZJK) or a province or city (浙江, Hangzhou): the latter
becomes a provider site whose factors resolve by province, with the national average PUE (1.42,
reported 2025-06, hub_metrics.csv) unless `sites` overrides it. Hourly energy-price multipliers
come from the provinces' time-of-use tariffs where the data has them (flat elsewhere); carbon
intensity is flat at the grid factor unless `series` gives an hourly one.

`decide_problem` decides the problem with the one decision step (`scheduler.decide`): every task
queued at `now_s`, each pool's capacity its `count` with `count - free` devices held; `suanli
schedule` prints those decisions by default (`decisions_document`), and the engine's plan with
an explicit solver (`plan_document`). PROBLEM.json tasks are the engine's own fields
(`work_flop` or a reference duration on a named device, an absolute `deadline_s`), not a platform
task spec, so they are read here rather than by `scheduler.tasks.engine_task`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any, Literal, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from suanli.catalog import Pool, Site, find_place, find_site, provider_site
from suanli.catalog.tariffs import tou_schedule
from suanli.errors import SuanliError
from suanli.metering import (
    EFFICIENCY,
    find_device,
    match_devices,
    parse_kind,
    parse_precision,
    parse_workload,
)
from suanli.scheduler.decide import (
    DEFAULT_MAX_WAIT_S,
    Action,
    Capacity,
    Decision,
    PoolCapacity,
    QueuedTask,
    decide,
)
from suanli.scheduler.model import (
    DEFAULT_BANDWIDTH_GBPS,
    DEFAULT_TIER_RTT_MS,
    DEFAULT_TRANSFER_FEN_PER_GB,
    LatencyTier,
    Plan,
    Policy,
    SiteSeries,
    Snapshot,
    SolverInfo,
    Task,
    Unplaced,
)

DEFAULT_PROVIDER_PUE = 1.42  # national average PUE of compute centres, 2025-06 (hub_metrics.csv)
DEFAULT_EPOCH = "2026-01-01T00:00:00+08:00"
SERIES_HOURS = 24 * 7
CHINA_TZ = timezone(timedelta(hours=8))

T = TypeVar("T")
Positive = Annotated[float, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]
Count = Annotated[int, Field(ge=1)]
Fen = Annotated[int, Field(ge=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)


class PoolIn(_Strict):
    id: Annotated[str, Field(min_length=1)]
    site: str
    device: str
    count: Count
    free: Annotated[int, Field(ge=0)] | None = None
    price_fen_per_device_hour: Fen
    energy_billed_separately: bool = False
    tou_multipliers: Annotated[list[Positive], Field(min_length=24, max_length=24)] | None = None


class TaskIn(_Strict):
    id: Annotated[str, Field(min_length=1)]
    devices: Count
    device_kind: Literal["gpu", "npu", "cpu"]
    device_models: Annotated[list[str], Field(min_length=1)] | None = None
    precision: str
    work_flop: Positive | None = None
    reference_duration_s: Positive | None = None
    reference_device: str | None = None
    workload: Literal["training", "inference", "hpc", "general"] = "general"
    memory_gb: NonNegative = 0.0
    origin: str
    latency_tier: Literal["interactive", "standard", "batch"] = "standard"
    data_gb: NonNegative = 0.0
    deadline_s: NonNegative | None = None
    max_price_fen: Fen | None = None
    allowed_provinces: Annotated[list[str], Field(min_length=1)] | None = None
    deferrable: bool = False


class SiteIn(_Strict):
    id: str
    pue: Annotated[float, Field(ge=1.0)] | None = None
    green_share: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    grid_kgco2_per_kwh: NonNegative | None = None
    price_cny_per_kwh: NonNegative | None = None
    reputation: Annotated[float, Field(ge=0.0, le=1.0)] | None = None


class SeriesIn(_Strict):
    energy_price_multiplier: Annotated[list[NonNegative], Field(min_length=1)] | None = None
    carbon_kg_per_kwh: Annotated[list[NonNegative], Field(min_length=1)] | None = None


class SettingsIn(_Strict):
    bandwidth_gbps: Positive = DEFAULT_BANDWIDTH_GBPS
    transfer_fen_per_gb: NonNegative = DEFAULT_TRANSFER_FEN_PER_GB
    tier_rtt_ms: dict[Literal["interactive", "standard", "batch"], Positive] | None = None
    max_delay_h: Annotated[int, Field(ge=0, le=168)] = 24


class ProblemIn(_Strict):
    now_s: NonNegative = 0.0
    epoch: str = DEFAULT_EPOCH
    pools: list[PoolIn]
    tasks: list[TaskIn]
    sites: list[SiteIn] = []
    series: dict[str, SeriesIn] = {}
    settings: SettingsIn = SettingsIn()


class ProblemError(SuanliError):
    """A bad value in PROBLEM.json, with its JSON path."""

    def __init__(self, path: str, message_en: str, message_zh: str | None = None) -> None:
        self.path = path
        super().__init__(f"{path}: {message_en}", f"{path}：{message_zh or message_en}")


def _path(loc: Sequence[str | int]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(document)"


@dataclass(frozen=True)
class Problem:
    """A parsed problem: the snapshot, the tasks and the clock."""

    snapshot: Snapshot
    tasks: tuple[Task, ...]
    now_s: float


def _at(path: str, build: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call `build`, prefixing any SuanliError with the JSON path of the value it read."""
    try:
        return build(*args, **kwargs)
    except ProblemError:
        raise
    except SuanliError as error:
        raise ProblemError(path, error.message_en, error.message_zh) from error


def _site_for(name: str, path: str, provider_sites: dict[str, Site]) -> Site:
    try:
        return find_site(name)
    except SuanliError:
        pass
    place = _at(path, find_place, name)
    if place.id not in provider_sites:
        provider_sites[place.id] = _at(
            path, provider_site, place.id, name, pue=DEFAULT_PROVIDER_PUE
        )
    return provider_sites[place.id]


def _override(site: Site, spec: SiteIn) -> Site:
    changes: dict[str, Any] = {}
    if spec.pue is not None:
        changes.update(pue=spec.pue, pue_basis="given in problem", pue_verified=False)
    if spec.green_share is not None:
        changes.update(green_share=spec.green_share, green_share_basis="given in problem")
    if spec.grid_kgco2_per_kwh is not None:
        changes["grid"] = replace(
            site.grid,
            kgco2_per_kwh=spec.grid_kgco2_per_kwh,
            level="given",
            verification="given in problem",
        )
    if spec.price_cny_per_kwh is not None:
        changes["price"] = replace(
            site.price, typical_cny_per_kwh=spec.price_cny_per_kwh, quality="given in problem"
        )
    return replace(site, **changes)


def _energy_series(site: Site, start: datetime) -> np.ndarray | None:
    schedule = tou_schedule(site.provinces[0])
    if schedule is None:
        return None
    hours = [start + timedelta(hours=h) for h in range(SERIES_HOURS)]
    return np.array(
        [schedule.at(moment.month, moment.hour + moment.minute / 60) for moment in hours]
    )


def _task(spec: TaskIn, path: str) -> Task:
    precision = _at(f"{path}.precision", parse_precision, spec.precision)
    workload = parse_workload(spec.workload)
    if (spec.work_flop is None) == (spec.reference_duration_s is None):
        raise ProblemError(
            path,
            "give exactly one of work_flop or reference_duration_s (+ reference_device)",
            "work_flop 与 reference_duration_s（加 reference_device）二选一",
        )
    work = spec.work_flop
    if work is None:
        if spec.reference_device is None:
            raise ProblemError(f"{path}.reference_device", "required with reference_duration_s")
        reference = _at(f"{path}.reference_device", find_device, spec.reference_device)
        used = _at(f"{path}.reference_device", reference.resolve_precision, precision)
        peak = reference.peak_flops[used]
        assert spec.reference_duration_s is not None
        work = spec.reference_duration_s * spec.devices * peak * EFFICIENCY[workload].value
    models = None
    if spec.device_models is not None:
        allowed: set[str] = set()
        for n, name in enumerate(spec.device_models):
            allowed |= {d.id for d in _at(f"{path}.device_models[{n}]", match_devices, name)}
        models = frozenset(allowed)
    provinces = None
    if spec.allowed_provinces is not None:
        provinces = frozenset(
            _at(f"{path}.allowed_provinces[{n}]", find_place, name).province_zh
            for n, name in enumerate(spec.allowed_provinces)
        )
    origin = _at(f"{path}.origin", find_place, spec.origin)
    return _at(
        path,
        Task,
        id=spec.id,
        devices=spec.devices,
        device_kind=parse_kind(spec.device_kind),
        precision=precision,
        work_flop=float(work),
        origin=origin,
        latency_tier=LatencyTier(spec.latency_tier),
        workload=workload,
        device_models=models,
        memory_gb=spec.memory_gb,
        data_gb=spec.data_gb,
        deadline_s=spec.deadline_s,
        max_price_fen=spec.max_price_fen,
        allowed_provinces=provinces,
        deferrable=spec.deferrable,
    )


def parse_problem(document: str | bytes | dict[str, Any]) -> Problem:
    """Validate and translate a PROBLEM.json document (text or already-parsed JSON)."""
    try:
        if isinstance(document, dict):
            spec = ProblemIn.model_validate(document)
        else:
            spec = ProblemIn.model_validate_json(document)
    except ValidationError as error:
        first = error.errors()[0]
        more = error.error_count() - 1
        suffix = f" (+{more} more)" if more > 0 else ""
        raise ProblemError(_path(first["loc"]), first["msg"] + suffix) from None

    try:
        epoch = datetime.fromisoformat(spec.epoch)
    except ValueError:
        raise ProblemError(
            "epoch", f"'{spec.epoch}' is not an ISO date-time, e.g. {DEFAULT_EPOCH}"
        ) from None
    if epoch.tzinfo is None:
        epoch = epoch.replace(tzinfo=CHINA_TZ)

    provider_sites: dict[str, Site] = {}
    pools: list[Pool] = []
    sites: dict[str, Site] = {}
    seen: set[str] = set()
    for n, p in enumerate(spec.pools):
        path = f"pools[{n}]"
        if p.id in seen:
            raise ProblemError(
                f"{path}.id", f"duplicate pool id '{p.id}'", f"资源池 id 重复：'{p.id}'"
            )
        seen.add(p.id)
        site = _site_for(p.site, f"{path}.site", provider_sites)
        device = _at(f"{path}.device", find_device, p.device)
        free = p.count if p.free is None else p.free
        tou = None if p.tou_multipliers is None else tuple(p.tou_multipliers)
        pool = _at(
            path,
            Pool,
            p.id,
            site.id,
            device,
            p.count,
            free,
            p.price_fen_per_device_hour,
            p.energy_billed_separately,
            tou,
        )
        pools.append(pool)
        sites[site.id] = site

    reputation: dict[str, float] = {}
    for n, override in enumerate(spec.sites):
        path = f"sites[{n}].id"
        if override.id in sites:
            target = sites[override.id]
        else:
            target = _site_for(override.id, path, provider_sites)
            if target.id not in sites:
                raise ProblemError(path, f"site '{override.id}' has no pool in this problem")
        sites[target.id] = _override(target, override)
        if override.reputation is not None:
            reputation[target.id] = override.reputation

    start = epoch + timedelta(seconds=spec.now_s)
    series: dict[str, SiteSeries] = {}
    for site in sites.values():
        given = spec.series.get(site.id)
        energy = _energy_series(site, start)
        if given is not None and given.energy_price_multiplier is not None:
            energy = np.array(given.energy_price_multiplier, dtype=float)
        carbon = None
        if given is not None and given.carbon_kg_per_kwh is not None:
            carbon = np.array(given.carbon_kg_per_kwh, dtype=float)
        if energy is None and carbon is None:
            continue
        series[site.id] = SiteSeries(
            energy if energy is not None else np.ones(1),
            carbon if carbon is not None else np.array([site.grid_kgco2_per_kwh]),
        )
    unknown_series = sorted(set(spec.series) - set(sites))
    if unknown_series:
        raise ProblemError(f"series.{unknown_series[0]}", "no pool of this problem is at that site")

    tiers = dict(DEFAULT_TIER_RTT_MS)
    if spec.settings.tier_rtt_ms:
        tiers.update({LatencyTier(k): v for k, v in spec.settings.tier_rtt_ms.items()})
    local = start.astimezone(CHINA_TZ)
    snapshot = _at(
        "settings",
        Snapshot,
        pools=tuple(pools),
        sites=sites,
        reputation=reputation,
        series=series,
        series_start_s=spec.now_s,
        local_hour_at_start=local.hour + local.minute / 60,
        tier_rtt_ms=tiers,
        bandwidth_gbps=spec.settings.bandwidth_gbps,
        transfer_fen_per_gb=spec.settings.transfer_fen_per_gb,
        max_delay_h=spec.settings.max_delay_h,
    )
    tasks: list[Task] = []
    task_ids: set[str] = set()
    for n, task_spec in enumerate(spec.tasks):
        if task_spec.id in task_ids:
            raise ProblemError(f"tasks[{n}].id", f"duplicate task id '{task_spec.id}'")
        task_ids.add(task_spec.id)
        tasks.append(_task(task_spec, f"tasks[{n}]"))
    return Problem(snapshot, tuple(tasks), spec.now_s)


def load_problem(text: str) -> Problem:
    """Parse PROBLEM.json text; malformed JSON is reported with its line and column."""
    try:
        json.loads(text)
    except json.JSONDecodeError as error:
        raise ProblemError(
            f"(line {error.lineno}, column {error.colno})",
            f"not valid JSON: {error.msg}",
            f"不是合法的 JSON：{error.msg}",
        ) from None
    return parse_problem(text)


def problem_capacity(problem: Problem) -> Capacity:
    """Each pool's capacity as the file gives it: `count` devices, `count - free` held."""
    return Capacity(
        {p.id: PoolCapacity(count=p.count, held=p.count - p.free) for p in problem.snapshot.pools}
    )


def decide_problem(
    problem: Problem, policy: Policy, *, max_wait_s: float = DEFAULT_MAX_WAIT_S
) -> tuple[Decision, ...]:
    """The decision step on the problem: every task queued at `now_s`, in file order."""
    queue = [QueuedTask(task, problem.now_s) for task in problem.tasks]
    return decide(
        queue,
        problem.snapshot,
        problem_capacity(problem),
        policy,
        problem.now_s,
        max_wait_s=max_wait_s,
    )


def decisions_plan(decisions: Sequence[Decision], policy: str) -> Plan:
    """The decisions as a plan (PLACE and WAIT placed, the others unplaced with their reason),
    so that they print like the engine's plan; the solver is the step's, `greedy`."""
    placements = tuple(d.placement for d in decisions if d.placement is not None)
    unplaced = tuple(
        Unplaced(d.task, dict(d.reasons), d.reason) for d in decisions if d.placement is None
    )
    objective = float(sum(p.score for p in placements))
    return Plan(placements, unplaced, SolverInfo("greedy", objective), policy)


def decisions_document(decisions: Sequence[Decision], plan: Plan) -> dict[str, Any]:
    """`plan_document` of `decisions_plan`, plus one entry per task: its action (place, wait,
    queue, reject), pool, start and reason."""
    document = plan_document(plan)
    document["decisions"] = [
        {
            "task": d.task,
            "action": d.action.value,
            "pool": d.pool,
            "start_s": None if d.placement is None else d.placement.start_s,
            "not_before_s": d.not_before_s,
            "reason": d.reason,
        }
        for d in decisions
    ]
    document["totals"]["waiting"] = sum(1 for d in decisions if d.action is Action.WAIT)
    return document


def plan_document(plan: Plan) -> dict[str, Any]:
    """The plan in the documented `--json` shape."""
    return {
        "policy": plan.policy,
        "placements": [
            {
                "task": p.task,
                "pool": p.pool,
                "site": p.site,
                "start_s": p.start_s,
                "end_s": p.end_s,
                "cost_fen": p.breakdown.cost_fen,
                "energy_kwh": p.breakdown.energy_kwh,
                "carbon_kg": p.breakdown.carbon_kg,
                "latency_ms": p.breakdown.latency_ms,
                "runner_up": p.runner_up,
                "score": p.score,
                "breakdown": {
                    "compute_fen": p.breakdown.compute_fen,
                    "energy_fen": p.breakdown.energy_fen,
                    "transfer_fen": p.breakdown.transfer_fen,
                    "carbon_location_kg": p.breakdown.carbon_location_kg,
                    "distance_km": p.breakdown.distance_km,
                    "load_after": p.breakdown.load_after,
                    "reputation": p.breakdown.reputation,
                    "duration_s": p.breakdown.duration_s,
                    "transfer_s": p.breakdown.transfer_s,
                    "precision_used": p.breakdown.precision_used.value,
                },
                "waited_s": p.waited_s,
                "saved_fen": p.saved_fen,
                "saved_carbon_kg": p.saved_carbon_kg,
                "saved_carbon_location_kg": p.saved_carbon_location_kg,
            }
            for p in plan.placements
        ],
        "unplaced": [
            {"task": u.task, "reasons": dict(u.reasons), "message": u.sentence}
            for u in plan.unplaced
        ],
        "totals": {
            "cost_fen": plan.cost_fen,
            "energy_kwh": plan.energy_kwh,
            "carbon_kg": plan.carbon_kg,
            "carbon_location_kg": plan.carbon_location_kg,
            "placed": len(plan.placements),
            "unplaced": len(plan.unplaced),
        },
        "solver": {
            "name": plan.solver.name,
            "seconds": plan.solver.seconds,
            "objective": plan.solver.objective,
            "lower_bound": plan.solver.lower_bound,
            "status": plan.solver.status,
        },
    }


__all__ = [
    "Problem",
    "ProblemError",
    "decide_problem",
    "decisions_document",
    "decisions_plan",
    "load_problem",
    "parse_problem",
    "plan_document",
    "problem_capacity",
]
