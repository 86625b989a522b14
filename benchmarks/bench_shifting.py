"""Benchmark of shifting work in time: what deferring batch work saves in carbon when the
decision step knows the future (oracle), when it has only day-ahead forecasts, and when nothing
is shifted; and the waits it costs.

The openb default trace at `--utilisation` (0.7 by default: `twin.size_for_utilisation`, the
busy share each run measured is printed beside it), every batch job made deferrable with
`--slack-h` hours of slack (24), on a realised carbon world of synthetic weather
(`suanli.sim.carbon`, an ESTIMATE: no public hourly provincial carbon data), for each of
`--seeds` weather seeds (5), under each policy a planner optimises carbon with: `green`
(market-based carbon) and `green-location` (location-based). Four runs per policy and seed on
the same trace, network and weather:

* no shifting, decided on forecasts  |  shifting, decided on forecasts
* no shifting, decided on the bound  |  shifting, decided on the bound
* no shifting, decided by the oracle |  shifting, decided by the oracle

The bound (`sim.carbon`'s `bound` foresight) is the weather's expectation given the state it is
drawn from: what the best forecaster of this weather could know (not the future). Its share of
the oracle's savings is the ceiling a forecast can be expected to reach on this weather.

Savings are each foresight's shifting run against its own no-shifting run (so that the oracle's
better choice of site is not counted as shifting), market- and location-based, summed over the
seeds (one seed's savings are of the size of the noise a shifted schedule stirs up). The
figures to judge are the forecast's savings as a share of the oracle's, for each basis under
the policy that optimises it: market-based under `green`, location-based under
`green-location` (both bases are printed under both). Beside them, with less of that noise: the
deferrals' own savings, and each deferrable task's first decision judged on the realised
carbon at its site (what its delay saved against starting then, beside the best delay within
its deadline: `twin._judge_delay`), summed per foresight: the forecast's decisions as a share of
the oracle's, paired decision by decision and so less moved by how the schedule moves other
work (not unmoved: which tasks are deferrable when, and the room each finds, change with it).
Figures go to stdout and to benchmarks/results/shifting.json; nothing is asserted. The runs go
in parallel processes.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from suanli.sim.carbon import run_hours, synthetic_carbon
from suanli.sim.traces import load_trace, shape
from suanli.sim.twin import calibrate, compress, run, sized_for

RESULTS = Path(__file__).resolve().parent / "results" / "shifting.json"
KEYS = (
    "carbon_kg",
    "carbon_location_kg",
    "cost_fen",
    "tasks_completed",
    "tasks_rejected",
    "tasks_deferred",
    "wait_s_p50",
    "wait_s_p99",
    "busy_share_gpu",
    "wall_s",
    "carbon_forecast_mape",
    "shift_saved_kg",
    "shift_saved_location_kg",
    "delay_saved_kg",
    "delay_best_kg",
    "delay_saved_location_kg",
    "delay_best_location_kg",
)


def loaded(utilisation: float, limit: int | None, factor: float) -> tuple[Any, Any, Any]:
    """The trace sized for `utilisation` (copies and network), its arrivals `factor` x faster:
    what `twin.calibrate` returned in the parent process."""
    trace, network, sizing = sized_for(shape(load_trace("openb"), limit=limit), utilisation)
    return compress(trace, factor), sizing, network


POLICIES = ("green", "green-location")
JUDGED = {"carbon_kg": "green", "carbon_location_kg": "green-location"}  # basis -> its policy
KINDS = ("carbon_kg", "carbon_location_kg")
OWN = {"carbon_kg": "shift_saved_kg", "carbon_location_kg": "shift_saved_location_kg"}
# each deferrable task's first decision on the realised series: what the delay chosen saved,
# and what the best delay within its deadline would have (`twin._judge_delay`)
CHOSE = {"carbon_kg": "delay_saved_kg", "carbon_location_kg": "delay_saved_location_kg"}
BEST = {"carbon_kg": "delay_best_kg", "carbon_location_kg": "delay_best_location_kg"}
FORESIGHTS = ("forecast", "bound", "oracle")


def one(args: tuple[str, str, bool, float, float, int, int | None, float]) -> dict[str, Any]:
    policy, foresight, shifting, utilisation, slack_h, seed, limit, factor = args
    trace, sizing, network = loaded(utilisation, limit, factor)
    world = synthetic_carbon(network, run_hours(trace), foresight, seed=seed)
    started = time.perf_counter()
    result = run(
        trace,
        network,
        policy,
        deferrable_slack_s=slack_h * 3600.0 if shifting else None,
        carbon=world,
    )
    metrics = {k: result.metrics.get(k) for k in KEYS}
    metrics["wall_s"] = round(time.perf_counter() - started, 1)
    print(
        f"... {policy:<14} s{seed} {foresight:<8} {'shifting' if shifting else 'no shifting':<12} "
        f"{metrics['wall_s']:7.1f} s",
        file=sys.stderr,
        flush=True,
    )
    return {
        "policy": policy,
        "seed": seed,
        "foresight": foresight,
        "shifting": shifting,
        "jobs": len(trace.jobs),
        "gpus": sizing.gpus,
        "copies": sizing.copies,
        "compression": factor,
        **metrics,
    }


def _savings(rows: list[dict[str, Any]], policy: str, seeds: int) -> dict[str, Any]:
    """Under `policy`: each seed's savings by shifting per foresight and basis (against the
    same foresight's no-shifting run), their sums, the no-shifting totals, and the forecast's
    summed savings as a share of the oracle's (None where the oracle saved nothing), and the
    bound's."""
    by = {(r["seed"], r["foresight"], r["shifting"]): r for r in rows if r["policy"] == policy}
    per_seed = [
        {
            foresight: {
                kind: by[(seed, foresight, False)][kind] - by[(seed, foresight, True)][kind]
                for kind in KINDS
            }
            for foresight in FORESIGHTS
        }
        for seed in range(seeds)
    ]
    saved = {
        foresight: {kind: sum(s[foresight][kind] for s in per_seed) for kind in KINDS}
        for foresight in FORESIGHTS
    }
    baseline = {
        foresight: {
            kind: sum(by[(seed, foresight, False)][kind] for seed in range(seeds)) for kind in KINDS
        }
        for foresight in FORESIGHTS
    }
    own = {
        foresight: {
            kind: sum(by[(seed, foresight, True)][OWN[kind]] for seed in range(seeds))
            for kind in KINDS
        }
        for foresight in FORESIGHTS
    }
    decisions = {
        foresight: {
            kind: {
                "chose": sum(by[(seed, foresight, True)][CHOSE[kind]] for seed in range(seeds)),
                "best": sum(by[(seed, foresight, True)][BEST[kind]] for seed in range(seeds)),
            }
            for kind in KINDS
        }
        for foresight in FORESIGHTS
    }
    chose = {f: {k: d["chose"] for k, d in decisions[f].items()} for f in FORESIGHTS}
    return {
        "decisions": decisions,
        # the forecast's decisions against the oracle's, each judged on the realised series
        "decisions_share": _share(chose),
        "decisions_bound_share": _share(chose, "bound"),
        "saved_per_seed": per_seed,
        "saved": saved,
        "baseline": baseline,
        "share": _share(saved),
        "bound_share": _share(saved, "bound"),
        "deferrals_saved": own,
        "deferrals_share": _share(own),
        "deferrals_bound_share": _share(own, "bound"),
    }


