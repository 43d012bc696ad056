"""``/v1/sessions``: conversations whose runs share a memory."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from runyard.http.answers import SessionOut, errors
from runyard.http.auth import owner_of
from runyard.http.responses import StrictJSONRoute, json_response, runtime_of
from runyard.http.schemas import SessionRequest
from runyard.models import Session, rfc3339

router = APIRouter(
    prefix="/v1/sessions",
    tags=["sessions"],
    route_class=StrictJSONRoute,
    responses=errors(400, 401, 404, 413, 422, 503),
)


def _session_json(session: Session, status: str, history: list[object]) -> dict[str, object]:
    return {
        "session_id": session.session_id,
        "created_at": rfc3339(session.created_at),
        "last_activity": rfc3339(session.last_activity),
        "status": status,
        "metadata": session.metadata,
        "history": history,
    }


@router.post("", status_code=201, summary="Create a session", response_model=SessionOut)
async def create_session(request: Request, body: SessionRequest | None = None) -> Response:
    metadata = body.metadata if body else None
    session = await runtime_of(request).create_session(owner_of(request), metadata)
    headers = {"Location": f"/v1/sessions/{session.session_id}"}
    return json_response(_session_json(session, "idle", []), 201, headers=headers)


@router.get("/{session_id}", summary="A session with its history", response_model=SessionOut)
async def get_session(request: Request, session_id: str) -> Response:
    session, status, history = await runtime_of(request).get_session(owner_of(request), session_id)
    return json_response(_session_json(session, status, list(history)))


@router.delete("/{session_id}", status_code=204, summary="Delete a session")
async def delete_session(request: Request, session_id: str) -> Response:
    await runtime_of(request).delete_session(owner_of(request), session_id)
    return Response(status_code=204)
