"""Preemption for real, end to end: a real server, real `suanli agent` processes on the local
backend, a real database (SQLite and PostgreSQL). A preempted task gets SIGTERM from its agent,
ends PREEMPTED in its history, is charged for what ran, is queued again on the same pool and
resumes from the checkpoint directory that its agent keeps for it (`SUANLI_CHECKPOINT_DIR`).

The task is a job of ten steps that saves its progress in its checkpoint directory after every
step and, on SIGTERM, records that it was stopped. Its first attempt pauses after step 5 (a long
job, as far as the test is concerned) until it is preempted; a later attempt resumes from the
saved step and runs to step 10. So the task completes only if it was preempted and then read
its checkpoint, and its output says from where it resumed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from suanli.services.core import Role
from suanli.services.tasks import task_events
from suanli.store.db import make_engine, session_factory
from suanli.store.models import EventRow, OrderRow
from tests.integration.platform.conftest import Platform
from tests.waiting import poll, wait_until

pytestmark = pytest.mark.slow
PRICE_FEN_PER_DEVICE_HOUR = 3_600_000

RESUMABLE_JOB = r"""
ck="$SUANLI_CHECKPOINT_DIR"
test -d "$ck" || { echo "no checkpoint directory: '$ck'" >&2; exit 3; }
i=0
if [ -f "$ck/step" ]; then i=$(cat "$ck/step"); echo "resumed from checkpoint at step $i"; fi
trap 'echo "stopped at step $i" >> "$ck/stops"; exit 143' TERM
while [ "$i" -lt 10 ]; do
  i=$((i + 1))
  echo "$i" > "$ck/step.tmp" && mv "$ck/step.tmp" "$ck/step"
  echo "step $i"
  if [ "$i" -eq 5 ] && [ ! -f "$ck/stops" ]; then
    while :; do sleep 0.1; done  # the first attempt: a long job, until it is preempted
  fi
done
echo done
"""


def job(name: str, preemptible: bool) -> dict[str, Any]:
    return {
        "name": name,
        "executors": [{"command": ["sh", "-c", RESUMABLE_JOB]}],
        "resources": {"devices": 1, "device_kind": "cpu"},
        "preemptible": preemptible,
        "max_run_s": 600,
    }


def submit(platform: Platform, consumer: str, body: dict[str, Any]) -> str:
    with platform.client(consumer) as http:
        created = http.post("/v1/tasks", json=body)
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def paused_at_step_5(platform: Platform, consumer: str, task_id: str) -> dict[str, Any]:
    """Wait until the task's first attempt runs and has saved step 5 (its live output)."""
    with platform.client(consumer) as http:

        def paused() -> dict[str, Any] | None:
            task = http.get(f"/v1/tasks/{task_id}").json()
            logs = http.get(f"/v1/tasks/{task_id}/logs").json()
            ok = task["state"] == "RUNNING" and "step 5\n" in logs["stdout_tail"]
            return dict(task) if ok else None

        return wait_until(paused, f"task {task_id} to run up to step 5", timeout_s=60)


def history(platform: Platform, task_id: str) -> list[dict[str, Any]]:
    engine = make_engine(platform.database_url)
    with session_factory(engine)() as session:
        events = task_events(session, [task_id])[task_id]
    engine.dispose()
    return events


def moves(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["from"], e["to"]) for e in events]


def preempt_requests(platform: Platform, task_id: str) -> list[EventRow]:
    engine = make_engine(platform.database_url)
    with session_factory(engine)() as session:
        rows = list(
            session.scalars(
                select(EventRow)
                .where(EventRow.kind == "task.preempt_requested", EventRow.subject == task_id)
                .order_by(EventRow.seq)
            )
        )
        session.expunge_all()
    engine.dispose()
    return rows


def orders_of(platform: Platform, task_id: str) -> list[OrderRow]:
    engine = make_engine(platform.database_url)
    with session_factory(engine)() as session:
        rows = list(
            session.scalars(
                select(OrderRow)
                .where(OrderRow.task_id == task_id)
                .order_by(OrderRow.created_at, OrderRow.id)
            )
        )
        session.expunge_all()
    engine.dispose()
    return rows


