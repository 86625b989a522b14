"""Realistic placement problems: `generate_problem(n_tasks, n_pools, seed) -> PROBLEM.json dict`.

Owns the synthetic workload of the scheduler's tests and benchmarks. Pure: the only randomness
is `numpy.random.Generator(PCG64(seed))`, the only files the package's own derived tables
(`data/device_mix.csv`, `data/task_shapes.csv`, see `data/SOURCES.md`) and the catalog; no
clock. Invariant: the same arguments give an identical document, which `parse_problem` accepts.

Every number marked ESTIMATE is a scenario assumption of ours: no source in the data publishes
it. The rules, in the order they are drawn:

Pools (`n_pools`)
* Site: 80% at one of the 10 national clusters (uniform), 20% (ESTIMATE) at a provider site
  in a province from `PROVIDER_PROVINCES` (uniform), named by the province, which the problem
  format turns into a provider site with the national average PUE.
* Device: first a kind by `POOL_KIND_SHARE` (GPU 70% / NPU 15% / CPU 15%, ESTIMATE), then a
  GPU row of `device_mix.csv` weighted by its devices in the trace, or a domestic accelerator
  (Ascend 910B 70% / MLU370-X8 30%, ESTIMATE), or a CPU (EPYC 9654 40% / Xeon Platinum 8480+
  40% / Kunpeng 920 20%, ESTIMATE).
* Count: devices per node x nodes. GPUs take the trace row's devices per node (devices /
  nodes rounded to a power of two); NPUs 8 per node and CPUs 2 sockets per node (ESTIMATE).
  Nodes (ESTIMATE): the devices an average pool needs, n_tasks x mean task devices x
  `SUPPLY_RATIO` (1.3) / (n_pools x mean free fraction), x U(0.5, 1.5), over devices per
  node, at least 1 — so supply follows demand at every size, with some pressure.
* Free: count x U(0.2, 0.9) (ESTIMATE), rounded.
* Price (fen per device-hour, ESTIMATE): markup x (capital + energy), with markup
  U(0.9, 1.3), capital = `CAPITAL_FEN_PER_TFLOPS_HOUR` x the dense FP16 peak in TFLOPS (2.5
  fen; FP32 peak x 100 fen for CPUs), energy = TDP (kW) x site PUE x site electricity price
  (CNY/kWh) x 100. 20% of pools (ESTIMATE) bill energy separately; their price is capital
  only. The constants are calibrated to nothing published: an A100 comes out near 8 CNY/h.

Tasks (`n_tasks`)
* Origin: 80% (ESTIMATE; no published demand share is in the data) from the cities of the
  four demand hubs (`HUB_CITIES`: 京津冀, 长三角, 粤港澳, 成渝), 20% from the capitals of the
  other provinces (`OTHER_CAPITALS`), uniform within each list.
* Kind: the share of free devices of each kind over the generated pools (so demand matches
  the mix). Devices: the openb `num_gpu` distribution of GPU pods (1: 98.9%, 2/4/8 rare).
* Latency tier: interactive 10% / standard 30% / batch 60% (ESTIMATE).
* Precision (ESTIMATE): GPU bf16 40 / fp16 25 / fp8 10 / int8 15 / fp32 10%; NPU fp16 45 /
  bf16 20 / int8 20 / fp8 5 / fp32 10%; CPU fp64 60 / fp32 40%.
* Workload (ESTIMATE): GPU/NPU interactive tasks are inference, others training 55 /
  inference 30 / general 15%; CPU hpc 50 / general 50%.
* Work: a runtime drawn from the Philly percentiles (a uniform percentile in [1, 99],
  log-linear between the tabled percentiles) x devices x the dense peak of the kind's
  reference device at that precision (A100 SXM4; Ascend 910B, else MLU370-X8 where the 910B
  has no figure; EPYC 9654) x the workload efficiency (`suanli.metering.EFFICIENCY`). On the
  reference device the task runs for exactly the drawn runtime.
* Data (ESTIMATE): lognormal, median 5 GB, sigma 1.5, rounded to 0.01 GB.
* Deferrable: half of batch tasks (ESTIMATE). Deadline: 30% of tasks (ESTIMATE), now +
  runtime x U(1.5, 4) + 900 s.
* A few constraints (ESTIMATE): 3% device models (e.g. ["NVIDIA"], ["H800", "A800"];
  an NPU task names its reference device's vendor), 3% allowed provinces (those of one or two
  pools of the task's kind), 10% of GPU/NPU tasks a memory per device, 5% a price ceiling
  (the run's cost on the reference device at a typical price x U(1, 3)).

`now_s` is 0 and the epoch the format's default (2026-01-01T00:00+08:00).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt

from suanli.catalog import Site, clusters, find_place, provider_site
from suanli.datafiles import read_rows
from suanli.errors import InvalidValue, UnsupportedPrecision
from suanli.metering import (
    EFFICIENCY,
    DeviceKind,
    DeviceProfile,
    Precision,
    WorkloadClass,
    find_device,
)
from suanli.scheduler.problem import DEFAULT_EPOCH, DEFAULT_PROVIDER_PUE

FloatArray = npt.NDArray[np.float64]

# --- pools -------------------------------------------------------------------------------------
PROVIDER_SHARE = 0.20  # ESTIMATE: pools at provider sites outside the national clusters
PROVIDER_PROVINCES = (
    "浙江",
    "江苏",
    "山东",
    "湖北",
    "湖南",
    "河南",
    "陕西",
    "福建",
    "辽宁",
    "山西",
    "云南",
    "广西",
)
POOL_KIND_SHARE: Mapping[DeviceKind, float] = {  # ESTIMATE
    DeviceKind.GPU: 0.70,
    DeviceKind.NPU: 0.15,
    DeviceKind.CPU: 0.15,
}
NPU_OFFERS = (("Ascend 910B", 0.7), ("MLU370-X8", 0.3))  # ESTIMATE weights
CPU_OFFERS = (("EPYC 9654", 0.4), ("Xeon Platinum 8480+", 0.4), ("Kunpeng 920", 0.2))  # ESTIMATE
NPU_PER_NODE = 8  # ESTIMATE
CPU_PER_NODE = 2  # ESTIMATE: two sockets per server
SUPPLY_RATIO = 1.3  # ESTIMATE: expected free devices / expected devices asked
NODE_SPREAD = (0.5, 1.5)  # ESTIMATE
FREE_FRACTION = (0.2, 0.9)  # ESTIMATE
ENERGY_BILLED_SHARE = 0.20  # ESTIMATE
# ESTIMATE (scenario assumption): capital charge per TFLOPS of dense peak per hour, in fen;
# FP16 for accelerators, FP32 for CPUs.
CAPITAL_FEN_PER_TFLOPS_HOUR: Mapping[DeviceKind, float] = {
    DeviceKind.GPU: 2.5,
    DeviceKind.NPU: 2.5,
    DeviceKind.CPU: 100.0,
}
MARKUP = (0.9, 1.3)  # ESTIMATE: provider margin over capital + energy

# --- tasks -------------------------------------------------------------------------------------
DEMAND_HUB_SHARE = 0.80  # ESTIMATE: no published demand share in the data
HUB_CITIES = (
    "北京",
    "天津",
    "石家庄",
    "上海",
    "南京",
    "苏州",
    "杭州",
    "宁波",
    "合肥",
    "广州",
    "深圳",
    "成都",
    "重庆",
)
OTHER_CAPITALS = (
    "太原",
    "呼和浩特",
    "沈阳",
    "长春",
    "哈尔滨",
    "福州",
    "南昌",
    "济南",
    "郑州",
    "武汉",
    "长沙",
    "南宁",
    "海口",
    "贵阳",
    "昆明",
    "拉萨",
    "西安",
    "兰州",
    "西宁",
    "银川",
    "乌鲁木齐",
)
TIER_SHARE = (("interactive", 0.10), ("standard", 0.30), ("batch", 0.60))  # ESTIMATE
PRECISION_SHARE: Mapping[DeviceKind, tuple[tuple[Precision, float], ...]] = {  # ESTIMATE
    DeviceKind.GPU: (
        (Precision.BF16, 0.40),
        (Precision.FP16, 0.25),
        (Precision.FP8, 0.10),
        (Precision.INT8, 0.15),
        (Precision.FP32, 0.10),
    ),
    DeviceKind.NPU: (
        (Precision.FP16, 0.45),
        (Precision.BF16, 0.20),
        (Precision.INT8, 0.20),
        (Precision.FP8, 0.05),
        (Precision.FP32, 0.10),
    ),
    DeviceKind.CPU: ((Precision.FP64, 0.60), (Precision.FP32, 0.40)),
}
ACCELERATOR_WORKLOAD = (  # ESTIMATE; interactive accelerator tasks are always inference
    (WorkloadClass.TRAINING, 0.55),
    (WorkloadClass.INFERENCE, 0.30),
    (WorkloadClass.GENERAL, 0.15),
)
CPU_WORKLOAD = ((WorkloadClass.HPC, 0.5), (WorkloadClass.GENERAL, 0.5))  # ESTIMATE
REFERENCE_DEVICES: Mapping[DeviceKind, tuple[str, ...]] = {
    DeviceKind.GPU: ("A100 SXM4",),  # the most numerous mapped GPU in device_mix.csv
    DeviceKind.NPU: ("Ascend 910B", "MLU370-X8"),
    DeviceKind.CPU: ("EPYC 9654",),
}
RUNTIME_PERCENTILES = (1.0, 99.0)  # drawn between these: the extreme tails are left out
DATA_GB_MEDIAN, DATA_GB_SIGMA = 5.0, 1.5  # ESTIMATE: lognormal input size
DEFERRABLE_SHARE_OF_BATCH = 0.5  # ESTIMATE
DEADLINE_SHARE = 0.30  # ESTIMATE
DEADLINE_MULTIPLE = (1.5, 4.0)  # ESTIMATE: x runtime on the reference device
DEADLINE_SLACK_S = 900.0  # ESTIMATE: for moving the input data
DEVICE_MODELS_SHARE = 0.03  # ESTIMATE
DEVICE_MODEL_CHOICES: Mapping[DeviceKind, tuple[tuple[str, ...], ...]] = {
    DeviceKind.GPU: (("NVIDIA",), ("H800", "A800"), ("A100", "A800")),
    DeviceKind.CPU: (("Kunpeng 920",), ("AMD", "Intel")),
}
PROVINCES_SHARE = 0.03  # ESTIMATE
MEMORY_SHARE = 0.10  # ESTIMATE, GPU/NPU tasks only
MEMORY_GB_CHOICES: Mapping[DeviceKind, tuple[float, ...]] = {  # ESTIMATE, per device
    DeviceKind.GPU: (24.0, 40.0, 64.0, 80.0),
    DeviceKind.NPU: (24.0, 32.0, 48.0),
}
PRICE_CEILING_SHARE = 0.05  # ESTIMATE
PRICE_CEILING_MULTIPLE = (1.0, 3.0)  # ESTIMATE
TYPICAL_PUE, TYPICAL_CNY_PER_KWH = 1.25, 0.6  # ESTIMATE: the "typical site" of a ceiling

KINDS = (DeviceKind.GPU, DeviceKind.NPU, DeviceKind.CPU)


@dataclass(frozen=True, slots=True)
class Offer:
    """One way to equip a pool: a catalog device, its weight within its kind, devices/node."""

    device: str
    kind: DeviceKind
    weight: float
    per_node: int
    source: str


@cache
def device_offers() -> Mapping[DeviceKind, tuple[Offer, ...]]:
    """GPU offers from `device_mix.csv` (one per row), NPU and CPU offers from the ESTIMATEs."""
    gpus = []
    for row in read_rows("suanli.scheduler", "device_mix.csv"):
        devices, nodes = int(row["devices_in_trace"]), int(row["nodes_in_trace"])
        per_node = 2 ** round(math.log2(devices / nodes))  # mean, to a power of two
        gpus.append(Offer(row["device"], DeviceKind.GPU, float(devices), per_node, row["source"]))
    return MappingProxyType(
        {
            DeviceKind.GPU: tuple(gpus),
            DeviceKind.NPU: tuple(
                Offer(name, DeviceKind.NPU, w, NPU_PER_NODE, "ESTIMATE") for name, w in NPU_OFFERS
            ),
            DeviceKind.CPU: tuple(
                Offer(name, DeviceKind.CPU, w, CPU_PER_NODE, "ESTIMATE") for name, w in CPU_OFFERS
            ),
        }
    )


@dataclass(frozen=True, slots=True)
class TaskShapes:
    """Task devices (value, pod count) and runtime percentiles (percent, seconds) from traces."""

    devices: tuple[tuple[int, int], ...]
    runtime_percentiles: tuple[tuple[float, float], ...]

    @property
    def mean_devices(self) -> float:
        total = sum(n for _, n in self.devices)
        return sum(v * n for v, n in self.devices) / total


@cache
def task_shapes() -> TaskShapes:
    rows = read_rows("suanli.scheduler", "task_shapes.csv")
    devices = tuple(
        (int(r["key"]), int(r["value"]))
        for r in rows
        if r["quantity"] == "num_gpu" and int(r["key"]) >= 1
    )
    low, high = RUNTIME_PERCENTILES
    runtimes = tuple(
        (float(r["key"]), float(r["value"]))
        for r in rows
        if r["quantity"] == "runtime_percentile" and low <= float(r["key"]) <= high
    )
    return TaskShapes(devices, runtimes)


def capital_fen_per_device_hour(device: DeviceProfile) -> float:
    """ESTIMATE: the capital charge, proportional to dense FP16 (CPUs: FP32) peak."""
    basis = Precision.FP32 if device.kind is DeviceKind.CPU else Precision.FP16
    tflops = device.peak_flops.get(basis, 0.0) / 1e12
    return CAPITAL_FEN_PER_TFLOPS_HOUR[device.kind] * tflops


def energy_fen_per_device_hour(device: DeviceProfile, pue: float, cny_per_kwh: float) -> float:
    """The electricity of one device-hour at full TDP: kW x PUE x CNY/kWh x 100 fen."""
    return (device.tdp_w or 0.0) / 1000.0 * pue * cny_per_kwh * 100.0


def _choose(rng: np.random.Generator, weights: Sequence[float], size: int) -> npt.NDArray[Any]:
    p = np.asarray(weights, dtype=float)
    return rng.choice(len(p), size=size, p=p / p.sum())


@dataclass(frozen=True, slots=True)
class _PoolFacts:
    kind: DeviceKind
    free: int
    provinces: tuple[str, ...]


def _pools(
    rng: np.random.Generator, n_pools: int, n_tasks: int
) -> tuple[list[dict[str, Any]], list[_PoolFacts]]:
    sites = clusters()
    offers = device_offers()
    shapes = task_shapes()
    kinds = _choose(rng, [POOL_KIND_SHARE[k] for k in KINDS], n_pools)
    offer_u = rng.random(n_pools)
    provider = rng.random(n_pools) < PROVIDER_SHARE
    cluster = rng.integers(len(sites), size=n_pools)
    province = rng.integers(len(PROVIDER_PROVINCES), size=n_pools)
    spread = rng.uniform(*NODE_SPREAD, size=n_pools)
    free_fraction = rng.uniform(*FREE_FRACTION, size=n_pools)
    billed = rng.random(n_pools) < ENERGY_BILLED_SHARE
    markup = rng.uniform(*MARKUP, size=n_pools)

    mean_free = sum(FREE_FRACTION) / 2
    need = n_tasks * shapes.mean_devices * SUPPLY_RATIO / (n_pools * mean_free)
    provider_sites: dict[str, Site] = {}
    documents: list[dict[str, Any]] = []
    facts: list[_PoolFacts] = []
    width = len(str(n_pools))
    for j in range(n_pools):
        kind = KINDS[int(kinds[j])]
        choices = offers[kind]
        cumulative = np.cumsum([o.weight for o in choices])
        pick = int(np.searchsorted(cumulative, offer_u[j] * cumulative[-1], side="right"))
        offer = choices[min(pick, len(choices) - 1)]
        device = find_device(offer.device)
        if provider[j]:
            name = PROVIDER_PROVINCES[int(province[j])]
            if name not in provider_sites:
                place = find_place(name)
                provider_sites[name] = provider_site(place.id, name, pue=DEFAULT_PROVIDER_PUE)
            site, site_name = provider_sites[name], name
        else:
            site = sites[int(cluster[j])]
            site_name = site.id
        nodes = max(1, round(need * float(spread[j]) / offer.per_node))
        count = offer.per_node * nodes
        free = min(count, max(0, round(count * float(free_fraction[j]))))
        price = capital_fen_per_device_hour(device)
        if not billed[j]:
            price += energy_fen_per_device_hour(device, site.pue, site.price_cny_per_kwh)
        document: dict[str, Any] = {
            "id": f"P{j + 1:0{width}d}",
            "site": site_name,
            "device": offer.device,
            "count": count,
            "free": free,
            "price_fen_per_device_hour": round(float(markup[j]) * price),
        }
        if billed[j]:
            document["energy_billed_separately"] = True
        documents.append(document)
        facts.append(_PoolFacts(kind, free, site.provinces))
    return documents, facts


@cache
def reference_device(kind: DeviceKind, precision: Precision) -> DeviceProfile:
    """The first of the kind's reference devices with a figure for `precision` (or wider)."""
    for name in REFERENCE_DEVICES[kind]:
        device = find_device(name)
        try:
            device.resolve_precision(precision)
        except UnsupportedPrecision:
            continue
        return device
    raise InvalidValue(
        "precision",
        precision.value,
        f"a precision a {kind.value} reference device runs",
        f"{kind.value} 参考设备支持的精度",
    )


