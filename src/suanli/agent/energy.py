"""Measured energy of a task's accelerators: a small meter interface and its three sources.

Every kWh the platform models comes from a device's TDP (`suanli.metering`); this module measures
instead, on the provider's host, for the devices the backend bound to a task. A meter's
`open(devices)` returns a session, or None when nothing can be measured here (no library, no
tool, an init failure: the task's figure then stays modelled); a session's `read()` returns the
cumulative joules of each device since `open` and each device's utilisation now (0..1, None
when the source does not tell); `close()` releases it. The agent reads at the start, every
`sample_every_s` while the task runs (a `sampled` session integrates power between reads; every
session's utilisation is sampled then), and at the end; `measured` turns the readings into the
task's kWh and mean utilisation.

Sources:
- `NvmlMeter`: NVIDIA GPUs through NVML (`pynvml`, from the `nvidia-ml-py` distribution),
  imported lazily or given as a parameter (tests pass a recorded fake). A device whose driver
  keeps the energy counter (`nvmlDeviceGetTotalEnergyConsumption`, mJ since the driver loaded,
  Volta and later) is read exactly: the joules are the counter's difference. Otherwise its power
  (`nvmlDeviceGetPowerUsage`, mW) is sampled and integrated. Utilisation is
  `nvmlDeviceGetUtilizationRates().gpu` (percent).
- `AscendMeter`: Huawei Ascend NPUs through `npu-smi info` (power per chip, W; AICore %),
  sampled and integrated.
- `HygonMeter`: Hygon DCUs through `hy-smi` (average power per device, W; DCU %), sampled and
  integrated.

Devices are named as the backend binds them: an index (`"0"`: NVML's index, which is PCI bus
order; the local backend sets `CUDA_DEVICE_ORDER=PCI_BUS_ID` so CUDA agrees) or, for NVML, a
UUID (`"GPU-…"`). An index the host does not have raises `DeviceNotFound` (a provider's
configuration error, not a missing measurement).

Integration of sampled power is trapezoidal between consecutive reads: a source sampled every
`sample_every_s` seconds misses what happens between samples, so its figure is an estimate of
the same quality as the tool's own averaging. Time comes from an injected `clock` (monotonic
seconds); nothing here sleeps.
"""

from __future__ import annotations

import contextlib
import importlib
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from suanli.errors import InvalidValue

__all__ = [
    "JOULES_PER_KWH",
    "AscendMeter",
    "DeviceNotFound",
    "DeviceSample",
    "EnergyMeter",
    "EnergySession",
    "FirstOf",
    "HygonMeter",
    "Measured",
    "NvmlMeter",
    "Reading",
    "Tally",
    "host_meters",
    "measured",
    "parse_hy_smi",
    "parse_npu_smi",
    "run_tool",
]

JOULES_PER_KWH = 3_600_000.0
TOOL_TIMEOUT_S = 10.0

Clock = Callable[[], float]
Runner = Callable[[Sequence[str]], str]  # argv -> the program's stdout


class DeviceNotFound(InvalidValue):
    """A device the backend bound to a task that the meter's source does not have."""

    def __init__(self, device: str, source: str, count: int) -> None:
        self.device = device
        self.source = source
        self.count = count
        super().__init__(
            "devices",
            device,
            f"a device {source} knows: an index below {count} or a UUID it lists",
            f"{source} 所识别的设备：小于 {count} 的序号或其列出的 UUID",
        )


@dataclass(frozen=True)
class Reading:
    """One read of a session: per device, in the order `open` was given, the joules since
    `open` and the utilisation now (0..1; None when the source does not tell); `at_s` is the
    meter's clock."""

    energy_j: tuple[float, ...]
    utilisation: tuple[float | None, ...]
    at_s: float


class EnergySession(Protocol):
    """An open measurement of some devices; see the module docstring."""

    @property
    def sampled(self) -> bool:
        """Whether the figure integrates samples (the agent then reads periodically)."""
        ...

    def read(self) -> Reading: ...

    def close(self) -> None: ...


class EnergyMeter(Protocol):
    """A source of measurements: `open` a session for devices, or None (no measurement)."""

    @property
    def name(self) -> str: ...

    def open(self, devices: Sequence[str]) -> EnergySession | None: ...


