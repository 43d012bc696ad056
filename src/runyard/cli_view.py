"""What ``runyard run`` shows while it follows a run: phases as lines, tokens as
flowing text, progress as a bar (on a terminal) or as lines (in a pipe), errors
in red, and the final output as JSON."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.json import JSON
from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn
from rich.text import Text


def compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def data_field(data: Any, key: str) -> Any:
    return data.get(key) if isinstance(data, dict) else None


def timestamp(value: Any) -> float | None:
    """An RFC 3339 time (an event's ``ts``, a snapshot's ``created_at``) in seconds, if it is one."""
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp() if value else None
    except ValueError:
        return None


def duration(seconds: float) -> str:
    """``0.42s``, ``12.3s``, ``2m05s``: precise while short, readable when long."""
    if seconds < 10:
        return f"{seconds:.2f}s"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m{rest:02d}s"


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
        self._created: float | None = None  # the run's created_at: the total time counts from it
        self._now: float | None = None  # the ts of the event being shown
        self._phases: dict[Any, float] = {}  # phases started and not yet done: when they started
        self._streamed: list[str] = []  # every token's text: the output need not show it again
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

    def started(self, snapshot: Mapping[str, Any]) -> None:
        run, pipeline, session = snapshot["run_id"], snapshot["pipeline"], snapshot["session_id"]
        self._created = timestamp(snapshot.get("created_at"))
        self._line(f"run {run} · {pipeline} · session {session}", "dim")

    def show(self, event: Mapping[str, Any]) -> None:
        self._now = timestamp(event.get("ts"))
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
        took = ""
        if mark == "▸" and self._now is not None:
            self._phases[name] = self._now
        elif (began := self._phases.pop(name, None)) is not None and self._now is not None:
            took = f" ({duration(self._now - began)})"
        self._line(f"{mark} {name} {status}{took}", style)

    def _on_token(self, data: Any) -> None:
        text = str(data_field(data, "text") or "")
        self._streamed.append(text)
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
        took = f" in {duration(self._now - self._created)}" if self._now and self._created else ""
        if self.status == "succeeded":
            self._line(f"✓ succeeded{took}", "bold green")
            self._output(data_field(data, "output"))
            return
        error = data_field(data, "error")
        code, message = data_field(error, "code"), data_field(error, "message")
        detail = f": {code}: {message}" if error and (code, message) != self._last_error else ""
        self._line(f"✗ {self.status}{took}{detail}", "bold red")

    def _output(self, output: Any) -> None:
        """The output as JSON, but for the text the tokens streamed already (a chat's
        ``reply``), which is named rather than printed a second time."""
        streamed = "".join(self._streamed).strip()
        if streamed and isinstance(output, str) and output.strip() == streamed:
            self._line("(the output is the text streamed above)", "dim")
            return
        if streamed and isinstance(output, dict):
            repeats = [key for key, value in output.items() if isinstance(value, str) and value.strip() == streamed]
            if repeats:
                output = {key: value for key, value in output.items() if key not in repeats}
                self._line(f"({', '.join(repeats)}: the text streamed above)", "dim")
        self.console.print(JSON.from_data(output) if self.live else json.dumps(output, indent=2))

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
