"""Following a session: every event of every run of it, history then live, by cursor.

A session's order is the store's (``SessionStreams``: a cursor that grows in
commit order), so a follower reads every event from the store: the hub's
``SessionChannel`` only wakes it when a run of the session has new events, in
this process or (through the broker) another. It joins the channel before its
first read, so nothing falls between history and live; the cursor alone says
where it is, so a resumed stream neither skips nor repeats. Pages are sized and
take turns as a run stream's (``events/stream.py``): memory per follower is
bounded whatever the history's length.

A read that fills less than its page has caught up: the follower waits for the
next wake-up without reading again, unless a run ended in it. The stream ends when the session is
deleted or expires (``is_open`` says so): asked whenever a read finds nothing
new, i.e. after a wake-up that brought nothing (a local delete wakes the
channel) and after every heartbeat of silence, so a session deleted by another
process while idle ends its streams here within one heartbeat. A deletion
cancels the session's runs in its own commit, so once ``is_open`` says no, the
follower reads until nothing is new and only then ends: every run's ``end``
is sent, however the deletion fell between the last read and the question.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable

from runyard.events.hub import Hub, Listener
from runyard.events.sse import Frame, session_frame
from runyard.events.stream import FIRST_PAGE, PAGE_BYTES, _page_bytes, _page_size
from runyard.models import session_channel
from runyard.store.session_streams import SessionStreams


async def follow_session(
    store: SessionStreams,
    hub: Hub,
    owner: str,
    session_id: str,
    after: int,
    heartbeat_s: float,
    is_open: Callable[[], Awaitable[bool]],
) -> AsyncGenerator[list[Frame], None]:
    """Yield batches of the session's events with a cursor above ``after`` as SSE
    frames (``id:`` the cursor), in order, each once, until the session is
    deleted or expires or the hub closes; an empty batch after ``heartbeat_s`` of silence."""
    channel = await hub.join(session_channel(owner, session_id))
    listener = Listener(channel, heartbeat_s)
    try:
        cursor = after
        page = max(1, FIRST_PAGE * _page_bytes(hub) // PAGE_BYTES)
        catching_up = False
        silent = False  # the last wait ended without a wake-up
        closing = False  # the session is deleted or expired: what is left is read, then the stream ends
        while True:
            version = channel.version  # taken before reading, so no wake-up is missed
            async with hub.store_reads if catching_up else contextlib.nullcontext():
                read = await store.read_session_events(owner, session_id, cursor, page)
            catching_up = len(read) >= page
            if read:
                batch = [session_frame(cursor, event) for cursor, event in read]
                cursor = read[-1].cursor
                page = _page_size(batch, _page_bytes(hub))
                yield batch
                listener.spoke()
                if catching_up or closing or any(is_end for _, is_end, _ in batch):
                    # more history; or a run ended, perhaps because the session was
                    # deleted (its wake-up may have come with the events): read again,
                    # and if nothing is new, ask whether the session is still open
                    continue
            else:
                if closing:
                    return  # everything committed with the deletion has been sent
                if silent:
                    yield []  # the heartbeat
                    listener.spoke()
                if not await is_open():
                    # The deletion cancelled the session's runs in its own commit,
                    # which may have come between the read above and this answer
                    # (seen in CI: a stream ended without its run's end): read on
                    # until nothing is new, then end.
                    closing = True
                    continue
            if channel.closed:
                return
            silent = not await listener.wait(version)
    finally:
        listener.close()
        hub.leave(channel)
