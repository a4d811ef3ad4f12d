"""Conflicts between writes: what a conflict is, the strategies, and what a resolution says.

A `StateStore` detects a conflict and asks its resolver what to do; the
resolver applies the strategy configured for the key's pattern and answers
with a `Resolution`, which the store carries out. Conflicts are:

- ``stale``: a write expected a version of the key that is no longer current
  (another writer got there first);
- ``race``: two agents wrote one key blindly (without an expected version)
  within the store's race window;
- ``import``: an entry merged in from another store differs from ours.

In each, *local* is what the store holds and *remote* is the incoming write.

Strategies (`ConflictStrategy`):

==================== =========================================================
``reject``           the write fails: the writer gets `ConflictError` with both
                     versions (the default: nothing is lost silently)
``last_writer_wins`` the later write wins, by (time, writer, value): the same
                     two writes give the same winner in either order
``first_writer_wins`` the earlier write wins, by the same order
``keep_local``       the store keeps its value; the write is dropped
``keep_remote``      the incoming value replaces the store's
``auto_merge``       three-way merge of JSON values against the common base
                     (`three_way_merge`); overlapping changes are settled by
                     the fallback strategy
``manual``           the conflict is parked in the resolver, listed by
                     `ListParkedConflicts`, and settled later with
                     `ResolveConflict` sent to the store
==================== =========================================================

and any callable ``handler(conflict) -> Resolution`` registered for a pattern.

Which rule applies to a key: the most specific matching pattern (most
non-wildcard characters; the later registered on a tie), else the default.

This module holds the types only. The three-way merge is in
`actors.state.merge`, the decisions and the `ConflictResolver` actor in
`actors.state.resolver`, and the resolver's messages in
`actors.state.messages`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from typing import Any, Final

import attrs

from actors._core import FrozenDict
from actors.errors import StrategyError
from actors.protocol import FrozenMapping
from actors.state.entry import EMPTY_METADATA, Entry, freeze_value

__all__ = [
    "ABSENT",
    "CUSTOM",
    "Conflict",
    "ConflictKind",
    "ConflictOutcome",
    "ConflictRecord",
    "ConflictStatistics",
    "ConflictStrategy",
    "Handler",
    "Proposal",
    "Resolution",
    "check_fallback",
    "check_strategy",
]


class _Absent:
    __slots__ = ()

    def __repr__(self) -> str:
        return "ABSENT"

    def __reduce__(self) -> str:
        return "ABSENT"


ABSENT: Final = _Absent()
"""Stands for "no value here": a key missing from a dict, or an unknown base."""


class ConflictKind(enum.StrEnum):
    """How a conflict arose."""

    STALE = "stale"
    """The write expected a version that is no longer the current one."""
    RACE = "race"
    """Two agents wrote the key blindly within the store's race window."""
    IMPORT = "import"
    """An entry merged in from another store differs from the local one."""


class ConflictStrategy(enum.StrEnum):
    """The built-in conflict strategies (see the module docs)."""

    REJECT = "reject"
    LAST_WRITER_WINS = "last_writer_wins"
    FIRST_WRITER_WINS = "first_writer_wins"
    KEEP_LOCAL = "keep_local"
    KEEP_REMOTE = "keep_remote"
    AUTO_MERGE = "auto_merge"
    MANUAL = "manual"


CUSTOM: Final = "custom"
"""The strategy name recorded for conflicts settled by a registered handler."""


class ConflictOutcome(enum.StrEnum):
    """What became of a conflict."""

    KEPT_LOCAL = "kept_local"
    """The store kept its value; the incoming write was dropped."""
    TOOK_REMOTE = "took_remote"
    """The incoming write was applied."""
    MERGED = "merged"
    """A merged value was written."""
    REJECTED = "rejected"
    """The writer got `ConflictError`."""
    PARKED = "parked"
    """Waiting for a `ResolveConflict` (strategy ``manual``)."""
    FAILED = "failed"
    """A custom handler raised; the writer got its exception."""


Handler = Callable[["Conflict"], "Resolution"]


def check_strategy(strategy: object, *, what: str = "strategy") -> ConflictStrategy | Handler:
    """Return `strategy` as a `ConflictStrategy`, or the callable itself.

    Raises:
        StrategyError: it is neither a built-in strategy name nor callable.
    """
    if isinstance(strategy, str):
        try:
            return ConflictStrategy(strategy)
        except ValueError:
            pass
    elif callable(strategy):
        return strategy
    names = ", ".join(repr(s.value) for s in ConflictStrategy)
    msg = f"unknown conflict {what} {strategy!r}; use one of {names}, or a callable handler(conflict) -> Resolution"
    raise StrategyError(msg)


