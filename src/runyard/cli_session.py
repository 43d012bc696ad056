"""``runyard tail --session ID``: follow every run of a session, live, until it is deleted or expires."""

from __future__ import annotations

import argparse
import asyncio

from runyard.cli_common import OK, UsageError
from runyard.cli_runs import cmd_tail
from runyard.cli_view import compact
from runyard.client import AsyncClient


def cmd_tail_any(args: argparse.Namespace) -> int:
    """``tail RUN_ID`` follows a run; ``tail --session ID`` a session (one of the two)."""
    if (args.run_id is None) == (args.session is None):
        raise UsageError("tail takes a RUN_ID or --session ID (one of them)")
    if args.session is None:
        if args.after is not None and not args.after.isdigit():
            raise UsageError(f"{args.after!r} is not a non-negative integer")
        args.after = int(args.after or 0)
        return cmd_tail(args)
    return asyncio.run(_tail_session(args))


async def _tail_session(args: argparse.Namespace) -> int:
    """One line per event, ``RUN_ID SEQ TYPE DATA``; exits 0 when the session ends."""
    async with AsyncClient(args.url, client_id=args.client_id, token=args.token) as client:
        async for event in client.stream_session(args.session, after=args.after):
            print(f"{event['run_id']} {event['seq']} {event['type']} {compact(event.get('data'))}", flush=True)
    return OK