def _runtimes(rng: np.random.Generator, n: int) -> FloatArray:
    """Runtimes (s): a uniform percentile, log-linear between the tabled Philly percentiles."""
    table = task_shapes().runtime_percentiles
    percents = np.array([p for p, _ in table])
    log_seconds = np.log(np.array([s for _, s in table]))
    drawn = rng.uniform(percents[0], percents[-1], size=n)
    result: FloatArray = np.exp(np.interp(drawn, percents, log_seconds))
    return result


def _tasks(
    rng: np.random.Generator, n_tasks: int, pools: Sequence[_PoolFacts]
) -> list[dict[str, Any]]:
    n = n_tasks
    shapes = task_shapes()
    free_by_kind = [sum(p.free for p in pools if p.kind is k) for k in KINDS]
    if sum(free_by_kind) == 0:  # every pool full: fall back to the number of pools per kind
        free_by_kind = [sum(1 for p in pools if p.kind is k) for k in KINDS]
    kind = _choose(rng, free_by_kind, n)
    from_hub = rng.random(n) < DEMAND_HUB_SHARE
    hub_city = rng.integers(len(HUB_CITIES), size=n)
    other_city = rng.integers(len(OTHER_CAPITALS), size=n)
    devices = np.array([v for v, _ in shapes.devices])[
        _choose(rng, [c for _, c in shapes.devices], n)
    ]
    tier = _choose(rng, [w for _, w in TIER_SHARE], n)
    precision_pick = {k: _choose(rng, [w for _, w in PRECISION_SHARE[k]], n) for k in KINDS}
    accel_workload = _choose(rng, [w for _, w in ACCELERATOR_WORKLOAD], n)
    cpu_workload = _choose(rng, [w for _, w in CPU_WORKLOAD], n)
    runtime = _runtimes(rng, n)
    data_gb = rng.lognormal(math.log(DATA_GB_MEDIAN), DATA_GB_SIGMA, size=n)
    deferrable = rng.random(n) < DEFERRABLE_SHARE_OF_BATCH
    has_deadline = rng.random(n) < DEADLINE_SHARE
    deadline_multiple = rng.uniform(*DEADLINE_MULTIPLE, size=n)
    has_models = rng.random(n) < DEVICE_MODELS_SHARE
    models_pick = rng.integers(1 << 30, size=n)
    has_provinces = rng.random(n) < PROVINCES_SHARE
    province_pools = rng.integers(1 << 30, size=(n, 2))
    province_count = rng.integers(1, 3, size=n)
    has_memory = rng.random(n) < MEMORY_SHARE
    memory_pick = rng.integers(1 << 30, size=n)
    has_ceiling = rng.random(n) < PRICE_CEILING_SHARE
    ceiling_multiple = rng.uniform(*PRICE_CEILING_MULTIPLE, size=n)

    pools_of_kind = {k: [p for p in pools if p.kind is k] for k in KINDS}
    width = len(str(n))
    documents: list[dict[str, Any]] = []
    for i in range(n):
        k = KINDS[int(kind[i])]
        latency_tier = TIER_SHARE[int(tier[i])][0]
        precision = PRECISION_SHARE[k][int(precision_pick[k][i])][0]
        if k is DeviceKind.CPU:
            workload = CPU_WORKLOAD[int(cpu_workload[i])][0]
        elif latency_tier == "interactive":
            workload = WorkloadClass.INFERENCE
        else:
            workload = ACCELERATOR_WORKLOAD[int(accel_workload[i])][0]
        reference = reference_device(k, precision)
        peak = reference.peak_flops[reference.resolve_precision(precision)]
        n_devices = int(devices[i])
        seconds = float(runtime[i])
        origin = HUB_CITIES[int(hub_city[i])] if from_hub[i] else OTHER_CAPITALS[int(other_city[i])]
        task: dict[str, Any] = {
            "id": f"T{i + 1:0{width}d}",
            "devices": n_devices,
            "device_kind": k.value,
            "precision": precision.value,
            "work_flop": seconds * n_devices * peak * EFFICIENCY[workload].value,
            "workload": workload.value,
            "origin": origin,
            "latency_tier": latency_tier,
            "data_gb": round(float(data_gb[i]), 2),
        }
        if latency_tier == "batch" and deferrable[i]:
            task["deferrable"] = True
        if has_deadline[i]:
            task["deadline_s"] = seconds * float(deadline_multiple[i]) + DEADLINE_SLACK_S
        if has_models[i]:
            if k is DeviceKind.NPU:
                task["device_models"] = [reference.vendor]
            else:
                options = DEVICE_MODEL_CHOICES[k]
                task["device_models"] = list(options[int(models_pick[i]) % len(options)])
        candidates = pools_of_kind[k]
        if has_provinces[i] and candidates:
            chosen = province_pools[i, : int(province_count[i])]
            names = {p for c in chosen for p in candidates[int(c) % len(candidates)].provinces}
            task["allowed_provinces"] = sorted(names)
        if has_memory[i] and k in MEMORY_GB_CHOICES:
            options_gb = MEMORY_GB_CHOICES[k]
            task["memory_gb"] = options_gb[int(memory_pick[i]) % len(options_gb)]
        if has_ceiling[i]:
            hourly = capital_fen_per_device_hour(reference) + energy_fen_per_device_hour(
                reference, TYPICAL_PUE, TYPICAL_CNY_PER_KWH
            )
            ceiling = hourly * n_devices * seconds / 3600.0 * float(ceiling_multiple[i])
            task["max_price_fen"] = max(1, math.ceil(ceiling))
        documents.append(task)
    return documents


