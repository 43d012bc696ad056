"""The shape of the store contract: small protocols that together make ``Store``,
and backends that share rules only through the store's common modules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from runyard.store import base
from runyard.store.memory import MemoryStore

PROTOCOLS = [
    base.SessionStreams,
    base.Lifecycle,
    base.Admissions,
    base.RunRecords,
    base.SessionStore,
    base.SessionDirectory,
    base.RunQueue,
    base.EventStore,
    base.Journal,
    base.Retention,
    base.ItemStore,  # issue 13: the long-term store (store/items.py)
    base.CronStore,  # issue 13: crons (store/crons.py)
    base.WebhookOutbox,
    base.RunStats,  # issue 16: the operations console (store/stats.py)
]
STORE = Path(base.__file__).parent


def methods(protocol: type) -> set[str]:
    return {name for name, value in vars(protocol).items() if getattr(value, "__isabstractmethod__", False)}


@pytest.mark.parametrize("protocol", PROTOCOLS, ids=lambda p: p.__name__)
def test_each_protocol_is_small_and_says_what_each_method_does(protocol: type) -> None:
    assert 0 < len(methods(protocol)) <= 10
    for name in methods(protocol):
        doc = getattr(protocol, name).__doc__ or ""
        summary = doc.strip().split("\n\n")[0]
        assert summary and "\n" not in summary, f"{protocol.__name__}.{name} needs a one-line summary"


def test_store_is_exactly_the_protocols_together() -> None:
    every = [name for protocol in PROTOCOLS for name in methods(protocol)]
    assert len(every) == len(set(every)), "a method belongs to one protocol"
    assert base.Store.__abstractmethods__ == frozenset(every)
    assert methods(base.WorkerStore) == set()  # the Engine's share adds nothing of its own
    assert isinstance(MemoryStore(), base.Store)


@pytest.mark.parametrize(
    ("backend", "foreign"),
    [
        ("postgres", ("runyard.store.sqlite", "runyard.store.memory")),
        ("sqlite", ("runyard.store.postgres", "runyard.store.memory")),
    ],
)
def test_a_sql_backend_imports_nothing_from_another_backend(backend: str, foreign: tuple[str, ...]) -> None:
    """Regression (issue 11): the PostgreSQL store imported its row helpers from the
    SQLite schema and the memory store; shared rules live in ``_rows.py`` and co."""
    for module in sorted((STORE / backend).glob("*.py")):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith(foreign), f"{module.name} imports {node.module}"


def test_no_store_module_is_over_400_lines() -> None:
    for module in sorted(STORE.rglob("*.py")):
        assert len(module.read_text().splitlines()) <= 400, module
