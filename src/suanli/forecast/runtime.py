"""Run-time prediction (运行时长预测): how long a task will run, from the completed tasks like it.

`fit_runtime(history) -> RuntimeModel` learns from completed tasks (`CompletedTask`: the
features a platform task and a trace job both have, and the run time measured). For a new task
(`TaskFeatures`), `RuntimeModel.predict` gives a point estimate, the median run time of a group
of similar completed tasks, and an upper quantile (`level`, 0.8 by default), from the most
specific group in LEVELS that the task belongs to and that has at least `min_members` members;
it says which group that was and how many tasks it rested on. The groups, most specific first:
the task's owner with less and less of its request (requested duration, then workload class,
shape and latency tier, then device count and kind dropped), then the request without the
owner (requested duration, workload class, shape and latency tier dropped one by one, then
device count, then device kind), then all tasks. A level is used only for a task that has every
feature it names (an unknown owner is not a group of "unknown owners"), and only completed tasks
that have them count in it. When no group is large enough, a task that states a requested
duration is taken at its word; any other gets DEFAULT: the median and the `level` quantile of
Microsoft Philly's 83,152 job run times.

The upper quantile of a group of n run times is its ceil((n + 1) x level)-th smallest (the
conformal rank: for exchangeable run times it lies above a new one with probability at least
`level`); in a group of at most level / (1 - level) tasks (4 at 0.8) it is the longest.

`backtest_runtime(history)` replays a history in time order: every `every_s` it refits on the
tasks that had ended by then and predicts those submitted before the next refit, against the
naive forecast (the median and quantile of all tasks ended by then). `runtime_trace(name)` gives
the completed jobs of the public traces in `data/` (RUNTIME_TRACES; see data/SOURCES.md).

Why NumPy alone: grouped medians and order statistics are a sort and a few index operations,
and prediction is a binary search per level, so 100,000 tasks take a fraction of a second with
no new dependency. scikit-learn's gradient-boosted quantile trees or LightGBM would learn
interactions the fixed fallback order cannot, but would add a dependency, a training step to
tune and predictions that do not say which tasks they came from. pandas' groupby would give
the same medians, but prediction would still need a lookup per level, which `searchsorted` does
directly on arrays that mypy --strict can check.

Pure: no I/O except reading the shipped tables through `suanli.datafiles`; no clock.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import TypeGuard

import numpy as np

from suanli import checks
from suanli.datafiles import read_rows
from suanli.errors import InvalidValue

PACKAGE = "suanli.forecast"
LEVEL = 0.8
MIN_MEMBERS = 5
EVERY_S = 3600.0  # how often a backtest refits: hourly, as a model refreshed on the hour

# A task's features, as a platform task and a trace job both have them. `shape` is the rest of
# the request as a label (memory per device, a GPU share): any text built the same way for the
# history and the new tasks. `requested` is the requested duration to the nearest power of two
# seconds.
FEATURES = ("owner", "requested", "workload", "device_kind", "devices", "shape", "latency_tier")
REQUEST = ("workload", "device_kind", "devices", "shape", "latency_tier")
# The groups a prediction may come from, most specific first; () is all tasks.
LEVELS: tuple[tuple[str, ...], ...] = (
    ("owner", "requested", *REQUEST),
    ("owner", *REQUEST),
    ("owner", "device_kind", "devices"),
    ("owner",),
    ("requested", *REQUEST),
    REQUEST,
    ("device_kind", "devices", "shape", "latency_tier"),
    ("device_kind", "devices", "latency_tier"),
    ("device_kind", "devices"),
    ("device_kind",),
    (),
)
REQUESTED = len(LEVELS)  # basis: no group large enough, the task's requested duration
DEFAULT = len(LEVELS) + 1  # basis: no group large enough and no requested duration

RUNTIME_TRACES = {
    "openb": "Alibaba GPU trace v2023 openb, default pods (Weng et al., ATC'23)",
    "dlrm": "Alibaba DLRM serving trace v2025, instances (Yang et al., NSDI'25)",
}

FloatArray = np.ndarray
IntArray = np.ndarray


@dataclass(frozen=True, slots=True)
class TaskFeatures:
    """What is known of a task before it runs. None: not known (a trace names no owner)."""

    device_kind: str  # gpu | npu | cpu
    devices: int = 1
    owner: str | None = None
    workload: str | None = None  # training | inference | hpc | general
    latency_tier: str | None = None  # interactive | standard | batch
    shape: str | None = None
    requested_s: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CompletedTask(TaskFeatures):
    """A task that ran: its features, its run time, and when it was submitted and ended (a
    backtest orders by them; `end_s` None: submitted and started at once)."""

    runtime_s: float
    submit_s: float = 0.0
    end_s: float | None = None


@dataclass(frozen=True)
class RuntimePrediction:
    runtime_s: float  # the group's median run time
    upper_s: float  # its `level` quantile
    level: float
    basis: int  # an index into LEVELS, or REQUESTED, or DEFAULT
    group: str  # the group in words: "owner=alice, device_kind=gpu, devices=8"
    members: int  # completed tasks in the group (0 for REQUESTED and DEFAULT)


@dataclass(frozen=True)
class RuntimePredictions:
    """One prediction per task, as arrays in the order of the tasks."""

    runtime_s: FloatArray
    upper_s: FloatArray
    basis: IntArray
    members: IntArray
    level: float

    def __len__(self) -> int:
        return len(self.runtime_s)


def basis_name(basis: int) -> str:
    """A basis in words: the features of its level joined by '+' ('all tasks' for the last),
    'requested duration' or 'default'."""
    if basis == REQUESTED:
        return "requested duration"
    if basis == DEFAULT:
        return "default"
    return "+".join(LEVELS[basis]) or "all tasks"


def describe(task: TaskFeatures, basis: int) -> str:
    """The group a prediction for `task` came from, with the task's values."""
    if basis >= REQUESTED or not LEVELS[basis]:
        return basis_name(basis)
    return ", ".join(f"{name}={_value(task, name)}" for name in LEVELS[basis])


