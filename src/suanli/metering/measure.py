"""The metering formulas: run time, energy, carbon (both ways), CEPS and electricity cost.

Owns the arithmetic of the standard, as pure functions over plain numbers plus one composite,
`meter()`, that estimates a whole run of precision-tagged work on a device at a site:

    capacity_flops     = devices * dense_peak(precision) * efficiency(workload)
    duration_s         = work_flop / capacity_flops
    energy_kwh         = devices * tdp_kw * utilisation * hours * pue
    carbon_kg          = energy_kwh * grid_kgco2_per_kwh * (1 - green_share)   (market-based)
    carbon_location_kg = energy_kwh * grid_kgco2_per_kwh                       (location-based)
    ceps               = delivered work_flop / carbon_kg                       (FLOP per kg CO2)

CEPS (算力碳效) has no published official formula; ours is labelled unofficial wherever shown,
and is `None` (unbounded) when the carbon is zero. Energy is the devices' own draw times the
site PUE; host servers, storage and network equipment are not modelled separately.
Money is integer fen, rounded once, half to even, by `electricity_cost_fen`.
Invariants: no I/O, no clock; carbon is exactly proportional to energy; the two carbon figures
are never mixed (the market-based one is <= the location-based one).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Protocol

from suanli import checks
from suanli.errors import InvalidValue
from suanli.metering.devices import DeviceProfile
from suanli.metering.units import EFFICIENCY, Precision, WorkloadClass

SECONDS_PER_HOUR = 3600.0
CEPS_LABEL = "CEPS (unofficial: delivered FLOP per kg CO2)"


class SiteFactors(Protocol):
    """What metering needs to know about a site; `catalog.Site` provides it."""

    @property
    def id(self) -> str: ...
    @property
    def pue(self) -> float: ...
    @property
    def grid_kgco2_per_kwh(self) -> float: ...
    @property
    def green_share(self) -> float: ...


@dataclass(frozen=True, slots=True)
class Capacity:
    """Sustained throughput of `count` devices for one precision and workload class."""

    device: DeviceProfile
    count: int
    requested: Precision
    precision: Precision
    peak_flops_per_device: float
    efficiency: float
    efficiency_basis: str

    @property
    def fallback(self) -> bool:
        """True when the work runs at a wider precision's figure (the widening rule)."""
        return self.precision is not self.requested

    @property
    def flops(self) -> float:
        """Delivered FLOP/s of all devices together."""
        return self.count * self.peak_flops_per_device * self.efficiency


def capacity(
    device: DeviceProfile,
    precision: Precision,
    workload: WorkloadClass,
    count: int = 1,
    *,
    efficiency: float | None = None,
    allow_fallback: bool = True,
) -> Capacity:
    """Sustained capacity; `efficiency` overrides the workload-class default when given."""
    checks.count("count", count)
    if efficiency is None:
        default = EFFICIENCY[workload]
        value, basis = default.value, default.basis
    else:
        value = checks.in_range("efficiency", efficiency, 0.0, 1.0, low_open=True)
        basis = "given"
    used = device.resolve_precision(precision, allow_fallback)
    return Capacity(device, count, precision, used, device.peak_flops[used], value, basis)


def duration_s(work_flop: float, capacity_flops: float) -> float:
    """Seconds to deliver `work_flop` at `capacity_flops`."""
    checks.positive("work_flop", work_flop)
    checks.positive("capacity_flops", capacity_flops)
    return work_flop / capacity_flops


def energy_kwh(devices: int, tdp_kw: float, utilisation: float, hours: float, pue: float) -> float:
    """Facility energy: the devices' draw (TDP x utilisation) for `hours`, times the site PUE."""
    checks.count("devices", devices)
    checks.non_negative("tdp_kw", tdp_kw)
    checks.in_range("utilisation", utilisation, 0.0, 1.0)
    checks.non_negative("hours", hours)
    checks.at_least("pue", pue, 1.0)
    return devices * tdp_kw * utilisation * hours * pue


