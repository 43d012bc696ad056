"""The PostgreSQL store's webhook outbox (``store.outbox``), shared by a fleet.

Claims from many processes never take one delivery twice at the same moment:
the claim locks the due rows it takes with ``FOR UPDATE SKIP LOCKED`` (a row
another process is claiming right now is left to it) and moves their ``due_at``
to its lease's end in the same statement, so they are not due again until that
lease has run out (its claimer died mid-way). ``attempts`` fences the claim:
finishing or rescheduling needs the row to be still at the claim's count."""

from __future__ import annotations

from runyard.store.outbox import Delivery, WebhookOutbox
from runyard.store.postgres.connection import Connection, PostgresConnection

# the append that finishes a run queues its delivery, due at once (``append_batch``)
QUEUE_DELIVERIES = (
    "INSERT INTO webhook_outbox (run_id, url, queued_at, due_at)"
    " SELECT u.run_id, u.url, u.at, u.at FROM unnest($1::text[], $2::text[], $3::float8[]) AS u(run_id, url, at)"
    " ON CONFLICT DO NOTHING"
)
_CLAIM = """UPDATE webhook_outbox AS o SET due_at = $2, attempts = o.attempts + 1
FROM (SELECT run_id, due_at FROM webhook_outbox WHERE due_at <= $1 ORDER BY due_at LIMIT $3 FOR UPDATE SKIP LOCKED) AS c
WHERE o.run_id = c.run_id RETURNING o.run_id, o.url, o.attempts, o.queued_at, c.due_at"""
_FINISH = "DELETE FROM webhook_outbox WHERE run_id = $1 AND attempts = $2 RETURNING 1"
_RETRY = "UPDATE webhook_outbox SET due_at = $3 WHERE run_id = $1 AND attempts = $2 RETURNING 1"


class PostgresOutbox(PostgresConnection, WebhookOutbox):
    """``WebhookOutbox`` on PostgreSQL."""

    async def claim_deliveries(self, at: float, lease_until: float, limit: int) -> list[Delivery]:
        if limit <= 0:
            return []

        async def claim(conn: Connection) -> list[Delivery]:
            rows = sorted(await conn.fetch(_CLAIM, at, lease_until, limit), key=lambda row: row[4])  # soonest due first
            return [Delivery(run_id, url, attempts, queued_at) for run_id, url, attempts, queued_at, _ in rows]

        return await self._transact(claim)

    async def finish_delivery(self, delivery: Delivery) -> bool:
        return await self._transact(lambda conn: _held(conn, _FINISH, delivery))

    async def retry_delivery(self, delivery: Delivery, due_at: float) -> bool:
        return await self._transact(lambda conn: _held(conn, _RETRY, delivery, due_at))


async def _held(conn: Connection, sql: str, delivery: Delivery, *more: float) -> bool:
    return await conn.fetchval(sql, delivery.run_id, delivery.attempts, *more) is not None
