"""Serving an app over HTTP with uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import gc
import logging
import resource
import socket
import time
from collections.abc import Callable
from types import FrameType

import uvicorn

from runyard.app import Runyard
from runyard.errors import ConfigurationError
from runyard.http.connections import protected_protocol
from runyard.observability.logs import configure_logging

log = logging.getLogger("runyard.server")

# File descriptors kept for everything but client connections: the store's and
# broker's connections, SQLite's files, the listening socket, logs.
RESERVED_FDS = 256


def serve(app: Runyard) -> None:
    """Serve ``app`` on its settings' host and port until SIGINT/SIGTERM."""
    settings = app.settings
    refuse_if_port_taken(settings.host, settings.port)
    if settings.store.startswith("sqlite:"):
        from runyard.store.sqlite import refuse_if_in_use

        refuse_if_in_use(settings.store)  # one clear line, not a start-up traceback
    configure_logging(settings)
    config = uvicorn.Config(
        app.http(),
        host=settings.host,
        port=settings.port,
        # uvicorn's own timers and cap do not cover a request that never arrives
        # whole, and refuse in plain text: runyard's protocol does (see its module)
        http=protected_protocol(
            settings.read_timeout_s,
            connection_cap(settings.max_connections, chosen="max_connections" in settings.model_fields_set),
        ),
        timeout_keep_alive=settings.keep_alive_s,
        log_config=None,  # runyard configures logging itself
        access_log=False,
        timeout_graceful_shutdown=int(settings.drain_s) + 5,
        lifespan="on",
    )
    tune_garbage_collector()
    _Server(config, app).run()


def refuse_if_port_taken(host: str, port: int) -> None:
    """One clear line when the address is taken (a demo already on 8000, say), where
    uvicorn would log the bind error after the app had started, and exit. A probe:
    what binds between it and uvicorn's own bind still gets uvicorn's message."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigurationError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT is no conflict
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigurationError(
                    f"port {port} on {host} is in use (another runyard demo or serve?):"
                    " choose another with --port P (or RUNYARD_PORT)"
                ) from None
            raise ConfigurationError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def connection_cap(wanted: int, *, chosen: bool = True) -> int:
    """``wanted``, or fewer if the process may not open that many files: past
    RLIMIT_NOFILE, accept() fails and the client gets no answer at all, where a
    cap it reaches first answers 503. The soft limit is raised to the hard one.
    Lowering a cap the operator ``chosen`` is a warning; lowering the default is
    only worth an info line (it happened at every start of the demo here)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = wanted + RESERVED_FDS
    if soft < needed and (hard == resource.RLIM_INFINITY or soft < hard):
        soft = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    if soft >= needed:
        return wanted
    cap = max(1, soft - RESERVED_FDS)
    log.log(
        logging.WARNING if chosen else logging.INFO,
        "RUNYARD_MAX_CONNECTIONS=%d but this process may open only %d files (ulimit -n): serving at most %d"
        " connections; raise the limit to serve more",
        wanted,
        soft,
        cap,
    )
    return cap


class _Server(uvicorn.Server):
    """uvicorn's server, ending the app's streams as soon as a stop is asked for
    (uvicorn would otherwise wait for them as for any open request)."""

    def __init__(self, config: uvicorn.Config, app: Runyard) -> None:
        super().__init__(config)
        self._app = app
        self._trimmer = HeapTrimmer(malloc_trim())

    async def on_tick(self, counter: int) -> bool:
        if counter % 10 == 0:  # once a second, like uvicorn's own housekeeping
            self._trimmer.observe(len(self.server_state.connections))
        return await super().on_tick(counter)

    def run(self, sockets: list[socket.socket] | None = None) -> None:
        """``asyncio.run(self.serve())``, except that tasks left at the end are
        waited for ``cancel_grace_s`` at most (asyncio.run waits for ever): a
        pipeline that swallows its cancellation would otherwise keep the process
        alive after SIGTERM, its run long handed back."""
        factory = _loop_factory(self.config)
        loop = factory() if factory is not None else asyncio.new_event_loop()
        try:
            loop.run_until_complete(self.serve(sockets=sockets))
            loop.run_until_complete(_cancel_leftover_tasks(self._app.settings.cancel_grace_s))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        with contextlib.suppress(RuntimeError):  # not started yet: no stream to end
            asyncio.get_running_loop().call_soon_threadsafe(self._app.runtime.hub.close)
        super().handle_exit(sig, frame)


def _loop_factory(config: uvicorn.Config) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvicorn's loop, one that accepts connections in batches if it is uvloop's."""
    default = config.get_loop_factory()
    try:
        from runyard.http.listener import loop_factory
    except ImportError:  # no uvloop (Windows): asyncio's loop accepts in batches already
        return default
    return loop_factory(default)


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


# Collect the young generation after 50,000 allocations instead of 700. A
# streaming server keeps ~300 tracked objects per open stream and run alive
# (coroutines, tasks, scopes of the ASGI stack), and the default thresholds
# promoted them into full collections that paused the loop for up to 230 ms.
# Measured with 1,000 streams x 10 events/s: GC time 5 s -> 0.5 s per 30 s,
# server CPU -25 %, p99 latency 271 -> 119 ms (at 10,000). At 50,000, the
# 0.8 s in which those 1,000 streams open hold 4 collections (33 ms) instead of
# 53 (111 ms): first event p50 329 -> 279 and 266 -> 242 ms, the same peak RSS
# (bench/README.md, "A seventh round").
GC_THRESHOLDS = (50_000, 20, 20)


def tune_garbage_collector() -> None:
    """Freeze what start-up built (it lives as long as the process) and collect
    young objects less often; for the serving process only."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


class HeapTrimmer:
    """Gives the C heap's free pages back to the system once a crowd of
    connections has left.

    glibc keeps what Python frees in its arenas (the buffers of events, frames
    and chunks are malloc'd, not pymalloc'd): after 2,000 readers of a 16 MiB
    run left, RSS stayed at ~550 MiB against a 90 MiB baseline, for good.
    ``malloc_trim(0)`` releases the free pages of every arena. It is called
    only when the open connections have fallen to half their peak, by at least
    ``CROWD``, so a steady server never pays for it.
    """

    CROWD = 200

    def __init__(self, trim: Callable[[int], int] | None) -> None:
        self._trim = trim
        self._peak = 0

    def observe(self, connections: int) -> None:
        self._peak = max(self._peak, connections)
        if self._trim is not None and self._peak - connections >= max(self.CROWD, connections):
            started = time.perf_counter()
            self._trim(0)
            log.info(
                "open connections fell from %d to %d: freed heap given back in %.1f ms",
                self._peak,
                connections,
                (time.perf_counter() - started) * 1000,
            )
            self._peak = connections


def malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library has none (macOS, musl)."""
    try:
        trim: Callable[[int], int] = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    return trim
