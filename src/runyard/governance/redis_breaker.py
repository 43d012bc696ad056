"""One circuit breaker for the whole deployment, in Redis: failures counted
across processes, an open breaker failing calls fast on every process, and
exactly one probe across the deployment when it half-opens.

Keys, under ``{prefix}limits:{name}:breaker:``::

    failures   consecutive failures while closed
    tripped    present while open or half-open (no expiry: a probe's success removes it)
    cooling    present for ``reset_s`` after the breaker opens: no probe meanwhile
    probe      the probe slot: ``SET NX PX`` by the one call admitted as the probe

A probe that answers neither way within ``reset_s`` (its process died, say)
frees the slot by expiry and the next call probes. A success resets the count
when the count was not zero as the call was admitted, which spares a healthy
API's calls a second round trip.

While Redis cannot be reached the breaker knows nothing and lets calls through
(logging that once): the concurrency cap and the windows still hold, failing
closed, and outcomes are not counted until Redis answers again.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

from runyard.governance.breaker import Breaker, BreakerOpen, Ticket
from runyard.governance.redis_common import REDIS_ERRORS, Outage, Shared, lua, run, server_ms
from runyard.observability import metrics

if TYPE_CHECKING:
    from redis.commands.core import AsyncScript


# KEYS: failures, tripped, cooling, probe; each script describes its ARGV at its top
_ADMIT = lua("breaker_admit")
_FAILED = lua("breaker_failed")
_SUCCEEDED = lua("breaker_succeeded")
_ABANDONED = lua("breaker_abandoned")


class RedisBreaker:
    """The breaker of one limit, shared by every process on the same Redis and prefix."""

    def __init__(self, backend: Shared, name: str, policy: Breaker) -> None:
        self.name = name
        self.policy = policy
        self._backend = backend
        base = f"{backend.prefix}{name}:breaker:"
        self._keys = [base + part for part in ("failures", "tripped", "cooling", "probe")]
        self._reset_ms = server_ms(policy.reset_s)
        client = backend.client
        self._admit = client.register_script(_ADMIT)
        self._failed = client.register_script(_FAILED)
        self._succeeded = client.register_script(_SUCCEEDED)
        self._abandoned = client.register_script(_ABANDONED)
        self._outage = Outage(f"limit {name!r}: breaker (calls pass while Redis is away)")

    async def admit(self) -> Ticket:
        token = secrets.token_hex(8)
        reply = await self._run(self._admit, token, self._reset_ms)
        if reply is None:
            return Ticket()
        state, value = int(reply[0]), int(reply[1])
        if state < 0:
            self._gauge(True)
            raise BreakerOpen(f"the {self.name} breaker is open ({value / 1000:.1f} s until a probe)")
        if state == 0:
            self._gauge(False)  # closed, whoever closed it
        return Ticket(probe=state == 1, token=token, failures=value)

    async def succeeded(self, ticket: Ticket) -> None:
        if (not ticket.probe and ticket.failures == 0) or not ticket.token:
            return  # nothing to reset (or Redis was away when it was admitted)
        reply = await self._run(self._succeeded, int(ticket.probe))
        if reply is not None:
            self._gauge(bool(reply))

    async def failed(self, ticket: Ticket) -> None:
        reply = await self._run(self._failed, ticket.token, int(ticket.probe), self.policy.failures, self._reset_ms)
        if reply is not None:
            self._gauge(bool(reply))

    def abandoned(self, ticket: Ticket) -> None:
        if ticket.probe:
            self._backend.spawn(self._run(self._abandoned, ticket.token))

    async def _run(self, script: AsyncScript, *args: Any) -> Any:
        try:
            reply = await run(script, self._keys, args)
        except REDIS_ERRORS as exc:
            self._outage.failed(exc)
            return None
        self._outage.recovered()
        return reply

    def _gauge(self, open: bool) -> None:
        metrics.BREAKER_OPEN.labels(self.name).set(1 if open else 0)
