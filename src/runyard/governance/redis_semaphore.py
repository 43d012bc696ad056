"""A concurrency cap shared by every process of a deployment: a lease-based,
fair semaphore in Redis, each step one atomic Lua script.

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
from typing import TYPE_CHECKING, Any

from runyard.governance.redis_common import REDIS_ERRORS, Outage, backoff, jitter, log, run, server_ms
from runyard.governance.semaphore import Permit

if TYPE_CHECKING:
    from runyard.governance.redis import RedisLimits

LOSS_MARGIN = 0.1  # a permit is given up this fraction of a lease before Redis could hand it on
KEEP_MIN_S = 0.01

# ARGV: 1 the limit's key prefix, 2 the inboxes' key prefix, 3 capacity, 4 lease ms,
# 5 claim ms (a waiter's registration, and a permit granted to a waiter until it claims it),
# 6 idle ms (keys untouched this long expire); then each script's own.
_PRELUDE = """
local permits, waiters, owners, held, served, turn = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local base, inboxes = ARGV[1], ARGV[2]
local capacity, lease, claim, idle = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)

local function owner_of(member)
  return string.sub(member, string.find(member, '|', 1, true) + 1)
end

local function line_of(owner)
  return base .. 'line:' .. owner
end

-- waiting owners are scored so that the lowest goes next: fewest held, then least recently
-- served (never: 0); equal scores go in owner order
local function rescore(owner)
  if redis.call('ZSCORE', owners, owner) then
    local h = tonumber(redis.call('HGET', held, owner) or 0)
    redis.call('ZADD', owners, h * 1099511627776 + tonumber(redis.call('HGET', served, owner) or 0), owner)
  end
end

local function forget_if_idle(owner)
  if redis.call('HEXISTS', held, owner) == 0 and redis.call('EXISTS', line_of(owner)) == 0 then
    redis.call('HDEL', served, owner)
  end
end

local function held_one_fewer(owner)
  if redis.call('HINCRBY', held, owner, -1) <= 0 then
    redis.call('HDEL', held, owner)
    forget_if_idle(owner)
  end
  rescore(owner)
end

local function purge()
  local ended = redis.call('ZRANGEBYSCORE', permits, '-inf', now)
  if #ended > 0 then
    for _, member in ipairs(ended) do held_one_fewer(owner_of(member)) end
    redis.call('ZREMRANGEBYSCORE', permits, '-inf', now)
  end
  -- a dropped waiter's entry in its line is skipped when reached
  redis.call('ZREMRANGEBYSCORE', waiters, '-inf', now)
end

local function grant(member, owner, expiry)
  redis.call('ZREM', waiters, member)
  redis.call('ZADD', permits, expiry, member)
  redis.call('HINCRBY', held, owner, 1)
  redis.call('HSET', served, owner, redis.call('INCR', turn))
  rescore(owner)
end

local function queue(member, owner)
  local line = line_of(owner)
  redis.call('RPUSH', line, member)
  redis.call('PEXPIRE', line, idle)
  if not redis.call('ZSCORE', owners, owner) then
    redis.call('ZADD', owners, 0, owner)
    rescore(owner)
  end
end

local function dispatch(caller)
  local free = capacity - redis.call('ZCARD', permits)
  while free > 0 do
    local next_owner = redis.call('ZRANGE', owners, 0, 0)
    if #next_owner == 0 then return end
    local owner = next_owner[1]
    local line = line_of(owner)
    local member = redis.call('LPOP', line)
    while member and not redis.call('ZSCORE', waiters, member) do
      member = redis.call('LPOP', line)
    end
    if redis.call('EXISTS', line) == 0 then redis.call('ZREM', owners, owner) end
    if member then
      grant(member, owner, now + claim)
      free = free - 1
      if member ~= caller then
        local inbox = inboxes .. string.sub(member, 1, string.find(member, '/', 1, true) - 1)
        redis.call('RPUSH', inbox, member)
        redis.call('PEXPIRE', inbox, idle)
      end
    else
      forget_if_idle(owner)
    end
  end
end