def _value(task: TaskFeatures, name: str) -> Hashable:
    if name == "requested":
        return None if task.requested_s is None else _octave(task.requested_s)
    value: Hashable = getattr(task, name)
    return value


def _octave(seconds: float) -> str:
    return f"~2^{round(math.log2(seconds))} s"


# --- Encoding: features to integer codes, groups to integer keys -----------------------------


def _column(tasks: Sequence[TaskFeatures], name: str, where: str) -> list[Hashable]:
    """The values of one feature, checked (each distinct value once): None or a non-empty
    string (owner, workload, shape, latency_tier); a device kind; a whole number >= 1
    (devices); None or a requested duration > 0, as its octave."""
    column: list[Hashable] = [
        t.requested_s if name == "requested" else getattr(t, name) for t in tasks
    ]
    for value in set(column):
        if name == "requested":
            ok = value is None or (_number(value) and math.isfinite(value) and value > 0)
            expected, expected_zh = "None or seconds > 0", "None 或大于 0 的秒数"
        elif name == "devices":
            ok = _whole(value) and value >= 1
            expected, expected_zh = "a whole number >= 1", "不小于 1 的整数"
        elif name == "device_kind":
            ok = isinstance(value, str) and bool(value)
            expected, expected_zh = "a device kind (gpu, npu, cpu)", "设备类型（gpu、npu、cpu）"
        else:
            ok = value is None or (isinstance(value, str) and bool(value))
            expected, expected_zh = "None or a non-empty string", "None 或非空字符串"
        if not ok:
            i = column.index(value)
            field = "requested_s" if name == "requested" else name
            raise InvalidValue(f"{where}[{i}].{field}", value, expected, expected_zh)
    if name == "requested":
        octaves: dict[Hashable, Hashable] = {v: _octave(v) for v in set(column) if _number(v)}
        return [octaves.get(v) for v in column]
    return column


def _number(value: object) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _whole(value: object) -> TypeGuard[int]:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _codes(column: list[Hashable], vocabulary: dict[Hashable, int]) -> IntArray:
    """Codes 1..V for the vocabulary's values, 0 for a value it lacks, -1 for None."""
    known = {**vocabulary, None: -1}
    return np.fromiter(map(known.get, column, repeat(0)), dtype=np.int64, count=len(column))


