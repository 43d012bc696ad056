"""``memory://``'s long-term store: the reference for ``ItemStore``'s semantics."""

from __future__ import annotations

import copy
import dataclasses

from runyard.store.items import Item, ItemStore, Namespace, under

ItemKey = tuple[str, Namespace, str]  # owner, namespace, key


def _copy(item: Item) -> Item:
    """A copy the caller may change freely (a vector's floats need no deep copy)."""
    embedding = None if item.embedding is None else list(item.embedding)
    return dataclasses.replace(item, value=copy.deepcopy(item.value), embedding=embedding)


class MemoryItems(ItemStore):
    """Items in a dictionary (``_items``, set up by ``MemoryStore``); atomic, as nothing awaits."""

    _items: dict[ItemKey, Item]

    async def put_item(self, item: Item) -> Item:
        stored = _copy(item)
        old = self._items.get((item.owner, item.namespace, item.key))
        if old is not None and old.live(item.updated_at):
            stored.created_at = old.created_at
        self._items[(item.owner, item.namespace, item.key)] = stored
        return _copy(stored)

    async def get_item(self, owner: str, namespace: Namespace, key: str, at: float) -> Item | None:
        item = self._items.get((owner, namespace, key))
        return _copy(item) if item is not None and item.live(at) else None

    async def delete_item(self, owner: str, namespace: Namespace, key: str) -> None:
        self._items.pop((owner, namespace, key), None)

    async def list_items(self, owner: str, prefix: Namespace, at: float) -> list[Item]:
        found = [
            _copy(item)
            for (who, namespace, _), item in self._items.items()
            if who == owner and under(namespace, prefix) and item.live(at)
        ]
        return sorted(found, key=lambda item: item.updated_at, reverse=True)

    async def item_namespaces(self, owner: str, prefix: Namespace, at: float) -> list[Namespace]:
        return sorted({item.namespace for item in await self.list_items(owner, prefix, at)})

    async def sweep_items(self, at: float) -> int:
        expired = [key for key, item in self._items.items() if not item.live(at)]
        for key in expired:
            del self._items[key]
        return len(expired)
