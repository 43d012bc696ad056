"""``sqlite:///path.db``: the embedded default, one file in WAL mode.

The store is cut by concern, one module per protocol it implements, over one
connection (``connection.py``: the writer thread with its group commit, the
readers, the lifecycle): ``admissions.py``, ``runs.py`` (records and the queue),
``sessions.py``, ``session_ids.py`` (chosen ids, listings), ``events.py``,
``journal.py`` (steps and waits), ``retention.py``, ``items.py`` (the long-term
store), ``crons.py``; ``schema.py`` holds the migrations (append-only: the
position is the version) and the SQL, ``file.py`` the URL and the lock that
keeps a file to one process.
``sessions.py``, ``events.py``, ``journal.py`` (steps and waits), ``retention.py``,
``outbox.py`` (webhook deliveries owed); ``schema.py`` holds the
migrations (append-only: the position is the version) and the SQL, ``file.py``
the URL and the lock that keeps a file to one process.
"""

from __future__ import annotations

from runyard.store.base import Store
from runyard.store.sqlite.admissions import SQLiteAdmissions
from runyard.store.sqlite.crons import SQLiteCrons
from runyard.store.sqlite.events import SQLiteEvents
from runyard.store.sqlite.file import BUSY_TIMEOUT_MS, busy_timeout_ms, database_path, refuse_if_in_use
from runyard.store.sqlite.items import SQLiteItems
from runyard.store.sqlite.journal import SQLiteJournal
from runyard.store.sqlite.outbox import SQLiteOutbox
from runyard.store.sqlite.retention import SQLiteRetention
from runyard.store.sqlite.runs import SQLiteRuns
from runyard.store.sqlite.schema import MIGRATIONS
from runyard.store.sqlite.session_ids import SQLiteSessionIds
from runyard.store.sqlite.session_streams import SQLiteSessionStreams
from runyard.store.sqlite.sessions import SQLiteSessions
from runyard.store.sqlite.stats import SQLiteStats


class SQLiteStore(
    SQLiteAdmissions,
    SQLiteRuns,
    SQLiteSessions,
    SQLiteEvents,
    SQLiteJournal,
    SQLiteRetention,
    SQLiteItems,
    SQLiteCrons,
    SQLiteSessionIds,
    SQLiteSessionStreams,
    SQLiteOutbox,
    SQLiteStats,
    Store,
):
    """A SQLite file in WAL mode: one writer thread committing in groups, a pool of readers."""


__all__ = ["BUSY_TIMEOUT_MS", "MIGRATIONS", "SQLiteStore", "busy_timeout_ms", "database_path", "refuse_if_in_use"]
