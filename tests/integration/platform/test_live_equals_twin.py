"""Live equals twin ("Done when" of issue 14): one small trace replayed through the digital twin
and through a live server driven by a virtual clock gives the same decisions: the same pool and
the same start hour for every task, each task run exactly once.

The live side is the real app (`create_app` on a real SQLite file, and on PostgreSQL when
SUANLI_TEST_PG_URL is set) served by uvicorn on a loopback port from a thread, on a
`VirtualClock` that starts at a local (UTC+8) midnight. A provider registers sites on catalog
clusters and pools through the HTTP API; one agent per site registers with a site-scoped agent
token. The test then drives the hours: at each whole hour it moves the clock, reports COMPLETE
for every task whose run has ended (the agent API, as a real agent would), submits the jobs of
that hour (`POST /v1/tasks`), runs one scheduling pass (`Platform.schedule_once`, the body of
the server's scheduling loop, as the elected leader), and leases every task the pass placed,
reporting it RUNNING; agents heartbeat their running tasks every hour. No process runs:
a task "ends" when the virtual clock passes its placement's duration.

The twin side is `sim.twin.run` on a `Network` of the same catalog clusters and pools, on the
same month's series, with `tick_s` = 1 h, and the same task specs (`twin.job_spec`).

Alignments the test makes, each a rule of the live system the twin reproduces:
* ids: the twin's jobs carry the live task ids (the pool ids are mapped by cluster + device);
* queue order: the live queue is ordered by (submission time, task id); the twin's by trace
  order, so the trace lists jobs of one hour in task-id order (the engine's last tie-break is
  the submission order);
* one provider owns every site, so reputation (which the twin does not model) is the same for
  every pool.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import func, select

from suanli.api.app import Platform, create_app
from suanli.catalog import Pool, find_site
from suanli.clock import VirtualClock
from suanli.config import Settings
from suanli.metering import find_device
from suanli.scheduler.generate import capital_fen_per_device_hour, energy_fen_per_device_hour
from suanli.scheduler.series import network_series
from suanli.services.core import Role
from suanli.sim.traces import Trace, TraceJob
from suanli.sim.twin import Network, job_spec, run
from suanli.store.models import EventRow
from tests.integration.platform.conftest import free_port
from tests.money import principal_token
from tests.waiting import wait_until

HOUR = 3600.0
# 2026-01-10 00:00 China Standard Time: the series of both sides start at a local midnight
START = datetime(2026, 1, 9, 16, 0, tzinfo=UTC)
START_MONTH = 1
POLICIES = ("balanced", "green")  # both defer work here; all five decide alike

# (cluster, device, count): small pools, so that capacity binds
POOLS = (
    ("ZHONGWEI", "cpu", 16),
    ("ZHONGWEI", "A100 SXM4", 4),
    ("GUIAN", "cpu", 8),
    ("GUIAN", "T4", 4),
    ("YRD_DEMO", "cpu", 8),
    ("YRD_DEMO", "A100 SXM4", 4),
    ("SHAOGUAN", "cpu", 8),
)


def job(
    name: str,
    hour: int,
    hours: float,
    devices: int,
    kind: str = "cpu",
    *,
    models: tuple[str, ...] | None = None,
    origin: str = "北京",
    tier: str = "batch",
    deadline_h: float | None = None,
    deferrable: bool = False,
) -> TraceJob:
    return TraceJob(
        id=name,
        submit_s=hour * HOUR,
        duration_s=hours * HOUR,
        devices=devices,
        device_kind=kind,
        device_models=models,
        origin=origin,
        latency_tier=tier,
        deadline_s=None if deadline_h is None else deadline_h * HOUR,
        deferrable=deferrable,
    )


# The trace: a burst at midnight that overfills the CPU and A100 pools (jobs wait for
# capacity), interactive work from the east, deferrable batch work submitted at the morning
# and evening peaks with deadlines (time-of-use prices and the western midday carbon dip make
# waiting pay), and later arrivals that meet the running ones.
JOBS = (
    job("burst-1", 0, 3, 8),
    job("burst-2", 0, 3, 8, origin="上海"),
    job("burst-3", 0, 2, 8, origin="广州"),
    job("burst-4", 0, 4, 8, origin="成都"),
    job("burst-5", 0, 3, 8),
    job("burst-6", 0, 2, 8, origin="上海"),
    job("burst-7", 0, 1, 8),
    job("gpu-1", 0, 2, 4, "gpu", models=("A100 SXM4",)),
    job("gpu-2", 0, 3, 4, "gpu", models=("A100 SXM4",), origin="上海"),
    job("gpu-3", 0, 2, 4, "gpu", models=("A100 SXM4",)),
    job("gpu-any", 1, 2, 2, "gpu"),
    job("shell-sh", 2, 1, 1, origin="上海", tier="interactive"),
    job("shell-gz", 2, 1, 2, origin="广州", tier="standard"),
    job("night-1", 3, 2, 4, deadline_h=20, deferrable=True),
    job("peak-1", 9, 2, 4, origin="上海", deadline_h=16, deferrable=True),
    job("peak-2", 9, 2, 8, origin="上海", deadline_h=16, deferrable=True),
    job("peak-3", 9, 1, 2, origin="广州", deadline_h=10, deferrable=True),
    job("peak-gpu", 10, 2, 2, "gpu", models=("A100 SXM4",), deadline_h=20, deferrable=True),
    job("noon-1", 11, 3, 8, origin="成都", tier="standard"),
    job("noon-2", 11, 2, 8, origin="上海", tier="standard"),
    job("noon-3", 11, 1, 4),
    job("eve-1", 18, 2, 8, origin="上海", deadline_h=14, deferrable=True),
    job("eve-2", 18, 3, 8, deadline_h=14, deferrable=True),
    job("eve-3", 19, 1, 1, origin="广州", tier="interactive"),
    job("eve-gpu", 19, 3, 4, "gpu", models=("A100 SXM4",), deadline_h=12, deferrable=True),
    job("late-1", 22, 2, 8, deadline_h=30, deferrable=True),
    job("late-2", 22, 2, 8, origin="上海"),
)


def twin_network() -> Network:
    """The twin's network: the same catalog clusters and pools, priced as `national_network`
    prices its pools, with the series of the run's month from its first local midnight."""
    sites = {c: find_site(c) for c, _, _ in POOLS}
    pools = []
    for cluster, name, count in POOLS:
        device, site = find_device(name), sites[cluster]
        price = capital_fen_per_device_hour(device) + energy_fen_per_device_hour(
            device, site.pue, site.price_cny_per_kwh
        )
        pools.append(Pool(f"{cluster}/{device.id}", cluster, device, count, count, int(price)))
    return Network(sites, tuple(pools), network_series(sites, START_MONTH))


