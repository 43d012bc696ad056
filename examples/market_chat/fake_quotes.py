"""A simulated market-data API on loopback: ``GET /v1/quotes/{symbol}``.

Like the real ones, it answers a quote with far more than a chat needs: the
headline numbers plus a thousand intraday points and the day's news, some 60 KB
of JSON. Prices are derived from the symbol, so answers are deterministic.

    python -m examples.market_chat.fake_quotes --port 9102
"""

from __future__ import annotations

import argparse
import hashlib
import re
from dataclasses import dataclass
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

DEFAULT_PORT = 9102
POINTS = 1000  # intraday points in every answer: what makes it large
SYMBOL = re.compile(r"[A-Z][A-Z0-9.]{0,9}")


def price_of(symbol: str) -> float:
    """The symbol's price today: 10.00 to 509.99, the same on every call."""
    digest = hashlib.sha256(symbol.encode()).digest()
    return round(10 + int.from_bytes(digest[:4], "big") % 50_000 / 100, 2)


def quote(symbol: str) -> dict[str, Any]:
    price = price_of(symbol)
    change_pct = round((price * 7) % 6 - 3, 2)
    opened = round(price / (1 + change_pct / 100), 2)
    step = (price - opened) / POINTS
    points = [{"second": i * 23, "price": round(opened + step * i, 4), "volume": 100 + i % 97} for i in range(POINTS)]
    news = [{"headline": f"{symbol}: analyst note {n} on the sector", "source": "simwire"} for n in range(20)]
    return {
        "symbol": symbol,
        "price": price,
        "currency": "USD",
        "change_pct": change_pct,
        "open": opened,
        "as_of": "2026-11-23T16:00:00Z",
        "intraday": points,
        "news": news,
    }


@dataclass
class FakeQuotes:
    """The API, counting the quotes it served."""

    served: int = 0

    async def get_quote(self, request: Request) -> JSONResponse:
        symbol = request.path_params["symbol"]
        if not SYMBOL.fullmatch(symbol):
            return JSONResponse({"error": f"unknown symbol {symbol!r}"}, 404)
        self.served += 1
        return JSONResponse(quote(symbol))

    def asgi(self) -> Starlette:
        return Starlette(routes=[Route("/v1/quotes/{symbol}", self.get_quote)])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A simulated market-data API for market_chat.")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    args = parser.parse_args(argv)
    uvicorn.run(FakeQuotes().asgi(), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
