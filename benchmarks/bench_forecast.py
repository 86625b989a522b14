"""Benchmark of the forecaster: rolling-origin backtests of every shipped public series.

For each series, a 24 h forecast from every origin the series allows (24 h apart, the first
with `min_history_h(24)` hours behind it), scored against seasonal naive (MASE ratio) and by
the coverage of the 80% interval; both sides are computed in the same run on the same
origins. Prints the figures and writes benchmarks/results/forecast.json. Nothing is asserted.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

from suanli.forecast import backtest, public_series, series_ids

RESULTS = Path(__file__).resolve().parent / "results" / "forecast.json"
HOURS = 24


def main() -> None:
    rows = []
    for sid in series_ids():
        series = public_series(sid)
        print(f"... {sid}: backtesting ({len(series.values):,} hours)", file=sys.stderr, flush=True)
        start = time.perf_counter()
        found = backtest(series.values, HOURS)
        seconds = time.perf_counter() - start
        rows.append(
            {
                "series": sid,
                "hours": len(series.values),
                "origins": found.origins,
                "mase": round(found.mase, 4),
                "mase_seasonal_naive": round(found.mase_seasonal_naive, 4),
                "ratio": round(found.ratio, 4),
                "coverage_80": round(found.coverage, 4),
                "seconds_per_forecast": round(seconds / found.origins, 3),
            }
        )
        r = rows[-1]
        label = f"{sid} ({r['origins']} origins)"
        print(
            f"{label:<44} MASE {r['mase']:.3f} vs seasonal naive {r['mase_seasonal_naive']:.3f}"
            f" (ratio {r['ratio']:.3f}); 80% interval covers {r['coverage_80']:.1%}; "
            f"{r['seconds_per_forecast']:.2f} s per forecast"
        )
    results = {
        "machine": f"{platform.machine()} python {platform.python_version()}",
        "horizon_h": HOURS,
        "method": "rolling origin, every origin the series allows, 24 h apart",
        "series": rows,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
