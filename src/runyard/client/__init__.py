"""The Python client: runs, sessions, and event streams that resume after drops.

    async with AsyncClient("http://127.0.0.1:8000", client_id="alice") as client:
        run = await client.create("research", {"topic": "tides"})
        async for event in client.stream(run["run_id"]):
            print(event["seq"], event["type"], event["data"])
            if event["type"] == "input.requested":  # the run asks (ctx.ask) and waits
                await client.answer(run["run_id"], "yes", ask_id=event["data"]["ask_id"])

``Client`` is the same API, blocking. Both build requests and read answers with
the same helpers and resume streams with the same ``_Cursor``; only the I/O differs.

    RunyardError
    ├── APIError          the server answered with the contract's error envelope
    │                     (``status``, ``code``, ``message``, ``details``)
    ├── ConnectionFailed  no answer at all: nothing listens at the URL, a timeout, a
    │                     dropped connection (also an ``httpx.TransportError``)
    └── StreamLost        a stream could not be resumed within the ``Reconnect`` policy

A stream whose first connection is refused raises ``ConnectionFailed`` at once
(a wrong URL, a server not started); one that was connected and dropped
reconnects with the ``Reconnect`` policy. Results are the API's JSON, typed
(``runyard.client.types``: ``TypedDict``s, so still plain dicts).
"""

from runyard.client.api import DEFAULT_URL as DEFAULT_URL
from runyard.client.api import FINISHED as FINISHED
from runyard.client.api import APIError, ConnectionFailed, StreamLost, api_error
from runyard.client.api import Event as Event
from runyard.client.asynchronous import AsyncClient
from runyard.client.resume import Reconnect
from runyard.client.synchronous import Client
from runyard.client.types import Cron, EventPage, Item, RunPage, RunSnapshot, SessionInfo, SessionPage

__all__ = [
    "APIError",
    "AsyncClient",
    "Client",
    "ConnectionFailed",
    "Cron",
    "EventPage",
    "Item",
    "Reconnect",
    "RunPage",
    "RunSnapshot",
    "SessionInfo",
    "SessionPage",
    "StreamLost",
    "api_error",
]
