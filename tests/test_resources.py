"""Start-up resources: ``Runyard(lifespan=...)`` and ``@app.resource`` build shared
clients once per process before the first run, every run reads them as
``ctx.resources`` (the app's own code as ``app.resources``), and they close in
reverse order after the drain, also when a later one fails to start."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

import pytest

from runyard import Resources, RunContext, Runyard, Settings, StartupFailed, current_run
from runyard.errors import StoreError
from runyard.runtime import Runtime
from tests.remote import create, wait_until
from tests.services import redis_url, require_redis
from tests.support import ServerProcess


class Client:
    """Stands in for a shared HTTP client or model: knows whether it was closed."""

    def __init__(self, name: str, journal: list[str]) -> None:
        self.name = name
        self.closed = False
        self._journal = journal

    def close(self) -> None:
        self.closed = True
        self._journal.append(f"close {self.name}")


def journaled_app(journal: list[str], *, failing: str | None = None, **settings: Any) -> Runyard:
    """A lifespan yielding ``base``, then resources ``a`` and ``b`` (``failing`` raises
    instead of starting); every start and close lands in ``journal``."""

    @asynccontextmanager
    async def lifespan(app: Runyard) -> AsyncIterator[dict[str, Any]]:
        journal.append("start base")
        base = Client("base", journal)
        yield {"base": base}
        base.close()

    app = Runyard(Settings(store="memory://", **settings), lifespan=lifespan)

    def declare(name: str) -> None:
        @app.resource(name)
        async def build() -> AsyncIterator[Client]:
            if name == failing:
                raise ConnectionRefusedError(f"{name} refused the connection")
            journal.append(f"start {name}")
            client = Client(name, journal)
            yield client
            client.close()

    declare("a")
    declare("b")
    return app


async def finished(rt: Runtime, run_id: str) -> Any:
    done = await rt.wait(await rt.get_run("alice", run_id), 20)
    assert done is not None, f"run {run_id} did not finish"
    return done


async def test_resources_start_once_in_order_before_the_first_run() -> None:
    journal: list[str] = []
    app = journaled_app(journal)

    @app.pipeline("look")
    async def look(ctx: RunContext, input: Any) -> list[str]:
        journal.append("run")
        return sorted(ctx.resources)

    async with app.running() as rt:
        runs = [await rt.create_run("alice", "look", {}) for _ in range(3)]
        outputs = [(await finished(rt, run.run_id)).output for run in runs]

    assert journal[:3] == ["start base", "start a", "start b"]
    assert journal[3:6] == ["run"] * 3  # and nothing started again for later runs
    assert outputs == [["a", "b", "base"]] * 3


async def test_resources_close_in_reverse_order_after_the_drain() -> None:
    journal: list[str] = []
    app = journaled_app(journal, drain_s=20)
    started, release = asyncio.Event(), asyncio.Event()

    @app.pipeline("slow")
    async def slow(ctx: RunContext, input: Any) -> None:
        started.set()
        await release.wait()
        journal.append(f"run ends, a closed: {ctx.resources['a'].closed}")

    async with app.running() as rt:
        await rt.create_run("alice", "slow", {})
        await started.wait()
        asyncio.get_running_loop().call_soon(release.set)  # the run ends while the runtime drains

    assert journal[3:] == ["run ends, a closed: False", "close b", "close a", "close base"]


async def test_a_failing_start_up_closes_what_was_opened_in_reverse_order_and_names_the_culprit() -> None:
    journal: list[str] = []
    app = journaled_app(journal, failing="b")

    with pytest.raises(StartupFailed) as failure:
        async with app.running():
            pytest.fail("the app must not start")

    assert str(failure.value) == "start-up failed: resource 'b' raised ConnectionRefusedError: b refused the connection"
    assert isinstance(failure.value.__cause__, ConnectionRefusedError)
    assert journal == ["start base", "start a", "close a", "close base"]
    with pytest.raises(RuntimeError, match="not started"):
        _ = app.resources


async def test_a_failing_lifespan_stops_the_start_before_any_resource() -> None:
    built: list[str] = []

    @asynccontextmanager
    async def lifespan(app: Runyard) -> AsyncIterator[None]:
        raise FileNotFoundError("defi_facts.json")
        yield

    app = Runyard(Settings(store="memory://"), lifespan=lifespan)

    @app.resource("after")
    async def after() -> str:
        built.append("after")
        return "never"

    with pytest.raises(StartupFailed, match=r"^start-up failed: the lifespan raised FileNotFoundError: defi_facts"):
        async with app.running():
            pass
    assert built == []


async def test_resources_close_when_runyard_itself_fails_to_start(tmp_path: Path) -> None:
    journal: list[str] = []
    (tmp_path / "a-file").write_text("not a directory")
    app = journaled_app(journal)
    app.with_settings(Settings(store=f"sqlite:///{tmp_path}/a-file/runs.db"))

    with pytest.raises(StoreError, match="cannot open SQLite database"):
        async with app.running():
            pass
    assert journal == ["start base", "start a", "start b", "close b", "close a", "close base"]


async def test_every_run_reads_the_same_read_only_resources() -> None:
    journal: list[str] = []
    app = journaled_app(journal)

    @app.pipeline("use")
    async def use(ctx: RunContext, input: Any) -> dict[str, Any]:
        assert current_run().resources is ctx.resources  # a tool deep in the stack reaches them too
        with pytest.raises(TypeError):
            ctx.resources["a"] = "replaced"  # type: ignore[index]
        return {"a": id(ctx.resources["a"]), "base": id(ctx.resources["base"])}

    async with app.running() as rt:
        runs = [await rt.create_run(f"user-{n}", "use", {}) for n in range(4)]
        outputs = [(await rt.wait(run, 20)) for run in runs]
        expected = {"a": id(app.resources["a"]), "base": id(app.resources["base"])}
    assert [done.output if done else None for done in outputs] == [expected] * 4


async def test_resources_of_a_type_give_the_one_instance_typed_or_say_why_not() -> None:
    class Embedder:
        pass

    embedder = Embedder()
    resources = Resources({"embedder": embedder, "http": Client("http", []), "db": Client("db", [])})

    assert resources.of(Embedder) is embedder
    with pytest.raises(LookupError, match="found several \\(http, db\\): ask by name"):
        resources.of(Client)
    with pytest.raises(LookupError, match="one resource of type int expected, found none"):
        resources.of(int)
    with pytest.raises(KeyError, match="no resource named 'llm' \\(there are: embedder, http, db\\)"):
        resources["llm"]


async def test_a_resource_may_use_the_resources_built_before_it_and_a_plain_async_function_builds_one() -> None:
    app = Runyard(Settings(store="memory://"))

    @app.resource("dataset")
    async def dataset() -> tuple[str, ...]:
        return ("fact one", "fact two")

    @app.resource("index")
    async def index(built: Resources) -> Mapping[str, int]:
        return {fact: n for n, fact in enumerate(built["dataset"])}

    async with app.running():
        assert app.resources["index"] == {"fact one": 0, "fact two": 1}


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.parametrize("role", ["api", "worker"])
async def test_every_role_builds_the_resources(role: Literal["api", "worker"], postgres_url: str) -> None:
    """An api process serves the app's own routes, which may need them; a worker runs pipelines."""
    require_redis()
    journal: list[str] = []
    app = journaled_app(journal)
    app.with_settings(Settings(role=role, store=postgres_url, broker=redis_url(f"resources-{role}-{uuid.uuid4().hex}")))
    async with app.running():
        assert set(app.resources) == {"base", "a", "b"}
    assert journal == ["start base", "start a", "start b", "close b", "close a", "close base"]


