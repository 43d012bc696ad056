"""Request bodies, with bounds on every field (they show in the OpenAPI schema)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Query
from pydantic import BaseModel, ConfigDict, Field, field_validator

from runyard.models import ID_PATTERN, MAX_AFTER_S, Multitask, dumps
from runyard.servable import check_depth
from runyard.session_ids import SESSION_ID
from runyard.sessions import IfExists

# anchored: pydantic searches a pattern, it does not full-match it
Id = Annotated[str, Field(min_length=1, max_length=64, pattern=rf"^{ID_PATTERN.pattern}$")]
# a session's id: generated (``ses_...``) or chosen by the client (``runyard.session_ids``)
SessionId = Annotated[str, Field(min_length=1, max_length=128, pattern=rf"^{SESSION_ID.pattern}$")]
# whose runs a listing or the stats cover: admins (or anyone in a playground) may name another owner, * for all
OwnerParameter = Annotated[
    str | None,
    Query(max_length=128, description="admins only (anyone with RUNYARD_PLAYGROUND): this owner's, or * for all"),
]
METADATA_MAX_KEYS = 64
METADATA_MAX_BYTES = 16_384


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


def _storable(value: Any, what: str) -> bytes:
    """The JSON that will be stored; ``ValueError`` (so 422) for what JSON can't hold
    or runyard could not serve later (nested too deep: ``runyard.servable``)."""
    check_depth(value, what)
    try:
        return dumps(value)
    except TypeError as exc:  # a number JSON cannot carry, a lone surrogate
        raise ValueError(f"cannot be stored as JSON: {exc}") from None


def _check_input(value: Any) -> Any:
    _storable(value, "input")
    return value


def _check_metadata(value: dict[str, Any] | None) -> dict[str, Any] | None:
    # key count and length are in the schema (Metadata); the total size is checked here
    if value is not None and len(_storable(value, "metadata")) > METADATA_MAX_BYTES:
        raise ValueError(f"metadata is at most {METADATA_MAX_BYTES} bytes of JSON")
    return value


Metadata = Annotated[
    dict[Annotated[str, Field(max_length=128)], Any],
    Field(
        max_length=METADATA_MAX_KEYS, description=f"Your own labels: at most {METADATA_MAX_KEYS} keys, 16 KiB of JSON"
    ),
]


class RunRequest(_Body):
    """``POST /v1/runs`` and ``/v1/runs/wait``."""

    pipeline: Id
    input: Any = Field(
        description="The pipeline's input, validated by the pipeline's own schema (GET /v1/pipelines); "
        "bounded by RUNYARD_MAX_BODY_BYTES"
    )
    session_id: SessionId | None = None
    metadata: Metadata | None = None
    timeout_s: float | None = Field(None, gt=0, le=7 * 86400)
    multitask: Multitask = Multitask.ENQUEUE
    after_s: float | None = Field(
        None, ge=0, le=MAX_AFTER_S, description="Schedule the run: no worker claims it before this many seconds"
    )
    webhook: str | None = Field(
        None,
        max_length=2048,
        description="http(s) URL to POST the run's final snapshot to once it finishes, signed (Runyard-Signature)",
    )

    _metadata = field_validator("metadata")(_check_metadata)
    _input = field_validator("input")(_check_input)

    @field_validator("multitask", mode="before")
    @classmethod
    def _multitask_from_string(cls, value: Any) -> Any:
        # strict mode refuses plain strings for enums; JSON only has strings
        return Multitask(value) if isinstance(value, str) and value in Multitask._value2member_map_ else value


class StreamRunRequest(RunRequest):
    """``POST /v1/runs/stream``."""

    on_disconnect: Literal["continue", "cancel"] = "continue"


class AnswerRequest(_Body):
    """``POST /v1/runs/{run_id}/input``."""

    value: Any = Field(description="The answer, checked against the question's schema (waiting_for.schema)")
    ask_id: Id | None = Field(None, description="The question answered: refused (409) if the run waits for another")

    _value = field_validator("value")(_check_input)


class SessionRequest(_Body):
    """``POST /v1/sessions``."""

    metadata: Metadata | None = None
    session_id: SessionId | None = Field(None, description="Your own id for it (scoped to you); else one is made")
    if_exists: IfExists = Field(
        IfExists.RAISE, description="When you have a session of that id: 409, or answer 200 with it"
    )

    @field_validator("if_exists", mode="before")
    @classmethod
    def _if_exists_from_string(cls, value: Any) -> Any:
        # strict mode refuses plain strings for enums; JSON only has strings
        return IfExists(value) if isinstance(value, str) and value in IfExists._value2member_map_ else value

    _metadata = field_validator("metadata")(_check_metadata)
