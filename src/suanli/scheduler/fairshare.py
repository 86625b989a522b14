"""Quotas and fair share between groups of consumers: which queued tasks a scheduling pass may
decide now, and which running tasks give way (issue 15, item 3; the decisions of item 4).

The rule is weighted dominant-resource fairness (DRF) across device kinds:

* every group `g` is guaranteed `guaranteed_bp` basis points of each device kind's devices
  (consumers without a group share the unassigned remainder as the implicit group `public`);
* a group's share of kind `k` is what it holds of `k` over what it is guaranteed of `k`; its
  *dominant share* is the largest of those over the kinds;
* when the queue's demand does not fit what is free, the next task goes to the group with the
  lowest dominant share (ties: fewer device-hours used this period per guaranteed share, then
  the earlier submission); within a group, first in first out;
* a group may borrow idle capacity beyond its guarantee (nothing is withheld while devices are
  free), and gives borrowed devices back by preemption when a group below its guarantee has
  work that cannot otherwise be placed;
* a group whose device-hours used this period reach its cap waits (the quota reason).

Pure: no I/O, no clock of its own (times are given, seconds on the scheduler clock).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone

from suanli.errors import InvalidValue
from suanli.scheduler.decide import QueuedTask

PUBLIC = "public"  # the implicit group of consumers without one
FULL_BP = 10_000
PERIODS = ("day", "week", "month")
PERIOD_ZH = {"day": "日", "week": "周", "month": "月"}
CST = timezone(timedelta(hours=8), "CST")
MAX_SERVED = 64  # queued tasks considered for preemption per pass


def period_start(period: str, moment: datetime) -> datetime:
    """The start (UTC) of the calendar `period` holding `moment`, in China Standard Time (a day
    at 00:00, a week on Monday 00:00, a month on its first day 00:00)."""
    if moment.tzinfo is None:
        raise ValueError("period_start needs a timezone-aware moment")
    local = moment.astimezone(CST)
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        start = midnight
    elif period == "week":
        start = midnight - timedelta(days=local.weekday())
    elif period == "month":
        start = midnight.replace(day=1)
    else:
        raise InvalidValue("period", period, "one of day, week, month", "day、week 或 month 之一")
    return start.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class Group:
    """A group of consumers: its guaranteed share, its cap and what it used this period."""

    id: str
    name: str
    guaranteed_bp: int
    cap_device_hours: float | None = None
    used_device_hours: float = 0.0  # this period, ended work and held time so far
    period: str = "month"

    @property
    def weight(self) -> float:
        """Its guaranteed fraction (at least one basis point: a group guaranteed nothing
        still has an order among its peers)."""
        return max(self.guaranteed_bp, 1) / FULL_BP

    @property
    def over_cap(self) -> bool:
        return self.cap_device_hours is not None and self.used_device_hours >= self.cap_device_hours


def public_group(groups: Iterable[Group], used_device_hours: float = 0.0) -> Group:
    """The implicit group of consumers without one: the unassigned remainder of the network."""
    rest = FULL_BP - sum(g.guaranteed_bp for g in groups)
    return Group(PUBLIC, PUBLIC, max(0, rest), None, used_device_hours)


@dataclass(frozen=True, slots=True)
class PoolSlot:
    """A pool as fair share sees it: its device kind, device id and device count."""

    id: str
    kind: str
    device: str
    count: int


@dataclass(frozen=True, slots=True)
class Holding:
    """A task that holds devices now (placed, leased, running or paused)."""

    task: str
    group: str
    pool: str
    devices: int
    started_s: float  # when it started holding (most recent first is preempted first)
    preemptible: bool = False  # its spec's `preemptible` (priced at the discount)
    running: bool = True  # leased or running (a preemption can be asked of its agent)
    preempt_requested: bool = False  # already asked: its devices are on their way back


def quota_reason(group: Group) -> str:
    """Why a task of a group at its cap waits (English / 中文)."""
    used, cap = f"{group.used_device_hours:.4g}", f"{group.cap_device_hours or 0:g}"
    zh = PERIOD_ZH.get(group.period, group.period)
    return (
        f"quota: group {group.name} used {used} of its cap {cap} device-hours this "
        f"{group.period}; waits until the period ends or the cap is raised / "
        f"配额：组 {group.name} 本{zh}已用 {used} 设备·小时，上限 {cap}；"
        f"等到本期结束或上限提高后再运行"
    )


def share_reason(group: Group) -> str:
    """Why a task waits its group's turn in fair-share order (English / 中文)."""
    pct = f"{group.guaranteed_bp / 100:g}%"
    return (
        f"fair share: the network is full; group {group.name} (guaranteed {pct} of each device "
        f"kind) waits its turn behind groups further below their share / "
        f"公平份额：网络已满；组 {group.name}（保证每类设备的 {pct}）"
        f"排在更低于其份额的组之后"
    )


