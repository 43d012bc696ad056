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
    ├── APIError       the server answered with the contract's error envelope
    └── StreamLost     a stream could not be resumed within the ``Reconnect`` policy
"""

from runyard.client.api import DEFAULT_URL as DEFAULT_URL
from runyard.client.api import FINISHED as FINISHED
from runyard.client.api import APIError, StreamLost, api_error
from runyard.client.api import Event as Event
from runyard.client.asynchronous import AsyncClient
from runyard.client.resume import Reconnect
from runyard.client.synchronous import Client

__all__ = [
    "APIError",
    "AsyncClient",
    "Client",
    "Reconnect",
    "StreamLost",
    "api_error",
]
