"""The PostgreSQL store's long-term store (``store.items``)."""

from __future__ import annotations

from runyard.store._rows import ITEM_COLUMNS, item_from_row, item_row
from runyard.store.items import Item, ItemStore, Namespace, joined, prefix_range, split
from runyard.store.postgres.connection import PostgresConnection

LIVE = "(expires_at IS NULL OR expires_at > $5)"
# in the prefix, or in the range of texts strictly under it (``items.prefix_range``)
UNDER = "owner = $1 AND (namespace = $2 OR (namespace >= $3 AND namespace < $4))"
# an item replacing a live one keeps its created_at
UPSERT = f"""INSERT INTO items ({ITEM_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (owner, namespace, key) DO UPDATE SET
    created_at = CASE WHEN items.expires_at IS NULL OR items.expires_at > excluded.updated_at
        THEN items.created_at ELSE excluded.created_at END,
    value = excluded.value, updated_at = excluded.updated_at,
    expires_at = excluded.expires_at, embedding = excluded.embedding
RETURNING {ITEM_COLUMNS}"""


class PostgresItems(PostgresConnection, ItemStore):
    """``ItemStore`` on PostgreSQL."""

    async def put_item(self, item: Item) -> Item:
        row = await self._transact(lambda conn: conn.fetchrow(UPSERT, *item_row(item)))
        return item_from_row(row)

    async def get_item(self, owner: str, namespace: Namespace, key: str, at: float) -> Item | None:
        row = await self._db().fetchrow(
            f"SELECT {ITEM_COLUMNS} FROM items WHERE owner = $1 AND namespace = $2 AND key = $3"
            " AND (expires_at IS NULL OR expires_at > $4)",
            owner,
            joined(namespace),
            key,
            at,
        )
        return item_from_row(row) if row is not None else None

    async def delete_item(self, owner: str, namespace: Namespace, key: str) -> None:
        await self._execute(
            "DELETE FROM items WHERE owner = $1 AND namespace = $2 AND key = $3", owner, joined(namespace), key
        )

    async def list_items(self, owner: str, prefix: Namespace, at: float) -> list[Item]:
        rows = await self._db().fetch(
            f"SELECT {ITEM_COLUMNS} FROM items WHERE {UNDER} AND {LIVE} ORDER BY updated_at DESC",
            owner,
            *prefix_range(prefix),
            at,
        )
        return [item_from_row(row) for row in rows]

    async def item_namespaces(self, owner: str, prefix: Namespace, at: float) -> list[Namespace]:
        rows = await self._db().fetch(
            f"SELECT DISTINCT namespace FROM items WHERE {UNDER} AND {LIVE}", owner, *prefix_range(prefix), at
        )
        return sorted(split(row[0]) for row in rows)

    async def sweep_items(self, at: float) -> int:
        deleted: int = await self._db().fetchval(
            "WITH gone AS (DELETE FROM items WHERE expires_at <= $1 RETURNING 1) SELECT count(*) FROM gone", at
        )
        return deleted
