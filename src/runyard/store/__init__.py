"""Stores by URL scheme, loaded lazily, and the protocols they implement (``base.py``)."""

from __future__ import annotations

from typing import Any

from runyard._backends import BackendTable, load_backend
from runyard.store.base import (
    Admissions,
    AppendGroup,
    AppendResult,
    EventStore,
    Lifecycle,
    Retention,
    RunQueue,
    RunRecords,
    SessionStore,
    Store,
    WorkerStore,
)

SUPPORTED_STORES: BackendTable = {
    "memory": ("runyard.store.memory", "MemoryStore", None),
    "sqlite": ("runyard.store.sqlite", "SQLiteStore", None),
    "postgresql": ("runyard.store.postgres", "PostgresStore", "postgres"),
    "postgres": ("runyard.store.postgres", "PostgresStore", "postgres"),
}


def store_from_url(url: str, **options: Any) -> Store:
    """The store named by ``url``, not yet opened; ``options`` go to its constructor
    (``max_run_bytes``; ``lease_s``, the runs' lease, which bounds how long
    PostgreSQL lets a stalled process hold a transaction open)."""
    store: Store = load_backend("store", url, SUPPORTED_STORES, **options)
    return store


__all__ = [
    "SUPPORTED_STORES",
    "Admissions",
    "AppendGroup",
    "AppendResult",
    "EventStore",
    "Lifecycle",
    "Retention",
    "RunQueue",
    "RunRecords",
    "SessionStore",
    "Store",
    "WorkerStore",
    "store_from_url",
]
