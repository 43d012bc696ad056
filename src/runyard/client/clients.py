"""What ``AsyncClient`` and ``Client`` share: options, headers, and how a stream
request is built; each client is a module of its own (``asynchronous``,
``synchronous``): the same requests, asyncio or blocking. Called from a run (or
under any current span), every request carries its trace context
(``observability.propagation``): a run it creates joins the caller's trace."""

from __future__ import annotations

from typing import Any

import httpx

from runyard.client.api import DEFAULT_URL, ConnectionFailed, server_url
from runyard.client.resume import Reconnect, _Cursor

# Below the keep-alive of the servers it talks to (``RUNYARD_KEEP_ALIVE_S`` is 75 s
# by default, but may be set lower, and a proxy in front may keep 5 s, uvicorn's
# default and httpx's own expiry), so this client, not the server, ends an idle
# connection, and never sends a request on one the server is closing (the
# connection counts are httpx's own defaults).
IDLE_EXPIRY_S = 4.0


class _Base:
    """What both clients share: options, headers, and how a stream request is built."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        client_id: str | None = None,
        token: str | None = None,
        timeout: float = 10.0,
        stream_read_timeout: float = 60.0,
        reconnect: Reconnect | None = None,
    ) -> None:
        headers = {"User-Agent": "runyard-client"}
        if client_id:
            headers["X-Client-Id"] = client_id
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.url = server_url(base_url)  # "localhost:8000" means http://localhost:8000
        self._http_options: dict[str, Any] = {
            "base_url": self.url,
            "headers": headers,
            "timeout": timeout,
            "limits": httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=IDLE_EXPIRY_S),
        }
        self._timeout = timeout
        # Longer than the server's heartbeat (15 s by default), so idle streams live on.
        self._stream_read_timeout = stream_read_timeout
        self._reconnect = reconnect or Reconnect()
        self._connect()

    def _connect(self) -> None:
        raise NotImplementedError

    def _stream_options(self, cursor: _Cursor, run_id: str) -> dict[str, Any]:
        request = cursor.request(run_id)
        timeout = cursor.timeout(self._timeout, self._stream_read_timeout)
        return {"method": request.method, "url": request.path, **request.options(), "timeout": timeout}

    def _unreachable(self, exc: httpx.TransportError) -> ConnectionFailed:
        """What a request that got no answer raises: runyard's error, naming the URL tried."""
        return exc if isinstance(exc, ConnectionFailed) else ConnectionFailed(self.url, exc)