def carbon_kg(energy: float, grid_kgco2_per_kwh: float, green_share: float) -> float:
    """Market-based carbon: contracted green power counts as zero-carbon."""
    checks.non_negative("energy_kwh", energy)
    checks.non_negative("grid_kgco2_per_kwh", grid_kgco2_per_kwh)
    checks.in_range("green_share", green_share, 0.0, 1.0)
    return energy * grid_kgco2_per_kwh * (1.0 - green_share)


def carbon_location_kg(energy: float, grid_kgco2_per_kwh: float) -> float:
    """Location-based carbon: the grid's average factor, whatever was contracted."""
    return carbon_kg(energy, grid_kgco2_per_kwh, 0.0)


def ceps(work_flop: float, carbon: float) -> float | None:
    """CEPS (算力碳效, unofficial): FLOP delivered per kg CO2; None when carbon is zero."""
    checks.non_negative("work_flop", work_flop)
    checks.non_negative("carbon_kg", carbon)
    return None if carbon == 0 else work_flop / carbon


def electricity_cost_fen(energy: float, price_cny_per_kwh: float) -> int:
    """Energy cost in integer fen, rounded once, half to even."""
    checks.non_negative("energy_kwh", energy)
    checks.non_negative("price_cny_per_kwh", price_cny_per_kwh)
    fen = Decimal(repr(energy)) * Decimal(repr(price_cny_per_kwh)) * 100
    return int(fen.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


@dataclass(frozen=True, slots=True)
class Metering:
    """Estimated run of precision-tagged work on `capacity.count` devices at one site."""

    site_id: str
    capacity: Capacity
    work_flop: float
    utilisation: float
    pue: float
    grid_kgco2_per_kwh: float
    green_share: float
    duration_s: float
    energy_kwh: float
    carbon_kg: float
    carbon_location_kg: float

    @property
    def ceps(self) -> float | None:
        """Market-based CEPS, FLOP per kg CO2 (unofficial); None if zero-carbon."""
        return ceps(self.work_flop, self.carbon_kg)

    @property
    def ceps_location(self) -> float | None:
        """Location-based CEPS, FLOP per kg CO2 (unofficial)."""
        return ceps(self.work_flop, self.carbon_location_kg)


def meter(
    device: DeviceProfile,
    count: int,
    precision: Precision,
    work_flop: float,
    workload: WorkloadClass,
    site: SiteFactors,
    *,
    utilisation: float = 1.0,
    efficiency: float | None = None,
    allow_fallback: bool = True,
) -> Metering:
    """Time, energy and carbon of `work_flop` of `precision` work on `count` devices at `site`.

    `utilisation` is the devices' power draw as a fraction of TDP while the work runs (default
    1.0: drawing full TDP, a conservative upper bound).
    """
    checks.positive("work_flop", work_flop)
    if device.tdp_w is None:
        raise InvalidValue(
            "tdp_w", None, f"a published TDP for '{device.name}'", f"“{device.name}”的公开 TDP"
        )
    cap = capacity(
        device, precision, workload, count, efficiency=efficiency, allow_fallback=allow_fallback
    )
    seconds = duration_s(work_flop, cap.flops)
    energy = energy_kwh(
        count, device.tdp_w / 1000.0, utilisation, seconds / SECONDS_PER_HOUR, site.pue
    )
    return Metering(
        site_id=site.id,
        capacity=cap,
        work_flop=work_flop,
        utilisation=utilisation,
        pue=site.pue,
        grid_kgco2_per_kwh=site.grid_kgco2_per_kwh,
        green_share=site.green_share,
        duration_s=seconds,
        energy_kwh=energy,
        carbon_kg=carbon_kg(energy, site.grid_kgco2_per_kwh, site.green_share),
        carbon_location_kg=carbon_location_kg(energy, site.grid_kgco2_per_kwh),
    )
