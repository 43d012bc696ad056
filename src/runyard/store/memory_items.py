"""``memory://``'s long-term store: the reference for ``ItemStore``'s semantics."""

from __future__ import annotations

import copy

from runyard.store.items import Item, ItemStore, Namespace, under

ItemKey = tuple[str, Namespace, str]  # owner, namespace, key


class MemoryItems(ItemStore):
    """Items in a dictionary (``_items``, set up by ``MemoryStore``); atomic, as nothing awaits."""

    _items: dict[ItemKey, Item]

    async def put_item(self, item: Item) -> Item:
        stored = copy.deepcopy(item)
        old = self._items.get((item.owner, item.namespace, item.key))
        if old is not None and old.live(item.updated_at):
            stored.created_at = old.created_at
        self._items[(item.owner, item.namespace, item.key)] = stored
        return copy.deepcopy(stored)

    async def get_item(self, owner: str, namespace: Namespace, key: str, at: float) -> Item | None:
        item = self._items.get((owner, namespace, key))
        return copy.deepcopy(item) if item is not None and item.live(at) else None

    async def delete_item(self, owner: str, namespace: Namespace, key: str) -> None:
        self._items.pop((owner, namespace, key), None)

    async def list_items(self, owner: str, prefix: Namespace, at: float) -> list[Item]:
        found = [
            copy.deepcopy(item)
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