@dataclass(frozen=True)
class Measured:
    """What a task's readings add up to: energy of all its devices and mean utilisation."""

    energy_kwh: float
    utilisation: float | None


class Tally:
    """A task's readings folded as they come, in constant memory: the first and the last, and
    the sum and count of the utilisations after the first."""

    def __init__(self) -> None:
        self.first: Reading | None = None
        self.last: Reading | None = None
        self._share_sum = 0.0
        self._share_count = 0

    def add(self, reading: Reading) -> None:
        if self.first is None:
            self.first = reading
            return
        self.last = reading
        shares = [u for u in reading.utilisation if u is not None]
        self._share_sum += sum(shares)
        self._share_count += len(shares)

    def result(self) -> Measured | None:
        """The task's kWh (the last reading's joules less the first's, summed over devices)
        and mean utilisation (over the reads after the first and over devices; None when no
        read told one). None with fewer than two readings."""
        if self.first is None or self.last is None:
            return None
        pairs = zip(self.first.energy_j, self.last.energy_j, strict=True)
        joules = sum(max(0.0, b - a) for a, b in pairs)
        mean = self._share_sum / self._share_count if self._share_count else None
        return Measured(joules / JOULES_PER_KWH, mean)


def measured(readings: Sequence[Reading]) -> Measured | None:
    """What `readings`, in order, add up to (see `Tally.result`)."""
    tally = Tally()
    for reading in readings:
        tally.add(reading)
    return tally.result()


class _Integrator:
    """Cumulative joules per device from power samples (W), trapezoidal between samples."""

    def __init__(self, devices: int) -> None:
        self.joules = [0.0] * devices
        self._last: tuple[float, list[float | None]] | None = None

    def add(self, at_s: float, power_w: Sequence[float | None]) -> tuple[float, ...]:
        """Take the samples at `at_s`; a device without a sample adds nothing until it has two
        in a row."""
        if self._last is not None:
            then, before = self._last
            dt = max(0.0, at_s - then)
            for i, (a, b) in enumerate(zip(before, power_w, strict=True)):
                if a is not None and b is not None:
                    self.joules[i] += (a + b) / 2 * dt
        self._last = (at_s, list(power_w))
        return tuple(self.joules)


# -- NVIDIA: NVML ------------------------------------------------------------------------------


def _import_pynvml() -> Any:
    """The `pynvml` module, or None when it is not installed."""
    try:
        return importlib.import_module("pynvml")
    except ImportError:
        return None


class NvmlMeter:
    """NVIDIA GPUs through NVML. `nvml` is the `pynvml` module (imported on first `open` when
    not given); `clock` times the power samples of devices without an energy counter."""

    name = "nvml"

    def __init__(self, nvml: Any = None, clock: Clock = time.monotonic) -> None:
        self._nvml = nvml
        self._clock = clock

    def open(self, devices: Sequence[str]) -> EnergySession | None:
        nvml = self._nvml if self._nvml is not None else _import_pynvml()
        if nvml is None:
            return None
        error = getattr(nvml, "NVMLError", Exception)
        try:
            nvml.nvmlInit()
        except error:
            return None  # no driver, no library: nothing measured here
        try:
            return _NvmlSession(nvml, [self._handle(nvml, d) for d in devices], self._clock)
        except DeviceNotFound:
            nvml.nvmlShutdown()
            raise
        except error:
            nvml.nvmlShutdown()
            return None

    @staticmethod
    def _handle(nvml: Any, device: str) -> Any:
        if device.isdigit():
            count = int(nvml.nvmlDeviceGetCount())
            if int(device) >= count:
                raise DeviceNotFound(device, "NVML", count)
            return nvml.nvmlDeviceGetHandleByIndex(int(device))
        try:
            return nvml.nvmlDeviceGetHandleByUUID(device)
        except getattr(nvml, "NVMLError", Exception):
            raise DeviceNotFound(device, "NVML", int(nvml.nvmlDeviceGetCount())) from None


