"""Which failures of an external API are worth another try, and how long to wait:
exponential backoff with jitter, or what the API said (``retry-after-ms``,
``Retry-After``) when it said something. Cancellation is never a failure; a
call stopped because its shared permit was lost (``PermitLost``) is tried again."""

from __future__ import annotations

import asyncio
import email.utils
import time
from typing import Any

import httpx
from tenacity import RetryCallState, wait_random_exponential

from runyard.governance.breaker import BreakerOpen
from runyard.governance.semaphore import PermitLost

RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
MAX_HINT_S = 300.0
_backoff = wait_random_exponential(multiplier=0.25, max=20)


def retryable(exc: BaseException) -> bool:
    if isinstance(exc, asyncio.CancelledError | BreakerOpen):
        return False
    if isinstance(exc, PermitLost):
        return True
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code in RETRY_STATUSES
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(status, int):
        return status in RETRY_STATUSES
    return isinstance(exc, httpx.TransportError | TimeoutError | ConnectionError)


def retry_after(exc: BaseException | None) -> float | None:
    """Seconds the failed answer asked us to wait, from the raised error's ``response``."""
    headers: Any = getattr(getattr(exc, "response", None), "headers", None)
    if headers is None:
        return None
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            return min(MAX_HINT_S, max(0.0, float(millis) / 1000))
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return min(MAX_HINT_S, max(0.0, float(value)))
    except ValueError:
        when = email.utils.parsedate_to_datetime(value) if email.utils.parsedate_tz(value) else None
        return None if when is None else min(MAX_HINT_S, max(0.0, when.timestamp() - time.time()))


def wait(state: RetryCallState) -> float:
    """The API's hint if it gave one, else exponential backoff with jitter."""
    hinted = retry_after(state.outcome.exception() if state.outcome else None)
    return hinted if hinted is not None else float(_backoff(state))
