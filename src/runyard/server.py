"""Serving an app over HTTP with uvicorn."""

from __future__ import annotations

import asyncio
import gc
from types import FrameType

import uvicorn

from runyard.app import Runyard
from runyard.observability.logs import configure_logging


def serve(app: Runyard) -> None:
    """Serve ``app`` on its settings' host and port until SIGINT/SIGTERM."""
    settings = app.settings
    if settings.store.startswith("sqlite:"):
        from runyard.store.sqlite import refuse_if_in_use

        refuse_if_in_use(settings.store)  # one clear line, not a start-up traceback
    configure_logging(settings)
    config = uvicorn.Config(
        app.http(),
        host=settings.host,
        port=settings.port,
        log_config=None,  # runyard configures logging itself
        access_log=False,
        timeout_graceful_shutdown=int(settings.drain_s) + 5,
        lifespan="on",
    )
    tune_garbage_collector()
    _Server(config, app).run()


class _Server(uvicorn.Server):
    """uvicorn's server, ending the app's streams as soon as a stop is asked for
    (uvicorn would otherwise wait for them as for any open request)."""

    def __init__(self, config: uvicorn.Config, app: Runyard) -> None:
        super().__init__(config)
        self._app = app

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        runtime = self._app._runtime
        if runtime is not None:
            asyncio.get_running_loop().call_soon_threadsafe(runtime.hub.close)
        super().handle_exit(sig, frame)


# Collect the young generation after 10,000 allocations instead of 700. A
# streaming server keeps ~300 tracked objects per open stream and run alive
# (coroutines, tasks, scopes of the ASGI stack), and the default thresholds
# promoted them into full collections that paused the loop for up to 230 ms.
# Measured with 1,000 streams x 10 events/s: GC time 5 s -> 0.5 s per 30 s,
# server CPU -25 %, p99 latency 271 -> 119 ms.
GC_THRESHOLDS = (10_000, 20, 20)


def tune_garbage_collector() -> None:
    """Freeze what start-up built (it lives as long as the process) and collect
    young objects less often; for the serving process only."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