async def test_app_resources_are_reachable_only_while_the_app_runs() -> None:
    app = journaled_app([])
    with pytest.raises(RuntimeError, match="not started"):
        _ = app.resources
    async with app.running():
        assert set(app.resources) == {"base", "a", "b"}
    with pytest.raises(RuntimeError, match="not started"):
        _ = app.resources


def test_a_resource_is_declared_once_as_an_async_function() -> None:
    app = Runyard(Settings(store="memory://"))

    @app.resource("db")
    async def db() -> str:
        return "db"

    with pytest.raises(ValueError, match="resource 'db' is already registered"):
        app.resource("db")
    with pytest.raises(TypeError, match="must be an async generator function or an async function"):
        app.resource("sync")(lambda: "sync")  # type: ignore[type-var]  # mypy says so too
    with pytest.raises(TypeError, match="takes no argument or the resources built before it"):

        @app.resource("two")
        async def two(a: Resources, b: Resources) -> None: ...


async def test_a_resource_cannot_be_declared_while_the_app_runs() -> None:
    app = Runyard(Settings(store="memory://"))
    async with app.running():
        with pytest.raises(RuntimeError, match="resources are declared before the app starts"):
            app.resource("late")


async def test_a_resource_that_fails_to_close_is_logged_and_the_others_still_close(
    caplog: pytest.LogCaptureFixture,
) -> None:
    journal: list[str] = []
    app = journaled_app(journal)

    @app.resource("flaky")
    async def flaky() -> AsyncIterator[None]:
        yield
        raise OSError("socket already gone")

    async with app.running():
        pass

    assert journal[-3:] == ["close b", "close a", "close base"]
    [record] = [r for r in caplog.records if r.name == "runyard.resources"]
    assert record.getMessage() == "shutdown: resource 'flaky' failed to close"
    assert record.exc_info is not None and isinstance(record.exc_info[1], OSError)


