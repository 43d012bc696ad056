"""``runyard cron add|list|rm``: scheduled runs (issue 13) from the command line."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from runyard.cli_common import OK, parse_input
from runyard.client import Client

ServerFlags = Callable[[argparse.ArgumentParser], None]


def add_cron_command(commands: Any, server_flags: ServerFlags) -> None:
    """The ``cron`` command and its ``add``, ``list`` and ``rm`` subcommands."""
    help = "scheduled runs: add, list or remove crons"
    cron: argparse.ArgumentParser = commands.add_parser("cron", help=help, description=help)
    actions = cron.add_subparsers(dest="cron_command", required=True, metavar="ACTION")

    add = _action(actions, "add", cmd_cron_add, "run PIPELINE at each time of a 5-field cron SCHEDULE")
    add.add_argument("pipeline", metavar="PIPELINE")
    add.add_argument("schedule", metavar="SCHEDULE", help='a 5-field cron expression, e.g. "0 9 * * 1-5"')
    add.add_argument("--input", required=True, metavar="JSON", help="each run's input: JSON, @FILE, or - for stdin")
    add.add_argument("--timezone", metavar="TZ", help="an IANA time zone for the schedule (default UTC)")
    add.add_argument("--session", metavar="S", help="every run enters this session (default: a new one each)")
    add.add_argument("--disabled", action="store_true", help="create it disabled")
    server_flags(add)

    listing = _action(actions, "list", cmd_cron_list, "the caller's crons and their next runs")
    server_flags(listing)

    remove = _action(actions, "rm", cmd_cron_rm, "delete a cron")
    remove.add_argument("cron_id", metavar="CRON_ID")
    server_flags(remove)


def _action(
    actions: Any, name: str, handler: Callable[[argparse.Namespace], int], help: str
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = actions.add_parser(name, help=help, description=help)
    parser.set_defaults(handler=handler)
    return parser


def _client(args: argparse.Namespace) -> Client:
    return Client(args.url, client_id=args.client_id, token=args.token)


def cmd_cron_add(args: argparse.Namespace) -> int:
    run_input = parse_input(args.input)
    with _client(args) as client:
        cron = client.create_cron(
            args.pipeline,
            run_input,
            args.schedule,
            timezone=args.timezone,
            session_id=args.session,
            enabled=False if args.disabled else None,
        )
    print(f"cron {cron['cron_id']} added; next run {cron['next_run_at'] or 'never (disabled)'}")
    return OK


def cmd_cron_list(args: argparse.Namespace) -> int:
    with _client(args) as client:
        crons = client.crons()
    if not crons:
        print("no crons")
    for cron in crons:
        state = cron["next_run_at"] if cron["enabled"] else "disabled"
        print(f"{cron['cron_id']}  {cron['schedule']!r} {cron['timezone']}  {cron['pipeline']}  next: {state}")
    return OK


def cmd_cron_rm(args: argparse.Namespace) -> int:
    with _client(args) as client:
        client.delete_cron(args.cron_id)
    print(f"cron {args.cron_id} removed")
    return OK
