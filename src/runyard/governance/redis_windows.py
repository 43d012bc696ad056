"""Request and token windows (``rpm``, ``tpm``) shared by every process of a
deployment: moving windows of a minute in Redis, both checked and taken by one
Lua script (``lua/windows_take.lua``).

Why not the ``limits`` library's Redis storage, as ``local.py`` uses its
memory storage: it is measurably in the way here (``bench/governance.py``
prints the comparison).

- It takes the two windows one after the other (``hit`` per item; ``test``
  first is only advisory across processes), so when the request window admits a
  call and the token window then refuses it, the request stays counted without
  a call: under contention the phantom requests use up ``rpm``. One script
  takes both or neither.
- A moving window there is a list with one entry per unit: a 1,200-token call
  pushes 1,200 entries and ``tpm=90_000`` keeps up to 90,000 (about 1.7 MB per
  limit). Here a call is one entry however many tokens it takes.
- Test, test, hit, hit and the reset time when full: four or five round trips
  per admission instead of one.
- Its timestamps are each process's clock; these are Redis's (``TIME``), one
  clock for the whole deployment.

Keys, under ``{prefix}limits:{name}:``: ``rpm`` (a sorted set of calls by
time), ``tpm`` (calls as ``{id}:{tokens}`` by time) and ``tpm:used`` (the
tokens in the window). While Redis errors, a call keeps waiting and retries
with backoff and jitter: it is never admitted unseen.
"""

from __future__ import annotations

import asyncio
import itertools
import random

from runyard.governance.redis_common import BACKOFF, REDIS_ERRORS, Outage, Shared, lua, run
from runyard.governance.windows import WINDOW_S, check_fits
from runyard.retrying import retry

MIN_SLEEP_S = 0.01

_TAKE = lua("windows_take")  # its KEYS and ARGV are described at its top


class RedisWindows:
    """``rpm`` and ``tpm`` shared by every process on the same Redis and prefix."""

    def __init__(self, backend: Shared, name: str, rpm: int | None, tpm: int | None) -> None:
        self.name = name
        self.rpm, self.tpm = rpm, tpm
        base = f"{backend.prefix}{name}:"
        self._keys = [base + "rpm", base + "tpm", base + "tpm:used"]
        self._take = backend.client.register_script(_TAKE)
        self._process = backend.process
        self._ids = itertools.count(1)
        self._outage = Outage(f"limit {name!r}: windows")

    async def take(self, tokens: int) -> None:
        check_fits(self.name, tokens, self.tpm)
        call = f"{self._process}/{next(self._ids)}"
        args: list[str | int] = [call, self.rpm or 0, self.tpm or 0, tokens if self.tpm else 0, WINDOW_S * 1000]
        while True:
            # fail closed: not admitted until Redis says so
            wait_ms = await retry(
                lambda: run(self._take, self._keys, args), BACKOFF, on=REDIS_ERRORS, failed=self._outage.failed
            )
            self._outage.recovered()
            if wait_ms <= 0:
                return
            # a little later than the room returns, so that processes do not all ask at once
            await asyncio.sleep(max(MIN_SLEEP_S, wait_ms / 1000) * random.uniform(1.0, 1.1))
