"""Reads by key, grouped (``store/postgres/reads.py``): what the PostgreSQL store's
run reads promise, on a table in memory whose statements can be held open."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import pytest

from runyard.store.postgres.reads import MAX_GROUP, GroupRead


class Table:
    """A table read by ``read_many``: each call sees the rows as they were when it
    was made (a statement's snapshot), and waits for ``gate`` before answering."""

    def __init__(self, rows: dict[str, int]) -> None:
        self.rows = rows
        self.calls: list[list[str]] = []
        self.called = asyncio.Event()
        self.gate = asyncio.Event()
        self.gate.set()
        self.failure: Exception | None = None

    async def read_many(self, keys: list[str]) -> Mapping[str, int]:
        self.calls.append(keys)
        self.called.set()
        snapshot = {key: self.rows[key] for key in keys if key in self.rows}
        await self.gate.wait()
        if self.failure is not None:
            failure, self.failure = self.failure, None
            raise failure
        return snapshot


async def test_reads_asked_together_are_one_call_and_each_gets_its_own_value() -> None:
    table = Table({"a": 1, "b": 2, "c": 3})
    reads = GroupRead(table.read_many)
    answers = await asyncio.gather(*(reads.read(key) for key in ["a", "b", "missing", "c", "a"]))
    assert answers == [1, 2, None, 3, 1]
    assert table.calls == [["a", "b", "missing", "c"]]  # a key asked for twice is read once


async def test_a_read_asked_while_a_call_is_under_way_is_answered_by_the_next_call() -> None:
    """A call sent before the read was asked for may miss a write the reader has
    just seen committed: the read waits for a call of its own."""
    table = Table({"a": 1})
    reads = GroupRead(table.read_many)
    table.gate.clear()
    first = asyncio.create_task(reads.read("a"))
    await table.called.wait()
    table.rows["a"] = 2  # written (and committed) while the first call is under way
    later = [asyncio.create_task(reads.read(key)) for key in ("a", "b")]
    await asyncio.sleep(0.01)
    assert table.calls == [["a"]]  # one call at a time
    table.gate.set()
    assert await first == 1
    assert [await task for task in later] == [2, None]
    assert table.calls == [["a"], ["a", "b"]]


async def test_a_failed_call_fails_its_own_readers_and_the_next_call_is_made() -> None:
    table = Table({"a": 1, "b": 2})
    reads = GroupRead(table.read_many)
    table.failure = ConnectionError("the server went away")
    outcomes = await asyncio.gather(reads.read("a"), reads.read("b"), return_exceptions=True)
    assert [type(outcome) for outcome in outcomes] == [ConnectionError, ConnectionError]
    assert await reads.read("b") == 2


async def test_a_cancelled_reader_stops_waiting_and_the_others_get_their_answers() -> None:
    table = Table({"a": 1, "b": 2})
    reads = GroupRead(table.read_many)
    table.gate.clear()
    gone = asyncio.create_task(reads.read("a"))
    staying = asyncio.create_task(reads.read("b"))
    await table.called.wait()
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    table.gate.set()
    assert await staying == 2
    assert await reads.read("a") == 1


async def test_a_call_reads_at_most_max_group_keys() -> None:
    keys = [f"k{i}" for i in range(MAX_GROUP + 3)]
    table = Table({key: i for i, key in enumerate(keys)})
    reads = GroupRead(table.read_many)
    assert await asyncio.gather(*(reads.read(key) for key in keys)) == list(range(len(keys)))
    assert [len(call) for call in table.calls] == [MAX_GROUP, 3]


async def test_a_smaller_bound_cuts_the_calls_smaller() -> None:
    table = Table({key: i for i, key in enumerate("abcde")})
    reads = GroupRead(table.read_many, most=2)
    assert await asyncio.gather(*(reads.read(key) for key in "abcde")) == [0, 1, 2, 3, 4]
    assert table.calls == [["a", "b"], ["c", "d"], ["e"]]
