"""What ``runyard run`` shows while it follows a run: phases as lines, tokens as
flowing text, progress as a bar (on a terminal) or as lines (in a pipe), errors
in red, and the final output as JSON."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.json import JSON
from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn
from rich.text import Text


def compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def data_field(data: Any, key: str) -> Any:
    return data.get(key) if isinstance(data, dict) else None


_PHASE_MARKS = {
    "started": ("▸", "cyan"),
    "running": ("▸", "cyan"),
    "done": ("✓", "green"),
    "completed": ("✓", "green"),
    "succeeded": ("✓", "green"),
    "finished": ("✓", "green"),
    "failed": ("✗", "red"),
    "error": ("✗", "red"),
}


# How a status that is not the end shows; the terminal status comes with `end`.
_STATUS_MARKS = {
    "queued": ("·", "dim"),
    "running": ("·", "dim"),
    "waiting": ("⏸", "yellow"),
}


def shown_request(request: Any) -> str:
    """A run's question as a person reads it: text as is, anything else as JSON."""
    return request if isinstance(request, str) else compact(request)


def describe_schema(schema: Any) -> str:
    """A one-line sketch of the JSON a schema accepts: ``{"approve": boolean, "note"?: string}``."""
    if not isinstance(schema, dict) or not schema:
        return "any JSON"
    if "enum" in schema:
        return " | ".join(compact(choice) for choice in schema["enum"])
    if "const" in schema:
        return compact(schema["const"])
    for key in ("anyOf", "oneOf"):
        if isinstance(schema.get(key), list):
            return " | ".join(describe_schema(option) for option in schema[key])
    kind = schema.get("type")
    if kind == "object" and isinstance(schema.get("properties"), dict):
        required = set(schema.get("required", []))
        fields = [
            f"{compact(name)}{'' if name in required else '?'}: {describe_schema(spec)}"
            for name, spec in schema["properties"].items()
        ]
        return "{" + ", ".join(fields) + "}"
    if kind == "array":
        return f"[{describe_schema(schema.get('items'))}, ...]"
    if isinstance(kind, list):
        return " | ".join(str(k) for k in kind)
    return str(kind) if kind else "JSON"


