"""Benchmark of the scheduler: greedy and flow throughput and quality, peak memory, the MILP's
solve time, and every solver's gap to the MILP and to its own bound, all in the same run.

Prints figures and writes them to benchmarks/results/scheduler.json (`--quick`: only the small
sizes, written to scheduler_quick.json so a smoke check never overwrites the full figures).
Nothing here is asserted: timings depend on the machine and its load (this project's reference
is 2 cores, shared).

Instances come from `suanli.scheduler.generate.generate_problem` (seeded, so every run sees the
same problems). Timings are `time.perf_counter()` around `place(...)` only; generating and
parsing the problem are timed and reported separately. Peak memory is the `ru_maxrss` of a
child process that generates, parses and places the largest instance
(`resource.getrusage(RUSAGE_CHILDREN)`), so it includes generation and parsing; the child also
reports its own peak before `place()` was first called.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SEED = 2026
GREEDY_SIZES = ((10_000, 100), (100_000, 1_000))  # tasks x pools
LIMIT_SIZES = ((20_000, 100), (2_000, 1_000))  # the flow solver at its size limit
GREEDY_POLICIES = ("balanced", "cost", "green")
SOLVERS = ("greedy", "flow")  # flow above its FLOW_MAX_PAIRS on arcs priced in
INCREMENTAL_NEW = 1_000  # new tasks of a pass on top of the rest of the large batch, placed
INCREMENTAL_RUNS = 7
OPTIMAL_SIZE = (1_000, 100)
OPTIMAL_TIME_LIMIT_S = 60.0
BASELINE_SIZE = (10_000, 100)
BASELINE_POLICIES = ("nearest", "cost", "green")


def _progress(text: str) -> None:
    """A progress line on stderr (stdout of the child carries its JSON result)."""
    sys.stdout.flush()
    print(f"... {text}", file=sys.stderr, flush=True)


def _instance(n_tasks: int, n_pools: int, seed: int) -> tuple[Any, float, float]:
    """The parsed problem and the seconds spent generating and parsing it."""
    from suanli.scheduler.generate import generate_problem
    from suanli.scheduler.problem import parse_problem

    start = time.perf_counter()
    document = generate_problem(n_tasks, n_pools, seed)
    generated = time.perf_counter()
    problem = parse_problem(document)
    parsed = time.perf_counter()
    return problem, generated - start, parsed - generated


def _place(problem: Any, policy: str, solver: str, **options: float) -> tuple[Any, float]:
    from suanli.scheduler import POLICIES, place

    start = time.perf_counter()
    plan = place(
        problem.tasks, problem.snapshot, POLICIES[policy], problem.now_s, solver=solver, **options
    )
    return plan, time.perf_counter() - start


def _greedy_rows(problem: Any, n_tasks: int, n_pools: int) -> list[dict[str, Any]]:
    """Every solver of SOLVERS on every policy of GREEDY_POLICIES (the flow solver above its
    FLOW_MAX_PAIRS on arcs priced in, `scheduler.pricing`)."""
    rows = []
    for policy in GREEDY_POLICIES:
        for solver in SOLVERS:
            _progress(f"{solver} {policy} on {n_tasks:,} x {n_pools:,}")
            plan, seconds = _place(problem, policy, solver)
            bound = plan.solver.lower_bound
            rows.append(
                {
                    "tasks": n_tasks,
                    "pools": n_pools,
                    "policy": policy,
                    "solver": solver,
                    "seconds": round(seconds, 3),
                    "tasks_per_s": round(n_tasks / seconds),
                    "placed": len(plan.placements),
                    "unplaced": len(plan.unplaced),
                    "objective": plan.solver.objective,
                    "lower_bound": bound,
                    "gap_to_bound": None if not bound else plan.solver.objective / bound - 1.0,
                }
            )
    return rows


def _child_large(seed: int) -> None:
    """Run in a child process: the largest greedy instance; one JSON object on stdout."""
    n_tasks, n_pools = GREEDY_SIZES[-1]
    _progress(f"child: generating and parsing {n_tasks:,} tasks x {n_pools:,} pools")
    problem, generate_s, parse_s = _instance(n_tasks, n_pools, seed)
    before_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rows = _greedy_rows(problem, n_tasks, n_pools)
    incremental = _incremental_rows(problem)
    floors = _floors(problem)
    print(
        json.dumps(
            {
                "floors": floors,
                "generate_s": generate_s,
                "parse_s": parse_s,
                "rss_before_place_mib": before_kib / 1024,
                "greedy": rows,
                "incremental": incremental,
            }
        )
    )


def _incremental_rows(problem: Any) -> list[dict[str, Any]]:
    """A pass over INCREMENTAL_NEW new tasks on a busy network: the batch's other tasks
    placed first (greedy, `cost`), their devices taken from the pools; then the new tasks
    placed by `auto` (the flow at this size) and greedy on every policy, INCREMENTAL_RUNS
    times each (the median and the least reported)."""
    import dataclasses
    import statistics

    from suanli.scheduler import POLICIES, place

    state, new = problem.tasks[:-INCREMENTAL_NEW], problem.tasks[-INCREMENTAL_NEW:]
    _progress(f"incremental: placing the {len(state):,} tasks of the state")
    plan = place(state, problem.snapshot, POLICIES["cost"], problem.now_s, solver="greedy")
    devices = {task.id: task.devices for task in state}
    taken: dict[str, int] = {}
    for placement in plan.placements:
        taken[placement.pool] = taken.get(placement.pool, 0) + devices[placement.task]
    pools = tuple(
        dataclasses.replace(pool, free=pool.free - taken.get(pool.id, 0))
        for pool in problem.snapshot.pools
    )
    snapshot = dataclasses.replace(problem.snapshot, pools=pools)
    rows = []
    for policy in GREEDY_POLICIES:
        for solver in ("auto", "greedy"):
            _progress(f"incremental: {solver} {policy}, {len(new):,} new tasks")
            seconds = []
            for _ in range(INCREMENTAL_RUNS):
                start = time.perf_counter()
                result = place(new, snapshot, POLICIES[policy], problem.now_s, solver=solver)
                seconds.append(time.perf_counter() - start)
            rows.append(
                {
                    "policy": policy,
                    "solver": solver,
                    "ran": result.solver.name,
                    "state_tasks": len(plan.placements),
                    "new_tasks": len(new),
                    "free_devices": sum(pool.free for pool in pools),
                    "pools_with_room": sum(pool.free > 0 for pool in pools),
                    "median_ms": round(1000 * statistics.median(seconds), 1),
                    "least_ms": round(1000 * min(seconds), 1),
                    "placed": len(result.placements),
                    "objective": result.solver.objective,
                    "status": result.solver.status,
                }
            )
    return rows


def _floors(problem: Any) -> dict[str, Any]:
    """What any `place()` of this batch pays before and after its solver decides anything,
    measured here: the limit its throughput is judged against.

    - input: `task_arrays`, the batch's tasks as columns (every solver starts there);
    - output: building the plan's `Placement`s and `Breakdown`s from values already computed
      (the fields of the greedy plan of this batch, taken apart first, outside the timer);
    - scores: every task scored once against the pools of its class with room (`evaluate`,
      the exact objective every solver shares), in the blocks greedy uses;
    - flow: OR-Tools' min-cost flow (`flow.solve_tasks`, no load term, no dual prices) on the
      smallest network with a node per task that still gives each a runner-up: its two
      cheapest arcs of those scores. A plan within 1% of the bound on `green` needs a flow
      over the tasks (greedy is tens of percent off there), and a class cannot stand for its
      tasks: they differ in devices, work and data, so in cost.
    """
    import numpy as np

    from suanli.scheduler import POLICIES, engine, flow, place
    from suanli.scheduler.arrays import evaluate, groups_of, pool_arrays, task_arrays
    from suanli.scheduler.model import Breakdown, Placement

    tasks, snapshot, now = problem.tasks, problem.snapshot, problem.now_s
    policy = POLICIES["cost"]
    _progress(f"floors: input, output and scores of {len(tasks):,} tasks")
    pools = pool_arrays(snapshot)
    start = time.perf_counter()
    t = task_arrays(tasks, snapshot, pools)
    input_s = time.perf_counter() - start
    plan = place(tasks, snapshot, policy, problem.now_s, solver="greedy")
    fields = [
        (
            [getattr(x, f) for f in Placement.__slots__ if f != "breakdown"],
            [getattr(x.breakdown, f) for f in Breakdown.__slots__],
        )
        for x in plan.placements
    ]
    start = time.perf_counter()
    for (task, pool, site, start_s, end_s, score, runner, waited, *saved), made in fields:
        Placement(task, pool, site, start_s, end_s, Breakdown(*made), score, runner, waited, *saved)
    output_s = time.perf_counter() - start
    class_of, representatives = engine._classes(t)
    columns = engine._class_columns(t, pools, representatives)
    cells = 0
    two: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # task, pool, score
    start = time.perf_counter()
    for members in groups_of(class_of):
        cols = columns[int(class_of[members[0]])]
        if len(cols) == 0:
            continue
        step = engine._blocks(len(members), len(cols))
        for first in range(0, len(members), step):
            rows = members[first : first + step]
            score = evaluate(
                t, rows, pools, snapshot, policy, now, cols=cols[None, :], same_class=True
            ).score
            cells += score.size
            if len(cols) >= 2:
                best = np.argpartition(score, 1, axis=1)[:, :2]
                two.append(
                    (
                        np.repeat(rows, 2),
                        cols[best].ravel(),
                        np.take_along_axis(score, best, axis=1).ravel(),
                    )
                )
    scores_s = time.perf_counter() - start
    task, pool, score = (np.concatenate(column) for column in zip(*two, strict=True))
    finite = np.isfinite(score)
    order = np.argsort(task[finite], kind="stable")
    arcs = flow.Arcs(task[finite][order], pool[finite][order], score[finite][order])
    _progress(f"floors: a min-cost flow on {len(arcs.task):,} arcs")
    start = time.perf_counter()
    network = flow.solve_tasks(
        arcs, t.devices.astype(np.int64), flow._penalty(arcs), pools, 0.0, with_prices=False
    )
    flow_s = time.perf_counter() - start
    n = len(tasks)
    return {
        "tasks": n,
        "placements": len(fields),
        "input_s": round(input_s, 3),
        "output_s": round(output_s, 3),
        "scores_s": round(scores_s, 3),
        "cells_scored": cells,
        "flow_arcs": len(arcs.task),
        "flow_s": round(flow_s, 3),
        "flow_status": network.status,
        "tasks_per_s_input_output": round(n / (input_s + output_s)),
        "tasks_per_s_all_three": round(n / (input_s + output_s + scores_s)),
    }


def _print_floors(f: dict[str, Any]) -> None:
    label = f"floors of any place(), {f['tasks']:,} tasks"
    print(
        f"{label:<44} {f['tasks_per_s_all_three']:>12,} tasks/s at most  (input "
        f"{f['input_s']:.2f} s + output {f['output_s']:.2f} s [{f['tasks_per_s_input_output']:,}"
        f" tasks/s] + scoring {f['cells_scored'] / 1e6:.1f}M feasible pairs once "
        f"{f['scores_s']:.2f} s; no solver time)"
    )
    label = f"floor of a flow over {f['tasks']:,} tasks"
    print(
        f"{label:<44} {f['tasks'] / f['flow_s']:>12,.0f} tasks/s at most  (OR-Tools min-cost "
        f"flow on {f['flow_arcs']:,} arcs, two per task: {f['flow_s']:.2f} s, {f['flow_status']})"
    )


def _print_incremental(rows: list[dict[str, Any]]) -> None:
    for r in rows:
        label = f"pass of {r['new_tasks']:,} new: {r['solver']} {r['policy']}"
        print(
            f"{label:<44} {r['median_ms']:>9.1f} ms median ({r['least_ms']:.1f} least; "
            f"{r['placed']:,} placed on a state of {r['state_tasks']:,} tasks, "
            f"{r['pools_with_room']:,} pools with room; {r['ran']}: {r['status']})"
        )


def _print_greedy(rows: list[dict[str, Any]]) -> None:
    for r in rows:
        label = f"{r['solver']} {r['policy']} {r['tasks']:,} x {r['pools']:,}"
        if "skipped" in r:
            print(f"{label:<44} skipped: {r['skipped']}")
            continue
        gap = r["gap_to_bound"]
        print(
            f"{label:<44} {r['tasks_per_s']:>12,} tasks/s   ({r['seconds']:.2f} s; "
            f"{r['placed']:,} placed, {r['unplaced']:,} unplaced; objective "
            f"{r['objective']:,.5g}" + ("" if gap is None else f", {gap:+.3%} over its bound") + ")"
        )


def _print_instance(n_tasks: int, n_pools: int, generate_s: float, parse_s: float) -> None:
    label = f"generate + parse {n_tasks:,} x {n_pools:,}"
    print(f"{label:<44} {generate_s:>9.2f} s + {parse_s:.2f} s")


def _gap(greedy: float, optimal: float) -> float | None:
    return None if optimal == 0 else (greedy - optimal) / abs(optimal)


def _optimal_rows(seed: int) -> list[dict[str, Any]]:
    from suanli.scheduler import POLICIES
    from suanli.scheduler.optimal import solve_optimal  # noqa: F401  (import SciPy untimed)

    n_tasks, n_pools = OPTIMAL_SIZE
    problem, generate_s, parse_s = _instance(n_tasks, n_pools, seed)
    _print_instance(n_tasks, n_pools, generate_s, parse_s)
    rows = []
    for policy in POLICIES:
        _progress(f"optimal {policy} on {n_tasks:,} x {n_pools:,}")
        optimal, seconds = _place(problem, policy, "optimal", time_limit_s=OPTIMAL_TIME_LIMIT_S)
        greedy, greedy_s = _place(problem, policy, "greedy")
        flow, flow_s = _place(problem, policy, "flow")
        gap = _gap(greedy.solver.objective, optimal.solver.objective)
        flow_gap = _gap(flow.solver.objective, optimal.solver.objective)
        row = {
            "policy": policy,
            "seconds": round(seconds, 3),
            "status": optimal.solver.status,
            "objective": optimal.solver.objective,
            "lower_bound": optimal.solver.lower_bound,
            "placed": len(optimal.placements),
            "greedy_seconds": round(greedy_s, 3),
            "greedy_objective": greedy.solver.objective,
            "greedy_placed": len(greedy.placements),
            "gap": gap,
            "flow_seconds": round(flow_s, 3),
            "flow_objective": flow.solver.objective,
            "flow_lower_bound": flow.solver.lower_bound,
            "flow_placed": len(flow.placements),
            "flow_gap": flow_gap,
        }
        rows.append(row)
        label = f"optimal {policy} {n_tasks:,} x {n_pools:,}"
        print(
            f"{label:<44} {seconds:>9.2f} s    objective {optimal.solver.objective:,.6g}, "
            f"{len(optimal.placements):,} placed ({optimal.solver.status})"
        )
        for name, plan, took, off in (
            ("flow", flow, flow_s, flow_gap),
            ("greedy", greedy, greedy_s, gap),
        ):
            gap_text = "n/a" if off is None else f"{off:+.3%}"
            print(
                f"  {name:<42} {took:>9.2f} s    gap to the MILP {gap_text} "
                f"(objective {plan.solver.objective:,.6g}; {len(plan.placements):,} placed)"
            )
    return rows


def _baseline_rows(problem: Any) -> list[dict[str, Any]]:
    n_tasks, n_pools = BASELINE_SIZE
    rows = []
    for policy in BASELINE_POLICIES:
        _progress(f"greedy {policy} on {n_tasks:,} x {n_pools:,} (baseline comparison)")
        plan, _ = _place(problem, policy, "greedy")
        rows.append(
            {
                "policy": policy,
                "placed": len(plan.placements),
                "cost_fen": plan.cost_fen,
                "carbon_kg": plan.carbon_kg,
                "energy_kwh": plan.energy_kwh,
            }
        )
    nearest = rows[0]
    for r in rows:
        r["cost_vs_nearest"] = r["cost_fen"] / nearest["cost_fen"] - 1.0
        r["carbon_vs_nearest"] = r["carbon_kg"] / nearest["carbon_kg"] - 1.0
        label = f"{r['policy']} plan {n_tasks:,} x {n_pools:,} (greedy)"
        print(
            f"{label:<44} {r['cost_fen'] / 100:>12,.0f} CNY {r['carbon_kg']:>12,.0f} kg CO2 "
            f"({r['cost_vs_nearest']:+.1%} cost, {r['carbon_vs_nearest']:+.1%} carbon vs "
            f"nearest; {r['placed']:,} placed)"
        )
    return rows


def _large(seed: int) -> dict[str, Any]:
    n_tasks, n_pools = GREEDY_SIZES[-1]
    _progress(f"child process: {n_tasks:,} x {n_pools:,} (several minutes)")
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child-large", "--seed", str(seed)],
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    )
    child = json.loads(done.stdout.strip().splitlines()[-1])
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    _print_instance(n_tasks, n_pools, child["generate_s"], child["parse_s"])
    _print_greedy(child["greedy"])
    _print_incremental(child["incremental"])
    _print_floors(child["floors"])
    label = f"peak RSS, child {n_tasks:,} x {n_pools:,}"
    print(
        f"{label:<44} {peak_mib:>12.1f} MiB  ({child['rss_before_place_mib']:.1f} MiB "
        "after generate + parse, before place)"
    )
    return {
        "tasks": n_tasks,
        "pools": n_pools,
        "generate_s": round(child["generate_s"], 3),
        "parse_s": round(child["parse_s"], 3),
        "greedy": child["greedy"],
        "incremental": child["incremental"],
        "floors": child["floors"],
        "peak_memory": {
            "method": "ru_maxrss of a child process (resource.RUSAGE_CHILDREN); the child "
            "generates, parses and places (greedy on balanced, cost and green; flow where it "
            "takes the batch)",
            "peak_rss_mib": round(peak_mib, 1),
            "rss_before_place_mib": round(child["rss_before_place_mib"], 1),
        },
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the small sizes")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--child-large", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_large:
        _child_large(args.seed)
        return

    n_tasks, n_pools = GREEDY_SIZES[0]
    _progress(f"generating and parsing {n_tasks:,} tasks x {n_pools:,} pools")
    problem, generate_s, parse_s = _instance(n_tasks, n_pools, args.seed)
    _print_instance(n_tasks, n_pools, generate_s, parse_s)
    small = _greedy_rows(problem, n_tasks, n_pools)
    _print_greedy(small)
    baseline = _baseline_rows(problem)
    at_limit: list[dict[str, Any]] = []
    for size in () if args.quick else LIMIT_SIZES:
        instance, _, _ = _instance(*size, args.seed)
        rows = _greedy_rows(instance, *size)
        _print_greedy(rows)
        at_limit += rows
    optimal = _optimal_rows(args.seed)
    large = None if args.quick else _large(args.seed)

    results = {
        "machine": f"{platform.machine()} {platform.processor() or ''} "
        f"python {platform.python_version()}".strip(),
        "seed": args.seed,
        "quick": args.quick,
        "timing": "time.perf_counter() around place() only; generation and parsing separate",
        "instances": [
            {
                "tasks": n_tasks,
                "pools": n_pools,
                "generate_s": round(generate_s, 3),
                "parse_s": round(parse_s, 3),
            }
        ],
        "greedy": small + at_limit + ([] if large is None else large["greedy"]),
        "peak_memory": None if large is None else large["peak_memory"],
        "incremental": None if large is None else large["incremental"],
        "floors": None if large is None else large["floors"],
        "optimal": {
            "tasks": OPTIMAL_SIZE[0],
            "pools": OPTIMAL_SIZE[1],
            "time_limit_s": OPTIMAL_TIME_LIMIT_S,
            "gap": "(greedy or flow objective - optimal objective) / |optimal objective|, "
            "plan.solver.objective of each (the load term included for balanced); the "
            "solvers may place different numbers of tasks",
            "policies": optimal,
        },
        "baseline": {"tasks": BASELINE_SIZE[0], "pools": BASELINE_SIZE[1], "plans": baseline},
    }
    if large is not None:
        results["instances"].append(
            {k: large[k] for k in ("tasks", "pools", "generate_s", "parse_s")}
        )
    path = RESULTS_DIR / ("scheduler_quick.json" if args.quick else "scheduler.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"written to {path}")


if __name__ == "__main__":
    main()
