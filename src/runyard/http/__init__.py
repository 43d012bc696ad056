"""The HTTP API: a FastAPI app factory around a ``Runyard``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from importlib import resources
from typing import Any, Protocol

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.responses import FileResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

from runyard.http import mcp
from runyard.http.auth import Authenticator
from runyard.http.errors import install_error_handlers
from runyard.http.express import ExpressLane
from runyard.http.middleware import BodyLimit, JSONBodies, RequestIds, RequestMetrics
from runyard.http.routes import (
    ai_sdk,
    console,
    crons,
    langgraph,
    openai_compat,
    runs,
    session_streams,
    sessions,
    store,
    system,
)
from runyard.http.streaming import STREAM_CAPS, StreamSlots
from runyard.runtime import Runtime
from runyard.settings import Settings


class Served(Protocol):
    """What the HTTP API needs of an app (a ``Runyard``)."""

    @property
    def title(self) -> str: ...

    @property
    def settings(self) -> Settings: ...

    @property
    def runtime(self) -> Runtime:
        """The runtime while the app runs (whoever started it); ``RuntimeError`` otherwise."""
        ...

    def running(self) -> AbstractAsyncContextManager[Runtime]:
        """The app's runtime, started on entry and stopped on exit."""
        ...


def create_http_app(app: Served) -> FastAPI:
    """The ASGI application serving ``app``; its lifespan starts and stops the
    runtime (without the lifespan, mounted in an app that runs it, it serves the
    runtime running then)."""

    @asynccontextmanager
    async def lifespan(http: FastAPI) -> AsyncIterator[None]:
        async with app.running(), mcp.lifespan(http, app):  # issue 14: MCP's session manager
            yield

    settings = app.settings
    http = LayeredAPI(
        _layers(settings),
        title=app.title,
        version=_version(),
        lifespan=lifespan,
        redirect_slashes=False,
        # runyard exports its own metrics; FastAPI's hook would look up
        # OpenTelemetry providers on every request (~3 % of a run creation)
        telemetry={"tracing": False, "metrics": False, "logs": False},
        docs_url="/docs",
        openapi_url="/openapi.json",
        redoc_url=None,
    )
    http.state.served = app
    http.state.auth = Authenticator(settings)  # a bad JWT configuration fails here, at start-up
    per_owner = settings.max_streams_per_owner
    # across the deployment while the limits are shared through Redis (opened with the runtime)
    http.state.stream_slots = StreamSlots(per_owner, lambda: app.runtime.limits.caps(STREAM_CAPS, per_owner))
    install_error_handlers(http)
    if settings.serves_api:
        http.include_router(runs.router)
        http.include_router(sessions.router)
        http.include_router(store.router)
        http.include_router(crons.router)  # issue 13: scheduled runs
        http.include_router(session_streams.router)
        mcp.install(http)  # issue 14: MCP at /mcp
        http.include_router(openai_compat.router)  # issue 14: OpenAI-compatible chat completions
        http.include_router(ai_sdk.router)  # issue 14: Vercel AI SDK UI message streams
        http.include_router(langgraph.router)  # issue 14: the LangGraph API at /langgraph
        http.include_router(console.router)  # issue 16: the operations console's stats and settings
    http.include_router(system.router)  # a worker answers probes and scrapes too
    if settings.serves_api:
        _serve_page(http)
    return http


class LayeredAPI(FastAPI):
    """FastAPI beneath runyard's own layers: ``layers`` wraps the stack FastAPI
    builds (its error handler, its exception middleware, its router).

    Why: added with ``add_middleware``, runyard's layers ran inside FastAPI's
    outer ones (Starlette's error handler, FastAPI's telemetry and body-limit
    layers), which every request passed first, the express lane's too, and a
    stream's every chunk went out through the error handler's ``send``. Beneath
    them, a lane's request skips FastAPI altogether and a chunk goes to the
    server's own ``send`` (``bench/README.md``, "A seventeenth round": CPU per
    steady event lower or equal in 6 pairs of 6, by 8-11 % in the medians).
    Every request still passes runyard's layers; one the lane does not take
    meets FastAPI's error handler as before, and its 500 now carries its
    request id and is counted like any answer."""

    def __init__(self, layers: Callable[[ASGIApp], ASGIApp], **options: Any) -> None:
        super().__init__(**options)
        self._layers = layers

    def build_middleware_stack(self) -> ASGIApp:
        return self._layers(super().build_middleware_stack())


def _layers(settings: Settings) -> Callable[[ASGIApp], ASGIApp]:
    """Runyard's layers around ``inner``, outermost last."""

    def wrap(inner: ASGIApp) -> ASGIApp:
        app = ExpressLane(inner) if settings.serves_api else inner  # innermost: CORS and the others still apply
        if settings.cors_origin_list:
            app = CORSMiddleware(
                app,
                allow_origins=settings.cors_origin_list,
                allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
                allow_headers=[
                    "Content-Type",
                    "Authorization",
                    "X-Client-Id",
                    "Last-Event-ID",
                    "Idempotency-Key",
                    "X-Request-ID",
                    "Mcp-Session-Id",  # MCP's Streamable HTTP transport (issue 14)
                    "MCP-Protocol-Version",
                    "Mcp-Method",
                    "Mcp-Name",
                ],
                expose_headers=["Location", "Content-Location", "Retry-After", "X-Request-ID", "Mcp-Session-Id"],
            )
        app = RequestMetrics(JSONBodies(app))
        app = BodyLimit(app, max_bytes=settings.max_body_bytes)
        return RequestIds(app)  # outermost: its id is on every line the others write

    return wrap


def _serve_page(http: FastAPI) -> None:
    static = resources.files("runyard.demo") / "static"

    @http.get("/", include_in_schema=False)
    async def page() -> Response:
        return FileResponse(str(static / "index.html"), headers={"Cache-Control": "no-cache"})

    http.mount("/static", _RevalidatedFiles(directory=str(static)), name="static")


class _RevalidatedFiles(StaticFiles):
    """The page's assets, revalidated on every load (ETag): after an upgrade a
    browser never runs last version's scripts against this version's API."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers["Cache-Control"] = "no-cache"
        return response


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("runyard")
    except PackageNotFoundError:
        return "0.0.0"


__all__ = ["create_http_app"]
