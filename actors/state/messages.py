"""The messages a `StateStore` answers, and what it answers and notifies with.

Every message is a frozen, slotted attrs class whose fields are checked and
frozen when it is built, on the sender's thread: a bad key, a TTL that is not
positive or a value JSON cannot carry raises there (`TypeError`,
`ValueError`, `ProtocolError`), before anything reaches the store.

Each message takes an optional ``agent``: the identity of the agent acting,
recorded as the writer of what it writes and checked by access rules.
"""

from __future__ import annotations

import enum
import math
from typing import TYPE_CHECKING, Any

import attrs
import pykka

from actors._core import FrozenDict
from actors.protocol import FrozenMapping
from actors.state.access import AccessRule
from actors.state.conflicts import Conflict, ConflictStrategy, Resolution, check_fallback, check_strategy
from actors.state.entry import EMPTY_METADATA, Entry, freeze_metadata, freeze_value
from actors.state.globs import Glob, compile_glob

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

__all__ = [
    "CloseParkedConflict",
    "DecideConflict",
    "DeleteEntry",
    "GetEntries",
    "GetEntry",
    "ListEntries",
    "ListParkedConflicts",
    "MergeEntries",
    "ResolveConflict",
    "SetAccessRules",
    "SetConflictStrategy",
    "SetEntry",
    "StateChanged",
    "StateEvent",
    "StateEventKind",
    "StoreStatistics",
    "SubscribeState",
    "UnsubscribeState",
    "WriteBatch",
    "WriteOutcome",
    "WriteResult",
]


# -- field checks (attrs validators and converters) ------------------------------


