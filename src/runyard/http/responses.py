"""Small helpers shared by the routes."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi import Request
from fastapi.routing import APIRoute
from starlette.responses import Response

from runyard.errors import InvalidCursor
from runyard.runtime import Runtime

log = logging.getLogger("runyard.http")


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(_encode(data), status_code=status, headers=headers, media_type="application/json")


def _encode(data: Any) -> bytes:
    try:
        return orjson.dumps(data)
    except orjson.JSONEncodeError:
        # Values are checked when submitted (runyard.servable), so only a row stored
        # before that rule (input 254 deep, say) gets here: it is still served, by the
        # slower encoder whose limit is Python's recursion limit (about 1,000 levels),
        # rather than failing every page that holds it for the whole retention.
        log.warning("an answer orjson cannot encode was encoded by the json module", exc_info=True)
        return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


def runtime_of(request: Request) -> Runtime:
    """The runtime of the app being served."""
    runtime: Runtime = request.app.state.served.runtime
    return runtime


def parse_cursor(value: str | None) -> int:
    """A stream or page cursor: a non-negative integer ``seq``."""
    if value is None or value == "":
        return 0
    if not (value.isascii() and value.isdigit()) or len(value) > 18:
        raise InvalidCursor(f"cursor {value[:40]!r} is not a non-negative integer seq")
    return int(value)


class StrictJSONRequest(Request):
    """Bodies parsed by orjson: strict JSON (no NaN, UTF-8 only, integers that
    fit 64 bits), so whatever is accepted can also be stored and sent back.
    ``orjson.JSONDecodeError`` is a ``json.JSONDecodeError``: FastAPI reports it
    as invalid JSON."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = orjson.loads(await self.body())
        return self._json


class StrictJSONRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict_handler(request: Request) -> Response:
            return await handler(StrictJSONRequest(request.scope, request.receive))

        return strict_handler
