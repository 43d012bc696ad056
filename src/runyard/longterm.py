"""The long-term store: JSON objects an owner keeps across sessions and runs,
by namespace and key (``/v1/store``, ``ctx.store``).

``LongTerm`` checks what comes in (the same limits whether from HTTP or from a
pipeline) and ranks searches; the backends only keep items (``store.items``).
A search reads every live item under its prefix and filters, ranks and pages
them here: one owner's items under one prefix are expected to be few (hundreds,
thousands), and the same Python serves every backend alike.

Ranking: with the app's ``store_embed`` (``Runyard(store_embed=fn)``), each
value's text is embedded when put and a query by the cosine similarity of its
own vector; without it, by the share of the query's words found in the item
(``runyard.ranking``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from runyard.errors import InvalidRequest, ItemNotFound, PayloadTooLarge
from runyard.models import ID_PATTERN, dumps, now, rfc3339
from runyard.ranking import Embed, cosine, embed_one, same, text_score, value_text
from runyard.servable import NestedTooDeep, check_depth
from runyard.store.items import Item, ItemStore, Namespace

MAX_PARTS = 8
MAX_VALUE_BYTES = 1 << 20
MAX_KEY_CHARS = 1024
MAX_LIMIT = 1000
MAX_OFFSET = 1_000_000  # a page further than this is not a search anyone reads: bounded in the schema
MAX_TTL_S = 100 * 365 * 86400.0

__all__ = ["Embed", "Found", "LongTerm", "OwnerStore", "item_json"]


@dataclass(frozen=True, slots=True)
class Found:
    """An item a search found; ``score`` when it was ranked by a query."""

    item: Item
    score: float | None = None


def item_json(item: Item, score: float | None = None) -> dict[str, Any]:
    """An item as the contract answers it."""
    answer: dict[str, Any] = {
        "namespace": list(item.namespace),
        "key": item.key,
        "value": item.value,
        "created_at": rfc3339(item.created_at),
        "updated_at": rfc3339(item.updated_at),
    }
    if score is not None:
        answer["score"] = score
    return answer


def namespace_of(parts: Any, *, prefix: bool = False) -> Namespace:
    """``parts`` checked as a namespace (at least one part) or a prefix (maybe none)."""
    if isinstance(parts, str):
        parts = parts.split(".") if parts else []
    if not isinstance(parts, (list, tuple)) or not all(isinstance(part, str) for part in parts):
        raise InvalidRequest("a namespace is a list of strings")
    if len(parts) > MAX_PARTS or (not prefix and not parts):
        raise InvalidRequest(f"a namespace has {'' if prefix else '1 to '}{MAX_PARTS} parts at most, not {len(parts)}")
    for part in parts:
        if not ID_PATTERN.fullmatch(part):
            raise InvalidRequest(f"namespace part {part[:80]!r} must match {ID_PATTERN.pattern}")
    return tuple(parts)


def _key(key: Any) -> str:
    if not isinstance(key, str) or not 1 <= len(key) <= MAX_KEY_CHARS:
        raise InvalidRequest(f"an item's key is a string of 1 to {MAX_KEY_CHARS} characters")
    return key


def _value(value: Any) -> dict[str, Any]:
    """``value`` checked: a JSON object of at most ``MAX_VALUE_BYTES``, servable."""
    if not isinstance(value, dict):
        raise InvalidRequest("an item's value is a JSON object")
    try:
        check_depth(value, "an item's value")
        size = len(dumps(value))
    except NestedTooDeep as exc:
        raise InvalidRequest(str(exc)) from None
    except TypeError as exc:
        raise InvalidRequest(f"an item's value cannot be stored as JSON: {exc}") from None
    if size > MAX_VALUE_BYTES:
        raise PayloadTooLarge(f"an item's value is at most {MAX_VALUE_BYTES} bytes of JSON, not {size}")
    return value


def _ttl(ttl_s: Any) -> float | None:
    if ttl_s is None:
        return None
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, (int, float)) or not 0 < ttl_s <= MAX_TTL_S:
        raise InvalidRequest(f"ttl_s is a number of seconds above 0 and at most {MAX_TTL_S:g}")
    return float(ttl_s)


def _page(limit: Any, offset: Any) -> tuple[int, int]:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise InvalidRequest(f"limit is an integer from 1 to {MAX_LIMIT}")
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise InvalidRequest("offset is a non-negative integer")
    return limit, offset


def _matches(value: Mapping[str, Any], filter: Mapping[str, Any]) -> bool:
    """Every field of ``filter`` is in ``value`` with an equal JSON value."""
    return all(field in value and same(value[field], wanted) for field, wanted in filter.items())


class LongTerm:
    """Every owner's long-term items: what ``/v1/store`` and ``ctx.store`` call."""

    def __init__(self, store: ItemStore, embed: Embed | None = None) -> None:
        self._store = store
        self._embed = embed

    async def put(self, owner: str, namespace: Any, key: Any, value: Any, ttl_s: Any = None) -> Item:
        """Insert or replace the item (checked whole first: nothing is written when any part is wrong)."""
        parts, key, value, ttl = namespace_of(namespace), _key(key), _value(value), _ttl(ttl_s)
        vector = await embed_one(self._embed, value_text(value)) if self._embed is not None else None
        at = now()
        item = Item(owner, parts, key, value, at, at, None if ttl is None else at + ttl, vector)
        return await self._store.put_item(item)

    async def get(self, owner: str, namespace: Any, key: Any) -> Item:
        """The live item, or ``ItemNotFound``."""
        item = await self._store.get_item(owner, namespace_of(namespace), _key(key), now())
        if item is None:
            raise ItemNotFound(f"no item {key!r} in namespace {'.'.join(namespace_of(namespace))!r}")
        return item

    async def delete(self, owner: str, namespace: Any, key: Any) -> None:
        """Delete the item; deleting one that is not there is not an error."""
        await self._store.delete_item(owner, namespace_of(namespace), _key(key))

    async def search(
        self,
        owner: str,
        prefix: Any = (),
        *,
        filter: Any = None,
        query: Any = None,
        limit: Any = 10,
        offset: Any = 0,
    ) -> list[Found]:
        """The owner's live items under ``prefix`` whose value has ``filter``'s
        fields, last updated first, or with ``query`` best match first."""
        parts, (limit, offset) = namespace_of(prefix, prefix=True), _page(limit, offset)
        if filter is not None and not isinstance(filter, dict):
            raise InvalidRequest("filter is a JSON object of field: value")
        if query is not None and not isinstance(query, str):
            raise InvalidRequest("query is a string")
        items = [i for i in await self._store.list_items(owner, parts, now()) if _matches(i.value, filter or {})]
        if query is None:
            return [Found(item) for item in items[offset : offset + limit]]
        found = await self._rank(query, items)
        return found[offset : offset + limit]

    async def _rank(self, query: str, items: list[Item]) -> list[Found]:
        if self._embed is not None:
            wanted = await embed_one(self._embed, query)
            found = [Found(i, cosine(wanted, i.embedding) if i.embedding else 0.0) for i in items]
        else:
            scored = [Found(i, text_score(query, i.key, i.value)) for i in items]
            found = [f for f in scored if f.score]  # a text query matches what holds one of its words
        # stable: equal scores stay last updated first
        return sorted(found, key=lambda f: -(f.score or 0.0))

    async def namespaces(self, owner: str, prefix: Any = (), max_depth: Any = None) -> list[Namespace]:
        """The distinct namespaces of the owner's live items under ``prefix``, cut
        to ``max_depth`` parts when given, sorted."""
        parts = namespace_of(prefix, prefix=True)
        if max_depth is not None and (
            isinstance(max_depth, bool) or not isinstance(max_depth, int) or not 1 <= max_depth <= MAX_PARTS
        ):
            raise InvalidRequest(f"max_depth is an integer from 1 to {MAX_PARTS}")
        found = await self._store.item_namespaces(owner, parts, now())
        depth = max_depth or MAX_PARTS
        return sorted({namespace[:depth] for namespace in found})

    async def sweep(self) -> int:
        """Delete the expired items (they are invisible already)."""
        return await self._store.sweep_items(now())

    def of(self, owner: str) -> OwnerStore:
        return OwnerStore(self, owner)


