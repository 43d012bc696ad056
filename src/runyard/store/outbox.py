"""The webhook outbox's records (issue 13: webhooks): what a store keeps of each
delivery still owed, and the protocol to lease, retry and finish them.

A delivery is queued by ``append`` itself, in the transaction that finishes a
run with a webhook (``_numbering.finished_webhooks``): a finished run's delivery
can never be lost between the two. Delivering is ``runyard.webhooks``'s."""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Delivery:
    """A delivery owed for a finished run: POST its final snapshot to ``url``.

    ``attempts`` counts the claims so far, this one included: it is also the
    claim's fence (a claim whose lease ran out, then taken by another process,
    can no longer finish or reschedule the row). ``queued_at``: when the run
    finished, from which ``RUNYARD_WEBHOOK_RETRY_S`` counts."""

    run_id: str
    url: str
    attempts: int
    queued_at: float


class WebhookOutbox(Protocol):
    """The deliveries owed, leased to one process at a time."""

    @abstractmethod
    async def claim_deliveries(self, at: float, lease_until: float, limit: int) -> list[Delivery]:
        """Up to ``limit`` deliveries due at ``at``, soonest due first, each leased until ``lease_until``.

        No other claim gets a leased delivery before its lease ends (then a
        crashed claimer's delivery is due again). Each claim counts an attempt."""

    @abstractmethod
    async def finish_delivery(self, delivery: Delivery) -> bool:
        """Remove ``delivery`` (delivered, or given up) if its claim still holds it."""

    @abstractmethod
    async def retry_delivery(self, delivery: Delivery, due_at: float) -> bool:
        """Make ``delivery`` due again at ``due_at`` if its claim still holds it."""
