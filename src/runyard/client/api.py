"""The API's errors, and its requests and answers, shared by both clients."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from runyard.client.types import Event as Event
from runyard.errors import RunyardError
from runyard.models import RunStatus

DEFAULT_URL = "http://127.0.0.1:8000"
FINISHED = frozenset(status.value for status in RunStatus if status.finished)


def server_url(url: str) -> str:
    """``url`` with ``http://`` in front when it names no scheme (``localhost:8000``)."""
    url = url.strip()
    return url if "://" in url else "http://" + url


class APIError(RunyardError):
    """An error answer: the HTTP ``status`` and the envelope's ``code`` and ``message``;
    ``details``: the envelope's other fields (a ``pipeline_not_found``'s ``suggestions``)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        retry_after: float | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.retry_after = retry_after
        self._details = details or {}

    @property
    def details(self) -> dict[str, Any]:
        return self._details

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.message}"


class ConnectionFailed(RunyardError, httpx.TransportError):
    """No answer from the server at ``url``: nothing listens there, a timeout, a
    dropped connection. Still an ``httpx.TransportError``, which the client raised before."""

    code = "connection_failed"

    def __init__(self, url: str, cause: Exception) -> None:
        reason = str(cause) or type(cause).__name__
        super().__init__(f"cannot reach the server at {url}: {reason}")
        self.url = url


class StreamLost(RunyardError):
    """The stream dropped and reconnecting failed for longer than the policy allows."""

    code = "stream_lost"


# -- requests and answers, shared by both clients --------------------------------


@dataclass(frozen=True, slots=True)
class _Request:
    method: str
    path: str
    params: dict[str, Any] | None = None
    body: Any = None
    headers: dict[str, str] | None = None

    def options(self) -> dict[str, Any]:
        params = {k: v for k, v in (self.params or {}).items() if v is not None}
        return {"params": params or None, "json": self.body, "headers": self.headers}


def _path(*parts: str) -> str:
    return "/v1/" + "/".join(quote(part, safe="") for part in parts)


def _create_request(
    pipeline: str,
    input: Any,
    session_id: str | None,
    metadata: dict[str, Any] | None,
    timeout_s: float | None,
    multitask: str | None,
    idempotency_key: str | None,
    after_s: float | None = None,
    webhook: str | None = None,
) -> _Request:
    body: dict[str, Any] = {"pipeline": pipeline, "input": input}
    extra = {
        "session_id": session_id,
        "metadata": metadata,
        "timeout_s": timeout_s,
        "multitask": multitask,
        "after_s": after_s,
        "webhook": webhook,
    }
    body.update({key: value for key, value in extra.items() if value is not None})
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
    return _Request("POST", _path("runs"), body=body, headers=headers)


def _list_runs_request(session_id: str | None, status: str | None, limit: int | None, before: str | None) -> _Request:
    params = {"session_id": session_id, "status": status, "limit": limit, "before": before}
    return _Request("GET", _path("runs"), params=params)


def _session_request(metadata: dict[str, Any] | None, session_id: str | None, if_exists: str | None) -> _Request:
    extra = {"metadata": metadata, "session_id": session_id, "if_exists": if_exists}
    return _Request("POST", _path("sessions"), body={key: value for key, value in extra.items() if value is not None})


def _list_sessions_request(limit: int | None, before: str | None, metadata: dict[str, str] | None) -> _Request:
    filters = {f"metadata.{key}": value for key, value in (metadata or {}).items()}
    return _Request("GET", _path("sessions"), params={"limit": limit, "before": before, **filters})


def _input_request(run_id: str, value: Any, ask_id: str | None) -> _Request:
    body: dict[str, Any] = {"value": value}
    if ask_id is not None:
        body["ask_id"] = ask_id
    return _Request("POST", _path("runs", run_id, "input"), body=body)


def _put_item_request(namespace: Sequence[str], key: str, value: dict[str, Any], ttl_s: float | None) -> _Request:
    body: dict[str, Any] = {"namespace": list(namespace), "key": key, "value": value}
    if ttl_s is not None:
        body["ttl_s"] = ttl_s
    return _Request("PUT", _path("store", "items"), body=body)


def _item_request(method: str, namespace: Sequence[str], key: str) -> _Request:
    """GET (by a dotted namespace in the query) or DELETE (by the body) of one item."""
    if method == "GET":
        return _Request("GET", _path("store", "items"), params={"namespace": ".".join(namespace), "key": key})
    return _Request(method, _path("store", "items"), body={"namespace": list(namespace), "key": key})


def _search_request(
    prefix: Sequence[str], filter: dict[str, Any] | None, query: str | None, limit: int, offset: int
) -> _Request:
    body: dict[str, Any] = {"namespace_prefix": list(prefix), "limit": limit, "offset": offset}
    body.update({k: v for k, v in (("filter", filter), ("query", query)) if v is not None})
    return _Request("POST", _path("store", "items", "search"), body=body)


def _namespaces_request(prefix: Sequence[str], max_depth: int | None) -> _Request:
    body: dict[str, Any] = {"prefix": list(prefix)}
    if max_depth is not None:
        body["max_depth"] = max_depth
    return _Request("POST", _path("store", "namespaces"), body=body)


# issue 13: crons
UNCHANGED: Any = object()  # an update that leaves a cron's input as it is (None is an input)


def _cron_request(pipeline: str, input: Any, schedule: str, options: dict[str, Any]) -> _Request:
    body = {"pipeline": pipeline, "input": input, "schedule": schedule}
    body.update({key: value for key, value in options.items() if value is not None})
    return _Request("POST", _path("crons"), body=body)


def _cron_patch(cron_id: str, schedule: str | None, input: Any, enabled: bool | None) -> _Request:
    body: dict[str, Any] = {
        key: value for key, value in (("schedule", schedule), ("enabled", enabled)) if value is not None
    }
    if input is not UNCHANGED:
        body["input"] = input
    return _Request("PATCH", _path("crons", cron_id), body=body)


def api_error(response: httpx.Response) -> APIError:
    """The ``APIError`` for an error answer, from its envelope when it has one."""
    code, message = f"http_{response.status_code}", response.reason_phrase or "error"
    details: dict[str, Any] = {}
    try:
        error = response.json()["error"]
        code, message = str(error["code"]), str(error["message"])
        details = {key: value for key, value in error.items() if key not in ("code", "message")}
    except (ValueError, KeyError, TypeError, AttributeError):
        message = response.text[:200] or message
    retry_after = response.headers.get("Retry-After")
    seconds = float(retry_after) if retry_after and retry_after.isdigit() else None
    return APIError(response.status_code, code, message, seconds, details)


def _answer(response: httpx.Response) -> Any:
    if response.is_error:
        raise api_error(response)
    if response.status_code == 204 or not response.content:
        return None
    return response.json()


def _object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise APIError(200, "invalid_response", f"expected a JSON object, got {type(value).__name__}")
    return value
