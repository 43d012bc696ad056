"""defi_qa: answers over a DeFi dataset, streamed with a confidence, to many users at once.

- The embedding service, the dataset with its embeddings, one HTTP client for
  the LLM and the answer cache are the app's resources (``@app.resource``):
  built once per process when it starts, before its first run, closed when it
  stops. The ``Knowledge`` is immutable: every run reads it and none can change it.
- Each run gets its own ``Agent``, handed the resources it needs from
  ``ctx.resources``: its notes and its sources belong to that run alone.
- Answers are kept in an ``AsyncLRUCache`` keyed by the normalised question:
  ten users asking the same thing at once cost one LLM call.
- The answer streams as ``token`` events while the LLM writes it, then a
  ``confidence`` event; the output carries both.

    runyard serve examples.defi_qa.app:app
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field

from examples.defi_qa.cache import AsyncLRUCache
from examples.defi_qa.knowledge import DATASET, Embedder, Hit, Knowledge, default_embedder, load_knowledge, terms
from runyard import Resources, RunContext, Runyard, Settings

log = logging.getLogger("defi_qa")

LLM = "llm"
TOP_K = 3
MIN_SIMILARITY = 0.1  # below it a fact is not about the question at all
MIN_CONFIDENCE = 0.5  # below it the agent says so instead of asking the LLM to guess
HTTP_TIMEOUT_S = 60.0
SYSTEM_PROMPT = "Answer the question from the numbered context only, citing the ids you use."
NO_ANSWER = "The dataset says nothing about that, so I will not guess."


@dataclass(frozen=True, slots=True)
class Config:
    llm_url: str = "http://127.0.0.1:9201/v1"
    llm_model: str = "gpt-4o-mini"
    llm_api_key: str | None = None
    cache_size: int = 256
    dataset: Path = DATASET

    @classmethod
    def from_env(cls) -> Config:
        default = cls()
        env = os.environ.get
        return cls(
            llm_url=env("DEFI_QA_LLM_URL", default.llm_url),
            llm_model=env("DEFI_QA_LLM_MODEL", default.llm_model),
            llm_api_key=env("DEFI_QA_LLM_API_KEY"),
            cache_size=int(env("DEFI_QA_CACHE_SIZE", str(default.cache_size))),
            dataset=Path(env("DEFI_QA_DATASET", str(default.dataset))),
        )


class Question(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    question: str = Field(min_length=1, max_length=500)


@dataclass(frozen=True, slots=True)
class Answer:
    text: str
    sources: tuple[str, ...]
    confidence: float


def cache_key(question: str) -> str:
    """Questions that differ only in case, spacing or final punctuation share an answer."""
    return re.sub(r"\s+", " ", question.lower()).strip(" ?!.")


def confidence_of(question: str, hits: tuple[Hit, ...]) -> float:
    """How much of the question the sources cover, and how close the best one is, in [0, 1]."""
    asked = set(terms(question))
    if not asked or not hits:
        return 0.0
    covered = asked & set(terms(" ".join(f"{hit.fact.topic} {hit.fact.text}" for hit in hits)))
    return round(min(1.0, 0.6 * len(covered) / len(asked) + 0.4 * max(0.0, hits[0].score)), 2)


class Agent:
    """Answers one run's question. Made for that run and dropped with it, so
    nothing it notes down can reach another user's answer; what it shares with
    other runs (knowledge, cache, HTTP client) is handed to it."""

    def __init__(
        self,
        ctx: RunContext,
        knowledge: Knowledge,
        cache: AsyncLRUCache[str, Answer],
        config: Config,
        http: httpx.AsyncClient,
    ) -> None:
        self.id = f"agent-{ctx.run_id}"
        self.notes: list[str] = []
        self._ctx = ctx
        self._knowledge = knowledge
        self._cache = cache
        self._config = config
        self._http = http

    async def answer(self, question: str) -> dict[str, Any]:
        answer, cached = await self._cache.get_or_compute(cache_key(question), lambda: self._work_out(question))
        if cached:
            self.notes.append("answered from the cache")
            await self._ctx.phase("answer", "started", cached=True)
            for piece in re.findall(r"\S+\s*", answer.text):
                await self._ctx.token(piece)
            await self._ctx.phase("answer", "done")
        await self._ctx.emit("confidence", {"confidence": answer.confidence})
        return {
            "question": question,
            "answer": answer.text,
            "confidence": answer.confidence,
            "sources": list(answer.sources),
            "cached": cached,
            "agent": self.id,
            "notes": self.notes,
            "dataset": {"digest": self._knowledge.digest, "facts": len(self._knowledge.facts)},
        }

    async def _work_out(self, question: str) -> Answer:
        await self._ctx.phase("retrieve", "started")
        hits = tuple(hit for hit in await self._retrieve(question) if hit.score >= MIN_SIMILARITY)
        sources = [{"id": h.fact.id, "topic": h.fact.topic, "text": h.fact.text, "score": h.score} for h in hits]
        await self._ctx.emit("retrieval", {"sources": sources, "embedder": self._knowledge.embedder.name})
        self.notes.append(f"retrieved {', '.join(h.fact.id for h in hits) or 'nothing'}")
        await self._ctx.phase("retrieve", "done")

        confidence = confidence_of(question, hits)
        await self._ctx.phase("answer", "started", cached=False)
        if confidence < MIN_CONFIDENCE:
            self.notes.append(f"confidence {confidence} too low to answer")
            hits, text = (), NO_ANSWER
            await self._ctx.token(text)
        else:
            self.notes.append("asked the LLM")
            text = await self._ask_llm(question, hits)
        await self._ctx.phase("answer", "done")
        return Answer(text, tuple(hit.fact.id for hit in hits), confidence)

    async def _retrieve(self, question: str) -> tuple[Hit, ...]:
        embedder = self._knowledge.embedder
        if embedder.blocking:  # the real model: keep the event loop free for everybody else's runs
            [vector] = await asyncio.to_thread(embedder.embed, [question])
        else:
            [vector] = embedder.embed([question])
        return self._knowledge.search(vector, TOP_K)

    async def _ask_llm(self, question: str, hits: tuple[Hit, ...]) -> str:
        """Stream a completion, each delta a ``token`` event. Under the limit but not
        retried: a retry after some tokens went out would repeat them."""
        context = "\n".join(f"[{hit.fact.id}] {hit.fact.text}" for hit in hits)
        prompt = f"Context:\n{context}\nQuestion: {question}"
        body = {
            "model": self._config.llm_model,
            "messages": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": prompt}],
            "stream": True,
            "user": self._ctx.owner,
        }
        key = self._config.llm_api_key
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        pieces: list[str] = []
        async with self._ctx.limit(LLM, tokens=len(prompt) // 4 + 300):
            url = f"{self._config.llm_url}/chat/completions"
            async with self._http.stream("POST", url, json=body, headers=headers) as response:
                response.raise_for_status()
                async for line in response.aiter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    delta = json.loads(line[6:])["choices"][0]["delta"].get("content")
                    if delta:
                        pieces.append(delta)
                        await self._ctx.token(delta)
        return "".join(pieces)


def build_app(
    config: Config | None = None, settings: Settings | None = None, knowledge: Knowledge | None = None
) -> Runyard:
    """The app; building it loads nothing (``knowledge`` stands in for the dataset
    in tests). Its resources are built when it starts, once per process."""
    config = config or Config.from_env()
    app = Runyard(settings, title="defi_qa")
    app.limit(LLM, concurrency=8, rpm=500, tpm=200_000)

    @app.resource("embedder")
    async def embedder() -> Embedder:
        if knowledge is not None:
            return knowledge.embedder
        return await asyncio.to_thread(default_embedder)  # the model takes seconds to load: not on the loop

    @app.resource("knowledge")
    async def load(built: Resources) -> Knowledge:
        if knowledge is not None:
            return knowledge
        started = time.perf_counter()
        loaded = await asyncio.to_thread(load_knowledge, config.dataset, built["embedder"])
        took = time.perf_counter() - started
        log.info("loaded %d facts (%s) with %s in %.2f s", len(loaded.facts), loaded.digest, loaded.embedder.name, took)
        return loaded

    @app.resource("llm_http")
    async def llm_http() -> AsyncIterator[httpx.AsyncClient]:
        # one connection pool for every run's LLM calls (the `llm` limit keeps them at 8 at once)
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_S) as http:
            yield http

    @app.resource("answers")
    async def answers() -> AsyncLRUCache[str, Answer]:
        return AsyncLRUCache(config.cache_size)

    @app.pipeline("ask", timeout_s=120, input_model=Question)
    async def ask(ctx: RunContext, input: Question) -> dict[str, Any]:
        """Answer a DeFi question from the dataset: `retrieval`, `token` and `confidence` events."""
        shared = ctx.resources
        agent = Agent(ctx, shared.of(Knowledge), shared["answers"], config, shared.of(httpx.AsyncClient))
        return await agent.answer(input.question)

    return app


app = build_app()
