"""An app's shared resources: clients and immutable data built once per process
at start-up, read by every run (``ctx.resources``) and by the app's own code
(``app.resources``), closed at shutdown after the last run has drained.

Two ways to declare them, which compose:

- ``Runyard(lifespan=...)``: an async context manager factory taking the app,
  as in Starlette and FastAPI; the mapping it yields (or nothing) becomes
  resources, and the code after its ``yield`` runs at shutdown.
- ``@app.resource("name")`` on an async generator function (set up, ``yield``
  the resource once, close it) or an async function (its return value, nothing
  to close), like a pytest fixture. One optional parameter receives the
  resources built before it.

The lifespan is entered first, then each ``@app.resource`` in declaration
order; at shutdown they close in the reverse order (one that fails to close is
logged, and the others still close). When one fails to start, those already
built are closed (reverse order again) and ``StartupFailed`` names the one
that failed.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from runyard.errors import StartupFailed

log = logging.getLogger("runyard.resources")
T = TypeVar("T")

LifespanContext = AbstractAsyncContextManager[Mapping[str, Any] | None]
"""What ``lifespan(app)`` returns: its yielded mapping (or None) becomes resources."""

ResourceFactory = Callable[..., AsyncIterator[Any] | Awaitable[Any]]
"""An async generator function yielding one resource, or an async function returning it;
either takes no argument or the ``Resources`` built before it."""


class Resources(Mapping[str, Any]):
    """The app's resources by name, read-only: ``resources["embedder"]``, or
    typed by class: ``resources.of(Embedder)``."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, Any] | None = None) -> None:
        self._items = dict(items or {})

    def __getitem__(self, name: str) -> Any:
        try:
            return self._items[name]
        except KeyError:
            raise KeyError(f"no resource named {name!r} (there are: {', '.join(self._items) or 'none'})") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def of(self, kind: type[T]) -> T:
        """The one resource that is an instance of ``kind``, typed as such;
        ``LookupError`` when there is none or more than one. ``kind`` is a class
        (a ``typing.Protocol`` only if ``@runtime_checkable``)."""
        found = [name for name, value in self._items.items() if isinstance(value, kind)]
        if len(found) != 1:
            what = f"several ({', '.join(found)}): ask by name" if found else "none"
            raise LookupError(f"one resource of type {kind.__name__} expected, found {what}")
        return cast(T, self._items[found[0]])

    def __repr__(self) -> str:
        return f"<Resources {', '.join(self._items) or '(none)'}>"


@dataclass(frozen=True, slots=True)
class Declared:
    """One ``@app.resource``: its name and how to build it."""

    name: str
    factory: ResourceFactory

    def open(self, built: Resources) -> AbstractAsyncContextManager[Any]:
        arguments = (built,) if inspect.signature(self.factory).parameters else ()
        if inspect.isasyncgenfunction(self.factory):
            return asynccontextmanager(self.factory)(*arguments)
        return _returned(cast(Callable[..., Awaitable[Any]], self.factory), arguments)


@asynccontextmanager
async def _returned(factory: Callable[..., Awaitable[Any]], arguments: tuple[Any, ...]) -> AsyncIterator[Any]:
    yield await factory(*arguments)


def check_factory(name: str, factory: ResourceFactory) -> None:
    """At declaration: ``TypeError`` unless ``factory`` can build a resource."""
    if not (inspect.isasyncgenfunction(factory) or inspect.iscoroutinefunction(factory)):
        raise TypeError(f"resource {name!r} must be an async generator function or an async function")
    if len(inspect.signature(factory).parameters) > 1:
        raise TypeError(f"resource {name!r} takes no argument or the resources built before it")


@asynccontextmanager
async def open_resources(lifespan: LifespanContext | None, declared: list[Declared]) -> AsyncIterator[Resources]:
    """Build every resource, yield them, close them in reverse order (also when one fails to start).

    Closing is always a clean exit, never the start-up error thrown into the
    others: the code after a resource's ``yield`` runs as it would at shutdown,
    without the ``try``/``finally`` a pytest fixture does not need either."""
    stack = AsyncExitStack()
    try:
        items: dict[str, Any] = {}
        if lifespan is not None:
            state = await _start(stack, "the lifespan", lifespan)
            items.update(state or {})
        for resource in declared:
            if resource.name in items:
                raise _failed(f"resource {resource.name!r} is also yielded by the lifespan")
            items[resource.name] = await _start(stack, f"resource {resource.name!r}", resource.open(Resources(items)))
        yield Resources(items)
    finally:
        await stack.aclose()


async def _start(stack: AsyncExitStack, what: str, manager: AbstractAsyncContextManager[T]) -> T:
    try:
        value = await manager.__aenter__()
    except Exception as exc:
        raise _failed(f"{what} raised {type(exc).__name__}: {exc}") from exc
    stack.push_async_callback(_close, what, manager)
    return value


def _failed(reason: str) -> StartupFailed:
    failure = StartupFailed(f"start-up failed: {reason}")
    log.error("%s", failure)  # one line an operator reads first; the server logs the traceback after it
    return failure


async def _close(what: str, manager: AbstractAsyncContextManager[Any]) -> None:
    """A clean exit; a failure is logged, and the other resources still close."""
    try:
        await manager.__aexit__(None, None, None)
    except Exception:
        log.exception("shutdown: %s failed to close", what)