SPOT_REASON = (
    "fair share: the network is full and non-preemptible work goes first; this preemptible "
    "task waits for free devices / 公平份额：网络已满，不可抢占的任务优先；本可抢占任务等待空闲设备"
)


def borrowed_reason(group: Group, served: str, served_group: Group) -> str:
    pct = f"{served_group.guaranteed_bp / 100:g}%"
    return (
        f"preempted: borrowed capacity of group {group.name} given back to group "
        f"{served_group.name} (guaranteed {pct}) for task {served} / "
        f"抢占：组 {group.name} 借用的算力归还给组 {served_group.name}"
        f"（保证 {pct}），用于任务 {served}"
    )


def preemptible_reason(served: str) -> str:
    return (
        f"preempted: preemptible work gives way to guaranteed task {served} / "
        f"抢占：可抢占任务为保证任务 {served} 让出设备"
    )


def _key(q: QueuedTask) -> tuple[float, str]:
    return q.submitted_s, q.task.id


@dataclass(frozen=True, slots=True)
class _Rule:
    """Who may give way to one queued task: its group and device kind, whether its group is
    owed devices (below its guarantee once placed), whether it is guaranteed (non-preemptible)
    work, and what each group holds then: its holdings less those asked back and those taken
    this pass, without the queued tasks this pass has made room for (they hold nothing yet)."""

    group: str
    kind: str
    owed: bool
    guaranteed_work: bool
    held: Mapping[str, Mapping[str, int]]