class RunView:
    """One run's events on a console: a line per phase, status or error, tokens as
    flowing text, the output as JSON, and progress as a live bar on a terminal
    (``live``) or as plain lines elsewhere."""

    def __init__(self, console: Console, *, live: bool) -> None:
        self.console = console
        self.live = live
        self.status: str | None = None
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._mid_line = False  # flowing text printed since the last newline
        self._pending = ""  # tokens held back while a live bar owns the bottom line
        self._last_error: tuple[Any, Any] | None = None
        self._handlers: dict[str, Callable[[Any], None]] = {
            "status": self._on_status,
            "phase": self._on_phase,
            "token": self._on_token,
            "progress": self._on_progress,
            "error": self._on_error,
            "limit.wait": self._on_limit_wait,
            "input.requested": self._on_input_requested,
            "input.received": self._on_input_received,
            "end": self._on_end,
        }

    def started(self, snapshot: dict[str, Any]) -> None:
        run, pipeline, session = snapshot["run_id"], snapshot["pipeline"], snapshot["session_id"]
        self._line(f"run {run} · {pipeline} · session {session}", "dim")

    def show(self, event: dict[str, Any]) -> None:
        handler = self._handlers.get(event["type"])
        if handler is not None:
            handler(event.get("data"))
            return
        data = compact(event.get("data"))
        self._line(f"{event['type']} {data if len(data) <= 200 else data[:199] + '…'}", "dim")

    def waiting(self, hint: str) -> None:
        """The run waits for an answer no one here can give: say how to give it."""
        self._line(f"⏸ the run is waiting for input; answer it with: {hint}", "yellow")

    def close(self) -> None:
        self._stop_progress()
        self._end_text()

    def _on_status(self, data: Any) -> None:
        status, until = data_field(data, "status"), data_field(data, "until")
        # waiting for an answer follows its question (input.requested), which says so already
        if status not in _STATUS_MARKS or (status == "waiting" and not until):
            return
        mark, style = _STATUS_MARKS[status]
        self._line(f"{mark} {'sleeping until ' + str(until) if until else status}", style)

    def _on_input_requested(self, data: Any) -> None:
        self._line(f"? {shown_request(data_field(data, 'request'))}", "bold")
        schema = data_field(data, "schema")
        if schema is not None:
            self._line(f"  answer with: {describe_schema(schema)}", "cyan")

    def _on_input_received(self, data: Any) -> None:
        self._line("✓ answer received", "green")

    def _on_phase(self, data: Any) -> None:
        name, status = data_field(data, "name"), data_field(data, "status")
        mark, style = _PHASE_MARKS.get(str(status), ("·", ""))
        self._line(f"{mark} {name} {status}", style)

    def _on_token(self, data: Any) -> None:
        text = str(data_field(data, "text") or "")
        if self._progress is None:
            self._flow(text)
            return
        *lines, self._pending = (self._pending + text).split("\n")
        for line in lines:
            self.console.print(Text(line))

    def _on_progress(self, data: Any) -> None:
        current, total, fraction, message = (data_field(data, k) for k in ("current", "total", "fraction", "message"))
        if not self.live:
            self._line(_progress_line(current, total, fraction, message))
            return
        if not isinstance(total, int | float) or total <= 0 or not isinstance(current, int | float):
            current, total = (fraction if isinstance(fraction, int | float) else 0), 1
        if self._progress is None:
            self._end_text()
            columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn())
            self._progress = Progress(*columns, console=self.console)
            self._progress.start()
            self._task = self._progress.add_task("", total=total)
        assert self._task is not None
        self._progress.update(self._task, completed=current, total=total, description=str(message or "progress"))
        self._progress.refresh()
        if current >= total:  # done: leave the full bar behind and let text flow again
            self._stop_progress()

    def _on_error(self, data: Any) -> None:
        self._last_error = (data_field(data, "code"), data_field(data, "message"))
        self._line(f"✗ error {self._last_error[0]}: {self._last_error[1]}", "red")

    def _on_limit_wait(self, data: Any) -> None:
        self._line(f"… waiting for {data_field(data, 'limit')} ({data_field(data, 'queued_behind')} ahead)", "yellow")

    def _on_end(self, data: Any) -> None:
        self.close()
        self.status = str(data_field(data, "status"))
        if self.status == "succeeded":
            self._line("✓ succeeded", "bold green")
            output = data_field(data, "output")
            self.console.print(JSON.from_data(output) if self.live else json.dumps(output, indent=2))
            return
        error = data_field(data, "error")
        code, message = data_field(error, "code"), data_field(error, "message")
        detail = f": {code}: {message}" if error and (code, message) != self._last_error else ""
        self._line(f"✗ {self.status}{detail}", "bold red")

    def _line(self, text: str, style: str = "") -> None:
        if self._pending:
            self.console.print(Text(self._pending))
            self._pending = ""
        self._end_text()
        self.console.print(Text(text, style=style))

    def _flow(self, text: str) -> None:
        if text:
            self.console.print(text, end="")
            self._mid_line = not text.endswith("\n")

    def _end_text(self) -> None:
        if self._mid_line:
            self.console.print()
            self._mid_line = False

    def _stop_progress(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress, self._task = None, None
            pending, self._pending = self._pending, ""
            self._flow(pending)


def _progress_line(current: Any, total: Any, fraction: Any, message: Any) -> str:
    if not isinstance(fraction, int | float) and isinstance(current, int | float) and total:
        fraction = current / total
    parts = ["progress"]
    if isinstance(fraction, int | float):
        parts.append(f"{fraction:.0%}")
    if current is not None:
        parts.append(f"({current}/{total})" if total is not None else f"({current})")
    if message:
        parts.append(str(message))
    return " ".join(parts)
