"""``runyard serve tests.resources_app:app``: an app whose one resource records
each build and close in the file named by ``RESOURCES_JOURNAL``, for the
process tests of start-up resources. ``RESOURCES_FAIL=1`` makes a second
resource fail to start."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from runyard import RunContext, Runyard

app = Runyard(title="resources")
JOURNAL = Path(os.environ.get("RESOURCES_JOURNAL", os.devnull))


class Counter:
    """A process-wide resource: one instance, however many runs use it."""

    def __init__(self) -> None:
        self.uses = 0


def note(line: str) -> None:
    with JOURNAL.open("a") as journal:
        journal.write(f"{os.getpid()} {line}\n")


@app.resource("counter")
async def counter() -> AsyncIterator[Counter]:
    note("built counter")
    yield Counter()
    note("closed counter")


if os.environ.get("RESOURCES_FAIL"):

    @app.resource("vector_db")
    async def vector_db() -> AsyncIterator[None]:
        raise ConnectionRefusedError("vector database at 127.0.0.1:1 refused the connection")
        yield  # an async generator that never gets this far


@app.pipeline("use")
async def use(ctx: RunContext, input: Any) -> dict[str, Any]:
    shared = ctx.resources.of(Counter)
    shared.uses += 1
    return {"pid": os.getpid(), "resource": id(shared)}
