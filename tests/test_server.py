"""The serving process (``runyard.server``): what it does around uvicorn."""

from __future__ import annotations

import logging
import resource

import pytest

from runyard import server
from runyard.server import RESERVED_FDS, HeapTrimmer, connection_cap, malloc_trim


class CountingTrim:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, pad: int) -> int:
        self.calls += 1
        return 1


def test_the_heap_is_given_back_once_a_crowd_of_connections_has_left() -> None:
    """Issue 10: after 2,000 readers left, RSS stayed near 1.8 GB (glibc keeps
    freed memory in its arenas). The heap is trimmed once the open connections
    have fallen to half their peak, by at least a crowd, and not otherwise."""
    trim = CountingTrim()
    trimmer = HeapTrimmer(trim)
    for connections in (10, 2000, 1500, 1001):
        trimmer.observe(connections)
    assert trim.calls == 0, "trimmed before half the crowd had left"
    trimmer.observe(12)
    assert trim.calls == 1
    for connections in (12, 150, 12, 0):  # comings and goings smaller than a crowd
        trimmer.observe(connections)
    assert trim.calls == 1


def test_malloc_trim_is_found_on_glibc() -> None:
    trim = malloc_trim()
    if trim is None:
        pytest.skip("no malloc_trim in this C library")
    assert trim(0) in (0, 1)


def test_the_connection_cap_is_lowered_to_the_open_files_allowed(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Past RLIMIT_NOFILE accept() fails and a client gets no answer at all:
    the cap is lowered to what fits, with a warning saying what to raise."""
    monkeypatch.setattr(server.resource, "getrlimit", lambda _: (1024, 4096))
    raised: list[tuple[int, int]] = []
    monkeypatch.setattr(server.resource, "setrlimit", lambda _, limits: raised.append(limits))
    assert connection_cap(20_000) == 4096 - RESERVED_FDS
    assert raised == [(4096, 4096)], "the soft limit is raised to the hard one first"
    assert "RUNYARD_MAX_CONNECTIONS=20000" in caplog.text


def test_the_connection_cap_is_kept_when_the_files_allow_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server.resource, "getrlimit", lambda _: (1024, resource.RLIM_INFINITY))
    monkeypatch.setattr(server.resource, "setrlimit", lambda *_: None)
    assert connection_cap(20_000) == 20_000


def test_the_default_cap_lowered_to_the_open_files_allowed_is_no_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A machine whose hard limit is 20,000 lowered the default cap at every start
    of the demo, each time with a warning nobody could act on."""
    monkeypatch.setattr(server.resource, "getrlimit", lambda _: (1024, 4096))
    monkeypatch.setattr(server.resource, "setrlimit", lambda *_: None)
    assert connection_cap(20_000, chosen=False) == 4096 - RESERVED_FDS
    assert all(record.levelno < logging.WARNING for record in caplog.records)
