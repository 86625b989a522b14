"""Gang tasks on the platform, over HTTP on a real server: an agent's capacity per node sizes
its pool's nodes; a task of 2 nodes x 4 GPUs is placed whole on that pool and leased with its
nodes, device kind and model; a task of more nodes than any pool has stays queued, saying so."""

from __future__ import annotations

from typing import Any

from suanli.services.core import Role
from tests.waiting import poll

from .conftest import Platform, submit_body

NODE = {
    "cpus": 16,
    "free_cpus": 16,
    "gpus_by_model": {"a100": 4},
    "free_gpus_by_model": {"a100": 4},
}
CAPACITY = {
    "nodes": 2,
    "cpus": 32,
    "free_cpus": 32,
    "gpus": 8,
    "free_gpus": 8,
    "gpus_by_model": {"a100": 8},
    "per_node": [{"name": "n1", **NODE}, {"name": "n2", **NODE}],
}


def _gpu_site(platform: Platform, provider: str) -> tuple[str, str]:
    with platform.client(provider) as http:
        site = http.post("/v1/sites", json={"name": "gang site", "province": "贵州"})
        assert site.status_code == 201, site.text
        pool = http.post(
            "/v1/pools",
            json={
                "site_id": site.json()["id"],
                "device": "A100 SXM4",
                "count": 1,
                "price_fen_per_device_hour": 500,
            },
        )
        assert pool.status_code == 201, pool.text
    return site.json()["id"], pool.json()["id"]


def _gang(nodes: int) -> dict[str, Any]:
    body = submit_body("true")
    body.update(
        policy="cost",
        resources={"device_kind": "gpu", "devices": 4, "nodes": nodes, "duration_s": 60.0},
    )
    return body


def test_a_gang_is_placed_whole_on_a_pool_of_enough_nodes_and_leased_with_them(
    platform: Platform,
) -> None:
    provider = platform.token(Role.PROVIDER, "gang provider")
    consumer = platform.token(Role.CONSUMER, "gang lab")
    site, pool = _gpu_site(platform, provider)
    agent_token = platform.agent_token(provider, site)
    assert agent_token is not None
    with platform.client(agent_token) as agent:
        registered = agent.post("/v1/agents", json={"site_id": site, "name": "gang agent"})
        assert registered.status_code == 201, registered.text
        agent_id = registered.json()["id"]
        # a malformed node is refused by name and changes nothing
        bad = {**CAPACITY, "per_node": [{"name": "n1", **NODE, "cpus": -1}]}
        refused = agent.post(
            f"/v1/agents/{agent_id}/heartbeat", json={"running": [], "capacity": bad}
        )
        assert refused.status_code == 422 and "per_node" in refused.text, refused.text
        with platform.client(provider) as http:
            (untouched,) = [p for p in http.get("/v1/pools").json() if p["id"] == pool]
        assert (untouched["count"], untouched["devices_per_node"]) == (1, None)
        beat = agent.post(
            f"/v1/agents/{agent_id}/heartbeat", json={"running": [], "capacity": CAPACITY}
        )
        assert beat.status_code == 200, beat.text
    with platform.client(provider) as http:
        (row,) = [p for p in http.get("/v1/pools").json() if p["id"] == pool]
    assert (row["count"], row["devices_per_node"]) == (8, 4)

    with platform.client(consumer) as http:
        fits = http.post("/v1/tasks", json=_gang(2))
        too_many = http.post("/v1/tasks", json=_gang(3))
        assert fits.status_code == 201, fits.text
        assert too_many.status_code == 201, too_many.text

    def leased() -> list[dict[str, Any]] | None:
        with platform.client(agent_token) as agent:
            reply = agent.post(f"/v1/agents/{agent_id}/lease", json={"max": 10})
            assert reply.status_code == 200, reply.text
            return reply.json()["tasks"] or None

    tasks = poll(leased, timeout_s=30, every_s=0.2)
    assert tasks is not None, "the gang that fits was never leased"
    (task,) = tasks
    assert task["id"] == fits.json()["id"]
    assert (task["devices"], task["nodes"], task["device_kind"]) == (4, 2, "gpu")
    assert task["device"] == row["device"]

    with platform.client(consumer) as http:

        def reason() -> str | None:
            found = http.get(f"/v1/tasks/{too_many.json()['id']}").json()
            text = found.get("unplaced_reason") or ""
            return text if "nodes" in text else None

        why = poll(reason, timeout_s=30, every_s=0.2)
        assert why is not None and "on 3 nodes (4 each)" in why, why
        assert http.get(f"/v1/tasks/{too_many.json()['id']}").json()["state"] == "QUEUED"
