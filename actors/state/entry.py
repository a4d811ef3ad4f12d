"""What the state store holds: `Entry` (a live value) and `Tombstone` (a removed one).

Values are JSON values, frozen: dicts become `actors.protocol.FrozenMapping`
and lists become tuples when a value enters the store (as
`AgentMessage.content` does), so one entry can be handed to any number of
actors without a copy, and every backend stores exactly what the memory one
does. A value JSON cannot carry (a set, an object, ``nan``) is refused with a
`ProtocolError` naming the path to it, when the message carrying it is built.
"""

from __future__ import annotations

from typing import Any

import attrs

from actors.protocol import FrozenMapping, freeze_json

__all__ = ["EMPTY_METADATA", "Entry", "Tombstone", "freeze_metadata", "freeze_value"]

EMPTY_METADATA = FrozenMapping()
"""The metadata of an entry written without any."""

_PLAIN = (str, int, bool, type(None))


def freeze_value(value: Any, field: str = "value") -> Any:
    """Return `value` as a frozen JSON value (a copy of every container in it).

    `actors.protocol.freeze_json` itself, so a stored value nests at most
    `actors.protocol.MAX_DEPTH` containers, exactly as message content does.
    A value already frozen (a scalar, a `FrozenMapping`) is returned as is.

    Raises:
        ProtocolError: it holds something JSON cannot carry, or nests deeper
            than `MAX_DEPTH`; ``field`` is the dotted path to it, starting
            with `field`.
    """
    if type(value) in _PLAIN:  # the common case, without a call
        return value
    return freeze_json(value, field)


def freeze_metadata(metadata: Any) -> FrozenMapping:
    """Return free-form entry metadata as a `FrozenMapping` (None: empty).

    Raises:
        ProtocolError: it is not a mapping with str keys and JSON values.
        TypeError: it is not a mapping at all.
    """
    if metadata is None:
        return EMPTY_METADATA
    if isinstance(metadata, FrozenMapping):
        return metadata
    if not hasattr(metadata, "items"):
        msg = f"metadata must be a mapping of str to JSON values (or None), got {metadata!r}"
        raise TypeError(msg)
    frozen = freeze_value(dict(metadata), "metadata")
    return frozen or EMPTY_METADATA


@attrs.frozen
class Entry:
    """One key's current value and what is known about it.

    Attributes:
        key: the key.
        value: the value, a frozen JSON value.
        version: increases by at least one with every change of the key
            (set, delete, expiry); the first write of a key makes version 1.
        created_at: when the key got a value after being absent, by the
            store's clock.
        updated_at: when this version was written, by the store's clock.
        writer: the identity of the agent that wrote this version, if given.
        metadata: free-form, frozen, given by the writer.
        expires_at: when the entry expires (store clock), or None.
    """

    key: str
    value: Any = attrs.field(converter=freeze_value)
    version: int
    created_at: float
    updated_at: float
    writer: str | None = None
    metadata: FrozenMapping = EMPTY_METADATA
    expires_at: float | None = None

    def expired(self, now: float) -> bool:
        """Return whether the entry has expired at time `now`."""
        expires_at = self.expires_at
        return expires_at is not None and expires_at <= now


@attrs.frozen
class Tombstone:
    """A key that was deleted or expired, kept so that its next version keeps counting.

    Attributes:
        key: the key.
        version: the version the removal made (one more than the entry's).
        removed_at: when it was removed, by the store's clock.
    """

    key: str
    version: int
    removed_at: float
