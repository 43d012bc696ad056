"""How the long-term store ranks a search's ``query`` (``runyard.longterm``).

By meaning, with the app's embedding function: the cosine similarity of the
query's vector and each item's (computed here, in Python, over the candidates
under the prefix: no vector index is needed for an owner's items).

By text otherwise: an item's words are those of its key and of every string in
its value (lower-cased runs of letters, digits and ``_``); its score is the
share of the query's distinct words it holds, from 0 to 1. Items holding none
are not found.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import operator
import re
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from runyard.errors import EmbeddingFailed
from runyard.models import dumps

Embed = Callable[[list[str]], "Awaitable[list[list[float]]] | list[list[float]]"]
"""``store_embed``: texts to one vector each, async or not (a sync one runs in a thread)."""

WORD = re.compile(r"\w+")


def strings(value: Any) -> Iterator[str]:
    """Every string in a JSON value, in order (keys of objects excluded)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for inner in value.values():
            yield from strings(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from strings(inner)


def value_text(value: Any) -> str:
    """What is embedded of a value: its strings, one a line; its JSON when it has none."""
    return "\n".join(strings(value)) or dumps(value).decode()


def words(text: str) -> set[str]:
    return set(WORD.findall(text.lower()))


def text_score(query: str, key: str, value: Any) -> float:
    """The share of the query's distinct words found in the item's key and strings."""
    wanted = words(query)
    if not wanted:
        return 0.0
    held = words(key).union(*(words(text) for text in strings(value)))
    return len(wanted & held) / len(wanted)


def cosine(a: list[float], b: list[float]) -> float:
    """Cosine similarity; 0 for vectors of different lengths or of no length."""
    if len(a) != len(b):
        return 0.0
    # map(mul): about three times the pace of a generator of products (no numpy here)
    norms = math.sqrt(sum(map(operator.mul, a, a))) * math.sqrt(sum(map(operator.mul, b, b)))
    return sum(map(operator.mul, a, b)) / norms if norms else 0.0


def same(a: Any, b: Any) -> bool:
    """JSON equality: ``true`` is not ``1`` (Python's ``==`` says it is)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return bool(a == b)


async def embed_one(embed: Embed, text: str) -> list[float]:
    """``text``'s vector from the app's function; ``EmbeddingFailed`` when it raises or answers no vector."""
    try:
        if inspect.iscoroutinefunction(embed):
            answer: Any = await embed([text])
        else:
            answer = await asyncio.to_thread(embed, [text])
            if inspect.isawaitable(answer):
                answer = await answer
    except Exception as exc:
        raise EmbeddingFailed(f"store_embed failed: {type(exc).__name__}: {exc}") from exc
    try:
        vector = [float(x) for x in answer[0]]
    except (TypeError, ValueError, IndexError, KeyError) as exc:
        raise EmbeddingFailed("store_embed must answer one list of numbers per text") from exc
    if not vector or not all(math.isfinite(x) for x in vector):
        raise EmbeddingFailed("store_embed answered an empty vector, or one with a non-finite number")
    return vector
