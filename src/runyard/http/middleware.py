"""Pure ASGI middleware (no per-request task or body buffering on the hot path)."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runyard.observability import metrics


class RequestMetrics:
    """Counts answered requests by route template and status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            metrics.HTTP_REQUESTS_TOTAL.labels(path, str(status)).inc()


class JSONBodies:
    """Every request body of this API is JSON (the contract says so), whatever
    Content-Type the client sent: FastAPI then parses each one as JSON, and a
    body that is not JSON gets 400 ``invalid_json`` instead of a confusing 422."""

    JSON = (b"content-type", b"application/json")

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in ("POST", "PUT", "PATCH"):
            headers = [h for h in scope["headers"] if h[0] != b"content-type"]
            headers.append(self.JSON)
            scope = {**scope, "headers": headers}
        await self.app(scope, receive, send)
