"""The long-term store's records: items, each an owner's JSON object under a
namespace and a key, and the ``ItemStore`` protocol every backend implements.

A namespace travels as one text, its parts joined by ``.`` (parts never hold a
dot: ``ID_PATTERN``), so that "under a prefix" is a range of that text: the
prefix itself, or from ``prefix.`` up to ``prefix/`` (``/`` sorts right after
``.``), which every backend compares as bytes and finds by index.

Expired items (``expires_at`` at or before the time asked about) are invisible
at once, whether or not a sweep has deleted them yet.
"""

from __future__ import annotations

from abc import abstractmethod
from array import array
from dataclasses import dataclass
from typing import Any, Protocol

Namespace = tuple[str, ...]


@dataclass(slots=True)
class Item:
    """One stored item; ``embedding`` is its value's vector when the app embeds."""

    owner: str
    namespace: Namespace
    key: str
    value: dict[str, Any]
    created_at: float
    updated_at: float
    expires_at: float | None = None
    embedding: list[float] | None = None

    def live(self, at: float) -> bool:
        return self.expires_at is None or self.expires_at > at


def joined(namespace: Namespace) -> str:
    return ".".join(namespace)


def split(text: str) -> Namespace:
    return tuple(text.split(".")) if text else ()


def prefix_range(prefix: Namespace) -> tuple[str, str, str]:
    """The prefix's text, and the range of texts strictly under it: ``[lo, hi)``.
    Under no prefix is every namespace: ``~`` sorts after every character a
    namespace's text may hold."""
    if not prefix:
        return "", "", "~"
    text = joined(prefix)
    return text, text + ".", text + "/"


def under(namespace: Namespace, prefix: Namespace) -> bool:
    return namespace[: len(prefix)] == prefix


def pack_vector(vector: list[float] | None) -> bytes | None:
    """A vector as the bytes a row holds (float64s, machine order: read back here)."""
    return None if vector is None else array("d", vector).tobytes()


def unpack_vector(data: bytes | None) -> list[float] | None:
    if data is None:
        return None
    vector = array("d")
    vector.frombytes(bytes(data))
    return vector.tolist()


class ItemStore(Protocol):
    """The long-term store: owners' items by namespace and key."""

    @abstractmethod
    async def put_item(self, item: Item) -> Item:
        """Insert or replace the owner's item at ``item.updated_at``; the item stored.

        Replacing a live item keeps its ``created_at``; an expired one is replaced
        as if it were not there."""

    @abstractmethod
    async def get_item(self, owner: str, namespace: Namespace, key: str, at: float) -> Item | None:
        """The owner's item, if it is live at ``at``."""

    @abstractmethod
    async def delete_item(self, owner: str, namespace: Namespace, key: str) -> None:
        """Delete the owner's item, if there is one."""

    @abstractmethod
    async def list_items(self, owner: str, prefix: Namespace, at: float) -> list[Item]:
        """The owner's items live at ``at`` in ``prefix`` or under it, last updated first."""

    @abstractmethod
    async def item_namespaces(self, owner: str, prefix: Namespace, at: float) -> list[Namespace]:
        """The distinct namespaces of the owner's live items in ``prefix`` or under it, sorted."""

    @abstractmethod
    async def sweep_items(self, at: float) -> int:
        """Delete every item expired at ``at``; how many."""
