"""examples/interviewer: interviews, each one run that asks for every answer
(``ctx.ask``) and gives feedback on it, then a summary, owned by JWT users; and
speech tasks whose provider caps (5 STT, 26 TTS) hold across the processes of a
deployment.

The LLM and the speech providers are the example's fakes on loopback. The
interview and auth specs serve the app in a thread (``memory://``); the caps,
and an interview answered through the API process while workers execute it,
are checked on a fleet: one API and two worker processes (``runyard serve
examples.interviewer.app:app``) on a PostgreSQL database and a Redis prefix of
their own, every worker calling the same fake providers.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import jwt
import pytest

from examples.interviewer.app import Providers, build_app
from examples.interviewer.fake_llm import FakeInterviewerLLM
from examples.interviewer.fake_speech import STT_CAP, TTS_CAP, FakeSTT, FakeTTS
from runyard import APIError, AsyncClient, Settings
from tests.governance.support import wait_until
from tests.services import POSTGRES_URL, REDIS_URL, redis_url, require_postgres, require_redis
from tests.sse_reader import frames
from tests.support import REPO, ServerProcess, serve_asgi, serve_in_thread

APP = "examples.interviewer.app:app"
SECRET = "interviewer-tests-secret-0123456789abcdef"
RUNYARD_CLI = "import sys; from runyard.cli import main; sys.exit(main())"  # when there is no `runyard` script


def token(sub: str) -> str:
    return jwt.encode({"sub": sub, "exp": int(time.time()) + 600}, SECRET, algorithm="HS256")


def audio(text: str) -> str:
    """A chunk of simulated audio: the fake STT hears the text it encodes."""
    return base64.b64encode(text.encode()).decode()


@dataclass
class Fakes:
    llm: FakeInterviewerLLM
    stt: FakeSTT
    tts: FakeTTS
    providers: Providers


@contextmanager
def running_fakes(stt_delay_s: float = 0.05, tts_delay_s: float = 0.05) -> Iterator[Fakes]:
    """The fake LLM, STT and TTS, each on a loopback port of its own."""
    llm, stt, tts = FakeInterviewerLLM(), FakeSTT(delay_s=stt_delay_s), FakeTTS(delay_s=tts_delay_s)
    with serve_asgi(llm.asgi()) as llm_url, serve_asgi(stt.asgi()) as stt_url, serve_asgi(tts.asgi()) as tts_url:
        yield Fakes(llm, stt, tts, Providers(llm_url=f"{llm_url}/v1", stt_url=stt_url, tts_url=tts_url))


@pytest.fixture(scope="module")
def fakes() -> Iterator[Fakes]:
    with running_fakes() as running:
        yield running


@pytest.fixture(scope="module")
def server(fakes: Fakes) -> Iterator[str]:
    """The example in one process, with JWT auth."""
    app = build_app(Settings(store="memory://", auth="jwt", jwt_secret=SECRET), fakes.providers)
    with serve_in_thread(app) as url:
        yield url


def candidate(url: str, sub: str) -> AsyncClient:
    return AsyncClient(url, token=token(sub), timeout=30)


async def run(
    client: AsyncClient, pipeline: str, input: Any, session_id: str | None = None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A run from creation to end: its final snapshot and every event of its stream."""
    created = await client.create(pipeline, input, session_id=session_id)
    events = [event async for event in client.stream(created["run_id"])]
    return await client.snapshot(created["run_id"]), events


def of_type(events: list[dict[str, Any]], type: str) -> list[Any]:
    return [event["data"] for event in events if event["type"] == type]


async def api_error(call: Awaitable[Any]) -> tuple[int, str]:
    with pytest.raises(APIError) as caught:
        await call
    return caught.value.status, caught.value.code


# -- interviews -----------------------------------------------------------------------


def bearer(sub: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(sub)}"}


@dataclass
class Transcript:
    """What a candidate saw of a whole interview."""

    run: dict[str, Any]  # the final snapshot
    events: list[dict[str, Any]]  # every event of its stream
    late: httpx.Response  # an answer posted after the interview ended


