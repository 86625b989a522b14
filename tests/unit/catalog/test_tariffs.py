"""Time-of-use schedules: multipliers hand-checked against the shipped CSV, and rule invariants."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from suanli.catalog.tariffs import (
    TouSchedule,
    schedule_from_rows,
    tou_provinces,
    tou_schedule,
)
from suanli.datafiles import read_rows


def _schedule(province_zh: str) -> TouSchedule:
    found = tou_schedule(province_zh)
    assert found is not None, province_zh
    return found


def _rows(province_zh: str) -> list[dict[str, str]]:
    return [
        r for r in read_rows("suanli.catalog", "tou_tariffs.csv") if r["province_zh"] == province_zh
    ]


def a_row(period: str, hours: str, multiplier: str, **rest: str) -> dict[str, str]:
    """A synthetic tariff row; `months`, `year`, `quality`, `source` may be overridden."""
    row = {
        "province_zh": "测试",
        "period": period,
        "hours": hours,
        "multiplier_vs_flat": multiplier,
        "year": "2024",
        "source": "test",
        "quality": "high",
        "months": "1-12",
    }
    row.update(rest)
    return row


@pytest.mark.parametrize(
    ("province", "month", "hour", "expected"),
    [
        ("广东", 1, 3, 0.38),  # valley 0-8
        ("广东", 1, 10, 1.7),  # peak 10-12
        ("广东", 1, 11, 1.7),  # no critical outside 7-9
        ("广东", 8, 11, 2.125),  # critical 11-12 in 7-9
        ("广东", 8, 9, 1.0),  # flat 8-10
        ("浙江", 3, 17, 1.85),  # 2026 peak 16-23 (the superseded 2024 rule had 17-24 flat)
        ("浙江", 7, 19, 2.05),  # 2026 critical 18-22 in 1,7,8,12
        ("江苏", 7, 19.5, 2.16),  # critical 19.5-21.5 (half-hour window)
        ("江苏", 7, 19.0, 1.8),  # peak 14-22
        ("江苏", 7, 21.5, 1.8),  # the critical window ends at 21:30
        ("北京", 7, 16, 1.92),  # critical 16-17 overrides a flat hour, not only peak ones
        ("北京", 9, 16, 1.0),  # the same hour is flat outside 7-8
        ("上海", 7, 12, 2.25),  # critical 12-14 in 7-8
        ("上海", 9, 12, 1.8),  # 9 has the summer peak but no critical
        ("上海", 3, 23, 0.5),  # the spring/autumn valley is 0.5, not 0.4
        ("内蒙古", 3, 12, 0.48),  # Mengxi windy-season valley 11-16
        ("内蒙古", 7, 13, 0.44),  # Mengxi summer valley 11-16 (deep valley not modelled)
        ("内蒙古", 7, 20, 1.848),  # Mengxi critical 19-21
        ("内蒙古（蒙东）", 7, 19, 2.016),  # the exact name still reaches Mengdong
        ("四川", 7, 13, 1.92),  # critical 13-14 in 7-8
        ("四川", 9, 13, 1.6),  # peak 11-18 in 7-9
    ],
)
def test_hand_checked_multipliers(province: str, month: int, hour: float, expected: float) -> None:
    assert _schedule(province).at(month, hour) == pytest.approx(expected)


def test_zhejiang_uses_the_2026_rules_not_the_superseded_2024_ones() -> None:
    zhejiang = _schedule("浙江")
    assert zhejiang.year == 2026
    assert not zhejiang.partial  # the 2024 rows have blank multipliers; none of them is used
    assert zhejiang.source.startswith("Zhejiang DRC notice signed 2026")
    assert "superseded 2026-07-01" not in zhejiang.source  # the 2024 rows' source


def test_jiangsu_half_hour_critical_window_averages_into_the_hour() -> None:
    jiangsu = _schedule("江苏")
    assert jiangsu.multipliers[6, 38] == pytest.approx(1.8)  # 19:00-19:30, peak
    assert jiangsu.multipliers[6, 39] == pytest.approx(2.16)  # 19:30-20:00, critical
    assert jiangsu.hourly(7)[19] == pytest.approx((1.8 + 2.16) / 2)
    assert jiangsu.hourly(7)[20] == pytest.approx(2.16)
    assert jiangsu.quality == "low"  # the critical rows are secondary-source only


@pytest.mark.parametrize("province", ["宁夏", "甘肃"])
def test_blank_multipliers_leave_flat_and_mark_the_schedule_partial(province: str) -> None:
    schedule = _schedule(province)
    assert schedule.partial
    assert (schedule.multipliers == 1.0).all()


def test_plain_inner_mongolia_is_the_mengxi_grid() -> None:
    plain = _schedule("内蒙古")
    assert plain.province_zh == "内蒙古（蒙西）"
    assert plain is tou_schedule("内蒙古（蒙西）")
    assert plain != tou_schedule("内蒙古（蒙东）")


def test_unknown_province_has_no_schedule() -> None:
    assert tou_schedule("西藏") is None
    assert tou_schedule("Guangdong") is None  # Chinese names only, as in the file


def test_provinces_are_the_file_names() -> None:
    assert tou_provinces() == (
        "广东",
        "上海",
        "北京",
        "江苏",
        "浙江",
        "内蒙古（蒙西）",
        "内蒙古（蒙东）",
        "宁夏",
        "贵州",
        "甘肃",
        "四川",
    )


@pytest.mark.parametrize("province", tou_provinces())
def test_every_slot_is_positive_and_a_multiplier_of_the_province_rows(province: str) -> None:
    schedule = _schedule(province)
    assert schedule.multipliers.shape == (12, 48)
    assert (schedule.multipliers > 0).all()
    allowed = {1.0} | {
        float(r["multiplier_vs_flat"]) for r in _rows(province) if r["multiplier_vs_flat"]
    }
    for month in range(12):
        assert set(schedule.multipliers[month].tolist()) <= allowed, (province, month + 1)


def _applies(row: dict[str, str]) -> npt.NDArray[np.bool_]:
    """(12, 48) mask of where `row` applies: mark it with a multiplier found nowhere else."""
    marked = dict(row, multiplier_vs_flat="7", period="flat")
    mask: npt.NDArray[np.bool_] = schedule_from_rows(row["province_zh"], [marked]).multipliers == 7
    return mask


@pytest.mark.parametrize("province", tou_provinces())
def test_shipped_windows_cover_every_day_and_only_critical_overlaps(province: str) -> None:
    # Critical windows sit inside peak (广东) or flat (北京 16-17) or are carved out of peak (浙江).
    rows = _rows(province)
    masks = [_applies(r) for r in rows]
    for month in range(12):
        latest = max(int(r["year"]) for r, m in zip(rows, masks, strict=True) if m[month].any())
        used = [(r, m[month]) for r, m in zip(rows, masks, strict=True) if int(r["year"]) == latest]
        ordinary = sum(m.astype(int) for r, m in used if r["period"] != "critical")
        every = sum(m.astype(int) for _, m in used)
        assert (ordinary <= 1).all() and (every >= 1).all(), (province, month + 1)


def test_the_array_is_read_only_and_the_schedule_hashable() -> None:
    guangdong = _schedule("广东")
    with pytest.raises(ValueError, match="read-only"):
        guangdong.multipliers[0, 0] = 9.0
    assert len({guangdong, _schedule("广东"), _schedule("贵州")}) == 2


def test_equality_covers_the_multipliers() -> None:
    low = schedule_from_rows("测试", [a_row("valley", "0-8", "0.4")])
    lower = schedule_from_rows("测试", [a_row("valley", "0-8", "0.3")])
    assert low != lower
    assert low == schedule_from_rows("测试", [a_row("valley", "0-8", "0.4")])


def test_the_latest_year_wins_month_by_month() -> None:
    schedule = schedule_from_rows(
        "测试",
        [
            a_row("peak", "8-10", "1.5", year="2023"),
            a_row("peak", "9-11", "1.6", year="2025", months="7-8", quality="low"),
        ],
    )
    assert schedule.at(1, 8) == 1.5 and schedule.at(1, 10) == 1.0
    assert schedule.at(7, 8) == 1.0 and schedule.at(7, 10) == 1.6  # 2023 row unused in 7-8
    assert (schedule.year, schedule.quality) == (2025, "low")


def test_a_blank_critical_row_keeps_the_peak_and_marks_partial() -> None:
    schedule = schedule_from_rows(
        "测试", [a_row("critical", "9-10", ""), a_row("peak", "8-11", "1.6")]
    )
    assert schedule.partial
    assert schedule.at(5, 9) == 1.6


def test_critical_applies_last_whatever_the_row_order() -> None:
    schedule = schedule_from_rows(
        "测试",
        [
            a_row("critical", "9-10", "2.0", months="7"),
            a_row("peak", "8-11", "1.6"),
            a_row("valley", "0-9", "0.4"),
        ],
    )
    assert schedule.hourly(7)[8:11].tolist() == pytest.approx([1.6, 2.0, 1.6])
    assert schedule.at(6, 9.5) == 1.6
    assert schedule.at(6, 8) == 1.6  # peak is applied after valley where they overlap


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"hours": "10-"}, "malformed hours"),
        ({"hours": "8-6"}, "malformed hours"),
        ({"hours": "22-6"}, "across midnight"),
        ({"hours": "9.25-10"}, "malformed hours"),
        ({"hours": "0-25"}, "malformed hours"),
        ({"hours": ""}, "malformed hours"),
        ({"months": "0-3"}, "malformed months"),
        ({"months": "13"}, "malformed months"),
        ({"months": "11-2"}, "malformed months"),
        ({"months": "summer"}, "malformed months"),
        ({"multiplier_vs_flat": "1.6[U]"}, "multiplier"),
        ({"multiplier_vs_flat": "0"}, "multiplier"),
        ({"year": "2024a"}, "malformed year"),
        ({"period": "shoulder"}, "unknown period"),
        ({"quality": "good"}, "unknown quality"),
    ],
)
def test_malformed_rows_name_the_row(change: dict[str, str], message: str) -> None:
    good = a_row("peak", "8-11", "1.6")
    with pytest.raises(ValueError, match=message) as raised:
        schedule_from_rows("测试", [good, {**good, **change}])
    assert "row 2 (测试" in str(raised.value)


def test_month_and_hour_are_checked() -> None:
    guangdong = _schedule("广东")
    for month in (0, 13):
        with pytest.raises(ValueError, match="month"):
            guangdong.hourly(month)
    for hour in (-0.5, 24.0, math.nan):
        with pytest.raises(ValueError, match="hour"):
            guangdong.at(1, hour)


@given(
    province=st.sampled_from(tou_provinces()),
    month=st.integers(1, 12),
    hour=st.floats(0, 24, exclude_max=True),
)
def test_at_reads_the_half_hour_slot_and_hourly_averages_it(
    province: str, month: int, hour: float
) -> None:
    schedule = _schedule(province)
    slot = math.floor(hour * 2)
    assert schedule.at(month, hour) == schedule.multipliers[month - 1, slot]
    pair = schedule.multipliers[month - 1, (slot // 2) * 2 : (slot // 2) * 2 + 2]
    assert schedule.hourly(month)[int(hour)] == pytest.approx(float(pair.mean()))
