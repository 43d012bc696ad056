"""A message that only says "look again", sent without piling up copies."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable


class Folded:
    """Sends with ``send`` each time ``ask`` is called, except that the asks made
    while one is on its way are folded into one more, sent after it: a burst of
    asks costs two messages, and the last ask is never lost."""

    def __init__(self, send: Callable[[], Awaitable[None]], name: str) -> None:
        self._send = send
        self._name = name
        self._pending = False  # asked for and not yet on its way
        self._sender: asyncio.Task[None] | None = None  # sends them, one at a time
        self._closed = False

    def ask(self) -> None:
        if self._closed:
            return
        self._pending = True
        if self._sender is None:
            self._sender = asyncio.create_task(self._send_pending(), name=self._name)

    async def _send_pending(self) -> None:
        try:
            while self._pending and not self._closed:
                self._pending = False
                await self._send()
        finally:
            self._sender = None

    async def close(self, *, finish_sending: bool = False) -> None:
        """No more sends; the one on its way is cancelled, or with ``finish_sending``
        awaited (the asks folded behind it are not sent)."""
        self._closed = True
        sender, self._sender = self._sender, None
        if sender is not None:
            if not finish_sending:
                sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
