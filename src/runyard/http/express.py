"""The express lane: the two requests every followed run starts with,
``POST /v1/runs`` and ``GET /v1/runs/{run_id}/stream``, answered in their plain
shape without FastAPI's per-request routing and parameter resolution.

Why a lane of our own: in-process, FastAPI's router, its dependency solver and
its route wrapper took a quarter of the event loop's CPU for a run creation (its
run included: 545 -> 410 us) and half of it for opening a stream (373 -> 200 us;
``bench/README.md``, "A seventh round"). At 1,000 streams opening at once that
CPU is the first event's wait, and in a fleet it bounds creations per second.

The lane sits beneath runyard's own middleware and above FastAPI's
(``LayeredAPI``): its requests pass no FastAPI layer at all.

Only the plain shape takes the lane: no query string, a ``Content-Length`` body
that is a valid ``RunRequest``, no ``Idempotency-Key``.
Anything else goes on to FastAPI unchanged (the body read here is handed on),
so every parameter rule and every validation error has its one place there.
Once the parameters are known, the lane calls the route's own function, and a
runyard error it raises is answered by the same handler FastAPI would use.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import orjson
import pydantic
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runyard.errors import RunyardError
from runyard.http.errors import runyard_error_response, unexpected_error_response
from runyard.http.routes import runs
from runyard.http.schemas import RunRequest

# the lane's routes: matched as FastAPI would match them, and put in the scope as
# the route that answered (the request metrics are labelled by its path)
CREATE = Route("/v1/runs", runs.create_run, methods=["POST"], include_in_schema=False)
STREAM = Route("/v1/runs/{run_id}/stream", runs.stream_run, methods=["GET"], include_in_schema=False)

Answer = Callable[[Request], Awaitable[Response]]


class ExpressLane:
    """Takes the plain ``POST /v1/runs`` and ``GET /v1/runs/{run_id}/stream``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["query_string"]:
            await self.app(scope, receive, send)
        elif scope["method"] == "POST" and _matches(CREATE, scope):
            await self._create(scope, receive, send)
        elif scope["method"] == "GET" and _matches(STREAM, scope):
            await self._stream(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _create(self, scope: Scope, receive: Receive, send: Send) -> None:
        # a body of known length (BodyLimit checked it); a chunked one is read, and
        # limited while read, by FastAPI
        if _header(scope, b"content-length") is None or _header(scope, b"idempotency-key") is not None:
            await self.app(scope, receive, send)
            return
        body, messages = await _read_body(receive)
        try:
            request_body = RunRequest.model_validate(orjson.loads(body))
        except (orjson.JSONDecodeError, pydantic.ValidationError):
            await self.app(scope, _replaying(messages, receive), send)  # FastAPI words the error
            return
        await _answer(scope, receive, send, lambda request: runs.create_run(request, request_body, None))

    async def _stream(self, scope: Scope, receive: Receive, send: Send) -> None:
        run_id: str = scope["path_params"]["run_id"]
        last_event_id = _header(scope, b"last-event-id")
        await _answer(scope, receive, send, lambda request: runs.stream_run(request, run_id, None, None, last_event_id))


async def _answer(scope: Scope, receive: Receive, send: Send, answer: Answer) -> None:
    request = Request(scope, receive)
    try:
        response = await answer(request)
    except RunyardError as exc:
        response = await runyard_error_response(request, exc)
    except Exception as exc:  # the lane is above FastAPI's error handler: answered as it would
        response = await unexpected_error_response(request, exc)
    await response(scope, receive, send)


def _matches(route: Route, scope: Scope) -> bool:
    """Whether ``route`` takes the request; if so, its endpoint and path
    parameters are in the scope, as the router would put them."""
    match, child_scope = route.matches(scope)
    if match is not Match.FULL:
        return False
    scope.update(child_scope, route=route)
    return True


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")  # as Starlette's Headers decode them
    return None


async def _read_body(receive: Receive) -> tuple[bytes, list[Message]]:
    messages = [await receive()]
    while messages[-1].get("more_body", False):
        messages.append(await receive())
    return b"".join(message.get("body", b"") for message in messages), messages


def _replaying(messages: list[Message], receive: Receive) -> Receive:
    """``receive`` as if nothing had been read yet."""
    pending = list(messages)

    async def replay() -> Message:
        return pending.pop(0) if pending else await receive()

    return replay
