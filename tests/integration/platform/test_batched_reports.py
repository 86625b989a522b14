"""Batched reports (`POST /v1/agents/{id}/reports`) against a real server, on SQLite and
PostgreSQL: each report in a batch is applied on its own, as the single route would apply it,
so a refused one (a task the agent does not hold, an unknown task, a report after the end)
leaves the others done and changes nothing itself; a batch over the limit is refused by name.
"""

from __future__ import annotations

from typing import Any

import pytest

from suanli.api.schemas import MAX_REPORTS
from suanli.services.core import Role
from tests.integration.platform.conftest import Platform, submit_body


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_each_report_of_a_batch_stands_alone(platform: Platform) -> None:
    provider = platform.token(Role.PROVIDER, "provider")
    consumer = platform.token(Role.CONSUMER, "consumer")
    site = platform.site_with_pool(provider, count=3)
    with platform.client(consumer) as http:
        ids = []
        for name in ("a", "b", "other"):
            created = http.post(
                "/v1/tasks", json=submit_body("true", name=name, resources={"duration_s": 60})
            )
            assert created.status_code == 201, created.text
            ids.append(created.json()["id"])
    with platform.client(provider) as agent:
        agents = []
        for name in ("mine", "theirs"):
            registered = agent.post(
                "/v1/agents", json={"site_id": site, "name": name, "slots": 3, "backend": "local"}
            )
            assert registered.status_code == 201, registered.text
            agents.append(registered.json()["id"])
        me, them = agents
        held: dict[str, list[str]] = {me: [], them: []}
        for _ in range(20):  # long-polls until the pass has placed all three
            for who, want in ((me, 2), (them, 1)):
                if len(held[who]) < want:
                    answer = agent.post(f"/v1/agents/{who}/lease", json={"max": 1, "wait_s": 2})
                    held[who] += [t["id"] for t in answer.json()["tasks"]]
            if len(held[me]) == 2 and len(held[them]) == 1:
                break
        assert sorted(held[me] + held[them]) == sorted(ids)
        first, second = held[me]
        theirs = held[them][0]
        usage = {"wall_s": 3.0, "cpu_s": 1.0, "device_s": 3.0}
        reports: list[dict[str, Any]] = [
            {"task_id": first, "state": "RUNNING"},
            {"task_id": second, "state": "RUNNING"},
            {"task_id": theirs, "state": "COMPLETE", "exit_code": 0, "usage": usage},
            {"task_id": "no-such-task", "state": "RUNNING"},
            {"task_id": first, "state": "COMPLETE", "exit_code": 0, "usage": usage},
            {"task_id": first, "state": "EXECUTOR_ERROR", "exit_code": 1},  # after its end
            {"task_id": second, "state": "EXECUTOR_ERROR", "exit_code": 3, "usage": usage},
        ]
        answer = agent.post(f"/v1/agents/{me}/reports", json={"reports": reports})
        assert answer.status_code == 200, answer.text
        results = answer.json()["results"]
        assert [(r["task_id"], r["status"], r["state"]) for r in results] == [
            (first, 200, "RUNNING"),
            (second, 200, "RUNNING"),
            (theirs, 409, None),
            ("no-such-task", 404, None),
            (first, 200, "COMPLETE"),
            (first, 409, None),
            (second, 200, "EXECUTOR_ERROR"),
        ]
        assert "does not hold" in results[2]["detail"]

        too_many = [{"task_id": first, "state": "RUNNING"}] * (MAX_REPORTS + 1)
        refused = agent.post(f"/v1/agents/{me}/reports", json={"reports": too_many})
        assert refused.status_code == 422, refused.text
        assert "reports" in str(refused.json().get("field", refused.json()))
        unknown = agent.post(f"/v1/agents/{me}/reports", json={"reports": [], "extra": 1})
        assert unknown.status_code == 422, unknown.text
    with platform.client(consumer) as http:
        done = {t: http.get(f"/v1/tasks/{t}").json() for t in ids}
    assert done[first]["state"] == "COMPLETE" and done[first]["exit_code"] == 0
    assert done[first]["usage"]["device_s"] == 3.0
    assert done[second]["state"] == "EXECUTOR_ERROR" and done[second]["exit_code"] == 3
    # the other agent's task: the refused report changed nothing
    assert done[theirs]["state"] in ("INITIALIZING", "RUNNING"), done[theirs]
    assert done[theirs]["usage"] is None
