"""What the API answers, as the OpenAPI document describes it.

The routes build their JSON directly (orjson, no re-validation on the hot path);
these models exist so that ``/docs`` and ``/openapi.json`` tell clients (and the
schemathesis run in the test suite) exactly what each status carries.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from runyard.models import RunStatus


class ErrorBody(BaseModel):
    code: str
    message: str
    suggestions: list[str] | None = Field(None, description="pipeline_not_found: the closest pipeline names")


class ErrorEnvelope(BaseModel):
    """Every error answer."""

    error: ErrorBody


class RunSnapshot(BaseModel):
    run_id: str
    session_id: str
    pipeline: str
    status: RunStatus
    input: Any
    output: Any
    error: ErrorBody | None
    created_at: str
    started_at: str | None
    finished_at: str | None
    last_seq: int
    attempt: int
    metadata: dict[str, Any]
    waiting_for: dict[str, Any] | None = Field(
        description="While waiting: {ask_id, request, schema} for a question, {until} for a sleep"
    )
    scheduled_for: str | None = Field(None, description="Created with after_s: no worker claims it before this time")
    trace_id: str | None = Field(
        None, description="The run's OpenTelemetry trace (32 lowercase hex digits): its creator's, or its own"
    )


class ListedRun(RunSnapshot):
    owner: str | None = Field(
        None, description="Whose run it is: only in a listing of another owner's or every owner's runs (owner=)"
    )


class RunList(BaseModel):
    runs: list[ListedRun]
    next: str | None


class EventOut(BaseModel):
    seq: int
    type: str
    data: Any
    ts: str


class EventsPage(BaseModel):
    events: list[EventOut]
    next_after: int
    status: RunStatus


class SessionOut(BaseModel):
    session_id: str
    created_at: str
    last_activity: str
    status: Literal["idle", "busy", "expired"]
    metadata: dict[str, Any]
    history: list[dict[str, Any]]


class ListedSessionOut(BaseModel):
    session_id: str
    created_at: str
    last_activity: str
    status: Literal["idle", "busy", "expired"]
    metadata: dict[str, Any]


class SessionList(BaseModel):
    sessions: list[ListedSessionOut]
    next: str | None


class PipelineInfo(BaseModel):
    name: str
    description: str
    timeout_s: float | None
    retries: int
    input_schema: dict[str, Any]


class PipelineList(BaseModel):
    pipelines: list[PipelineInfo]


class Readiness(BaseModel):
    status: Literal["ready", "unready"]
    checks: dict[str, str]
    unserved: dict[str, int] = Field(
        default_factory=dict,
        description="Pipelines with queued runs that no live worker serves, and how many runs wait for each",
    )


_DESCRIPTIONS = {
    400: "Bad request: a malformed body, query or cursor, or a bad X-Client-Id",
    401: "No valid bearer token (RUNYARD_AUTH=jwt)",
    403: "Not allowed for this caller",
    404: "Not found, or another owner's",
    409: "Conflict with the run's or session's state, or a session of yours has that id",
    413: "The body exceeds RUNYARD_MAX_BODY_BYTES",
    422: "A body of the wrong shape, input its pipeline refuses, or an Idempotency-Key reused with another body",
    429: "Over the owner's RUNYARD_QUOTA_RUNS (quota_exceeded) or RUNYARD_RATE_LIMIT (rate_limited, Retry-After)",
    503: "The store is busy or unreachable (store_unavailable): try again after Retry-After",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entries for these error statuses, each the error envelope."""
    return {status: {"model": ErrorEnvelope, "description": _DESCRIPTIONS[status]} for status in statuses}


EVENT_STREAM: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Server-Sent Events: id, event and data (the whole event as JSON) per frame",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    }
}