def check_fallback(fallback: object) -> ConflictStrategy:
    """Return `fallback` as the built-in strategy auto_merge may fall back to.

    Raises:
        StrategyError: it is unknown, a handler, or auto_merge itself.
    """
    checked = check_strategy(fallback, what="fallback")
    if not isinstance(checked, ConflictStrategy) or checked is ConflictStrategy.AUTO_MERGE:
        msg = f"the fallback of auto_merge must be a built-in strategy other than auto_merge, got {fallback!r}"
        raise StrategyError(msg)
    return checked


@attrs.frozen
class Proposal:
    """The incoming side of a conflict: the write that met a different local state.

    Attributes:
        value: the value written (None for a delete).
        writer: the identity of the writing agent, if given.
        at: when it was written (the store's clock; for an import, the
            remote entry's ``updated_at``).
        expected_version: the version the writer expected, or None.
        delete: whether the write is a delete.
        metadata: the write's metadata.
        expires_at: the write's expiry time, or None.
    """

    value: Any = attrs.field(converter=freeze_value)
    writer: str | None
    at: float
    expected_version: int | None = None
    delete: bool = False
    metadata: FrozenMapping = EMPTY_METADATA
    expires_at: float | None = None


@attrs.frozen
class Conflict:
    """A write that met a state it did not expect.

    Attributes:
        key: the key.
        kind: how it arose.
        local: what the store holds (None: the key is absent).
        remote: the incoming write.
        base: the value both sides started from (the value at the expected
            version), or `ABSENT` if unknown.
        store: the URN of the store that met it.
    """

    key: str
    kind: ConflictKind
    local: Entry | None
    remote: Proposal
    base: Any = ABSENT
    store: str = ""

    @property
    def local_version(self) -> int:
        """The version the store holds (0 when the key is absent)."""
        return 0 if self.local is None else self.local.version


@attrs.frozen
class Resolution:
    """What to do about a conflict: the answer of a strategy or a handler.

    Build one with `keep_local`, `take_remote`, `merged`, `reject` or `park`.

    Attributes:
        outcome: what to do.
        value: the merged value (outcome `MERGED`), frozen.
        reason: why, for the record (and the `ConflictError` of a rejection).
        strategy: the strategy that decided (filled in by the resolver).
        conflict_id: the id of the conflict's record (filled in by the resolver).
    """

    outcome: ConflictOutcome
    value: Any = attrs.field(default=None, converter=freeze_value)
    reason: str = ""
    strategy: str = ""
    conflict_id: int = 0

    @classmethod
    def keep_local(cls, reason: str = "") -> Resolution:
        """Keep the store's value and drop the incoming write."""
        return cls(ConflictOutcome.KEPT_LOCAL, reason=reason)

    @classmethod
    def take_remote(cls, reason: str = "") -> Resolution:
        """Apply the incoming write."""
        return cls(ConflictOutcome.TOOK_REMOTE, reason=reason)

    @classmethod
    def merged(cls, value: Any, reason: str = "") -> Resolution:
        """Write `value` (a JSON value) as the key's new version."""
        return cls(ConflictOutcome.MERGED, value, reason=reason)

    @classmethod
    def reject(cls, reason: str = "") -> Resolution:
        """Fail the write with `ConflictError`."""
        return cls(ConflictOutcome.REJECTED, reason=reason)

    @classmethod
    def park(cls, reason: str = "") -> Resolution:
        """Park the conflict until a `ResolveConflict` settles it."""
        return cls(ConflictOutcome.PARKED, reason=reason)


@attrs.frozen
class ConflictRecord:
    """One conflict in the resolver's history.

    Attributes:
        id: unique within the resolver, increasing.
        conflict: the conflict.
        strategy: the strategy that settled it (``"custom"`` for a handler).
        outcome: what became of it; `PARKED` until it is resolved.
        at: when it was met (the resolver's clock).
        value: the merged or chosen value, when there is one.
        reason: why, as the strategy or handler said.
        resolved_at: when a parked conflict was resolved, or None.
        resolved_by: the agent that resolved a parked conflict, if given.
    """

    id: int
    conflict: Conflict
    strategy: str
    outcome: ConflictOutcome
    at: float
    value: Any = None
    reason: str = ""
    resolved_at: float | None = None
    resolved_by: str | None = None


def _frozen_counts(counts: Mapping[str, int]) -> FrozenDict[str, int]:
    """Freeze a snapshot's counters (a copy: the actor's own dict keeps changing)."""
    return counts if isinstance(counts, FrozenDict) else FrozenDict(counts)


@attrs.frozen
class ConflictStatistics:
    """A snapshot of a resolver's counters: immutable all the way down, hashable.

    Attributes:
        total: conflicts met since the resolver started.
        by_strategy: conflicts by the strategy that settled them.
        by_outcome: outcomes; a parked conflict counts as `PARKED` when
            parked and again under its final outcome when resolved.
        parked: conflicts waiting for a `ResolveConflict` now.
    """

    total: int
    by_strategy: FrozenDict[str, int] = attrs.field(converter=_frozen_counts)
    by_outcome: FrozenDict[str, int] = attrs.field(converter=_frozen_counts)
    parked: int
