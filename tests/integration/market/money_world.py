"""A small market on a real database, driven through the services the server runs: an operator,
providers with a site, a pool and an agent each, consumers, and a virtual clock in every unit
of work (`session.info["clock"]`), so that orders open and settle at chosen moments.

`order(consumer, provider, duration_s)` quotes, accepts (escrow held), lets the scheduling pass
place the task, leases it to the provider's agent and reports RUNNING; `finish(order, used_s)`
reports COMPLETE with that much device time, which settles the order."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from suanli.clock import VirtualClock
from suanli.services import agents as agents_service
from suanli.services import capacity as capacity_service
from suanli.services import market
from suanli.services import scheduling as scheduling_service
from suanli.services.commands import AgentCommand, PoolCommand, ReportCommand, SiteCommand
from suanli.services.core import Role, create_token
from suanli.store.db import make_engine, session_factory, upgrade
from suanli.store.models import OrderRow, Principal, SiteRow

TASK: dict[str, Any] = {
    "executors": [{"command": ["true"]}],
    "origin": "北京",
    "resources": {
        "devices": 1,
        "device_kind": "cpu",
        "precision": "fp32",
        "workload": "general",
        "memory_gb": 0.0,
    },
}


@dataclass
class Provider:
    who: Principal
    agent_id: str


@dataclass
class World:
    database_url: str
    start: datetime
    clock: VirtualClock = field(init=False)
    operator: Principal = field(init=False)
    providers: list[Provider] = field(default_factory=list)
    consumers: list[Principal] = field(default_factory=list)
    tokens: dict[str, str] = field(default_factory=dict)  # name -> bearer token

    def __post_init__(self) -> None:
        self.engine = make_engine(self.database_url)
        upgrade(self.engine)
        self.sessions = session_factory(self.engine)
        self.clock = VirtualClock(self.start)
        with self.unit() as s:
            self.operator, self.tokens["op"] = create_token(s, Role.OPERATOR, "op")
            s.flush()
            s.expunge(self.operator)

    @contextmanager
    def unit(self) -> Iterator[Session]:
        """One unit of work on the world's clock: committed on success."""
        with self.sessions(info={"clock": self.clock}) as session, session.begin():
            yield session

    def provider(self, name: str, price_fen_per_device_hour: int = 36_000) -> Provider:
        with self.unit() as s:
            who, self.tokens[name] = create_token(s, Role.PROVIDER, name)
            site = capacity_service.add_site(s, who, SiteCommand(name=name, cluster="HORINGER"))
            s.flush()
            capacity_service.add_pool(
                s,
                who,
                PoolCommand(
                    site_id=site.id,
                    device="cpu",
                    count=1_000,
                    price_fen_per_device_hour=price_fen_per_device_hour,
                ),
            )
            agent = agents_service.register_agent(s, who, AgentCommand(site_id=site.id))
            s.flush()
            s.expunge(who)
            made = Provider(who, agent.id)
        self.providers.append(made)
        return made

    def consumer(self, name: str, funds_fen: int) -> Principal:
        with self.unit() as s:
            who, self.tokens[name] = create_token(s, Role.CONSUMER, name)
            s.flush()
            market.credit(s, self.operator, who.id, funds_fen)
            s.expunge(who)
        self.consumers.append(who)
        return who

    def order(self, consumer: Principal, provider: Provider, duration_s: float) -> str:
        """An order of `consumer` on `provider`'s pool, its task RUNNING there."""
        spec = {**TASK, "resources": {**TASK["resources"], "duration_s": duration_s}}
        with self.unit() as s:
            quote = market.quote(s, consumer, spec, "balanced")
            options = quote.options["options"]
            owners = [site.owner_id if (site := s.get(SiteRow, o["site"])) else "" for o in options]
            index = owners.index(provider.who.id)  # the quote offers this provider's pool
            quote_id = quote.id
        with self.unit() as s:
            order = market.accept(s, consumer, quote_id, index, "balanced")
            order_id, task_id = order.id, order.task_id
        with self.unit() as s:
            decided = scheduling_service.plan_pass(s, "balanced")
        with self.unit() as s:
            scheduling_service.apply_pass(s, decided)
        with self.unit() as s:
            leased = agents_service.lease(s, provider.who, provider.agent_id, 100, 600.0)
            assert task_id in [t.id for t in leased], "the pass placed the task on its pool"
        with self.unit() as s:
            agents_service.report(
                s, provider.who, task_id, ReportCommand(agent_id=provider.agent_id, state="RUNNING")
            )
        return order_id

    def finish(self, order_id: str, used_s: float) -> dict[str, Any]:
        """Report the order's task COMPLETE after `used_s` device-seconds; its settlement."""
        with self.unit() as s:
            order = s.get(OrderRow, order_id)
            assert order is not None
            provider = next(p for p in self.providers if p.who.id == order.provider_id)
            agents_service.report(
                s,
                provider.who,
                order.task_id,
                ReportCommand.model_validate(
                    {
                        "agent_id": provider.agent_id,
                        "state": "COMPLETE",
                        "exit_code": 0,
                        "usage": {"wall_s": used_s, "cpu_s": 0.0, "device_s": used_s},
                    }
                ),
            )
        return self.settlement(order_id)

    def settlement(self, order_id: str) -> dict[str, Any]:
        with self.unit() as s:
            order = s.get(OrderRow, order_id)
            assert order is not None and order.state == "SETTLED", order and order.state
            assert order.settlement is not None
            return {
                key: value["fen"] if isinstance(value, dict) else value
                for key, value in order.settlement.items()
            }

    def escrow(self, order_id: str) -> int:
        with self.unit() as s:
            order = s.get(OrderRow, order_id)
            assert order is not None
            return order.escrow_fen

    def balance(self, account: str) -> int:
        with self.unit() as s:
            return market.balance(s, account)

    def verify(self) -> str | None:
        with self.unit() as s:
            return market.verify(s, full=True)

    def close(self) -> None:
        self.engine.dispose()
