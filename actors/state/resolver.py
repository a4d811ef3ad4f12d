"""Settling conflicts: what each built-in strategy decides, and the `ConflictResolver` actor.

`decide` is a pure function from a `Conflict` and a built-in strategy to a
`Resolution`; ``auto_merge`` merges with `actors.state.merge.try_merge` and
falls back on overlaps. `ConflictResolver` holds the rules (strategy per key
pattern), runs custom handlers, parks ``manual`` conflicts until they are
resolved, and keeps their history. See `actors.state.conflicts` for the
strategies' table.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import attrs
from loguru import logger

from actors._core import Actor, check_count
from actors.errors import ConflictNotFoundError, MessageNotUnderstoodError, TroupeError
from actors.state.conflicts import (
    CUSTOM,
    Conflict,
    ConflictOutcome,
    ConflictRecord,
    ConflictStatistics,
    ConflictStrategy,
    Handler,
    Resolution,
    check_fallback,
    check_strategy,
)
from actors.state.globs import Glob, compile_glob
from actors.state.merge import same_json, try_merge
from actors.state.messages import CloseParkedConflict, DecideConflict, ListParkedConflicts, SetConflictStrategy

__all__ = ["ConflictResolver", "decide"]


# -- deciding -----------------------------------------------------------------


def _canonical(value: Any) -> str:
    return json.dumps(value, default=dict, sort_keys=True, separators=(",", ":"))


def _order(at: float, writer: str | None, value: Any, *, deleted: bool) -> tuple[float, str, int, str]:
    # A total order on writes that does not depend on which side is local:
    # time, then writer, then deletes before values, then the value itself.
    return (at, writer or "", 0 if deleted else 1, "" if deleted else _canonical(value))


def _remote_is_later(conflict: Conflict) -> bool:
    local, remote = conflict.local, conflict.remote
    if local is None:
        return True
    return _order(remote.at, remote.writer, remote.value, deleted=remote.delete) > _order(
        local.updated_at, local.writer, local.value, deleted=False
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
    merged, value = try_merge(conflict.base, local.value, remote.value, on_overlap=on_overlap)
    if not merged:
        where = repr(value) if value else "the whole value"
        resolution = decide(conflict, fallback)
        return attrs.evolve(resolution, reason=f"both sides changed {where}; fell back to {fallback.value}")
    if same_json(value, local.value):
        return Resolution.keep_local("merge kept the local value")
    return Resolution.merged(value)


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

    A shared service: a told request it refuses (a message it does not
    understand, a parked conflict that is not there) is a ``REJECTED`` dead
    letter, never its failure (`Actor.refusals`: every `TroupeError`).

    Raises:
        PatternError: a pattern is malformed.
        StrategyError: a strategy is unknown.
    """

    refusals: ClassVar[tuple[type[BaseException], ...]] = (TroupeError,)

    def __init__(
        self,
        strategies: Mapping[str, ConflictStrategy | str | Handler] | None = None,
        *,
        default: ConflictStrategy | str | Handler = ConflictStrategy.REJECT,
        merge_fallback: ConflictStrategy | str = ConflictStrategy.REJECT,
        history_limit: int = 1000,
    ) -> None:
        super().__init__()
        check_count("history_limit", history_limit, owner="ConflictResolver")
        self._default = check_strategy(default, what="default strategy")
        self._merge_fallback = check_fallback(merge_fallback)
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
            glob, checked, None if fallback is None else check_fallback(fallback), next(self._orders)
        )

    def on_receive(self, message: Any) -> Any:
        """Handle a resolver message (see the class docs)."""
        kind = message.__class__
        if kind is DecideConflict:
            return self._resolve(message.conflict)
        if kind is CloseParkedConflict:
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
        raise MessageNotUnderstoodError(msg)

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

    def _settle(self, message: CloseParkedConflict) -> ConflictRecord:
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
            by_strategy=self._by_strategy,  # frozen (copied) by the snapshot
            by_outcome=self._by_outcome,
            parked=len(self._parked),
        )
