"""``Runyard``: the pipeline registry, the limits, and the runtime's lifespan."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, TypeVar, cast

from pydantic import BaseModel

from runyard.governance import Breaker, LimitRegistry
from runyard.models import ID_PATTERN
from runyard.pipeline import Pipeline, PipelineFunc
from runyard.ranking import Embed
from runyard.resources import Declared, LifespanContext, ResourceFactory, Resources, check_factory, open_resources
from runyard.settings import Settings

if TYPE_CHECKING:
    from fastapi import FastAPI

    from runyard.runtime import Runtime

__all__ = ["Lifespan", "Pipeline", "PipelineFunc", "Runyard"]

NOT_STARTED = "the app is not started: serve it, or use `async with app.running()`"
F = TypeVar("F", bound=PipelineFunc)
R = TypeVar("R", bound=ResourceFactory)
Lifespan = Callable[["Runyard"], LifespanContext]
"""``lifespan(app)``: an async context manager whose yielded mapping (or None) becomes resources."""


class Runyard:
    """An application of pipelines, served by ``runyard serve module:app``.

    app = Runyard()

    @app.pipeline("research", timeout_s=300)
    async def research(ctx: RunContext, input: dict) -> dict: ...

    ``lifespan`` (``lifespan(app)``, an async context manager, as in Starlette)
    and ``@app.resource`` build the shared resources runs read as
    ``ctx.resources`` (see ``runyard.resources``). ``store_embed`` (texts to
    vectors, async or not) ranks the long-term store's searches by meaning.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        title: str = "runyard",
        lifespan: Lifespan | None = None,
        store_embed: Embed | None = None,
    ) -> None:
        self.settings = settings or Settings()
        self.title = title
        self.pipelines: dict[str, Pipeline] = {}
        self.limits = LimitRegistry()
        self.lifespan = lifespan
        self.store_embed = store_embed  # the long-term store's ranking by meaning (``runyard.ranking``)
        self.declared_resources: list[Declared] = []
        self._resources: Resources | None = None  # while running: from start-up to after the drain
        self._runtime: Runtime | None = None  # once started, until after the drain

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
        if self._resources is not None:
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
        if self._resources is None:
            raise RuntimeError(NOT_STARTED)
        return self._resources

    def with_settings(self, settings: Settings) -> Runyard:
        """Use ``settings`` (the CLI's, say) from now on; only before the app starts."""
        if self._resources is not None:
            raise RuntimeError("settings cannot change while the app runs")
        self.settings = settings
        return self

    @property
    def runtime(self) -> Runtime:
        if self._runtime is None:
            raise RuntimeError(NOT_STARTED)
        return self._runtime

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Runtime]:
        """``async with app.running() as runtime:`` the app served (what the HTTP lifespan uses).

        The resources come first and go last: built before the engine claims
        its first run, closed after the drain, whatever fails between."""
        from runyard.runtime import Runtime

        if self._resources is not None:
            raise RuntimeError("the app is already running")
        lifespan = self.lifespan(self) if self.lifespan is not None else None
        async with open_resources(lifespan, self.declared_resources) as resources:
            self._resources = resources
            try:
                async with Runtime(self.settings, self.pipelines, self.limits, resources, self.store_embed) as runtime:
                    self._runtime = runtime
                    yield runtime
            finally:
                self._runtime = self._resources = None

    def http(self) -> FastAPI:
        """The ASGI application serving this app's HTTP API."""
        from runyard.http import create_http_app

        return create_http_app(self)
