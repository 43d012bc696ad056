"""A session stream (``runyard.events.session_stream``) ends when its session is
deleted, but only after every event committed with the deletion: the run's
``cancelled`` status and ``end`` come first, however the deletion falls between
the stream's last read and its question whether the session is still open."""

from __future__ import annotations

import time

from runyard.events.hub import Hub
from runyard.events.session_stream import follow_session
from runyard.models import EventDraft, Run, RunStatus, Session
from runyard.store._numbering import cancel_group
from runyard.store.base import AppendGroup
from runyard.store.memory import MemoryStore

HEARTBEAT_S = 0.05


async def test_a_deletion_committed_after_the_last_read_still_sends_every_run_its_end() -> None:
    store = MemoryStore()
    await store.open()
    at = time.time()
    await store.create_run(
        Run("run_a", "ses_a", "alice", "ticker", RunStatus.RUNNING, {}, at), Session("ses_a", "alice", at, at)
    )
    await store.append([AppendGroup("run_a", [EventDraft("run_a", "tick", b"{}", at)])])

    async def deleted_just_now() -> bool:
        # the deletion commits after the stream's read found nothing new, and
        # before its question: cancelled and end are in the store, unseen
        await store.append([cancel_group("run_a", time.time())])  # what deleting the session appends
        return False

    stream = follow_session(store, Hub(), "alice", "ses_a", 0, HEARTBEAT_S, deleted_just_now)
    types = [frame.split(b"\n")[1] async for batch in stream for _, _, frame in batch]
    assert types == [b"event: tick", b"event: status", b"event: end"]