class OwnerStore:
    """``ctx.store``: the run's owner's long-term items, answered as JSON dicts
    (as over HTTP). Not journaled: a run that executes again calls these again
    (wrap them in ``ctx.step`` to record what they answered)."""

    def __init__(self, longterm: LongTerm, owner: str) -> None:
        self._longterm = longterm
        self._owner = owner

    async def put(
        self, namespace: Sequence[str] | str, key: str, value: dict[str, Any], *, ttl_s: float | None = None
    ) -> dict[str, Any]:
        """Insert or replace an item; ``ttl_s``: it expires that long from now."""
        return item_json(await self._longterm.put(self._owner, namespace, key, value, ttl_s))

    async def get(self, namespace: Sequence[str] | str, key: str) -> dict[str, Any] | None:
        """The item (``{"namespace", "key", "value", "created_at", "updated_at"}``), or None."""
        try:
            return item_json(await self._longterm.get(self._owner, namespace, key))
        except ItemNotFound:
            return None

    async def delete(self, namespace: Sequence[str] | str, key: str) -> None:
        await self._longterm.delete(self._owner, namespace, key)

    async def search(
        self,
        namespace_prefix: Sequence[str] | str = (),
        *,
        filter: Mapping[str, Any] | None = None,
        query: str | None = None,
        limit: int = 10,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        """Items under the prefix (``LongTerm.search``), each with ``score`` when a query ranked them."""
        found = await self._longterm.search(
            self._owner, namespace_prefix, filter=dict(filter or {}), query=query, limit=limit, offset=offset
        )
        return [item_json(f.item, f.score) for f in found]
