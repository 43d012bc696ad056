"""Small helpers shared by the routes."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request
from starlette.responses import Response

from runyard.errors import InvalidCursor
from runyard.runtime import Runtime


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status_code=status, headers=headers, media_type="application/json")


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runyard.runtime
    return runtime


def parse_cursor(value: str | None) -> int:
    """A stream or page cursor: a non-negative integer ``seq``."""
    if value is None or value == "":
        return 0
    if not value.isdigit() or len(value) > 18:
        raise InvalidCursor(f"cursor {value[:40]!r} is not a non-negative integer seq")
    return int(value)
