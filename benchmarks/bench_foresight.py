"""Benchmark of what forecasts can capture of shifting's savings, one site at a time, on the
twin's synthetic weather (an ESTIMATE): the forecaster against a bound on any forecaster.

On one western province's realised carbon (`sim.carbon.draw_weather`, seeds 0-2), after the
twin's HISTORY_DAYS of history: every EVERY_H hours for `--days` days, a run of each length in
LENGTHS_H may start at once or up to SLACK_H whole hours later. Three deciders take the delay
whose window has the least carbon on what they see:

* the oracle: the realised series (perfect foresight);
* the forecast: what the twin's decision step sees (`carbon.forecast_series`: the forecaster
  of `suanli.forecast` fitted every REFIT_DAYS days, then the climatology);
* the bound: the expectation given the weather's hidden state (today's dip depth and the wind
  now, `Weather.expected`): more than any forecaster can know from the history, so no
  forecaster of this weather can be expected to do better.

Each decider's savings are judged on the realised series against starting at once, and given
as a share of the oracle's, per run length. Then, weighted by the openb trace's batch jobs
(device-hours by run length; the runs `bench_shifting.py` defers), the share of the oracle's
savings each decider would get on the whole trace: the forecast's, and the bound's, the most a
forecaster could get on this weather. Contention, sites and prices are left out (they are
`bench_shifting.py`'s). Figures to stdout and benchmarks/results/foresight.json; nothing is
asserted.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

from suanli.forecast import fit
from suanli.sim.carbon import (
    DAY_H,
    FORECAST_H,
    HISTORY_DAYS,
    REFIT_DAYS,
    SERIES_H,
    draw_weather,
    forecast_series,
)
from suanli.sim.traces import load_trace

RESULTS = Path(__file__).resolve().parent / "results" / "foresight.json"
LENGTHS_H = (1, 3, 6, 12, 18, 24, 36, 48, 96)
SLACK_H = 24
EVERY_H = 3
DECIDERS = ("oracle", "forecast", "bound")


def savings(seed: int, days: int) -> dict[str, np.ndarray]:
    """Each decider's savings summed over the decisions, per run length (oracle first)."""
    history_h = HISTORY_DAYS * DAY_H
    drawn = draw_weather(history_h + days * DAY_H + SERIES_H + DAY_H, seed)
    realised = drawn.values
    prefix = np.concatenate(([0.0], np.cumsum(realised)))
    saved = {name: np.zeros(len(LENGTHS_H)) for name in DECIDERS}
    delays = np.arange(SLACK_H + 1)
    fitted, fitted_day = None, -1
    for hour in range(history_h, history_h + days * DAY_H, EVERY_H):
        day = (hour - history_h) // DAY_H
        refit = day - day % REFIT_DAYS
        if fitted is None or refit != fitted_day:
            fitted, fitted_day = fit(realised[:hour], FORECAST_H), refit
        seen = {
            "oracle": realised[hour : hour + SERIES_H],
            "forecast": forecast_series(fitted, realised[:hour]),
            "bound": drawn.expected(hour, SERIES_H),
        }
        sums = {name: np.concatenate(([0.0], np.cumsum(values))) for name, values in seen.items()}
        for n, length in enumerate(LENGTHS_H):
            actual = prefix[hour + delays + length] - prefix[hour + delays]
            for name, window in sums.items():
                chosen = int(np.argmin(window[delays + length] - window[delays]))
                saved[name][n] += actual[0] - actual[chosen]
    return saved


def trace_weights() -> np.ndarray:
    """The openb trace's batch device-hours by the nearest run length of LENGTHS_H (in log)."""
    weights = np.zeros(len(LENGTHS_H))
    logs = np.log(LENGTHS_H)
    for job in load_trace("openb").jobs:
        if job.latency_tier != "batch":
            continue
        hours = max(job.duration_s / 3600.0, 1e-3)
        nearest = int(np.argmin(np.abs(logs - np.log(hours))))
        weights[nearest] += job.devices * hours
    return weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--days", type=int, default=120, help="days of decisions per seed")
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    started = time.perf_counter()
    total = {name: np.zeros(len(LENGTHS_H)) for name in DECIDERS}
    for seed in range(args.seeds):
        print(f"... seed {seed}: {args.days} days", file=sys.stderr, flush=True)
        for name, values in savings(seed, args.days).items():
            total[name] += values
    oracle = total["oracle"]
    share = {name: total[name] / oracle for name in ("forecast", "bound")}
    # the oracle's savings per device-hour of a run of each length, weighted by the trace's
    per_hour = oracle / np.array(LENGTHS_H, dtype=float)
    weights = trace_weights()
    trace_oracle = weights * per_hour
    on_trace = {
        name: float((trace_oracle * share[name]).sum() / trace_oracle.sum()) for name in share
    }
    print(f"{'run':>5} {'oracle saves':>13} {'forecast':>9} {'bound':>7} {'openb batch':>12}")
    for n, length in enumerate(LENGTHS_H):
        print(
            f"{length:>4}h {per_hour[n] / (args.seeds * args.days * DAY_H / EVERY_H):>12.2%}"
            f" {share['forecast'][n]:>9.0%} {share['bound'][n]:>7.0%}"
            f" {trace_oracle[n] / trace_oracle.sum():>12.0%}"
        )
    print(
        f"weighted by openb's batch work: the forecast gets {on_trace['forecast']:.0%} of the "
        f"oracle's savings, the bound {on_trace['bound']:.0%} "
        f"({time.perf_counter() - started:.0f} s)"
    )
    results = {
        "machine": f"{platform.machine()} python {platform.python_version()}",
        "weather": "synthetic (sim.carbon.draw_weather): an ESTIMATE",
        "seeds": args.seeds,
        "days": args.days,
        "every_h": EVERY_H,
        "slack_h": SLACK_H,
        "lengths_h": list(LENGTHS_H),
        "oracle_saved_share_of_run": [
            round(float(v), 5) for v in per_hour / (args.seeds * args.days * DAY_H / EVERY_H)
        ],
        "forecast_share_of_oracle": [round(float(v), 3) for v in share["forecast"]],
        "bound_share_of_oracle": [round(float(v), 3) for v in share["bound"]],
        "openb_batch_oracle_savings_share": [
            round(float(v), 3) for v in trace_oracle / trace_oracle.sum()
        ],
        "openb_weighted_forecast_share_of_oracle": round(on_trace["forecast"], 3),
        "openb_weighted_bound_share_of_oracle": round(on_trace["bound"], 3),
        "seconds": round(time.perf_counter() - started, 1),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
