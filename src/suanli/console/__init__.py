"""suanli.console — the web console: the network at a glance for operators, providers and
consumers, served by the platform's own FastAPI app under `/console` (see `web`)."""
