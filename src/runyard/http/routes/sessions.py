"""``/v1/sessions``: conversations whose runs share a memory, under ids of the
server's or the client's choosing (scoped per owner: ``runyard.session_ids``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from runyard.errors import InvalidQuery
from runyard.http.answers import SessionList, SessionOut, errors
from runyard.http.auth import owner_of
from runyard.http.responses import StrictJSONRoute, json_response, runtime_of
from runyard.http.schemas import SessionRequest
from runyard.models import Session, rfc3339
from runyard.session_ids import SESSION_ID, public_session_id

router = APIRouter(
    prefix="/v1/sessions",
    tags=["sessions"],
    route_class=StrictJSONRoute,
    responses=errors(400, 401, 404, 413, 422, 503),
)
METADATA_FILTER = "metadata."
MAX_METADATA_FILTERS = 16


def _session_json(session: Session, status: str, history: list[object] | None = None) -> dict[str, object]:
    shown: dict[str, object] = {
        "session_id": public_session_id(session.session_id),
        "created_at": rfc3339(session.created_at),
        "last_activity": rfc3339(session.last_activity),
        "status": status,
        "metadata": session.metadata,
    }
    return shown if history is None else {**shown, "history": history}


@router.post(
    "",
    status_code=201,
    summary="Create a session (under your own id, if you like)",
    response_model=SessionOut,
    responses={200: {"model": SessionOut, "description": "if_exists=do_nothing: yours already"}, **errors(409)},
)
async def create_session(request: Request, body: SessionRequest | None = None) -> Response:
    body = body or SessionRequest()
    runtime = runtime_of(request)
    owner = owner_of(request)
    session, created = await runtime.sessions.create(owner, body.metadata, body.session_id, body.if_exists)
    if created:
        headers = {"Location": f"/v1/sessions/{public_session_id(session.session_id)}"}
        return json_response(_session_json(session, "idle", []), 201, headers=headers)
    view, history = await runtime.sessions.get(owner, public_session_id(session.session_id))
    return json_response(_session_json(view.session, view.status, list(history)), 200)


@router.get("", summary="List your sessions, newest activity first", response_model=SessionList)
async def list_sessions(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    before: Annotated[str | None, Query(max_length=512, description="the previous page's next")] = None,
) -> Response:
    filters = _metadata_filters(request)
    page, next_cursor = await runtime_of(request).sessions.list(owner_of(request), limit, before, filters)
    listed = [_session_json(view.session, view.status) for view in page]
    return json_response({"sessions": listed, "next": next_cursor})


def _metadata_filters(request: Request) -> dict[str, str]:
    """``metadata.KEY=VALUE`` parameters: sessions whose metadata has KEY with VALUE
    (a string equal to it, or another JSON value whose JSON text is it)."""
    filters: dict[str, str] = {}
    for name, value in request.query_params.multi_items():
        if not name.startswith(METADATA_FILTER):
            continue
        key = name.removeprefix(METADATA_FILTER)
        if not SESSION_ID.fullmatch(key) or key in filters:
            raise InvalidQuery(f"{name!r}: a metadata filter names one key of [A-Za-z0-9_.:-], once")
        filters[key] = value
    if len(filters) > MAX_METADATA_FILTERS:
        raise InvalidQuery(f"at most {MAX_METADATA_FILTERS} metadata filters")
    return filters


@router.get("/{session_id}", summary="A session with its history", response_model=SessionOut)
async def get_session(request: Request, session_id: str) -> Response:
    view, history = await runtime_of(request).sessions.get(owner_of(request), session_id)
    return json_response(_session_json(view.session, view.status, list(history)))


@router.delete("/{session_id}", status_code=204, summary="Delete a session")
async def delete_session(request: Request, session_id: str) -> Response:
    await runtime_of(request).sessions.delete(owner_of(request), session_id)
    return Response(status_code=204)
