"""MCP (Model Context Protocol) at ``/mcp``, over the Streamable HTTP transport.

Every pipeline is a tool (its description, its input schema); a tool call runs
the pipeline as the caller, relays its ``progress`` and ``phase`` events as
``notifications/progress`` when the client gave a progress token, and answers
with the run's output (``structuredContent`` and JSON text) or, when the run did
not succeed, an ``isError`` result carrying the run's error. Cancelling the MCP
request cancels the run.

Served by the official ``mcp`` SDK (``pip install "runyard[mcp]"``). Its session
manager owns a task group that must live as long as the server; it is started
by the first ``/mcp`` request (``_Sessions``) and stopped by runyard's lifespan.
Lazily, because the SDK and its protocol models cost a server that never
speaks MCP 18 MiB of memory (measured: 112 -> 94 MiB idle). Sessions are
stateful: a ``notifications/cancelled`` reaches the call it names only in the
process that holds the session (behind a load balancer, route ``/mcp`` by the
``Mcp-Session-Id`` header). Without the extra, ``/mcp`` answers 501.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import orjson
from fastapi import FastAPI
from starlette.requests import Request
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from runyard.errors import RunFinished, RunyardError
from runyard.http.auth import Authenticator
from runyard.http.errors import error_response
from runyard.models import Run, RunStatus
from runyard.observability.tracing import incoming
from runyard.runtime import Runtime

if TYPE_CHECKING:
    from mcp.server.context import ServerRequestContext
    from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
    from mcp_types import CallToolRequestParams, CallToolResult, ListToolsResult, PaginatedRequestParams

PATH = "/mcp"
RELAYED = (b"progress", b"phase")  # the events a progress token hears about


class Served(Protocol):
    """What MCP needs of the served app (``runyard.http.Served`` has it)."""

    @property
    def title(self) -> str: ...

    @property
    def runtime(self) -> Runtime: ...


class MCPUnavailable(RunyardError):
    code = "mcp_unavailable"
    status = 501


def install(http: FastAPI) -> None:
    """Route ``/mcp`` (every method) to the MCP endpoint; ``lifespan`` serves it."""
    http.state.mcp = None
    http.router.routes.append(Route(PATH, endpoint=_Endpoint(http), include_in_schema=False))


@contextlib.asynccontextmanager
async def lifespan(http: FastAPI, app: Served) -> AsyncIterator[None]:
    """Serve ``/mcp`` while ``app`` serves: sessions start with the first request."""
    if not hasattr(http.state, "mcp"):  # not installed: a worker-only process
        yield
        return
    sessions = http.state.mcp = _Sessions(http, app)
    try:
        yield
    finally:
        await sessions.stop()


class _Sessions:
    """The SDK's session manager, run by a task of its own from the first request
    to the server's stop (a manager may run only once, and only in one task)."""

    def __init__(self, http: FastAPI, app: Served) -> None:
        self._http = http
        self._app = app
        self.serving = True
        self._ready: asyncio.Future[StreamableHTTPSessionManager | None] = asyncio.get_running_loop().create_future()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def manager(self) -> StreamableHTTPSessionManager | None:
        """The running manager, started now if need be; None without the extra."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="runyard-mcp-sessions")
        return await asyncio.shield(self._ready)

    async def _run(self) -> None:
        try:
            from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
        except ImportError:  # no extra: /mcp says how to get it
            self._ready.set_result(None)
            return
        try:
            manager = StreamableHTTPSessionManager(_server(self._http, self._app, lambda: self.serving))
            async with manager.run():
                self._ready.set_result(manager)
                await self._stopping.wait()
        except BaseException as exc:
            if not self._ready.done():
                self._ready.set_exception(exc)
            raise

    async def stop(self) -> None:
        # before the manager cancels the calls under way: a stopping server
        # leaves their runs alone (another process serves them), only a
        # client's cancel cancels a run
        self.serving = False
        self._stopping.set()
        if self._task is not None:
            await self._task


class _Endpoint:
    """The ASGI endpoint: authenticates like every route, then hands over to the SDK."""

    def __init__(self, http: FastAPI) -> None:
        self._http = http

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sessions: _Sessions | None = self._http.state.mcp
        try:
            auth: Authenticator = self._http.state.auth
            auth.check(Request(scope))  # refused here, before any MCP session (or the SDK) exists
            manager = await sessions.manager() if sessions is not None and sessions.serving else None
            if manager is None:
                raise MCPUnavailable('MCP needs the mcp extra (pip install "runyard[mcp]") and a started server')
        except RunyardError as exc:
            response = error_response(exc.status, exc.code, exc.message, headers=exc.headers or None)
            await response(scope, receive, send)
            return
        await manager.handle_request(scope, receive, send)


def _server(http: FastAPI, app: Served, serving: Callable[[], bool]) -> Any:
    import mcp_types as types
    from mcp.server.lowlevel import Server

    def owner(ctx: ServerRequestContext[Any, Any]) -> str:
        """The caller of this very request (each POST carries its credentials)."""
        if not isinstance(ctx.request, Request):
            raise MCPUnavailable("MCP is served over HTTP only")
        authenticator: Authenticator = http.state.auth
        return authenticator.principal(ctx.request).owner

    async def list_tools(ctx: ServerRequestContext[Any, Any], params: PaginatedRequestParams | None) -> ListToolsResult:
        owner(ctx)
        tools = [
            types.Tool(name=p.name, description=p.description or None, input_schema=_object_schema(p.input_schema()))
            for p in app.runtime.pipelines.values()
        ]
        return types.ListToolsResult(tools=tools)

    async def call_tool(ctx: ServerRequestContext[Any, Any], params: CallToolRequestParams) -> CallToolResult:
        try:
            caller = owner(ctx)
            trace = incoming(ctx.request.headers) if isinstance(ctx.request, Request) else None
            run = await app.runtime.create_run(caller, params.name, params.arguments or {}, trace=trace)
        except RunyardError as exc:
            return _error_result({"code": exc.code, "message": exc.message})
        token = ctx.meta.get("progress_token") if ctx.meta else None
        finished = await _follow(app, run, ctx, token, serving=serving)
        if finished.status is RunStatus.SUCCEEDED:
            return _output_result(finished.output)
        if not finished.status.finished:  # the server is stopping: the run goes on elsewhere
            message = f"this server stopped before the run ended; follow it at /v1/runs/{run.run_id}"
            return _error_result(
                {"run_id": run.run_id, "status": finished.status.value, "code": "unfinished", "message": message}
            )
        error = finished.error.to_dict() if finished.error else {"code": finished.status.value, "message": ""}
        return _error_result({"run_id": run.run_id, "status": finished.status.value, **error})

    return Server("runyard", version=app.title, on_list_tools=list_tools, on_call_tool=call_tool)


async def _follow(
    app: Served, run: Run, ctx: ServerRequestContext[Any, Any], token: Any, serving: Callable[[], bool]
) -> Run:
    """Relay the run's progress until it ends; cancelled by the client while
    ``serving``, cancel the run (a stopping server cancels its calls too)."""
    runtime = app.runtime
    relay = _Progress(ctx, token)
    try:
        async with contextlib.aclosing(runtime.follow(run, 0)) as batches:
            async for batch in batches:
                for _, _, frame in batch:
                    await relay.frame(frame)
    except BaseException:
        if not serving():
            raise
        with anyio.CancelScope(shield=True), contextlib.suppress(RunFinished):
            await runtime.cancel_run(run.owner, run.run_id)
        raise
    return await runtime.get_run(run.owner, run.run_id)


class _Progress:
    """``notifications/progress`` for a run's ``progress`` and ``phase`` events.

    A ``progress`` event gives its own ``current``/``total``/``message``; a
    ``phase`` event repeats the last numbers with ``"<name> <status>"`` as message
    (MCP has no other place for it)."""

    def __init__(self, ctx: ServerRequestContext[Any, Any], token: Any) -> None:
        self._ctx = ctx
        self._token = token
        self._current = 0.0
        self._total: float | None = None

    async def frame(self, frame: bytes) -> None:
        if self._token is None or not frame.startswith(RELAYED, frame.index(b"event: ") + 7):
            return
        event = orjson.loads(frame[frame.index(b"\ndata: ") + 7 :])
        kind, data = event["type"], event.get("data") or {}
        if kind == "progress":
            self._current = float(data.get("current") or 0)
            self._total = None if data.get("total") is None else float(data["total"])
            message = data.get("message")
        elif kind == "phase":
            message = f"{data.get('name')} {data.get('status')}"
        else:
            return
        request_id = self._ctx.request_id  # only whether there is one counts: it scopes the notification
        await self._ctx.session.send_progress_notification(
            self._token, self._current, self._total, message, None if request_id is None else str(request_id)
        )


def _object_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """MCP wants an object schema; a pipeline without an input model takes any object."""
    return schema if schema.get("type") == "object" else {"type": "object", **schema}


def _output_result(output: Any) -> CallToolResult:
    import mcp_types as types

    # structuredContent must be an object: any other output is wrapped
    structured = output if isinstance(output, dict) else {"result": output}
    text = orjson.dumps(output).decode()
    return types.CallToolResult(content=[types.TextContent(text=text)], structured_content=structured)


def _error_result(error: dict[str, Any]) -> CallToolResult:
    import mcp_types as types

    text = orjson.dumps({"error": error}).decode()
    return types.CallToolResult(content=[types.TextContent(text=text)], is_error=True)
