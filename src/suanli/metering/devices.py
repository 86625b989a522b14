"""Device profiles: dense peak throughput per precision, memory and power of every device row.

Owns `DeviceProfile` and the `DEVICES` registry built from the shipped copies of
`accelerators.csv` and `cpus.csv` (one profile per row, source and quality kept), and forgiving
name lookup (`find_device`): "h800", "H800 SXM5", "NVIDIA H800", "英伟达 H800" all resolve;
an unknown name fails with the closest known names.

Rules:
* Peaks are dense (no structured sparsity), in FLOP/s. An empty cell means "not published":
  the profile has no figure for that precision, never a zero.
* FP64 uses the vector (non-tensor) figure; the FP64 tensor-core figure is kept separately in
  `fp64_tensor_flops` for reference, because most HPC codes are not DGEMM-bound.
* CPU figures are per socket and DERIVED (cores x base GHz x FLOP/cycle), as the data marks.
* A bare model name with several variants ("H800": SXM5 and PCIe) picks the first-listed row,
  which in the data is always the flagship (SXM) form; ask for the variant to get another.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache, lru_cache

from suanli.datafiles import optional_float, read_rows
from suanli.errors import SuanliError, UnknownDevice, UnsupportedPrecision
from suanli.metering.units import DeviceKind, Precision, widening_chain

_ACCELERATOR_COLUMNS = {
    Precision.FP64: "fp64_tflops",
    Precision.FP32: "fp32_tflops",
    Precision.TF32: "tf32_tflops",
    Precision.FP16: "fp16_tflops",
    Precision.BF16: "bf16_tflops",
    Precision.FP8: "fp8_tflops",
    Precision.INT8: "int8_tops",
}
_NPU_VENDORS = {"huawei", "cambricon", "kunlunxin"}
_UNVERIFIED_WORDS = ("unverified", "estimate", "conflicting", "not found", "recollection")

# Chinese vendor and family names users type, mapped to the English words in the data.
_ZH_WORDS = {
    "英伟达": "nvidia",
    "华为": "huawei",
    "昇腾": "ascend",
    "寒武纪": "cambricon",
    "昆仑芯": "kunlunxin",
    "昆仑": "kunlunxin",
    "海光": "hygon",
    "鲲鹏": "kunpeng",
    "飞腾": "phytium",
    "英特尔": "intel",
    "至强": "xeon",
}


@dataclass(frozen=True, slots=True)
class DeviceProfile:
    """One device model as published: dense peaks per precision (FLOP/s), memory, power."""

    id: str
    vendor: str
    model: str
    variant: str
    kind: DeviceKind
    architecture: str
    release_year: int | None
    memory_gb: float | None
    mem_bw_gbps: float | None
    tdp_w: float | None
    peak_flops: Mapping[Precision, float]
    fp64_tensor_flops: float | None
    quality: str
    source: str
    notes: str = ""
    aliases: tuple[str, ...] = field(default=(), compare=False, repr=False)

    @property
    def name(self) -> str:
        return " ".join(part for part in (self.vendor, self.model, self.variant) if part)

    @property
    def unverified(self) -> bool:
        """True where the data marks the row as an estimate or unverified: show it."""
        return any(word in self.quality.lower() for word in _UNVERIFIED_WORDS)

    @property
    def tdp_kw(self) -> float | None:
        return None if self.tdp_w is None else self.tdp_w / 1000.0

    def precisions(self) -> list[Precision]:
        """Precisions with a published figure, in enum order."""
        return [p for p in Precision if p in self.peak_flops]

    def resolve_precision(self, asked: Precision, allow_fallback: bool = True) -> Precision:
        """The precision whose figure is used for `asked` work: itself, else the widening rule.

        Raises `UnsupportedPrecision` when neither it nor (if allowed) any wider format has a
        figure.
        """
        chain = widening_chain(asked) if allow_fallback else [asked]
        for precision in chain:
            if precision in self.peak_flops:
                return precision
        if not allow_fallback:
            why, why_zh = "fallback disabled", "已关闭精度回退"
        elif len(chain) > 1:
            wider = ", ".join(p.value for p in chain[1:])
            why, why_zh = f"nor any wider fallback: {wider}", f"更宽的回退精度 {wider} 也没有"
        else:
            why, why_zh = "no wider format to fall back to", "没有更宽的精度可回退"
        available = [p.value for p in self.precisions()]
        raise UnsupportedPrecision(self.name, asked.value, available, why, why_zh)

    def peak(self, precision: Precision) -> float:
        """Dense peak in FLOP/s at exactly `precision`; refuses clearly where none is published."""
        resolved = self.resolve_precision(precision, allow_fallback=False)
        return self.peak_flops[resolved]


@lru_cache(maxsize=4096)  # pure, and called for every task a replay submits
def _compact(text: str) -> str:
    """Lower-case, NFKC, Chinese family names to English, only letters/digits/CJK kept."""
    text = unicodedata.normalize("NFKC", text).lower()
    for zh, en in _ZH_WORDS.items():
        text = text.replace(zh, en)
    return re.sub(r"[^0-9a-z\u4e00-\u9fff]+", "", text)


def _slug(*parts: str) -> str:
    text = unicodedata.normalize("NFKC", " ".join(parts)).lower()
    text = re.sub(r"\([^)]*\)", "", text)
    return re.sub(r"[^0-9a-z]+", "-", text).strip("-")


def _release_year(cell: str) -> int | None:
    match = re.match(r"\d{4}", cell)
    return int(match.group()) if match else None


def _aliases(vendor: str, model: str, variant: str) -> tuple[str, ...]:
    bare_model = re.sub(r"\([^)]*\)", "", model).strip()
    parenthetical = re.findall(r"\(([^)]*)\)", model)
    family_match = re.match(r"^(.*\d)-\d+$", bare_model)  # "Kunpeng 920-7260" -> "Kunpeng 920"
    family = family_match.group(1) if family_match else bare_model
    short_model = bare_model.replace("GeForce ", "")  # "RTX 4090"
    first_variant = variant.split(" ")[0] if variant else ""
    forms = {
        bare_model,
        short_model,
        family,
        f"{vendor} {bare_model}",
        f"{vendor} {short_model}",
        f"{vendor} {family}",
        f"{bare_model} {variant}",
        f"{bare_model} {first_variant}",
        f"{vendor} {bare_model} {variant}",
        f"{vendor} {bare_model} {first_variant}",
        *parenthetical,
    }
    memory = re.search(r"(\d+)\s*GB", variant)
    if memory:
        forms.add(f"{bare_model} {memory.group(1)}GB")
        forms.add(f"{bare_model} {first_variant} {memory.group(1)}GB")
    return tuple(sorted({_compact(form) for form in forms if _compact(form)}))


def _accelerator(row: Mapping[str, str]) -> DeviceProfile:
    peaks = {
        precision: value * 1e12
        for precision, column in _ACCELERATOR_COLUMNS.items()
        if (value := optional_float(row[column])) is not None
    }
    vendor = row["vendor"]
    kind = DeviceKind.NPU if vendor.lower() in _NPU_VENDORS else DeviceKind.GPU
    tensor = optional_float(row["fp64_tensor_tflops"])
    return DeviceProfile(
        id=_slug(vendor, row["model"], row["variant"]),
        vendor=vendor,
        model=row["model"],
        variant=row["variant"],
        kind=kind,
        architecture=row["architecture"],
        release_year=_release_year(row["release_year"]),
        memory_gb=optional_float(row["memory_gb"]),
        mem_bw_gbps=optional_float(row["mem_bw_gbps"]),
        tdp_w=optional_float(row["tdp_w"]),
        peak_flops=peaks,
        fp64_tensor_flops=None if tensor is None else tensor * 1e12,
        quality=row["quality"],
        source=row["source"],
        notes=row["notes"],
        aliases=_aliases(vendor, row["model"], row["variant"]),
    )


def _cpu(row: Mapping[str, str]) -> DeviceProfile:
    peaks: dict[Precision, float] = {}
    for precision, column in (
        (Precision.FP64, "fp64_peak_gflops_at_base"),
        (Precision.FP32, "fp32_peak_gflops_at_base"),
    ):
        value = optional_float(row[column])
        if value is not None:
            peaks[precision] = value * 1e9
    vendor = row["vendor"]
    return DeviceProfile(
        id=_slug(vendor, row["model"]),
        vendor=vendor,
        model=row["model"],
        variant="",
        kind=DeviceKind.CPU,
        architecture=row["microarchitecture"],
        release_year=_release_year(row["release_year"]),
        memory_gb=None,
        mem_bw_gbps=None,
        tdp_w=optional_float(row["tdp_w"]),
        peak_flops=peaks,
        fp64_tensor_flops=None,
        quality=row["quality"],
        source=row["source"],
        notes=row["notes"],
        aliases=_aliases(vendor, row["model"], ""),
    )


# A pool of generic CPU cores, for sites that do not name a CPU model (`--device cpu`). Every
# figure is an ESTIMATE of ours: one x86-64 core with AVX2 and two FMA units at 2.5 GHz
# (16 DP FLOP/cycle -> 40 GFLOPS FP64, 80 GFLOPS FP32), drawing 5 W (a 280 W, 64-core socket's
# share, rounded up). Counts are cores, not sockets.
GENERIC_CPU_CORE = DeviceProfile(
    id="generic-cpu-core",
    vendor="Generic",
    model="CPU core",
    variant="",
    kind=DeviceKind.CPU,
    architecture="x86-64 AVX2 (assumed)",
    release_year=None,
    memory_gb=None,
    mem_bw_gbps=None,
    tdp_w=5.0,
    peak_flops={Precision.FP64: 40e9, Precision.FP32: 80e9},
    fp64_tensor_flops=None,
    quality="estimate: generic core profile (2.5 GHz x 16 DP FLOP/cycle; 5 W)",
    source="suanli default profile for unnamed CPUs (not a published figure)",
    notes="counts are cores",
    aliases=("cpu", "cpucore", "genericcpu", "genericcpucore", "cpus", "cores"),
)


@cache
def all_devices() -> tuple[DeviceProfile, ...]:
    """Every device profile: accelerators, then CPUs in file order, then the generic CPU core."""
    accelerators = [_accelerator(r) for r in read_rows("suanli.metering", "accelerators.csv")]
    cpus = [_cpu(r) for r in read_rows("suanli.metering", "cpus.csv")]
    return (*accelerators, *cpus, GENERIC_CPU_CORE)


@cache
def _alias_index() -> dict[str, DeviceProfile]:
    """Compact alias -> profile; the first-listed profile wins a shared alias (flagship rule)."""
    index: dict[str, DeviceProfile] = {}
    for profile in all_devices():
        for alias in (_compact(profile.id), *profile.aliases):
            index.setdefault(alias, profile)
    return index


def _tokens(text: str) -> set[str]:
    text = unicodedata.normalize("NFKC", text).lower()
    for zh, en in _ZH_WORDS.items():
        text = text.replace(zh, f" {en} ")
    return set(re.findall(r"[0-9a-z]+|[\u4e00-\u9fff]+", text))


def _match_tokens(name: str) -> list[DeviceProfile]:
    """Profiles whose name holds every word of `name` ("xeon 8380", "4090"), in file order."""
    wanted = _tokens(name)
    if not wanted:
        return []
    return [p for p in all_devices() if wanted <= _tokens(f"{p.name} {p.architecture}")]


def find_device(name: str) -> DeviceProfile:
    """Resolve a device name forgivingly; unknown names fail with the closest known names."""
    key = _compact(name)
    index = _alias_index()
    if key in index:
        return index[key]
    by_tokens = _match_tokens(name)
    models = {(p.vendor, p.model) for p in by_tokens}
    if len(models) == 1:
        return by_tokens[0]  # one model; the first-listed variant is the flagship
    if len(models) > 1:
        raise UnknownDevice(name, [p.name for p in by_tokens][:8], ambiguous=True)
    close = difflib.get_close_matches(key, list(index), n=12, cutoff=0.5)
    suggestions: list[str] = []
    for alias in close:
        display = index[alias].name
        if display not in suggestions:
            suggestions.append(display)
    raise UnknownDevice(name, suggestions[:5])


def match_devices(name: str) -> tuple[DeviceProfile, ...]:
    """Every profile a constraint name allows: a vendor ("NVIDIA", "华为") gives all of its
    devices, a model ("H800") all of its variants, a variant ("H800 PCIe") only that one."""
    key = _compact(name)
    by_vendor = tuple(p for p in all_devices() if _compact(p.vendor) == key)
    if by_vendor:
        return by_vendor
    profile = find_device(name)
    same_model = tuple(
        p for p in all_devices() if (p.vendor, p.model) == (profile.vendor, profile.model)
    )
    sharing_alias = tuple(p for p in same_model if key in p.aliases or key == _compact(p.id))
    return sharing_alias if len(sharing_alias) > 1 else (profile,)


@lru_cache(maxsize=1024)  # pure; asked per node and model at every capacity report
def engine_device_ids(name: str) -> frozenset[str]:
    """The catalog devices an engine's accelerator name (a Slurm GRES type such as `a100`, a
    Ray resource) may mean: those `match_devices` gives, none for a name it does not know."""
    try:
        return frozenset(d.id for d in match_devices(name))
    except SuanliError:
        return frozenset()
