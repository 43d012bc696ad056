"""Chosen session ids inside the runtime (``runyard.session_ids``): a pipeline sees the
id its owner chose, the store and LangGraph's thread the owner-scoped key, and a
``Run``'s key handed back by its own owner names the same session, nobody else's."""

from __future__ import annotations

from typing import Any

import pytest

from runyard import RunContext, Runyard, Settings
from runyard.errors import SessionNotFound
from runyard.runtime import Runtime


async def finished(rt: Runtime, owner: str, run_id: str) -> Any:
    done = await rt.wait(await rt.get_run(owner, run_id), 20)
    assert done is not None, f"run {run_id} did not finish"
    return done


async def test_two_owners_runs_in_one_chosen_id_see_their_own_session(store_url: str) -> None:
    app = Runyard(Settings(store=store_url))

    @app.pipeline("where")
    async def where(ctx: RunContext, input: Any) -> dict[str, Any]:
        await ctx.memory.append("user", ctx.owner)
        history = [m["content"] for m in await ctx.memory.history()]
        metadata = dict(await ctx.session.metadata())
        return {"id": ctx.session_id, "session": ctx.session.id, "key": ctx.session.key, "history": history, **metadata}

    async with app.running() as rt:
        for owner in ("alice", "bob"):
            await rt.create_session(owner, {"who": owner}, session_id="chat:1")
        runs = {owner: await rt.create_run(owner, "where", {}, session_id="chat:1") for owner in ("alice", "bob")}
        done = {owner: await finished(rt, owner, run.run_id) for owner, run in runs.items()}
        again = await rt.create_run("alice", "where", {}, session_id=runs["alice"].session_id)  # its key, back
        assert (await finished(rt, "alice", again.run_id)).output["history"] == ["alice", "alice"]
        with pytest.raises(SessionNotFound):  # alice's key is nothing to bob
            await rt.create_run("bob", "where", {}, session_id=runs["alice"].session_id)

    for owner in ("alice", "bob"):
        assert done[owner].output == {
            "id": "chat:1",
            "session": "chat:1",
            "key": f"{owner}/chat:1",
            "history": [owner],
            "who": owner,
        }
        assert done[owner].snapshot()["session_id"] == "chat:1"
