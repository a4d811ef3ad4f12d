"""`FrozenDict`: an immutable, hashable mapping for statistics snapshots and messages."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, TypeVar

__all__ = ["FrozenDict"]

K = TypeVar("K")
V = TypeVar("V")


class FrozenDict(Mapping[K, V]):
    """Hold a mapping immutably: what a ``dict`` field of a frozen snapshot becomes.

    It compares equal to any mapping with the same items (a plain dict
    included) and is hashable when its values are, so a snapshot that holds
    one is hashable and equal when equal (trio's statistics are flat for the
    same reason). ``dict(frozen)`` makes a mutable copy.

    Args:
        items: a mapping or an iterable of ``(key, value)`` pairs to copy.
    """

    __slots__ = ("_hash", "_items")

    # Invariant: `_items` is never mutated after construction and is owned by
    # this mapping alone; `_hash` is None until first asked for.
    _items: dict[K, V]
    _hash: int | None

    def __init__(self, items: Mapping[K, V] | Iterable[tuple[K, V]] = ()) -> None:
        object.__setattr__(self, "_items", dict(items))
        object.__setattr__(self, "_hash", None)

    def __getitem__(self, key: K) -> V:
        return self._items[key]

    def __iter__(self) -> Iterator[K]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __hash__(self) -> int:
        cached = self._hash
        if cached is None:
            cached = hash(frozenset(self._items.items()))
            object.__setattr__(self, "_hash", cached)
        return cached

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FrozenDict):
            return self._items == other._items
        if isinstance(other, Mapping):
            return self._items == dict(other.items())
        return NotImplemented

    def __setattr__(self, name: str, value: Any) -> None:
        msg = f"FrozenDict is immutable; make a copy with dict(...) to change {name!r}"
        raise AttributeError(msg)

    def __repr__(self) -> str:
        return f"FrozenDict({self._items!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenDict, (self._items,))
