"""What every store shares for listing sessions: the metadata filter's rule,
for the memory store (the SQL stores say the same in SQL)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from runyard.models import dumps


def metadata_matches(metadata: Mapping[str, Any], wanted: tuple[tuple[str, str], ...]) -> bool:
    """Whether ``metadata`` has every ``(key, value)``: a string equal to it, or
    another JSON value whose compact JSON text is it (``3``, ``true``)."""
    return all(key in metadata and _text(metadata[key]) == value for key, value in wanted)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else dumps(value).decode()
