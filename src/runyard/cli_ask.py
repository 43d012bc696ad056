"""How ``runyard run`` answers a run that asks for input (``ctx.ask``): it shows the
question and the shape of the answer it wants, reads a line at the terminal, and
posts it. Where no one can answer (stdin is not a terminal, or ends), it says how
to answer later with ``runyard answer`` instead."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shlex
import threading
from typing import Any, TextIO

from rich.text import Text

from runyard.cli_view import RunView, data_field, describe_schema
from runyard.client import DEFAULT_URL, APIError, AsyncClient


def allows_string(schema: Any) -> bool:
    """Whether a plain string may answer: no schema, or one a string can satisfy."""
    if not isinstance(schema, dict) or not schema:
        return True
    if "enum" in schema or "const" in schema:
        return any(isinstance(choice, str) for choice in schema.get("enum", [schema.get("const")]))
    for key in ("anyOf", "oneOf"):
        if isinstance(schema.get(key), list):
            return any(allows_string(option) for option in schema[key])
    kind = schema.get("type")
    return kind == "string" or (isinstance(kind, list) and "string" in kind)


def parse_answer(line: str, schema: Any) -> Any:
    """The answer typed: JSON, or the text itself where a string may answer; ``ValueError`` else."""
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        if allows_string(schema):
            return line
        raise ValueError(f"not valid JSON ({exc.msg}), and the answer must be {describe_schema(schema)}") from None


def answer_hint(run_id: str, url: str) -> str:
    """The command that answers ``run_id`` later."""
    server = "" if url == DEFAULT_URL else f" --url {shlex.quote(url)}"
    return f"runyard answer {run_id} --value JSON{server}"


class Asker:
    """Answers a run's ``input.requested`` from a person at ``stdin``, if there is one."""

    def __init__(self, view: RunView, stdin: TextIO, *, interactive: bool) -> None:
        self.view = view
        self.console = view.console
        self.stdin = stdin
        self.interactive = interactive

    async def answer(self, client: AsyncClient, run_id: str, requested: Any) -> bool:
        """Prompt until an answer is accepted (True), or until no one can answer (False).

        An answer the server refuses because the run no longer waits for this question
        (answered elsewhere, cancelled) counts as done: the stream tells what followed.
        """
        self.view.close()  # a live progress bar must not redraw over the prompt
        schema, ask_id = data_field(requested, "schema"), data_field(requested, "ask_id")
        while self.interactive:
            line = await self._prompt()
            if line is None:
                return False
            try:
                value = parse_answer(line, schema)
                await client.answer(run_id, value, ask_id=ask_id)
                return True
            except ValueError as exc:
                self._say(f"✗ {exc}; try again", "red")
            except APIError as exc:
                if exc.status != 422:
                    self._say(f"· not answered: {exc.message} ({exc.code})", "yellow")
                    return True
                self._say(f"✗ {exc.message}; try again", "red")
        return False

    async def _prompt(self) -> str | None:
        self.console.print(Text("answer> ", style="bold"), end="")
        line = await _read_line(self.stdin)
        if not line:  # EOF: no one is there to answer
            self.console.print()
            return None
        return line.rstrip("\r\n")

    def _say(self, text: str, style: str) -> None:
        self.console.print(Text(text, style=style))


async def _read_line(stdin: TextIO) -> str:
    """One line of ``stdin`` ('' at its end), read in a daemon thread: the event loop stays free
    to notice Ctrl-C, and a thread still blocked on the terminal does not hold up the exit
    (the default executor's threads would)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[str] = loop.create_future()

    def settle(line: str | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(line or "")

    def read() -> None:
        line, error = None, None
        try:
            line = stdin.readline()
        except (OSError, ValueError) as exc:
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop is gone: no one waits for this line
            loop.call_soon_threadsafe(settle, line, error)

    threading.Thread(target=read, name="runyard-answer", daemon=True).start()
    return await future
