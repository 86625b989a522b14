"""The platform with two sites on real engines: one runs Slurm, one runs Ray (both started by
`make test` through scripts/slurm.sh and scripts/ray.sh). Tasks are placed on each by policy,
run there, are metered and settled; the Slurm site's pool is sized by `sinfo`; and an agent
killed mid-job and started again on the same work root finds its job again, so the job is
neither lost nor run twice.

An engine that cannot start fails these tests with its script's message, unless
SUANLI_SKIP_SLURM=1 / SUANLI_SKIP_RAY=1 (then they are skipped, saying why).
"""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest

from suanli.services import market
from suanli.services.core import Role, create_token
from suanli.store.db import make_engine, session_factory
from tests.integration.engines import RAY, SLURM
from tests.waiting import poll

from .conftest import Platform, submit_body

pytestmark = pytest.mark.slow
TERMINAL = {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED"}


@pytest.fixture(scope="module")
def partition() -> str:
    return SLURM.start()


@pytest.fixture(scope="module")
def ray_url() -> str:
    return RAY.start()


def _consumer_with_money(platform: Platform, fen: int) -> tuple[str, str]:
    engine = make_engine(platform.database_url)
    with session_factory(engine).begin() as session:
        row, token = create_token(session, Role.CONSUMER, "engines lab")
        operator = create_token(session, Role.OPERATOR, "engines ops")[0]
        market.credit(session, operator, row.id, fen)
        consumer_id = row.id
    engine.dispose()
    return consumer_id, token


def _order(platform: Platform, token: str, body: dict[str, object]) -> dict[str, str]:
    with platform.client(token) as http:
        quote = http.post("/v1/quotes", json=body)
        assert quote.status_code == 201, quote.text
        order = http.post(f"/v1/quotes/{quote.json()['id']}/accept", json={"option": 0})
        assert order.status_code == 201, order.text
        return {"order": order.json()["id"], "task": order.json()["task_id"]}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_slurm_and_ray_sites_run_settle_and_survive_an_agent_restart(
    platform: Platform, partition: str, ray_url: str
) -> None:
    provider = platform.token(Role.PROVIDER, "engines provider")
    # Slurm: cheap, in Guizhou; Ray: dear, in Shanghai, near the consumer
    slurm_site = platform.site_with_pool(provider, count=2, province="贵州", price=1_000)
    ray_site = platform.site_with_pool(provider, count=4, province="上海", price=30_000)
    slurm_root = platform.home / "slurm-agent"
    slurm_agent = platform.agent(
        provider,
        slurm_site,
        4,
        "--backend",
        "slurm",
        "--partition",
        partition,
        work_root=slurm_root,
    )
    platform.agent(provider, ray_site, 4, "--backend", "ray", "--ray-address", ray_url)
    _, consumer = _consumer_with_money(platform, 10_000_000)

    # each pool takes its size from its engine once its agent reports capacity: the Slurm
    # site's from sinfo (2 nodes of 16 CPUs), the Ray site's from Ray's nodes (2 of 4 CPUs)
    with platform.client(provider) as http:

        def pools_now() -> dict[str, dict[str, Any]]:
            return {p["site_id"]: p for p in http.get("/v1/pools").json()}

        def sized() -> dict[str, dict[str, Any]] | None:
            found = pools_now()
            both = found[slurm_site]["count"] != 2 and found[ray_site]["count"] != 4
            return found if both else None

        pools = poll(sized, timeout_s=30, every_s=0.5) or pools_now()
    assert (pools[slurm_site]["count"], pools[slurm_site]["devices_per_node"]) == (32, 16)
    assert pools[ray_site]["count"] == 8  # sized by Ray's resources: 2 nodes of 4 CPUs

    cheap = submit_body("sh", "-c", "echo on slurm; hostname > where")
    cheap.update(policy="cost", origin="上海", resources={"duration_s": 10.0})
    near = submit_body("sh", "-c", "echo on ray")
    near.update(
        policy="latency", origin="上海", latency_tier="interactive", resources={"duration_s": 10.0}
    )
    on_slurm, on_ray = _order(platform, consumer, cheap), _order(platform, consumer, near)
    for made, site in ((on_slurm, slurm_site), (on_ray, ray_site)):
        task = platform.wait_for(consumer, made["task"], TERMINAL, timeout=90)
        assert task["state"] == "COMPLETE", task
        assert task["site"] == site
        assert task["usage"]["wall_s"] > 0
        assert task["usage"]["device_s"] == pytest.approx(task["usage"]["wall_s"])
        with platform.client(consumer) as http:
            order = http.get(f"/v1/orders/{made['order']}").json()
        assert order["state"] == "SETTLED", order
    with platform.client(consumer) as http:
        assert http.get(f"/v1/tasks/{on_slurm['task']}/logs").json()["stdout_tail"] == "on slurm\n"
        assert http.get(f"/v1/tasks/{on_ray['task']}/logs").json()["stdout_tail"] == "on ray\n"

    # kill the Slurm agent while its job runs; start it again on the same work root
    long = submit_body("sh", "-c", "echo run >> runs; sleep 6; echo done")
    long.update(policy="cost", resources={"duration_s": 10.0})
    made = _order(platform, consumer, long)
    platform.wait_for(consumer, made["task"], {"RUNNING"}, timeout=60)
    os.killpg(slurm_agent.pid, signal.SIGKILL)
    slurm_agent.wait(timeout=10)
    platform.agent(
        provider,
        slurm_site,
        4,
        "--backend",
        "slurm",
        "--partition",
        partition,
        work_root=slurm_root,
    )
    task = platform.wait_for(consumer, made["task"], TERMINAL, timeout=90)
    assert task["state"] == "COMPLETE", task
    assert task["requeues"] == 0  # found again, not re-queued
    assert (slurm_root / made["task"] / "runs").read_text() == "run\n"  # ran once
    with platform.client(consumer) as http:
        assert http.get(f"/v1/tasks/{made['task']}/logs").json()["stdout_tail"] == "done\n"
        assert http.get(f"/v1/orders/{made['order']}").json()["state"] == "SETTLED"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_two_node_task_runs_on_the_slurm_site_and_settles_to_the_fen(
    platform: Platform, partition: str
) -> None:
    """A gang of 2 nodes x 1 CPU is placed on the Slurm site (its pool sized by `sinfo` per
    node: 2 nodes of 16 CPUs), runs on both nodes (srun: one line from each), COMPLETE, and its
    order settles on the device-seconds of both nodes, every fen accounted for; a gang of 3
    nodes stays queued, saying why."""
    provider = platform.token(Role.PROVIDER, "gang provider")
    # dear enough that a run of a second or two costs whole fen
    site = platform.site_with_pool(provider, count=2, province="贵州", price=1_000_000)
    platform.agent(provider, site, 4, "--backend", "slurm", "--partition", partition)
    _, consumer = _consumer_with_money(platform, 10_000_000)
    with platform.client(provider) as http:

        def sized() -> dict[str, Any] | None:
            (pool,) = [p for p in http.get("/v1/pools").json() if p["site_id"] == site]
            return pool if pool["devices_per_node"] is not None else None

        pool = poll(sized, timeout_s=30, every_s=0.5)
    assert pool is not None and (pool["count"], pool["devices_per_node"]) == (32, 16)

    gang = submit_body("sh", "-c", 'sleep 1; echo "rank on $SLURMD_NODENAME"')
    gang.update(policy="cost", resources={"devices": 1, "nodes": 2, "duration_s": 10.0})
    made = _order(platform, consumer, gang)
    too_big = submit_body("true")
    too_big.update(policy="cost", resources={"devices": 1, "nodes": 3, "duration_s": 10.0})
    with platform.client(consumer) as http:
        waiting = http.post("/v1/tasks", json=too_big)
        assert waiting.status_code == 201, waiting.text

    task = platform.wait_for(consumer, made["task"], TERMINAL, timeout=120)
    assert task["state"] == "COMPLETE", task
    assert task["site"] == site and task["devices"] == 2
    usage = task["usage"]
    assert usage["device_s"] == pytest.approx(2 * usage["wall_s"])  # both nodes' devices
    with platform.client(consumer) as http:
        lines = http.get(f"/v1/tasks/{made['task']}/logs").json()["stdout_tail"].splitlines()
        order = http.get(f"/v1/orders/{made['order']}").json()
    assert len(lines) == 2 and len(set(lines)) == 2, lines  # one from each node
    assert order["state"] == "SETTLED", order
    # every fen of the escrow is accounted for: charged (split among provider, platform and
    # network) or refunded; the charge is for both nodes' device-seconds
    fen = {k: v["fen"] for k, v in order["settlement"].items() if isinstance(v, dict)}
    assert fen["charge"] > 0
    assert fen["provider"] + fen["platform"] + fen["network"] == fen["charge"]
    assert fen["charge"] + fen["refund"] + fen["voucher_refund"] == order["escrow"]["fen"]

    with platform.client(consumer) as http:
        stays = http.get(f"/v1/tasks/{waiting.json()['id']}").json()
    assert stays["state"] == "QUEUED"
    assert "nodes ruled out" in (stays["unplaced_reason"] or ""), stays
