"""The suanli error hierarchy.

Every error the core raises is a `SuanliError` that carries the offending data as fields and a
one-line bilingual message (English, then 中文) that names the value and what would be accepted.
Edges (the CLI now, the HTTP API later) map these to exit codes or status codes in one place and
never show a traceback for them. Invariant: constructing an error has no side effects.
"""

from __future__ import annotations

from collections.abc import Sequence


class SuanliError(Exception):
    """Base class: a user-facing, one-line, bilingual error with structured fields."""

    def __init__(self, message_en: str, message_zh: str) -> None:
        super().__init__(message_en)
        self.message_en = message_en
        self.message_zh = message_zh

    def one_line(self) -> str:
        """English and Chinese on one line, for a terminal or a log."""
        return f"{self.message_en} / {self.message_zh}"


def _quoted(items: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(f"'{item}'" for item in items[:limit])
    more = len(items) - limit
    return shown + (f" (+{more} more)" if more > 0 else "")


class InvalidValue(SuanliError):
    """A field holds a value outside its domain (negative work, PUE below 1, ...)."""

    def __init__(self, field: str, value: object, expected: str, expected_zh: str) -> None:
        self.field = field
        self.value = value
        self.expected = expected
        super().__init__(
            f"invalid {field}={value!r}: expected {expected}",
            f"{field} 的值 {value!r} 无效：应为{expected_zh}",
        )


class UnknownName(SuanliError):
    """A name (device, site, place, precision...) that matches nothing, with the closest ones."""

    kind_en = "name"
    kind_zh = "名称"
    listing_en = ""  # where to find the accepted names, when none is close
    listing_zh = ""

    def __init__(self, query: str, suggestions: Sequence[str], *, ambiguous: bool = False) -> None:
        self.query = query
        self.suggestions = list(suggestions)
        self.ambiguous = ambiguous
        if ambiguous:
            head, head_zh = f"ambiguous {self.kind_en}", f"{self.kind_zh}名称有歧义"
            hint = f"it matches {_quoted(self.suggestions)}; name one of them"
            hint_zh = f"匹配到 {_quoted(self.suggestions)}，请指明其一"
        else:
            head, head_zh = f"unknown {self.kind_en}", f"未知{self.kind_zh}"
            hint = f"closest known: {_quoted(self.suggestions)}" if self.suggestions else ""
            hint_zh = f"最接近的：{_quoted(self.suggestions)}" if self.suggestions else ""
            hint = hint or self.listing_en
            hint_zh = hint_zh or self.listing_zh
        super().__init__(
            f"{head} '{query}'" + (f"; {hint}" if hint else ""),
            f"{head_zh}“{query}”" + (f"；{hint_zh}" if hint_zh else ""),
        )


class UnknownDevice(UnknownName):
    kind_en = "device"
    kind_zh = "设备"
    listing_en = "no close match; list the known devices with 'suanli devices'"
    listing_zh = "没有相近的名称；用 'suanli devices' 查看全部设备"


class UnknownSite(UnknownName):
    kind_en = "site"
    kind_zh = "站点"


class UnknownZone(UnknownName):
    kind_en = "zone"
    kind_zh = "区域"
    listing_en = "use a hub id (JJJ, YRD...), a cluster id or a province, in Chinese or pinyin"
    listing_zh = "请使用枢纽 id（JJJ、YRD 等）、集群 id 或省份（中文或拼音）"


class UnknownPlace(UnknownName):
    kind_en = "place"
    kind_zh = "地点"
    listing_en = "use a province, a provincial capital or a cluster id, in Chinese or pinyin"
    listing_zh = "请使用省份、省会城市或集群 id（中文或拼音）"


class UnsupportedPrecision(SuanliError):
    """A device has no published throughput for the asked precision (nor any wider one)."""

    def __init__(
        self, device: str, precision: str, available: Sequence[str], why: str, why_zh: str
    ) -> None:
        self.device = device
        self.precision = precision
        self.available = list(available)
        offer = ", ".join(self.available) if self.available else "none (no published figure)"
        offer_zh = ", ".join(self.available) if self.available else "无（没有公开数据）"
        super().__init__(
            f"device '{device}' has no {precision} figure ({why}); "
            f"precisions with a figure: {offer}",
            f"设备“{device}”没有 {precision} 算力数据（{why_zh}）；有数据的精度：{offer_zh}",
        )


class MissingFactor(SuanliError):
    """A site factor (grid emission factor, price) cannot be resolved from the shipped data."""

    def __init__(self, factor: str, place: str, fix: str, fix_zh: str) -> None:
        self.factor = factor
        self.place = place
        super().__init__(
            f"no {factor} for '{place}' in the shipped data; {fix}",
            f"内置数据中没有“{place}”的 {factor}；{fix_zh}",
        )


class FieldError(InvalidValue):
    """A field whose value failed a deeper check (an unknown name, say): that check's message,
    prefixed with the field."""

    def __init__(self, field: str, value: object, cause: SuanliError) -> None:
        self.field = field
        self.value = value
        self.expected = cause.message_en
        SuanliError.__init__(
            self,
            f"invalid {field}={value!r}: {cause.message_en}",
            f"{field} 的值 {value!r} 无效：{cause.message_zh}",
        )


class UnknownSeries(UnknownName):
    kind_en = "series"
    kind_zh = "序列"
    listing_en = "list the shipped series with 'suanli forecast series'"
    listing_zh = "用 'suanli forecast series' 查看全部序列"


class MissingAsset(SuanliError):
    """A front-end file the package installs from npm (ignored by git, so absent from a fresh
    checkout) is not there: the report's chart library or map, say."""

    def __init__(self, path: str, installer: str) -> None:
        self.path = path
        self.installer = installer
        super().__init__(
            f"missing {path}: run {installer} to install the charts' front-end files",
            f"缺少 {path}：请运行 {installer} 安装图表所需的前端文件",
        )
