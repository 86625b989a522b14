"""Quotas and fair share (issue 15, item 3): which queued tasks the pass may decide now, in
what order, and which running tasks it preempts.

`gate(session, queue, owners, inputs, moment)` reads the groups, their members' held devices
and used device-hours this period, and returns a `Gate`:

* `next_batch(capacity)`: the next queued tasks, in fair-share order, whose devices fit what
  is free (per device kind); all of them when nothing contends;
* `placed(task_ids)`: the pass placed these (their groups now hold more);
* `waits`: task -> why it waits for its group's quota or share (it is not decided this pass);
* `preempt`: running task -> why it is preempted (borrowed or preemptible work giving way to
  guaranteed work that cannot otherwise be placed).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.orm import Session

from suanli.scheduler import QueuedTask
from suanli.scheduler.decide import Capacity
from suanli.services.capacity import StepInputs


@dataclass
class Gate:
    """The pass's view of quotas and fair share for one pass (see the module docstring)."""

    queue: list[QueuedTask]
    waits: dict[str, str] = field(default_factory=dict)
    preempt: dict[str, str] = field(default_factory=dict)
    _given: set[str] = field(default_factory=set)

    def next_batch(self, capacity: Capacity) -> list[QueuedTask]:
        """Placeholder until quotas land: every task not yet given, once."""
        del capacity
        batch = [q for q in self.queue if q.task.id not in self._given]
        self._given.update(q.task.id for q in batch)
        return batch

    def placed(self, task_ids: Iterable[str]) -> None:
        del task_ids


def gate(
    session: Session,
    queue: Sequence[QueuedTask],
    owners: Mapping[str, str],
    inputs: StepInputs,
    moment: datetime,
) -> Gate:
    """The pass's gate (see the module docstring); `owners`: task -> owner id."""
    del session, owners, inputs, moment
    return Gate(list(queue))