class _NvmlSession:
    def __init__(self, nvml: Any, handles: list[Any], clock: Clock) -> None:
        self._nvml = nvml
        self._handles = handles
        self._clock = clock
        self._error = getattr(nvml, "NVMLError", Exception)
        self._start_mj: list[float | None] = [self._counter_mj(h) for h in handles]
        self._integrator = _Integrator(len(handles))
        self.sampled = any(c is None for c in self._start_mj)
        if self.sampled:
            self._integrator.add(self._clock(), self._power_w())

    def _counter_mj(self, handle: Any) -> float | None:
        try:
            return float(self._nvml.nvmlDeviceGetTotalEnergyConsumption(handle))
        except self._error:
            return None  # not supported on this device: sample its power

    def _power_w(self) -> list[float | None]:
        power: list[float | None] = []
        for handle, start in zip(self._handles, self._start_mj, strict=True):
            if start is not None:
                power.append(None)  # read from its counter
                continue
            try:
                power.append(float(self._nvml.nvmlDeviceGetPowerUsage(handle)) / 1000.0)
            except self._error:
                power.append(None)
        return power

    def _utilisation(self, handle: Any) -> float | None:
        try:
            return float(self._nvml.nvmlDeviceGetUtilizationRates(handle).gpu) / 100.0
        except self._error:
            return None

    def read(self) -> Reading:
        at_s = self._clock()
        sampled = self._integrator.add(at_s, self._power_w()) if self.sampled else ()
        joules = []
        for i, (handle, start) in enumerate(zip(self._handles, self._start_mj, strict=True)):
            if start is None:
                joules.append(sampled[i])
            else:
                now = self._counter_mj(handle)
                joules.append(0.0 if now is None else max(0.0, now - start) / 1000.0)
        return Reading(tuple(joules), tuple(self._utilisation(h) for h in self._handles), at_s)

    def close(self) -> None:
        with contextlib.suppress(self._error):
            self._nvml.nvmlShutdown()


# -- sampled command-line tools: Ascend npu-smi, Hygon hy-smi ----------------------------------


@dataclass(frozen=True)
class DeviceSample:
    """One device in a tool's output: its index, power (W) and utilisation (0..1), None when
    the tool shows `NA`/`N/A`."""

    device: int
    power_w: float | None
    utilisation: float | None


def _number(text: str) -> float | None:
    match = re.match(r"^\s*([0-9]+(?:\.[0-9]+)?)", text)
    return float(match.group(1)) if match else None


def parse_npu_smi(text: str) -> list[DeviceSample]:
    """The chips of `npu-smi info`'s first table. Each chip is two rows: the NPU row
    `| NPU Name | Health | Power(W) Temp(C) ... |`, then the chip row
    `| Chip [Device] | Bus-Id | AICore(%) Memory-Usage(MB) ... |`. A chip's device index is its
    `Device` column when the header has one (Atlas 300I Duo and others with several chips per
    card), else its order in the table (one chip per NPU: the logical id
    `ASCEND_RT_VISIBLE_DEVICES` takes)."""
    samples: list[DeviceSample] = []
    has_device_column = False
    pending_power: float | None = None
    pending = False
    for line in text.splitlines():
        if not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3:
            continue  # the version banner, "No running processes found"
        first = cells[0].split()
        if first[:1] == ["Chip"]:
            has_device_column = "Device" in first
            continue
        if first[:1] == ["NPU"] and "Process" in line:
            break  # the process table follows the device table
        if not first or not first[0].isdigit():
            continue
        if not pending and len(first) >= 2 and not first[1].isdigit():  # NPU row: id and name
            pending_power = _number(cells[2].split()[0]) if cells[2].split() else None
            pending = True
        elif pending:  # chip row
            device = int(first[1]) if has_device_column and len(first) > 1 else len(samples)
            share = _number(cells[2].split()[0]) if cells[2].split() else None
            samples.append(
                DeviceSample(device, pending_power, None if share is None else share / 100.0)
            )
            pending = False
    return samples


def parse_hy_smi(text: str) -> list[DeviceSample]:
    """The devices of `hy-smi`'s table: a header row naming the columns (`DCU`, `AvgPwr`,
    `DCU%`, ...) then one row per device (`0  49.0C  126.0W  ...  99%`), columns found by name
    in the header."""
    columns: list[str] | None = None
    samples = []
    for line in text.splitlines():
        words = line.split()
        if not words or words[0].startswith("="):
            continue
        if words[0] == "DCU" and "AvgPwr" in words:
            columns = words
            continue
        if columns is None or not words[0].isdigit() or len(words) < len(columns):
            continue
        row = dict(zip(columns, words, strict=False))
        share = _number(row.get("DCU%", ""))
        samples.append(
            DeviceSample(
                int(words[0]),
                _number(row.get("AvgPwr", "")),
                None if share is None else share / 100.0,
            )
        )
    return samples


