"""A cap per key on leases held across every process of a deployment, refused
rather than waited for (the HTTP layer caps each owner's open streams with it).

Keys, under ``{prefix}limits:{name}:{key}``: a sorted set, a member per lease
(``{process}/{n}``) scored by its lease's end (ms, Redis's clock) — the
permits' pattern of ``redis_semaphore.py`` without the waiters. Taking one is
one script (``lua/caps_take.lua``): drop the ended leases, count, add if
under the cap. The backend's keeper renews this process's leases every quarter
lease, so a dead process's leases end and its places come back.

Failure: a take Redis does not answer within ``TAKE_TIMEOUT_S`` is granted
unconfirmed (the caller's own per-process cap still bounds it) and, for
``DOWN_S`` or until a renewal succeeds, later takes do not ask Redis at all:
a Redis outage neither fails every stream nor makes each request wait out a
timeout. The keeper writes every lease this process holds, so once Redis
answers again the count includes the ones granted meanwhile (it may then sit
above the cap until enough of them end).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools

from runyard.governance.backend import CapReached
from runyard.governance.redis_common import BACKOFF, REDIS_ERRORS, TIMEOUT_S, Outage, Shared, lua, run, server_ms
from runyard.retrying import Backoff

TAKE_TIMEOUT_S = 1.0  # a take waits this long for Redis (and a pooled connection) at most, then falls back
DOWN_S = 1.0  # after a failed call, takes skip Redis this long (or until a renewal succeeds)

_TAKE = lua("caps_take")
_KEEP = lua("caps_keep")


class RedisCaps:
    """At most ``capacity`` leases per key, shared by every process on the same Redis and prefix."""

    def __init__(self, backend: Shared, name: str, capacity: int) -> None:
        self.name = name
        self.capacity = capacity
        self._backend = backend
        self._base = f"{backend.prefix}{name}:"
        self._lease_ms = server_ms(backend.lease_s)
        self._take = backend.client.register_script(_TAKE)
        self._keep = backend.client.register_script(_KEEP)
        self._held: dict[str, str] = {}  # member -> its key
        self._numbers = itertools.count(1)
        self._outage = Outage(f"caps {name!r}")
        self._down_until = 0.0  # loop time before which takes do not ask Redis
        self._keep_backoff = Backoff(BACKOFF.first_s, backend.lease_s / 10, spread=(1.0, 1.0))
        self._keep_failures = 0

    @property
    def busy(self) -> bool:
        """Whether the keeper has anything to renew here."""
        return bool(self._held)

    @property
    def confirmed(self) -> bool:
        """Whether Redis answered the last call (else takes are granted on the caller's own cap)."""
        return asyncio.get_running_loop().time() >= self._down_until

    async def take(self, key: str) -> str:
        """A lease on one of ``key``'s places (its id), or ``CapReached``; one round trip."""
        member, redis_key = f"{self._backend.process}/{next(self._numbers)}", self._base + key
        if self.confirmed:
            try:
                taken, held = await self._ask(redis_key, member)
            except BaseException:  # cancelled mid-call: the place may be taken in Redis
                self._backend.spawn(self._remove([(member, redis_key)]))
                raise
            if not taken:
                raise CapReached(held)
        # renewed from now on, not before: a renewal racing the take would write a refused lease
        self._held[member] = redis_key
        self._backend.has_work()
        return member

    def release(self, member: str) -> None:
        """Give the lease back, never waiting (if Redis does not hear of it, the lease ends it)."""
        key = self._held.pop(member, None)
        if key is not None:
            self._backend.spawn(self._remove([(member, key)]))

    async def keep(self) -> float:
        """Renew (or write again) every lease this process holds; the seconds until it should run again."""
        held = list(self._held.items())
        try:
            await run(self._keep, [key for _, key in held], [self._lease_ms, *(member for member, _ in held)])
        except REDIS_ERRORS as exc:
            self._failed(exc)
            self._keep_failures += 1
            return self._keep_backoff.delay(self._keep_failures)
        self._recovered()
        self._keep_failures = 0
        released = [(member, key) for member, key in held if member not in self._held]
        if released:  # given back while the renewal was on its way: it may have written them again
            self._backend.spawn(self._remove(released))
        return self._backend.lease_s / 4

    async def close(self) -> None:
        """Give back every lease this process holds (nothing renews them from now on)."""
        held, self._held = list(self._held.items()), {}
        await self._remove(held)

    async def _ask(self, key: str, member: str) -> tuple[int, int]:
        try:
            taken, held = await run(self._take, [key], [self.capacity, self._lease_ms, member], TAKE_TIMEOUT_S)
        except REDIS_ERRORS as exc:
            self._failed(exc)
            return 1, 0  # granted unconfirmed: the caller's own cap bounds it
        self._recovered()
        return int(taken), int(held)

    async def _remove(self, leases: list[tuple[str, str]]) -> None:
        if not leases:
            return
        with contextlib.suppress(*REDIS_ERRORS):
            async with asyncio.timeout(TIMEOUT_S):
                async with self._backend.client.pipeline(transaction=False) as pipe:
                    for member, key in leases:
                        pipe.zrem(key, member)
                    await pipe.execute()

    def _failed(self, exc: BaseException) -> None:
        self._outage.failed(exc)
        self._down_until = asyncio.get_running_loop().time() + DOWN_S

    def _recovered(self) -> None:
        self._outage.recovered()
        self._down_until = 0.0
