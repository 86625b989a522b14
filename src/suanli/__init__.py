"""suanli (算力): an open compute-power network that meters, schedules and trades computing
across data centres, as China's East-Data-West-Computing (东数西算) programme needs.

Pure core packages: `metering` (one measure for heterogeneous compute), `catalog` (the national
inventory of hubs, clusters, sites, places and latencies) and `indicators` (national and per-hub
figures against the 2025 targets). The `cli` module is the thin edge over them.
"""

__version__ = "0.1.0"
