"""Saying what pydantic (or a JSON Schema) found wrong, the same way for every
front end: a 422's message, a run's input that does not fit its pipeline, a CLI
flag, an answer to ``ctx.ask`` that does not fit its schema."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel

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


def json_schema_of(schema: Any) -> dict[str, Any]:
    """The JSON Schema an answer is checked against: a pydantic model's, or a
    JSON Schema given as a dict (``ValueError`` if it is not a valid one)."""
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        return schema.model_json_schema()
    import jsonschema  # here: only answers to ``ctx.ask`` need it (3 MiB a server need not hold)

    if not isinstance(schema, dict):
        raise ValueError(f"a schema is a pydantic model or a JSON Schema dict, not {type(schema).__name__}")
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise ValueError(f"not a valid JSON Schema: {exc.message}") from None
    return schema


def schema_errors(schema: Mapping[str, Any], value: Any, *, limit: int = 3) -> str | None:
    """``where: why`` for what ``value`` breaks of ``schema`` (a JSON Schema), or None if it fits."""
    import jsonschema

    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(value), key=lambda error: list(error.absolute_path))
    if not errors:
        return None
    parts = [f"{'.'.join(str(p) for p in error.absolute_path) or 'value'}: {error.message}" for error in errors[:limit]]
    more = f" (and {len(errors) - limit} more)" if len(errors) > limit else ""
    return "; ".join(parts) + more
