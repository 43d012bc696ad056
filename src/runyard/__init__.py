"""runyard: serve AI-agent pipelines to many users at once.

Every run is isolated, every event durable and resumable over SSE, and the same
code runs as one process on SQLite or as a fleet on PostgreSQL and Redis.
"""

from runyard.app import Pipeline, Runyard
from runyard.client import APIError, AsyncClient, Client, StreamLost
from runyard.context import Memory, RunContext, current_run
from runyard.errors import RunyardError
from runyard.governance import Breaker, BreakerOpen, PermitLost
from runyard.models import Event, Run, RunStatus, Session
from runyard.settings import Settings

__all__ = [
    "APIError",
    "AsyncClient",
    "Breaker",
    "BreakerOpen",
    "Client",
    "Event",
    "Memory",
    "PermitLost",
    "Pipeline",
    "Run",
    "RunContext",
    "RunStatus",
    "Runyard",
    "RunyardError",
    "Session",
    "Settings",
    "StreamLost",
    "current_run",
]
