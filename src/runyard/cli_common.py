"""What every ``runyard`` command shares: exit statuses, usage errors, notes on
stderr, and reading a JSON argument."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from runyard.client import APIError

OK, FAILED, USAGE, INTERRUPTED = 0, 1, 2, 130


class UsageError(Exception):
    """A mistake of the caller's: printed on one line, exit status 2."""


def note(message: str) -> None:
    print(f"runyard: {message}", file=sys.stderr)


def owner_hint(error: APIError, args: argparse.Namespace) -> str:
    """What to try after a 404 for a run or session: it may well exist, under another owner."""
    if error.code not in ("run_not_found", "session_not_found"):
        return ""
    if getattr(args, "token", None):
        return "; asked as the subject of --token, who sees only their own runs and sessions"
    client_id = getattr(args, "client_id", None)
    who = f"as {client_id!r} (--client-id)" if client_id else "as 'anonymous' (no --client-id)"
    return (
        f"; asked {who}: runs and sessions are visible only to their owner; to reach another's, pass"
        " --client-id OWNER (or set RUNYARD_CLIENT_ID); the dashboard shows each run's owner"
    )


# -- the parser ----------------------------------------------------------------------


def parse_input(text: str, flag: str = "--input") -> Any:
    """``--input`` (or ``--value``): JSON, ``@path`` of a JSON file, or ``-`` for JSON on stdin."""
    if text == "-":
        text = sys.stdin.read()
    elif text.startswith("@"):
        try:
            text = Path(text[1:]).read_text()
        except OSError as exc:
            raise UsageError(f"cannot read {flag} file {text[1:]!r}: {exc.strerror}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{flag} is not valid JSON: {exc.msg} (line {exc.lineno} column {exc.colno})") from None
