"""What every store shares for listing sessions and runs: the metadata filter's
rule and the run search's, for the memory store (the SQL stores say the same in SQL)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from runyard.models import Run, dumps
from runyard.store.base import RunQuery

_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def metadata_matches(metadata: Mapping[str, Any], wanted: tuple[tuple[str, str], ...]) -> bool:
    """Whether ``metadata`` has every ``(key, value)``: a string equal to it, or
    another JSON value whose compact JSON text is it (``3``, ``true``)."""
    return all(key in metadata and _text(metadata[key]) == value for key, value in wanted)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else dumps(value).decode()


def folded(text: str) -> str:
    """``text`` with ASCII letters lowered, as SQLite's ``lower()`` does (the search ignores their case)."""
    return text.translate(_ASCII_LOWER)


def searched_text(run: Run) -> str:
    """What a run search looks in: id, session key, owner, input and error as JSON
    text, one space apart (the SQL stores concatenate the same columns)."""
    error = "" if run.error is None else dumps(run.error.to_dict()).decode()
    return " ".join((run.run_id, run.session_id, run.owner, dumps(run.input).decode(), error))


def run_matches(run: Run, query: RunQuery) -> bool:
    """Whether ``run`` passes ``query``'s filters (its cursor and limit aside)."""
    if query.owner is not None and run.owner != query.owner:
        return False
    if query.session_id is not None and run.session_id != query.session_id:
        return False
    if query.statuses and run.status not in query.statuses:
        return False
    if query.since is not None and run.created_at < query.since:
        return False
    if query.until is not None and run.created_at >= query.until:
        return False
    return query.text is None or folded(query.text) in folded(searched_text(run))
