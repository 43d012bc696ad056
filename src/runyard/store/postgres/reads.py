"""Reads by key, grouped: the reads asked for while one statement is under way
go together in the next one.

A fleet's API process opening many streams at once read each run with a
statement of its own, and each statement waited for one of the pool's few
connections: under ``bench/scaleout.py``'s steady ramp a run's read took 22-43 ms
(p50) of a stream's 56-67 ms opening, for a lookup by primary key. One statement
for every run asked for meanwhile is one round trip and one connection, however
many streams open (``bench/README.md``, "A nineteenth round").

A read is never answered by a statement sent before it was asked for: it sees
every write committed before the call, as a statement of its own would.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Mapping
from typing import Any, Generic, TypeVar

from runyard.errors import StoreError

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

MAX_GROUP = 500  # keys per statement: a bounded statement, however deep the queue of reads


class GroupRead(Generic[K, V]):
    """``read(key)`` by ``read_many(keys)``, one statement at a time, of at most
    ``most`` keys; a key not in its mapping reads as None. Readers of one key in
    one statement share its value: callers never change what they read."""

    def __init__(self, read_many: Callable[[list[K]], Awaitable[Mapping[K, V]]], most: int = MAX_GROUP) -> None:
        self._read_many = read_many
        self._most = most
        self._asked: dict[K, asyncio.Future[V | None]] = {}  # not yet sent: the next statement's keys
        self._reader: asyncio.Task[None] | None = None

    async def read(self, key: K) -> V | None:
        """``key``'s value, read by a statement sent after this call. A cancelled
        caller only stops waiting."""
        answer = self._asked.get(key)
        if answer is None:
            answer = self._asked[key] = asyncio.get_running_loop().create_future()
            answer.add_done_callback(_retrieved)  # no caller left waiting: no unread error
        if self._reader is None:
            self._reader = asyncio.create_task(self._read_all(), name="runyard-pg-reads")
        return await asyncio.shield(answer)

    async def _read_all(self) -> None:
        group: dict[K, asyncio.Future[V | None]] = {}
        try:
            while self._asked:
                keys = list(self._asked)[: self._most]
                group = {key: self._asked.pop(key) for key in keys}
                await self._read(group)
        except BaseException as exc:  # the loop is shutting down: no caller waits forever
            for answer in [*group.values(), *self._asked.values()]:
                if not answer.done():
                    answer.set_exception(StoreError(f"reads stopped: {exc!r}"))
            self._asked = {}
            raise
        finally:
            self._reader = None

    async def _read(self, group: dict[K, asyncio.Future[V | None]]) -> None:
        try:
            found = await self._read_many(list(group))
        except Exception as exc:
            for answer in group.values():
                answer.set_exception(exc)
            return
        for key, answer in group.items():
            answer.set_result(found.get(key))


def _retrieved(answer: asyncio.Future[Any]) -> None:
    if not answer.cancelled():
        answer.exception()
