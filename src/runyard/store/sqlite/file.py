"""The SQLite database file: its URL and the lock that keeps it to one process."""

from __future__ import annotations

import fcntl
import os
from urllib.parse import parse_qsl, urlsplit

from runyard.errors import ConfigurationError, StoreError

BUSY_TIMEOUT_MS = 5_000


def database_path(url: str) -> str:
    """``sqlite:///x.db`` → ``x.db`` (relative to the working directory), ``sqlite:////abs.db``
    → ``/abs.db``, ``sqlite:///:memory:`` (or ``sqlite://``) → ``:memory:``; a ``?query`` is not
    part of the path (``busy_timeout_ms``)."""
    url = url.partition("?")[0]
    if url == "sqlite://":
        return ":memory:"
    if not url.startswith("sqlite:///") or url == "sqlite:///":
        raise ConfigurationError(f"bad SQLite URL {url!r}: use sqlite:///relative.db or sqlite:////abs.db")
    return url.removeprefix("sqlite:///")


def busy_timeout_ms(url: str) -> int:
    """``?busy_timeout_ms=N``: how long a write waits for SQLite's lock held by another
    connection before it fails with ``StoreUnavailable`` (503); ``BUSY_TIMEOUT_MS`` by default."""
    value = dict(parse_qsl(urlsplit(url).query)).get("busy_timeout_ms", str(BUSY_TIMEOUT_MS))
    if not value.isdigit():
        raise ConfigurationError(f"bad SQLite URL {url!r}: busy_timeout_ms is a number of milliseconds")
    return int(value)


def lock_file(path: str) -> int:
    """Hold ``path``'s sidecar ``<path>.lock`` exclusively for the store's lifetime;
    the descriptor to close to release it.

    One process per file: the writer caches run states on the premise that it is
    the only writer, and two processes would claim each other's runs. flock, not
    fcntl: SQLite's own locks on the database are POSIX (fcntl) locks, which a
    process loses on closing *any* descriptor of that file, so a lock taken on
    the database itself would put SQLite's at risk; a sidecar file shares
    nothing with SQLite. The kernel releases it when the process dies, kill -9
    included: no stale lock to clean up by hand."""
    lock_path = f"{path}.lock"
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise StoreError(f"cannot open SQLite database {path!r}: cannot create its lock file ({exc})") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StoreError(
            f"SQLite database {path!r} is already in use by another runyard process (it holds {lock_path!r})."
            " A SQLite file serves one process: stop that process first, or, to run several processes"
            " (API and workers, or two apps side by side), use PostgreSQL and Redis"
            " (RUNYARD_STORE=postgresql://..., RUNYARD_BROKER=redis://...)."
        ) from None
    except OSError as exc:
        os.close(fd)
        raise StoreError(f"cannot lock {lock_path!r} for SQLite database {path!r}: {exc}") from exc
    return fd


def refuse_if_in_use(url: str) -> None:
    """``StoreError`` naming the file if another process holds ``url``'s database:
    for a server to refuse with that one line before it starts (the store's own
    lock, taken when it opens, is what guards the file)."""
    path = database_path(url)
    if path != ":memory:" and os.path.exists(f"{path}.lock"):
        os.close(lock_file(path))
