"""``AsyncLRUCache``: a bounded cache of coroutine results, safe for concurrent runs.

All of a process's runs are tasks on one event loop, so the cache's dictionary
changes only between awaits and needs no lock. What does need care is two runs
missing the same key at once: without coalescing, ten users asking the same
question would make ten identical LLM calls. Here the first caller computes and
the others wait on a lock of that key, then read the value it stored. If the
computing caller fails or is cancelled (its user went away), the next waiter
computes instead: one run's fate never fails another. A key's lock lives only
while someone holds or waits for it, so the cache stays bounded.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass
class _KeyLock:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0  # holding or waiting


class AsyncLRUCache(Generic[K, V]):
    """At most ``maxsize`` values, the least recently used evicted first."""

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.maxsize = maxsize
        self.hits = 0
        self.misses = 0
        self._values: OrderedDict[K, V] = OrderedDict()
        self._locks: dict[K, _KeyLock] = {}

    def __len__(self) -> int:
        return len(self._values)

    def __contains__(self, key: object) -> bool:
        return key in self._values

    async def get_or_compute(self, key: K, compute: Callable[[], Awaitable[V]]) -> tuple[V, bool]:
        """The value of ``key`` and whether it was already there (or computed by a concurrent caller)."""
        if key in self._values:
            return self._hit(key), True
        entry = self._locks.setdefault(key, _KeyLock())
        entry.users += 1
        try:
            async with entry.lock:
                if key in self._values:  # computed while this caller waited
                    return self._hit(key), True
                self.misses += 1
                value = await compute()
                self._values[key] = value
                if len(self._values) > self.maxsize:
                    self._values.popitem(last=False)
                return value, False
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._locks[key]

    def _hit(self, key: K) -> V:
        self.hits += 1
        self._values.move_to_end(key)
        return self._values[key]
