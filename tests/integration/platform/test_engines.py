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

    # the Slurm site's pool takes its size from sinfo (the test cluster declares 16 CPUs)
    with platform.client(provider) as http:

        def pools_now() -> dict[str, dict[str, Any]]:
            return {p["site_id"]: p for p in http.get("/v1/pools").json()}

        def sized() -> dict[str, dict[str, Any]] | None:
            found = pools_now()
            return found if found[slurm_site]["count"] != 2 else None

        pools = poll(sized, timeout_s=30, every_s=0.5) or pools_now()
    assert pools[slurm_site]["count"] == 16
    assert pools[ray_site]["count"] == 4  # sized by Ray's resources: the head declares 4 CPUs

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
