"""``postgresql://user@host:port/db``: the shared store of a fleet of processes (asyncpg).

The store is cut by concern, one module per protocol it implements, over one
pool (``pool.py`` makes it; ``connection.py``: transactions that finish whole when their caller is
cancelled, writes never left in doubt, the lifecycle and migrations):
``admissions.py`` (with ``creations.py``: group commit), ``runs.py`` (records
and the queue), ``sessions.py`` (with ``touches.py``: last activity in groups),
``events.py`` (gap-free numbering under the runs' row locks; with ``runs.py``,
reads by key grouped by ``reads.py``), ``journal.py``
(steps and waits), ``retention.py``, ``items.py`` (the long-term store),
``outbox.py`` (webhook deliveries owed);
``schema.py`` holds the migrations (append-only: the position is the version) and the SQL,
but for ``batches.py``: the statements that write a whole batch at once (a group
of creations, an append), each a single round trip.
"""

from __future__ import annotations

from runyard.store.base import Store
from runyard.store.postgres.admissions import PostgresAdmissions
from runyard.store.postgres.crons import PostgresCrons
from runyard.store.postgres.events import PostgresEvents
from runyard.store.postgres.items import PostgresItems
from runyard.store.postgres.journal import PostgresJournal
from runyard.store.postgres.outbox import PostgresOutbox
from runyard.store.postgres.pool import pool_options
from runyard.store.postgres.retention import PostgresRetention
from runyard.store.postgres.runs import PostgresRuns
from runyard.store.postgres.schema import MIGRATIONS
from runyard.store.postgres.session_ids import PostgresSessionIds
from runyard.store.postgres.session_streams import PostgresSessionStreams
from runyard.store.postgres.sessions import PostgresSessions
from runyard.store.postgres.stats import PostgresStats


class PostgresStore(
    PostgresAdmissions,
    PostgresRuns,
    PostgresSessions,
    PostgresSessionIds,
    PostgresEvents,
    PostgresJournal,
    PostgresRetention,
    PostgresItems,
    PostgresCrons,
    PostgresSessionStreams,
    PostgresOutbox,
    PostgresStats,
    Store,
):
    """PostgreSQL through an asyncpg pool; safe to share between many processes."""


__all__ = ["MIGRATIONS", "PostgresStore", "pool_options"]
