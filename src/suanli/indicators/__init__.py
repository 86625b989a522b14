"""suanli.indicators — national and per-hub indicators against the 2025 targets.

Pure: computed from a set of `Site`s and `Pool`s (the fleet the platform knows), never from a
database. For a scope (the nation, or one hub) it reports:

* capacity in EFLOPS on an FP32 basis and on an FP16 basis, separately (SOURCES.md §9): each
  device counts its own dense peak at that precision; a device with no published figure at that
  precision is left out of that total and counted in `*_excluded_devices`, never converted;
* intelligent-compute share: AI accelerators' (GPU/NPU) FP16 capacity over the "headline" total,
  in which accelerators count at FP16 and CPUs at FP32 — our reading of how the official
  statistics add general and intelligent compute (the exact CAICT rule is not published);
* weighted PUE and green-power share, weighted by IT power (devices x TDP) per site;
* CEPS (unofficial), market- and location-based: one hour of full-load general work at the
  headline precision, delivered FLOP per kg CO2;
* rack utilisation where a site has a reported figure;
* each compared with the white paper's 2025 targets (ch.2 §3) and the hub replies.

Invariants: totals are sums over pools, so the per-hub totals add up to the national ones.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from enum import StrEnum

from suanli.catalog import Pool, Site, hubs
from suanli.datafiles import read_rows
from suanli.metering import (
    FP16_BASIS,
    FP32_BASIS,
    DeviceKind,
    DeviceProfile,
    Precision,
    StandardUnit,
    WorkloadClass,
    capacity,
    meter,
)
from suanli.metering.measure import SECONDS_PER_HOUR


class Status(StrEnum):
    MET = "met"
    NOT_MET = "not met"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Target:
    """A published 2025 target: `metric` compared with `value` by `comparator`."""

    metric: str
    comparator: str  # ">=" or "<="
    value: float
    description_en: str
    description_zh: str
    source: str
    verified: bool = True

    def status(self, actual: float | None) -> Status:
        if actual is None:
            return Status.UNKNOWN
        ok = actual >= self.value if self.comparator == ">=" else actual <= self.value
        return Status.MET if ok else Status.NOT_MET


WHITE_PAPER = "白皮书 ch.2 §3 (2025 targets)"
TARGET_TOTAL = Target(
    "capacity_fp32_eflops",
    ">=",
    300.0,
    "total compute over 300 EFLOPS (FP32 basis)",
    "算力总规模超过 300 EFLOPS",
    WHITE_PAPER,
)
TARGET_AI_SHARE = Target(
    "intelligent_share",
    ">=",
    0.35,
    "intelligent-compute share reaches 35%",
    "智能算力占比达到 35%",
    WHITE_PAPER,
)
TARGET_LARGE_DC_PUE = Target(
    "weighted_pue",
    "<=",
    1.3,
    "new large DCs average PUE below 1.3",
    "新建大型数据中心 PUE 低于 1.3",
    WHITE_PAPER,
)
TARGET_RACKS = Target(
    "rack_utilization",
    ">=",
    0.65,
    "cluster rack utilisation at least 65%",
    "集群上架率不低于 65%",
    "NDRC hub replies 2021-12/2022-01 (hubs.csv)",
)
TARGET_GREEN = Target(
    "green_share",
    ">=",
    0.80,
    "green power over 80% in new hub-cluster DCs (UNVERIFIED)",
    "枢纽集群新建数据中心绿电占比超过 80%（未核实）",
    "NDRC et al. 2023-12 实施意见 (80% is unverified recollection; hub_metrics.csv)",
    verified=False,
)


@dataclass(frozen=True, slots=True)
class Check:
    target: Target
    actual: float | None

    @property
    def status(self) -> Status:
        return self.target.status(self.actual)


@dataclass(frozen=True, slots=True)
class Indicators:
    """Indicators of one scope ("national" or a hub id) with their target checks."""

    scope: str
    name_zh: str
    name_en: str
    sites: int
    pools: int
    devices: int
    capacity_fp32_eflops: float
    fp32_excluded_devices: int
    capacity_fp16_eflops: float
    fp16_excluded_devices: int
    headline_eflops: float
    intelligent_share: float | None
    weighted_pue: float | None
    green_share: float | None
    ceps: float | None
    ceps_location: float | None
    rack_utilization: float | None
    rack_sites_known: int
    checks: tuple[Check, ...]


def _basis_total(pools: Iterable[Pool], unit: StandardUnit) -> tuple[float, int]:
    total, excluded = 0.0, 0
    for pool in pools:
        peak = pool.device.peak_flops.get(unit.precision)
        if peak is None:
            excluded += pool.count
        else:
            total += pool.count * peak
    return total / unit.flops, excluded


def headline_precision(device: DeviceProfile) -> Precision:
    """FP16 for AI accelerators, FP32 for CPUs: how each is counted in the headline total."""
    return Precision.FP32 if device.kind is DeviceKind.CPU else Precision.FP16


def _weighted(values: list[tuple[float, float]]) -> float | None:
    weight = sum(w for _, w in values)
    return None if weight == 0 else sum(v * w for v, w in values) / weight


def compute(
    scope: str,
    name_zh: str,
    name_en: str,
    sites: Iterable[Site],
    pools: Iterable[Pool],
    targets: tuple[Target, ...],
) -> Indicators:
    """Indicators for `pools` at `sites` (pools at sites not given are ignored)."""
    site_by_id = {s.id: s for s in sites}
    pools = [p for p in pools if p.site_id in site_by_id]
    fp32, fp32_excluded = _basis_total(pools, FP32_BASIS)
    fp16, fp16_excluded = _basis_total(pools, FP16_BASIS)

    headline = ai = 0.0
    delivered = carbon = carbon_location = 0.0
    it_power: dict[str, float] = {}
    for pool in pools:
        precision = headline_precision(pool.device)
        peak = pool.device.peak_flops.get(precision)
        if peak is None:
            continue
        headline += pool.count * peak
        if pool.device.kind is not DeviceKind.CPU:
            ai += pool.count * peak
        if pool.device.tdp_w is None:
            continue
        site = site_by_id[pool.site_id]
        it_power[site.id] = it_power.get(site.id, 0.0) + pool.count * pool.device.tdp_w
        hour = capacity(pool.device, precision, WorkloadClass.GENERAL, pool.count)
        run = meter(
            pool.device,
            pool.count,
            precision,
            hour.flops * SECONDS_PER_HOUR,
            WorkloadClass.GENERAL,
            site,
            allow_fallback=False,
        )
        delivered += run.work_flop
        carbon += run.carbon_kg
        carbon_location += run.carbon_location_kg

    weights = [(site_by_id[sid], w) for sid, w in it_power.items()]
    racks = [s.rack_utilization for s in site_by_id.values() if s.rack_utilization is not None]
    indicators = Indicators(
        scope=scope,
        name_zh=name_zh,
        name_en=name_en,
        sites=len(site_by_id),
        pools=len(pools),
        devices=sum(p.count for p in pools),
        capacity_fp32_eflops=fp32,
        fp32_excluded_devices=fp32_excluded,
        capacity_fp16_eflops=fp16,
        fp16_excluded_devices=fp16_excluded,
        headline_eflops=headline / 1e18,
        intelligent_share=None if headline == 0 else ai / headline,
        weighted_pue=_weighted([(s.pue, w) for s, w in weights]),
        green_share=_weighted([(s.green_share, w) for s, w in weights]),
        ceps=None if carbon == 0 else delivered / carbon,
        ceps_location=None if carbon_location == 0 else delivered / carbon_location,
        rack_utilization=sum(racks) / len(racks) if racks else None,
        rack_sites_known=len(racks),
        checks=(),
    )
    checks = tuple(Check(t, getattr(indicators, t.metric)) for t in targets)
    return replace(indicators, checks=checks)


def national(sites: Iterable[Site], pools: Iterable[Pool]) -> Indicators:
    """Nation-wide indicators with the national 2025 targets."""
    targets = (TARGET_TOTAL, TARGET_AI_SHARE, TARGET_LARGE_DC_PUE, TARGET_RACKS, TARGET_GREEN)
    return compute("national", "全国", "China", sites, pools, targets)


def per_hub(sites: Iterable[Site], pools: Iterable[Pool]) -> list[Indicators]:
    """One set per hub that has sites, with the hub's own PUE ceiling as its PUE target."""
    sites = list(sites)
    pools = list(pools)
    result = []
    for hub in hubs():
        members = [s for s in sites if s.hub_id == hub.id]
        if not members:
            continue
        pue_target = Target(
            "weighted_pue",
            "<=",
            hub.pue_target_max,
            f"hub cluster PUE at most {hub.pue_target_max:g}",
            f"枢纽集群 PUE 不高于 {hub.pue_target_max:g}",
            f"hub reply ({hub.source})",
        )
        rack_target = Target(
            "rack_utilization",
            ">=",
            hub.rack_utilization_target_min,
            TARGET_RACKS.description_en,
            TARGET_RACKS.description_zh,
            TARGET_RACKS.source,
        )
        result.append(
            compute(
                hub.id,
                hub.name_zh,
                hub.name_en,
                members,
                pools,
                (pue_target, rack_target, TARGET_GREEN),
            )
        )
    return result


