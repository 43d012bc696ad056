"""``research``: a simulated multi-phase research agent (plan, search, read, write).

Nothing here touches the network: the "search API" is a coroutine that sleeps a
little and derives its results from a hash of the query, so the same topic always
yields the same findings. Its calls share the ``search-api`` limit, as a real
rate-limited API's would. ``RUNYARD_DEMO_SPEED`` scales every simulated delay
(0 removes them, which is what the tests do).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from runyard import RunContext, current_run

SEARCH_LIMIT = "search-api"
SEARCH_CONCURRENCY = 4
MAX_SOURCES = 5
WRITER_MODEL = "sim-writer"  # the model its usage event names (priced by RUNYARD_PRICES like any other)

_ASPECTS = ("history", "economics", "open problems", "recent advances", "criticism", "tooling", "adoption")
_QUALIFIERS = ("A survey of", "Notes on", "Rethinking", "A practitioner's guide to", "The state of")
_CLAIMS = (
    "progress has been steady but uneven across groups",
    "most results do not yet replicate at scale",
    "costs fell sharply once tooling matured",
    "the main bottleneck is data rather than methods",
    "practitioners and researchers disagree on priorities",
    "regulation is shaping the field more than technology",
)


class ResearchInput(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, str_strip_whitespace=True)

    topic: str = Field(min_length=1, max_length=200, description="What to research")


@dataclass(frozen=True, slots=True)
class Hit:
    title: str
    url: str


async def pause(seconds: float) -> None:
    """Sleep ``seconds`` scaled by ``RUNYARD_DEMO_SPEED`` (default 1; 0 = no sleep at all)."""
    try:
        scale = float(os.environ.get("RUNYARD_DEMO_SPEED", "1"))
    except ValueError:
        scale = 1.0
    if scale > 0:
        await asyncio.sleep(seconds * scale)


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "topic"


async def search_api(query: str) -> list[Hit]:
    """The simulated search API: slow-ish, deterministic, and offline."""
    digest = _digest(query)
    await pause(0.3 + digest[0] / 640)
    hits = []
    for n in range(3):
        title = f"{_QUALIFIERS[digest[n + 1] % len(_QUALIFIERS)]} {query}"
        url = f"https://example.invalid/{_slug(query)}/{digest[n * 4 : n * 4 + 4].hex()}"
        hits.append(Hit(title, url))
    return hits


async def web_search(query: str) -> list[Hit]:
    """The agent's search tool. It finds its run through ``current_run()`` rather
    than a parameter or a global, as a tool deep in a real agent's stack would."""
    ctx = current_run()
    async with ctx.limit(SEARCH_LIMIT):
        hits = await search_api(query)
    await ctx.emit("search", {"query": query, "hits": len(hits)})
    return hits


async def read_source(hit: Hit) -> str:
    """'Read' a page: a deterministic one-sentence summary of it."""
    await pause(0.2)
    claim = _CLAIMS[_digest(hit.url)[0] % len(_CLAIMS)]
    return f"{hit.title} finds that {claim}."


def _plan(topic: str) -> list[str]:
    digest = _digest(topic)
    first = digest[0] % len(_ASPECTS)
    aspects = [_ASPECTS[(first + step) % len(_ASPECTS)] for step in (0, 2, 4)]
    return [f"{topic} {aspect}" for aspect in aspects]


def _pick(batches: list[list[Hit]]) -> list[Hit]:
    """Up to ``MAX_SOURCES`` distinct hits, taking turns between the searches."""
    picked: dict[str, Hit] = {}
    for rank in range(max(map(len, batches), default=0)):
        for batch in batches:
            if rank < len(batch) and len(picked) < MAX_SOURCES:
                picked.setdefault(batch[rank].url, batch[rank])
    return list(picked.values())


def _write(topic: str, searches: int, findings: list[dict[str, str]]) -> str:
    lines = [f"# Research report: {topic}\n\n"]
    lines.append(f"{len(findings)} sources from {searches} searches.\n\n")
    lines.extend(f"- {finding['summary']} [{n}]\n" for n, finding in enumerate(findings, 1))
    lines.append(f"\nIn short, {topic} is an active area where the evidence is still settling.\n\n")
    lines.extend(f"[{n}] {finding['url']}\n" for n, finding in enumerate(findings, 1))
    return "".join(lines)


async def research(ctx: RunContext, input: ResearchInput) -> dict[str, Any]:
    """A simulated research agent: plans queries, searches a rate-limited (simulated)
    search API, reads the best sources and streams a report. Emits `phase`, `search`,
    `finding`, `progress`, `token` and `usage` events. Output {topic, report (markdown), sources}."""
    topic = input.topic

    await ctx.phase("plan", "started")
    await pause(0.3)
    queries = _plan(topic)
    steps = 1 + len(queries) + MAX_SOURCES + 1
    await ctx.emit("plan", {"queries": queries})
    await ctx.progress(1, steps, "planned")
    await ctx.phase("plan", "done")

    await ctx.phase("search", "started")
    batches = await asyncio.gather(*(web_search(query) for query in queries))
    results = sum(map(len, batches))
    sources = _pick(batches)
    done = 1 + len(queries)
    await ctx.progress(done, steps, f"{results} results")
    await ctx.phase("search", "done", results=results)

    await ctx.phase("read", "started")
    findings = []
    for hit in sources:
        finding = {"title": hit.title, "url": hit.url, "summary": await read_source(hit)}
        findings.append(finding)
        await ctx.emit("finding", finding)
        done += 1
        await ctx.progress(done, steps, f"read {hit.url}")
    await ctx.phase("read", "done", sources=len(findings))

    await ctx.phase("write", "started")
    report = _write(topic, len(queries), findings)
    for piece in re.findall(r"\S+\s*|\s+", report):
        await ctx.token(piece)
        await pause(0.012)
    await ctx.progress(steps, steps, "report written")
    # what a real writer model would have been billed: the sources read in, the report out (4 characters a token)
    read = sum(len(finding["summary"]) for finding in findings)
    await ctx.emit(
        "usage", {"model": WRITER_MODEL, "input_tokens": read // 4 + 1, "output_tokens": len(report) // 4 + 1}
    )
    await ctx.phase("write", "done")

    return {"topic": topic, "report": report, "sources": [finding["url"] for finding in findings]}
