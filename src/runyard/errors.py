"""Errors raised by runyard. The HTTP layer maps each to the contract's envelope
``{"error": {"code", "message"}}`` in one place (``runyard.http.errors``).

    RunyardError                      root; ``code`` and ``status`` for HTTP
    ├── ConfigurationError            bad store/broker URL, missing extra
    ├── StartupFailed                 a resource or the app's lifespan failed to start (resources.py)
    ├── InvalidRequest (422)          body of the wrong shape, bad pipeline input
    │   └── InvalidWebhook            a webhook URL runyard will not call (scheme, address, no secret)
    ├── InvalidCursor (400)           ``after`` / ``Last-Event-ID`` not a non-negative integer
    ├── InvalidQuery (400)            a query parameter no listing knows what to do with
    ├── NotFound (404)
    │   ├── RunNotFound               missing, or another owner's
    │   ├── SessionNotFound           missing, expired, deleted, or another owner's
    │   ├── PipelineNotFound
    │   ├── ItemNotFound              a long-term store item missing, expired, or another owner's
    │   └── CronNotFound              missing, or another owner's (issue 13: crons)
    ├── Conflict (409)
    │   ├── SessionBusy               multitask=reject and the session has an unfinished run
    │   ├── SessionExists             a session of the owner's has the id they chose (if_exists=raise)
    │   ├── RunFinished               cancel of a finished run
    │   ├── RunNotWaiting             an answer to a run that is not waiting for one
    │   └── AskMismatch               an answer naming another question (``ask_id``)
    ├── InvalidAnswer (422)           an answer that does not fit its question's schema
    ├── InvalidSchedule (422)         a cron's schedule or time zone that cannot be read
    ├── IdempotencyKeyReused (422)    an Idempotency-Key repeated with another body
    ├── QuotaExceeded (429)           the owner created RUNYARD_QUOTA_RUNS runs already
    ├── TooManyStreams (429)          the owner has RUNYARD_MAX_STREAMS_PER_OWNER streams open
    ├── PayloadTooLarge (413)         a request body, or a store item's value, over its limit
    ├── EmbeddingFailed (502)         the app's ``store_embed`` raised or answered no vectors
    ├── StoreError                    the store could not do what was asked
    │   └── StoreUnavailable          busy or unreachable: a lock held past the busy timeout, a
    │                                 deadlock, a lost or refused connection (503 with Retry-After)
    ├── RunTooLarge                   a run's events would pass RUNYARD_MAX_RUN_BYTES:
    │                                 the store refused them; the run fails ``too_large``
    ├── RateLimited (429)             over RUNYARD_RATE_LIMIT (governance/admission.py)
    ├── BreakerOpen                   a limit's breaker is open (governance/breaker.py)
    ├── PermitLost                    a shared permit could not be renewed: the call
    │                                 holding it was stopped (governance/semaphore.py)
    └── LLMError                      an LLM endpoint's answer could not be used (adapters/openai.py)
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

# How a 404 for a run explains itself: the same words whether the run does not
# exist or is another owner's, so it tells how owners work and leaks nothing.
OWNERS = "a run is visible only to its owner: the X-Client-Id it was created with, or the sub of the bearer token"


class RunyardError(Exception):
    """Root of every error runyard raises on purpose."""

    code = "internal_error"
    status = 500

    def __init__(self, message: str = "") -> None:
        super().__init__(message or self.code.replace("_", " "))
        self.message = message or self.code.replace("_", " ")

    @property
    def headers(self) -> dict[str, str]:
        """Headers an HTTP answer to this error carries (a challenge, a Retry-After)."""
        return {}

    @property
    def details(self) -> dict[str, Any]:
        """Fields the error envelope carries besides ``code`` and ``message``."""
        return {}


class ConfigurationError(RunyardError):
    code = "configuration_error"


class StartupFailed(RunyardError):
    code = "startup_failed"


class InvalidRequest(RunyardError):
    code = "invalid_request"
    status = 422


class InvalidWebhook(InvalidRequest):
    code = "invalid_webhook"


class InvalidCursor(RunyardError):
    code = "invalid_cursor"
    status = 400


class InvalidQuery(RunyardError):
    code = "invalid_query"
    status = 400


class NotFound(RunyardError):
    code = "not_found"
    status = 404


class RunNotFound(NotFound):
    code = "run_not_found"

    @classmethod
    def of(cls, run_id: str) -> RunNotFound:
        return cls(f"no run {run_id!r} ({OWNERS})")


class SessionNotFound(NotFound):
    code = "session_not_found"


class PipelineNotFound(NotFound):
    code = "pipeline_not_found"
    suggestions: list[str] = []

    @classmethod
    def named(cls, name: str, known: Iterable[str]) -> PipelineNotFound:
        """No pipeline ``name``: the message and ``suggestions`` name the closest of ``known`` (a typo's fix)."""
        close = difflib.get_close_matches(name, sorted(known), n=3, cutoff=0.6)
        hint = f"; did you mean {' or '.join(repr(other) for other in close)}?" if close else ""
        error = cls(f"no pipeline named {name!r}{hint}")
        error.suggestions = close
        return error

    @property
    def details(self) -> dict[str, Any]:
        return {"suggestions": self.suggestions} if self.suggestions else {}


class ItemNotFound(NotFound):
    code = "item_not_found"


class CronNotFound(NotFound):
    code = "cron_not_found"


class Conflict(RunyardError):
    code = "conflict"
    status = 409


class SessionBusy(Conflict):
    code = "session_busy"


class SessionExists(Conflict):
    code = "session_exists"


class RunFinished(Conflict):
    code = "run_finished"


class RunNotWaiting(Conflict):
    code = "run_not_waiting"


class AskMismatch(Conflict):
    code = "ask_mismatch"


class InvalidAnswer(RunyardError):
    code = "invalid_input"
    status = 422


class InvalidSchedule(RunyardError):
    code = "invalid_schedule"
    status = 422


class PayloadTooLarge(RunyardError):
    code = "payload_too_large"
    status = 413


class EmbeddingFailed(RunyardError):
    code = "embedding_failed"
    status = 502


class StoreError(RunyardError):
    code = "store_error"
    status = 503


class StoreUnavailable(StoreError):
    """The store is busy or unreachable now (SQLite's lock held past its busy
    timeout; PostgreSQL's deadlocks, lock and statement timeouts, a pool with no
    free connection, a server that restarts or refuses connections): HTTP answers
    503 with ``Retry-After``. ``in_doubt``: the connection was lost after a write
    was sent (during COMMIT), so it may or may not have happened; otherwise
    nothing was written, and the same write may simply be tried again."""

    code = "store_unavailable"
    # The longest lock holder known, a retention sweep, held SQLite's for 1.1-1.4 s
    # (issue 10); a client that comes back after a second mostly finds the store free.
    retry_after_s = 1

    def __init__(self, message: str, *, in_doubt: bool) -> None:
        super().__init__(message)
        self.in_doubt = in_doubt

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class IdempotencyKeyReused(RunyardError):
    code = "idempotency_key_reused"
    status = 422


class QuotaExceeded(RunyardError):
    code = "quota_exceeded"
    status = 429


class TooManyStreams(RunyardError):
    code = "too_many_streams"
    status = 429
    retry_after_s = 5  # a slot frees when one of the owner's own streams ends: no sooner figure to give

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class RunTooLarge(RunyardError):
    """The store refused a group of events: the run would store more than its cap
    (``RUNYARD_MAX_RUN_BYTES``). An append result, raised at the run's next append;
    the engine ends the run ``failed`` with this ``code``."""

    code = "too_large"
    status = 413
    run_error_code = "too_large"  # the code a run whose events were refused this way ends with

    def __init__(self, run_id: str, limit: int) -> None:
        super().__init__(f"run {run_id} would store more than {limit} bytes of events (RUNYARD_MAX_RUN_BYTES)")
        self.run_id = run_id
        self.limit = limit
