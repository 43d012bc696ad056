"""The store every contract suite here runs against: each backend in turn
(``store_url``), opened for the test and closed after it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from runyard.store import Store, store_from_url


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    store = store_from_url(store_url)
    await store.open()
    try:
        yield store
    finally:
        await store.close()
