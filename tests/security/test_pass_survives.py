"""A scheduling pass survives any one task. Attack: a task the engine cannot take (stored before
input was validated, or by a bug) used to make every scheduling pass raise, so every other
consumer's task waited until someone cancelled the bad one. Now such a task is ended
SYSTEM_ERROR with the reason and the rest of the pass goes on."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from suanli.services.core import Role, create_token, new_id
from suanli.store.db import make_engine, session_factory
from suanli.store.models import TaskRow
from tests.integration.platform.conftest import Platform, submit_body


def _spec(**resources: Any) -> dict[str, Any]:
    """A native spec as the API would have stored it, with `resources` overridden."""
    return {
        "name": "poison",
        "executors": [{"command": ["true"], "env": {}, "workdir": None, "ignore_error": False}],
        "resources": {
            "devices": 1,
            "device_kind": "cpu",
            "device_models": None,
            "precision": "fp32",
            "work_flop": None,
            "duration_s": None,
            "memory_gb": 0.0,
            "disk_gb": 0.0,
            "workload": "general",
            **resources,
        },
        "latency_tier": "batch",
        "origin": "上海",
        "data_gb": 0.0,
        "deadline_s": None,
        "max_price_fen": None,
        "policy": None,
        "preemptible": False,
        "zones": None,
        "tags": {},
    }


def _insert_queued(platform: Platform, owner: str, specs: list[dict[str, Any]]) -> list[str]:
    """Queued tasks written straight into the database, as rows stored before validation."""
    engine = make_engine(platform.database_url)
    ids = []
    with session_factory(engine).begin() as session:
        moment = datetime.now(UTC)
        for spec in specs:
            row = TaskRow(
                id=new_id("task"),
                owner_id=owner,
                idempotency_key=None,
                name="poison",
                state="QUEUED",
                spec=spec,
                devices=spec["resources"]["devices"],
                policy=spec.get("policy") or "",
                pool_id=None,
                site_id=None,
                placement=None,
                unplaced_reason="waiting for a scheduling pass",
                agent_id=None,
                lease_expires_at=None,
                cancel_requested=False,
                requeues=0,
                created_at=moment,
                updated_at=moment,
            )
            session.add(row)
            ids.append(row.id)
    engine.dispose()
    return ids


def test_one_poisoned_task_does_not_stop_scheduling(platform: Platform) -> None:
    provider = platform.token(Role.PROVIDER, "dc")
    site = platform.site_with_pool(provider, count=4)
    engine = make_engine(platform.database_url)
    with session_factory(engine).begin() as session:
        attacker, attacker_token = create_token(session, Role.CONSUMER, "attacker")
        attacker_id = attacker.id
    engine.dispose()
    poisoned = _insert_queued(
        platform,
        attacker_id,
        [
            _spec(devices=-5),  # the engine's Task refuses it: reading the row raises
            {**_spec(), "latency_tier": "bogus"},  # not a tier: reading the row raises
            {**_spec(), "max_price_fen": 10**400},  # read fine; the engine's place() raises
        ],
    )
    platform.agent(provider, site, 2)
    victim = platform.token(Role.CONSUMER, "victim")
    with platform.client(victim) as http:
        good = [http.post("/v1/tasks", json=submit_body("true")).json()["id"] for _ in range(3)]
    for task_id in good:
        assert platform.wait_for(victim, task_id, {"COMPLETE"}, timeout=60)["state"] == "COMPLETE"
    for task_id in poisoned:
        task = platform.wait_for(attacker_token, task_id, {"SYSTEM_ERROR"}, timeout=30)
        assert task["state"] == "SYSTEM_ERROR", task
        assert task["unplaced_reason"].startswith("the scheduler cannot place this task"), task
    with platform.client(attacker_token) as http:
        states = [t["state"] for t in http.get("/v1/tasks").json()]
    assert states == ["SYSTEM_ERROR"] * 3
