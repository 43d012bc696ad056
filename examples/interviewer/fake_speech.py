"""Simulated speech providers on loopback, each with a hard concurrency cap, as the
real ones have: speech-to-text allows 5 requests in flight, text-to-speech 26.
A request over the cap is refused at once with 429; every provider counts what
it saw (``GET /stats``: ``peak`` in flight, ``served``, ``refused``).

- STT ``POST /v1/audio/transcriptions`` ``{"audio": base64, "language"}`` ->
  ``{"text"}``. The simulated "audio" is the spoken text in UTF-8, so a test
  knows what each chunk should transcribe to.
- TTS ``POST /v1/audio/speech`` ``{"input", "voice"}`` -> ``audio/pcm`` bytes
  (``[voice] text`` in UTF-8: deterministic and readable).

    python -m examples.interviewer.fake_speech stt --port 9202
    python -m examples.interviewer.fake_speech tts --port 9203
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
from dataclasses import dataclass
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

STT_CAP, TTS_CAP = 5, 26
STT_PORT, TTS_PORT = 9202, 9203


@dataclass
class CappedProvider:
    """A provider that serves at most ``cap`` requests at once, each taking ``delay_s``."""

    cap: int
    delay_s: float = 0.1
    in_flight: int = 0
    peak: int = 0
    served: int = 0
    refused: int = 0

    path = "/"

    async def handle(self, request: Request) -> Response:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            if self.in_flight > self.cap:
                self.refused += 1
                error = {"message": f"more than {self.cap} concurrent requests", "type": "rate_limit_exceeded"}
                return JSONResponse({"error": error}, 429, headers={"retry-after-ms": "200"})
            body = await request.json()
            await asyncio.sleep(self.delay_s)
            response = self.work(body)
            self.served += 1
            return response
        finally:
            self.in_flight -= 1

    def work(self, body: dict[str, Any]) -> Response:
        raise NotImplementedError

    async def stats(self, request: Request) -> JSONResponse:
        return JSONResponse(self.counts())

    def counts(self) -> dict[str, int]:
        return {"cap": self.cap, "peak": self.peak, "served": self.served, "refused": self.refused}

    def asgi(self) -> Starlette:
        return Starlette(routes=[Route(self.path, self.handle, methods=["POST"]), Route("/stats", self.stats)])


class FakeSTT(CappedProvider):
    path = "/v1/audio/transcriptions"

    def __init__(self, cap: int = STT_CAP, delay_s: float = 0.1) -> None:
        super().__init__(cap, delay_s)

    def work(self, body: dict[str, Any]) -> Response:
        try:
            text = base64.b64decode(str(body["audio"]), validate=True).decode()
        except (KeyError, binascii.Error, UnicodeDecodeError):
            return JSONResponse({"error": {"message": "audio must be base64"}}, 400)
        return JSONResponse({"text": text, "language": body.get("language", "en")})


class FakeTTS(CappedProvider):
    path = "/v1/audio/speech"

    def __init__(self, cap: int = TTS_CAP, delay_s: float = 0.1) -> None:
        super().__init__(cap, delay_s)

    def work(self, body: dict[str, Any]) -> Response:
        text = body.get("input")
        if not isinstance(text, str) or not text:
            return JSONResponse({"error": {"message": "input must be text"}}, 400)
        audio = f"[{body.get('voice', 'alloy')}] {text}".encode()
        return Response(audio, media_type="audio/pcm")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Simulated speech providers with concurrency caps.")
    parser.add_argument("provider", choices=["stt", "tts"])
    parser.add_argument("--port", type=int, help=f"default {STT_PORT} (stt) or {TTS_PORT} (tts)")
    args = parser.parse_args(argv)
    provider: CappedProvider = FakeSTT() if args.provider == "stt" else FakeTTS()
    port = args.port or (STT_PORT if args.provider == "stt" else TTS_PORT)
    uvicorn.run(provider.asgi(), host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
