"""LangGraph's crons are runyard's crons (``runyard.crons``), and its store is
the owner's long-term store (``runyard.longterm``, which checks every
namespace, key, value and page as ``/v1/store`` does)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.responses import Response

from runyard.crons import UNCHANGED
from runyard.http.answers import errors
from runyard.http.auth import owner_of
from runyard.http.responses import StrictJSONRoute, json_response, runtime_of
from runyard.http.routes.langgraph.shapes import cron_json
from runyard.http.routes.store import DOTTED, Key, Namespace, Prefix
from runyard.http.schemas import Metadata, _check_input, _check_metadata
from runyard.longterm import MAX_KEY_CHARS, MAX_LIMIT, MAX_OFFSET, MAX_PARTS, MAX_TTL_S, item_json
from runyard.session_ids import public_session_id

router = APIRouter(route_class=StrictJSONRoute, tags=["langgraph"], responses=errors(400, 401, 404, 409, 413, 422, 503))
Schedule = Annotated[str, Field(min_length=1, max_length=256, description="a 5-field cron expression")]


class _Loose(BaseModel):
    model_config = ConfigDict(extra="ignore")  # LangGraph's own tuning (config, durability...)


# -- crons -----------------------------------------------------------------------


class CronCreate(_Loose):
    assistant_id: Annotated[str, Field(min_length=1, max_length=128)]
    schedule: Schedule
    input: Any = None
    metadata: Metadata | None = None
    timezone: Annotated[str, Field(min_length=1, max_length=64)] = "UTC"
    webhook: Annotated[str | None, Field(max_length=2048)] = None
    enabled: bool = True
    end_time: None = Field(None, description="not supported: delete or disable the cron instead")

    _metadata = field_validator("metadata")(_check_metadata)
    _input = field_validator("input")(_check_input)


class CronPatch(_Loose):
    schedule: Schedule | None = None
    input: Any = None
    enabled: bool | None = None

    _input = field_validator("input")(_check_input)


class CronSearch(_Loose):
    assistant_id: Annotated[str | None, Field(max_length=128)] = None
    thread_id: Annotated[str | None, Field(max_length=128)] = None
    enabled: bool | None = None
    limit: Annotated[int, Field(ge=1, le=1000)] = 10
    offset: Annotated[int, Field(ge=0, le=10_000)] = 0


async def _create_cron(request: Request, thread_id: str | None, body: CronCreate) -> Response:
    cron = await runtime_of(request).crons.create(
        owner_of(request),
        body.assistant_id,
        {} if body.input is None else body.input,
        body.schedule,
        timezone=body.timezone,
        session_id=thread_id,
        metadata=body.metadata,
        webhook=body.webhook,
        enabled=body.enabled,
    )
    return json_response(cron_json(cron))


@router.post("/runs/crons", summary="Create a cron (each run in a new thread)")
async def create_cron(request: Request, body: CronCreate) -> Response:
    return await _create_cron(request, None, body)


@router.post("/threads/{thread_id}/runs/crons", summary="Create a cron whose runs enter a thread")
async def create_thread_cron(request: Request, thread_id: str, body: CronCreate) -> Response:
    return await _create_cron(request, thread_id, body)


@router.patch("/runs/crons/{cron_id}", summary="Change a cron's schedule, input or enabled")
async def update_cron(request: Request, cron_id: str, body: CronPatch) -> Response:
    cron = await runtime_of(request).crons.update(
        owner_of(request),
        cron_id,
        schedule=body.schedule,
        input=body.input if "input" in body.model_fields_set else UNCHANGED,
        enabled=body.enabled,
    )
    return json_response(cron_json(cron))


@router.delete("/runs/crons/{cron_id}", status_code=204, summary="Delete a cron")
async def delete_cron(request: Request, cron_id: str) -> Response:
    await runtime_of(request).crons.delete(owner_of(request), cron_id)
    return Response(status_code=204)


async def _crons(request: Request, body: CronSearch) -> list[dict[str, Any]]:
    crons = await runtime_of(request).crons.list_crons(owner_of(request))
    return [
        cron_json(cron)
        for cron in crons
        if (body.assistant_id is None or cron.pipeline == body.assistant_id)
        and (body.thread_id is None or (cron.session_id and public_session_id(cron.session_id) == body.thread_id))
        and (body.enabled is None or cron.enabled == body.enabled)
    ]


@router.post("/runs/crons/search", summary="The caller's crons")
async def search_crons(request: Request, body: CronSearch | None = None) -> Response:
    body = body or CronSearch()
    return json_response((await _crons(request, body))[body.offset : body.offset + body.limit])


@router.post("/runs/crons/count", summary="How many crons a search finds")
async def count_crons(request: Request, body: CronSearch | None = None) -> Response:
    return json_response(len(await _crons(request, body or CronSearch())))


# -- the store ---------------------------------------------------------------------


class PutItem(_Loose):
    namespace: Namespace
    key: Key
    value: dict[str, Any] = Field(description="A JSON object of at most 1 MiB")
    index: Any = None  # which fields to embed: runyard embeds with the app's store_embed, if any
    ttl: float | None = Field(None, gt=0, le=MAX_TTL_S / 60, description="minutes, as LangGraph counts them")


class ItemRef(_Loose):
    namespace: Namespace
    key: Key


class SearchItems(_Loose):
    namespace_prefix: Prefix = []
    filter: dict[str, Any] | None = None
    query: Annotated[str | None, Field(max_length=4096)] = None
    limit: Annotated[int, Field(ge=1, le=MAX_LIMIT)] = 10
    offset: Annotated[int, Field(ge=0, le=MAX_OFFSET)] = 0


class ListNamespaces(_Loose):
    prefix: Prefix = []
    suffix: Prefix | None = None
    max_depth: Annotated[int | None, Field(ge=1, le=MAX_PARTS)] = None
    limit: Annotated[int, Field(ge=1, le=1000)] = 100
    offset: Annotated[int, Field(ge=0, le=10_000)] = 0


@router.put("/store/items", status_code=204, summary="Put an item (insert or replace)")
async def put_item(request: Request, body: PutItem) -> Response:
    ttl_s = None if body.ttl is None else body.ttl * 60
    await runtime_of(request).longterm.put(owner_of(request), body.namespace, body.key, body.value, ttl_s)
    return Response(status_code=204)


@router.get("/store/items", summary="An item")
async def get_item(
    request: Request,
    namespace: Annotated[str, Query(pattern=DOTTED, description="its parts joined by dots: a.b")],
    key: Annotated[str, Query(min_length=1, max_length=MAX_KEY_CHARS)],
) -> Response:
    item = await runtime_of(request).longterm.get(owner_of(request), namespace.split("."), key)
    return json_response(item_json(item))


@router.delete("/store/items", status_code=204, summary="Delete an item")
async def delete_item(request: Request, body: ItemRef) -> Response:
    await runtime_of(request).longterm.delete(owner_of(request), body.namespace, body.key)
    return Response(status_code=204)


@router.post("/store/items/search", summary="Items under a namespace prefix, filtered, or ranked by a query")
async def search_items(request: Request, body: SearchItems) -> Response:
    found = await runtime_of(request).longterm.search(
        owner_of(request),
        body.namespace_prefix,
        filter=body.filter,
        query=body.query,
        limit=body.limit,
        offset=body.offset,
    )
    return json_response({"items": [item_json(f.item, f.score) for f in found]})


@router.post("/store/namespaces", summary="The namespaces holding items")
async def list_namespaces(request: Request, body: ListNamespaces | None = None) -> Response:
    body = body or ListNamespaces()
    found = await runtime_of(request).longterm.namespaces(owner_of(request), body.prefix, body.max_depth)
    suffix = body.suffix
    shown = [list(ns) for ns in found if not suffix or list(ns[-len(suffix) :]) == suffix]
    return json_response({"namespaces": shown[body.offset : body.offset + body.limit]})
