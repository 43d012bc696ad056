"""Who is asking: the owner of the runs and sessions a request may see."""

from __future__ import annotations

import re

from fastapi import Request

from runyard.errors import RunyardError

CLIENT_ID = re.compile(r"[A-Za-z0-9_.-]{1,128}")
ANONYMOUS = "anonymous"


class InvalidClientId(RunyardError):
    code = "invalid_client_id"
    status = 400


def owner_of(request: Request) -> str:
    """The ``X-Client-Id`` header, else the ``client_id`` query parameter (a
    browser's ``EventSource`` cannot send headers), else ``anonymous``."""
    client_id = request.headers.get("x-client-id") or request.query_params.get("client_id")
    if client_id is None:
        return ANONYMOUS
    if not CLIENT_ID.fullmatch(client_id):
        raise InvalidClientId("X-Client-Id must be 1-128 characters of [A-Za-z0-9_.-]")
    return client_id
