"""``Runyard``: the pipeline registry, the limits, and the runtime's lifespan."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast

from pydantic import BaseModel, ValidationError

from runyard.errors import InvalidRequest
from runyard.governance import Breaker, LimitRegistry
from runyard.models import ID_PATTERN
from runyard.resources import Declared, LifespanContext, ResourceFactory, Resources, check_factory
from runyard.servable import NestedTooDeep, check_depth
from runyard.settings import Settings

if TYPE_CHECKING:
    from fastapi import FastAPI

    from runyard.context import RunContext
    from runyard.runtime import Runtime

PipelineFunc = Callable[["RunContext", Any], Awaitable[Any]]
F = TypeVar("F", bound=PipelineFunc)
R = TypeVar("R", bound=ResourceFactory)
Lifespan = Callable[["Runyard"], LifespanContext]
"""``lifespan(app)``: an async context manager whose yielded mapping (or None) becomes resources."""


@dataclass(frozen=True, slots=True)
class Pipeline:
    name: str
    func: PipelineFunc
    timeout_s: float | None
    retries: int
    input_model: type[BaseModel] | None
    description: str

    def validate_input(self, raw: Any) -> Any:
        """The input as the run will store it; ``InvalidRequest`` (422) if it does not fit."""
        if self.input_model is None:
            return _servable(raw)
        try:
            return _servable(self.input_model.model_validate(raw).model_dump(mode="json"))
        except ValidationError as exc:
            raise InvalidRequest(f"input does not fit pipeline {self.name!r}: {_first_errors(exc)}") from exc

    def argument(self, stored_input: Any) -> Any:
        """What the pipeline function receives: its model instance, or the raw JSON."""
        if self.input_model is None:
            return stored_input
        return self.input_model.model_validate(stored_input)

    def input_schema(self) -> dict[str, Any]:
        if self.input_model is None:
            return {}
        return self.input_model.model_json_schema()


def _servable(stored_input: Any) -> Any:
    """The input as stored, checked by the rule every served value follows (every
    front end's run creation comes through here, before anything is written)."""
    try:
        check_depth(stored_input, "input")
    except NestedTooDeep as exc:
        raise InvalidRequest(str(exc)) from None
    return stored_input


def _first_errors(exc: ValidationError, count: int = 3) -> str:
    parts = []
    for error in exc.errors()[:count]:
        where = ".".join(str(p) for p in error["loc"]) or "input"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


class Runyard:
    """An application of pipelines, served by ``runyard serve module:app``.

    app = Runyard()

    @app.pipeline("research", timeout_s=300)
    async def research(ctx: RunContext, input: dict) -> dict: ...

    ``lifespan`` (``lifespan(app)``, an async context manager, as in Starlette)
    and ``@app.resource`` build the shared resources runs read as
    ``ctx.resources`` (see ``runyard.resources``).
    """

    def __init__(
        self, settings: Settings | None = None, *, title: str = "runyard", lifespan: Lifespan | None = None
    ) -> None:
        self.settings = settings or Settings()
        self.title = title
        self.pipelines: dict[str, Pipeline] = {}
        self.limits = LimitRegistry()
        self.lifespan = lifespan
        self.declared_resources: list[Declared] = []
        self._runtime: Runtime | None = None

    def pipeline(
        self,
        name: str,
        *,
        timeout_s: float | None = None,
        retries: int = 0,
        input_model: type[BaseModel] | None = None,
        description: str | None = None,
    ) -> Callable[[F], F]:
        """Register an async function ``(ctx, input) -> output`` as a pipeline."""
        if not ID_PATTERN.fullmatch(name):
            raise ValueError(f"pipeline name {name!r} must match {ID_PATTERN.pattern}")
        if name in self.pipelines:
            raise ValueError(f"pipeline {name!r} is already registered")
        if retries < 0:
            raise ValueError("retries must be >= 0")

        def register(func: F) -> F:
            if not inspect.iscoroutinefunction(func):
                raise TypeError(f"pipeline {name!r} must be an async function")
            doc = description if description is not None else inspect.getdoc(func) or ""
            self.pipelines[name] = Pipeline(name, func, timeout_s, retries, input_model, doc)
            return cast(F, func)

        return register

    def limit(
        self,
        name: str,
        *,
        concurrency: int | None = None,
        rpm: int | None = None,
        tpm: int | None = None,
        breaker: Breaker | None = None,
    ) -> None:
        """Declare a limit on an external API: at most ``concurrency`` calls in flight,
        ``rpm`` requests and ``tpm`` tokens a minute, and an optional circuit breaker.
        Pipelines use it with ``ctx.limit(name)`` and ``ctx.call(name, fn)``."""
        self.limits.declare(name, concurrency=concurrency, rpm=rpm, tpm=tpm, breaker=breaker)

    def resource(self, name: str) -> Callable[[R], R]:
        """Register a shared resource built once per process at start-up: an async
        generator function (set up, ``yield`` it, close it) or an async function
        returning it. Resources are built in declaration order, after the
        lifespan, and closed in reverse order after the last run has drained."""
        if self._runtime is not None:
            raise RuntimeError("resources are declared before the app starts")
        if any(declared.name == name for declared in self.declared_resources):
            raise ValueError(f"resource {name!r} is already registered")

        def register(factory: R) -> R:
            check_factory(name, factory)
            self.declared_resources.append(Declared(name, factory))
            return factory

        return register

    @property
    def resources(self) -> Resources:
        """The resources of the running app (for code outside a run: the app's own
        HTTP routes, say); ``RuntimeError`` before start-up."""
        return self.runtime.resources

    def with_settings(self, settings: Settings) -> Runyard:
        """Use ``settings`` (the CLI's, say) from now on; only before the app starts."""
        if self._runtime is not None:
            raise RuntimeError("settings cannot change while the app runs")
        self.settings = settings
        return self

    @property
    def runtime(self) -> Runtime:
        if self._runtime is None:
            raise RuntimeError("the app is not started: serve it, or use `async with app.running()`")
        return self._runtime

    def running(self) -> Runtime:
        """The runtime as an async context manager (what the HTTP lifespan uses)."""
        from runyard.runtime import Runtime

        return Runtime(self)

    def http(self) -> FastAPI:
        """The ASGI application serving this app's HTTP API."""
        from runyard.http import create_http_app

        return create_http_app(self)
