"""Device profiles from the shipped data, and forgiving name lookup."""

from __future__ import annotations

import csv
from importlib import resources

import pytest

from suanli.errors import UnknownDevice
from suanli.metering import DeviceKind, Precision, all_devices, find_device


def _rows(name: str) -> list[dict[str, str]]:
    text = resources.files("suanli.metering").joinpath("data", name).read_text("utf-8")
    return list(csv.DictReader(text.splitlines()))


def test_one_profile_per_data_row_with_source_and_quality() -> None:
    rows = _rows("accelerators.csv") + _rows("cpus.csv")
    profiles = all_devices()
    assert len(rows) == 33
    assert len(profiles) == len(rows) + 1  # + the generic CPU core (an estimate)
    assert profiles[-1].id == "generic-cpu-core" and profiles[-1].unverified
    assert len({p.id for p in profiles}) == len(profiles)
    for profile in profiles:
        assert profile.source and profile.quality, profile.name


def test_empty_cells_are_absent_figures_not_zero() -> None:
    z100 = find_device("Hygon DCU Z100")
    assert z100.peak_flops == {}
    assert z100.tdp_w is None
    assert Precision.FP64 not in find_device("T4").peak_flops
    for profile in all_devices():
        assert all(v > 0 for v in profile.peak_flops.values())


def test_device_kinds() -> None:
    assert find_device("H800").kind is DeviceKind.GPU
    assert find_device("Ascend 910B").kind is DeviceKind.NPU
    assert find_device("MLU370-X8").kind is DeviceKind.NPU
    assert find_device("Kunpeng 920").kind is DeviceKind.CPU


def test_cpu_peaks_are_per_socket_gflops() -> None:
    xeon = find_device("Xeon Platinum 8380")
    assert xeon.peak_flops[Precision.FP64] == pytest.approx(2944e9)  # 40 x 2.3 x 32
    assert xeon.peak_flops[Precision.FP32] == pytest.approx(5888e9)


def test_unverified_rows_are_flagged() -> None:
    assert find_device("MLU370-X4").unverified
    assert find_device("Ascend 910B").unverified  # "reported - conflicting"
    assert not find_device("A100").unverified


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("h800", "NVIDIA H800 SXM5 80GB"),
        ("H800 SXM5", "NVIDIA H800 SXM5 80GB"),
        ("NVIDIA H800", "NVIDIA H800 SXM5 80GB"),
        ("nvidia-h800-sxm5-80gb", "NVIDIA H800 SXM5 80GB"),
        ("英伟达 H800", "NVIDIA H800 SXM5 80GB"),
        ("H800 PCIe", "NVIDIA H800 PCIe 80GB"),
        ("a100 80gb", "NVIDIA A100 SXM4 80GB"),
        ("RTX 4090", "NVIDIA GeForce RTX 4090 24GB"),
        ("昇腾910B", "Huawei Ascend 910B Atlas 800T A2 class (SKU varies B1-B4)"),
        ("深算一号", "Hygon DCU Z100 (深算一号) PCIe"),
        ("xeon 8380", "Intel Xeon Platinum 8380"),
        ("Kunpeng 920", "Huawei Kunpeng 920-7260"),
    ],
)
def test_names_match_forgivingly(query: str, expected: str) -> None:
    assert find_device(query).name == expected


def test_unknown_name_lists_the_closest_known() -> None:
    with pytest.raises(UnknownDevice) as caught:
        find_device("h900")
    assert caught.value.suggestions[0] in {"NVIDIA H800 SXM5 80GB", "NVIDIA H100 SXM5 80GB"}
    assert "h900" in caught.value.message_en


def test_ambiguous_name_asks_to_choose() -> None:
    with pytest.raises(UnknownDevice) as caught:
        find_device("Xeon Platinum")
    assert caught.value.ambiguous
    assert set(caught.value.suggestions) == {
        "Intel Xeon Platinum 8380",
        "Intel Xeon Platinum 8480+",
    }
