"""A concurrency cap shared by every process of a deployment: a lease-based,
fair semaphore in Redis, each step one atomic Lua script (``lua/semaphore_*.lua``).

Keys, under ``{prefix}limits:{name}:``::

    permits   sorted set: a permit per member, scored by its lease's end (ms, Redis's clock)
    waiters   sorted set: a waiter per member, scored by the end of its registration
    line:{o}  list: owner o's waiters, oldest first
    owners    sorted set: owners with a line, by (permits held, turn last served): next first
    held      hash: owner -> permits held;  served: owner -> turn last served;  turn: counter

A member is ``{process}/{n}|{owner}``. Every script first drops the permits
whose lease ended and the waiters that stopped renewing. A permit is granted
only while fewer than ``capacity`` remain, so the cap holds however processes
fail; a dead process's permits come back when their lease ends.

Fairness across owners is ``runyard.fairness``'s rule, evaluated in Redis over
the whole deployment: a free permit goes to the waiting owner holding the
fewest, then to the one served least recently; within an owner, first come
first served. Every waiter of every process registers in Redis. (A
process-local ``FairSemaphore`` in front would hide a newcomer owner from
Redis until one of its process's earlier waiters was served: an extra slot
turnover for exactly the call fairness is for.)

Hand-off: the script that frees a permit (a release, or any script finding an
expired lease) grants it at once to the next waiter, with a short claim lease
(half a lease), and pushes the waiter's member onto its process's inbox list;
that process's inbox reader (BLPOP) wakes the waiter, which claims the permit
(a full lease) with its next script. Compared with waiters polling on short
jittered sleeps, a hand-off costs two round trips instead of up to a poll
interval, and idle waiters cost Redis nothing; compared with pub/sub, a
list keeps a wake-up that arrives while the reader reconnects. The keeper
(``RedisLimits``) is the backstop: every quarter lease it renews this
process's permits and waiters in one script per limit and wakes any waiter
that was granted or dropped, and while waiters wait it runs again when the
earliest lease ends, handing a dead process's permits on at once.

Failure: while Redis errors, a waiter keeps waiting and retries with backoff
and jitter (fail closed). A permit whose renewal has not succeeded by
``lease - margin`` after the last successful one was sent is *lost*: Redis may
hand it on when the lease ends, so the call using it is cancelled at once and
raises ``PermitLost`` (``semaphore.guard``; ``ctx.call`` retries it).
Releasing never waits: the permit leaves this process's books at once and a
background task removes it from Redis (if that fails, its lease ends it).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from typing import Any

from runyard.governance.redis_common import BACKOFF, REDIS_ERRORS, Outage, Shared, log, lua, run, server_ms
from runyard.governance.semaphore import Permit
from runyard.retrying import Backoff, retry

LOSS_MARGIN = 0.1  # a permit is given up this fraction of a lease before Redis could hand it on
KEEP_MIN_S = 0.01

# Each script is the prelude + its own (their KEYS and ARGV are described at their top).
_PRELUDE = lua("semaphore_prelude")
_ACQUIRE = lua("semaphore_acquire")
_LEAVE = lua("semaphore_leave")
_KEEP = lua("semaphore_keep")


class RedisSemaphore:
    """``capacity`` permits shared by every process on the same Redis and prefix."""

    def __init__(self, backend: Shared, name: str, capacity: int) -> None:
        self.name = name
        self.capacity = capacity
        self._backend = backend
        self._lease_s = backend.lease_s
        base = f"{backend.prefix}{name}:"
        self._keys = [base + part for part in ("permits", "waiters", "owners", "held", "served", "turn")]
        lease_ms = server_ms(backend.lease_s)
        self._head: list[Any] = [base, backend.inbox_prefix, capacity, lease_ms, lease_ms // 2, backend.idle_ms]
        client = backend.client
        self._acquire = client.register_script(_PRELUDE + _ACQUIRE)
        self._leave = client.register_script(_PRELUDE + _LEAVE)
        self._keep = client.register_script(_PRELUDE + _KEEP)
        self._held: dict[str, tuple[Permit, asyncio.TimerHandle]] = {}  # member -> permit, its loss timer
        self._waiting: dict[str, asyncio.Event] = {}  # member -> its wake-up
        self._reported_waiting = 0  # the deployment's waiters, as Redis last said
        self._numbers = itertools.count(1)
        self._outage = Outage(f"limit {name!r}: permits")
        # the keeper's next renewal after failed ones: soon, but never past a tenth of a lease
        self._keep_backoff = Backoff(BACKOFF.first_s, self._lease_s / 10, spread=(1.0, 1.0))
        self._keep_failures = 0

    @property
    def in_flight(self) -> int:
        return len(self._held)

    @property
    def queued(self) -> int:
        return max(len(self._waiting), self._reported_waiting)

    @property
    def busy(self) -> bool:
        """Whether the keeper has anything to renew here."""
        return bool(self._held or self._waiting)

    async def acquire(self, owner: str) -> Permit:
        member = f"{self._backend.process}/{next(self._numbers)}|{owner}"
        wake = asyncio.Event()
        self._waiting[member] = wake
        self._backend.wakers[member] = wake
        self._backend.has_work()
        loop = asyncio.get_running_loop()
        sent = loop.time()

        async def ask() -> Any:
            nonlocal sent
            wake.clear()
            sent = loop.time()  # the lease runs from the attempt Redis answered
            return await run(self._acquire, self._keys, [*self._head, member, owner])

        try:
            while True:
                # fail closed: no permit without Redis saying so
                lease_ms, waiting = await retry(ask, BACKOFF, on=REDIS_ERRORS, failed=self._outage.failed)
                self._outage.recovered()
                self._reported_waiting = int(waiting)
                if lease_ms > 0:
                    return self._hold(member, owner, sent + lease_ms / 1000)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._lease_s):  # the inbox or the keeper wakes it; this is a backstop
                        await wake.wait()
        except BaseException:
            # out of the line, or a permit granted meanwhile handed on: in the background, never waiting
            self._backend.spawn(self._give_back(member, owner))
            raise
        finally:
            del self._waiting[member]
            self._backend.wakers.pop(member, None)

    def release(self, permit: Permit) -> None:
        held = self._held.pop(permit.id, None)
        if held is not None:
            held[1].cancel()
        self._backend.spawn(self._give_back(permit.id, permit.owner))

    async def keep(self) -> float:
        """Renew this process's permits and waiters; the seconds until it should run again."""
        held, waiting = list(self._held), list(self._waiting)
        sent = asyncio.get_running_loop().time()
        try:
            reply = await run(self._keep, self._keys, [*self._head, len(held), *held, *waiting])
        except REDIS_ERRORS as exc:
            self._outage.failed(exc)
            self._keep_failures += 1
            return self._keep_backoff.delay(self._keep_failures)
        self._outage.recovered()
        self._keep_failures = 0
        lost, granted, dropped, waiters, next_end = reply
        self._reported_waiting = int(waiters)
        gone = {member.decode() for member in lost}
        for member in held:
            entry = self._held.get(member)
            if member in gone:
                self._lose(member)
            elif entry is not None:
                entry[1].cancel()
                self._held[member] = (entry[0], self._loss_timer(member, sent + self._lease_s))
        for member in (*granted, *dropped):  # granted: claim it; dropped: register again
            wake = self._waiting.get(member.decode())
            if wake is not None:
                wake.set()
        due = self._lease_s / 4
        if self._waiting and next_end >= 0:
            due = min(due, next_end / 1000)  # a permit whose holder died goes to a waiter as its lease ends
        return max(due, KEEP_MIN_S)

    async def close(self) -> None:
        """Stop the calls holding a permit here (nothing renews them from now on) and give the permits back."""
        members = [(member, permit.owner) for member, (permit, _) in self._held.items()]
        for member, _ in members:
            self._lose(member, quietly=True)
        await asyncio.gather(*(self._give_back(member, owner) for member, owner in members))

    def _hold(self, member: str, owner: str, expires_at: float) -> Permit:
        permit = Permit(owner, member)
        self._held[member] = (permit, self._loss_timer(member, expires_at))
        return permit

    def _loss_timer(self, member: str, expires_at: float) -> asyncio.TimerHandle:
        deadline = expires_at - LOSS_MARGIN * self._lease_s
        return asyncio.get_running_loop().call_at(deadline, self._lose, member)

    def _lose(self, member: str, quietly: bool = False) -> None:
        """Stop the call holding ``member`` (its release gives the permit back)."""
        entry = self._held.pop(member, None)
        if entry is None:
            return
        permit, timer = entry
        timer.cancel()
        if not quietly:
            log.warning("limit %r: a permit's lease was not renewed in time; stopping the call using it", self.name)
        permit.lose()

    async def _give_back(self, member: str, owner: str) -> None:
        """Out of the line, or the permit back (and handed on); tried until its lease would end it anyway."""
        with contextlib.suppress(*REDIS_ERRORS):
            waiting = await retry(
                lambda: run(self._leave, self._keys, [*self._head, member, owner]),
                BACKOFF,
                on=REDIS_ERRORS,
                failed=self._outage.failed,
                give_up_after_s=self._lease_s,
            )
            self._reported_waiting = int(waiting)