local function touch()
  for _, key in ipairs(KEYS) do redis.call('PEXPIRE', key, idle) end
end
"""

# ARGV 7 member, 8 owner -> {lease ms if granted (and claimed) else 0, waiters}
_ACQUIRE = """
purge()
local member, owner = ARGV[7], ARGV[8]
if not redis.call('ZSCORE', permits, member) then
  if redis.call('ZSCORE', waiters, member) then
    redis.call('ZADD', waiters, now + claim, member)
  elseif redis.call('ZCARD', waiters) == 0 and redis.call('ZCARD', permits) < capacity then
    grant(member, owner, now + lease)
  else
    redis.call('ZADD', waiters, now + claim, member)
    queue(member, owner)
  end
  dispatch(member)
end
local waiting = redis.call('ZCARD', waiters)
touch()
if redis.call('ZSCORE', permits, member) then
  redis.call('ZADD', permits, now + lease, member)
  return {lease, waiting}
end
return {0, waiting}
"""

# ARGV 7 member, 8 owner -> waiters. Gives back a permit, or leaves the line.
_LEAVE = """
purge()
local member, owner = ARGV[7], ARGV[8]
if redis.call('ZREM', permits, member) == 1 then
  held_one_fewer(owner)
elseif redis.call('ZREM', waiters, member) == 1 then
  local line = line_of(owner)
  redis.call('LREM', line, 1, member)
  if redis.call('EXISTS', line) == 0 then
    redis.call('ZREM', owners, owner)
    forget_if_idle(owner)
  end
end
dispatch('')
touch()
return redis.call('ZCARD', waiters)
"""

# ARGV 7 n, then n held members, then waiting members
# -> {lost held, granted waiting, dropped waiting, waiters, ms until the earliest lease ends or -1}
_KEEP = """
purge()
local n = tonumber(ARGV[7])
local lost, granted, dropped = {}, {}, {}
for i = 8, 7 + n do
  local member = ARGV[i]
  if redis.call('ZSCORE', permits, member) then
    redis.call('ZADD', permits, now + lease, member)
  else
    lost[#lost + 1] = member
  end
end
for i = 8 + n, #ARGV do
  local member = ARGV[i]
  if redis.call('ZSCORE', permits, member) then
    granted[#granted + 1] = member
  elseif redis.call('ZSCORE', waiters, member) then
    redis.call('ZADD', waiters, now + claim, member)
    redis.call('PEXPIRE', line_of(owner_of(member)), idle)
  else
    dropped[#dropped + 1] = member
  end
end
dispatch('')
touch()
local first = redis.call('ZRANGE', permits, 0, 0, 'WITHSCORES')
local next_end = -1
if #first > 0 then next_end = tonumber(first[2]) - now end
return {lost, granted, dropped, redis.call('ZCARD', waiters), next_end}
"""


class RedisSemaphore:
    """``capacity`` permits shared by every process on the same Redis and prefix."""

    def __init__(self, backend: RedisLimits, name: str, capacity: int) -> None:
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
        self._keep_delay = 0.0

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
        delay = 0.0
        try:
            while True:
                wake.clear()
                sent = loop.time()
                try:
                    lease_ms, waiting = await run(self._acquire, self._keys, [*self._head, member, owner])
                except REDIS_ERRORS as exc:
                    self._outage.failed(exc)
                    delay = backoff(delay)
                    await asyncio.sleep(jitter(delay))  # fail closed: no permit without Redis saying so
                    continue
                self._outage.recovered()
                delay = 0.0
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
            self._keep_delay = backoff(self._keep_delay, ceiling=self._lease_s / 10)
            return self._keep_delay
        self._outage.recovered()
        self._keep_delay = 0.0
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
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + self._lease_s
        delay = 0.0
        while True:
            try:
                self._reported_waiting = int(await run(self._leave, self._keys, [*self._head, member, owner]))
                return
            except REDIS_ERRORS as exc:
                self._outage.failed(exc)
                if loop.time() >= give_up_at:
                    return
                delay = backoff(delay)
                await asyncio.sleep(jitter(delay))
