"""The app ``scaleout.py`` serves: the demo app's pipelines, unchanged, plus ``busy_ticker``.

The demo's ``ticker`` costs its worker almost nothing per event (one dict and one
``emit``), so a worker process is never the bottleneck of a ticker load: the
store's commits, the API's SSE writes and the load client are. ``busy_ticker``
is the ticker with a CPU cost per tick, ``work_us`` microseconds of the worker's
own CPU time (spent before each ``emit``, as a pipeline parsing or templating
would), which makes a load worker-bound on purpose. Served as
``runyard serve _scaleapp:app`` from this folder.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import Field

from runyard import RunContext, Runyard
from runyard.demo import register_demo_pipelines
from runyard.demo.ticker import TickerInput

MAX_WORK_US = 100_000


class BusyTickerInput(TickerInput):
    work_us: int = Field(0, ge=0, le=MAX_WORK_US, description="CPU microseconds spent before each tick")


def burn(seconds: float) -> None:
    """Spend ``seconds`` of this thread's CPU time (not wall time: a descheduled
    worker still does the same work per event)."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


async def busy_ticker(ctx: RunContext, input: BusyTickerInput) -> dict[str, Any]:
    """``ticker`` (no ``fail_at``, no pacing) with ``work_us`` of CPU before each tick."""
    marker, pad, work = input.marker, "x" * input.payload_bytes, input.work_us / 1e6
    emit = ctx.emit
    for i in range(input.count):
        burn(work)
        await emit("tick", {"marker": marker, "i": i, "t": time.time(), "pad": pad})
    return {"marker": marker, "count": input.count}


app = register_demo_pipelines(Runyard(title="runyard scale-out bench"))
app.pipeline("busy_ticker", input_model=BusyTickerInput)(busy_ticker)
