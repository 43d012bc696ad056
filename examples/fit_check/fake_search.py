"""A simulated web search API for the fit_check example, on loopback.

``GET /search?q=...`` answers after ``delay_s`` with three deterministic results
whose titles quote the query. Like the real provider it allows ``max_concurrency``
requests in flight and refuses more with 429 and ``retry-after-ms``; it counts
what it served, refused and the most it ever had in flight.

    uvicorn examples.fit_check.fake_search:app --port 9102
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

_KINDS = ("A field guide to", "What we learned about", "Notes on", "Hiring for", "Inside")


@dataclass
class FakeSearch:
    delay_s: float = 0.05
    max_concurrency: int = 4
    queries: list[str] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    refused: int = 0

    async def search(self, request: Request) -> JSONResponse:
        query = request.query_params.get("q", "")
        if self.in_flight >= self.max_concurrency:
            self.refused += 1
            return JSONResponse({"error": "too many requests"}, 429, headers={"retry-after-ms": "100"})
        self.queries.append(query)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay_s)
        finally:
            self.in_flight -= 1
        return JSONResponse({"results": results(query)})

    def asgi(self) -> Starlette:
        return Starlette(routes=[Route("/search", self.search)])


def results(query: str) -> list[dict[str, str]]:
    digest = hashlib.sha256(query.encode()).digest()
    slug = re.sub(r"[^a-z0-9]+", "-", query.lower()).strip("-")[:60]
    return [
        {
            "title": f"{_KINDS[digest[n] % len(_KINDS)]} {query}",
            "url": f"https://search.invalid/{slug}/{digest[4 + n * 4 : 8 + n * 4].hex()}",
            "snippet": f"Result {n + 1} for {query}.",
        }
        for n in range(3)
    ]


app = FakeSearch().asgi()
