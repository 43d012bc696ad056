"""LangGraph assistants are runyard's pipelines: ``assistant_id`` and
``graph_id`` are a pipeline's name; there is one version of each, the one
served (creating, changing or deleting assistants is not supported)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from runyard.errors import PipelineNotFound
from runyard.http.answers import errors
from runyard.http.auth import owner_of
from runyard.http.responses import StrictJSONRoute, json_response, runtime_of
from runyard.http.routes.langgraph.shapes import METADATA, assistant_json, schemas_json
from runyard.pipeline import Pipeline

router = APIRouter(route_class=StrictJSONRoute, tags=["langgraph"], responses=errors(400, 401, 404, 413, 422, 503))


class AssistantSearch(BaseModel):
    model_config = ConfigDict(extra="ignore")  # sort_by, sort_order, select
    graph_id: Annotated[str | None, Field(max_length=128)] = None
    name: Annotated[str | None, Field(max_length=128)] = None
    metadata: dict[str, Any] | None = None
    limit: Annotated[int, Field(ge=1, le=1000)] = 10
    offset: Annotated[int, Field(ge=0, le=10_000)] = 0


def _found(request: Request, body: AssistantSearch) -> list[Pipeline]:
    owner_of(request)  # the same authentication as every other route
    return [
        pipeline
        for pipeline in runtime_of(request).pipelines.values()
        if (body.graph_id is None or pipeline.name == body.graph_id)
        and (body.name is None or body.name.lower() in pipeline.name.lower())
        and all(METADATA.get(key) == value for key, value in (body.metadata or {}).items())
    ]


def _pipeline(request: Request, assistant_id: str) -> Pipeline:
    owner_of(request)
    pipeline = runtime_of(request).pipelines.get(assistant_id)
    if pipeline is None:
        raise PipelineNotFound(f"no assistant {assistant_id!r} (assistants are the pipelines)")
    return pipeline


@router.post("/assistants/search", summary="The assistants (the pipelines)")
async def search_assistants(request: Request, body: AssistantSearch | None = None) -> Response:
    body = body or AssistantSearch()
    found = _found(request, body)[body.offset : body.offset + body.limit]
    return json_response([assistant_json(pipeline) for pipeline in found])


@router.post("/assistants/count", summary="How many assistants a search finds")
async def count_assistants(request: Request, body: AssistantSearch | None = None) -> Response:
    return json_response(len(_found(request, body or AssistantSearch())))


@router.get("/assistants/{assistant_id}", summary="An assistant (a pipeline)")
async def get_assistant(request: Request, assistant_id: str) -> Response:
    return json_response(assistant_json(_pipeline(request, assistant_id)))


@router.get("/assistants/{assistant_id}/schemas", summary="An assistant's schemas: its pipeline's input schema")
async def get_schemas(request: Request, assistant_id: str) -> Response:
    return json_response(schemas_json(_pipeline(request, assistant_id)))
