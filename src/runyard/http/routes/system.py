"""Pipelines, health, readiness and metrics."""

from __future__ import annotations

import asyncio
import contextlib

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

from runyard.http.answers import PipelineList, Readiness, errors
from runyard.http.responses import json_response, runtime_of
from runyard.observability import metrics

router = APIRouter(tags=["system"])

READY_TIMEOUT_S = 2.0


@router.get(
    "/v1/pipelines",
    summary="The pipelines served, with their input schemas",
    response_model=PipelineList,
    responses=errors(401),
)
async def list_pipelines(request: Request) -> Response:
    request.app.state.auth.check(request)
    pipelines = runtime_of(request).pipelines.values()
    return json_response(
        {
            "pipelines": [
                {
                    "name": p.name,
                    "description": p.description,
                    "timeout_s": p.timeout_s,
                    "retries": p.retries,
                    "input_schema": p.input_schema(),
                }
                for p in pipelines
            ]
        }
    )


@router.get("/healthz", summary="200 while the process lives")
async def healthz() -> Response:
    return json_response({"status": "ok"})


@router.get(
    "/readyz",
    summary="200 when the store and the broker answer; which pipelines have runs waiting for a worker",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "The store or the broker does not answer"}},
)
async def readyz(request: Request) -> Response:
    runtime = runtime_of(request)
    checks: dict[str, str] = {}
    for name, component in (("store", runtime.store), ("broker", runtime.broker)):
        try:
            async with asyncio.timeout(READY_TIMEOUT_S):
                await component.ping()
            checks[name] = "ok"
        except Exception as exc:
            checks[name] = f"unavailable: {type(exc).__name__}"
    ready = all(state == "ok" for state in checks.values())
    body: dict[str, object] = {"status": "ready" if ready else "unready", "checks": checks}
    if checks["store"] == "ok":
        # reported, never a reason to be unready: an API process may well start before any worker
        with contextlib.suppress(Exception):
            async with asyncio.timeout(READY_TIMEOUT_S):
                body["unserved"] = await runtime.unserved_pipelines()
    return json_response(body, 200 if ready else 503)


@router.get(
    "/metrics",
    summary="Prometheus metrics of this process",
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text"}},
)
async def prometheus_metrics(request: Request) -> Response:
    runtime = runtime_of(request)
    with contextlib.suppress(Exception):  # the store may be down; the rest of the metrics still answer
        async with asyncio.timeout(READY_TIMEOUT_S):
            metrics.QUEUE_DEPTH.set(await runtime.store.count_queued())
            unserved = await runtime.unserved_pipelines()
            metrics.UNSERVED_RUNS.clear()  # a pipeline served again drops out
            for pipeline, waiting in unserved.items():
                metrics.UNSERVED_RUNS.labels(pipeline).set(waiting)
    return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)
