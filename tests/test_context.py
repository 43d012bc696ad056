"""``RunContext``'s view of its session: ``ctx.session.id`` at once, and
``await ctx.session.metadata()`` read from the store only when asked."""

from __future__ import annotations

from typing import Any

import pytest

from runyard import RunContext, Runyard, Settings
from runyard.runtime import Runtime


async def finished(rt: Runtime, run_id: str) -> Any:
    done = await rt.wait(await rt.get_run("alice", run_id), 20)
    assert done is not None, f"run {run_id} did not finish"
    return done


async def test_a_run_reads_its_sessions_id_and_metadata_as_stored(store_url: str) -> None:
    app = Runyard(Settings(store=store_url))

    @app.pipeline("whoami")
    async def whoami(ctx: RunContext, input: Any) -> dict[str, Any]:
        metadata = await ctx.session.metadata()
        with pytest.raises(TypeError):
            metadata["plan"] = "free"  # type: ignore[index]
        return {"id": ctx.session.id, "metadata": dict(metadata)}

    async with app.running() as rt:
        session = await rt.create_session("alice", {"plan": "pro", "locale": {"lang": "fr"}})
        in_session = await rt.create_run("alice", "whoami", {}, session_id=session.session_id)
        fresh = await rt.create_run("alice", "whoami", {})
        done = await finished(rt, in_session.run_id), await finished(rt, fresh.run_id)

    assert done[0].output == {"id": session.session_id, "metadata": {"plan": "pro", "locale": {"lang": "fr"}}}
    assert done[1].output == {"id": fresh.session_id, "metadata": {}}


async def test_session_metadata_costs_one_store_read_and_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    app = Runyard(Settings(store="memory://"))
    reads: list[str] = []

    @app.pipeline("ignores")
    async def ignores(ctx: RunContext, input: Any) -> str:
        return ctx.session.id

    @app.pipeline("reads_twice")
    async def reads_twice(ctx: RunContext, input: Any) -> bool:
        return await ctx.session.metadata() is await ctx.session.metadata()

    async with app.running() as rt:
        get_session = rt.store.get_session

        async def counted(session_id: str) -> Any:
            reads.append(session_id)
            return await get_session(session_id)

        monkeypatch.setattr(rt.store, "get_session", counted)
        ignoring = await finished(rt, (await rt.create_run("alice", "ignores", {})).run_id)
        assert reads == []
        reading = await finished(rt, (await rt.create_run("alice", "reads_twice", {})).run_id)
        assert reading.output is True and reads == [reading.session_id]
        assert ignoring.output == ignoring.session_id
