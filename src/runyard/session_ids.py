"""Session ids, chosen by the server or by the client, scoped per owner.

A session's id in the store (its *key*) is what every store table keys it by
(sessions, messages, ``runs.session_id``, the claim's per-session order):

- an id the server generated (``ses_`` and 24 hex digits) is its own key: it is
  random, so unique across owners, and sessions made before chosen ids existed
  keep their keys (no data migration);
- an id the client chose is keyed ``<owner>/<id>``: ``/`` is not in a chosen
  id's alphabet, so the key is unambiguous (the owner is all before the last
  ``/``), and two owners choosing the same id get two sessions.

The HTTP answers, the logs and a pipeline's ``ctx.session_id`` show the public
id (``public_session_id``); the stores never need to know.
"""

from __future__ import annotations

import re

SESSION_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")  # what a client may choose
GENERATED = re.compile(r"ses_[0-9a-f]{24}")  # what ``new_id("ses")`` makes
_SCOPE = "/"


def session_key(owner: str, session_id: str) -> str | None:
    """The store key of ``owner``'s session ``session_id`` (a public id, or a key
    of this owner's as a ``Run`` carries it); None when it cannot be one of theirs."""
    scope, _, public = session_id.rpartition(_SCOPE)
    if not SESSION_ID.fullmatch(public):
        return None
    if scope:  # a key already: only this owner's own
        return session_id if scope == owner and not GENERATED.fullmatch(public) else None
    if GENERATED.fullmatch(public):
        return public
    return f"{owner}{_SCOPE}{public}"


def public_session_id(key: str) -> str:
    """The id a client sees for the session keyed ``key``."""
    return key.rpartition(_SCOPE)[2]
