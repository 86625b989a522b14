"""An incremental scheduling pass never misses a submission that committed just after the pass
before it read the queue.

A submission stamps its row (`updated_at`) inside its write, before it commits. A pass that reads
the queue while that write is open does not see the row; the next incremental pass reads the tasks
updated since the last pass began, so a row stamped before that moment was skipped until the next
full pass (measured in bench_backends: a task placed 1.15 s late). A pass now starts the next
incremental read from the oldest write of its process still open when it read. The race is
staged here for real: a submission's write is held open while a pass runs in another thread.
"""

from __future__ import annotations

import threading

from suanli.services import tasks as tasks_service
from suanli.services.core import Role
from suanli.store.models import Principal
from tests.money import principal_token

from .test_deferral_bookings import Live, live, row, zhongwei_pool

__all__ = ["live"]  # the fixture, reused

SPEC = {
    "executors": [{"command": ["true"]}],
    "resources": {"devices": 1, "device_kind": "cpu", "precision": "fp32", "workload": "general"},
}


def test_a_task_committed_after_a_pass_read_is_placed_by_the_next_incremental_pass(
    live: Live,
) -> None:
    zhongwei_pool(live)
    with live.platform.unit_of_work() as session:
        consumer_id = principal_token(session, Role.CONSUMER, "lab")[0].id
    platform = live.platform
    assert platform.elector.step(), "the test's server leads the scheduling"
    platform.schedule_once()  # the first pass: a full one

    with platform.unit_of_work() as session:  # the submission's write, held open...
        consumer = session.get(Principal, consumer_id)
        assert consumer is not None
        task, _ = tasks_service.submit(session, consumer, dict(SPEC), None)
        session.flush()
        task_id = task.id
        live.clock.advance(0.1)
        # ...while a pass reads the queue (another thread: the write lock is this one's)
        racing = threading.Thread(target=platform.schedule_once)
        racing.start()
        racing.join(timeout=30)
        assert not racing.is_alive()
    assert row(live, task_id).state == "QUEUED"  # the pass did not see it: not yet committed

    live.clock.advance(0.1)  # well inside the schedule interval: the next pass is incremental
    platform.capacity_grew.clear()
    platform.schedule_once()
    placed = row(live, task_id)
    assert placed.pool_id is not None, "the incremental pass skipped the task"
