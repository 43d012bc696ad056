"""runyard: serve AI-agent pipelines to many users at once.

Every run is isolated, every event durable and resumable over SSE, and the same
code runs as one process on SQLite or as a fleet on PostgreSQL and Redis.
"""

from runyard.app import Runyard
from runyard.client import APIError, AsyncClient, Client, ConnectionFailed, StreamLost
from runyard.context import Memory, RunContext, RunSession, current_run
from runyard.errors import RunyardError, StartupFailed
from runyard.governance import Breaker, BreakerOpen, PermitLost
from runyard.models import Event, Run, RunStatus, Session
from runyard.pipeline import Pipeline
from runyard.resources import Resources
from runyard.settings import Settings

__all__ = [
    "APIError",
    "AsyncClient",
    "Breaker",
    "BreakerOpen",
    "Client",
    "ConnectionFailed",
    "Event",
    "Memory",
    "PermitLost",
    "Pipeline",
    "Resources",
    "Run",
    "RunContext",
    "RunSession",
    "RunStatus",
    "Runyard",
    "RunyardError",
    "Session",
    "Settings",
    "StartupFailed",
    "StreamLost",
    "current_run",
]
