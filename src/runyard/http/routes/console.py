"""The operations console's API: each pipeline's health over a recent window
(``GET /v1/stats/pipelines``) and what the dashboard needs to know of this
server's settings (``GET /v1/console``)."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel
from starlette.responses import Response

from runyard.http.answers import errors
from runyard.http.auth import principal_of
from runyard.http.responses import StrictJSONRoute, json_response, runtime_of
from runyard.http.schemas import OwnerParameter
from runyard.models import now, rfc3339
from runyard.pricing import Price, cost
from runyard.store.stats import PipelineStats

router = APIRouter(tags=["console"], route_class=StrictJSONRoute, responses=errors(400, 401, 403, 422))

WINDOW = re.compile(r"^([1-9][0-9]{0,3})([mhd])$")
UNIT_S = {"m": 60, "h": 3600, "d": 86400}
WINDOW_MAX_S = 31 * 86400


class PipelineHealth(BaseModel):
    pipeline: str
    runs: int
    succeeded: int
    failed: int
    cancelled: int
    success_rate: float | None
    p50_s: float | None
    p95_s: float | None
    input_tokens: int
    output_tokens: int
    cost: float | None


class PipelineStatsAnswer(BaseModel):
    window: str
    since: str
    pipelines: list[PipelineHealth]


class ConsoleSettings(BaseModel):
    auth: str
    playground: bool
    trace_url: str | None
    prices: dict[str, dict[str, float]]


def window_seconds(window: str) -> float:
    match = WINDOW.fullmatch(window)
    assert match is not None  # the query's pattern said so
    return min(int(match[1]) * UNIT_S[match[2]], WINDOW_MAX_S)


def health(stats: PipelineStats, prices: dict[str, Price]) -> dict[str, Any]:
    ended = stats.succeeded + stats.failed  # cancelled runs were asked to stop: neither success nor failure
    return {
        "pipeline": stats.pipeline,
        "runs": stats.runs,
        "succeeded": stats.succeeded,
        "failed": stats.failed,
        "cancelled": stats.cancelled,
        "success_rate": stats.succeeded / ended if ended else None,
        "p50_s": stats.p50_s,
        "p95_s": stats.p95_s,
        "input_tokens": sum(tokens.input for tokens in stats.tokens.values()),
        "output_tokens": sum(tokens.output for tokens in stats.tokens.values()),
        "cost": cost(stats.tokens, prices),
    }


@router.get(
    "/v1/stats/pipelines",
    summary="Each pipeline's runs that finished in the last window: outcomes, durations, tokens and cost",
    response_model=PipelineStatsAnswer,
)
async def pipeline_stats(
    request: Request,
    window: Annotated[
        str, Query(pattern=WINDOW.pattern, description="how far back: 15m, 1h, 24h, 7d (at most 31d)")
    ] = "1h",
    owner: OwnerParameter = None,
) -> Response:
    runtime = runtime_of(request)
    since = now() - window_seconds(window)
    stats = await runtime.store.pipeline_stats(principal_of(request).listed_owner(owner), since)
    prices = runtime.settings.price_table
    body = {"window": window, "since": rfc3339(since), "pipelines": [health(s, prices) for s in stats]}
    return json_response(body)


@router.get("/v1/console", summary="The dashboard's view of this server's settings", response_model=ConsoleSettings)
async def console_settings(request: Request) -> Response:
    request.app.state.auth.check(request)
    settings = runtime_of(request).settings
    return json_response(
        {
            "auth": settings.auth,
            "playground": settings.lists_every_owner,
            "trace_url": settings.trace_url,
            "prices": {model: price.public() for model, price in settings.price_table.items()},
        }
    )
