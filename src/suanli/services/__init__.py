"""suanli.services — the platform's use cases, each one unit of work on a session.

`core` holds errors, identity, the audit chain and the TES state machine; `platform` the sites,
pools, tasks, agents, leases and the scheduling pass. Services call the pure core (scheduler,
catalog, metering) and the store; they never commit: the edge that opened the session does.
"""
