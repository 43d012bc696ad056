"""Webhooks (issue 13): a run created with ``"webhook": "https://..."`` has its
final snapshot POSTed there once it finishes, signed, at least once, from a
durable outbox (``runyard.webhooks.outbox``), to addresses checked against
server-side request forgery (``runyard.webhooks.addresses``).

Receivers check a delivery with ``verify_signature(raw_body, header, secret)``."""

from __future__ import annotations

from runyard.webhooks.signing import RUN_ID_HEADER, SIGNATURE_HEADER, sign, verify_signature

__all__ = ["RUN_ID_HEADER", "SIGNATURE_HEADER", "sign", "verify_signature"]
