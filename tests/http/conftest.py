"""Real uvicorn servers for the HTTP tests; each test is its own owner (``X-Client-Id``)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import make_app, serve_in_thread

# Short drain so that a server stops quickly even while test runs still nap.
BASE_SETTINGS: dict[str, object] = {"store": "memory://", "drain_s": 0.2}

Serve = Callable[..., str]
NewClient = Callable[..., httpx.Client]


@pytest.fixture(scope="session")
def server() -> Iterator[str]:
    """One server with the default settings on ``memory://``, shared by every test."""
    with serve_in_thread(make_app(**BASE_SETTINGS)) as url:
        yield url


@pytest.fixture(scope="session")
def sqlite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The same on ``sqlite://``."""
    path: Path = tmp_path_factory.mktemp("sqlite") / "t.db"
    with serve_in_thread(make_app(**{**BASE_SETTINGS, "store": f"sqlite:///{path}"})) as url:
        yield url


@pytest.fixture(params=["memory", "sqlite"])
def any_server(request: pytest.FixtureRequest) -> str:
    """Each store backend's shared server in turn."""
    url: str = request.getfixturevalue("server" if request.param == "memory" else "sqlite_server")
    return url


@pytest.fixture
def serve() -> Iterator[Serve]:
    """``serve(**settings)`` starts a server of its own for this test; stopped afterwards."""
    with contextlib.ExitStack() as stack:

        def start(**settings: object) -> str:
            url: str = stack.enter_context(serve_in_thread(make_app(**{**BASE_SETTINGS, **settings})))
            return url

        yield start


@pytest.fixture
def new_client() -> Iterator[NewClient]:
    """``new_client(url, owner=None)``: an httpx client acting as a fresh (or the given) owner."""
    with contextlib.ExitStack() as stack:

        def make(url: str, owner: str | None = None, **kwargs: object) -> httpx.Client:
            headers = {"X-Client-Id": owner or f"t-{uuid.uuid4().hex}"}
            client = httpx.Client(base_url=url, headers=headers, timeout=10, **kwargs)  # type: ignore[arg-type]
            return stack.enter_context(client)

        yield make


@pytest.fixture
def client(server: str, new_client: NewClient) -> httpx.Client:
    """A fresh owner on the shared ``memory://`` server."""
    return new_client(server)


@pytest.fixture
def other(server: str, new_client: NewClient) -> httpx.Client:
    """Another fresh owner on the same server."""
    return new_client(server)
