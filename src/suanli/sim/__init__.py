"""suanli.sim — the digital twin: replay workload traces on the national network, on a virtual
clock, with the same placement engine as the live platform (`twin`), from real traces
(`traces`)."""
