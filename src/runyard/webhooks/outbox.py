"""Delivering the outbox: every worker process claims the deliveries that are
due, tries each once, and finishes, reschedules or drops it.

The store queued each delivery in the transaction that finished its run
(``store.outbox``); a claim leases it (``LEASE_S``) so that no two processes
try one delivery at the same moment, and a process that dies mid-attempt only
delays it until the lease ends. A failed attempt is due again after
``retrying.Backoff``; past ``RUNYARD_WEBHOOK_RETRY_S`` after the run finished
it is dropped. The body is the run's snapshot read at delivery time: the run is
finished, so it is final. While tracing is on, each attempt is a ``webhook``
span in the run's trace and its POST carries that trace context."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import httpx

from runyard.errors import InvalidWebhook, StoreError
from runyard.models import dumps
from runyard.observability.metrics import WEBHOOK_DELIVERIES_TOTAL
from runyard.observability.propagation import outgoing
from runyard.observability.tracing import webhook_span
from runyard.retrying import Backoff
from runyard.settings import Settings
from runyard.store.base import Store
from runyard.store.outbox import Delivery
from runyard.webhooks import addresses, sender
from runyard.webhooks.sender import Result
from runyard.webhooks.signing import RUN_ID_HEADER, SIGNATURE_HEADER, sign

log = logging.getLogger("runyard.webhooks")

CONCURRENCY = 64  # delivery attempts at once in one process
CLAIM_AT_LEAST = CONCURRENCY // 4  # slots freed before the next claim, while attempts are in flight
LEASE_S = 3 * sender.TIMEOUT_S  # longer than an attempt (resolution, connection, answer) ever takes
POLL_S = 1.0  # how often an idle process looks for due deliveries
RETRY = Backoff(first_s=1.0, max_s=600.0)
STORE_DOWN = Backoff(first_s=0.5, max_s=30.0)


class Webhooks:
    """Checks webhook URLs at run creation; on a worker, delivers the outbox."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self._task: asyncio.Task[None] | None = None

    async def check(self, url: str | None) -> None:
        """``InvalidWebhook`` unless runyard can sign deliveries and may call ``url``."""
        if url is None:
            return
        if not self.settings.webhook_secret:
            # an unsigned delivery could not be told from a forged one: refuse rather than send it
            raise InvalidWebhook("webhooks need RUNYARD_WEBHOOK_SECRET set on the server, to sign deliveries")
        await addresses.resolve(url, self.settings.webhook_allowed_hosts)

    async def start(self) -> None:
        if self.settings.executes_runs and self._task is None:
            self._task = asyncio.create_task(self.deliver_forever(), name="runyard-webhooks")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()  # claims no more; attempts under way finish first (``deliver_forever``)
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def deliver_forever(self) -> None:
        """Deliver what is due, up to ``CONCURRENCY`` attempts at once, until cancelled.

        A window, not rounds: slots freed by attempts take the next due
        deliveries, so a slow receiver holds up only its own slot."""
        failures = 0
        in_flight: set[asyncio.Task[None]] = set()
        async with sender.Pool() as pool:
            try:
                while True:
                    free = CONCURRENCY - len(in_flight)
                    if in_flight and free < CLAIM_AT_LEAST:  # a claim is a write: not one per slot freed
                        await asyncio.wait(in_flight, timeout=POLL_S, return_when=asyncio.FIRST_COMPLETED)
                        continue
                    try:
                        claimed = await self._claim(free)
                        failures = 0
                    except StoreError as exc:
                        failures += 1
                        log.warning("webhook outbox unavailable, retrying: %s", exc)
                        await asyncio.sleep(STORE_DOWN.delay(failures))
                        continue
                    for delivery in claimed:
                        task = asyncio.create_task(self._attempt_recorded(pool.client(), delivery))
                        in_flight.add(task)
                        task.add_done_callback(in_flight.discard)
                    if len(claimed) == free:
                        continue  # more may be due
                    if in_flight:
                        await asyncio.wait(in_flight, timeout=POLL_S, return_when=asyncio.FIRST_COMPLETED)
                    else:
                        await asyncio.sleep(POLL_S)
            finally:
                # stopping: attempts under way may finish (up to RUNYARD_DRAIN_S), since
                # one cut after its POST would be sent again once its lease ends
                if in_flight:
                    await asyncio.wait(set(in_flight), timeout=self.settings.drain_s)
                for task in in_flight:
                    task.cancel()

    async def deliver_due(self, http: httpx.AsyncClient) -> int:
        """One round: claim what is due now (up to ``CONCURRENCY``) and try each once; how many were claimed."""
        claimed = await self._claim(CONCURRENCY)
        await asyncio.gather(*(self._attempt_recorded(http, delivery) for delivery in claimed))
        return len(claimed)

    async def _claim(self, limit: int) -> list[Delivery]:
        at = time.time()
        return await self.store.claim_deliveries(at, at + LEASE_S, limit)

    async def _attempt_recorded(self, http: httpx.AsyncClient, delivery: Delivery) -> None:
        try:
            await self._attempt(http, delivery)
        except StoreError as exc:  # the store failed to record it: tried again once its lease ends
            log.warning("webhook delivery of %s not recorded: %s", delivery.run_id, exc)

    async def _attempt(self, http: httpx.AsyncClient, delivery: Delivery) -> None:
        run = await self.store.get_run(delivery.run_id)
        if run is None:
            self._record(delivery, Result.GONE, "the run was swept before its delivery")
            await self.store.finish_delivery(delivery)
            return
        with webhook_span(run, delivery.attempts) as traced:  # the POST carries the run's trace context
            result, detail = await self._post(http, delivery, dumps(run.snapshot()))
            if traced is not None:
                traced.set_attribute("runyard.webhook.result", result.value)
        self._record(delivery, result, detail)
        if result is Result.DELIVERED:
            await self.store.finish_delivery(delivery)
            return
        due = time.time() + RETRY.delay(delivery.attempts)
        if due > delivery.queued_at + self.settings.webhook_retry_s:
            self._record(delivery, Result.GAVE_UP, f"still failing {self.settings.webhook_retry_s:g} s after the run")
            await self.store.finish_delivery(delivery)
        else:
            await self.store.retry_delivery(delivery, due)

    async def _post(self, http: httpx.AsyncClient, delivery: Delivery, body: bytes) -> tuple[Result, str]:
        secret = self.settings.webhook_secret
        if not secret:  # set when the run was created, unset since: nothing to sign with
            return Result.FAILED, "RUNYARD_WEBHOOK_SECRET is not set"
        try:  # checked again now, and connected to as checked: no DNS rebinding
            target = await addresses.resolve(delivery.url, self.settings.webhook_allowed_hosts)
        except InvalidWebhook as exc:
            return Result.REFUSED, exc.message
        headers = outgoing({SIGNATURE_HEADER: sign(body, secret), RUN_ID_HEADER: delivery.run_id})
        return await sender.post(http, target, body, headers)

    @staticmethod
    def _record(delivery: Delivery, result: Result, detail: str) -> None:
        WEBHOOK_DELIVERIES_TOTAL.labels(result.value).inc()
        level = logging.INFO if result is Result.DELIVERED else logging.WARNING
        log.log(
            level,
            "webhook %s for run %s (attempt %d): %s",
            result.value,
            delivery.run_id,
            delivery.attempts,
            detail,
            extra={"run_id": delivery.run_id, "attempt": delivery.attempts, "result": result.value},
        )