@dataclass(frozen=True)
class _Encoder:
    """Vocabularies (feature value -> code 1..V) and, per level, the sorted keys that name its
    groups: a group's key is built feature by feature, key x (V + 1) + code, each step
    renumbered to the rank among the keys seen (so keys stay below the number of tasks)."""

    vocabularies: dict[str, dict[Hashable, int]]
    steps: tuple[tuple[IntArray, ...], ...]

    @classmethod
    def build(cls, columns: dict[str, list[Hashable]]) -> _Encoder:
        vocabularies = {
            name: {v: i for i, v in enumerate(_distinct(column), start=1)}
            for name, column in columns.items()
        }
        codes = {name: _codes(columns[name], vocabularies[name]) for name in FEATURES}
        steps = []
        for features in LEVELS:
            known = np.ones(len(columns["device_kind"]), dtype=bool)
            for name in features:
                known &= codes[name] > 0
            key = np.zeros(int(known.sum()), dtype=np.int64)
            level_steps = []
            for name in features:
                combined = key * (len(vocabularies[name]) + 1) + codes[name][known]
                unique, key = np.unique(combined, return_inverse=True)
                level_steps.append(unique)
            steps.append(tuple(level_steps))
        return cls(vocabularies, tuple(steps))

    def groups(self, level: int) -> int:
        return len(self.steps[level][-1]) if self.steps[level] else 1

    def keys(self, columns: dict[str, list[Hashable]]) -> IntArray:
        """(levels, tasks): each task's group at each level; -1 where it has none (a feature
        unknown, or a combination no fitted task had)."""
        codes = {name: _codes(columns[name], self.vocabularies[name]) for name in FEATURES}
        count = len(columns["device_kind"])
        out = np.full((len(LEVELS), count), -1, dtype=np.int64)
        for level, features in enumerate(LEVELS):
            known = np.ones(count, dtype=bool)
            key = np.zeros(count, dtype=np.int64)
            for name, unique in zip(features, self.steps[level], strict=True):
                code = codes[name]
                known &= code > 0
                if len(unique) == 0:
                    known[:] = False
                    break
                combined = key * (len(self.vocabularies[name]) + 1) + code
                place = np.minimum(np.searchsorted(unique, combined), len(unique) - 1)
                known &= unique[place] == combined
                key = place
            out[level, known] = key[known]
        return out


def _distinct(column: Iterable[Hashable]) -> list[Hashable]:
    """The values other than None, in order of first appearance (deterministic codes)."""
    return [v for v in dict.fromkeys(column) if v is not None]


def _columns(tasks: Sequence[TaskFeatures], where: str) -> dict[str, list[Hashable]]:
    return {name: _column(tasks, name, where) for name in FEATURES}


# --- Fitting: per level and group, the count, median and upper quantile ----------------------


@dataclass(frozen=True)
class _Table:
    counts: IntArray
    median: FloatArray
    upper: FloatArray


