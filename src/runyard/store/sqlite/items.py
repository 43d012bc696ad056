"""The SQLite store's long-term store (``store.items``)."""

from __future__ import annotations

import sqlite3

from runyard.store._rows import ITEM_COLUMNS, item_from_row, item_row
from runyard.store.items import Item, ItemStore, Namespace, joined, prefix_range, split
from runyard.store.sqlite.connection import SQLiteConnection

LIVE = "(expires_at IS NULL OR expires_at > ?)"
# in the prefix, or in the range of texts strictly under it (``items.prefix_range``)
UNDER = "owner = ? AND (namespace = ? OR (namespace >= ? AND namespace < ?))"
# an item replacing a live one keeps its created_at
UPSERT = f"""INSERT INTO items ({ITEM_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (owner, namespace, key) DO UPDATE SET
    created_at = CASE WHEN items.expires_at IS NULL OR items.expires_at > excluded.updated_at
        THEN items.created_at ELSE excluded.created_at END,
    value = excluded.value, updated_at = excluded.updated_at,
    expires_at = excluded.expires_at, embedding = excluded.embedding
RETURNING {ITEM_COLUMNS}"""


class SQLiteItems(SQLiteConnection, ItemStore):
    """``ItemStore`` on SQLite."""

    async def put_item(self, item: Item) -> Item:
        def work(db: sqlite3.Connection) -> Item:
            return item_from_row(db.execute(UPSERT, item_row(item)).fetchone())

        return await self._write(work)

    async def get_item(self, owner: str, namespace: Namespace, key: str, at: float) -> Item | None:
        rows = await self._read(
            f"SELECT {ITEM_COLUMNS} FROM items WHERE owner = ? AND namespace = ? AND key = ? AND {LIVE}",
            (owner, joined(namespace), key, at),
        )
        return item_from_row(rows[0]) if rows else None

    async def delete_item(self, owner: str, namespace: Namespace, key: str) -> None:
        await self._execute(
            "DELETE FROM items WHERE owner = ? AND namespace = ? AND key = ?", (owner, joined(namespace), key)
        )

    async def list_items(self, owner: str, prefix: Namespace, at: float) -> list[Item]:
        rows = await self._read(
            f"SELECT {ITEM_COLUMNS} FROM items WHERE {UNDER} AND {LIVE} ORDER BY updated_at DESC",
            (owner, *prefix_range(prefix), at),
        )
        return [item_from_row(row) for row in rows]

    async def item_namespaces(self, owner: str, prefix: Namespace, at: float) -> list[Namespace]:
        rows = await self._read(
            f"SELECT DISTINCT namespace FROM items WHERE {UNDER} AND {LIVE} ORDER BY namespace",
            (owner, *prefix_range(prefix), at),
        )
        return sorted(split(row[0]) for row in rows)

    async def sweep_items(self, at: float) -> int:
        def work(db: sqlite3.Connection) -> int:
            deleted: int = db.execute("DELETE FROM items WHERE expires_at <= ?", (at,)).rowcount
            return deleted

        return await self._write(work)
