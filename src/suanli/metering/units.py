"""Units of the compute metering standard (统一算力资源度量计量标准).

Owns the vocabulary every other module measures compute in:

* `Precision` — the number formats work is tagged with. Work is always *precision-tagged FLOP*
  (INT8 work counts integer operations, reported as TOPS by vendors; we treat one OP as one FLOP
  of INT8 work).
* `WorkloadClass` — training, inference, HPC or general; each has one documented efficiency, the
  fraction of a device's dense peak that such work sustains on average.
* the single precision fallback rule (`WIDER_PRECISION`): where a device publishes no figure
  for the asked precision, the work runs at the next *wider* format that represents every
  value of the asked one, never a narrower or a guessed one.
* `StandardUnit` — the reporting bases. Totals are reported on an FP32 basis and an FP16 basis
  separately, as the official statistics do; they are never folded together by a fixed ratio.

Invariants: everything here is immutable module data; efficiencies lie in (0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from typing import TypeVar, cast

from suanli.errors import InvalidValue


class Precision(StrEnum):
    FP64 = "fp64"
    FP32 = "fp32"
    TF32 = "tf32"
    FP16 = "fp16"
    BF16 = "bf16"
    FP8 = "fp8"
    INT8 = "int8"


class WorkloadClass(StrEnum):
    TRAINING = "training"
    INFERENCE = "inference"
    HPC = "hpc"
    GENERAL = "general"


class DeviceKind(StrEnum):
    GPU = "gpu"
    NPU = "npu"
    CPU = "cpu"


# The one fallback rule. Each precision maps to the next wider format that can hold every value
# of it exactly: INT8 integers and FP8 values are exact in FP16; BF16 needs FP32's exponent
# range (FP16 would overflow); TF32 is an FP32-input tensor mode; FP32 widens to FP64; FP64 has
# nothing wider, so a device without FP64 figures refuses FP64 work.
WIDER_PRECISION: dict[Precision, Precision | None] = {
    Precision.INT8: Precision.FP16,
    Precision.FP8: Precision.FP16,
    Precision.FP16: Precision.FP32,
    Precision.BF16: Precision.FP32,
    Precision.TF32: Precision.FP32,
    Precision.FP32: Precision.FP64,
    Precision.FP64: None,
}


def widening_chain(precision: Precision) -> list[Precision]:
    """The asked precision followed by every wider fallback, in the order they are tried."""
    chain = [precision]
    nxt = WIDER_PRECISION[precision]
    while nxt is not None:
        chain.append(nxt)
        nxt = WIDER_PRECISION[nxt]
    return chain


@dataclass(frozen=True, slots=True)
class Efficiency:
    """Sustained fraction of dense peak for a workload class, with its provenance."""

    value: float
    basis: str


# Modelling assumptions, marked as estimates wherever they are shown. No source in
# data/SOURCES.md publishes these; they are the project's round reading of common practice:
# large-model training sustains roughly 30-50% of dense peak (model FLOPs utilisation),
# inference is often memory-bound, tuned dense linear algebra (HPL-like HPC) reaches well over
# half of peak, and mixed general-purpose work lies in between. Callers may pass their own.
EFFICIENCY: dict[WorkloadClass, Efficiency] = {
    WorkloadClass.TRAINING: Efficiency(0.40, "estimate: typical model-FLOPs utilisation"),
    WorkloadClass.INFERENCE: Efficiency(0.30, "estimate: memory-bound decoding dominates"),
    WorkloadClass.HPC: Efficiency(0.65, "estimate: tuned dense linear algebra"),
    WorkloadClass.GENERAL: Efficiency(0.50, "estimate: mixed general-purpose work"),
}


@dataclass(frozen=True, slots=True)
class StandardUnit:
    """A reporting basis: capacity counted at one precision's dense peak."""

    name: str
    precision: Precision
    flops: float
    description: str


FP32_BASIS = StandardUnit(
    "EFLOPS (FP32)", Precision.FP32, 1e18, "general-purpose basis of the national statistics"
)
FP16_BASIS = StandardUnit(
    "EFLOPS (FP16)", Precision.FP16, 1e18, "intelligent-compute (AI) basis, dense FP16"
)


E = TypeVar("E", bound=StrEnum)


@cache
def _members(enum: type[StrEnum]) -> dict[str, StrEnum]:
    """Each member of `enum` by its value without dashes (what `_parse_enum` compares)."""
    return {member.value.replace("-", ""): member for member in enum}


def _parse_enum(enum: type[E], field: str, value: str, zh: str) -> E:
    key = value.strip().lower().replace("-", "").replace("_", "")
    member = _members(enum).get(key)
    if member is not None:
        return cast(E, member)
    accepted = ", ".join(m.value for m in enum)
    raise InvalidValue(field, value, f"one of {accepted}", f"{zh}之一：{accepted}")


def parse_precision(value: str) -> Precision:
    """'FP16', 'bf16', 'Int8' -> Precision; anything else is refused naming the accepted set."""
    return _parse_enum(Precision, "precision", value, "精度")


def parse_workload(value: str) -> WorkloadClass:
    return _parse_enum(WorkloadClass, "workload", value, "负载类型")


def parse_kind(value: str) -> DeviceKind:
    return _parse_enum(DeviceKind, "device_kind", value, "设备类型")
