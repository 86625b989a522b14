"""suanli.metering — one measure for heterogeneous compute (统一算力资源度量计量标准).

Pure: device profiles shipped as package data, precision-tagged work, capacity per workload
class, energy, carbon (market- and location-based, never mixed) and CEPS. See `units` for the
vocabulary and the one fallback rule, `devices` for profiles and name lookup, `measure` for the
formulas.
"""

from suanli.metering.devices import (
    DeviceProfile,
    all_devices,
    engine_device_ids,
    find_device,
    match_devices,
)
from suanli.metering.measure import (
    CEPS_LABEL,
    Capacity,
    Metering,
    SiteFactors,
    capacity,
    carbon_kg,
    carbon_location_kg,
    ceps,
    duration_s,
    electricity_cost_fen,
    energy_kwh,
    meter,
)
from suanli.metering.units import (
    EFFICIENCY,
    FP16_BASIS,
    FP32_BASIS,
    WIDER_PRECISION,
    DeviceKind,
    Efficiency,
    Precision,
    StandardUnit,
    WorkloadClass,
    parse_kind,
    parse_precision,
    parse_workload,
    widening_chain,
)

__all__ = [
    "CEPS_LABEL",
    "EFFICIENCY",
    "FP16_BASIS",
    "FP32_BASIS",
    "WIDER_PRECISION",
    "Capacity",
    "DeviceKind",
    "DeviceProfile",
    "Efficiency",
    "Metering",
    "Precision",
    "SiteFactors",
    "StandardUnit",
    "WorkloadClass",
    "all_devices",
    "capacity",
    "carbon_kg",
    "carbon_location_kg",
    "ceps",
    "duration_s",
    "electricity_cost_fen",
    "energy_kwh",
    "engine_device_ids",
    "find_device",
    "match_devices",
    "meter",
    "parse_kind",
    "parse_precision",
    "parse_workload",
    "widening_chain",
]
