"""Serving an app over HTTP with uvicorn."""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
from types import FrameType

import uvicorn

from runyard.app import Runyard
from runyard.observability.logs import configure_logging

log = logging.getLogger("runyard.server")


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

    def run(self, sockets: list[socket.socket] | None = None) -> None:
        """``asyncio.run(self.serve())``, except that tasks left at the end are
        waited for ``cancel_grace_s`` at most (asyncio.run waits for ever): a
        pipeline that swallows its cancellation would otherwise keep the process
        alive after SIGTERM, its run long handed back."""
        factory = self.config.get_loop_factory()
        loop = factory() if factory is not None else asyncio.new_event_loop()
        try:
            loop.run_until_complete(self.serve(sockets=sockets))
            loop.run_until_complete(_cancel_leftover_tasks(self._app.settings.cancel_grace_s))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        runtime = self._app._runtime
        if runtime is not None:
            asyncio.get_running_loop().call_soon_threadsafe(runtime.hub.close)
        super().handle_exit(sig, frame)


async def _cancel_leftover_tasks(grace_s: float) -> None:
    tasks = asyncio.all_tasks() - {asyncio.current_task()}
    for task in tasks:
        task.cancel()
    if not tasks:
        return
    _, stuck = await asyncio.wait(tasks, timeout=grace_s)
    if stuck:
        names = ", ".join(sorted(task.get_name() for task in stuck))
        log.error("exiting without %d tasks that ignore their cancellation: %s", len(stuck), names)


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