def price_of(cluster: str, name: str) -> int:
    """The twin's price of a pool (`twin_network`), given to the live pool too."""
    pool = next(p for p in twin_network().pools if p.id == f"{cluster}/{find_device(name).id}")
    return int(pool.price_fen_per_device_hour or 0)


@dataclass
class Started:
    """What the live side did with one task."""

    pool: str  # (cluster/device) of the pool the pass placed it on
    start_h: float  # the virtual hour of the pass that placed it
    end: datetime  # when its run ends (the placement's duration)
    site: str
    leased: int = 0


@dataclass
class Live:
    app: Any
    platform: Platform
    clock: VirtualClock
    url: str
    provider: str = ""
    consumer: str = ""
    sites: dict[str, str] = field(default_factory=dict)  # cluster -> live site id
    pools: dict[str, str] = field(default_factory=dict)  # live pool id -> cluster/device
    agents: dict[str, tuple[str, str]] = field(default_factory=dict)  # site -> (token, agent)

    def client(self, token: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, timeout=30, headers={"Authorization": f"Bearer {token}"}
        )


@pytest.fixture(params=POLICIES)
def policy(request: pytest.FixtureRequest) -> str:
    """The operator's policy on the live server, and the twin's."""
    return str(request.param)


@pytest.fixture
def live(database_url: str, policy: str, tmp_path: Path) -> Iterator[Live]:
    """The real app on `database_url` and a virtual clock, served on a loopback port; it does
    not run its own scheduling loop: the test runs the loop's pass at each virtual hour."""
    clock = VirtualClock(START)
    settings = Settings(
        home=tmp_path,
        database_url=database_url,
        policy=policy,
        heartbeat_s=HOUR,  # the test's agents beat once an hour (virtual)
        lease_s=4 * HOUR,
    )
    app = create_app(settings, run_scheduler=False, clock=clock)
    platform: Platform = app.state.platform
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    wait_until(lambda: server.started, "the server to start")
    try:
        yield Live(app, platform, clock, f"http://127.0.0.1:{port}")
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def make_token(live: Live, role: Role, name: str) -> str:
    with live.platform.unit_of_work() as session:
        _, token = principal_token(session, role, name)  # a consumer is funded
    return token


