"""Benchmark of the foundation: cold catalog load, name lookup and metering throughput.

Prints figures and writes them to benchmarks/results/metering.json. Nothing here is asserted:
timings depend on the machine and its load (this project's reference is 2 cores, shared).
"""

from __future__ import annotations

import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "metering.json"


def _cold_start_s() -> float:
    """Seconds for a fresh interpreter to import suanli and build the catalog and devices."""
    code = (
        "import time; t=time.perf_counter();"
        "from suanli.catalog import clusters; from suanli.metering import all_devices;"
        "clusters(); all_devices(); print(time.perf_counter()-t)"
    )
    runs = [
        float(
            subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, check=True
            ).stdout
        )
        for _ in range(5)
    ]
    return min(runs)


def _rate(label: str, fn, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    seconds = time.perf_counter() - start
    rate = n / seconds
    print(f"{label:<44} {rate:>12,.0f} /s   ({n:,} in {seconds:.2f} s)")
    return rate


def main() -> None:
    from suanli.catalog import clusters, latency_between
    from suanli.metering import (
        Precision,
        WorkloadClass,
        all_devices,
        find_device,
        meter,
    )

    cold = _cold_start_s()
    print(f"{'cold import + catalog + devices':<44} {cold * 1000:>12.1f} ms")
    sites = clusters()
    meterable = [
        (d, d.precisions()[0]) for d in all_devices() if d.tdp_w is not None and d.peak_flops
    ]
    pairs = [(d, p, s) for d, p in meterable for s in sites]

    def meter_all() -> None:
        for d, p, s in pairs:
            meter(d, 8, p, 1e20, WorkloadClass.TRAINING, s)

    meter_rate = _rate("meter() calls", meter_all, 50) * len(pairs)
    print(f"{'  = meter() per second':<44} {meter_rate:>12,.0f} /s")
    names = ["h800", "NVIDIA A800 SXM4", "昇腾910B", "xeon 8380", "EPYC 9654"]
    lookup_rate = _rate(
        "find_device() exact/alias (5 names)", lambda: [find_device(n) for n in names], 20_000
    ) * len(names)
    token_rate = _rate(
        "find_device() by words ('xeon 8380')", lambda: find_device("xeon 8380"), 20_000
    )
    latency_rate = _rate(
        "latency_between('杭州', 'GUIAN')", lambda: latency_between("杭州", "GUIAN"), 20_000
    )
    ranked = _rate(
        "meter --site all (10 sites, one device)",
        lambda: [
            meter(find_device("H800"), 8, Precision.BF16, 1e21, WorkloadClass.TRAINING, s)
            for s in sites
        ],
        5_000,
    )
    peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{'peak RSS of this process':<44} {peak_rss_mib:>12.1f} MiB")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "machine": f"{platform.machine()} {platform.processor() or ''} "
                f"python {platform.python_version()}".strip(),
                "cold_start_ms": round(cold * 1000, 1),
                "meter_calls_per_s": round(meter_rate),
                "find_device_alias_per_s": round(lookup_rate),
                "find_device_words_per_s": round(token_rate),
                "latency_lookups_per_s": round(latency_rate),
                "meter_rank_all_sites_per_s": round(ranked),
                "peak_rss_mib": round(peak_rss_mib, 1),
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