def _share(saved: dict[str, dict[str, float]], of: str = "forecast") -> dict[str, float | None]:
    """`of`'s savings (the forecast's, or the bound's) as a share of the oracle's, per basis
    (None where the oracle saved nothing)."""
    return {
        kind: saved[of][kind] / saved["oracle"][kind] if saved["oracle"][kind] > 0 else None
        for kind in KINDS
    }


def _shown(shares: dict[str, float | None]) -> dict[str, str]:
    return {k: "n/a" if v is None else f"{v:.0%}" for k, v in shares.items()}


def _judged(label: str, shares: dict[str, float | None], tail: str) -> None:
    """One line: each basis's share under the policy that optimises it."""
    shown = _shown(shares)
    print(
        f"{label} market-based (green) {shown['carbon_kg']}, location-based (green-location) "
        f"{shown['carbon_location_kg']} {tail}".rstrip()
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--utilisation", type=float, default=0.7)
    parser.add_argument("--slack-h", type=float, default=24.0)
    parser.add_argument("--seeds", type=int, default=5, help="weather seeds 0..N-1 (summed)")
    parser.add_argument("--limit", type=int, default=None, help="first N jobs of the trace")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    # calibration by replay: the sizing assumes jobs spread over the GPUs by count; they prefer
    # the fast ones, so the busy share measured falls short: arrivals are then sped up by the
    # ratio (one replay, no shifting, on the shape) and the share each run measured is printed
    started = time.perf_counter()
    _, _, calibration = calibrate(
        shape(load_trace("openb"), limit=args.limit), args.utilisation, "green"
    )
    probe, factor = calibration.measured, calibration.factor
    print(
        f"calibration: {probe:.1%} busy as sized; arrivals sped up {factor:.2f}x "
        f"({time.perf_counter() - started:.0f} s)",
        file=sys.stderr,
        flush=True,
    )
    cells = [
        (policy, foresight, shifting, args.utilisation, args.slack_h, seed, args.limit, factor)
        for policy in POLICIES
        for seed in range(args.seeds)
        for foresight in FORESIGHTS
        for shifting in (False, True)
    ]
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        rows = list(pool.map(one, cells))
    summary = {policy: _savings(rows, policy, args.seeds) for policy in POLICIES}
    first = rows[0]
    print(
        f"openb trace{'' if args.limit is None else f' (first {args.limit:,} jobs)'} "
        f"x{first['copies']} ({first['jobs']:,} jobs), arrivals {factor:.2f}x faster, on "
        f"{first['gpus']} GPUs, asked {args.utilisation:.0%} busy; batch slack "
        f"{args.slack_h:g} h"
    )
    print(
        f"{'run':<38} {'busy':>6} {'market kg':>12} {'location kg':>12} {'deferred':>9} "
        f"{'wait p50':>9} {'wait p99':>9} {'wall':>7}"
    )
    for r in rows:
        label = (
            f"{r['policy']} s{r['seed']} {r['foresight']}, "
            f"{'shifting' if r['shifting'] else 'no shifting'}"
        )
        print(
            f"{label:<38} {r['busy_share_gpu']:6.1%} {r['carbon_kg']:12,.0f} "
            f"{r['carbon_location_kg']:12,.0f} {r['tasks_deferred']:9,} "
            f"{r['wait_s_p50'] / 3600:8.2f}h {r['wait_s_p99'] / 3600:8.1f}h {r['wall_s']:6.0f}s"
        )
    for policy, found in summary.items():
        for n, seed_saved in enumerate(found["saved_per_seed"]):
            f, b, o = (seed_saved[x] for x in FORESIGHTS)
            print(
                f"{policy} seed {n}: saved market {f['carbon_kg']:,.0f} kg on forecasts, "
                f"{b['carbon_kg']:,.0f} kg on the bound, {o['carbon_kg']:,.0f} kg by the oracle; "
                f"location {f['carbon_location_kg']:,.0f} / {b['carbon_location_kg']:,.0f} / "
                f"{o['carbon_location_kg']:,.0f} kg"
            )
        for foresight in FORESIGHTS:
            saved, base = found["saved"][foresight], found["baseline"][foresight]
            print(
                f"{policy}: saved by shifting ({foresight}, {args.seeds} seeds together): market "
                f"{saved['carbon_kg']:,.0f} kg ({saved['carbon_kg'] / base['carbon_kg']:.2%}), "
                f"location {saved['carbon_location_kg']:,.0f} kg "
                f"({saved['carbon_location_kg'] / base['carbon_location_kg']:.2%})"
            )
        shown, bound = _shown(found["share"]), _shown(found["bound_share"])
        print(
            f"{policy}: forecast's savings / oracle's: market {shown['carbon_kg']}, location "
            f"{shown['carbon_location_kg']} (the bound's: {bound['carbon_kg']}, "
            f"{bound['carbon_location_kg']})"
        )
        own = found["deferrals_saved"]
        shown = _shown(found["deferrals_share"])
        print(
            f"{policy}: the deferrals' own savings (each deferred task against its start when "
            f"deferred, same site, realised carbon): market "
            f"{own['forecast']['carbon_kg']:,.0f} kg on forecasts / "
            f"{own['oracle']['carbon_kg']:,.0f} kg by the oracle ({shown['carbon_kg']}), "
            f"location {own['forecast']['carbon_location_kg']:,.0f} / "
            f"{own['oracle']['carbon_location_kg']:,.0f} kg ({shown['carbon_location_kg']})"
        )
        d = found["decisions"]
        shown, bound = _shown(found["decisions_share"]), _shown(found["decisions_bound_share"])
        print(
            f"{policy}: each deferrable task's first decision judged on the realised carbon at "
            f"its site (what its delay saved / what the best delay within its deadline would "
            f"have, room ahead not counted): market {d['forecast']['carbon_kg']['chose']:,.0f} "
            f"/ {d['forecast']['carbon_kg']['best']:,.0f} kg on forecasts, "
            f"{d['oracle']['carbon_kg']['chose']:,.0f} / {d['oracle']['carbon_kg']['best']:,.0f}"
            f" kg by the oracle ({shown['carbon_kg']}); location "
            f"{d['forecast']['carbon_location_kg']['chose']:,.0f} / "
            f"{d['forecast']['carbon_location_kg']['best']:,.0f}, "
            f"{d['oracle']['carbon_location_kg']['chose']:,.0f} / "
            f"{d['oracle']['carbon_location_kg']['best']:,.0f} kg "
            f"({shown['carbon_location_kg']}); on the bound market "
            f"{d['bound']['carbon_kg']['chose']:,.0f} ({bound['carbon_kg']}), location "
            f"{d['bound']['carbon_location_kg']['chose']:,.0f} ({bound['carbon_location_kg']})"
        )

    def judge(key: str) -> dict[str, float | None]:
        """Each basis's `key` share under the policy that optimises it."""
        return {kind: summary[policy][key][kind] for kind, policy in JUDGED.items()}

    judged, judged_own, judged_paired = (
        judge("share"),
        judge("deferrals_share"),
        judge("decisions_share"),
    )
    bounds = {
        "totals": judge("bound_share"),
        "deferrals": judge("deferrals_bound_share"),
        "decisions": judge("decisions_bound_share"),
    }
    mape = next(r["carbon_forecast_mape"] for r in rows if r["foresight"] == "forecast")
    _judged(
        "judged, each basis under the policy that optimises it:",
        judged,
        f"of the oracle's savings; day-ahead carbon forecast MAPE {mape:.1%}",
    )
    _judged("  the bound (best forecaster of this weather):", bounds["totals"], "")
    _judged("judged on the deferrals' own savings:", judged_own, "of the oracle's")
    _judged("  the bound:", bounds["deferrals"], "")
    _judged(
        "judged on each decision (paired, with less of the schedule's noise):",
        judged_paired,
        "of what the oracle's decisions saved",
    )
    _judged("  the bound:", bounds["decisions"], "")
    results = {
        "machine": f"{platform.machine()} python {platform.python_version()}",
        "utilisation_asked": args.utilisation,
        "slack_h": args.slack_h,
        "seeds": args.seeds,
        "limit": args.limit,
        "calibration_busy_share": probe,
        "compression": factor,
        "runs": rows,
        "by_policy": summary,
        "judged_share_of_oracle": judged,
        "judged_deferrals_share_of_oracle": judged_own,
        "judged_decisions_share_of_oracle": judged_paired,
        # the same three measures for the bound (the weather's expectation): the ceiling
        "judged_bound_share_of_oracle": bounds,
        "carbon_forecast_mape": mape,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