def run_tool(argv: Sequence[str]) -> str:
    """A tool's stdout (raises OSError or CalledProcessError when it cannot answer)."""
    done = subprocess.run(
        list(argv), capture_output=True, text=True, check=True, timeout=TOOL_TIMEOUT_S
    )
    return done.stdout


@dataclass(frozen=True)
class _Tool:
    label: str  # as the error names it
    argv: tuple[str, ...]
    parse: Callable[[str], list[DeviceSample]]


_NPU_SMI = _Tool("npu-smi", ("npu-smi", "info"), parse_npu_smi)
_HY_SMI = _Tool("hy-smi", ("hy-smi",), parse_hy_smi)


class _ToolMeter:
    """A meter over a command-line tool that prints every device's power: sampled sessions."""

    def __init__(self, tool: _Tool, run: Runner | None, clock: Clock) -> None:
        self._tool = tool
        self._run = run
        self._clock = clock
        self.name = tool.label

    def open(self, devices: Sequence[str]) -> EnergySession | None:
        run = self._run
        if run is None:
            if shutil.which(self._tool.argv[0]) is None:
                return None
            run = run_tool
        try:
            first = self._tool.parse(run(self._tool.argv))
        except (OSError, subprocess.SubprocessError):
            return None
        if not first:
            return None
        known = {s.device for s in first}
        wanted = []
        for device in devices:
            if not device.isdigit() or int(device) not in known:
                raise DeviceNotFound(device, self._tool.label, len(known))
            wanted.append(int(device))
        session = _ToolSession(self._tool, run, self._clock, wanted)
        session.take(first)
        return session


class _ToolSession:
    sampled = True

    def __init__(self, tool: _Tool, run: Runner, clock: Clock, devices: list[int]) -> None:
        self._tool = tool
        self._run = run
        self._clock = clock
        self._devices = devices
        self._integrator = _Integrator(len(devices))
        self._last: Reading | None = None

    def take(self, samples: Sequence[DeviceSample]) -> Reading:
        by_device = {s.device: s for s in samples}
        at_s = self._clock()
        rows = [by_device.get(d) for d in self._devices]
        joules = self._integrator.add(at_s, [None if r is None else r.power_w for r in rows])
        shares = tuple(None if r is None else r.utilisation for r in rows)
        self._last = Reading(joules, shares, at_s)
        return self._last

    def read(self) -> Reading:
        try:
            return self.take(self._tool.parse(self._run(self._tool.argv)))
        except (OSError, subprocess.SubprocessError):
            if self._last is None:
                raise
            return self._last  # the tool missed this sample: integrate across the gap later

    def close(self) -> None:
        return None


class AscendMeter(_ToolMeter):
    """Huawei Ascend NPUs through `npu-smi info` (sampled). `run` replaces the tool (tests)."""

    def __init__(self, run: Runner | None = None, clock: Clock = time.monotonic) -> None:
        super().__init__(_NPU_SMI, run, clock)


class HygonMeter(_ToolMeter):
    """Hygon DCUs through `hy-smi` (sampled). `run` replaces the tool (tests)."""

    def __init__(self, run: Runner | None = None, clock: Clock = time.monotonic) -> None:
        super().__init__(_HY_SMI, run, clock)


class FirstOf:
    """The first of several meters that opens a session measures (a host's GPUs may be
    NVIDIA's or Hygon's: NVML, then `hy-smi`)."""

    def __init__(self, *meters: EnergyMeter) -> None:
        self._meters = meters
        self.name = "+".join(m.name for m in meters)

    def open(self, devices: Sequence[str]) -> EnergySession | None:
        for meter in self._meters:
            session = meter.open(devices)
            if session is not None:
                return session
        return None


def host_meters() -> dict[str, EnergyMeter]:
    """The meters an agent uses by accelerator kind when it is given none: `gpu` NVML then
    `hy-smi`, `npu` `npu-smi`. Nothing is imported or run until a session is opened."""
    return {"gpu": FirstOf(NvmlMeter(), HygonMeter()), "npu": AscendMeter()}
