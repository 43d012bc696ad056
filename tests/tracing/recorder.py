"""A downstream service on loopback for the outbound specs: it records the
headers of every request it is sent and answers like an OpenAI-compatible
``/chat/completions`` (a JSON reply, or an SSE stream when asked to stream),
and any other request with ``{}`` (a webhook receiver, a runyard API)."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

REPLY = {
    "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}
CHUNKS = [
    {"model": "m", "choices": [{"index": 0, "delta": {"content": "ok"}, "finish_reason": None}]},
    {"model": "m", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
]


class Recorder:
    """The headers of every request, in arrival order, by path."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.lock = threading.Lock()

    def headers(self, path_end: str = "") -> list[dict[str, str]]:
        with self.lock:
            return [headers for path, headers in self.requests if path.endswith(path_end)]

    def handler(self) -> type[BaseHTTPRequestHandler]:
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                self.answer(b"")

            def do_POST(self) -> None:
                self.answer(self.rfile.read(int(self.headers.get("Content-Length", 0))))

            def answer(self, body: bytes) -> None:
                with recorder.lock:
                    recorder.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                asked = json.loads(body) if self.path.endswith("/chat/completions") else None
                if asked is not None and asked.get("stream"):
                    lines = [f"data: {json.dumps(chunk)}\n\n" for chunk in CHUNKS] + ["data: [DONE]\n\n"]
                    self.send("text/event-stream", "".join(lines).encode())
                else:
                    self.send("application/json", json.dumps(REPLY if asked is not None else {}).encode())

            def send(self, content_type: str, payload: bytes) -> None:
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        return Handler


@contextlib.contextmanager
def recording() -> Iterator[tuple[Recorder, str]]:
    """A recorder serving on a free loopback port, and its base URL."""
    found = Recorder()
    server = ThreadingHTTPServer(("127.0.0.1", 0), found.handler())
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield found, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
