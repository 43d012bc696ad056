"""resume_optimizer: a long multi-stage pipeline (3-5 minutes) with frequent progress.

The ``optimize`` pipeline reads a resume and a job posting, then goes through
five stages: ``parse`` (sections, and the posting's keywords), ``analyze`` (a
critique of every bullet), ``rewrite`` (every bullet), ``tailor`` (each keyword
the posting wants) and ``score`` (keyword coverage before and after, and a
streamed summary). Each stage is a durable ``ctx.step``: a run whose worker
was killed in stage 3 resumes at stage 3 on another worker (or the restarted
one) without calling the LLM again for stages 1 and 2. Every LLM call goes
through ``ctx.call``.

The whole run lasts ``RESUME_OPTIMIZER_SECONDS`` (default 240, as the original
did; tests use 1.5): its progress steps (a section, a bullet, a keyword...)
share that time, and while one waits out its share a ``progress`` event goes
out at least every second, so a browser always has something fresh to show.
The rest is runyard's: the browser reconnects with ``Last-Event-ID`` and
misses nothing, or polls ``GET /v1/runs/{id}``;
``RUNYARD_QUOTA_RUNS=5`` gives each browser's client id 5 free runs; and
``RUNYARD_SSE_PAD_BYTES=4096`` gets each event through a proxy that buffers 4 KB.

    RUNYARD_QUOTA_RUNS=5 RUNYARD_SSE_PAD_BYTES=4096 runyard serve examples.resume_optimizer.app:app
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

from runyard import RunContext, Runyard, Settings

LLM = "llm"
PROGRESS_EVERY_S = 1.0
HTTP_TIMEOUT_S = 60.0
_BULLET = re.compile(r"^\s*[-*\u2022]\s+(.*\S)\s*$")


@dataclass(frozen=True, slots=True)
class Config:
    llm_url: str = "http://127.0.0.1:9301/v1"
    llm_model: str = "gpt-4o-mini"
    llm_api_key: str | None = None
    seconds: float = 240.0  # how long a run takes

    @classmethod
    def from_env(cls) -> Config:
        default = cls()
        env = os.environ.get
        return cls(
            llm_url=env("RESUME_OPTIMIZER_LLM_URL", default.llm_url),
            llm_model=env("RESUME_OPTIMIZER_LLM_MODEL", default.llm_model),
            llm_api_key=env("RESUME_OPTIMIZER_LLM_API_KEY"),
            seconds=float(env("RESUME_OPTIMIZER_SECONDS", str(default.seconds))),
        )

    @property
    def timeout_s(self) -> float:
        return 2 * self.seconds + 60


class ResumeInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    resume: str = Field(min_length=1, max_length=20_000, description="Plain text; bullets start with - or *")
    job: str = Field(min_length=1, max_length=10_000, description="The job posting")


@dataclass(frozen=True, slots=True)
class Section:
    title: str
    bullets: tuple[str, ...]


def parse_resume(text: str) -> list[Section]:
    """Sections are lines ending in ``:``; their bullets start with ``-``, ``*`` or ``•``."""
    sections: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if bullet := _BULLET.match(line):
            if not sections:
                sections.append(("Summary", []))
            sections[-1][1].append(bullet.group(1))
        elif line.strip().endswith(":"):
            sections.append((line.strip()[:-1], []))
    return [Section(title, tuple(bullets)) for title, bullets in sections]


def render(sections: list[Section], skills: list[str]) -> str:
    lines: list[str] = []
    for section in sections:
        lines += [f"{section.title}:", *(f"- {bullet}" for bullet in section.bullets), ""]
    if skills:
        lines += ["Skills:", f"- {', '.join(skills)}", ""]
    return "\n".join(lines)


def coverage(text: str, keywords: list[str]) -> int:
    """The percentage of ``keywords`` that ``text`` mentions."""
    if not keywords:
        return 100
    found = sum(1 for keyword in keywords if re.search(rf"\b{re.escape(keyword)}\b", text, re.IGNORECASE))
    return round(100 * found / len(keywords))


class LLMClient:
    """One run's LLM client; each call under the shared ``llm`` limit, retried on 429 and 5xx."""

    def __init__(self, ctx: RunContext, config: Config, http: httpx.AsyncClient) -> None:
        self._ctx = ctx
        self._config = config
        self._http = http

    @classmethod
    @asynccontextmanager
    async def open(cls, ctx: RunContext, config: Config) -> AsyncIterator[LLMClient]:
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_S) as http:
            yield cls(ctx, config, http)

    async def ask(self, task: str, **fields: object) -> dict[str, Any]:
        prompt = "\n".join(f"{name}: {value}" for name, value in fields.items())
        body = {
            "model": self._config.llm_model,
            "messages": [
                {"role": "system", "content": f"You are a resume editor.\nTask: {task}\nReply with one JSON object."},
                {"role": "user", "content": prompt},
            ],
            "response_format": {"type": "json_object"},
            "user": self._ctx.owner,
        }
        return await self._ctx.call(LLM, self._complete, body, tokens=len(prompt) // 4 + 200)

    async def _complete(self, body: dict[str, Any]) -> dict[str, Any]:
        key = self._config.llm_api_key
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        response = await self._http.post(f"{self._config.llm_url}/chat/completions", json=body, headers=headers)
        response.raise_for_status()
        reply: dict[str, Any] = json.loads(response.json()["choices"][0]["message"]["content"])
        return reply


class Pacer:
    """Spreads a stage over its share of the run: the stage's k-th step ends
    ``k * step_s`` after the stage began, and while a step waits for its end a
    ``progress`` event goes out at least every ``PROGRESS_EVERY_S``, its ``current``
    counting the steps of the run done before the stage and the step's fraction.
    Each stage keeps its own clock, so a stage executed again (after its worker
    died) gets its whole share again."""

    def __init__(self, ctx: RunContext, step_s: float, steps: int, done: int) -> None:
        self._ctx = ctx
        self._loop = asyncio.get_running_loop()
        self._started = self._loop.time()
        self._step_s = step_s
        self._first = done
        self.steps = steps
        self.done = done

    async def step_done(self, message: str) -> None:
        end = self._started + (self.done - self._first + 1) * self._step_s
        while end - self._loop.time() > PROGRESS_EVERY_S:
            await asyncio.sleep(PROGRESS_EVERY_S)
            current = round(self.done + 1 - (end - self._loop.time()) / self._step_s, 2)
            await self._ctx.progress(current, self.steps, f"{message}...")
        await asyncio.sleep(max(0.0, end - self._loop.time()))
        self.done += 1
        await self._ctx.progress(self.done, self.steps, message)


@dataclass(frozen=True, slots=True)
class Plan:
    """What the parse stage found: the run's sections, bullets and keywords, and its pace."""

    sections: list[Section]
    keywords: list[str]
    step_s: float

    @property
    def bullets(self) -> list[tuple[int, str]]:
        """Every bullet, with the index of its section."""
        return [(n, bullet) for n, section in enumerate(self.sections) for bullet in section.bullets]

    @property
    def steps(self) -> int:
        """The run's progress steps: a section each, a bullet each twice, a keyword each, the score."""
        return len(self.sections) + 2 * len(self.bullets) + len(self.keywords) + 1

    def pacer(self, ctx: RunContext, done: int) -> Pacer:
        return Pacer(ctx, self.step_s, self.steps, done)

    def to_json(self) -> dict[str, Any]:
        sections = [{"title": s.title, "bullets": list(s.bullets)} for s in self.sections]
        return {"sections": sections, "keywords": self.keywords, "step_s": self.step_s}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Plan:
        sections = [Section(s["title"], tuple(s["bullets"])) for s in data["sections"]]
        return cls(sections, list(data["keywords"]), float(data["step_s"]))


# The five stages. Each runs as one ``ctx.step``: its LLM calls, its events and its
# pacing happen once, and its JSON result is recorded with its ``step`` event, so a
# run executed again (its worker was killed, a deploy drained it) skips the stages
# already done without calling the LLM for them, and only the stage that was cut
# off starts over.


async def parse_stage(ctx: RunContext, llm: LLMClient, input: ResumeInput, seconds: float) -> dict[str, Any]:
    sections = parse_resume(input.resume)
    keywords: list[str] = (await llm.ask("keywords", job=input.job.replace("\n", " ")))["keywords"]
    await ctx.emit("keywords", {"keywords": keywords})
    steps = Plan(sections, keywords, 0.0).steps
    plan = Plan(sections, keywords, seconds / steps)
    pacer = plan.pacer(ctx, 0)
    for section in sections:
        await ctx.emit("section", {"title": section.title, "bullets": len(section.bullets)})
        await pacer.step_done(f"parse: {section.title}")
    return plan.to_json()


async def analyze_stage(ctx: RunContext, llm: LLMClient, plan: Plan) -> list[list[str]]:
    pacer = plan.pacer(ctx, len(plan.sections))
    bullets = plan.bullets
    critiques: list[list[str]] = []
    for n, (_, bullet) in enumerate(bullets, 1):
        issues: list[str] = (await llm.ask("critique", bullet=bullet))["issues"]
        critiques.append(issues)
        await ctx.emit("critique", {"bullet": bullet, "issues": issues})
        await pacer.step_done(f"analyze: bullet {n} of {len(bullets)}")
    return critiques


async def rewrite_stage(ctx: RunContext, llm: LLMClient, plan: Plan, critiques: list[list[str]]) -> list[list[str]]:
    pacer = plan.pacer(ctx, len(plan.sections) + len(plan.bullets))
    bullets = plan.bullets
    rewritten: list[list[str]] = [[] for _ in plan.sections]
    for n, ((section_index, bullet), issues) in enumerate(zip(bullets, critiques, strict=True), 1):
        text = (await llm.ask("rewrite", bullet=bullet, issues=", ".join(issues)))["text"] if issues else bullet
        rewritten[section_index].append(text)
        if text != bullet:
            await ctx.emit("rewrite", {"before": bullet, "after": text})
        await pacer.step_done(f"rewrite: bullet {n} of {len(bullets)}")
    return rewritten


async def tailor_stage(ctx: RunContext, llm: LLMClient, plan: Plan, draft: str) -> list[str]:
    pacer = plan.pacer(ctx, len(plan.sections) + 2 * len(plan.bullets))
    skills: list[str] = []
    for keyword in plan.keywords:
        advice = await llm.ask("tailor", keyword=keyword, resume=draft.replace("\n", " "))
        if advice["add"]:
            skills.append(keyword)
        await ctx.emit("keyword", {"keyword": keyword, "add": advice["add"], "suggestion": advice["suggestion"]})
        await pacer.step_done(f"tailor: {keyword}")
    return skills


async def score_stage(ctx: RunContext, llm: LLMClient, plan: Plan, before: int, after: int, changed: int) -> str:
    pacer = plan.pacer(ctx, plan.steps - 1)
    summary: str = (await llm.ask("summary", before=before, after=after, rewritten=changed))["summary"]
    for piece in re.findall(r"\S+\s*", summary):
        await ctx.token(piece)
    await pacer.step_done("score")
    return summary


async def optimize_resume(ctx: RunContext, llm: LLMClient, input: ResumeInput, seconds: float) -> dict[str, Any]:
    """The five stages in turn, each a ``ctx.step`` between its ``phase`` events."""
    await ctx.phase("parse", "started")
    plan = Plan.from_json(await ctx.step("parse", parse_stage, ctx, llm, input, seconds))
    await ctx.phase("parse", "done", sections=len(plan.sections), bullets=len(plan.bullets))

    await ctx.phase("analyze", "started")
    critiques: list[list[str]] = await ctx.step("analyze", analyze_stage, ctx, llm, plan)
    await ctx.phase("analyze", "done", issues=sum(map(len, critiques)))

    await ctx.phase("rewrite", "started")
    rewritten: list[list[str]] = await ctx.step("rewrite", rewrite_stage, ctx, llm, plan, critiques)
    improved = [Section(section.title, tuple(rewritten[n])) for n, section in enumerate(plan.sections)]
    await ctx.phase("rewrite", "done")

    await ctx.phase("tailor", "started")
    skills: list[str] = await ctx.step("tailor", tailor_stage, ctx, llm, plan, render(improved, []))
    await ctx.phase("tailor", "done", missing=len(skills))

    await ctx.phase("score", "started")
    optimized = render(improved, skills)
    before, after = coverage(input.resume, plan.keywords), coverage(optimized, plan.keywords)
    changed = sum(1 for issues in critiques if issues)
    summary: str = await ctx.step("score", score_stage, ctx, llm, plan, before, after, changed)
    await ctx.phase("score", "done", before=before, after=after)
    return {
        "score_before": before,
        "score_after": after,
        "keywords": plan.keywords,
        "missing_keywords": skills,
        "optimized_resume": optimized,
        "summary": summary,
    }


def build_app(config: Config | None = None, settings: Settings | None = None) -> Runyard:
    config = config or Config.from_env()
    app = Runyard(settings, title="resume_optimizer")
    app.limit(LLM, concurrency=16, rpm=3000)

    # A killed worker's run is taken over by another (or the restarted) process: a
    # retry, which resumes past the stages already recorded.
    @app.pipeline("optimize", timeout_s=config.timeout_s, retries=2, input_model=ResumeInput)
    async def optimize(ctx: RunContext, input: ResumeInput) -> dict[str, Any]:
        """Parse, analyze, rewrite, tailor and score a resume against a job posting,
        with a `progress` event at least every second."""
        async with LLMClient.open(ctx, config) as llm:
            return await optimize_resume(ctx, llm, input, config.seconds)

    return app


app = build_app()
