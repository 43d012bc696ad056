"""``/v1/store``: the caller's long-term store, items by namespace and key.

The bodies' schemas bound every field (they show in the OpenAPI schema); what
they cannot say (a value's size and depth) ``runyard.longterm`` checks, for
HTTP and ``ctx.store`` alike. Errors: 422 ``invalid_request`` for a malformed
namespace, key, value (not an object, nested too deep), ttl or page; 413
``payload_too_large`` for a value over 1 MiB of JSON (or a body over
``RUNYARD_MAX_BODY_BYTES``); 404 ``item_not_found``; nothing is written then.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from runyard.http.answers import errors
from runyard.http.auth import owner_of
from runyard.http.responses import StrictJSONRoute, json_response, runtime_of
from runyard.longterm import MAX_KEY_CHARS, MAX_LIMIT, MAX_OFFSET, MAX_PARTS, MAX_TTL_S, item_json
from runyard.models import ID_PATTERN

router = APIRouter(
    prefix="/v1/store",
    tags=["store"],
    route_class=StrictJSONRoute,
    responses=errors(400, 401, 404, 413, 422, 503),
)

Part = Annotated[str, Field(min_length=1, max_length=64, pattern=rf"^{ID_PATTERN.pattern}$")]
Namespace = Annotated[list[Part], Field(min_length=1, max_length=MAX_PARTS)]
Prefix = Annotated[list[Part], Field(max_length=MAX_PARTS)]
DOTTED = rf"^{ID_PATTERN.pattern}(\.{ID_PATTERN.pattern}){{0,{MAX_PARTS - 1}}}$"
Key = Annotated[str, Field(min_length=1, max_length=MAX_KEY_CHARS)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class PutItem(_Body):
    namespace: Namespace
    key: Key
    value: dict[str, Any] = Field(description="A JSON object of at most 1 MiB")
    ttl_s: float | None = Field(None, gt=0, le=MAX_TTL_S, description="The item expires this long after the put")


class ItemRef(_Body):
    namespace: Namespace
    key: Key


class SearchItems(_Body):
    namespace_prefix: Prefix = []
    filter: dict[str, Any] | None = Field(None, description="Fields the value must hold, each with an equal value")
    query: str | None = Field(None, max_length=4096, description="Ranked by meaning with store_embed, else by words")
    # JSON has numbers, not integers: 10.0 is 10 (strict mode would refuse it)
    limit: int = Field(10, ge=1, le=MAX_LIMIT, strict=False)
    offset: int = Field(0, ge=0, le=MAX_OFFSET, strict=False)


class ListNamespaces(_Body):
    prefix: Prefix = []
    max_depth: int | None = Field(None, ge=1, le=MAX_PARTS, strict=False)


@router.put("/items", summary="Put an item (insert or replace)")
async def put_item(request: Request, body: PutItem) -> Response:
    longterm = runtime_of(request).longterm
    item = await longterm.put(owner_of(request), body.namespace, body.key, body.value, body.ttl_s)
    return json_response(item_json(item))


@router.get("/items", summary="An item")
async def get_item(
    request: Request,
    namespace: Annotated[str, Query(pattern=DOTTED, description="Its parts joined by dots: a.b")],
    key: Annotated[str, Query(min_length=1, max_length=MAX_KEY_CHARS)],
) -> Response:
    item = await runtime_of(request).longterm.get(owner_of(request), namespace, key)
    return json_response(item_json(item))


@router.delete("/items", status_code=204, summary="Delete an item (none there: 204 too)")
async def delete_item(request: Request, body: ItemRef) -> Response:
    await runtime_of(request).longterm.delete(owner_of(request), body.namespace, body.key)
    return Response(status_code=204)


@router.post("/items/search", summary="Items under a namespace prefix, filtered, or ranked by a query")
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


@router.post("/namespaces", summary="The namespaces holding items, under a prefix, cut to a depth")
async def list_namespaces(request: Request, body: ListNamespaces | None = None) -> Response:
    body = body or ListNamespaces()
    found = await runtime_of(request).longterm.namespaces(owner_of(request), body.prefix, body.max_depth)
    return json_response({"namespaces": [list(namespace) for namespace in found]})
