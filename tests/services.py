"""The real services integration tests need (PostgreSQL, Redis).

A test that needs one calls ``require_service`` first: when the service cannot
be reached the test is skipped, except under ``CI=true``, where a missing
service is a broken job and the test fails loudly instead of passing unseen.
Each service's address comes from an environment variable with this machine's
default, e.g. ``RUNYARD_TEST_POSTGRES_URL``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import socket
from collections.abc import AsyncIterator
from urllib.parse import urlencode, urlsplit, urlunsplit

import pytest

# The maintenance database of a server where the tests may create and drop databases.
POSTGRES_URL = os.environ.get("RUNYARD_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
# A Redis the tests share; each test keeps to a key prefix of its own.
REDIS_URL = os.environ.get("RUNYARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@functools.cache
def _unreachable(host: str, port: int) -> str | None:
    """Why ``host:port`` refuses a TCP connection, or None when it accepts one."""
    try:
        with socket.create_connection((host, port), timeout=2):
            return None
    except OSError as exc:
        return str(exc) or type(exc).__name__


def require_service(name: str, host: str, port: int) -> None:
    """Skip the calling test when ``name`` is not listening at ``host:port``; fail it under ``CI=true``."""
    problem = _unreachable(host, port)
    if problem is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{name} is required in CI: cannot connect to {host}:{port} ({problem})", pytrace=False)
    pytest.skip(f"{name} is not reachable at {host}:{port} ({problem}); with CI=true this test fails instead")


def require_postgres() -> None:
    parts = urlsplit(POSTGRES_URL)
    require_service("PostgreSQL", parts.hostname or "127.0.0.1", parts.port or 5432)


def require_redis() -> None:
    parts = urlsplit(REDIS_URL)
    require_service("Redis", parts.hostname or "127.0.0.1", parts.port or 6379)


def redis_url(prefix: str, **query: str) -> str:
    """``REDIS_URL`` with the key prefix and any other query parameters."""
    return f"{REDIS_URL}?{urlencode({'prefix': prefix, **query})}"


@contextlib.asynccontextmanager
async def postgres_database() -> AsyncIterator[str]:
    """The URL of a new, empty database of its own, dropped afterwards (connections and all)."""
    require_postgres()
    import asyncpg  # only tests that need PostgreSQL need its driver

    name = f"runyard_test_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(POSTGRES_URL)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield urlunsplit(urlsplit(POSTGRES_URL)._replace(path=f"/{name}"))
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
