"""The digital twin: a hand-computed scenario, the decision step's actions in the replay (place,
wait for a cheaper or greener hour, stay queued, reject after the max wait), skipped ticks that
change nothing, conservation in every run, the policies' ordering on the openb trace, trace
loading, and the command line."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from suanli.catalog import Pool, find_site
from suanli.cli import app
from suanli.errors import InvalidValue
from suanli.metering import find_device
from suanli.scheduler import SiteSeries
from suanli.scheduler.series import carbon_shape
from suanli.sim.traces import Trace, TraceJob, load_generic, load_openb, load_trace, shape
from suanli.sim.twin import Network, national_network, run

CORE = find_device("cpu")  # 5 W per core (the generic profile); trace durations are on it


def three_sites() -> Network:
    """ZJK 100, HORINGER 200, YRD_DEMO 300 fen per core-hour; two cores each; flat series."""
    sites = {s: find_site(s) for s in ("ZJK", "HORINGER", "YRD_DEMO")}
    pools = tuple(
        Pool(f"{s}/cpu", s, CORE, 2, 2, price)
        for s, price in (("ZJK", 100), ("HORINGER", 200), ("YRD_DEMO", 300))
    )
    series = {
        s: SiteSeries(np.ones(24), np.full(24, site.grid_kgco2_per_kwh))
        for s, site in sites.items()
    }
    return Network(sites, pools, series)


def job(ident: str, submit: float, duration: float, cores: int) -> TraceJob:
    return TraceJob(ident, submit, duration, cores, "cpu", origin="北京")


def test_hand_computed_scenario() -> None:
    # j1 takes ZJK (cheapest); j2 and j3 follow into HORINGER and YRD_DEMO; j4 (t=60) takes
    # YRD_DEMO's last core; j5 (t=120) waits until j2 frees HORINGER at t=1800 and ends at 3600,
    # within its deadline (3720).
    trace = Trace(
        "hand",
        (
            job("j1", 0, 3600, 2),
            job("j2", 0, 1800, 2),
            job("j3", 0, 3600, 1),
            job("j4", 60, 3600, 1),
            replace(job("j5", 120, 1800, 2), deadline_s=3600.0),
        ),
        0,
        "hand",
    )
    result = run(trace, three_sites(), "cost")
    by = {o.job.id: o for o in result.outcomes}
    assert {k: (o.site, o.start_s, o.end_s) for k, o in by.items()} == {
        "j1": ("ZJK", 0, 3600),
        "j2": ("HORINGER", 0, 1800),
        "j3": ("YRD_DEMO", 0, 3600),
        "j4": ("YRD_DEMO", 60, 3660),
        "j5": ("HORINGER", 1800, 3600),
    }
    # cost = cores x fen per core-hour x hours
    assert {k: o.cost_fen for k, o in by.items()} == {
        "j1": 200,
        "j2": 200,
        "j3": 300,
        "j4": 300,
        "j5": 200,
    }
    # energy = cores x 0.005 kW x hours x PUE (ZJK, YRD_DEMO 1.25; HORINGER 1.2)
    assert by["j1"].energy_kwh == pytest.approx(2 * 0.005 * 1 * 1.25)
    assert by["j2"].energy_kwh == pytest.approx(2 * 0.005 * 0.5 * 1.2)
    assert by["j3"].energy_kwh == pytest.approx(0.005 * 1.25)
    # carbon = energy x grid factor x (1 - green share); HORINGER has 84.57% green power
    assert by["j1"].carbon_kg == pytest.approx(0.0125 * 0.7252)
    assert by["j2"].carbon_kg == pytest.approx(0.006 * 0.6849 * (1 - 0.8457))
    assert by["j3"].carbon_kg == pytest.approx(0.00625 * 0.55)
    m = result.metrics
    assert (m["tasks_total"], m["tasks_completed"], m["tasks_rejected"]) == (5, 5, 0)
    assert m["cost_fen"] == 1200
    assert m["wait_s_p50"] == 0 and by["j5"].start_s - by["j5"].job.submit_s == 1680
    assert m["sla_violations"] == {"interactive": 0, "standard": 0, "batch": 0}
    # decisions at 0, 60, 120 (submissions) and 1800 (a finish); the ticks between are skipped
    assert m["decide_calls"] == 4


def test_a_job_no_site_can_ever_run_stays_queued_until_the_max_wait() -> None:
    # like the live queue: no pool fits 3 cores, so it waits, and is rejected once it has waited
    # longer than max_wait_s (at the first tick after 3600 s), with the engine's last reason
    trace = Trace("big", (job("small", 0, 60, 1), job("huge", 0, 60, 3)), 0, "hand")
    result = run(trace, three_sites(), "cost", max_wait_s=3600.0)
    m = result.metrics
    assert (m["tasks_completed"], m["tasks_rejected"]) == (1, 1)
    assert m["rejected_reasons"] == {"waited too long": 1}
    reason = next(o.reason for o in result.outcomes if o.job.id == "huge")
    assert reason.startswith("waited too long: more than 1 h in the queue")
    assert "no pool of 北京 has 3 free cpu" in reason  # a batch job: no RTT budget
    assert "pool size ruled out 3" in reason
    # at 0, at 60 (small finishes: capacity grew), then at 3660: nothing changes in between
    assert m["decide_calls"] == 3


def test_a_gang_runs_whole_on_one_pool_of_enough_nodes_or_not_at_all() -> None:
    # ZJK (cheapest) is one node of 4 cores; HORINGER two nodes of 2; YRD_DEMO one node of 2.
    # A gang of 2 nodes x 2 cores fits only HORINGER; a gang of 3 nodes fits nowhere and is
    # rejected after the max wait with the reason; the same 4 cores on one node take ZJK.
    base = three_sites()
    pools = (
        replace(base.pools[0], count=4, free=4, devices_per_node=4),
        replace(base.pools[1], count=4, free=4, devices_per_node=2),
        replace(base.pools[2], devices_per_node=2),
    )
    network = replace(base, pools=pools)
    jobs = (
        replace(job("gang", 0, 600, 4), nodes=2),
        replace(job("three", 0, 600, 3), nodes=3),
        job("single", 0, 600, 4),
    )
    result = run(Trace("gangs", jobs, 0, "hand"), network, "cost", max_wait_s=3600.0)
    by = {o.job.id: o for o in result.outcomes}
    assert (by["gang"].state, by["gang"].pool) == ("completed", "HORINGER/cpu")
    assert (by["single"].state, by["single"].pool) == ("completed", "ZJK/cpu")
    assert by["three"].state == "rejected"
    assert "on 3 nodes (1 each)" in by["three"].reason and "nodes ruled out" in by["three"].reason


def test_a_generic_trace_names_a_gang_by_its_nodes() -> None:
    text = "submit_s,duration_s,devices,device_kind,nodes\n0,60,8,gpu,2\n"
    (gang,) = load_generic(text, "gangs.csv").jobs
    assert (gang.devices, gang.nodes) == (8, 2)
    with pytest.raises(InvalidValue, match="nodes >= 1 dividing devices"):
        load_generic("submit_s,duration_s,devices,device_kind,nodes\n0,60,3,gpu,2\n", "bad")


def test_a_deadline_reaches_the_engine() -> None:
    # 1800 s of work with 600 s to its deadline: no pool can finish it in time
    trace = Trace("late", (replace(job("late", 0, 1800, 1), deadline_s=600.0),), 0, "hand")
    result = run(trace, three_sites(), "cost", max_wait_s=600.0)
    (late,) = result.outcomes
    assert late.state == "rejected" and "deadline ruled out 3" in late.reason


def test_gpu_durations_are_on_the_platform_reference_device() -> None:
    # the trace's 3600 s are read on an A100 SXM4 (as resources.duration_s on the platform):
    # on an A100 pool the job runs exactly 3600 s
    site = find_site("ZJK")
    a100 = Pool("ZJK/a100", "ZJK", find_device("A100 SXM4"), 4, 4, 1000)
    network = Network({"ZJK": site}, (a100,), {})
    gpu_job = TraceJob("g", 0, 3600, 2, "gpu", origin="北京")
    (outcome,) = run(Trace("gpu", (gpu_job,), 0, "hand"), network, "cost").outcomes
    assert (outcome.pool, outcome.start_s, outcome.end_s) == ("ZJK/a100", 0, 3600)
    assert outcome.cost_fen == 2 * 1000


def greener_at_hour_3() -> Network:
    """One ZJK pool of two cores; the grid is 80% cleaner in hour 3 of every day."""
    site = find_site("ZJK")
    carbon = np.full(24, site.grid_kgco2_per_kwh)
    carbon[3] *= 0.2
    pool = Pool("ZJK/cpu", "ZJK", CORE, 2, 2, 100)
    return Network({"ZJK": site}, (pool,), {"ZJK": SiteSeries(np.ones(24), carbon)})


def test_a_deferrable_job_waits_for_the_greener_hour_once() -> None:
    flexible = replace(job("flex", 0, 3600, 1), deadline_s=6 * 3600.0, deferrable=True)
    rigid = replace(job("rigid", 0, 3600, 1), deadline_s=6 * 3600.0)
    trace = Trace("defer", (flexible, rigid), 0, "hand")
    result = run(trace, greener_at_hour_3(), "green")
    by = {o.job.id: o for o in result.outcomes}
    # WAIT until 03:00, then placed at that tick (no longer deferrable: it never waits twice)
    assert (by["flex"].state, by["flex"].start_s, by["flex"].end_s) == ("completed", 10800, 14400)
    assert by["flex"].deferred_s == 10800
    assert (by["rigid"].start_s, by["rigid"].deferred_s) == (0, 0)
    assert by["flex"].carbon_kg == pytest.approx(0.2 * by["rigid"].carbon_kg)
    assert result.metrics["tasks_deferred"] == 1
    # at 0, at 3600 (rigid finishes), at 10800 (the deferral ends); none between
    assert result.metrics["decide_calls"] == 3


def test_deferrable_slack_makes_batch_jobs_deferrable() -> None:
    trace = Trace("slack", (job("b", 0, 3600, 1),), 0, "hand")
    plain = run(trace, greener_at_hour_3(), "green")
    shifted = run(trace, greener_at_hour_3(), "green", deferrable_slack_s=4 * 3600.0)
    assert plain.outcomes[0].start_s == 0
    assert shifted.outcomes[0].start_s == 10800
    assert shifted.outcomes[0].job.deadline_s == 3600 + 4 * 3600.0


@pytest.mark.parametrize("policy", ["nearest", "green", "balanced"])
def test_skipped_ticks_decide_nothing(policy: str) -> None:
    # the replay that skips the ticks where every queued task is stuck gives the same outcome,
    # job by job, as the one that decides at every tick of the grid
    trace = shape(load_trace("openb"), limit=150, time_scale=0.01, seed=5)
    network = national_network(0.002)
    kwargs = {"max_wait_s": 2 * 3600.0, "deferrable_slack_s": 2 * 3600.0}
    fast = run(trace, network, policy, **kwargs)
    every = run(trace, network, policy, skip_stuck_ticks=False, **kwargs)

    def key(result):
        return [(o.job.id, o.state, o.pool, o.start_s, o.end_s) for o in result.outcomes]

    assert key(fast) == key(every)
    assert fast.metrics["decide_calls"] < every.metrics["decide_calls"]


@pytest.fixture(scope="module")
def openb_runs() -> dict[str, dict]:
    trace = shape(load_trace("openb"), limit=600, time_scale=0.01, seed=3)
    network = national_network()
    return {p: run(trace, network, p).metrics for p in ("nearest", "cost", "green", "balanced")}


def test_conservation_in_every_run(openb_runs: dict[str, dict]) -> None:
    for metrics in openb_runs.values():
        assert metrics["tasks_completed"] + metrics["tasks_rejected"] == metrics["tasks_total"]
        assert metrics["tasks_total"] == 600
        assert 0 <= metrics["west_share_gpu_hours"] <= 1
        assert 0 <= metrics["west_share_cpu_core_hours"] <= 1
        assert 0 < metrics["busy_share_gpu"] < 1 and 0 <= metrics["busy_share_cpu"] < 1
        # location-based carbon counts no declared green share: never below market-based
        assert metrics["carbon_location_kg"] >= metrics["carbon_kg"] > 0
        assert metrics["latency_ms_p50"] <= metrics["latency_ms_p99"]


def test_gpu_hours_and_cpu_core_hours_are_told_apart() -> None:
    """The west shares are computed per kind from the outcomes themselves: GPU-hours over
    GPU-hours, CPU core-hours over CPU core-hours."""
    trace = shape(load_trace("openb"), limit=300, time_scale=0.01, seed=2)
    network = national_network()
    result = run(trace, network, "green")
    hours = {"gpu": [0.0, 0.0], "cpu": [0.0, 0.0]}
    for o in result.outcomes:
        if o.state != "completed":
            continue
        assert o.start_s is not None and o.end_s is not None and o.site is not None
        kind = "cpu" if o.job.device_kind.lower() == "cpu" else "gpu"
        used = (o.end_s - o.start_s) * o.job.devices / 3600
        hours[kind][0] += used
        hours[kind][1] += used if network.sites[o.site].east_west == "west" else 0.0
    m = result.metrics
    assert hours["gpu"][0] > 0 and hours["cpu"][0] > 0  # openb has both
    assert m["gpu_hours"] == pytest.approx(hours["gpu"][0])
    assert m["cpu_core_hours"] == pytest.approx(hours["cpu"][0])
    assert m["west_share_gpu_hours"] == pytest.approx(hours["gpu"][1] / hours["gpu"][0])
    assert m["west_share_cpu_core_hours"] == pytest.approx(hours["cpu"][1] / hours["cpu"][0])


def test_the_policies_order_as_they_must_on_openb(openb_runs: dict[str, dict]) -> None:
    carbon = {p: m["carbon_kg"] for p, m in openb_runs.items()}
    cost = {p: m["cost_fen"] for p, m in openb_runs.items()}
    latency = {p: m["latency_ms_mean"] for p, m in openb_runs.items()}
    assert min(carbon, key=carbon.get) == "green"
    assert min(cost, key=cost.get) == "cost"
    assert min(latency, key=latency.get) == "nearest"
    gpu_west = {p: m["west_share_gpu_hours"] for p, m in openb_runs.items()}
    assert gpu_west["green"] > gpu_west["nearest"]


def test_energy_is_the_sum_of_the_tasks() -> None:
    trace = shape(load_trace("openb"), limit=200, time_scale=0.01, seed=1)
    result = run(trace, national_network(), "balanced")
    per_task = sum(o.energy_kwh for o in result.outcomes if o.state == "completed")
    assert result.metrics["energy_kwh"] == pytest.approx(per_task)


def test_openb_loader_maps_the_documented_rules() -> None:
    trace = load_trace("openb")
    assert len(trace.jobs) + trace.dropped == 8152
    kinds = {j.device_kind for j in trace.jobs}
    assert kinds == {"gpu", "cpu"}
    assert {j.latency_tier for j in trace.jobs} <= {"standard", "batch"}
    assert all(j.duration_s > 0 for j in trace.jobs)
    # the default variant names no GPU models; other variants do
    spec = (
        "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,"
        "deletion_time,scheduled_time\n"
        "p1,8000,1024,2,1000,V100M16|V100M32|G2,LS,Running,10,110,20\n"
        "p2,3500,1024,0,0,,BE,Running,0,50,5\n"
        "p3,1000,1024,1,500,,BE,Pending,0,,\n"
    )
    mapped = load_openb(spec)
    assert mapped.dropped == 1
    first, second = mapped.jobs
    assert (first.id, first.device_kind, first.devices, first.duration_s) == ("p2", "cpu", 4, 45)
    assert (second.device_models, second.latency_tier, second.duration_s) == (
        ("V100",),
        "standard",
        90,
    )


def test_generic_csv_and_shaping(tmp_path: Path) -> None:
    text = (
        "submit_s,duration_s,devices,device_kind,origin,latency_tier,deferrable\n"
        "100,60,1,cpu,上海,standard,\n0,30,2,gpu,,batch,true\n"
    )
    trace = load_generic(text, "mine.csv")
    assert [j.submit_s for j in trace.jobs] == [0, 100]
    assert [j.deferrable for j in trace.jobs] == [True, False]
    shaped = shape(trace, time_scale=0.5, seed=7)
    assert [j.submit_s for j in shaped.jobs] == [0, 50]
    assert shaped.jobs[1].origin == "上海" and shaped.jobs[0].origin is not None
    with pytest.raises(InvalidValue, match="submit_s"):
        load_generic("when,devices\n1,2\n", "bad.csv")


def test_the_western_carbon_shape_keeps_the_annual_mean() -> None:
    assert carbon_shape("宁夏").mean() == pytest.approx(1.0)
    assert carbon_shape("宁夏")[13] < carbon_shape("宁夏")[1]
    assert (carbon_shape("上海") == 1.0).all()


def test_sim_run_command(tmp_path: Path) -> None:
    out, report = tmp_path / "sim.json", tmp_path / "sim.html"
    result = CliRunner().invoke(
        app,
        [
            "sim",
            "run",
            "--trace",
            "openb",
            "--limit",
            "200",
            "--time-scale",
            "0.01",
            "--compare",
            "nearest,green",
            "--json",
            str(out),
            "--report",
            str(report),
        ],
    )
    assert result.exit_code == 0, result.output
    document = json.loads(out.read_text())
    for name in ("nearest", "green"):
        metrics = document["policies"][name]
        for key in (
            "tasks_total",
            "tasks_completed",
            "tasks_rejected",
            "cost_fen",
            "energy_kwh",
            "carbon_kg",
            "ceps",
            "wait_s_p50",
            "wait_s_p99",
            "sla_violations",
            "utilisation",
            "west_share_gpu_hours",
            "west_share_cpu_core_hours",
            "busy_share_gpu",
            "carbon_location_kg",
            "latency_ms_p99",
            "data_moved_gb",
            "wall_s",
            "events_per_s",
        ):
            assert key in metrics
    page = report.read_text()
    # the report's charts and its offline page: tests/unit/sim/test_report.py
    assert 'id="report-data"' in page and "Assumptions" in page
    assert "<script src" not in page and 'href="http' not in page  # offline: nothing loaded


def test_the_other_shipped_traces_load() -> None:
    from suanli.sim.traces import load_fleet

    dlrm = load_trace("dlrm")
    assert len(dlrm.jobs) + dlrm.dropped == 23871
    assert {j.latency_tier for j in dlrm.jobs} == {"interactive"}
    azure = load_trace("azure-llm")
    assert len(azure.jobs) == 8819 and azure.jobs[0].submit_s == 0.0
    philly = load_trace("philly")
    assert len(philly.jobs) + philly.dropped == 83154
    fleet = load_fleet()
    assert fleet["nvidia-h800-sxm5-80gb"] > 0 and fleet["nvidia-a800-sxm4-80gb"] > 0


def test_a_replicated_trace_is_the_trace_many_times_over() -> None:
    from suanli.sim.twin import COPY_OFFSET_S, replicate

    trace = shape(load_trace("openb"), limit=50, seed=1)
    three = replicate(trace, 3)
    assert len(three.jobs) == 150
    assert len({j.id for j in three.jobs}) == 150
    assert [j.submit_s for j in three.jobs] == sorted(j.submit_s for j in three.jobs)
    copy = {j.id: j for j in three.jobs}
    for job in trace.jobs:
        second = copy[f"{job.id}#2"]
        assert second.submit_s == job.submit_s + 2 * COPY_OFFSET_S
        assert (second.duration_s, second.devices, second.origin) == (
            job.duration_s,
            job.devices,
            job.origin,
        )
    assert replicate(trace, 1) is trace
    with pytest.raises(InvalidValue):
        replicate(trace, 0)


def test_a_compressed_trace_arrives_faster_with_the_same_jobs() -> None:
    from suanli.sim.twin import compress

    trace = shape(load_trace("openb"), limit=50, seed=1)
    fast = compress(trace, 2.5)
    assert [j.submit_s * 2.5 for j in fast.jobs] == pytest.approx([j.submit_s for j in trace.jobs])
    assert [replace(j, submit_s=0.0) for j in fast.jobs] == [
        replace(j, submit_s=0.0) for j in trace.jobs
    ]
    assert compress(trace, 1.0) is trace
    with pytest.raises(InvalidValue) as caught:
        compress(trace, 0.5)
    assert caught.value.field == "compression"


def test_sizing_for_a_utilisation_offers_that_share_of_the_gpus() -> None:
    """The sized network and copies offer `utilisation` of its GPUs (up to the rounding of pool
    sizes: the network is the least with enough GPUs), computed here by hand from the jobs."""
    from suanli.sim.twin import national_network, size_for_utilisation

    trace = shape(load_trace("openb"), limit=400, seed=1)
    for target in (0.3, 0.7):
        sizing = size_for_utilisation(trace, target)
        gpu_jobs = [j for j in trace.jobs if j.device_kind.lower() != "cpu"]
        # the shortest span holding 99% of the submissions, by brute force
        times = sorted(j.submit_s for j in trace.jobs)
        k = -(-99 * len(times) // 100)
        first, last = min(
            ((times[i], times[i + k - 1]) for i in range(len(times) - k + 1)),
            key=lambda w: w[1] - w[0],
        )
        window = last - first
        once = (
            sum(
                j.devices
                * max(
                    0.0,
                    min(j.submit_s + j.duration_s * sizing.stretch, last) - max(j.submit_s, first),
                )
                for j in gpu_jobs
            )
            / window
        )
        assert sizing.offered_gpus == pytest.approx(sizing.copies * once)
        network = national_network(sizing.scale)
        gpus = sum(p.count for p in network.pools if p.device.kind.value != "cpu")
        assert gpus == sizing.gpus
        assert sizing.offered_gpus / gpus <= target + 1e-9
        assert sizing.offered_gpus / gpus > target * 0.8  # the least network that is enough
        assert sizing.copies == 1 or sizing.offered_gpus / sizing.copies < target * gpus
    with pytest.raises(InvalidValue) as caught:
        size_for_utilisation(trace, 1.5)
    assert caught.value.field == "utilisation"


def test_stray_early_jobs_do_not_stretch_the_window_of_load() -> None:
    """openb's first 21 jobs arrive over 114 days before the other 7,234 arrive in 36: the
    window that sizing and the busy share average over is the shortest span holding 99% of the
    submissions, so the network is sized for the busy weeks, and a stray job still running
    then counts for the part of it inside the window."""
    from suanli.sim.twin import arrival_window, size_for_utilisation

    busy = [
        TraceJob(f"b{n}", 100 * 86400.0 + 60.0 * n, 1800.0, 1, "gpu", latency_tier="batch")
        for n in range(990)
    ]
    stray = [
        TraceJob(f"s{n}", 86400.0 * n, 200 * 86400.0, 1, "gpu", latency_tier="batch")
        for n in range(10)
    ]
    trace = Trace("stray", tuple(stray + busy), 0, "stray early jobs")
    assert arrival_window([j.submit_s for j in trace.jobs]) == (100 * 86400.0, busy[-1].submit_s)
    assert arrival_window([]) == (0.0, 0.0) and arrival_window([5.0]) == (5.0, 5.0)
    sizing = size_for_utilisation(trace, 0.5)
    window = busy[-1].submit_s - busy[0].submit_s
    # each busy job holds a GPU for its stretched half hour (the last ones past the window
    # count up to its end), each stray job the whole window
    inside = sum(min(j.duration_s * sizing.stretch, busy[-1].submit_s - j.submit_s) for j in busy)
    assert sizing.offered_gpus == pytest.approx(sizing.copies * (inside / window + 10))
    network = national_network(sizing.scale)
    result = run(trace, network, "balanced")
    assert result.metrics["tasks_completed"] == 1000
    gpus = sum(p.count for p in network.pools if p.device.kind.value != "cpu")
    used = sum(
        max(0.0, min(r.end_s, busy[-1].submit_s) - max(r.start_s, busy[0].submit_s))
        for r in result.outcomes
        if r.end_s is not None and r.start_s is not None
    )
    assert result.metrics["busy_share_gpu"] == pytest.approx(used / (gpus * window))


def test_a_trace_file_in_any_shipped_format_is_read(tmp_path: Path) -> None:
    """A copy of a shipped file elsewhere (the Azure conversation trace has the code trace's
    columns) is told by its header, or read as the format named; a wrong format names what the
    file lacks."""
    from importlib import resources

    from suanli.sim.traces import load_trace

    data = resources.files("suanli.sim").joinpath("data")
    azure = tmp_path / "AzureLLMInferenceTrace_conv.csv"
    azure.write_text(data.joinpath("AzureLLMInferenceTrace_code.csv").read_text("utf-8"))
    shipped = load_trace("azure-llm")
    for found in (load_trace(str(azure)), load_trace(str(azure), "azure-llm")):
        assert [j.duration_s for j in found.jobs] == [j.duration_s for j in shipped.jobs]
        assert found.name == azure.name
    dlrm = tmp_path / "dlrm.csv"
    dlrm.write_text(data.joinpath("disaggregated_DLRM_trace.csv").read_text("utf-8"))
    assert len(load_trace(str(dlrm)).jobs) == len(load_trace("dlrm").jobs)
    with pytest.raises(InvalidValue) as caught:
        load_trace(str(azure), "dlrm")
    assert caught.value.field == "format" and "lacks instance_sn" in str(caught.value)
    with pytest.raises(InvalidValue) as caught:
        load_trace(str(azure), "csv")
    assert caught.value.field == "format"
    ran = CliRunner().invoke(
        app,
        ["sim", "run", "--trace", str(azure), "--format", "azure-llm", "--limit", "40"],
    )
    assert ran.exit_code == 0, ran.output


def test_calibration_brings_the_busy_share_measured_to_the_one_asked_for() -> None:
    """Jobs prefer the fast GPUs, so the sizing alone leaves the network less busy than asked;
    a replay measures how much, arrivals are sped up by that ratio, and further replays
    interpolate until one measures within 2 points of the share asked for."""
    from suanli.sim.twin import calibrate, compress, sized_for

    rng = np.random.default_rng(7)
    arrivals = np.cumsum(rng.exponential(2.0, 4000))
    durations = rng.lognormal(6.5, 1.2, 4000)
    trace = Trace(
        "steady",
        tuple(
            TraceJob(f"s{n}", float(a), float(d), 1, "gpu")
            for n, (a, d) in enumerate(zip(arrivals, durations, strict=True))
        ),
        0,
        "Poisson arrivals",
    )
    calibrated, network, calibration = calibrate(trace, 0.7, "balanced")
    sized, same_network, sizing = sized_for(trace, 0.7)
    assert sizing == calibration.sizing and same_network.pools == network.pools
    measured = run(sized, network, "balanced").metrics["busy_share_gpu"]
    assert measured < 0.6  # the sizing alone falls short
    # the first replay is the sizing as it is, the second sped up by asked / measured
    assert calibration.replays[0] == (1.0, pytest.approx(measured))
    assert calibration.replays[1][0] == pytest.approx(0.7 / measured)
    assert calibration.sample_jobs == len(trace.jobs)
    assert [j.submit_s for j in calibrated.jobs] == [
        j.submit_s for j in compress(sized, calibration.factor).jobs
    ]
    # the factor kept is the replay closest to the ask, and a run at it measures what it said
    assert (calibration.factor, calibration.measured) in calibration.replays
    assert abs(calibration.measured - 0.7) == min(abs(m - 0.7) for _, m in calibration.replays)
    after = run(calibrated, network, "balanced").metrics["busy_share_gpu"]
    assert after == pytest.approx(calibration.measured)
    assert abs(after - 0.7) <= 0.02 or len(calibration.replays) == 4
    assert abs(after - 0.7) < 0.05
    # a prefix replays only its jobs (its short window weighs the start-up more: it is
    # calibrated on its own), and a bad sample size or count of replays is refused by name
    _, _, prefix = calibrate(trace, 0.7, "balanced", sample_jobs=2000, replays=2)
    assert prefix.sample_jobs == 2000 and len(prefix.replays) <= 2 and prefix.factor > 1
    for field, bad in (("sample_jobs", {"sample_jobs": 0}), ("replays", {"replays": 0})):
        with pytest.raises(InvalidValue) as caught:
            calibrate(trace, 0.7, "balanced", **bad)  # type: ignore[arg-type]
        assert caught.value.field == field


def test_sim_run_calibrates_a_sizing(tmp_path: Path) -> None:
    out = tmp_path / "sim.json"
    common = ["sim", "run", "--trace", "openb", "--limit", "60", "--time-scale", "0.05"]
    refused = CliRunner().invoke(app, [*common, "--calibrate"])
    assert refused.exit_code != 0 and "calibrate" in refused.output
    result = CliRunner().invoke(
        app, [*common, "--utilisation", "0.3", "--calibrate", "--json", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "replays under balanced" in " ".join(result.output.split())
    document = json.loads(out.read_text())
    assert document["compression"] >= 1.0 and document["sizing"]["utilisation"] == 0.3
