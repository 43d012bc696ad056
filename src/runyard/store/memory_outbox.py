"""The memory store's webhook outbox (``store.outbox``): the reference for the SQL stores'."""

from __future__ import annotations

from collections.abc import Mapping

from runyard.models import now
from runyard.store._numbering import RunState, finished_webhooks
from runyard.store.outbox import Delivery, WebhookOutbox


class MemoryOutbox(WebhookOutbox):
    """Deliveries owed by run id, each with when it is due (a lease's end while claimed)."""

    _outbox: dict[str, tuple[Delivery, float]]

    def _queue_deliveries(self, states: Mapping[str, RunState]) -> None:
        """Queue the deliveries of the runs an append just finished (``append`` calls it)."""
        queued = now()
        for run_id, url in finished_webhooks(states):
            self._outbox.setdefault(run_id, (Delivery(run_id, url, 0, queued), queued))

    async def claim_deliveries(self, at: float, lease_until: float, limit: int) -> list[Delivery]:
        due = sorted((due_at, run_id) for run_id, (_, due_at) in self._outbox.items() if due_at <= at)
        claimed = []
        for _, run_id in due[: max(limit, 0)]:
            owed = self._outbox[run_id][0]
            delivery = Delivery(run_id, owed.url, owed.attempts + 1, owed.queued_at)
            self._outbox[run_id] = (delivery, lease_until)  # leased: due again only once the lease ends
            claimed.append(delivery)
        return claimed

    async def finish_delivery(self, delivery: Delivery) -> bool:
        if not self._holds(delivery):
            return False
        del self._outbox[delivery.run_id]
        return True

    async def retry_delivery(self, delivery: Delivery, due_at: float) -> bool:
        if not self._holds(delivery):
            return False
        self._outbox[delivery.run_id] = (delivery, due_at)
        return True

    def _holds(self, delivery: Delivery) -> bool:
        owed = self._outbox.get(delivery.run_id)
        return owed is not None and owed[0].attempts == delivery.attempts