@dataclass
class FairShare:
    """One pass's fair share: the groups, the pools, what each group holds, the queue.

    `owner_group`: task -> group id (a group not in `groups` is the public group). Call
    `next_batch(free)` for each round, `placed(ids)` with what the round placed, then read
    `waits` and `preemptions(...)`."""

    groups: Mapping[str, Group]
    pools: Mapping[str, PoolSlot]
    holdings: Sequence[Holding]
    queue: Sequence[QueuedTask]
    task_group: Mapping[str, str]
    # the queued tasks that are preemptible (read when first needed: under contention)
    spot: Callable[[], set[str]] | None = None
    given: set[str] = field(default_factory=set)
    placed_ids: set[str] = field(default_factory=set)
    refused_ids: set[str] = field(default_factory=set)  # admission refused: nothing to free
    held: dict[str, dict[str, int]] = field(default_factory=dict)  # group -> kind -> devices
    totals: dict[str, int] = field(default_factory=dict)  # kind -> devices in the network
    _capped: dict[str, str] = field(default_factory=dict)
    _by_id: dict[str, QueuedTask] = field(default_factory=dict)
    _spot: set[str] | None = None

    def __post_init__(self) -> None:
        if PUBLIC not in self.groups:
            self.groups = {**self.groups, PUBLIC: public_group(self.groups.values())}
        for pool in self.pools.values():
            self.totals[pool.kind] = self.totals.get(pool.kind, 0) + pool.count
        self.holdings = list(self.holdings)
        self._count(self.holdings)
        self._by_id = {q.task.id: q for q in self.queue}
        for q in self.queue:
            group = self.group_of(q.task.id)
            if group.over_cap:
                self._capped[q.task.id] = quota_reason(group)

    def preemptible(self) -> set[str]:
        """The queued tasks that are preemptible (read once)."""
        if self._spot is None:
            self._spot = set(self.spot()) if self.spot is not None else set()
        return self._spot

    def add_holdings(self, more: Sequence[Holding]) -> None:
        """More tasks holding devices (read late, when only preemption needs them)."""
        self.holdings = [*self.holdings, *more]
        self._count(more)

    def _count(self, holdings: Iterable[Holding]) -> None:
        for h in holdings:
            slot = self.pools.get(h.pool)
            if slot is not None:
                self._hold(self.group_of_id(h.group), slot.kind, h.devices)

    # --- shares ---------------------------------------------------------------------------

    def group_of_id(self, ident: str) -> str:
        return ident if ident in self.groups else PUBLIC

    def group_of(self, task: str) -> Group:
        ident = self.group_of_id(self.task_group.get(task, PUBLIC))
        return self.groups.get(ident) or Group(PUBLIC, PUBLIC, 0)

    def _hold(self, group: str, kind: str, devices: int) -> None:
        kinds = self.held.setdefault(group, {})
        kinds[kind] = kinds.get(kind, 0) + devices

    def guaranteed(self, group: str, kind: str) -> float:
        found = self.groups.get(group)
        bp = found.guaranteed_bp if found is not None else 0
        return bp * self.totals.get(kind, 0) / FULL_BP

    def dominant_share(self, group: str, held: Mapping[str, Mapping[str, int]]) -> float:
        """The group's largest held/guaranteed ratio over the device kinds."""
        found = self.groups.get(group) or Group(PUBLIC, PUBLIC, 0)
        kinds = held.get(group, {})
        share = 0.0
        for kind, devices in kinds.items():
            total = self.totals.get(kind, 0)
            if total > 0 and devices > 0:
                share = max(share, devices / (found.weight * total))
        return share

    def _order(self, group: str, held: Mapping[str, Mapping[str, int]]) -> tuple[float, float]:
        found = self.groups.get(group) or Group(PUBLIC, PUBLIC, 0)
        return self.dominant_share(group, held), found.used_device_hours / found.weight

    # --- rounds ---------------------------------------------------------------------------

    def next_batch(self, free: Mapping[str, int]) -> list[QueuedTask]:
        """The next queued tasks to decide, given each pool's free devices: every task not yet
        given (and not over its group's cap) when their demand fits what is free of each kind,
        or only one group has work queued and none of it is preemptible; else a batch in
        fair-share order that fits (within a group, non-preemptible work first, then first in
        first out: devices freed by preemption go to the work they were freed for)."""
        rest = [
            q for q in self.queue if q.task.id not in self.given and q.task.id not in self._capped
        ]
        if not rest:
            return []
        kind_free: dict[str, int] = {}
        for pool, devices in free.items():
            slot = self.pools.get(pool)
            if slot is not None and devices > 0:
                kind_free[slot.kind] = kind_free.get(slot.kind, 0) + devices
        demand: dict[str, int] = {}
        groups: set[str] = set()
        for q in rest:
            kind = q.task.device_kind.value
            demand[kind] = demand.get(kind, 0) + q.task.devices
            groups.add(self.group_of(q.task.id).id)
        fits = all(n <= kind_free.get(k, 0) for k, n in demand.items())
        if fits or (len(groups) == 1 and not any(q.task.id in self.preemptible() for q in rest)):
            self.given.update(q.task.id for q in rest)
            return rest
        batch = self._fair_batch(rest, dict(free), kind_free)
        self.given.update(q.task.id for q in batch)
        return batch

    def _fits(self, q: QueuedTask, free: Mapping[str, int]) -> str | None:
        """The pool (best fit: the fewest free devices that suffice) that `q` fits now."""
        best: tuple[int, str] | None = None
        task = q.task
        for pool, devices in free.items():
            slot = self.pools.get(pool)
            if slot is None or devices < task.devices or slot.kind != task.device_kind.value:
                continue
            if task.device_models is not None and slot.device not in task.device_models:
                continue
            if q.pinned_pool is not None and pool != q.pinned_pool:
                continue
            if best is None or (devices, pool) < best:
                best = (devices, pool)
        return None if best is None else best[1]

    def _fair_batch(
        self, rest: list[QueuedTask], free: dict[str, int], kind_free: dict[str, int]
    ) -> list[QueuedTask]:
        held = {g: dict(kinds) for g, kinds in self.held.items()}
        lines: dict[str, list[QueuedTask]] = {}
        spot = self.preemptible()
        for q in sorted(rest, key=lambda q: (q.task.id in spot, *_key(q))):
            lines.setdefault(self.group_of(q.task.id).id, []).append(q)
        heads = dict.fromkeys(lines, 0)
        heap = [(*self._order(g, held), _key(line[0]), g) for g, line in lines.items()]
        heapq.heapify(heap)
        batch: list[QueuedTask] = []
        while heap and any(n > 0 for n in kind_free.values()):
            *_, group = heapq.heappop(heap)
            line = lines[group]
            while heads[group] < len(line):
                q = line[heads[group]]
                heads[group] += 1
                kind = q.task.device_kind.value
                if q.task.devices > kind_free.get(kind, 0):
                    continue  # not now: it stays queued for a later round or pass
                pool = self._fits(q, free)
                if pool is None:
                    continue
                free[pool] -= q.task.devices
                kind_free[kind] -= q.task.devices
                held.setdefault(group, {})[kind] = held.get(group, {}).get(kind, 0) + q.task.devices
                batch.append(q)
                break
            if heads[group] < len(line):
                heapq.heappush(heap, (*self._order(group, held), _key(line[heads[group]]), group))
        return batch

    def placed(self, task_ids: Iterable[str]) -> None:
        """These tasks were placed: their groups hold more."""
        for ident in task_ids:
            q = self._by_id.get(ident)
            if q is None or ident in self.placed_ids:
                continue
            self.placed_ids.add(ident)
            self._hold(self.group_of(ident).id, q.task.device_kind.value, q.task.devices)

    @property
    def waits(self) -> dict[str, str]:
        """Queued tasks held back by quota (at the cap) or by fair share (never given)."""
        found = dict(self._capped)
        for q in self.queue:
            if q.task.id not in self.given and q.task.id not in found:
                if q.task.id in self.preemptible():
                    found[q.task.id] = SPOT_REASON
                else:
                    found[q.task.id] = share_reason(self.group_of(q.task.id))
        return found

    # --- preemption -----------------------------------------------------------------------

    def preemptions(
        self,
        free: Mapping[str, int],
        clock: float,
        preemptible: Callable[[Sequence[str]], Mapping[str, bool]],
        verify: Callable[[QueuedTask, str, int], bool] | None = None,
    ) -> dict[str, str]:
        """Running tasks to preempt (task -> reason) for queued tasks that were not placed:

        (a) a task of a group that stays within its guarantee of the kind once placed takes
            devices back from borrowed work (tasks of groups above their guarantee, never
            below it);
        (b) a non-preemptible task takes devices from preemptible work (any group).

        Victims: on one pool the task fits, preemptible first, most recently started first,
        just enough devices (counting devices already asked back there, and free ones); a task
        already asked to preempt is never chosen again. `free`: each pool's free devices after
        this pass's placements; `preemptible(ids)`: queued task -> its spec's flag; `verify(task,
        pool, devices freed)`: whether the task would be placed on that pool then (the
        caller's decision step), or None to trust the pool's kind, models and count."""
        held = {g: dict(kinds) for g, kinds in self.held.items()}
        # group -> kind -> devices of the queued tasks this pass made room for: they count
        # toward their group's guarantee (`owed`), never as devices that group may give back
        planned: dict[str, dict[str, int]] = {}
        pending: dict[str, int] = {}  # pool -> devices already asked back
        candidates: dict[str, list[Holding]] = {}
        for h in self.holdings:
            slot = self.pools.get(h.pool)
            if slot is None:
                continue
            if h.preempt_requested:
                pending[h.pool] = pending.get(h.pool, 0) + h.devices
                kinds = held.setdefault(self.group_of_id(h.group), {})
                kinds[slot.kind] = kinds.get(slot.kind, 0) - h.devices
            elif h.running:
                candidates.setdefault(h.pool, []).append(h)
        for line in candidates.values():
            line.sort(key=lambda h: (not h.preemptible, -h.started_s, h.task))
        chosen: dict[str, str] = {}
        served = 0
        if not any(candidates.values()):
            return chosen
        orders = {g: self._order(g, held) for g in self.groups}
        waiting = sorted(
            (
                q
                for q in self.queue
                if q.task.id not in self.placed_ids
                and q.task.id not in self.refused_ids
                and q.task.id not in self._capped
                and (q.not_before_s is None or q.not_before_s <= clock)
            ),
            key=lambda q: (orders[self.group_of(q.task.id).id], _key(q)),
        )[:MAX_SERVED]
        flags = preemptible([q.task.id for q in waiting]) if waiting else {}
        for q in waiting:
            if served >= MAX_SERVED or not any(candidates.values()):
                break
            served += 1
            group = self.group_of(q.task.id)
            kind = q.task.device_kind.value
            mine = held.get(group.id, {}).get(kind, 0) + planned.get(group.id, {}).get(kind, 0)
            owed = mine + q.task.devices <= self.guaranteed(group.id, kind) + 1e-9
            guaranteed_work = not flags.get(q.task.id, False)
            if not owed and not guaranteed_work:
                continue

            rule = _Rule(group.id, kind, owed, guaranteed_work, held)
            plan = self._victims(q, free, pending, candidates, rule)
            if plan is None:
                continue
            where, victims, reserved = plan
            if (
                victims
                and verify is not None
                and not verify(q, where, sum(h.devices for h in victims))
            ):
                continue
            pending[where] = pending.get(where, 0) - reserved  # kept for this task
            for h in victims:
                candidates[where].remove(h)
                victim = self.group_of_id(h.group)
                held[victim][kind] = held[victim].get(kind, 0) - h.devices
                if h.preemptible and guaranteed_work:
                    chosen[h.task] = preemptible_reason(q.task.id)
                else:
                    chosen[h.task] = borrowed_reason(
                        self.groups.get(victim) or Group(PUBLIC, PUBLIC, 0), q.task.id, group
                    )
            ours = planned.setdefault(group.id, {})
            ours[kind] = ours.get(kind, 0) + q.task.devices
        return chosen

    def _may_take(self, rule: _Rule, h: Holding, taken: Mapping[str, int]) -> bool:
        """Whether `h` may give way under `rule` (`taken`: devices already taken from each
        group for this task)."""
        if h.preemptible and rule.guaranteed_work:
            return True  # (b)
        victim = self.group_of_id(h.group)
        if not rule.owed or victim == rule.group:
            return False
        # (a): only devices the victim's group holds beyond its guarantee
        held = rule.held.get(victim, {}).get(rule.kind, 0)
        left = held - taken.get(victim, 0) - h.devices
        return left >= self.guaranteed(victim, rule.kind) - 1e-9

    def _victims(
        self,
        q: QueuedTask,
        free: Mapping[str, int],
        pending: Mapping[str, int],
        candidates: Mapping[str, list[Holding]],
        rule: _Rule,
    ) -> tuple[str, list[Holding], int] | None:
        """The pool and victims that make room for `q` with the fewest non-preemptible victims,
        then the fewest devices preempted; None when no pool can. The third value: devices
        already on their way back (asked before) that this task counts on."""
        task = q.task
        best: tuple[tuple[int, int, str], str, list[Holding], int] | None = None
        for pool, slot in self.pools.items():
            if slot.kind != task.device_kind.value or slot.count < task.devices:
                continue
            if task.device_models is not None and slot.device not in task.device_models:
                continue
            if q.pinned_pool is not None and pool != q.pinned_pool:
                continue
            room = max(0, free.get(pool, 0))
            if room >= task.devices:
                continue  # it fits without preemption: something else keeps it queued
            coming = max(0, pending.get(pool, 0))
            need = task.devices - room - coming
            victims: list[Holding] = []
            taken: dict[str, int] = {}  # group -> devices taken from it here
            if need > 0:
                for h in candidates.get(pool, []):
                    if self._may_take(rule, h, taken):
                        victims.append(h)
                        owner = self.group_of_id(h.group)
                        taken[owner] = taken.get(owner, 0) + h.devices
                        need -= h.devices
                        if need <= 0:
                            break
                if need > 0:
                    continue
            reserved = min(coming, task.devices - room)
            rank = (
                sum(1 for h in victims if not h.preemptible),
                sum(h.devices for h in victims),
                pool,
            )
            if best is None or rank < best[0]:
                best = (rank, pool, victims, reserved)
        return None if best is None else (best[1], best[2], best[3])
