"""How a dropped stream resumes: the ``Reconnect`` policy and one stream's ``_Cursor``."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import httpx

from runyard.client.api import FINISHED, APIError, Event, StreamLost, _path, _Request
from runyard.events.sse import SSEParser, decode_event
from runyard.retrying import Backoff


@dataclass(frozen=True, slots=True)
class Reconnect:
    """How a dropped stream resumes: exponential backoff with jitter, bounded.

    ``attempts`` and ``max_wait_s`` count from the last event received, so a long
    stream that drops now and then never runs out of them.
    """

    attempts: int = 10
    max_wait_s: float = 60.0
    initial_delay_s: float = 0.1
    max_delay_s: float = 5.0
    jitter: float = 0.2

    def delay(self, failures: int) -> float:
        spread = (1 - self.jitter, 1 + self.jitter)
        return Backoff(self.initial_delay_s, self.max_delay_s, spread).delay(failures)


def _retryable(exc: Exception) -> bool:
    return not isinstance(exc, APIError) or exc.status >= 500


class _Closed(Exception):
    """The server ended a stream before its ``end`` event (a restart, say)."""


_DROPS = (httpx.TransportError, APIError, _Closed)


class _Cursor:
    """One resumable stream's state: the last ``seq`` seen, the reconnect budget, a deadline."""

    def __init__(self, after: int, policy: Reconnect, deadline: float | None) -> None:
        self.seq = after
        self.ended = False
        self.connected = False  # some answer came: a refused connection later is a restart, not a wrong URL
        self._policy = policy
        self._deadline = deadline
        self._failures = 0
        self._failing_since: float | None = None
        self._parser = SSEParser()

    def request(self, run_id: str) -> _Request:
        """The request for the next connection, which starts right after the last event seen."""
        self._parser = SSEParser()
        headers = {"Accept": "text/event-stream", "Last-Event-ID": str(self.seq)}
        return _Request("GET", _path("runs", run_id, "stream"), {"after": self.seq}, headers=headers)

    def feed(self, line: str) -> Event | None:
        """The new event this line completes, if any; repeats (``seq`` already seen) are dropped."""
        self._check_deadline()
        frame = self._parser.feed(line)
        event = cast(Event | None, decode_event(frame) if frame else None)
        if event is None or event["seq"] <= self.seq:
            return None
        self.seq, self.ended = event["seq"], event["type"] == "end"
        self._failures, self._failing_since = 0, None
        return event

    def may_retry(self, exc: Exception) -> bool:
        """Whether a drop is worth reconnecting after: not an error answer below 500, and
        not a refused first connection (nothing listens there: waiting would only hide it)."""
        if isinstance(exc, httpx.ConnectError) and not self.connected:
            return False
        return _retryable(exc)

    def nothing_left(self, snapshot: Mapping[str, Any]) -> bool:
        """Whether a stream that closed without ``end`` has nothing more to deliver."""
        return snapshot.get("status") in FINISHED and int(snapshot.get("last_seq", 0)) <= self.seq

    def retry_in(self, exc: Exception) -> float:
        """Seconds to wait before reconnecting; raises when the policy or the deadline is spent."""
        now = time.monotonic()
        self._check_deadline(now)
        if self._failing_since is None:
            self._failing_since = now
        self._failures += 1
        policy = self._policy
        if self._failures > policy.attempts or now - self._failing_since > policy.max_wait_s:
            tries = self._failures - 1
            raise StreamLost(f"stream lost after seq {self.seq} and {tries} reconnect attempts: {exc!r}") from exc
        delay = policy.delay(self._failures)
        return delay if self._deadline is None else min(delay, self._deadline - now)

    def timeout(self, connect: float, read: float) -> httpx.Timeout:
        if self._deadline is not None:
            read = max(0.001, min(read, self._deadline - time.monotonic()))
        return httpx.Timeout(connect, read=read)

    def _check_deadline(self, now: float | None = None) -> None:
        if self._deadline is not None and (now or time.monotonic()) >= self._deadline:
            raise TimeoutError(f"the run did not finish in time (last seq {self.seq})")


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


class _SessionCursor(_Cursor):
    """A session stream's state: the ``id:`` of the last frame seen (opaque: the
    server resumes exactly after it, so nothing is repeated to drop)."""

    def __init__(self, after: str | None, policy: Reconnect) -> None:
        super().__init__(0, policy, None)
        self.position = after

    def request(self, run_id: str) -> _Request:
        """``run_id`` is the session's id here."""
        self._parser = SSEParser()
        headers = {"Accept": "text/event-stream"}
        if self.position is not None:
            headers["Last-Event-ID"] = self.position
        return _Request("GET", _path("sessions", run_id, "stream"), headers=headers)

    def feed(self, line: str) -> Event | None:
        frame = self._parser.feed(line)
        event = cast(Event | None, decode_event(frame) if frame else None)
        if frame is None or event is None or frame.id is None:
            return None
        self.position = frame.id
        self._failures, self._failing_since = 0, None
        return event

    def nothing_left(self, snapshot: Mapping[str, Any]) -> bool:
        """Whether a stream that closed has ended for good (``snapshot``: the session's)."""
        return snapshot.get("status") == "expired"