def set_up(live: Live) -> None:
    """A provider's sites and pools on the catalog clusters, one agent per site."""
    live.provider = make_token(live, Role.PROVIDER, "dc")
    live.consumer = make_token(live, Role.CONSUMER, "lab")
    with live.client(live.provider) as http:
        for cluster, name, count in POOLS:
            if cluster not in live.sites:
                made = http.post("/v1/sites", json={"name": cluster, "cluster": cluster})
                assert made.status_code == 201, made.text
                live.sites[cluster] = made.json()["id"]
            pool = http.post(
                "/v1/pools",
                json={
                    "site_id": live.sites[cluster],
                    "device": name,
                    "count": count,
                    "price_fen_per_device_hour": price_of(cluster, name),
                },
            )
            assert pool.status_code == 201, pool.text
            live.pools[pool.json()["id"]] = f"{cluster}/{find_device(name).id}"
        for site in live.sites.values():
            issued = http.post(f"/v1/sites/{site}/agent-tokens", json={"name": "agent"})
            assert issued.status_code == 201, issued.text
            token = issued.json()["token"]
            with live.client(token) as agent_http:
                agent = agent_http.post("/v1/agents", json={"site_id": site, "slots": 64})
                assert agent.status_code == 201, agent.text
            live.agents[site] = (token, agent.json()["id"])


