"""The contract of a limit's request and token windows (``rpm``, ``tpm``): a
call takes one request and ``tokens`` tokens, waiting until both windows of the
last minute have room.

Backends: ``local.py`` (``MemoryWindows``, moving windows in this process)
and ``redis_windows.py`` (``RedisWindows``, shared by every process of a
deployment).
"""

from __future__ import annotations

from typing import Protocol

WINDOW_S = 60  # both windows are a minute long


class Windows(Protocol):
    """A limit's moving windows of requests and tokens."""

    async def take(self, tokens: int) -> None:
        """Wait until one request and ``tokens`` tokens fit, then take them;
        ``ValueError`` if ``tokens`` can never fit."""
        ...


def check_fits(name: str, tokens: int, tpm: int | None) -> None:
    """``ValueError`` when a call of ``tokens`` could never fit in the window of ``tpm``."""
    if tpm is not None and tokens > tpm:
        raise ValueError(f"{tokens} tokens can never fit in {name}'s tpm of {tpm}")
