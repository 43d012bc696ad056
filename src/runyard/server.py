"""Serving an app over HTTP with uvicorn."""

from __future__ import annotations

import uvicorn

from runyard.app import Runyard
from runyard.observability.logs import configure_logging


def serve(app: Runyard) -> None:
    """Serve ``app`` on its settings' host and port until SIGINT/SIGTERM."""
    settings = app.settings
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
    uvicorn.Server(config).run()
