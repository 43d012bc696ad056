"""Sessions on behalf of an owner: created with an id of the server's or the
client's choosing, read, listed and deleted. Another owner's session is
reported exactly as a missing one, and a client's chosen id is scoped to its
owner (``runyard.session_ids``), so a conflict never tells of another's session.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson

from runyard.errors import InvalidCursor, InvalidRequest, SessionExists, SessionNotFound
from runyard.models import Run, Session, new_id, now
from runyard.session_ids import GENERATED, public_session_id, session_key
from runyard.settings import Settings
from runyard.store.base import Cancelled, Store
from runyard.store.directory import SessionQuery


class IfExists(StrEnum):
    """What creating a session under an id of the owner's that is taken does."""

    RAISE = "raise"  # 409 session_exists
    DO_NOTHING = "do_nothing"  # answer with the existing session


@dataclass(slots=True)
class SessionView:
    """A session as its owner sees it: its status (``idle``, ``busy`` or ``expired``)."""

    session: Session
    status: str

    @property
    def session_id(self) -> str:
        return public_session_id(self.session.session_id)


class Sessions:
    """The owner-facing operations on sessions (the ``Runtime``'s)."""

    def __init__(self, store: Store, settings: Settings, announce: Callable[[list[Cancelled]], Awaitable[None]]):
        self._store = store
        self._settings = settings
        self._announce = announce  # publishes the ends of the runs a deletion cancelled

    async def create(
        self,
        owner: str,
        metadata: Mapping[str, Any] | None = None,
        session_id: str | None = None,
        if_exists: IfExists = IfExists.RAISE,
    ) -> tuple[Session, bool]:
        """The session, and whether it was created now (else it existed: ``do_nothing``)."""
        created = now()
        key = new_id("ses") if session_id is None else self._chosen_key(owner, session_id)
        session = Session(key, owner, created, created, dict(metadata or {}))
        if session_id is None:
            await self._store.create_session(session)
            return session, True
        if GENERATED.fullmatch(session_id):
            existing: Session | None = await self._generated(owner, session_id)
        else:
            existing = await self._store.claim_session(session, created - self._settings.session_ttl_s)
        if existing is None:
            return session, True
        if if_exists is IfExists.RAISE:
            raise SessionExists(f"session {session_id!r} exists")
        return existing, False

    async def _generated(self, owner: str, session_id: str) -> Session:
        """The owner's session of an id of the server's form: such ids are the server's to make."""
        try:
            return await self.visible(owner, session_id)
        except SessionNotFound:  # missing or another owner's: the same answer
            raise InvalidRequest(
                f"session_id {session_id!r}: ids of the form ses_<24 hex digits> are made by the server"
            ) from None

    def _chosen_key(self, owner: str, session_id: str) -> str:
        key = session_key(owner, session_id)
        if key is None or "/" in session_id:
            raise InvalidRequest(f"session_id {session_id!r} is not 1 to 128 of [A-Za-z0-9_.:-]")
        return key

    async def get(self, owner: str, session_id: str) -> tuple[SessionView, list[dict[str, Any]]]:
        """The session with its status, and its history (none once expired)."""
        session = await self.visible(owner, session_id)
        view = self._view(session, busy=bool(await self._store.unfinished_runs(session.session_id)))
        if view.status == "expired":
            return view, []
        return view, [message.to_dict() for message in await self._store.history(session.session_id)]

    async def unfinished(self, owner: str, session_id: str) -> list[Run]:
        """The unfinished runs of the owner's session, oldest first; none when the
        session is missing, deleted or another owner's (the same answer)."""
        try:
            key = (await self.visible(owner, session_id)).session_id
        except SessionNotFound:
            return []
        return await self._store.unfinished_runs(key)

    async def list(
        self, owner: str, limit: int, before: str | None = None, metadata: Mapping[str, str] | None = None
    ) -> tuple[list[SessionView], str | None]:
        """A page of the owner's sessions, newest activity first, and the next page's cursor."""
        after = _decode_cursor(owner, before) if before is not None else None
        query = SessionQuery(owner, limit + 1, after, tuple(sorted((metadata or {}).items())))
        listed = await self._store.list_sessions(query)
        page = [self._view(found.session, found.busy) for found in listed[:limit]]
        last = page[-1].session if page and len(listed) > limit else None
        return page, _encode_cursor(last) if last is not None else None

    async def delete(self, owner: str, session_id: str) -> None:
        """Cancel the session's unfinished runs and forget its memory, in one
        transaction of the store: once this returns, none of its runs is queued
        or running, and no run can be created in it. Runs stay readable."""
        session = await self.visible(owner, session_id)
        await self._announce(await self._store.delete_session(session.session_id, now()))

    async def visible(self, owner: str, session_id: str) -> Session:
        key = session_key(owner, session_id)
        session = await self._store.get_session(key) if key is not None else None
        if session is None or session.deleted or session.owner != owner:
            raise SessionNotFound(f"no session {session_id!r}")
        return session

    def _view(self, session: Session, busy: bool) -> SessionView:
        if busy:
            return SessionView(session, "busy")
        expired = session.expired(self._settings.session_ttl_s, now())
        return SessionView(session, "expired" if expired else "idle")


def _encode_cursor(last: Session) -> str:
    """Where the next page starts: after this session's (activity, id); opaque to clients."""
    raw = orjson.dumps([last.last_activity, public_session_id(last.session_id)])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(owner: str, cursor: str) -> tuple[float, str]:
    activity: object = None
    try:
        activity, public = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        key = session_key(owner, public) if isinstance(public, str) else None
    except (ValueError, TypeError, binascii.Error):
        key = None
    if key is None or not isinstance(activity, int | float) or isinstance(activity, bool):
        raise InvalidCursor(f"{cursor!r} is not a cursor of this listing")
    return float(activity), key
