"""Fixtures shared by every test package."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.services import postgres_database

TESTS = Path(__file__).resolve().parent

# ``make test`` runs ``pytest -n 4 --dist loadfile --no-loadscope-reorder``: each
# file goes whole to the next free worker, in collection order. These files
# took the longest in a 4-worker run on the 2-core CI machine (``pytest
# --durations``, 2026-12-03: 70-280 s each, the cron file mostly waiting for
# real minutes), so they come first: started last, one of them alone kept the
# run going for minutes after the other workers had finished.
LONGEST_FIRST = (
    "fleet/test_crons.py",
    "fleet/test_fleet.py",
    "test_process.py",
    "http/test_openapi_fuzz.py",
    "durable/test_survival.py",
    "fleet/test_durable.py",
    "examples/test_market_chat.py",
    "examples/test_nextjs_chat.py",
    "test_readme_quickstart.py",
    "tracing/test_export.py",
    "adapters/test_graph_survival.py",
    "examples/test_resume_optimizer.py",
    "examples/test_interviewer.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    gone = [path for path in LONGEST_FIRST if not (TESTS / path).is_file()]
    if gone:
        raise pytest.UsageError(f"tests/conftest.py LONGEST_FIRST names files that are gone: {gone}")
    rank = {path: i for i, path in enumerate(LONGEST_FIRST)}
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
