"""Fixtures shared by every test package."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.services import postgres_database

# Every store backend the store-backed suites run on; ``{tmp}`` is the test's tmp_path.
# A backend needing a real service carries its mark; its URL comes from a fixture.
STORE_URLS = [
    pytest.param("memory://", id="memory"),
    pytest.param("sqlite:///{tmp}/t.db", id="sqlite"),
    pytest.param("postgresql://", id="postgresql", marks=pytest.mark.postgres),
]


@pytest.fixture(params=STORE_URLS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each backend's URL in turn, file-backed ones inside the test's own directory,
    PostgreSQL in a database of the test's own."""
    if str(request.param).startswith("postgresql:"):
        url: str = request.getfixturevalue("postgres_url")
        return url
    return str(request.param).format(tmp=tmp_path)


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    """A new database on the test PostgreSQL, dropped after the test (skips, or fails
    under CI=true, when PostgreSQL is not reachable)."""
    async with postgres_database() as url:
        yield url
