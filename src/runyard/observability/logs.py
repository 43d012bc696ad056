"""Logging: JSON lines (or readable lines on a terminal) that carry the run's
ids on every line emitted inside a run, the pipeline's own ``logging`` calls
included, because they are read from the run's contextvar; and the request id
on every line emitted while an HTTP request is handled."""

from __future__ import annotations

import itertools
import logging
import sys
import time
import traceback
from contextvars import ContextVar
from typing import Any, Literal, Protocol

import orjson

from runyard.session_ids import public_session_id
from runyard.settings import Settings

# color_message: uvicorn's ANSI-coloured copy of the message, noise in a JSON line
_BUILT = len(vars(logging.LogRecord("", 0, "", 0, "", None, None)))  # a record's own attributes, set first
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "color_message"}


REQUEST_ID: ContextVar[str | None] = ContextVar("runyard_request_id", default=None)


def run_fields() -> dict[str, str]:
    """The running run's ids and the request's id, where they apply."""
    from runyard.context import _current

    fields: dict[str, str] = {}
    request_id = REQUEST_ID.get()
    if request_id is not None:
        fields["request_id"] = request_id
    ctx = _current.get(None)
    if ctx is not None:
        fields.update(run_id=ctx.run_id, session_id=ctx.session_id, owner=ctx.owner, pipeline=ctx.pipeline)
        if ctx.trace_id is not None:
            fields["trace_id"] = ctx.trace_id
    return fields


RUN_LOG = logging.getLogger("runyard.runs")
RunTransition = Literal["created", "started", "waiting", "resumed", "handed_back", "ended"]


class RunFacts(Protocol):
    """What a line of a run's life names (a ``Run``; a run the store cancelled)."""

    @property
    def run_id(self) -> str: ...
    @property
    def session_id(self) -> str: ...
    @property
    def owner(self) -> str: ...
    @property
    def pipeline(self) -> str: ...
    @property
    def attempt(self) -> int: ...


def log_run(transition: RunTransition, run: RunFacts, **fields: Any) -> None:
    """The one line of a run's life for ``transition``, carrying the run's
    ``run_id``, ``session_id``, ``owner``, ``pipeline`` and ``attempt`` (and
    ``fields``, and its ``trace_id`` when it is known), so that an operator can
    grep one run across every process, and go from the line to its trace."""
    trace_id = getattr(run, "trace_id", None)  # a run the store cancelled is told without it
    if trace_id is not None:
        fields["trace_id"] = trace_id
    RUN_LOG.info(
        "run %s %s",
        run.run_id,
        transition.replace("_", " "),
        extra={
            "transition": transition,
            "run_id": run.run_id,
            "session_id": public_session_id(run.session_id),
            "owner": run.owner,
            "pipeline": run.pipeline,
            "attempt": run.attempt,
            **fields,
        },
    )


class JSONFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._second_text = ""  # that second, formatted: lines of one second share it

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": f"{self._time(int(record.created))}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **run_fields(),
        }
        # the fields given as ``extra`` (and any set later), in their order: those the
        # record sets itself come first, and comparing each of them was a third of the line's cost
        extra = itertools.islice(vars(record).items(), _BUILT, None)
        line.update((k, v) for k, v in extra if k not in _STANDARD)
        if record.exc_info:
            line["exception"] = "".join(traceback.format_exception(*record.exc_info))
        return orjson.dumps(line, default=str).decode()

    def _time(self, second: int) -> str:
        if second != self._second:
            self._second, self._second_text = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return self._second_text


class ConsoleFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = run_fields()
        tags = [fields[name] for name in ("pipeline", "run_id", "request_id") if name in fields]
        return super().format(record) + (f" [{' '.join(tags)}]" if tags else "")


def configure_logging(settings: Settings) -> None:
    """Route every logger to stderr in the configured format and level.

    Neither format names the caller's file and line, its thread or its process,
    so records are made without looking them up (the logging HOWTO's
    "Optimization"): a run's line cost 16.5 µs with them, 11.2 without."""
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    fmt = settings.log_format
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    handler = logging.StreamHandler()
    handler.setFormatter(
        JSONFormatter() if fmt == "json" else ConsoleFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
