"""Saying what pydantic found wrong, the same way for every front end: a 422's
message, a run's input that does not fit its pipeline, a CLI flag."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

# Where FastAPI found a value, not part of its name: ``body.count`` is ``count``.
_SOURCES = frozenset({"body", "query", "path", "header"})

Error = Mapping[str, Any]  # one of ``ValidationError.errors()``


def describe(
    errors: Sequence[Error], *, root: str = "body", limit: int = 3, label: Callable[[Error], str] | None = None
) -> str:
    """``where: why`` for the first ``limit`` errors, then how many more.

    ``where`` is the dotted location (``root`` when the error is about the whole
    value), or ``label(error)`` when given."""
    parts = [f"{(label or (lambda error: where(error, root)))(error)}: {why(error)}" for error in errors[:limit]]
    more = f" (and {len(errors) - limit} more)" if len(errors) > limit else ""
    return "; ".join(parts) + more


def where(error: Error, root: str = "body") -> str:
    """The error's location as a dotted name, ``root`` if it has none."""
    return ".".join(str(part) for part in error.get("loc", ()) if part not in _SOURCES) or root


def why(error: Error) -> str:
    """The error's message, without the ``Value error, `` pydantic puts before a validator's own."""
    return str(error.get("msg", "invalid")).removeprefix("Value error, ")