async def interview(url: str, sub: str, config: dict[str, Any], answers: list[str]) -> Transcript:
    """A candidate's interview as a browser holds it: one run, its stream followed
    from the start, each question (``input.requested``) answered as it comes."""
    replies = iter(answers)
    events: list[dict[str, Any]] = []
    async with httpx.AsyncClient(base_url=url, headers=bearer(sub), timeout=30) as http:
        created = await http.post("/v1/runs", json={"pipeline": "interview", "input": config})
        assert created.status_code == 201, created.text
        path = f"/v1/runs/{created.json()['run_id']}"
        async with http.stream("GET", f"{path}/stream") as response:
            async for frame in frames(response):
                if "id" not in frame:
                    continue
                events.append(frame["data"])
                if frame["event"] == "input.requested":
                    value = {"answer": next(replies)}
                    body = {"value": value, "ask_id": frame["data"]["data"]["ask_id"]}  # this very question
                    posted = await http.post(f"{path}/input", json=body)
                    assert posted.status_code == 202, posted.text
                elif frame["event"] == "end":
                    break
        late = await http.post(f"{path}/input", json={"value": {"answer": "and one more thing"}})
        return Transcript((await http.get(path)).json(), events, late)


async def snapshot_when(
    http: httpx.AsyncClient, path: str, reached: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """The run's snapshot, polled until ``reached`` holds of it (10 s at most)."""
    latest: dict[str, Any] = {}

    async def check() -> bool:
        nonlocal latest
        latest = (await http.get(path)).json()
        return reached(latest)

    await wait_until(check, 10)
    return latest


ANSWERS = {
    "alpha": [
        "alpha-one: I built a job queue on PostgreSQL with SKIP LOCKED, and the hard trade-off was between"
        " exactly-once delivery and throughput, which we settled with idempotency keys on every consumer.",
        "alpha-two: the dashboards first.",
    ],
    "beta": ["beta-one: ein Bericht ueber Umsatzdaten", "beta-two: ich pruefe zuerst die Daten und die Annahmen"],
    "gamma": ["gamma-one: une migration sans interruption", "gamma-two: les journaux, puis les traces"],
}


async def test_interviews_held_at_once_each_get_their_configuration_feedback_and_summary_only(
    server: str, fakes: Fakes
) -> None:
    """Alice in two interviews and Bob in one, all at once: every question follows its
    interview's configuration, every feedback and summary quotes that interview's answers
    only, and each LLM call is made once although each run executes once per answer."""
    served_before = fakes.llm.served
    seen = dict(
        zip(
            ANSWERS,
            await asyncio.gather(
                interview(server, "alice", {"role": "backend engineer", "questions": 2}, ANSWERS["alpha"]),
                interview(server, "bob", {"role": "data analyst", "questions": 2, "language": "de"}, ANSWERS["beta"]),
                interview(server, "alice", {"role": "sre", "questions": 2, "language": "fr"}, ANSWERS["gamma"]),
            ),
            strict=True,
        )
    )
    # The configuration given at the start shapes the questions and feedback: role, count, language.
    opening = {
        "alpha": ("Question {n}/2 (backend engineer): ", "Feedback: ", "Summary (backend engineer): "),
        "beta": ("Frage {n}/2 (data analyst): ", "Rückmeldung: ", "Zusammenfassung (data analyst): "),
        "gamma": ("Question {n}/2 (sre): ", "Retour: ", "Bilan (sre): "),
    }
    for mine, transcript in seen.items():
        others = [marker for marker in ANSWERS if marker != mine]
        question_starts, feedback_starts, summary_starts = opening[mine]
        events, output = transcript.events, transcript.run["output"]
        assert transcript.run["status"] == "succeeded", transcript.run
        asked = [requested["request"] for requested in of_type(events, "input.requested")]
        assert [(q["number"], q["of"]) for q in asked] == [(1, 2), (2, 2)]
        for question in asked:
            assert question["question"].startswith(question_starts.format(n=question["number"]))
        feedback = of_type(events, "feedback")
        assert [f["number"] for f in feedback] == [1, 2]  # one feedback event per answer
        for judged, answer, turn in zip(feedback, ANSWERS[mine], output["turns"], strict=True):
            assert judged["feedback"].startswith(feedback_starts)
            assert f'"{" ".join(answer.split()[:8])}' in judged["feedback"]  # it judged this answer
            assert not any(other in judged["feedback"] for other in others)
            assert turn == {
                "number": judged["number"],
                "question": asked[judged["number"] - 1]["question"],
                "answer": answer,
                "feedback": judged["feedback"],
                "score": judged["score"],
            }

        assert of_type(events, "summary") == [{k: v for k, v in output.items() if k != "turns"}]
        assert output["summary"].startswith(summary_starts)
        assert output["answered"] == output["of"] == 2
        assert output["scores"] == [f["score"] for f in feedback]
        assert f"{mine}-one" in output["summary"] and f"{mine}-two" in output["summary"]
        assert not any(other in output["summary"] for other in others)
        # Past the last question the interview is over: nothing waits for an answer.
        assert transcript.late.status_code == 409 and transcript.late.json()["error"]["code"] == "run_not_waiting"

        # Three executions (the start, then one per answer), each LLM call made and shown once.
        steps = [(step["name"], step["n"], step["status"]) for step in of_type(events, "step")]
        assert steps == [
            (name, n, status)
            for name, n in (("question", 1), ("feedback", 1), ("question", 2), ("feedback", 2), ("summary", 1))
            for status in ("started", "done")
        ]
        statuses = [status["status"] for status in of_type(events, "status")]
        assert statuses == ["running", "waiting", "queued", "running", "waiting", "queued", "running", "succeeded"]
    assert seen["alpha"].run["output"]["scores"] == [4, 1]  # 30 words earn a 4, a one-liner a 1
    assert fakes.llm.served - served_before == 3 * 5  # 2 questions, 2 feedbacks, 1 summary each


async def test_an_answer_must_fit_the_question_and_an_abandoned_interview_times_out(server: str) -> None:
    async with httpx.AsyncClient(base_url=server, headers=bearer("dora"), timeout=30) as http:
        config = {"role": "sre", "questions": 1, "answer_timeout_s": 1.5}
        created = await http.post("/v1/runs", json={"pipeline": "interview", "input": config})
        path = f"/v1/runs/{created.json()['run_id']}"
        question = (await snapshot_when(http, path, lambda run: run["status"] == "waiting"))["waiting_for"]
        assert question["request"]["number"] == 1
        assert question["schema"]["required"] == ["answer"]
        for bad in ({"answer": ""}, {"answer": "x" * 4001}, {"reply": "hi"}, "hi"):
            refused = await http.post(f"{path}/input", json={"value": bad})
            assert refused.status_code == 422 and refused.json()["error"]["code"] == "invalid_input", bad

        final = await snapshot_when(http, path, lambda run: run["status"] != "waiting")
    assert final["status"] == "timed_out" and final["waiting_for"] is None


async def test_with_jwt_auth_a_candidates_interviews_are_theirs_alone(server: str) -> None:
    async with (
        httpx.AsyncClient(base_url=server, headers=bearer("alice"), timeout=30) as alice,
        httpx.AsyncClient(base_url=server, headers=bearer("mallory"), timeout=30) as mallory,
        httpx.AsyncClient(base_url=server, timeout=30) as anonymous,
    ):
        created = await alice.post("/v1/runs", json={"pipeline": "interview", "input": {"role": "sre", "questions": 1}})
        run_id = created.json()["run_id"]
        path = f"/v1/runs/{run_id}"
        await snapshot_when(alice, path, lambda run: run["status"] == "waiting")

        # No token: 401. Another user: 404, exactly as for an id that does not exist.
        for response in (
            await anonymous.post("/v1/runs", json={"pipeline": "interview", "input": {"role": "x"}}),
            await anonymous.get(path),
            await anonymous.post(f"{path}/input", json={"value": {"answer": "anonymous answer"}}),
        ):
            assert response.status_code == 401 and response.json()["error"]["code"] == "unauthorized"
        for response in (
            await mallory.get(path),
            await mallory.get(f"{path}/events"),
            await mallory.post(f"{path}/input", json={"value": {"answer": "hijack"}}),
            await mallory.post(f"{path}/cancel"),
        ):
            assert response.status_code == 404 and response.json()["error"]["code"] == "run_not_found"
        assert (await mallory.get("/v1/runs")).json()["runs"] == []

        answered = await alice.post(f"{path}/input", json={"value": {"answer": "alice answers herself"}})
        assert answered.status_code == 202, answered.text
        final = await snapshot_when(alice, path, lambda run: run["status"] not in ("queued", "running"))
    assert final["status"] == "succeeded"
    assert [turn["answer"] for turn in final["output"]["turns"]] == ["alice answers herself"]
    assert "hijack" not in str(final["output"])


async def test_speech_tasks_are_runs_with_a_progress_event_per_piece(server: str) -> None:
    words = ["I built", "a queue", "on PostgreSQL", "last year"]
    async with candidate(server, "carol") as carol:
        stt, stt_events = await run(carol, "stt_batch", {"chunks": [audio(w) for w in words]})
        tts, tts_events = await run(carol, "tts", {"text": "Hello there. How are you? Fine!", "voice": "nova"})

    assert stt["status"] == "succeeded"
    assert stt["output"]["transcript"] == "I built a queue on PostgreSQL last year"
    assert [segment["text"] for segment in stt["output"]["segments"]] == words  # in order, whatever order they ran
    progress = of_type(stt_events, "progress")
    assert [(p["current"], p["total"]) for p in progress] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert progress[-1]["fraction"] == 1.0

    assert tts["status"] == "succeeded" and tts["output"]["segments"] == 3
    spoken = base64.b64decode(tts["output"]["audio_b64"])
    assert spoken == b"[nova] Hello there.[nova] How are you?[nova] Fine!" and tts["output"]["bytes"] == len(spoken)
    assert [p["current"] for p in of_type(tts_events, "progress")] == [1, 2, 3]


async def test_the_fake_speech_provider_refuses_a_request_over_its_cap() -> None:
    """What the caps protect against: a sixth transcription at once is refused."""
    stt = FakeSTT(delay_s=1.0)
    with serve_asgi(stt.asgi()) as url:
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            body = {"audio": audio("hello")}
            answers = await asyncio.gather(*(http.post("/v1/audio/transcriptions", json=body) for _ in range(6)))
    assert sorted(answer.status_code for answer in answers) == [200] * 5 + [429]
    assert stt.counts() == {"cap": STT_CAP, "peak": 6, "served": 5, "refused": 1}


# -- the caps across processes ----------------------------------------------------------


class ExampleProcess(ServerProcess):
    """``runyard serve APP`` from the repository's root, as its README runs it."""

    def __init__(self, app: str, env: dict[str, str]) -> None:
        super().__init__(env)
        script = Path(sys.executable).with_name("runyard")
        self.command = [str(script)] if script.exists() else [sys.executable, "-c", RUNYARD_CLI]
        self.command += ["serve", app]

    def launch(self) -> ExampleProcess:
        self.proc = subprocess.Popen(self.command, cwd=REPO, env=self.env)
        return self

    def wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + 30
        while self.proc.poll() is None and time.monotonic() < deadline:
            with suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"{' '.join(self.command)} ({self.env['RUNYARD_ROLE']}) did not become ready")


