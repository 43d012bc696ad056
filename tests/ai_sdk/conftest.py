"""A real server for the AI SDK endpoints, with pipelines that answer, fail,
stream nothing, wait for a person, and talk slowly enough to be interrupted."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pydantic import BaseModel, Field

from runyard import RunContext, Runyard, Settings
from tests.support import REPO, serve_in_thread

SECRET = "s3cret-for-ai-sdk-tests-0123456789abcdef"
SLOW_TOKEN_S = 0.03  # a "slow" answer of 50 words takes ~1.5 s: long enough to leave it half-way


class Said(BaseModel):
    message: str


class Strict(BaseModel):
    message: str = Field(min_length=1)


def build(**settings: Any) -> Runyard:
    app = Runyard(Settings(store="memory://", drain_s=0.2, **settings))

    @app.pipeline("parrot", input_model=Said)
    async def parrot(ctx: RunContext, input: Said) -> dict[str, Any]:
        """Says the message back a word at a time, with a custom event first."""
        await ctx.emit("heard", {"words": len(input.message.split())})
        for word in input.message.split(" "):
            await ctx.token(word + " ")
        return {"reply": input.message}

    @app.pipeline("slow", input_model=Said)
    async def slow(ctx: RunContext, input: Said) -> str:
        """Says the message back a word at a time, slowly."""
        for word in input.message.split(" "):
            await ctx.token(word + " ")
            await asyncio.sleep(SLOW_TOKEN_S)
        return input.message

    @app.pipeline("quiet", input_model=Said)
    async def quiet(ctx: RunContext, input: Said) -> dict[str, str]:
        """Streams nothing; its output is the answer."""
        return {"quietly": input.message}

    @app.pipeline("boom", input_model=Said)
    async def boom(ctx: RunContext, input: Said) -> None:
        await ctx.token("almost ")
        raise RuntimeError("the model is on fire")

    @app.pipeline("strict", input_model=Strict)
    async def strict(ctx: RunContext, input: Strict) -> str:
        return input.message

    @app.pipeline("asks", input_model=Said)
    async def asks(ctx: RunContext, input: Said) -> Any:
        """Waits for a person's answer (ctx.ask): it does not finish on its own."""
        await ctx.token("let me ask ")
        return await ctx.ask(input.message)

    return app


@pytest.fixture(scope="package")
def server() -> Iterator[str]:
    with serve_in_thread(build()) as url:
        yield url


@pytest.fixture
def owner() -> str:
    """A fresh owner (client id) per test."""
    return f"ai-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def chat_id() -> str:
    """A chat id as useChat makes them (16 letters and digits), fresh per test."""
    return uuid.uuid4().hex[:16]


NODE_DIR = REPO / "tests" / "node"
NodeClient = Callable[..., dict[str, Any]]


@pytest.fixture(scope="package")
def ai_sdk(server: str) -> NodeClient:
    """``ai_sdk(command, owner, pipeline, chat_id, *args)``: runs tests/node/ai_sdk.mjs
    (the real ``ai`` package) against ``server``; its JSON answer. Without Node or
    ``make node-deps`` the tests skip, except under ``CI=true``, where they fail."""
    node = shutil.which("node")
    missing = "node is not installed" if node is None else None
    if not (NODE_DIR / "node_modules" / "ai" / "package.json").exists():
        missing = "tests/node/node_modules has no `ai` (make node-deps)"
    if missing is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the AI SDK client tests are required in CI: {missing}", pytrace=False)
        pytest.skip(f"{missing}; with CI=true these tests fail instead")
    assert node is not None

    def run(command: str, owner: str, pipeline: str, chat_id: str, *args: str) -> dict[str, Any]:
        argv = [node, "ai_sdk.mjs", command, server, owner, pipeline, chat_id, *args]
        done = subprocess.run(argv, cwd=NODE_DIR, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"node failed:\n{done.stderr}"
        answer: dict[str, Any] = json.loads(done.stdout)
        return answer

    return run