def _tables(keys: IntArray, runtime: FloatArray, groups: list[int], level: float) -> list[_Table]:
    """For each level, each group's size, median and ceil((n + 1) x level)-th smallest run time,
    from the tasks whose keys are given (sorted by run time once; then, per level, a stable
    sort by group keeps each group's run times in order)."""
    by_runtime = np.argsort(runtime, kind="stable")
    ordered = runtime[by_runtime]
    tables = []
    for row, size in zip(keys[:, by_runtime], groups, strict=True):
        member = row >= 0
        key = row[member]
        values = ordered[member][np.argsort(key, kind="stable")]
        counts = np.bincount(key, minlength=size)
        starts = np.cumsum(counts) - counts
        last = max(len(values) - 1, 0)
        filled = counts > 0
        low = np.minimum(starts + (counts - 1) // 2, last)
        high = np.minimum(starts + counts // 2, last)
        rank = np.minimum(counts, np.ceil((counts + 1) * level).astype(np.int64))
        top = np.minimum(starts + np.maximum(rank, 1) - 1, last)
        if len(values) == 0:
            values = np.zeros(1)
        median = np.where(filled, (values[low] + values[high]) / 2, np.nan)
        upper = np.where(filled, values[top], np.nan)
        tables.append(_Table(counts, median, upper))
    return tables


def _default(level: float) -> tuple[float, float]:
    """The median and the `level` quantile of Philly's run times (runtime_default.csv holds
    their percentiles 0..100; between two, interpolated linearly)."""
    rows = read_rows(PACKAGE, "runtime_default.csv")
    percent = np.array([float(r["percent"]) for r in rows])
    seconds = np.array([float(r["runtime_s"]) for r in rows])
    median = float(np.interp(50.0, percent, seconds))
    return median, float(np.interp(level * 100.0, percent, seconds))


def _check(level: float, min_members: int) -> None:
    checks.in_range("level", level, 0.0, 1.0, low_open=True)
    if level >= 1.0:
        raise InvalidValue("level", level, "a share below 1", "小于 1 的比例")
    checks.count("min_members", min_members)


def _runtimes(history: Sequence[CompletedTask]) -> FloatArray:
    runtime = np.array([t.runtime_s for t in history], dtype=float)
    bad = ~(np.isfinite(runtime) & (runtime > 0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InvalidValue(
            f"history[{i}].runtime_s",
            history[i].runtime_s,
            "seconds > 0 (leave out tasks that never ran)",
            "大于 0 的秒数（未运行的任务请剔除）",
        )
    return runtime


@dataclass(frozen=True)
class RuntimeModel:
    """Run-time groups fitted on a history (`fit_runtime`); `predict` for many tasks at once,
    `predict_one` for one with its group in words."""

    level: float
    min_members: int
    tasks: int  # completed tasks it was fitted on
    default_s: tuple[float, float]  # DEFAULT's median and upper
    encoder: _Encoder = field(repr=False)
    tables: tuple[_Table, ...] = field(repr=False)

    def predict(self, tasks: Sequence[TaskFeatures]) -> RuntimePredictions:
        return self._predict(self.encoder.keys(_columns(tasks, "tasks")), tasks)

    def predict_one(self, task: TaskFeatures) -> RuntimePrediction:
        made = self.predict([task])
        basis = int(made.basis[0])
        return RuntimePrediction(
            runtime_s=float(made.runtime_s[0]),
            upper_s=float(made.upper_s[0]),
            level=self.level,
            basis=basis,
            group=describe(task, basis),
            members=int(made.members[0]),
        )

    def _predict(self, keys: IntArray, tasks: Sequence[TaskFeatures]) -> RuntimePredictions:
        count = keys.shape[1]
        runtime = np.full(count, self.default_s[0])
        upper = np.full(count, self.default_s[1])
        basis = np.full(count, DEFAULT, dtype=np.int64)
        members = np.zeros(count, dtype=np.int64)
        pending = np.ones(count, dtype=bool)
        for level, (row, table) in enumerate(zip(keys, self.tables, strict=True)):
            candidates = np.flatnonzero(pending & (row >= 0))
            group = row[candidates]
            large = table.counts[group] >= self.min_members
            chosen, group = candidates[large], group[large]
            runtime[chosen] = table.median[group]
            upper[chosen] = table.upper[group]
            basis[chosen] = level
            members[chosen] = table.counts[group]
            pending[chosen] = False
        if pending.any():
            asked = np.array([math.nan if t.requested_s is None else t.requested_s for t in tasks])
            taken = pending & np.isfinite(asked)
            runtime[taken] = upper[taken] = asked[taken]
            basis[taken] = REQUESTED
        return RuntimePredictions(runtime, upper, basis, members, self.level)


def _fitted(
    encoder: _Encoder, keys: IntArray, runtime: FloatArray, level: float, min_members: int
) -> RuntimeModel:
    groups = [encoder.groups(i) for i in range(len(LEVELS))]
    tables = _tables(keys, runtime, groups, level)
    return RuntimeModel(level, min_members, len(runtime), _default(level), encoder, tuple(tables))


def fit_runtime(
    history: Sequence[CompletedTask], level: float = LEVEL, min_members: int = MIN_MEMBERS
) -> RuntimeModel:
    """Fit the run-time groups on completed tasks (any order; may be empty: then every
    prediction is REQUESTED or DEFAULT). `level`: the upper quantile's probability;
    `min_members`: the fewest tasks a group needs to be used."""
    _check(level, min_members)
    runtime = _runtimes(history)
    columns = _columns(history, "history")
    encoder = _Encoder.build(columns)
    return _fitted(encoder, encoder.keys(columns), runtime, level, min_members)


# --- Backtest --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RuntimeBacktest:
    """A chronological backtest: the model against the naive forecast (the median and the
    `level` quantile of every task ended by then)."""

    jobs: int  # predicted and scored
    unscored: int  # submitted before min_members tasks had ended (no baseline yet)
    refits: int
    level: float
    mae_s: float  # mean absolute error
    mae_naive_s: float
    mdale: float  # median absolute log error: median |ln(predicted / actual)|
    mdale_naive: float
    coverage: float  # share of run times at or below the upper quantile
    coverage_naive: float
    bases: dict[str, int]  # scored predictions per basis (basis_name)


def backtest_runtime(
    history: Sequence[CompletedTask],
    every_s: float = EVERY_S,
    level: float = LEVEL,
    min_members: int = MIN_MEMBERS,
    progress: Callable[[int, int], None] | None = None,
) -> RuntimeBacktest:
    """Replay `history` in time order: at every multiple of `every_s` after the first
    submission, fit on the tasks that had ended by then (`end_s`, else `submit_s + runtime_s`)
    and predict every task submitted before the next one; score each prediction made with at
    least `min_members` ended tasks. `progress(done, total)` after each window."""
    _check(level, min_members)
    if not (math.isfinite(every_s) and every_s > 0):
        raise InvalidValue("every_s", every_s, "seconds > 0", "大于 0 的秒数")
    if not history:
        raise InvalidValue("history", 0, "at least one completed task", "至少一个已完成任务")
    runtime = _runtimes(history)
    submit = np.array([t.submit_s for t in history], dtype=float)
    end = np.array(
        [t.submit_s + t.runtime_s if t.end_s is None else t.end_s for t in history], dtype=float
    )
    for name, bad in (
        ("submit_s", ~np.isfinite(submit)),
        ("end_s", ~(np.isfinite(end) & (end >= submit))),
    ):
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            value = submit[i] if name == "submit_s" else end[i]
            raise InvalidValue(
                f"history[{i}].{name}",
                float(value),
                "finite seconds" + (", not before submit_s" if name == "end_s" else ""),
                "有限的秒数" + ("，不早于 submit_s" if name == "end_s" else ""),
            )
    columns = _columns(history, "history")
    encoder = _Encoder.build(columns)  # features only: codes name groups, run times stay out
    keys = encoder.keys(columns)
    ended = np.argsort(end, kind="stable")
    ends = end[ended]
    window = np.floor((submit - submit.min()) / every_s).astype(np.int64)
    order = np.argsort(window, kind="stable")
    windows, firsts = np.unique(window[order], return_index=True)
    bounds = [*firsts.tolist(), len(order)]
    made: list[RuntimePredictions] = []
    naive: list[tuple[float, float, int]] = []
    scored: list[IntArray] = []
    model: RuntimeModel | None = None
    fitted_on, refits, unscored = -1, 0, 0
    for n, w in enumerate(windows.tolist()):
        tasks = order[bounds[n] : bounds[n + 1]]
        done = int(np.searchsorted(ends, submit.min() + w * every_s, side="right"))
        if done < min_members:
            unscored += len(tasks)
        else:
            if model is None or done != fitted_on:  # refit only when more tasks have ended
                past = ended[:done]
                model = _fitted(encoder, keys[:, past], runtime[past], level, min_members)
                fitted_on, refits = done, refits + 1
            made.append(model._predict(keys[:, tasks], [history[i] for i in tasks]))
            everyone = model.tables[-1]
            naive.append((float(everyone.median[0]), float(everyone.upper[0]), len(tasks)))
            scored.append(tasks)
        if progress is not None:
            progress(n + 1, len(windows))
    if not scored:
        raise InvalidValue(
            "history",
            f"{len(history)} tasks",
            f"tasks submitted after {min_members} others had ended (none was)",
            f"至少有任务在 {min_members} 个任务结束后提交",
        )
    which = np.concatenate(scored)
    actual = runtime[which]
    point = np.concatenate([m.runtime_s for m in made])
    upper = np.concatenate([m.upper_s for m in made])
    bases = np.concatenate([m.basis for m in made])
    naive_point = np.concatenate([np.full(k, m) for m, _, k in naive])
    naive_upper = np.concatenate([np.full(k, u) for _, u, k in naive])
    counted = np.bincount(bases, minlength=DEFAULT + 1)
    return RuntimeBacktest(
        jobs=len(which),
        unscored=unscored,
        refits=refits,
        level=level,
        mae_s=float(np.mean(np.abs(point - actual))),
        mae_naive_s=float(np.mean(np.abs(naive_point - actual))),
        mdale=float(np.median(np.abs(np.log(point / actual)))),
        mdale_naive=float(np.median(np.abs(np.log(naive_point / actual)))),
        coverage=float(np.mean(actual <= upper)),
        coverage_naive=float(np.mean(actual <= naive_upper)),
        bases={basis_name(b): int(c) for b, c in enumerate(counted.tolist()) if c},
    )


# --- The shipped traces ----------------------------------------------------------------------


def runtime_trace(name: str) -> tuple[CompletedTask, ...]:
    """The completed jobs of a shipped trace (RUNTIME_TRACES), in order of submission."""
    if name not in RUNTIME_TRACES:
        names = ", ".join(RUNTIME_TRACES)
        raise InvalidValue("trace", name, f"one of {names}", f"{names} 之一")
    return tuple(
        CompletedTask(
            device_kind=r["device_kind"],
            devices=int(r["devices"]),
            owner=r["owner"] or None,
            workload=r["workload"] or None,
            latency_tier=r["latency_tier"] or None,
            shape=r["shape"] or None,
            requested_s=float(r["requested_s"]) if r["requested_s"] else None,
            runtime_s=float(r["runtime_s"]),
            submit_s=float(r["submit_s"]),
            end_s=float(r["end_s"]),
        )
        for r in read_rows(PACKAGE, f"runtime_{name}.csv")
    )