def _key(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value.__class__ is not str or not value:
        msg = f"{type(instance).__name__}.{attribute.name} must be a non-empty str, got {value!r}"
        raise (ValueError if isinstance(value, str) else TypeError)(msg)


def _agent(instance: object, _attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and (not isinstance(value, str) or not value):
        msg = f"{type(instance).__name__}.agent must be a non-empty str naming the agent, or None, got {value!r}"
        raise TypeError(msg)


def _ttl(instance: object, _attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        msg = f"{type(instance).__name__}.ttl must be seconds (a number) or None, got {value!r}"
        raise TypeError(msg)
    if not (value > 0 and math.isfinite(value)):
        msg = f"{type(instance).__name__}.ttl must be > 0 seconds and finite, got {value!r}; use None for no expiry"
        raise ValueError(msg)


def _version(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        msg = f"{type(instance).__name__}.{attribute.name} must be an int or None, got {value!r}"
        raise TypeError(msg)
    if value < 0:
        msg = f"{type(instance).__name__}.{attribute.name} must be >= 0 (0: the key must be absent), got {value!r}"
        raise ValueError(msg)


def _keys(value: Iterable[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        msg = f"keys must be a collection of keys, got the single str {value!r}; wrap it: ({value!r},)"
        raise TypeError(msg)
    keys = tuple(value)
    for key in keys:
        if key.__class__ is not str or not key:
            msg = f"every key must be a non-empty str, got {key!r}"
            raise TypeError(msg)
    return keys


def _prefix(instance: object, _attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str):
        msg = f"{type(instance).__name__}.prefix must be a str ('' for every key), got {value!r}"
        raise TypeError(msg)


# -- reads --------------------------------------------------------------------


@attrs.frozen
class GetEntry:
    """Read one key. Answers its `Entry`, or None if it is absent or expired (never `KeyError`)."""

    key: str = attrs.field(validator=_key)
    agent: str | None = attrs.field(default=None, validator=_agent)


@attrs.frozen
class GetEntries:
    """Read several keys at once. Answers a tuple of `Entry` or None, in the order of `keys`."""

    keys: tuple[str, ...] = attrs.field(converter=_keys)
    agent: str | None = attrs.field(default=None, validator=_agent)


@attrs.frozen
class ListEntries:
    """List the live entries whose key starts with `prefix`. Answers a tuple of `Entry`, by key.

    With access rules, only the entries `agent` may read are listed.
    """

    prefix: str = attrs.field(default="", validator=_prefix)
    agent: str | None = attrs.field(default=None, validator=_agent)


# -- writes -------------------------------------------------------------------


@attrs.frozen
class SetEntry:
    """Write `value` under `key`. Answers a `WriteResult`.

    With `expected_version` it is a compare-and-set: it applies only if the
    key is at that version (0: only if the key is absent); otherwise it is a
    conflict, settled by the strategy of the key's pattern.

    Attributes:
        key: the key.
        value: a JSON value; frozen here (dicts become `FrozenMapping`,
            lists tuples).
        ttl: seconds until the entry expires, or None for never. Each write
            sets its own: a write without a TTL makes the key permanent.
        expected_version: the version the writer read, or None.
        metadata: free-form JSON object stored with the entry.
        agent: the writer's identity.
    """

    key: str = attrs.field(validator=_key)
    value: Any = attrs.field(converter=freeze_value)
    ttl: float | None = attrs.field(default=None, validator=_ttl, kw_only=True)
    expected_version: int | None = attrs.field(default=None, validator=_version, kw_only=True)
    metadata: FrozenMapping = attrs.field(default=EMPTY_METADATA, converter=freeze_metadata, kw_only=True)
    agent: str | None = attrs.field(default=None, validator=_agent, kw_only=True)


@attrs.frozen
class DeleteEntry:
    """Delete `key`. Answers a `WriteResult` (outcome `UNCHANGED` if it was absent).

    With `expected_version`, only if the key is at that version; otherwise
    it is a conflict, as for `SetEntry`.
    """

    key: str = attrs.field(validator=_key)
    expected_version: int | None = attrs.field(default=None, validator=_version, kw_only=True)
    agent: str | None = attrs.field(default=None, validator=_agent, kw_only=True)


def _ops(value: Iterable[SetEntry | DeleteEntry]) -> tuple[SetEntry | DeleteEntry, ...]:
    ops = tuple(value)
    for op in ops:
        if op.__class__ not in (SetEntry, DeleteEntry):
            msg = f"a WriteBatch holds SetEntry and DeleteEntry messages only, got {op!r}"
            raise TypeError(msg)
    return ops


@attrs.frozen
class WriteBatch:
    """Apply several writes atomically, in order. Answers a tuple of `WriteResult`.

    All or none: if one write is refused (access denied, a conflict
    rejected), none is applied and the error is raised. Later writes see the
    earlier ones (a compare-and-set may expect the version an earlier write
    in the batch makes).
    """

    ops: tuple[SetEntry | DeleteEntry, ...] = attrs.field(converter=_ops)


def _entries(value: Iterable[Entry]) -> tuple[Entry, ...]:
    entries = tuple(value)
    for entry in entries:
        if not isinstance(entry, Entry):
            msg = f"MergeEntries takes Entry objects (as ListEntries returns them), got {entry!r}"
            raise TypeError(msg)
    return entries


@attrs.frozen
class MergeEntries:
    """Merge entries from another store into this one. Answers a tuple of `WriteResult`.

    A key absent here takes the remote entry; an equal value changes
    nothing; a different value is an ``import`` conflict, settled by the
    strategy of the key's pattern (``keep_local``, ``keep_remote``,
    ``last_writer_wins`` ... are the usual ones). Versions are this store's:
    an entry taken gets the next local version, but keeps its own write time
    (``updated_at``) and writer, so that ``last_writer_wins`` merges give the
    same state in any order. All or none, as a
    `WriteBatch`: a conflict whose strategy rejects fails the whole merge.
    Entries already expired (by this store's clock) are skipped.

    Attributes:
        entries: the remote entries (e.g. another store's `ListEntries`).
        source: names the other store, for the record.
        agent: who merges (needs write access to every key).
    """

    entries: tuple[Entry, ...] = attrs.field(converter=_entries)
    source: str | None = None
    agent: str | None = attrs.field(default=None, validator=_agent)


def _conflict_id(_instance: object, _attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        msg = f"ResolveConflict.conflict_id must be a conflict id (an int >= 1), got {value!r}"
        raise TypeError(msg)


def _resolution(_instance: object, _attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, Resolution):
        msg = (
            "ResolveConflict.resolution must be Resolution.keep_local(), Resolution.take_remote() "
            f"or Resolution.merged(value), got {value!r}"
        )
        raise TypeError(msg)


@attrs.frozen
class ResolveConflict:
    """Settle a parked conflict (strategy ``manual``). Answers a `WriteResult`.

    ``Resolution.take_remote()`` applies the parked write and
    ``Resolution.merged(value)`` writes `value`, each as the key's next
    version whatever happened to the key meanwhile;
    ``Resolution.keep_local()`` drops the parked write.

    Raises (from the store):
        ConflictNotFoundError: no such parked conflict.
    """

    conflict_id: int = attrs.field(validator=_conflict_id)
    resolution: Resolution = attrs.field(validator=_resolution)
    agent: str | None = attrs.field(default=None, validator=_agent, kw_only=True)


# -- subscriptions and administration -----------------------------------------


def _glob(value: object) -> Glob:
    return value if isinstance(value, Glob) else compile_glob(value)


def _subscriber(_instance: object, _attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, pykka.ActorRef):
        msg = f"SubscribeState.subscriber must be an ActorRef (the actor to notify), got {value!r}"
        raise TypeError(msg)


@attrs.frozen
class SubscribeState:
    """Notify `subscriber` of every change of a key matching `pattern`. Answers the subscription id.

    The subscriber is told a `StateChanged` for each set, delete and expiry,
    after it is durable, in version order per key. A subscriber found dead is
    dropped. With access rules, `agent` needs read access under the
    pattern's fixed prefix, and is told only of keys it may read.

    Raises:
        PatternError: `pattern` is malformed (when the message is built).
    """

    pattern: Glob = attrs.field(converter=_glob)
    subscriber: pykka.ActorRef[Any] = attrs.field(validator=_subscriber)
    agent: str | None = attrs.field(default=None, validator=_agent)


@attrs.frozen
class UnsubscribeState:
    """End a subscription. Answers whether it existed."""

    subscription_id: int


def _rules(value: Iterable[AccessRule] | None) -> tuple[AccessRule, ...] | None:
    if value is None:
        return None
    rules = tuple(value)
    for rule in rules:
        if not isinstance(rule, AccessRule):
            msg = f"SetAccessRules takes AccessRule objects, got {rule!r}"
            raise TypeError(msg)
    return rules


@attrs.frozen
class SetAccessRules:
    """Replace the store's access rules; None turns access control off. Answers None.

    While rules are on, only an agent they grant write access to every key
    (a rule with prefix ``""`` and ``write=True``) may change them; anyone
    else gets `AccessDeniedError`. While they are off, anyone may set them.

    Attributes:
        rules: the new rules, or None.
        agent: who changes them.
    """

    rules: tuple[AccessRule, ...] | None = attrs.field(converter=_rules)
    agent: str | None = attrs.field(default=None, validator=_agent)


# -- conflict resolution (sent to a ConflictResolver) -------------------------


def _conflict_pattern(_instance: object, _attribute: attrs.Attribute[Any], value: object) -> None:
    compile_glob(value)


def _strategy(_instance: object, _attribute: attrs.Attribute[Any], value: object) -> None:
    check_strategy(value)


def _optional_fallback(_instance: object, _attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None:
        check_fallback(value)


@attrs.frozen
class SetConflictStrategy:
    """Use `strategy` for conflicts on keys matching `pattern` (replaces that pattern's rule).

    Send it to a `ConflictResolver`; answers None.

    Attributes:
        pattern: a key glob such as ``analysis:*``.
        strategy: a `ConflictStrategy` (or its name), or a callable
            ``handler(conflict) -> Resolution`` that runs in the resolver.
        fallback: for ``auto_merge``: how overlapping changes are settled
            (default: the resolver's ``merge_fallback``).

    Raises:
        PatternError: the pattern is malformed.
        StrategyError: the strategy or fallback is unknown.
    """

    pattern: str = attrs.field(validator=_conflict_pattern)
    strategy: ConflictStrategy | str | Callable[[Conflict], Resolution] = attrs.field(validator=_strategy)
    fallback: ConflictStrategy | str | None = attrs.field(default=None, validator=_optional_fallback)


@attrs.frozen
class ListParkedConflicts:
    """Ask a `ConflictResolver` for the parked conflicts, oldest first (optionally by key pattern).

    Answers a tuple of `ConflictRecord`.
    """

    pattern: str | None = attrs.field(default=None, validator=attrs.validators.optional(_conflict_pattern))


@attrs.frozen
class DecideConflict:
    """Store -> resolver: settle this conflict by its key's rule. Answers a `Resolution`.

    Sent by a `StateStore` only (not exported from `actors`).
    """

    conflict: Conflict


@attrs.frozen
class CloseParkedConflict:
    """Store -> resolver: close parked conflict `conflict_id`. Answers its `ConflictRecord`.

    Sent by a `StateStore` only (not exported from `actors`).
    """

    conflict_id: int
    resolution: Resolution
    store: str
    agent: str | None


# -- answers and notifications ---------------------------------------------------


class WriteOutcome(enum.StrEnum):
    """What a write did."""

    APPLIED = "applied"
    """The write was applied (after a conflict, its strategy chose it)."""
    MERGED = "merged"
    """A conflict was settled by writing a merged value."""
    KEPT_LOCAL = "kept_local"
    """A conflict was settled by keeping the store's value; the write was dropped."""
    PARKED = "parked"
    """A conflict was parked for manual resolution; nothing changed yet."""
    UNCHANGED = "unchanged"
    """Nothing to do: a delete of an absent key, or a merge of an equal value."""


@attrs.frozen
class WriteResult:
    """The answer to a write.

    Attributes:
        key: the key written.
        outcome: what the write did.
        version: the key's version now (0 if it never existed).
        entry: the key's entry now, or None if it is absent.
        conflict_id: the id of the conflict the write met, if any (see the
            resolver's `history()`; `ResolveConflict` takes it when parked).
    """

    key: str
    outcome: WriteOutcome
    version: int
    entry: Entry | None = None
    conflict_id: int | None = None


class StateEventKind(enum.StrEnum):
    """What changed."""

    SET = "set"
    DELETE = "delete"
    EXPIRE = "expire"


@attrs.frozen
class StateEvent:
    """One change of one key, as kept in the store's history and sent to subscribers.

    Attributes:
        seq: increasing across the store (since it started).
        kind: set, delete or expire.
        key: the key.
        version: the version the change made.
        at: when, by the store's clock.
        writer: who made it (None for expiries and anonymous writes).
        entry: the new entry for a set, None otherwise.
    """

    seq: int
    kind: StateEventKind
    key: str
    version: int
    at: float
    writer: str | None = None
    entry: Entry | None = None


@attrs.frozen
class StateChanged:
    """The notification a subscriber is told: `event` matched its subscription."""

    subscription_id: int
    event: StateEvent

    @property
    def key(self) -> str:
        """The key that changed."""
        return self.event.key


def _frozen_counts(counts: Mapping[str, int]) -> FrozenDict[str, int]:
    """Freeze a snapshot's counters (a copy: the actor's own dict keeps changing)."""
    return counts if isinstance(counts, FrozenDict) else FrozenDict(counts)


@attrs.frozen
class StoreStatistics:
    """A snapshot of a store's counters: immutable all the way down, hashable.

    Attributes:
        keys: live (unexpired) keys now.
        ops: operations handled, by kind (a `FrozenDict`) (``get``, ``set``, ``cas``,
            ``delete``, ``list``, ``batch``, ``merge``, ...), refused ones
            included.
        conflicts: conflicts met.
        expiries: entries expired.
        subscribers: subscriptions now.
        history: events kept in the history now.
        tombstones: deleted or expired keys whose tombstone is kept now.
        commits: backend transactions.
        committed_records: records (one per key) written by them.
        committed_changes: changes they made durable (sets, deletes,
            expiries; several may be to one key): divide by `commits` for
            the mean group-commit size.
    """

    keys: int
    ops: FrozenDict[str, int] = attrs.field(converter=_frozen_counts)
    conflicts: int
    expiries: int
    subscribers: int
    history: int
    commits: int
    committed_records: int
    committed_changes: int
    tombstones: int = 0
