"""Conflicts between writes, and the `ConflictResolver` actor that settles them.

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
"""

from __future__ import annotations

import enum
import itertools
import json
from collections.abc import Callable, Mapping
from typing import Any, Final

import attrs
from loguru import logger

from actors._core import Actor
from actors.errors import ConflictError, ConflictNotFoundError, StrategyError
from actors.protocol import FrozenMapping
from actors.state.entry import EMPTY_METADATA, Entry, freeze_value
from actors.state.globs import Glob, compile_glob

__all__ = [
    "ABSENT",
    "Conflict",
    "ConflictKind",
    "ConflictOutcome",
    "ConflictRecord",
    "ConflictResolver",
    "ConflictStatistics",
    "ConflictStrategy",
    "ListParkedConflicts",
    "Proposal",
    "Resolution",
    "SetConflictStrategy",
    "decide",
    "three_way_merge",
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


def _check_fallback(fallback: object) -> ConflictStrategy:
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

    value: Any
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


@attrs.frozen
class ConflictStatistics:
    """A snapshot of a resolver's counters.

    Attributes:
        total: conflicts met since the resolver started.
        by_strategy: conflicts by the strategy that settled them.
        by_outcome: outcomes; a parked conflict counts as `PARKED` when
            parked and again under its final outcome when resolved.
        parked: conflicts waiting for a `ResolveConflict` now.
    """

    total: int
    by_strategy: dict[str, int]
    by_outcome: dict[str, int]
    parked: int


# -- messages -----------------------------------------------------------------


def _pattern(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    compile_glob(value)


def _strategy(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    check_strategy(value)


def _optional_fallback(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None:
        _check_fallback(value)


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

    pattern: str = attrs.field(validator=_pattern)
    strategy: ConflictStrategy | str | Callable[[Conflict], Resolution] = attrs.field(validator=_strategy)
    fallback: ConflictStrategy | str | None = attrs.field(default=None, validator=_optional_fallback)


@attrs.frozen
class ListParkedConflicts:
    """Ask a `ConflictResolver` for the parked conflicts, oldest first (optionally by key pattern).

    Answers a tuple of `ConflictRecord`.
    """

    pattern: str | None = attrs.field(default=None, validator=attrs.validators.optional(_pattern))


@attrs.frozen
class _Resolve:
    """Store -> resolver: settle this conflict. Answers a `Resolution`."""

    conflict: Conflict


@attrs.frozen
class _Settle:
    """Store -> resolver: close parked conflict `conflict_id`. Answers its `ConflictRecord`."""

    conflict_id: int
    resolution: Resolution
    store: str
    agent: str | None


# -- merging ------------------------------------------------------------------


class _Overlap(Exception):
    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path


def _same(a: Any, b: Any) -> bool:
    """Return whether two frozen JSON values are equal, telling 1, 1.0 and True apart."""
    if a is b:
        return True
    if isinstance(a, Mapping):
        return isinstance(b, Mapping) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, tuple):
        return isinstance(b, tuple) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
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


def _merge(base: Any, local: Any, remote: Any, path: str, overlap: Callable[[str, Any, Any], Any]) -> Any:
    if _same(local, remote):
        return local
    if _same(base, local):
        return remote
    if _same(base, remote):
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
        if _same(local[:n], base) and _same(remote[:n], base):
            mine = local[n:]
            return (*local, *(item for item in remote[n:] if not any(_same(item, m) for m in mine)))
    return overlap(path, local, remote)


# -- deciding -----------------------------------------------------------------


def _canonical(value: Any) -> str:
    return json.dumps(value, default=dict, sort_keys=True, separators=(",", ":"))


def _order(at: float, writer: str | None, deleted: bool, value: Any) -> tuple[float, str, int, str]:
    # A total order on writes that does not depend on which side is local:
    # time, then writer, then deletes before values, then the value itself.
    return (at, writer or "", 0 if deleted else 1, "" if deleted else _canonical(value))


def _remote_is_later(conflict: Conflict) -> bool:
    local, remote = conflict.local, conflict.remote
    if local is None:
        return True
    return _order(remote.at, remote.writer, remote.delete, remote.value) > _order(
        local.updated_at, local.writer, False, local.value
    )


def decide(
    conflict: Conflict, strategy: ConflictStrategy, fallback: ConflictStrategy = ConflictStrategy.REJECT
) -> Resolution:
    """Return what a built-in `strategy` makes of `conflict` (a pure function).

    ``last_writer_wins`` and ``first_writer_wins`` compare the two writes by
    (time, writer, deletion, value): the same two writes give the same winner
    whichever is local. When the key is absent locally, both take the remote
    write (there is nothing to compare with). ``auto_merge`` needs two values
    (no deletes) and settles overlaps with `fallback`: per overlapping field
    for ``keep_local``, ``keep_remote``, ``last_writer_wins`` and
    ``first_writer_wins``, else for the whole conflict.
    """
    if strategy is ConflictStrategy.REJECT:
        return Resolution.reject()
    if strategy is ConflictStrategy.KEEP_LOCAL:
        return Resolution.keep_local()
    if strategy is ConflictStrategy.KEEP_REMOTE:
        return Resolution.take_remote()
    if strategy is ConflictStrategy.MANUAL:
        return Resolution.park()
    if strategy is ConflictStrategy.LAST_WRITER_WINS:
        return Resolution.take_remote("later write") if _remote_is_later(conflict) else Resolution.keep_local()
    if strategy is ConflictStrategy.FIRST_WRITER_WINS:
        if conflict.local is None or not _remote_is_later(conflict):
            return Resolution.take_remote("earlier write")
        return Resolution.keep_local("earlier write")
    return _auto_merge(conflict, fallback)


def _auto_merge(conflict: Conflict, fallback: ConflictStrategy) -> Resolution:
    local, remote = conflict.local, conflict.remote
    if local is None or remote.delete:
        resolution = decide(conflict, fallback)
        return attrs.evolve(resolution, reason=f"a delete cannot be merged; fell back to {fallback.value}")
    if fallback in (
        ConflictStrategy.KEEP_LOCAL,
        ConflictStrategy.KEEP_REMOTE,
        ConflictStrategy.LAST_WRITER_WINS,
        ConflictStrategy.FIRST_WRITER_WINS,
    ):
        take_remote = fallback is ConflictStrategy.KEEP_REMOTE or (
            fallback is not ConflictStrategy.KEEP_LOCAL
            and _remote_is_later(conflict) == (fallback is ConflictStrategy.LAST_WRITER_WINS)
        )

        def pick(_path: str, mine: Any, theirs: Any) -> Any:
            return theirs if take_remote else mine

        on_overlap: Callable[[str, Any, Any], Any] | None = pick
    else:
        on_overlap = None
    try:
        value = _merge(conflict.base, local.value, remote.value, "", on_overlap or _raise_overlap)
    except _Overlap as found:
        where = repr(found.path) if found.path else "the whole value"
        resolution = decide(conflict, fallback)
        return attrs.evolve(resolution, reason=f"both sides changed {where}; fell back to {fallback.value}")
    if _same(value, local.value):
        return Resolution.keep_local("merge kept the local value")
    return Resolution.merged(value)


def _raise_overlap(path: str, _mine: Any, _theirs: Any) -> Any:
    raise _Overlap(path)


# -- the actor ----------------------------------------------------------------


@attrs.frozen
class _Rule:
    glob: Glob
    strategy: ConflictStrategy | Handler
    fallback: ConflictStrategy | None
    order: int


class ConflictResolver(Actor):
    """Settle the conflicts a `StateStore` meets, by the strategy configured per key pattern.

    Spawn one and pass it to stores (``StateStore(resolver=ref)``), or let a
    store spawn its own child resolver from its ``strategies`` argument.

    Messages it answers: `SetConflictStrategy`, `ListParkedConflicts`, and the
    store's private ones. Through a proxy: `statistics()`, `history()`,
    `parked()`, `rule_for()`.

    Custom handlers run on the resolver's thread while the store waits for
    the answer: what they raise reaches the writer, and they must not ask
    the store anything (it is blocked on them: a deadlock).

    Args:
        strategies: key pattern -> strategy name, `ConflictStrategy` or handler.
        default: the strategy for keys no pattern matches (``"reject"``).
        merge_fallback: how ``auto_merge`` settles overlapping changes when
            its rule names no fallback (``"reject"``).
        history_limit: how many settled conflicts are kept for `history()`
            (parked ones are always kept until resolved).

    Raises:
        PatternError: a pattern is malformed.
        StrategyError: a strategy is unknown.
    """

    def __init__(
        self,
        strategies: Mapping[str, ConflictStrategy | str | Handler] | None = None,
        *,
        default: ConflictStrategy | str | Handler = ConflictStrategy.REJECT,
        merge_fallback: ConflictStrategy | str = ConflictStrategy.REJECT,
        history_limit: int = 1000,
    ) -> None:
        super().__init__()
        if history_limit < 0:
            msg = f"history_limit must be >= 0, got {history_limit!r}"
            raise ValueError(msg)
        self._default = check_strategy(default, what="default strategy")
        self._merge_fallback = _check_fallback(merge_fallback)
        self._orders = itertools.count()
        # Invariant: at most one rule per pattern string.
        self._rules: dict[str, _Rule] = {}
        for pattern, strategy in (strategies or {}).items():
            self._set_rule(pattern, strategy, None)
        self._ids = itertools.count(1)
        self._history_limit = history_limit
        # Invariant: ordered by id; every parked record is here; settled ones
        # beyond `history_limit` are evicted oldest first.
        self._records: dict[int, ConflictRecord] = {}
        self._parked: dict[int, ConflictRecord] = {}
        self._settled_count = 0
        self._total = 0
        self._by_strategy: dict[str, int] = {}
        self._by_outcome: dict[str, int] = {}

    def _set_rule(self, pattern: str, strategy: object, fallback: object) -> None:
        glob = compile_glob(pattern)
        checked = check_strategy(strategy)
        self._rules[pattern] = _Rule(
            glob, checked, None if fallback is None else _check_fallback(fallback), next(self._orders)
        )

    def on_receive(self, message: Any) -> Any:
        """Handle a resolver message (see the class docs)."""
        kind = message.__class__
        if kind is _Resolve:
            return self._resolve(message.conflict)
        if kind is _Settle:
            return self._settle(message)
        if kind is SetConflictStrategy:
            self._set_rule(message.pattern, message.strategy, message.fallback)
            return None
        if kind is ListParkedConflicts:
            return self.parked(message.pattern)
        msg = (
            f"{self} does not understand {message!r}; send SetConflictStrategy or ListParkedConflicts, "
            "or call statistics() / history() through a proxy"
        )
        raise TypeError(msg)

    def rule_for(self, key: str) -> tuple[str, ConflictStrategy | Handler, ConflictStrategy]:
        """Return (pattern or ``"*default*"``, strategy, auto_merge fallback) for `key`."""
        best: _Rule | None = None
        for rule in self._rules.values():
            if rule.glob.matches(key) and (
                best is None or (rule.glob.specificity, rule.order) > (best.glob.specificity, best.order)
            ):
                best = rule
        if best is None:
            return "*default*", self._default, self._merge_fallback
        return best.glob.pattern, best.strategy, best.fallback or self._merge_fallback

    def _resolve(self, conflict: Conflict) -> Resolution:
        pattern, strategy, fallback = self.rule_for(conflict.key)
        conflict_id = next(self._ids)
        if isinstance(strategy, ConflictStrategy):
            name = strategy.value
            resolution = decide(conflict, strategy, fallback)
        else:
            name = CUSTOM
            try:
                resolution = strategy(conflict)
            except Exception as error:
                self._record(
                    ConflictRecord(conflict_id, conflict, name, ConflictOutcome.FAILED, self._now(), reason=repr(error))
                )
                raise
            if not isinstance(resolution, Resolution) or resolution.outcome is ConflictOutcome.FAILED:
                msg = (
                    f"the conflict handler {strategy!r} for pattern {pattern!r} returned {resolution!r} for key "
                    f"{conflict.key!r}; return a Resolution (Resolution.keep_local(), .take_remote(), "
                    ".merged(value), .reject() or .park())"
                )
                self._record(
                    ConflictRecord(conflict_id, conflict, name, ConflictOutcome.FAILED, self._now(), reason=msg)
                )
                raise TypeError(msg)
        resolution = attrs.evolve(resolution, strategy=name, conflict_id=conflict_id)
        self._record(
            ConflictRecord(
                conflict_id,
                conflict,
                name,
                resolution.outcome,
                self._now(),
                value=resolution.value,
                reason=resolution.reason,
            )
        )
        return resolution

    def _settle(self, message: _Settle) -> ConflictRecord:
        record = self._parked.get(message.conflict_id)
        if record is None or record.conflict.store != message.store:
            known = sorted(self._parked)[:10]
            msg = (
                f"no parked conflict {message.conflict_id} for this store in {self}; it is unknown or resolved "
                f"already. Parked now: {known}; list them with ListParkedConflicts"
            )
            raise ConflictNotFoundError(msg)
        resolution = message.resolution
        if resolution.outcome not in (ConflictOutcome.KEPT_LOCAL, ConflictOutcome.TOOK_REMOTE, ConflictOutcome.MERGED):
            msg = (
                f"a parked conflict is resolved with Resolution.keep_local(), .take_remote() or .merged(value), "
                f"got outcome {resolution.outcome.value!r} for conflict {message.conflict_id}"
            )
            raise ValueError(msg)
        del self._parked[message.conflict_id]
        settled = attrs.evolve(
            record,
            outcome=resolution.outcome,
            value=resolution.value,
            reason=resolution.reason,
            resolved_at=self._now(),
            resolved_by=message.agent,
        )
        self._records[settled.id] = settled
        self._by_outcome[settled.outcome.value] = self._by_outcome.get(settled.outcome.value, 0) + 1
        self._evict()
        return settled

    def _record(self, record: ConflictRecord) -> None:
        self._total += 1
        self._by_strategy[record.strategy] = self._by_strategy.get(record.strategy, 0) + 1
        self._by_outcome[record.outcome.value] = self._by_outcome.get(record.outcome.value, 0) + 1
        self._records[record.id] = record
        if record.outcome is ConflictOutcome.PARKED:
            self._parked[record.id] = record
            logger.info("Conflict {} on key {!r} parked for manual resolution", record.id, record.conflict.key)
        self._evict()

    def _evict(self) -> None:
        records = self._records
        excess = len(records) - len(self._parked) - self._history_limit
        if excess <= 0:
            return
        for record_id in [i for i in records if i not in self._parked][:excess]:
            del records[record_id]

    def _now(self) -> float:
        return self.actor_system.clock.now()

    def parked(self, pattern: str | None = None) -> tuple[ConflictRecord, ...]:
        """Return the parked conflicts, oldest first, optionally only keys matching `pattern`."""
        glob = None if pattern is None else compile_glob(pattern)
        return tuple(r for r in self._parked.values() if glob is None or glob.matches(r.conflict.key))

    def history(
        self,
        *,
        key: str | None = None,
        pattern: str | None = None,
        since: float | None = None,
        until: float | None = None,
        outcome: ConflictOutcome | str | None = None,
        limit: int | None = None,
    ) -> tuple[ConflictRecord, ...]:
        """Return kept conflict records, oldest first, filtered by every argument given.

        Args:
            key: only this key.
            pattern: only keys matching this glob.
            since: only conflicts met at or after this time (resolver clock).
            until: only conflicts met before this time.
            outcome: only this outcome.
            limit: only the most recent `limit` of those.
        """
        glob = None if pattern is None else compile_glob(pattern)
        wanted = None if outcome is None else ConflictOutcome(outcome)
        found = [
            r
            for r in self._records.values()
            if (key is None or r.conflict.key == key)
            and (glob is None or glob.matches(r.conflict.key))
            and (since is None or r.at >= since)
            and (until is None or r.at < until)
            and (wanted is None or r.outcome is wanted)
        ]
        if limit is not None:
            found = found[-limit:] if limit > 0 else []
        return tuple(found)

    def statistics(self) -> ConflictStatistics:
        """Return a snapshot of the counters."""
        return ConflictStatistics(
            total=self._total,
            by_strategy=dict(self._by_strategy),
            by_outcome=dict(self._by_outcome),
            parked=len(self._parked),
        )
