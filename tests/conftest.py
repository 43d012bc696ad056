"""Fixtures shared by every test package."""

from __future__ import annotations

from pathlib import Path

import pytest

# Every store backend the store-backed suites run on; ``{tmp}`` is the test's tmp_path.
STORE_URLS = [
    pytest.param("memory://", id="memory"),
    pytest.param("sqlite:///{tmp}/t.db", id="sqlite"),
]


@pytest.fixture(params=STORE_URLS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each backend's URL in turn, file-backed ones inside the test's own directory."""
    return str(request.param).format(tmp=tmp_path)