@dataclass(frozen=True, slots=True)
class PublishedFigure:
    """A nationally published progress figure (hub_metrics.csv) next to its 2025 target."""

    metric: str
    value: float
    unit: str
    as_of: str
    source: str
    quality: str
    target: Target | None
    note: str

    @property
    def status(self) -> Status:
        if self.target is None:
            return Status.UNKNOWN
        return self.target.status(self.value)


_PUBLISHED: dict[str, tuple[Target | None, str]] = {
    "total_compute_scale": (TARGET_TOTAL, ""),
    "intelligent_compute_scale": (None, "no share target can be checked: bases differ"),
    "average_pue_all_compute_centres": (
        TARGET_LARGE_DC_PUE,
        "scopes differ: average of all centres vs the target for new large DCs",
    ),
    "all_10_clusters_rack_utilization": (TARGET_RACKS, ""),
}


def published_progress() -> list[PublishedFigure]:
    """The latest reported national figure for each headline metric, as published."""
    rows = [r for r in read_rows("suanli.catalog", "hub_metrics.csv") if r["scope"] == "national"]
    result = []
    for metric, (target, note) in _PUBLISHED.items():
        matching = [r for r in rows if r["metric"] == metric and r["kind"] == "reported_progress"]
        if not matching:
            continue
        row = max(matching, key=lambda r: r["as_of"])
        result.append(
            PublishedFigure(
                metric,
                float(row["value"]),
                row["unit"],
                row["as_of"],
                row["source"],
                row["quality_note"],
                target,
                note,
            )
        )
    return result


__all__ = [
    "TARGET_AI_SHARE",
    "TARGET_GREEN",
    "TARGET_LARGE_DC_PUE",
    "TARGET_RACKS",
    "TARGET_TOTAL",
    "Check",
    "Indicators",
    "PublishedFigure",
    "Status",
    "Target",
    "compute",
    "headline_precision",
    "national",
    "per_hub",
    "published_progress",
]
