"""What the client's methods return: the API's JSON, typed.

They are ``TypedDict``s, so a result is still the plain ``dict`` it always was
(``run["run_id"]``, ``run.get("output")``, ``json.dumps(run)``) while a type
checker and an editor know its keys. Keys the server added later than the
contract's first version are ``NotRequired``: an older server may not send them.
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict


class RunError(TypedDict):
    """Why a run did not succeed: ``{"code", "message"}``."""

    code: str
    message: str


class RunSnapshot(TypedDict):
    """A run as ``GET /v1/runs/{id}`` shows it. Times are RFC 3339 UTC strings."""

    run_id: str
    session_id: str
    pipeline: str
    status: str  # queued, running, waiting, succeeded, failed, cancelled, timed_out
    input: Any
    output: Any
    error: RunError | None
    created_at: str
    started_at: str | None
    finished_at: str | None
    last_seq: int
    attempt: int
    metadata: dict[str, Any]
    waiting_for: NotRequired[dict[str, Any] | None]  # a waiting run's question, or its sleep's end
    scheduled_for: NotRequired[str | None]
    trace_id: NotRequired[str | None]


class Event(TypedDict):
    """One event of a run's stream; a session's stream adds the ``run_id`` it belongs to."""

    seq: int
    type: str
    data: Any
    ts: str | None
    run_id: NotRequired[str]


class EventPage(TypedDict):
    """``GET /v1/runs/{id}/events``: a page of events and where the next one starts."""

    events: list[Event]
    next_after: int
    status: str


class RunPage(TypedDict):
    """``GET /v1/runs``: the caller's runs, newest first; ``next`` is the following page's ``before``."""

    runs: list[RunSnapshot]
    next: str | None


class SessionInfo(TypedDict):
    """A session; ``history`` (its memory) when read by its id."""

    session_id: str
    created_at: str
    last_activity: str
    status: str
    metadata: dict[str, Any]
    history: NotRequired[list[dict[str, Any]]]


class SessionPage(TypedDict):
    """``GET /v1/sessions``: the caller's sessions, newest activity first."""

    sessions: list[SessionInfo]
    next: str | None


class Cron(TypedDict):
    """A cron: a run of ``pipeline`` at each time of ``schedule``, in ``timezone``."""

    cron_id: str
    pipeline: str
    input: Any
    schedule: str
    timezone: str
    session_id: str | None
    metadata: dict[str, Any]
    webhook: Any
    enabled: bool
    next_run_at: str | None
    last_run_id: str | None
    last_run_at: str | None
    created_at: str
    updated_at: str


class Item(TypedDict):
    """An item of the long-term store; ``score`` in a search's answer given a query."""

    namespace: list[str]
    key: str
    value: dict[str, Any]
    created_at: str
    updated_at: str
    score: NotRequired[float]
