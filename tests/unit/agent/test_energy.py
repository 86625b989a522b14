"""Measured energy: the NVML meter against a recorded fake of the library, and the `npu-smi` /
`hy-smi` parsers against fixtures under tests/data/energy/.

The fixtures are hand-written from the tools' documented output formats, not captured from real
hardware (none was available); see tests/data/energy/README.md. `RecordedNvml` replays a
recorded sequence of NVML answers (energy counter in mJ, power in mW, utilisation in percent)
and records the calls it was asked, so a test states exactly what the driver said.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from suanli.agent.energy import (
    JOULES_PER_KWH,
    AscendMeter,
    DeviceNotFound,
    FirstOf,
    HygonMeter,
    NvmlMeter,
    Reading,
    measured,
    parse_hy_smi,
    parse_npu_smi,
)

DATA = Path(__file__).resolve().parents[2] / "data" / "energy"


class NVMLError(Exception):
    """As `pynvml.NVMLError`."""


@dataclass(frozen=True)
class Rates:
    gpu: int
    memory: int = 0


class RecordedNvml:
    """A `pynvml`-like module replaying recorded answers, one per call, per device.

    `energy_mj[i]`, `power_mw[i]`, `util_pct[i]` are the successive answers of device i; None
    instead of a list means the call is not supported there (raises NVMLError). `init_fails`
    makes `nvmlInit` raise, as without a driver."""

    NVMLError = NVMLError

    def __init__(
        self,
        energy_mj: Sequence[Sequence[int] | None] = (),
        power_mw: Sequence[Sequence[int] | None] = (),
        util_pct: Sequence[Sequence[int]] = (),
        *,
        uuids: Sequence[str] = (),
        init_fails: bool = False,
    ) -> None:
        self._energy = [None if e is None else iter(e) for e in energy_mj]
        self._power = [None if p is None else iter(p) for p in power_mw]
        self._util = [iter(u) for u in util_pct]
        self._uuids = list(uuids)
        self._init_fails = init_fails
        self.calls: list[str] = []

    def _next(self, series: list[Iterator[int] | None], handle: int) -> int:
        it = series[handle] if handle < len(series) else None
        if it is None:
            raise NVMLError("Not Supported")
        return next(it)

    def nvmlInit(self) -> None:
        self.calls.append("init")
        if self._init_fails:
            raise NVMLError("Driver Not Loaded")

    def nvmlShutdown(self) -> None:
        self.calls.append("shutdown")

    def nvmlDeviceGetCount(self) -> int:
        return max(len(self._energy), len(self._power), len(self._util))

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> int:
        if uuid not in self._uuids:
            raise NVMLError("Not Found")
        return self._uuids.index(uuid)

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: int) -> int:
        self.calls.append(f"energy {handle}")
        return self._next(self._energy, handle)

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:
        self.calls.append(f"power {handle}")
        return self._next(self._power, handle)

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> Rates:
        return Rates(self._next(list(self._util), handle))


def ticking(*times: float) -> Any:
    it = iter(times)
    return lambda: next(it)


def test_the_measured_kwh_of_a_task_is_the_energy_counter_difference() -> None:
    # two GPUs with energy counters (mJ since the driver loaded): at open, at start, at end
    nvml = RecordedNvml(
        energy_mj=[[5_000_000, 5_000_000, 8_600_000], [1_000_000, 1_000_000, 4_600_000]],
        util_pct=[[0, 100], [0, 60]],
    )
    session = NvmlMeter(nvml, clock=ticking(0.0, 40.0)).open(["0", "1"])
    assert session is not None and not session.sampled
    readings = [session.read(), session.read()]
    session.close()
    assert readings[0].energy_j == (0.0, 0.0)
    assert readings[1].energy_j == (3600.0, 3600.0)
    got = measured(readings)
    assert got is not None
    assert got.energy_kwh == pytest.approx(7200.0 / JOULES_PER_KWH)  # 2 Wh
    assert got.utilisation == pytest.approx((1.0 + 0.6) / 2)  # the reads after the first
    assert nvml.calls[0] == "init" and nvml.calls[-1] == "shutdown"
    assert not any(c.startswith("power") for c in nvml.calls)


def test_without_an_energy_counter_the_power_samples_are_integrated() -> None:
    # 100 W, then 300 W 10 s later, then 300 W 20 s after that: (100+300)/2*10 + 300*20 J
    nvml = RecordedNvml(
        energy_mj=[None], power_mw=[[100_000, 300_000, 300_000]], util_pct=[[80, 80]]
    )
    session = NvmlMeter(nvml, clock=ticking(0.0, 10.0, 30.0)).open(["0"])
    assert session is not None and session.sampled
    readings = [session.read(), session.read()]
    assert readings[0].energy_j == (2000.0,)
    assert readings[1].energy_j == (2000.0 + 6000.0,)
    got = measured([Reading((0.0,), (None,), 0.0), *readings])  # from the sample at open
    assert got is not None and got.energy_kwh == pytest.approx(8000.0 / JOULES_PER_KWH)


def test_a_gpu_named_by_uuid_is_measured() -> None:
    nvml = RecordedNvml(
        energy_mj=[[0, 0], [0, 36_000]], util_pct=[[0], [10]], uuids=["GPU-a", "GPU-b"]
    )
    session = NvmlMeter(nvml, clock=ticking(0.0, 1.0)).open(["GPU-b"])
    assert session is not None
    assert session.read().energy_j == (36.0,)


def test_no_nvml_means_no_measurement(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("suanli.agent.energy._import_pynvml", lambda: None)
    assert NvmlMeter().open(["0"]) is None


def test_nvml_that_fails_to_initialise_means_no_measurement() -> None:
    assert NvmlMeter(RecordedNvml(init_fails=True)).open(["0"]) is None


def test_a_device_index_out_of_range_is_a_clear_error() -> None:
    nvml = RecordedNvml(energy_mj=[[0], [0]], util_pct=[[0], [0]])
    with pytest.raises(DeviceNotFound) as caught:
        NvmlMeter(nvml).open(["2"])
    assert caught.value.field == "devices"
    assert "below 2" in caught.value.one_line()
    assert nvml.calls[-1] == "shutdown"  # NVML is released


def test_fewer_than_two_readings_measure_nothing() -> None:
    assert measured([Reading((1.0,), (0.5,), 0.0)]) is None


# -- Ascend npu-smi and Hygon hy-smi -------------------------------------------------------------


def test_npu_smi_910b_gives_power_and_aicore_per_chip() -> None:
    samples = parse_npu_smi((DATA / "npu_smi_910b.txt").read_text())
    assert [(s.device, s.power_w, s.utilisation) for s in samples] == [
        (0, 93.6, 0.0),
        (1, 312.5, 0.87),
        (2, None, 0.0),  # NA
    ]


def test_npu_smi_with_a_device_column_uses_it() -> None:
    samples = parse_npu_smi((DATA / "npu_smi_310p_duo.txt").read_text())
    assert [(s.device, s.power_w, s.utilisation) for s in samples] == [
        (0, 68.0, 0.40),
        (1, 66.0, 0.20),
    ]


def test_hy_smi_gives_average_power_and_dcu_share() -> None:
    samples = parse_hy_smi((DATA / "hy_smi.txt").read_text())
    assert [(s.device, s.power_w, s.utilisation) for s in samples] == [
        (0, 126.0, 0.99),
        (1, 31.0, 0.0),
        (2, None, None),
    ]


def replaying(*outputs: str) -> Any:
    it = iter(outputs)

    def run(argv: Sequence[str]) -> str:
        return next(it)

    return run


def test_ascend_power_is_sampled_and_integrated() -> None:
    text = (DATA / "npu_smi_910b.txt").read_text()
    low = text.replace("312.5", "100.0")
    meter = AscendMeter(run=replaying(low, text, text), clock=ticking(0.0, 10.0, 20.0))
    session = meter.open(["1"])
    assert session is not None and session.sampled
    first = session.read()
    last = session.read()
    # (100 + 312.5)/2 * 10 s, then 312.5 * 10 s
    assert first.energy_j == (pytest.approx(2062.5),)
    assert last.energy_j == (pytest.approx(2062.5 + 3125.0),)
    assert last.utilisation == (0.87,)


def test_hygon_device_out_of_range_is_a_clear_error() -> None:
    meter = HygonMeter(run=replaying((DATA / "hy_smi.txt").read_text()), clock=ticking(0.0))
    with pytest.raises(DeviceNotFound, match="hy-smi"):
        meter.open(["7"])


def test_a_missing_tool_measures_nothing_and_the_next_meter_is_tried() -> None:
    def absent(argv: Sequence[str]) -> str:
        raise FileNotFoundError(argv[0])

    nvml = RecordedNvml(energy_mj=[[0, 3_600_000]], util_pct=[[100]])
    meter = FirstOf(HygonMeter(run=absent), NvmlMeter(nvml, clock=ticking(0.0, 1.0)))
    session = meter.open(["0"])
    assert session is not None and session.read().energy_j == (3600.0,)
    assert HygonMeter(run=absent).open(["0"]) is None