def drive(live: Live, jobs: tuple[TraceJob, ...]) -> tuple[dict[str, Started], dict[str, str]]:
    """Replay `jobs` on the live server hour by hour; (task id -> what happened, job -> id)."""
    platform = live.platform
    assert platform.elector.step(), "the test's server leads the scheduling"
    started: dict[str, Started] = {}
    ids: dict[str, str] = {}
    running: dict[str, set[str]] = {site: set() for site in live.agents}
    last_submit_h = max(j.submit_s for j in jobs) / HOUR
    consumer = live.client(live.consumer)
    hour = 0
    while True:
        now = live.clock.set(START + timedelta(hours=hour))
        # 1. runs that have ended are reported COMPLETE by their site's agent
        for site, tasks in running.items():
            token, agent = live.agents[site]
            with live.client(token) as http:
                for task in sorted(tasks):
                    if started[task].end <= now:
                        done = http.post(
                            f"/v1/tasks/{task}/report",
                            json={"agent_id": agent, "state": "COMPLETE", "exit_code": 0},
                        )
                        assert done.status_code == 200, done.text
                        tasks.discard(task)
        # 2. this hour's submissions
        for j in jobs:
            if j.submit_s == hour * HOUR:
                spec = {"name": j.id, "executors": [{"command": ["true"]}], **job_spec(j)}
                made = consumer.post("/v1/tasks", json=spec)
                assert made.status_code == 201, made.text
                ids[j.id] = made.json()["id"]
        # 3. one pass of the server's scheduling loop, at this hour
        platform.elector.step()
        platform.schedule_once()
        # 4. what the pass placed is leased by its site's agent and reported RUNNING
        listed = consumer.get("/v1/tasks", params={"limit": 1000})
        assert listed.status_code == 200, listed.text
        for task in listed.json():
            if task["pool"] is None or task["id"] in started:
                continue
            assert task["state"] == "QUEUED", task
            end = now + timedelta(seconds=task["placement"]["duration_s"])
            started[task["id"]] = Started(live.pools[task["pool"]], float(hour), end, task["site"])
        for site, (token, agent) in live.agents.items():
            with live.client(token) as http:
                leased = http.post(f"/v1/agents/{agent}/lease", json={"max": 1000})
                assert leased.status_code == 200, leased.text
                for task in leased.json()["tasks"]:
                    ident = task["id"]
                    assert started[ident].site == site
                    started[ident].leased += 1
                    up = http.post(
                        f"/v1/tasks/{ident}/report", json={"agent_id": agent, "state": "RUNNING"}
                    )
                    assert up.status_code == 200, up.text
                    running[site].add(ident)
                beat = http.post(
                    f"/v1/agents/{agent}/heartbeat", json={"running": sorted(running[site])}
                )
                assert beat.status_code == 200, beat.text
        everything = consumer.get("/v1/tasks", params={"limit": 1000}).json()
        if hour >= last_submit_h and all(t["state"] == "COMPLETE" for t in everything):
            break
        hour += 1
        assert hour < 24 * 7, "the live replay did not finish within a virtual week"
    consumer.close()
    return started, ids


def test_the_twin_and_a_live_server_decide_alike(live: Live, policy: str) -> None:
    set_up(live)
    started, ids = drive(live, JOBS)

    # the twin, on the same trace with the live ids, jobs of one hour in task-id order
    by_id = {ids[j.id]: j for j in JOBS}
    trace_jobs = sorted(
        (replace(j, id=ids[j.id]) for j in JOBS),
        key=lambda j: (j.submit_s, j.id),
    )
    twin = run(Trace("replay", tuple(trace_jobs), 0, ""), twin_network(), policy, tick_s=HOUR)
    twin_decisions = {
        o.job.id: (o.pool, (o.start_s or 0.0) / HOUR) for o in twin.outcomes if o.pool
    }
    assert [o.state for o in twin.outcomes] == ["completed"] * len(JOBS)

    live_decisions = {task: (s.pool, s.start_h) for task, s in started.items()}
    named = {by_id[t].id: (live_decisions.get(t), twin_decisions.get(t)) for t in sorted(by_id)}
    differ = {name: pair for name, pair in named.items() if pair[0] != pair[1]}
    assert not differ, f"live and twin differ (live, twin): {differ}"

    # each task ran exactly once on the live side: placed once, leased once, completed
    assert set(started) == set(by_id)
    assert all(s.leased == 1 for s in started.values())
    with live.platform.unit_of_work(write=False) as session:
        placed = dict(
            session.execute(
                select(EventRow.subject, func.count())
                .where(EventRow.kind == "task.placed")
                .group_by(EventRow.subject)
            ).all()
        )
        deferred_live = set(
            session.scalars(select(EventRow.subject).where(EventRow.kind == "task.deferred"))
        )
    assert placed == dict.fromkeys(by_id, 1)

    # the trace exercised what it is for: the same tasks deferred (WAIT) on both sides, and
    # tasks that waited for capacity
    deferred = {o.job.id for o in twin.outcomes if o.deferred_s > 0}
    assert deferred_live == deferred
    waited = [o for o in twin.outcomes if o.job.id not in deferred and o.start_s != o.job.submit_s]
    assert deferred and waited, (len(deferred), len(waited))
