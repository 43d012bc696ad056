"""MCP at /mcp, spoken to by the official ``mcp`` Python client over Streamable HTTP.

Every pipeline is a tool with its input schema; a call runs the pipeline as the
caller (``X-Client-Id`` here, as for /v1), relays its progress and phases as
progress notifications, answers with the output as structured content, a
failing run as ``isError``; cancelling the call cancels the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import jwt
import pytest
from pydantic import BaseModel

from runyard import RunContext, Runyard, Settings
from tests.support import serve_in_thread

mcp_client = pytest.importorskip("mcp.client.session")
from mcp.client.streamable_http import streamable_http_client  # noqa: E402
from mcp.shared._httpx_utils import create_mcp_http_client  # noqa: E402

pytestmark = pytest.mark.server


class Count(BaseModel):
    n: int


def _app(**settings: Any) -> Runyard:
    app = Runyard(Settings(store="memory://", drain_s=0.2, **settings))

    @app.pipeline("count", input_model=Count)
    async def count(ctx: RunContext, input: Count) -> dict[str, Any]:
        """Counts to n, reporting progress."""
        await ctx.phase("counting", "started")
        for i in range(1, input.n + 1):
            await ctx.progress(i, input.n, f"at {i}")
        await ctx.phase("counting", "done")
        return {"counted": input.n, "owner": ctx.owner}

    @app.pipeline("fail")
    async def fail(ctx: RunContext, input: Any) -> None:
        """Always fails."""
        raise ValueError("the flux capacitor is out of flux")

    @app.pipeline("hold")
    async def hold(ctx: RunContext, input: Any) -> None:
        """Says it started, then waits far longer than any test."""
        await ctx.phase("holding")
        await asyncio.sleep(60)

    return app


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with serve_in_thread(_app()) as url:
        yield url


@contextlib.asynccontextmanager
async def session(url: str, owner: str) -> AsyncIterator[Any]:
    """An initialized MCP client session as ``owner`` (a client id, or a bearer token's subject)."""
    headers = {"Authorization": f"Bearer {owner}"} if owner.count(".") == 2 else {"X-Client-Id": owner}
    http = create_mcp_http_client(headers=headers)
    async with (
        http,
        streamable_http_client(f"{url}/mcp", http_client=http) as (read, write),
        mcp_client.ClientSession(read, write) as client,
    ):
        await client.initialize()
        yield client


async def runs_of(url: str, owner: str, headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=url, headers=headers or {"X-Client-Id": owner}) as http:
        runs: list[dict[str, Any]] = (await http.get("/v1/runs")).json()["runs"]
        return runs


async def test_every_pipeline_is_a_tool_with_its_input_schema(server: str) -> None:
    async with session(server, "mcp-alice") as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert {"count", "fail", "hold"} <= set(tools)
    assert tools["count"].description == "Counts to n, reporting progress."
    assert tools["count"].input_schema["properties"] == {"n": {"title": "N", "type": "integer"}}
    assert tools["count"].input_schema["required"] == ["n"]
    assert tools["fail"].input_schema == {"type": "object"}  # no input model: any object


async def test_a_call_answers_the_output_as_structured_content_and_text(server: str) -> None:
    async with session(server, "mcp-alice") as client:
        result = await client.call_tool("count", {"n": 2})
    assert not result.is_error
    assert result.structured_content == {"counted": 2, "owner": "mcp-alice"}
    assert json.loads(result.content[0].text) == {"counted": 2, "owner": "mcp-alice"}


async def test_progress_and_phases_arrive_as_progress_notifications(server: str) -> None:
    heard: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        heard.append((progress, total, message))

    async with session(server, "mcp-alice") as client:
        result = await client.call_tool("count", {"n": 3}, progress_callback=on_progress)
    assert not result.is_error
    assert heard == [
        (0, None, "counting started"),
        (1, 3, "at 1"),
        (2, 3, "at 2"),
        (3, 3, "at 3"),
        (3, 3, "counting done"),
    ]


async def test_a_failing_run_is_an_error_result_with_the_runs_error(server: str) -> None:
    async with session(server, "mcp-alice") as client:
        result = await client.call_tool("fail", {})
    assert result.is_error
    error = json.loads(result.content[0].text)["error"]
    assert error["status"] == "failed"
    assert "out of flux" in error["message"]


async def test_input_that_does_not_fit_is_an_error_result_and_no_run(server: str) -> None:
    async with session(server, "mcp-bad-input") as client:
        result = await client.call_tool("count", {"n": "many"})
    assert result.is_error
    assert json.loads(result.content[0].text)["error"]["code"] == "invalid_request"
    assert await runs_of(server, "mcp-bad-input") == []


async def test_cancelling_the_call_cancels_the_run(server: str) -> None:
    owner = "mcp-canceller"
    async with session(server, owner) as client:
        started = asyncio.Event()

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            started.set()

        call = asyncio.create_task(client.call_tool("hold", {}, progress_callback=on_progress))
        await asyncio.wait_for(started.wait(), 10)  # the run is running
        call.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await call
        async with httpx.AsyncClient(base_url=server, headers={"X-Client-Id": owner}) as http:
            [run] = (await http.get("/v1/runs")).json()["runs"]
            async with http.stream("GET", f"/v1/runs/{run['run_id']}/stream") as events:
                async for line in events.aiter_lines():  # to the end of the run
                    if line == "event: end":
                        break
            assert (await http.get(f"/v1/runs/{run['run_id']}")).json()["status"] == "cancelled"


async def test_owners_are_isolated(server: str) -> None:
    async with session(server, "mcp-bob") as client:
        result = await client.call_tool("count", {"n": 1})
    assert result.structured_content["owner"] == "mcp-bob"
    assert [run["pipeline"] for run in await runs_of(server, "mcp-bob")] == ["count"]
    assert await runs_of(server, "mcp-carol") == []


SECRET = "s3cret-for-mcp-tests-0123456789abcdef"


def token(sub: str) -> str:
    return jwt.encode({"sub": sub, "exp": int(time.time()) + 600}, SECRET, algorithm="HS256")


async def test_under_jwt_the_tokens_subject_is_the_caller_and_no_token_is_refused() -> None:
    with serve_in_thread(_app(auth="jwt", jwt_secret=SECRET)) as url:
        async with session(url, token("dora")) as client:
            result = await client.call_tool("count", {"n": 1})
        assert result.structured_content == {"counted": 1, "owner": "dora"}
        assert await runs_of(url, "", {"Authorization": f"Bearer {token('eve')}"}) == []
        async with httpx.AsyncClient() as http:
            refused = await http.post(f"{url}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "unauthorized"


async def test_without_the_mcp_extra_the_api_serves_and_mcp_says_what_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "mcp.server.streamable_http_manager", None)  # as if not installed
    with serve_in_thread(_app()) as url:
        async with httpx.AsyncClient(base_url=url) as http:
            missing = await http.post("/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
            pipelines = await http.get("/v1/pipelines")
    assert missing.status_code == 501
    assert missing.json()["error"]["code"] == "mcp_unavailable"
    assert "runyard[mcp]" in missing.json()["error"]["message"]
    assert pipelines.status_code == 200
