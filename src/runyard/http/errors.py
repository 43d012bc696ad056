"""Every error as the contract's envelope ``{"error": {"code", "message"}}``, in one place."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute, Match

from runyard.errors import RunyardError
from runyard.validation import describe

log = logging.getLogger("runyard.http")

HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "rate_limited",
}

PROBED_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None, details: dict[str, Any] | None = None
) -> JSONResponse:
    error = {"code": code, "message": message, **(details or {})}
    return JSONResponse({"error": error}, status_code=status, headers=headers)


async def runyard_error_response(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RunyardError)
    if exc.status >= 500:
        log.error("%s %s failed: %s", request.method, request.url.path, exc)
    return error_response(exc.status, exc.code, exc.message, headers=exc.headers or None, details=exc.details)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    if any(error.get("type") == "json_invalid" for error in errors):
        return error_response(400, "invalid_json", "the request body is not valid JSON")
    if all(error.get("loc", ("body",))[0] == "query" for error in errors):
        return error_response(400, "invalid_query", describe(errors))
    return error_response(422, "invalid_request", describe(errors))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = HTTP_CODES.get(exc.status_code, "error")
    headers = dict(getattr(exc, "headers", None) or {})
    if exc.status_code == 404:
        message = f"no route {request.url.path}"
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
        allowed = _allowed_methods(request)
        if allowed:
            headers["Allow"] = allowed
    else:
        message = str(exc.detail)
    return error_response(exc.status_code, code, message, headers=headers or None)


def _allowed_methods(request: Request) -> str:
    """Every method some route serves on this path (RFC 9110 15.5.6). Starlette's
    own 405 names only the first route whose path matched, and FastAPI makes one
    route per method: ``PUT /v1/sessions/x`` listed GET and not DELETE. Routes are
    asked through their public ``matches``; one that takes any method (a mount,
    whose app answers its own 405) says nothing about this path's methods."""

    def served(route: BaseRoute, method: str) -> bool:
        return route.matches({**request.scope, "method": method})[0] is Match.FULL

    methods = [
        method
        for method in PROBED_METHODS
        if any(served(route, method) and not served(route, "UNUSED") for route in request.app.router.routes)
    ]
    return ", ".join(methods)


async def unexpected_error_response(request: Request, exc: Exception) -> JSONResponse:
    """500 ``internal_error`` for an exception no other handler took; logged with its traceback."""
    log.exception("%s %s raised", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal_error", "the server failed to answer this request")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RunyardError, runyard_error_response)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, unexpected_error_response)
