"""One delivery attempt: POST the signed body to the checked address, nothing more.

Connects to ``Target.address`` (checked just before) with the URL's own host in
``Host`` and in TLS (SNI and certificate check, ``sni_hostname``); follows no
redirect, reads at most ``MAX_RESPONSE_BYTES`` of the answer, and gives up
``TIMEOUT_S`` after it began (connection and answer together). No proxy from
the environment: the address checked is the one connected to."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from enum import StrEnum

import httpx

from runyard.webhooks.addresses import Target

TIMEOUT_S = 10.0
MAX_RESPONSE_BYTES = 64 * 1024


class Result(StrEnum):
    """An attempt's result: the ``result`` label of ``runyard_webhook_deliveries_total``."""

    DELIVERED = "delivered"  # a 2xx answer
    FAILED = "failed"  # another answer, or the connection failed: tried again
    TIMEOUT = "timeout"  # no answer within TIMEOUT_S: tried again
    REFUSED = "refused"  # the host now resolves to an address runyard does not call: tried again
    GONE = "gone"  # the run was swept before its delivery: dropped
    GAVE_UP = "gave_up"  # failed past RUNYARD_WEBHOOK_RETRY_S: dropped


CLIENTS = 4  # clients a pool spreads attempts over


def client() -> httpx.AsyncClient:
    """A client for attempts: no redirect followed, no proxy, ``TIMEOUT_S``."""
    return httpx.AsyncClient(timeout=TIMEOUT_S, follow_redirects=False, trust_env=False)


class Pool:
    """A few clients taken in turn. httpcore scans every connection of a client
    for each request: at 64 attempts at once one client delivered 178 a second,
    spread over smaller pools several times as many (bench/webhooks.py)."""

    def __init__(self, clients: int = CLIENTS) -> None:
        self._size = clients
        # made by the first delivery: each holds its own TLS context (certificates
        # loaded, ~1 MiB), which a worker that never sends a webhook need not hold
        self._clients: list[httpx.AsyncClient] = []
        self._turn = 0

    def client(self) -> httpx.AsyncClient:
        if not self._clients:
            self._clients = [client() for _ in range(self._size)]
        self._turn = (self._turn + 1) % len(self._clients)
        return self._clients[self._turn]

    async def __aenter__(self) -> Pool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        for http in self._clients:
            await http.aclose()


async def post(http: httpx.AsyncClient, target: Target, body: bytes, headers: Mapping[str, str]) -> tuple[Result, str]:
    """One attempt, and what to log of it (the status, or the error)."""
    host = target.host if target.port in (80, 443) else f"{target.host}:{target.port}"
    request = http.build_request(
        "POST",
        target.pinned_url,
        content=body,
        headers={**headers, "Host": host, "Content-Type": "application/json", "User-Agent": "runyard-webhooks"},
        extensions={"sni_hostname": target.host},
    )
    try:
        async with asyncio.timeout(TIMEOUT_S):  # the whole attempt: httpx's timeouts are per operation
            response = await http.send(request, stream=True)
            try:
                await _read_some(response)
            finally:
                await response.aclose()
    except (httpx.TimeoutException, TimeoutError):
        return Result.TIMEOUT, f"no answer within {TIMEOUT_S:g} s"
    except httpx.HTTPError as exc:
        return Result.FAILED, f"{type(exc).__name__}: {exc}"
    if 200 <= response.status_code < 300:
        return Result.DELIVERED, str(response.status_code)
    return Result.FAILED, f"answered {response.status_code}"


async def _read_some(response: httpx.Response) -> None:
    """Read the answer up to ``MAX_RESPONSE_BYTES`` (a receiver may answer at length: runyard only needs its status)."""
    read = 0
    async for chunk in response.aiter_raw():
        read += len(chunk)
        if read >= MAX_RESPONSE_BYTES:
            break
