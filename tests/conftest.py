"""Fixtures shared by every test package."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.services import postgres_database

TESTS = Path(__file__).resolve().parent

# Collected first, so that ``make test`` (``pytest -n 4``) starts them at once:
# they wait for real minutes, mostly idle, and started last (as collection
# order had them) they kept a run going after every other test had finished.
# Sending whole files to free workers, the longest first (``--dist loadfile``),
# was tried instead: four multi-process fleet files at once overloaded the
# 2 cores and timed tests out.
FIRST = ("fleet/test_crons.py",)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    gone = [path for path in FIRST if not (TESTS / path).is_file()]
    if gone:
        raise pytest.UsageError(f"tests/conftest.py FIRST names files that are gone: {gone}")
    rank = {path: i for i, path in enumerate(FIRST)}
    items.sort(key=lambda item: rank.get(item.path.relative_to(TESTS).as_posix(), len(rank)))  # stable


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