def assert_preempted_then_resumed(
    platform: Platform, consumer: str, task_id: str, work_root: Path, pool: str
) -> dict[str, Any]:
    """The task ended PREEMPTED once, was queued again, resumed on `pool` from its
    checkpoint and completed; its agent then deleted the checkpoint directory."""
    done = platform.wait_for(consumer, task_id, {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR"}, 90)
    with platform.client(consumer) as http:
        logs = http.get(f"/v1/tasks/{task_id}/logs").json()
    assert done["state"] == "COMPLETE", (done, logs)
    assert done["preemptions"] == 1 and done["preempt_requested"] is False, done
    assert done["pool"] == pool, "not resumed on the pool where its checkpoint is"
    # the resumed attempt read the checkpoint: it went on from step 5, not from the start
    assert "resumed from checkpoint at step 5\n" in logs["stdout_tail"], logs
    assert logs["stdout_tail"].endswith("step 6\nstep 7\nstep 8\nstep 9\nstep 10\ndone\n"), logs
    events = history(platform, task_id)
    steps = moves(events)
    assert ("RUNNING", "PREEMPTED") in steps and ("PREEMPTED", "QUEUED") in steps, steps
    assert steps[-1] == ("RUNNING", "COMPLETE"), steps
    at = steps.index(("RUNNING", "PREEMPTED"))
    assert steps[at + 1] == ("PREEMPTED", "QUEUED"), steps
    assert steps.count(("QUEUED", "INITIALIZING")) == 2, steps  # placed, preempted, placed again
    # the checkpoint lived across attempts on the agent's site, and is gone now the task ended
    # (the agent deletes it once the server has acknowledged the end, just after COMPLETE shows)
    checkpoint = work_root / "checkpoints" / task_id
    assert poll(lambda: not checkpoint.exists(), timeout_s=10, every_s=0.05), (
        "checkpoint kept after the end"
    )
    return done


def test_an_operator_preempts_a_running_task_which_resumes_from_its_checkpoint(
    platform: Platform,
) -> None:
    operator = platform.token(Role.OPERATOR, "ops")
    provider = platform.token(Role.PROVIDER, "prov")
    consumer = platform.token(Role.CONSUMER, "lab")
    site = platform.site_with_pool(provider, count=1)  # a full pool once the task runs
    work_root = platform.home / "work-preempt"
    platform.agent(provider, site, 1, work_root=work_root)

    task_id = submit(platform, consumer, job("resumable", preemptible=True))
    running = paused_at_step_5(platform, consumer, task_id)
    checkpoint = work_root / "checkpoints" / task_id
    assert (checkpoint / "step").read_text() == "5\n", "progress is saved where the agent keeps it"

    with platform.client(consumer) as http:  # only the operator preempts
        refused = http.post(f"/v1/tasks/{task_id}/preempt")
    assert refused.status_code == 403, refused.text
    with platform.client(operator) as http:
        asked = http.post(f"/v1/tasks/{task_id}/preempt")
        assert asked.status_code == 200, asked.text
        assert asked.json()["preempt_requested"] is True
        again = http.post(f"/v1/tasks/{task_id}/preempt")  # pending: a no-op, not an error
        assert again.status_code == 200, again.text
        missing = http.post("/v1/tasks/task-none/preempt")
        assert missing.status_code == 404, missing.text

    done = assert_preempted_then_resumed(platform, consumer, task_id, work_root, running["pool"])
    requests = preempt_requests(platform, task_id)
    assert [(e.actor, e.data["reason"]) for e in requests] == [
        (requests[0].actor, "preempted by the operator")
    ]
    events = history(platform, task_id)
    preempted = next(e for e in events if e["to"] == "PREEMPTED")
    assert preempted["reason"].startswith("preempted by the operator"), preempted
    assert done["usage"]["wall_s"] > 0

    with platform.client(operator) as http:  # a task that ended cannot be preempted
        late = http.post(f"/v1/tasks/{task_id}/preempt")
    assert late.status_code == 409, late.text
    assert "preempt" in late.json()["error"]["message"]


def test_a_preempted_task_is_pinned_to_the_pool_that_keeps_its_checkpoint(
    platform: Platform,
) -> None:
    """Two sites with a free device each: wherever the task ran first, it resumes there
    (the other site's agent has no checkpoint for it, and would start it from step 0)."""
    operator = platform.token(Role.OPERATOR, "ops")
    provider = platform.token(Role.PROVIDER, "prov")
    consumer = platform.token(Role.CONSUMER, "lab")
    roots = {}
    for n in range(2):
        site = platform.site_with_pool(provider, count=1)
        roots[site] = platform.home / f"work-site-{n}"
        platform.agent(provider, site, 1, work_root=roots[site])

    task_id = submit(platform, consumer, job("pinned", preemptible=True))
    running = paused_at_step_5(platform, consumer, task_id)
    with platform.client(operator) as http:
        assert http.post(f"/v1/tasks/{task_id}/preempt").status_code == 200
    done = assert_preempted_then_resumed(
        platform, consumer, task_id, roots[running["site"]], running["pool"]
    )
    assert done["site"] == running["site"]


def test_a_guaranteed_task_preempts_preemptible_work_on_a_full_pool(
    platform: Platform,
) -> None:
    """The issue's Done-when: a preemptible task on a full pool is preempted within two pass
    intervals when a guaranteed task arrives, ends PREEMPTED, is charged only for what ran,
    resumes from its checkpoint directory and completes. (The decision to preempt is the quota
    gate's, `services.sharing`; the charge is the market's PREEMPTED outcome.)"""
    interval_s = 2.0  # a pass every 2 s (the default), so two intervals are 4 s
    platform.stop()
    platform.env["SUANLI_SCHEDULE_INTERVAL_S"] = str(interval_s)
    platform.start()
    provider = platform.token(Role.PROVIDER, "prov")
    spot = platform.token(Role.CONSUMER, "spot-lab")
    guaranteed = platform.token(Role.CONSUMER, "guaranteed-lab")
    # 36 yuan a device-second: what the preempted attempt ran costs whole fen
    site = platform.site_with_pool(provider, count=1, price=PRICE_FEN_PER_DEVICE_HOUR)
    work_root = platform.home / "work-full"
    platform.agent(provider, site, 1, work_root=work_root)

    victim = submit(platform, spot, job("spot", preemptible=True))
    running = paused_at_step_5(platform, spot, victim)
    urgent = submit(
        platform,
        guaranteed,
        {
            "name": "urgent",
            "executors": [{"command": ["sh", "-c", "echo urgent done"]}],
            "resources": {"devices": 1, "device_kind": "cpu"},
        },
    )
    urgent_done = platform.wait_for(
        guaranteed, urgent, {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED"}, 60
    )
    assert urgent_done["state"] == "COMPLETE", urgent_done

    # preempted within two pass intervals of the guaranteed task's arrival (the server's times)
    requests = preempt_requests(platform, victim)
    assert [e.actor for e in requests] == ["scheduler"], requests  # the pass decided it
    engine = make_engine(platform.database_url)
    with session_factory(engine)() as session:
        submitted = session.scalars(
            select(EventRow)
            .where(EventRow.subject == urgent, EventRow.kind == "task.submitted")
            .order_by(EventRow.seq)
        ).first()
    engine.dispose()
    if submitted is not None:
        took = (requests[0].at - submitted.at).total_seconds()
        assert took <= 2 * interval_s, f"preempted {took:.1f} s after the guaranteed task came"

    assert_preempted_then_resumed(platform, spot, victim, work_root, running["pool"])

    # charged only for what ran: the preempted attempt's order settled PREEMPTED for its
    # device-seconds, the resumed attempt's order on its own; each to the fen
    orders = orders_of(platform, victim)
    assert len(orders) == 2, [(o.id, o.state) for o in orders]
    first, second = orders
    assert first.state == "SETTLED" and second.state == "SETTLED"
    assert first.settlement is not None and first.settlement["outcome"] == "PREEMPTED"
    for order in orders:
        settled = order.settlement or {}
        parts = sum(_fen(settled[k]) for k in ("provider", "platform", "network"))
        assert parts == _fen(settled["charge"]), settled
        assert _fen(settled["charge"]) + _fen(settled["refund"]) <= order.escrow_fen
    charge = _fen(first.settlement["charge"])
    assert 0 < charge < first.escrow_fen, first.settlement
    assert _fen(first.settlement["refund"]) > 0, first.settlement  # the rest went back


def _fen(amount: Any) -> int:
    """Fen from a settlement's amount (`market.money`: a dict with `fen`, or a number)."""
    if isinstance(amount, dict):
        return int(amount["fen"])
    return int(amount)


def test_preempting_over_the_cli(platform: Platform) -> None:
    """`suanli preempt ID` asks the same as the API; a queued task cannot be preempted."""
    import subprocess
    import sys

    operator = platform.token(Role.OPERATOR, "ops")
    consumer = platform.token(Role.CONSUMER, "lab")
    task_id = submit(platform, consumer, job("nowhere", preemptible=True))  # no pool: queued
    done = subprocess.run(
        [sys.executable, "-m", "suanli", "preempt", task_id, "--server", platform.url],
        env={**os.environ, "SUANLI_TOKEN": operator},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "running" in done.stderr and "运行中" in done.stderr, done.stderr
    with httpx.Client(base_url=platform.url) as http:
        anonymous = http.post(f"/v1/tasks/{task_id}/preempt")
    assert anonymous.status_code == 401
