"""``Pipeline``: one registered pipeline, and the rule its input follows.

Apart from ``app.py`` so that what serves pipelines (the runtime, the engine)
needs nothing of the app that registered them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from runyard.errors import InvalidRequest
from runyard.servable import NestedTooDeep, check_depth
from runyard.validation import describe

if TYPE_CHECKING:
    from runyard.context import RunContext

PipelineFunc = Callable[["RunContext", Any], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Pipeline:
    name: str
    func: PipelineFunc
    timeout_s: float | None
    retries: int
    input_model: type[BaseModel] | None
    description: str

    def validate_input(self, raw: Any) -> Any:
        """The input as the run will store it; ``InvalidRequest`` (422) if it does not fit."""
        if self.input_model is None:
            return _servable(raw)
        try:
            return _servable(self.input_model.model_validate(raw).model_dump(mode="json"))
        except ValidationError as exc:
            reason = describe(exc.errors(), root="input")
            raise InvalidRequest(f"input does not fit pipeline {self.name!r}: {reason}") from exc

    def argument(self, stored_input: Any) -> Any:
        """What the pipeline function receives: its model instance, or the raw JSON."""
        if self.input_model is None:
            return stored_input
        return self.input_model.model_validate(stored_input)

    def input_schema(self) -> dict[str, Any]:
        if self.input_model is None:
            return {}
        return self.input_model.model_json_schema()


def _servable(stored_input: Any) -> Any:
    """The input as stored, checked by the rule every served value follows (every
    front end's run creation comes through here, before anything is written)."""
    try:
        check_depth(stored_input, "input")
    except NestedTooDeep as exc:
        raise InvalidRequest(str(exc)) from None
    return stored_input
