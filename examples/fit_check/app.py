"""fit_check: a job-fit assessment and a deep-research agent, served to many users at once.

Two pipelines, both calling an LLM and a web search API over HTTP:

- ``fit_check``: research the role (plan, search, extract requirements), match the
  candidate against each requirement, then stream a verdict. Emits ``phase``,
  ``thought``, ``source``, ``match``, ``progress`` and ``token`` events.
- ``deep_research``: rounds of LLM-planned searches with a live ``update`` event
  per new source, then a streamed report.

Every LLM and search call goes through ``ctx.call`` under a declared limit, so
the providers' caps hold across all users. Each run opens its own HTTP client
and reaches its own run through ``current_run()``: nothing about a user lives in
a module-level object. Both pipelines time out after ``FIT_CHECK_TIMEOUT_S``
(300 s); a client streaming with ``"on_disconnect": "cancel"`` stops the run
(and its LLM calls) by going away.

    runyard serve examples.fit_check.app:app
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field

from runyard import Breaker, RunContext, Runyard, Settings, current_run

LLM = "llm"
SEARCH = "search-api"
SEARCH_CONCURRENCY = 4  # what the search provider allows in flight
HTTP_TIMEOUT_S = 60.0
REPLY_TOKENS = 300  # what a reply may cost, reserved against the LLM's tokens-per-minute


@dataclass(frozen=True, slots=True)
class Config:
    """Where the external services are (the simulated ones by default) and the runs' timeout."""

    llm_url: str = "http://127.0.0.1:9101/v1"
    llm_model: str = "gpt-4o-mini"
    llm_api_key: str | None = None
    search_url: str = "http://127.0.0.1:9102"
    timeout_s: float = 300.0

    @classmethod
    def from_env(cls) -> Config:
        default = cls()
        env = os.environ.get
        return cls(
            llm_url=env("FIT_CHECK_LLM_URL", default.llm_url),
            llm_model=env("FIT_CHECK_LLM_MODEL", default.llm_model),
            llm_api_key=env("FIT_CHECK_LLM_API_KEY"),
            search_url=env("FIT_CHECK_SEARCH_URL", default.search_url),
            timeout_s=float(env("FIT_CHECK_TIMEOUT_S", str(default.timeout_s))),
        )


