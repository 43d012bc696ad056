"""The ``runyard`` commands that talk to a server: ``run``, ``answer``, ``tail``
and ``loadtest``."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import dataclass
from typing import Any

import httpx
from rich.console import Console

from runyard.cli_ask import Asker, answer_hint
from runyard.cli_common import FAILED, INTERRUPTED, OK, UsageError, note, parse_input
from runyard.cli_view import RunView, compact, data_field
from runyard.client import APIError, AsyncClient, StreamLost


def _client(args: argparse.Namespace) -> AsyncClient:
    return AsyncClient(args.url, client_id=args.client_id, token=args.token)


@dataclass(slots=True)
class _Started:
    run_id: str | None = None


def cmd_run(args: argparse.Namespace) -> int:
    run_input = parse_input(args.input)
    started = _Started()
    try:
        return asyncio.run(_run(args, run_input, started))
    except KeyboardInterrupt:
        if started.run_id is not None:
            note(f"interrupted: cancelling run {started.run_id}")
            asyncio.run(_cancel(args, started.run_id))
        return INTERRUPTED


async def _run(args: argparse.Namespace, run_input: Any, started: _Started) -> int:
    view = _view()
    asker = Asker(view, sys.stdin, interactive=sys.stdin.isatty())
    async with _client(args) as client:
        snapshot = await client.create(args.pipeline, run_input, session_id=args.session, webhook=args.webhook)
        started.run_id = run_id = snapshot["run_id"]
        view.started(snapshot)
        return await _follow(args, client, view, run_id, 0, asker)


def _view() -> RunView:
    console = Console(soft_wrap=True, markup=False, emoji=False, highlight=False)
    return RunView(console, live=console.is_terminal)


async def _follow(
    args: argparse.Namespace, client: AsyncClient, view: RunView, run_id: str, after: int, asker: Asker | None
) -> int:
    """Show the run's events after ``after`` until its end; exit status 0 if it succeeded.
    With an ``asker``, a question is answered here (or the command leaves the run waiting)."""
    try:
        async for event in client.stream(run_id, after=after):
            view.show(event)
            asked = asker is not None and event["type"] == "input.requested"
            if asked and asker is not None and not await asker.answer(client, run_id, event["data"]):
                view.waiting(answer_hint(run_id, args.url))
                return OK  # no one here can answer: the run waits for someone who can
    except StreamLost as exc:
        raise StreamLost(f"{exc.message}; the run goes on: runyard tail {run_id} --url {args.url}") from exc
    finally:
        view.close()
    status = view.status or (await client.snapshot(run_id))["status"]
    return OK if status == "succeeded" else FAILED


def cmd_answer(args: argparse.Namespace) -> int:
    value = parse_input(args.value, "--value")
    return asyncio.run(_answer_run(args, value))


async def _answer_run(args: argparse.Namespace, value: Any) -> int:
    async with _client(args) as client:
        snapshot = await client.answer(args.run_id, value, ask_id=args.ask_id)
    print(f"run {snapshot['run_id']} answered; now {snapshot['status']}")
    return OK


async def _cancel(args: argparse.Namespace, run_id: str) -> None:
    async with _client(args) as client:
        try:
            await client.cancel(run_id)
        except APIError as exc:
            if exc.code != "run_finished":
                note(f"could not cancel run {run_id}: {exc}")
        except httpx.HTTPError as exc:
            note(f"could not cancel run {run_id}: {exc}")


def cmd_loadtest(args: argparse.Namespace) -> int:
    from runyard import loadtest

    try:
        config = loadtest.Config(
            url=args.url,
            sessions=args.sessions,
            events=args.events,
            interval_ms=args.interval_ms,
            duration_s=args.duration,
            timeout_s=args.timeout,
            client_id=args.client_id,
            token=args.token,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    console = Console(highlight=False)
    if console.is_terminal and not args.json:  # a pipe, or --json, gets the report alone
        from runyard.loadtest.live import LiveProgress

        with LiveProgress(console, config) as live:
            report = asyncio.run(loadtest.run(config, watch=live))
    else:
        report = asyncio.run(loadtest.run(config))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        loadtest.show(report, console)
    return OK if report["ok"] else FAILED


def cmd_tail(args: argparse.Namespace) -> int:
    return asyncio.run(_tail(args))


async def _tail(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        snapshot = await client.snapshot(args.run_id)  # fails fast: no server, or no such run of yours
        if args.raw:
            return await _tail_raw(args, client)
        view = _view()
        view.started(snapshot)
        return await _follow(args, client, view, args.run_id, args.after, None)


async def _tail_raw(args: argparse.Namespace, client: AsyncClient) -> int:
    """One line per event, ``SEQ TYPE DATA``, for scripts."""
    status = None
    async for event in client.stream(args.run_id, after=args.after):
        print(f"{event['seq']} {event['type']} {compact(event.get('data'))}", flush=True)
        if event["type"] == "end":
            status = data_field(event.get("data"), "status")
    if status is None:
        status = (await client.snapshot(args.run_id))["status"]
    return OK if status == "succeeded" else FAILED
