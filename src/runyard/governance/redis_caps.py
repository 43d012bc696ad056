"""A cap per key on leases held across every process of a deployment, refused
rather than waited for (the HTTP layer caps each owner's open streams with it).

Keys, under ``{prefix}limits:{name}:{key}``: a sorted set, a member per lease
(``{process}/{n}``) scored by its lease's end (ms, Redis's clock) — the
permits' pattern of ``redis_semaphore.py`` without the waiters. Taking one is
one script (``lua/caps_take.lua``): drop the ended leases, count, add if
under the cap. The first take goes at once; those asked for while a call is
on its way go together in the next one, one script for all, so a burst of
streams opening costs a few round trips, not one each (redis-py's path for
the takes was ~9 % of a fleet API's CPU while 1,000 streams opened). Leases
given back are removed the same way: those released while a removal is on its
way go together in the next (``Folded``). The backend's keeper renews this
process's leases every quarter lease, so a dead process's leases end and its
places come back.

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
from dataclasses import dataclass, field

from runyard.broker.folding import Folded
from runyard.governance.backend import CapReached
from runyard.governance.redis_common import BACKOFF, REDIS_ERRORS, TIMEOUT_S, Outage, Shared, lua, run, server_ms
from runyard.retrying import Backoff

TAKE_TIMEOUT_S = 1.0  # a take waits this long for Redis (and a pooled connection) at most, then falls back
DOWN_S = 1.0  # after a failed call, takes skip Redis this long (or until a renewal succeeds)

_TAKE = lua("caps_take")
_KEEP = lua("caps_keep")
MAX_TAKES = 500  # per call: bounds the script's run, during which Redis answers nothing else
MAX_REMOVALS = 1000  # leases given back per pipeline


@dataclass(slots=True)
class _Ask:
    key: str
    member: str
    answer: asyncio.Future[tuple[int, int]] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


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
        self._asks: list[_Ask] = []  # takes waiting for the next call
        self._asker: asyncio.Task[None] | None = None  # makes the calls asked for during a call
        self._calling = False  # a call is on its way: takes wait for the next one
        self._numbers = itertools.count(1)
        self._outage = Outage(f"caps {name!r}")
        self._down_until = 0.0  # loop time before which takes do not ask Redis
        self._keep_backoff = Backoff(BACKOFF.first_s, backend.lease_s / 10, spread=(1.0, 1.0))
        self._keep_failures = 0
        self._released: list[tuple[str, str]] = []  # (member, key) given back, not yet removed
        self._removals = Folded(self._remove_released, f"runyard-caps-{name}-removals")

    @property
    def busy(self) -> bool:
        """Whether the keeper has anything to renew here."""
        return bool(self._held)

    @property
    def confirmed(self) -> bool:
        """Whether Redis answered the last call (else takes are granted on the caller's own cap)."""
        return asyncio.get_running_loop().time() >= self._down_until

    async def take(self, key: str) -> str:
        """A lease on one of ``key``'s places (its id), or ``CapReached``; one round trip,
        shared with the takes asked for meanwhile."""
        member, redis_key = f"{self._backend.process}/{next(self._numbers)}", self._base + key
        if self.confirmed:
            try:
                taken, held = await self._ask(redis_key, member)
            except BaseException:  # cancelled mid-call: the place may be taken in Redis
                self._give_back([(member, redis_key)])
                raise
            if not taken:
                raise CapReached(held)
        # renewed from now on, not before: a renewal racing the take would write a refused lease
        self._held[member] = redis_key
        self._backend.has_work()
        return member

    def release(self, member: str) -> None:
        """Give the lease back, never waiting (if Redis does not hear of it, the lease ends it).
        Removed with the others given back meanwhile: 1,000 streams ending together were
        1,000 tasks and round trips, 8 % of a fleet API's samples in a ramp of 1,000
        two-tick streams (``bench/README.md``, "A twenty-second round")."""
        key = self._held.pop(member, None)
        if key is not None:
            self._give_back([(member, key)])

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
            self._give_back(released)
        return self._backend.lease_s / 4

    async def close(self) -> None:
        """Give back every lease this process holds (nothing renews them from now on)."""
        asker, self._asker = self._asker, None
        if asker is not None:  # its takes raise CancelledError
            asker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asker
        await self._removals.close(finish_sending=True)  # the removal on its way; the rest below
        held, self._held = list(self._held.items()), {}
        released, self._released = self._released, []
        await self._remove(held + released)

    async def _ask(self, key: str, member: str) -> tuple[int, int]:
        ask = _Ask(key, member)
        self._asks.append(ask)
        if not self._calling and self._asker is None:
            try:
                await self._call_for(self._next_asks())  # at once, from this caller's step
            finally:
                if self._asks and self._asker is None:  # asked for meanwhile: the next call, from a task
                    self._asker = asyncio.create_task(self._ask_all(), name=f"runyard-caps-{self.name}")
        return await asyncio.shield(ask.answer)  # a cancelled caller only stops waiting

    def _next_asks(self) -> list[_Ask]:
        asks, self._asks = self._asks[:MAX_TAKES], self._asks[MAX_TAKES:]
        return asks

    async def _ask_all(self) -> None:
        try:
            while self._asks:
                await self._call_for(self._next_asks())
        except BaseException as exc:  # the loop is shutting down: no take waits forever
            _fail(self._asks, exc)
            self._asks = []
            raise
        finally:
            self._asker = None

    async def _call_for(self, asks: list[_Ask]) -> None:
        """Answer ``asks`` with one call; if it raises, each of them raises that."""
        self._calling = True
        try:
            answers = await self._call(asks)
        except BaseException as exc:
            _fail(asks, exc)
            raise
        finally:
            self._calling = False
        for ask, answer in zip(asks, answers, strict=True):
            if not ask.answer.done():
                ask.answer.set_result(answer)

    async def _call(self, asks: list[_Ask]) -> list[tuple[int, int]]:
        """Each take's (taken, held); (1, 0), granted unconfirmed, while Redis does not answer."""
        if not self.confirmed:  # the call before this one failed
            return [(1, 0)] * len(asks)
        keys, members = [ask.key for ask in asks], [ask.member for ask in asks]
        try:
            flat = await run(self._take, keys, [self.capacity, self._lease_ms, *members], TAKE_TIMEOUT_S)
        except REDIS_ERRORS as exc:
            self._failed(exc)
            return [(1, 0)] * len(asks)  # the callers' own caps bound them
        self._recovered()
        return [(int(flat[i]), int(flat[i + 1])) for i in range(0, len(flat), 2)]

    def _give_back(self, leases: list[tuple[str, str]]) -> None:
        self._released += leases
        self._removals.ask()

    async def _remove_released(self) -> None:
        leases, self._released = self._released[:MAX_REMOVALS], self._released[MAX_REMOVALS:]
        if self._released:
            self._removals.ask()  # the rest in the next pipeline
        await self._remove(leases)

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


def _fail(asks: list[_Ask], exc: BaseException) -> None:
    for ask in asks:
        if not ask.answer.done():
            ask.answer.set_exception(exc)
            ask.answer.exception()  # retrieved: its caller may have stopped waiting
