"""The signature on every webhook delivery, and its check for receivers.

``Runyard-Signature: t=<unix seconds>,v1=<hex>``, where the hex is the
HMAC-SHA256 of ``b"<t>." + body`` keyed with ``RUNYARD_WEBHOOK_SECRET``. The
time is signed with the body, so a receiver that refuses old signatures
(``tolerance_s``) refuses a captured delivery replayed later."""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "Runyard-Signature"
RUN_ID_HEADER = "Runyard-Run-Id"


def _digest(body: bytes, timestamp: int, secret: str) -> str:
    return hmac.new(secret.encode(), b"%d." % timestamp + body, hashlib.sha256).hexdigest()


def sign(body: bytes, secret: str, at: float | None = None) -> str:
    """The ``Runyard-Signature`` header of ``body`` sent at ``at`` (now by default)."""
    timestamp = int(time.time() if at is None else at)
    return f"t={timestamp},v1={_digest(body, timestamp, secret)}"


def verify_signature(
    body: bytes, header: str | None, secret: str, tolerance_s: float = 300, *, now: float | None = None
) -> bool:
    """Whether ``header`` (a ``Runyard-Signature`` value) signs exactly ``body``
    with ``secret``, at a time within ``tolerance_s`` of ``now`` (of the clock by
    default). Pass the raw request body, before any JSON parsing: a re-encoded
    body does not match. A malformed or missing header is simply not valid."""
    if not header:
        return False
    fields: dict[str, list[str]] = {}
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if sep:
            fields.setdefault(key, []).append(value)
    try:
        (timestamp,) = (int(value) for value in fields.get("t", []))
    except ValueError:  # no t, several, or not a number
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance_s:
        return False
    expected = _digest(body, timestamp, secret)
    # every v1 is tried: a sender rotating secrets may sign with both
    return any(hmac.compare_digest(expected, candidate) for candidate in fields.get("v1", []))
