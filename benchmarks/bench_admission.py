"""Benchmark: what making every placement an order costs the scheduling pass.

One SQLite database, one provider with a 4,000-core pool, and a queue of N `true` tasks. The
same pass (`services.scheduling.plan_pass` then `apply_pass`, as the server runs them) places
the queue twice, on two fresh databases built alike:

* **orders**: the tasks belong to 20 funded consumers: each placement is priced by the market's
  rules, its maximum held in escrow (a ledger transaction and its audit event) and its order
  opened;
* **bare**: the same tasks belong to the operator, who has no wallet: the pass places them
  without orders (the limit: the pass as it was before every task became an order).

Prints pass times and the ratio, and writes benchmarks/results/admission.json. Nothing is
asserted: timings depend on the machine and its load.
"""

from __future__ import annotations

import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from suanli.services import agents as agents_service
from suanli.services import capacity as capacity_service
from suanli.services import market
from suanli.services import scheduling as scheduling_service
from suanli.services import tasks as tasks_service
from suanli.services.commands import AgentCommand, PoolCommand, SiteCommand
from suanli.services.core import Role, create_token
from suanli.store.db import make_engine, session_factory, upgrade
from suanli.store.models import OrderRow, TaskRow

RESULTS = Path(__file__).resolve().parent / "results" / "admission.json"
SIZES = (250, 1000)
CONSUMERS = 20
TASK: dict[str, Any] = {
    "executors": [{"command": ["true"]}],
    "origin": "北京",
    "resources": {
        "devices": 1,
        "device_kind": "cpu",
        "precision": "fp32",
        "workload": "general",
        "memory_gb": 0.0,
        "duration_s": 60.0,
    },
}


def run(tasks: int, with_orders: bool, directory: Path) -> dict[str, float]:
    engine = make_engine(f"sqlite:///{directory / f'{tasks}-{with_orders}.db'}")
    upgrade(engine)
    sessions = session_factory(engine)
    with sessions.begin() as s:
        operator, _ = create_token(s, Role.OPERATOR, "op")
        provider, _ = create_token(s, Role.PROVIDER, "dc")
        site = capacity_service.add_site(s, provider, SiteCommand(name="s", cluster="HORINGER"))
        s.flush()
        capacity_service.add_pool(
            s,
            provider,
            PoolCommand(
                site_id=site.id, device="cpu", count=4_000, price_fen_per_device_hour=36_000
            ),
        )
        agents_service.register_agent(s, provider, AgentCommand(site_id=site.id))
        owners = [operator]
        if with_orders:
            owners = [create_token(s, Role.CONSUMER, f"c{n}")[0] for n in range(CONSUMERS)]
            s.flush()
            for owner in owners:
                market.credit(s, operator, owner.id, 10**9)
        for n in range(tasks):
            tasks_service.submit(s, owners[n % len(owners)], TASK, None)
    started = time.perf_counter()
    with sessions() as s:
        plan = scheduling_service.plan_pass(s, "balanced")
        s.rollback()
    planned = time.perf_counter()
    session: Session
    with sessions.begin() as session:
        placed = scheduling_service.apply_pass(session, plan)
    applied = time.perf_counter()
    with sessions() as s:
        orders = s.query(OrderRow).count()
        queued = s.query(TaskRow).filter(TaskRow.pool_id.is_(None)).count()
    engine.dispose()
    if placed != tasks or queued != 0 or orders != (tasks if with_orders else 0):
        raise SystemExit(f"unexpected pass: placed {placed}, queued {queued}, orders {orders}")
    return {"plan_s": planned - started, "apply_s": applied - planned, "pass_s": applied - started}


def main() -> None:
    figures: dict[str, Any] = {}
    print("tasks   bare pass s   with orders s   ratio   per order ms")
    with tempfile.TemporaryDirectory() as home:
        directory = Path(home)
        run(50, True, directory)  # warm-up: imports, the engine's first call
        for tasks in SIZES:
            bare = run(tasks, False, directory)
            paid = run(tasks, True, directory)
            ratio = paid["pass_s"] / bare["pass_s"]
            extra_ms = (paid["pass_s"] - bare["pass_s"]) / tasks * 1000
            figures[str(tasks)] = {
                "bare": bare,
                "orders": paid,
                "ratio": ratio,
                "extra_ms": extra_ms,
            }
            print(
                f"{tasks:5d}   {bare['pass_s']:11.2f}   {paid['pass_s']:13.2f}   "
                f"{ratio:5.2f}   {extra_ms:12.2f}"
            )
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {"machine": platform.machine(), "python": sys.version.split()[0], "passes": figures},
            indent=2,
        )
    )
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
