"""Three-way merge of JSON values, for ``auto_merge`` and for callers who merge by hand.

`three_way_merge` merges two changed versions of a value against the one
they started from, raising `ConflictError` on an overlap unless told how to
settle it; `try_merge` is the same on values already frozen, answering an
overlap's path instead of raising (the resolver falls back on it).
`same_json` is the equality both use: frozen JSON values, with 1, 1.0 and
True told apart.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from typing import Any

from actors.errors import ConflictError
from actors.protocol import FrozenMapping
from actors.state.conflicts import ABSENT
from actors.state.entry import freeze_value

__all__ = ["same_json", "three_way_merge", "try_merge"]


class _Overlap(Exception):  # noqa: N818 - a carrier inside the merge, never raised out of this module
    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path


def same_json(a: Any, b: Any) -> bool:
    """Return whether two frozen JSON values are equal, telling 1, 1.0 and True apart."""
    if a is b:
        return True
    if isinstance(a, Mapping):
        return isinstance(b, Mapping) and a.keys() == b.keys() and all(same_json(a[k], b[k]) for k in a)
    if isinstance(a, tuple):
        return isinstance(b, tuple) and len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def three_way_merge(
    base: Any,
    local: Any,
    remote: Any,
    *,
    on_overlap: Callable[[str, Any, Any], Any] | None = None,
) -> Any:
    """Merge two changed versions of a JSON value against the version they both started from.

    Rules, applied from the top down:

    - a side that did not change takes the other side's change;
    - two dicts merge key by key (a key one side removed stays removed);
    - two lists of the base's length merge item by item;
    - two lists that both only appended to the base get the base, the local
      appends, then the remote appends not among the local ones;
    - anything else changed differently on both sides is an overlap.

    `base` may be `ABSENT` (unknown): then only what both sides hold alike,
    or one side alone, merges. Values are frozen JSON (dicts are mappings,
    lists tuples); the result is frozen too.

    Args:
        base: the common version, or `ABSENT`.
        local: one changed version (`ABSENT`: removed).
        remote: the other changed version (`ABSENT`: removed).
        on_overlap: called as ``on_overlap(path, local, remote)`` for each
            overlap; returns the value to keep there (`ABSENT` removes it).
            Without it an overlap raises.

    Raises:
        ConflictError: an overlap and no `on_overlap`; the message names its
            path.
    """

    def overlap(path: str, mine: Any, theirs: Any) -> Any:
        if on_overlap is None:
            raise _Overlap(path)
        return on_overlap(path, mine, theirs)

    base, local, remote = (v if v is ABSENT else freeze_value(v) for v in (base, local, remote))
    try:
        return _merge(base, local, remote, "", overlap)
    except _Overlap as found:
        where = repr(found.path) if found.path else "the whole value"
        msg = f"both sides changed {where} differently; settle it by hand or choose a fallback strategy"
        raise ConflictError(msg) from None


def try_merge(
    base: Any, local: Any, remote: Any, *, on_overlap: Callable[[str, Any, Any], Any] | None = None
) -> tuple[bool, Any]:
    """Merge frozen values as `three_way_merge` does; return (True, merged) or (False, overlap path).

    The path is ``""`` for the whole value. With `on_overlap`, overlaps are
    settled by it and the merge always succeeds.
    """
    try:
        return True, _merge(base, local, remote, "", on_overlap or _raise_overlap)
    except _Overlap as found:
        return False, found.path


def _raise_overlap(path: str, _mine: Any, _theirs: Any) -> Any:
    raise _Overlap(path)


def _merge(base: Any, local: Any, remote: Any, path: str, overlap: Callable[[str, Any, Any], Any]) -> Any:
    if same_json(local, remote):
        return local
    if same_json(base, local):
        return remote
    if same_json(base, remote):
        return local
    if isinstance(local, Mapping) and isinstance(remote, Mapping):
        common = base if isinstance(base, Mapping) else {}
        merged: dict[str, Any] = {}
        for key in itertools.chain(local, (k for k in remote if k not in local)):
            value = _merge(
                common.get(key, ABSENT),
                local.get(key, ABSENT),
                remote.get(key, ABSENT),
                f"{path}.{key}" if path else key,
                overlap,
            )
            if value is not ABSENT:
                merged[key] = value
        return FrozenMapping(merged)
    if isinstance(local, tuple) and isinstance(remote, tuple) and isinstance(base, tuple):
        n = len(base)
        if len(local) == n == len(remote):
            items = []
            for index in range(n):
                item = _merge(
                    base[index], local[index], remote[index], f"{path}.{index}" if path else str(index), overlap
                )
                if item is ABSENT:
                    return overlap(path, local, remote)
                items.append(item)
            return tuple(items)
        if same_json(local[:n], base) and same_json(remote[:n], base):
            mine = local[n:]
            return (*local, *(item for item in remote[n:] if not any(same_json(item, m) for m in mine)))
    return overlap(path, local, remote)
