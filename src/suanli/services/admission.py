"""Admission: every task the pass places is an order (issue 15, item 1).

The pass calls `screen` on the decision step's PLACE decisions (read side, no rows change) and
`open_order` for each placement it writes (write side, under the pass's fence):

* `screen` prices each placement by the market's rules at its start hour (time of use), checks
  the task's `max_price_fen` against the quoted total, the consumer's budgets
  (`services.budgets.blocking`) and what the consumer can pay (vouchers first, then the wallet),
  counting what earlier tasks of the same pass already took; a task it refuses stays queued with
  the reason ("insufficient balance: ...", "budget: ...", "max_price_fen: ...").
* `open_order` holds the maximum in escrow and creates the order (`source="admission"`); it
  raises when the money is no longer there (the pass keeps the task queued with the reason).

A task that already has an OPEN order (an accepted quote) is admitted as it is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from suanli.scheduler import Decision
from suanli.services.capacity import StepInputs
from suanli.store.models import OrderRow, TaskRow


@dataclass(frozen=True)
class Screened:
    """What `screen` found: the priced offer of each admitted placement (task -> offer, the
    shape of a quote's option) and why each refused one stays queued (task -> reason)."""

    offers: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    refused: Mapping[str, str] = field(default_factory=dict)


def screen(
    session: Session,
    decisions: Sequence[Decision],
    owners: Mapping[str, str],
    inputs: StepInputs,
    moment: datetime,
) -> Screened:
    """Price and check the PLACE decisions (see the module docstring); `owners`: task -> owner.
    Placeholder until orders on every path land: admits every placement without an offer."""
    del session, owners, inputs, moment
    return Screened(offers={d.task: {} for d in decisions if d.placement is not None})


def open_order(session: Session, task: TaskRow, offer: dict[str, Any]) -> OrderRow | None:
    """Hold the offer's maximum in escrow and create the task's order (see the module
    docstring). Placeholder: creates nothing."""
    del session, task, offer
    return None
