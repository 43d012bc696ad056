"""``/v1/crons``: scheduled runs (issue 13), the caller's own only."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field, field_validator
from starlette.responses import Response

from runyard.crons import UNCHANGED
from runyard.http.answers import errors
from runyard.http.auth import owner_of
from runyard.http.responses import StrictJSONRoute, json_response, runtime_of
from runyard.http.schemas import Id, Metadata, _Body, _check_input, _check_metadata

router = APIRouter(
    prefix="/v1/crons", tags=["crons"], route_class=StrictJSONRoute, responses=errors(400, 401, 404, 413, 422, 503)
)

Schedule = Annotated[
    str,
    Field(
        min_length=1,
        max_length=256,
        description="A 5-field cron expression (minute hour day-of-month month day-of-week), e.g. 0 9 * * 1-5",
    ),
]


class CronRequest(_Body):
    """``POST /v1/crons``."""

    pipeline: Id
    input: Any = Field(description="The input of every run, validated like a run's")
    schedule: Schedule
    timezone: str = Field("UTC", min_length=1, max_length=64, description="An IANA time zone name")
    session_id: Id | None = Field(None, description="Every run enters this session (queued behind its runs)")
    metadata: Metadata | None = None
    webhook: str | None = Field(None, max_length=2048, description="Given to every run the cron creates")
    enabled: bool = True

    _metadata = field_validator("metadata")(_check_metadata)
    _input = field_validator("input")(_check_input)


class CronPatch(_Body):
    """``PATCH /v1/crons/{cron_id}``: the fields given change."""

    schedule: Schedule | None = None
    input: Any = None
    enabled: bool | None = None

    _input = field_validator("input")(_check_input)


class CronOut(BaseModel):
    cron_id: str
    pipeline: str
    input: Any
    schedule: str
    timezone: str
    session_id: str | None
    metadata: dict[str, Any]
    webhook: str | None
    enabled: bool
    next_run_at: str | None = Field(description="The next due time (null while disabled)")
    last_run_id: str | None
    last_run_at: str | None
    created_at: str
    updated_at: str


class CronList(BaseModel):
    crons: list[CronOut]


@router.post("", status_code=201, summary="Create a cron", response_model=CronOut)
async def create_cron(request: Request, body: CronRequest) -> Response:
    cron = await runtime_of(request).crons.create(
        owner_of(request),
        body.pipeline,
        body.input,
        body.schedule,
        timezone=body.timezone,
        session_id=body.session_id,
        metadata=body.metadata,
        webhook=body.webhook,
        enabled=body.enabled,
    )
    return json_response(cron.snapshot(), 201, headers={"Location": f"/v1/crons/{cron.cron_id}"})


@router.get("", summary="The caller's crons, oldest first", response_model=CronList)
async def list_crons(request: Request) -> Response:
    crons = await runtime_of(request).crons.list_crons(owner_of(request))
    return json_response({"crons": [cron.snapshot() for cron in crons]})


@router.get("/{cron_id}", summary="A cron", response_model=CronOut)
async def get_cron(request: Request, cron_id: str) -> Response:
    cron = await runtime_of(request).crons.get(owner_of(request), cron_id)
    return json_response(cron.snapshot())


@router.patch("/{cron_id}", summary="Change a cron's schedule, input or enabled", response_model=CronOut)
async def update_cron(request: Request, cron_id: str, body: CronPatch) -> Response:
    given = body.model_fields_set  # an input of null is an input; an absent one is no change
    cron = await runtime_of(request).crons.update(
        owner_of(request),
        cron_id,
        schedule=body.schedule,
        input=body.input if "input" in given else UNCHANGED,
        enabled=body.enabled,
    )
    return json_response(cron.snapshot())


@router.delete("/{cron_id}", status_code=204, summary="Delete a cron")
async def delete_cron(request: Request, cron_id: str) -> Response:
    await runtime_of(request).crons.delete(owner_of(request), cron_id)
    return Response(status_code=204)
