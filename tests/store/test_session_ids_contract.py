"""The store's ``SessionDirectory`` (``runyard.store.directory``), on every backend:
sessions under ids the client chose (keyed ``<owner>/<id>``: ``runyard.session_ids``)
and an owner's sessions listed, newest activity first."""

from __future__ import annotations

import asyncio

import pytest

from runyard.errors import SessionNotFound
from runyard.models import Message, RunStatus, Session
from runyard.session_ids import session_key
from runyard.store import Store
from runyard.store.directory import SessionQuery
from tests.store.test_contract import ENQUEUE, T0, claimed_ids, created, finish, run

TTL = 100.0


def chosen(owner: str, session_id: str, *, at: float = T0, **metadata: object) -> Session:
    key = session_key(owner, session_id)
    assert key is not None
    return Session(key, owner, created_at=at, last_activity=at, metadata=dict(metadata))


async def listed(store: Store, owner: str = "alice", **query: object) -> list[str]:
    return [found.session.session_id for found in await store.list_sessions(SessionQuery(owner, **query))]  # type: ignore[arg-type]


# -- claiming an id --------------------------------------------------------------------------


async def test_a_claim_inserts_the_session_once(store: Store) -> None:
    first = chosen("alice", "t1", plan="pro")
    assert await store.claim_session(first, expired_before=T0 - TTL) is None
    assert await store.get_session(first.session_id) == first
    again = chosen("alice", "t1", at=T0 + 1, plan="free")
    assert await store.claim_session(again, expired_before=T0 - TTL) == first  # the existing one, unchanged
    assert await store.get_session(first.session_id) == first


async def test_two_owners_claiming_one_id_get_two_sessions(store: Store) -> None:
    alices, bobs = chosen("alice", "t1"), chosen("bob", "t1")
    assert alices.session_id != bobs.session_id
    assert await store.claim_session(alices, T0 - TTL) is None
    assert await store.claim_session(bobs, T0 - TTL) is None
    assert (await store.get_session(bobs.session_id)) == bobs


async def test_racing_claims_of_one_id_insert_it_once(store: Store) -> None:
    claims = [chosen("alice", "race", plan=str(i)) for i in range(8)]
    results = await asyncio.gather(*(store.claim_session(c, T0 - TTL) for c in claims))
    winners = [c for c, result in zip(claims, results, strict=True) if result is None]
    assert len(winners) == 1
    assert all(result == winners[0] for result in results if result is not None)


async def test_a_deleted_session_is_replaced_with_no_memory(store: Store) -> None:
    old = chosen("alice", "t1", v=1)
    await store.claim_session(old, T0 - TTL)
    await store.append_message(old.session_id, Message("user", "old", T0), keep=10)
    await store.delete_session(old.session_id, T0 + 1)
    new = chosen("alice", "t1", at=T0 + 2, v=2)
    assert await store.claim_session(new, T0 - TTL) is None
    assert await store.get_session(new.session_id) == new
    assert await store.history(new.session_id) == []


async def test_an_expired_session_is_replaced_but_a_busy_one_is_not(store: Store) -> None:
    idle, busy = chosen("alice", "idle"), chosen("alice", "busy")
    for s in (idle, busy):
        await store.claim_session(s, T0 - TTL)
        await store.append_message(s.session_id, Message("user", "old", T0), keep=10)
    await created(store, run(busy.session_id))
    later = T0 + 2 * TTL
    fresh_idle, fresh_busy = chosen("alice", "idle", at=later), chosen("alice", "busy", at=later)
    assert await store.claim_session(fresh_idle, expired_before=later - TTL) is None
    assert await store.history(idle.session_id) == []
    assert await store.claim_session(fresh_busy, expired_before=later - TTL) == busy  # its run holds it
    assert [m.content for m in await store.history(busy.session_id)] == ["old"]


