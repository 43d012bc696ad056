"""The trace context a run carries (``Run.trace``), as stored on every store: a
W3C ``traceparent``, then a newline and the ``tracestate`` when there is one.
Either the creating request's (``observability.tracing.incoming``) or, without
one, a trace of the run's own: a fresh trace id and an all-zero parent span id
(no span is its parent: its first execution's span is the trace's root)."""

from __future__ import annotations

import secrets

NO_PARENT_SPAN = "0" * 16


def new_trace() -> str:
    """The trace context of a run that starts a trace of its own (sampled)."""
    return f"00-{secrets.token_hex(16)}-{NO_PARENT_SPAN}-01"