def generate_problem(n_tasks: int, n_pools: int, seed: int) -> dict[str, Any]:
    """A PROBLEM.json document of `n_tasks` tasks on `n_pools` pools, fixed by `seed`.

    Pools are drawn first, then tasks, from one `numpy.random.Generator(PCG64(seed))`; the
    document holds only plain JSON values (str, int, float, bool, list, dict).
    """
    for name, value, low in (("n_tasks", n_tasks, 0), ("n_pools", n_pools, 1), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InvalidValue(name, value, f"a whole number >= {low}", f"不小于 {low} 的整数")
    rng = np.random.Generator(np.random.PCG64(seed))
    pools, facts = _pools(rng, n_pools, n_tasks)
    tasks = _tasks(rng, n_tasks, facts)
    return {"now_s": 0.0, "epoch": DEFAULT_EPOCH, "pools": pools, "tasks": tasks}


__all__ = [
    "CAPITAL_FEN_PER_TFLOPS_HOUR",
    "DEMAND_HUB_SHARE",
    "HUB_CITIES",
    "OTHER_CAPITALS",
    "Offer",
    "TaskShapes",
    "capital_fen_per_device_hour",
    "device_offers",
    "energy_fen_per_device_hour",
    "generate_problem",
    "reference_device",
    "task_shapes",
]