async def test_a_resource_named_like_one_the_lifespan_yields_stops_the_start() -> None:
    journal: list[str] = []
    app = journaled_app(journal)

    @app.resource("base")
    async def base() -> str:
        return "again"

    with pytest.raises(StartupFailed, match="resource 'base' is also yielded by the lifespan"):
        async with app.running():
            pass
    assert journal[-3:] == ["close b", "close a", "close base"]


# -- a real server process ----------------------------------------------------------


def resources_app(tmp_path: Path, **env: str) -> ServerProcess:
    """``runyard serve tests.resources_app:app``, its resource journal and output in ``tmp_path``."""
    settings = {"RUNYARD_STORE": f"sqlite:///{tmp_path}/r.db", "RUNYARD_LOG_FORMAT": "json"}
    settings["RESOURCES_JOURNAL"] = str(tmp_path / "journal.txt")
    return ServerProcess({**settings, **env}, app="tests.resources_app:app", output=tmp_path / "server.log")


@pytest.mark.server
@pytest.mark.slow
def test_a_server_process_builds_its_resource_once_and_closes_it_on_sigterm(tmp_path: Path) -> None:
    server = resources_app(tmp_path).start()
    try:
        runs = [create(server.url, "use", {}) for _ in range(12)]
        outputs = [wait_until(server.url, run_id, {"succeeded"})["output"] for run_id in runs]
    finally:
        server.stop()  # SIGTERM: drain, then close

    assert len({(output["pid"], output["resource"]) for output in outputs}) == 1  # one process, one instance
    pid = outputs[0]["pid"]
    journal = (tmp_path / "journal.txt").read_text().splitlines()
    assert journal == [f"{pid} built counter", f"{pid} closed counter"]


@pytest.mark.server
@pytest.mark.slow
def test_a_server_whose_start_up_fails_exits_with_the_message_after_closing_what_it_opened(tmp_path: Path) -> None:
    server = resources_app(tmp_path, RESOURCES_FAIL="1")
    with pytest.raises(RuntimeError, match="server exited with 3"):  # uvicorn's start-up failure
        server.start()

    lines = [json.loads(line) for line in (tmp_path / "server.log").read_text().splitlines()]
    errors = [(line["logger"], line["message"]) for line in lines if line["level"] == "error"]
    assert errors[0] == (
        "runyard.resources",
        "start-up failed: resource 'vector_db' raised ConnectionRefusedError:"
        " vector database at 127.0.0.1:1 refused the connection",
    )
    assert server.proc is not None
    pid = server.proc.pid
    assert (tmp_path / "journal.txt").read_text().splitlines() == [f"{pid} built counter", f"{pid} closed counter"]
