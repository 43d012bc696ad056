"""``ticker``: a stream of numbered events, the pipeline benchmarks and tests drive.

It is the hot path of every load test, so it does as little as a pipeline can:
the pad is built once and each tick costs one dict and one ``emit``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from runyard import RunContext

MAX_COUNT = 1_000_000
MAX_PAYLOAD_BYTES = 65_536
MAX_INTERVAL_MS = 60_000


class TickerInput(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    marker: str = Field(max_length=256, description="Echoed in every tick, to tell streams apart")
    count: int = Field(10, ge=0, le=MAX_COUNT, description="How many ticks to emit")
    interval_ms: int = Field(0, ge=0, le=MAX_INTERVAL_MS, description="Pause between two ticks")
    fail_at: int | None = Field(None, ge=0, description="Raise after emitting this many ticks")
    payload_bytes: int = Field(0, ge=0, le=MAX_PAYLOAD_BYTES, description="Size of each tick's `pad`")


class TickerFailure(RuntimeError):
    """The failure ``fail_at`` asks for."""


async def ticker(ctx: RunContext, input: TickerInput) -> dict[str, Any]:
    """Emit `count` `tick` events {marker, i, t, pad}, `interval_ms` apart; with `fail_at` = k,
    emit ticks 0..k-1 (at most `count`) and then fail. Output {marker, count}."""
    marker = input.marker
    pad = "x" * input.payload_bytes
    delay = input.interval_ms / 1000
    stop = input.count if input.fail_at is None else min(input.count, input.fail_at)
    emit = ctx.emit
    for i in range(stop):
        if delay and i:
            await asyncio.sleep(delay)
        await emit("tick", {"marker": marker, "i": i, "t": time.time(), "pad": pad})
    if input.fail_at is not None:
        raise TickerFailure(f"ticker failed at {input.fail_at} as asked")
    return {"marker": marker, "count": input.count}