async def test_sessions_of_one_id_under_two_owners_run_side_by_side(store: Store) -> None:
    alices, bobs = chosen("alice", "t1"), chosen("bob", "t1")
    for s in (alices, bobs):
        await store.claim_session(s, T0 - TTL)
    a1, a2 = await created(store, run(alices.session_id), run(alices.session_id))
    (b1,) = await created(store, run(bobs.session_id, owner="bob"))
    # one at a time within each session, never across the two
    assert sorted(await claimed_ids(store, 10)) == sorted([a1.run_id, b1.run_id])
    await finish(store, a1.run_id)
    assert await claimed_ids(store, 10) == [a2.run_id]
    cancelled = await store.delete_session(alices.session_id, T0 + 1)
    assert [c.run_id for c in cancelled] == [a2.run_id]
    assert [r.run_id for r in await store.unfinished_runs(bobs.session_id)] == [b1.run_id]


async def test_entering_a_chosen_session_is_for_its_owner_only(store: Store) -> None:
    alices = chosen("alice", "t1")
    await store.claim_session(alices, T0 - TTL)
    entered = await store.enter_session(run(alices.session_id), ENQUEUE)
    assert entered.run.session_id == alices.session_id
    assert entered.run.status is RunStatus.QUEUED
    with pytest.raises(SessionNotFound):  # the key is alice's: bob's run is refused as for a missing one
        await store.enter_session(run(alices.session_id, owner="bob"), ENQUEUE)


# -- listing ---------------------------------------------------------------------------------


async def test_listing_shows_an_owners_live_sessions_newest_activity_first(store: Store) -> None:
    a, b, c = (chosen("alice", name, at=T0 + i) for i, name in enumerate("abc"))
    for s in (a, b, c, chosen("bob", "a", at=T0 + 9)):
        await store.claim_session(s, T0 - TTL)
    await store.touch_session(a.session_id, T0 + 5)
    assert await listed(store) == [a.session_id, c.session_id, b.session_id]
    await store.delete_session(c.session_id, T0 + 6)
    assert await listed(store) == [a.session_id, b.session_id]
    assert await listed(store, "bob") == ["bob/a"]
    assert await listed(store, "carol") == []


async def test_listing_pages_after_a_sessions_activity_and_key(store: Store) -> None:
    same_time = [chosen("alice", f"s{i}") for i in range(5)]  # ties are broken by key
    for s in same_time:
        await store.claim_session(s, T0 - TTL)
    keys = sorted((s.session_id for s in same_time), reverse=True)
    assert await listed(store, limit=2) == keys[:2]
    assert await listed(store, limit=2, before=(T0, keys[1])) == keys[2:4]
    assert await listed(store, limit=2, before=(T0, keys[3])) == keys[4:]
    assert await listed(store, limit=0) == []


async def test_listing_says_which_sessions_have_an_unfinished_run(store: Store) -> None:
    busy, idle = chosen("alice", "busy"), chosen("alice", "idle")
    for s in (busy, idle):
        await store.claim_session(s, T0 - TTL)
    await created(store, run(busy.session_id), run(idle.session_id, status=RunStatus.SUCCEEDED))
    found = {f.session.session_id: f.busy for f in await store.list_sessions(SessionQuery("alice"))}
    assert found == {busy.session_id: True, idle.session_id: False}


async def test_listing_filters_on_metadata_strings_and_json_text(store: Store) -> None:
    fr = chosen("alice", "fr", lang="fr", tier=1, beta=False)
    de = chosen("alice", "de", at=T0 + 1, lang="de", tier=2, beta=True, extra=None)
    fr2 = chosen("alice", "fr2", at=T0 + 2, lang="fr", tier=2, ratio=0.5)
    for s in (fr, de, fr2):
        await store.claim_session(s, T0 - TTL)

    async def having(*pairs: tuple[str, str]) -> list[str]:
        return await listed(store, metadata=pairs)

    assert await having(("lang", "fr")) == [fr2.session_id, fr.session_id]
    assert await having(("lang", "fr"), ("tier", "2")) == [fr2.session_id]
    assert await having(("beta", "true")) == [de.session_id]
    assert await having(("beta", "false")) == [fr.session_id]
    assert await having(("extra", "null")) == [de.session_id]
    assert await having(("ratio", "0.5")) == [fr2.session_id]
    assert await having(("tier", "1")) == [fr.session_id]
    assert await having(("lang", '"fr"')) == []  # a string is compared as itself
    assert await having(("missing", "fr")) == []
