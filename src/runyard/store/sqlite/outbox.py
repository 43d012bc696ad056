"""The SQLite store's webhook outbox (``store.outbox``). A SQLite file serves one
process, whose writer thread alone claims: a claim's lease keeps a delivery from
being claimed again while it is tried (or after its claimer died mid-way)."""

from __future__ import annotations

import sqlite3

from runyard.store.outbox import Delivery, WebhookOutbox
from runyard.store.sqlite.connection import SQLiteConnection

# the append that finishes a run queues its delivery, due at once (``append_batch``)
QUEUE_DELIVERY = "INSERT OR IGNORE INTO webhook_outbox (run_id, url, queued_at, due_at) VALUES (?, ?, ?, ?)"
_DUE = "SELECT run_id, url, attempts, queued_at FROM webhook_outbox WHERE due_at <= ? ORDER BY due_at LIMIT ?"
_LEASE = "UPDATE webhook_outbox SET due_at = ?, attempts = attempts + 1 WHERE run_id = ?"
_HELD = "run_id = ? AND attempts = ?"


def _claim(db: sqlite3.Connection, at: float, lease_until: float, limit: int) -> list[Delivery]:
    # in the writer thread, the only writer: nothing comes between the read and the lease
    rows = db.execute(_DUE, (at, max(limit, 0))).fetchall()  # a negative LIMIT would mean "no limit"
    db.executemany(_LEASE, [(lease_until, row[0]) for row in rows])
    return [Delivery(run_id, url, attempts + 1, queued_at) for run_id, url, attempts, queued_at in rows]


class SQLiteOutbox(SQLiteConnection, WebhookOutbox):
    """``WebhookOutbox`` on SQLite."""

    async def claim_deliveries(self, at: float, lease_until: float, limit: int) -> list[Delivery]:
        return await self._write(lambda db: _claim(db, at, lease_until, limit))

    async def finish_delivery(self, delivery: Delivery) -> bool:
        held = (delivery.run_id, delivery.attempts)
        return await self._write(lambda db: db.execute(f"DELETE FROM webhook_outbox WHERE {_HELD}", held).rowcount > 0)

    async def retry_delivery(self, delivery: Delivery, due_at: float) -> bool:
        held = (due_at, delivery.run_id, delivery.attempts)
        sql = f"UPDATE webhook_outbox SET due_at = ? WHERE {_HELD}"
        return await self._write(lambda db: db.execute(sql, held).rowcount > 0)
