"""The provider agent: pulls work for one site from the server, runs it on a backend, reports.

`runner` owns the network protocol and each task's lifecycle on the agent side (register,
heartbeat, lease, report, cancel, drop); `backends` owns execution and metering behind one small
Protocol (`start`, `poll`, `cancel`), with one module per backend (`local` now; Slurm, Ray and
Kubernetes later). The agent only ever calls out, so a provider's firewall stays closed.
"""

from suanli.agent.backends import Backend, Executor, Handle, Status, TaskState, Usage, backend_named
from suanli.agent.runner import Agent, AgentRejected, ServerUnavailable, run_agent

__all__ = [
    "Agent",
    "AgentRejected",
    "Backend",
    "Executor",
    "Handle",
    "ServerUnavailable",
    "Status",
    "TaskState",
    "Usage",
    "backend_named",
    "run_agent",
]