class FitCheckInput(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    candidate: str = Field(min_length=1, max_length=100, description="The candidate's name")
    skills: list[str] = Field(min_length=1, max_length=30, description="The candidate's skills")
    company: str = Field(min_length=1, max_length=100)
    role: str = Field(min_length=1, max_length=100)


class DeepResearchInput(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    topic: str = Field(min_length=1, max_length=200)
    rounds: int = Field(2, ge=1, le=4, description="Rounds of searching before the report")


class Tools:
    """One run's way out: its own HTTP client; every call under a shared limit."""

    def __init__(self, config: Config, http: httpx.AsyncClient) -> None:
        self._config = config
        self._http = http

    @classmethod
    @asynccontextmanager
    async def open(cls, config: Config) -> AsyncIterator[Tools]:
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_S) as http:
            yield cls(config, http)

    async def ask(self, task: str, keys: str, **fields: object) -> dict[str, Any]:
        """One LLM completion; the reply is a JSON object with ``keys``."""
        ctx = current_run()
        prompt = "\n".join(f"{name}: {value}" for name, value in fields.items())
        body = {
            "model": self._config.llm_model,
            "messages": [
                {"role": "system", "content": f"You assess job fit.\nTask: {task}\nReply with JSON with keys {keys}."},
                {"role": "user", "content": prompt},
            ],
            "response_format": {"type": "json_object"},
            "user": ctx.owner,  # the provider's per-end-user field
        }
        return await ctx.call(LLM, self._complete, body, tokens=len(prompt) // 4 + REPLY_TOKENS)

    async def search(self, query: str) -> list[dict[str, str]]:
        ctx = current_run()
        return await ctx.call(SEARCH, self._search, query)

    async def _complete(self, body: dict[str, Any]) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self._config.llm_api_key}"} if self._config.llm_api_key else {}
        response = await self._http.post(f"{self._config.llm_url}/chat/completions", json=body, headers=headers)
        response.raise_for_status()  # ctx.call retries 429 and 5xx, honouring Retry-After
        reply: dict[str, Any] = json.loads(response.json()["choices"][0]["message"]["content"])
        return reply

    async def _search(self, query: str) -> list[dict[str, str]]:
        response = await self._http.get(f"{self._config.search_url}/search", params={"q": query})
        response.raise_for_status()
        results: list[dict[str, str]] = response.json()["results"]
        return results


async def think(ctx: RunContext, phase: str, text: str) -> None:
    await ctx.emit("thought", {"phase": phase, "text": text})


async def stream_text(ctx: RunContext, text: str) -> None:
    for piece in re.findall(r"\S+\s*", text):
        await ctx.token(piece)


def verdict_for(score: int) -> str:
    return "strong fit" if score >= 75 else "possible fit" if score >= 50 else "weak fit"


async def assess(ctx: RunContext, tools: Tools, input: FitCheckInput) -> dict[str, Any]:
    await ctx.phase("research", "started")
    plan = await tools.ask("plan", "thought, queries", company=input.company, role=input.role)
    await think(ctx, "research", plan["thought"])
    batches = await asyncio.gather(*(tools.search(query) for query in plan["queries"][:3]))
    sources = list({hit["url"]: hit for batch in batches for hit in batch}.values())
    for source in sources:
        await ctx.emit("source", source)
    titles = "; ".join(source["title"] for source in sources)
    found = await tools.ask("requirements", "thought, requirements", role=input.role, sources=titles)
    await think(ctx, "research", found["thought"])
    requirements: list[str] = found["requirements"][:6]
    await ctx.phase("research", "done", sources=len(sources))

    await ctx.phase("match", "started")
    matches: list[dict[str, Any]] = []
    for done, requirement in enumerate(requirements, 1):
        skills = ", ".join(input.skills)
        judged = await tools.ask(
            "match", "thought, score", candidate=input.candidate, skills=skills, requirement=requirement
        )
        await think(ctx, "match", judged["thought"])
        match: dict[str, Any] = {"requirement": requirement, "score": max(0, min(100, int(judged["score"])))}
        matches.append(match)
        await ctx.emit("match", match)
        await ctx.progress(done, len(requirements), f"matched {requirement}")
    await ctx.phase("match", "done")

    await ctx.phase("verdict", "started")
    score = round(sum(m["score"] for m in matches) / len(matches)) if matches else 0
    verdict = verdict_for(score)
    written = await tools.ask(
        "verdict",
        "summary",
        candidate=input.candidate,
        role=input.role,
        verdict=verdict,
        score=score,
        strengths=", ".join(m["requirement"] for m in matches if m["score"] >= 50),
        gaps=", ".join(m["requirement"] for m in matches if m["score"] < 50),
    )
    await stream_text(ctx, written["summary"])
    await ctx.phase("verdict", "done", verdict=verdict)
    return {
        "candidate": input.candidate,
        "company": input.company,
        "role": input.role,
        "score": score,
        "verdict": verdict,
        "summary": written["summary"],
        "matches": matches,
        "sources": [source["url"] for source in sources],
    }


async def research_deeply(ctx: RunContext, tools: Tools, input: DeepResearchInput) -> dict[str, Any]:
    sources: dict[str, dict[str, str]] = {}
    for round_ in range(1, input.rounds + 1):
        await ctx.phase(f"round-{round_}", "started")
        plan = await tools.ask("queries", "thought, queries", topic=input.topic, round=round_, known=len(sources))
        await think(ctx, f"round-{round_}", plan["thought"])
        for task in asyncio.as_completed([tools.search(query) for query in plan["queries"][:3]]):
            for hit in await task:
                if hit["url"] not in sources:
                    sources[hit["url"]] = hit
                    update = {"round": round_, "title": hit["title"], "url": hit["url"], "sources": len(sources)}
                    await ctx.emit("update", update)
        await ctx.progress(round_, input.rounds, f"round {round_}: {len(sources)} sources")
        await ctx.phase(f"round-{round_}", "done", sources=len(sources))

    await ctx.phase("report", "started")
    findings = "; ".join(hit["title"] for hit in list(sources.values())[:6])
    written = await tools.ask("report", "report", topic=input.topic, findings=findings)
    await stream_text(ctx, written["report"])
    await ctx.phase("report", "done")
    return {"topic": input.topic, "report": written["report"], "sources": list(sources)}


def build_app(config: Config | None = None, settings: Settings | None = None) -> Runyard:
    config = config or Config.from_env()
    app = Runyard(settings, title="fit_check")
    app.limit(LLM, concurrency=8, rpm=500, tpm=90_000, breaker=Breaker(failures=5, reset_s=30))
    app.limit(SEARCH, concurrency=SEARCH_CONCURRENCY)

    @app.pipeline("fit_check", timeout_s=config.timeout_s, input_model=FitCheckInput)
    async def fit_check(ctx: RunContext, input: FitCheckInput) -> dict[str, Any]:
        """Research a role, match a candidate against its requirements, stream a verdict."""
        async with Tools.open(config) as tools:
            return await assess(ctx, tools, input)

    @app.pipeline("deep_research", timeout_s=config.timeout_s, input_model=DeepResearchInput)
    async def deep_research(ctx: RunContext, input: DeepResearchInput) -> dict[str, Any]:
        """Rounds of searches with a live `update` per new source, then a streamed report."""
        async with Tools.open(config) as tools:
            return await research_deeply(ctx, tools, input)

    return app


app = build_app()