@dataclass
class Deployment:
    url: str  # the API process
    workers: list[str]
    fakes: Fakes


async def _postgres(sql: str) -> None:
    import asyncpg  # only the fleet needs PostgreSQL's driver

    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _forget_keys(prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture(scope="module")
def deployment() -> Iterator[Deployment]:
    """One API and two worker processes on a database and a Redis prefix of their own,
    with JWT auth, every worker calling the same fake providers (slow enough that the
    runs pile up against the caps)."""
    require_postgres()
    require_redis()
    database = f"runyard_interviewer_{secrets.token_hex(6)}"
    prefix = f"runyard-interviewer-{secrets.token_hex(6)}:"
    asyncio.run(_postgres(f'CREATE DATABASE "{database}"'))
    with ExitStack() as stack:
        stack.callback(lambda: asyncio.run(_postgres(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')))
        stack.callback(_forget_keys, prefix)
        fakes = stack.enter_context(running_fakes(stt_delay_s=0.25, tts_delay_s=0.5))
        env = {
            "RUNYARD_STORE": urlunsplit(urlsplit(POSTGRES_URL)._replace(path=f"/{database}")),
            "RUNYARD_BROKER": redis_url(prefix),  # what makes the caps shared
            "RUNYARD_AUTH": "jwt",
            "RUNYARD_JWT_SECRET": SECRET,
            "RUNYARD_MAX_CONCURRENT_RUNS": "16",  # so that both workers take a share of the runs
            "RUNYARD_LOG_LEVEL": "WARNING",
            "INTERVIEWER_LLM_URL": fakes.providers.llm_url,
            "INTERVIEWER_STT_URL": fakes.providers.stt_url,
            "INTERVIEWER_TTS_URL": fakes.providers.tts_url,
        }
        processes = [ExampleProcess(APP, {**env, "RUNYARD_ROLE": role}) for role in ("api", "worker", "worker")]
        for process in processes:
            stack.callback(process.stop)
            process.launch()
        for process in processes:
            process.wait_ready()
        yield Deployment(processes[0].url, [process.url for process in processes[1:]], fakes)


async def executed(workers: list[str], pipeline: str, runs: int) -> list[float]:
    """How many ``pipeline`` runs each worker process finished successfully (its /metrics),
    once they add up to ``runs`` (a worker counts a run just after recording its end)."""
    wanted = ("runyard_runs_total{", f'pipeline="{pipeline}"', 'status="succeeded"')
    async with httpx.AsyncClient(timeout=10) as http, asyncio.timeout(10):
        while True:
            counts = []
            for worker in workers:
                samples = [line.partition("} ") for line in (await http.get(f"{worker}/metrics")).text.splitlines()]
                counts.append(sum(float(value) for labels, _, value in samples if all(w in labels for w in wanted)))
            if sum(counts) >= runs:
                return counts
            await asyncio.sleep(0.05)


async def run_all(url: str, jobs: list[tuple[str, str, dict[str, Any]]]) -> list[tuple[dict[str, Any], list[Any]]]:
    """Start every ``(user, pipeline, input)`` at once; each run's final snapshot and progress events."""
    clients = {user: candidate(url, user) for user, _, _ in jobs}
    try:
        async with asyncio.timeout(45):
            created = await asyncio.gather(*(clients[user].create(pipe, input) for user, pipe, input in jobs))
            finished = await asyncio.gather(
                *(clients[user].wait(run["run_id"]) for (user, _, _), run in zip(jobs, created, strict=True))
            )
            pages = await asyncio.gather(
                *(clients[user].events(run["run_id"]) for (user, _, _), run in zip(jobs, created, strict=True))
            )
    finally:
        for client in clients.values():
            await client.aclose()
    return [(snapshot, of_type(page["events"], "progress")) for snapshot, page in zip(finished, pages, strict=True)]


@pytest.mark.postgres
@pytest.mark.redis
async def test_at_most_5_transcriptions_are_in_flight_across_the_worker_processes(deployment: Deployment) -> None:
    said = {n: [f"speaker {n % 4} batch {n} chunk {c}" for c in range(4)] for n in range(20)}
    jobs = [(f"speaker-{n % 4}", "stt_batch", {"chunks": [audio(text) for text in said[n]]}) for n in range(20)]

    results = await run_all(deployment.url, jobs)

    for n, (snapshot, progress) in enumerate(results):
        assert snapshot["status"] == "succeeded", snapshot
        assert snapshot["output"]["transcript"] == " ".join(said[n])
        assert [p["current"] for p in progress] == [1, 2, 3, 4]
    # 80 chunks, wanted by up to 32 runs on two workers at once: the provider saw 5 at most, and refused none.
    assert deployment.fakes.stt.counts() == {"cap": STT_CAP, "peak": STT_CAP, "served": 80, "refused": 0}
    per_worker = await executed(deployment.workers, "stt_batch", runs=20)
    assert sum(per_worker) == 20 and min(per_worker) > 0  # both processes called the provider


@pytest.mark.postgres
@pytest.mark.redis
async def test_at_most_26_syntheses_are_in_flight_across_the_worker_processes(deployment: Deployment) -> None:
    texts = {n: f"Run {n} starts here. Then it goes on! Does it end?" for n in range(60)}
    jobs = [(f"listener-{n % 6}", "tts", {"text": texts[n]}) for n in range(60)]

    results = await run_all(deployment.url, jobs)

    for n, (snapshot, progress) in enumerate(results):
        assert snapshot["status"] == "succeeded", snapshot
        expected = f"[alloy] Run {n} starts here.[alloy] Then it goes on![alloy] Does it end?".encode()
        assert base64.b64decode(snapshot["output"]["audio_b64"]) == expected
        assert [p["current"] for p in progress] == [1, 2, 3]
    # 180 sentences, wanted by up to 32 runs on two workers at once: never more than 26 in flight.
    assert deployment.fakes.tts.counts() == {"cap": TTS_CAP, "peak": TTS_CAP, "served": 180, "refused": 0}
    per_worker = await executed(deployment.workers, "tts", runs=60)
    assert sum(per_worker) == 60 and min(per_worker) > 0


@pytest.mark.postgres
@pytest.mark.redis
async def test_an_interview_answered_through_the_api_process_goes_on_on_the_workers(deployment: Deployment) -> None:
    """The API process takes each answer and wakes a worker, whichever: the interview
    waits without a slot between answers and each LLM call is made once in the fleet."""
    served_before = deployment.fakes.llm.served
    answers = ["erin-one: a queue on PostgreSQL, built over two years by four of us", "erin-two: the traces"]

    transcript = await interview(deployment.url, "erin", {"role": "sre", "questions": 2}, answers)

    assert transcript.run["status"] == "succeeded", transcript.run
    assert [turn["answer"] for turn in transcript.run["output"]["turns"]] == answers
    assert [feedback["number"] for feedback in of_type(transcript.events, "feedback")] == [1, 2]
    assert deployment.fakes.llm.served - served_before == 5  # 2 questions, 2 feedbacks, 1 summary
