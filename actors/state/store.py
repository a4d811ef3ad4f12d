"""`StateStore`: a versioned, durable, subscribable key-value store, as an actor.

    store = system.spawn(StateStore, SqliteBackend("state.db"), strategies={"analysis:*": "auto_merge"})
    result = store.ask(SetEntry("analysis:run-1", {"score": 3}, ttl=3600, agent="analyst"))
    store.ask(GetEntry("analysis:run-1")).value            # FrozenMapping({'score': 3})
    store.ask(SetEntry("analysis:run-1", {"score": 4}, expected_version=result.version))
    store.ask(SubscribeState("analysis:*", watcher_ref))   # watcher is told StateChanged(...)
    store.proxy().statistics().get()

Reads and writes are messages (see `actors.state.messages`); `statistics()`
and `history()` are methods, for a proxy. Every live entry is held in
memory; the backend makes it durable.

Acknowledgement means durable. The answer to a write (`ask`) is sent only
after the backend transaction holding it has committed, and a subscriber
hears of a change only after that too. Reads see committed state only.

Group commit. A write handler applies its write, then takes the writes
queued right behind it in the mailbox (up to ``max_batch`` records, through
`Actor.take_queued`, so on every mailbox kind: FIFO, priority, bounded),
applies those, commits them all in one transaction, and only then answers each.
Under load (many writers, or one that pipelines ``ask(..., block=False)``)
one commit serves hundreds of writes; an idle store commits each write
alone, at once. Nothing is ever left uncommitted between two messages.

Errors. The store is a shared service (README, "Shared services"): a
refused request (access denied, a conflict whose strategy rejects, a parked
conflict that is not there, a message it does not understand) raises, and
the asker gets the error; sent with ``tell``, it is recorded as a
``REJECTED`` dead letter with the exception, and logged, and the store
serves on (`Actor.refusals`: every `TroupeError`). Only its own failures (a
backend that cannot commit) fail it. Bad input never gets that far:
messages check their fields when built.

Threading: like every actor, the store handles one message at a time, on its
own thread (thread mode), a dispatcher thread (pooled mode) or the event
loop (asyncio mode). Conflicts are settled by an ask to the resolver actor,
which never calls back: a blocking one in pooled and thread mode; in asyncio
mode an awaited one, so the loop runs on meanwhile (the store's turn is
suspended, and nothing else of the store runs until the write is done).
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from typing import TYPE_CHECKING, Any, ClassVar, cast

import attrs
from loguru import logger
from pykka import ActorDeadError

from actors._core import (
    Actor,
    AsyncioActor,
    CheckHealth,
    DeadLetterReason,
    HealthReport,
    HealthStatus,
    check_count,
    check_interface,
    check_ref,
    check_seconds,
)
from actors.errors import (
    ConflictError,
    ConflictNotFoundError,
    MailboxFullError,
    MessageNotUnderstoodError,
    TroupeError,
    TroupeInternalError,
)
from actors.state.access import AccessRule, AccessRules
from actors.state.conflicts import (
    ABSENT,
    Conflict,
    ConflictKind,
    ConflictOutcome,
    ConflictStrategy,
    Proposal,
    Resolution,
    check_fallback,
    check_strategy,
)
from actors.state.entry import Entry, Tombstone, freeze_metadata, freeze_value
from actors.state.globs import Glob, compile_glob
from actors.state.merge import same_json
from actors.state.messages import (
    CloseParkedConflict,
    DecideConflict,
    DeleteEntry,
    GetEntries,
    GetEntry,
    ListEntries,
    ListParkedConflicts,
    MergeEntries,
    ResolveConflict,
    SetAccessRules,
    SetEntry,
    StateChanged,
    StateEvent,
    StateEventKind,
    StoreStatistics,
    SubscribeState,
    UnsubscribeState,
    WriteBatch,
    WriteOutcome,
    WriteResult,
)
from actors.state.persistence import MemoryBackend, StateBackend
from actors.state.resolver import ConflictResolver

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    import pykka

    from actors._core import Clock, QueuedMessage
    from actors.state.conflicts import ConflictRecord, Handler

__all__ = ["StateStore"]


class _AwaitResolver(BaseException):
    """Raised out of `_apply` in asyncio mode: the write needs the resolver's answer to `request`.

    A BaseException, so that no ``except Exception`` on the way (a custom
    handler's, `_drain`'s) takes it for the write's own error.
    """

    def __init__(self, request: Any) -> None:
        super().__init__(request)
        self.request = request


@attrs.frozen
class _Sweep:
    """The store's own timer message: expire what is due."""


_SWEEP_TIMER = "state-store-ttl-sweep"
_FLOOR_KEY = ""  # the backend record that keeps the highest purged version (no key is empty)

_Event = tuple[int, StateEventKind, str, int, float, "str | None", "Entry | None"]
_SET = StateEventKind.SET
_EXPIRE = StateEventKind.EXPIRE

_WRITES = (SetEntry, DeleteEntry, WriteBatch, MergeEntries, ResolveConflict)
# What a write handler may take from its mailbox into its group commit.
_DRAINABLE = frozenset(_WRITES)

_OP_NAMES = ("get", "get_many", "list", "set", "cas", "delete", "batch", "merge", "resolve", "subscribe", "unsubscribe")


class _Subscription:
    __slots__ = ("agent", "glob", "id", "ref")

    def __init__(self, sub_id: int, glob: Glob, ref: pykka.ActorRef[Any], agent: str | None) -> None:
        self.id = sub_id
        self.glob = glob
        self.ref = ref
        self.agent = agent


def _check_arguments(
    *,
    backend: object,
    resolver: object,
    clock: object,
    sweep_interval: object,
    history_limit: object,
    max_batch: object,
    race_window: object,
    bases_kept: object,
    tombstone_horizon: object,
) -> None:
    """Refuse a bad `StateStore` argument where it is given, naming it (TypeError or ValueError)."""
    owner = "StateStore"
    if backend is not None:
        check_interface(
            "backend",
            backend,
            ("open", "apply", "close"),
            "a StateBackend (MemoryBackend(), SqliteBackend(path)) or None",
            owner=owner,
            hint="for a database file, pass SqliteBackend(path)",
        )
    check_ref("resolver", resolver, optional=True, owner=owner)
    if clock is not None:
        check_interface("clock", clock, ("now",), "a Clock or None (the system's)", owner=owner)
    check_seconds("sweep_interval", sweep_interval, owner=owner)
    check_seconds("race_window", race_window, positive=False, owner=owner)
    check_count("history_limit", history_limit, owner=owner)
    check_count("max_batch", max_batch, minimum=1, owner=owner)
    check_count("bases_kept", bases_kept, owner=owner)
    check_seconds("tombstone_horizon", tombstone_horizon, optional=True, owner=owner)


class StateStore(Actor):
    """A versioned key-value store that agents share: TTLs, compare-and-set, subscriptions.

    A shared service: a told request it refuses is a ``REJECTED`` dead
    letter, never its failure (see the module docs, "Errors").

    Args:
        backend: where entries are made durable (default: a new
            `MemoryBackend`). Opened here, on the spawning thread, so a bad
            database fails `spawn`; closed when the store stops.
        resolver: the `ConflictResolver` to hand conflicts to. Without one,
            the store spawns its own child resolver from `strategies`,
            `default_strategy` and `merge_fallback`.
        strategies: key pattern -> conflict strategy (name, `ConflictStrategy` or
            handler), for the child resolver.
        default_strategy: for keys no pattern matches (default ``"reject"``).
        merge_fallback: how ``auto_merge`` settles overlaps (default ``"reject"``).
        access_rules: `AccessRule` objects; None (the default) turns access
            control off.
        sweep_interval: seconds between sweeps of expired entries (they are
            invisible from the moment they expire; the sweep removes them,
            durably, and notifies subscribers).
        history_limit: how many events `history()` keeps.
        max_batch: the most records one group commit holds.
        race_window: seconds within which a blind write by one agent over
            another agent's write is a ``race`` conflict (0: never).
        tombstone_horizon: seconds (by the system clock) a deleted or
            expired key's tombstone is kept, then purged by the sweep (None:
            kept for ever). A key written again after its tombstone was
            purged gets a version above every purged one (the store keeps,
            durably, the highest version it purged), so a compare-and-set
            that expects a version of the key's earlier life is still a
            conflict.
        bases_kept: how many overwritten values are kept as merge bases for
            ``auto_merge`` of stale writes.
        clock: the clock for timestamps and TTLs (default: the system's).

    Raises:
        PatternError, StrategyError: bad strategy configuration.
        ValueError: a numeric argument out of range, or both `resolver`
            and strategy arguments.
    """

    refusals: ClassVar[tuple[type[BaseException], ...]] = (TroupeError,)

    def __init__(
        self,
        backend: StateBackend | None = None,
        *,
        resolver: pykka.ActorRef[Any] | None = None,
        strategies: Mapping[str, ConflictStrategy | str | Handler] | None = None,
        default_strategy: ConflictStrategy | str | Handler | None = None,
        merge_fallback: ConflictStrategy | str | None = None,
        access_rules: Iterable[AccessRule] | None = None,
        sweep_interval: float = 1.0,
        history_limit: int = 10_000,
        max_batch: int = 1024,
        race_window: float = 0.0,
        bases_kept: int = 10_000,
        clock: Clock | None = None,
        tombstone_horizon: float | None = 86_400.0,
    ) -> None:
        super().__init__()
        _check_arguments(
            backend=backend,
            resolver=resolver,
            clock=clock,
            sweep_interval=sweep_interval,
            history_limit=history_limit,
            max_batch=max_batch,
            race_window=race_window,
            bases_kept=bases_kept,
            tombstone_horizon=tombstone_horizon,
        )
        configured = strategies is not None or default_strategy is not None or merge_fallback is not None
        if resolver is not None and configured:
            msg = (
                "give a StateStore either a resolver or strategies/default_strategy/merge_fallback, not both; "
                "configure a shared resolver with SetConflictStrategy"
            )
            raise ValueError(msg)
        # Check the configuration here, so that a mistake fails spawn().
        for pattern, strategy in (strategies or {}).items():
            compile_glob(pattern)
            check_strategy(strategy)
        if default_strategy is not None:
            check_strategy(default_strategy, what="default strategy")
        if merge_fallback is not None:
            check_fallback(merge_fallback)
        self._resolver_args: dict[str, Any] = {"strategies": dict(strategies or {})}
        if default_strategy is not None:
            self._resolver_args["default"] = default_strategy
        if merge_fallback is not None:
            self._resolver_args["merge_fallback"] = merge_fallback
        self.resolver: pykka.ActorRef[Any] | None = resolver
        """The resolver this store hands conflicts to (set by `on_start` when the store spawns its own)."""
        self._access = None if access_rules is None else AccessRules(access_rules)
        self._sweep_interval = float(sweep_interval)
        self._max_batch = max_batch
        self._race_window = float(race_window)
        self._bases_kept = bases_kept
        self._clock: Clock = clock if clock is not None else self.actor_system.clock
        # Committed state. Invariant: a key is in at most one of _entries
        # (live, possibly expired but not swept yet) and _removed (tombstone
        # version); _expiring holds (expires_at, key, version) for every entry
        # with a TTL (and stale triples, skipped when popped).
        self._entries: dict[str, Entry] = {}
        self._removed: dict[str, int] = {}
        self._expiring: list[tuple[float, str, int]] = []
        # Tombstone purge. Invariant: _floor >= the version of every purged
        # tombstone, and a key absent from _entries and _removed counts its
        # versions from _floor (so a purge never lets a version come back).
        # _purge_due holds (when, by the system clock, key, version) in
        # commit order, for every tombstone committed (stale ones skipped).
        self._tombstone_horizon = None if tombstone_horizon is None else float(tombstone_horizon)
        self._floor = 0
        self._purge_due: deque[tuple[float, str, int]] = deque()
        # key, version -> value of overwritten versions: merge bases (oldest evicted first).
        # Up to twice `bases_kept` are held, then the older half is dropped at once:
        # evicting one by one from the front of a dict makes its iteration O(n).
        self._bases: dict[tuple[str, int], Any] = {}

        # The transaction being built. Invariant: all empty between messages.
        self._staged: dict[str, Entry | Tombstone] = {}
        self._undo: list[tuple[str, Any]] = []
        # Events as plain tuples (seq, kind, key, version, at, writer, entry): a
        # tuple costs ~0.2 µs where a StateEvent costs ~1 µs, and most are only
        # ever kept in the history. StateEvents are built for subscribers and queries.
        self._staged_events: list[_Event] = []
        self._replaced: list[Entry] = []
        self._expiring_staged = False  # whether an expiry is staged (to count it)
        self._now = 0.0  # the time of the write being handled, for `_takeable`

        # Asyncio mode: the resolver's answers are awaited, never waited for
        # on the loop (see `_write_awaiting_resolver`). Invariant: _replies
        # is None between messages.
        self._awaits_resolver = isinstance(self, AsyncioActor)
        self._replies: deque[Any] | None = None

        self._seq = itertools.count(1)
        self._history: deque[_Event] = deque(maxlen=history_limit)
        self._subscriptions: dict[int, _Subscription] = {}
        self._exact_subs: dict[str, list[_Subscription]] = {}
        self._glob_subs: dict[str, tuple[Glob, list[_Subscription]]] = {}
        self._sub_ids = itertools.count(1)

        self._ops = dict.fromkeys(_OP_NAMES, 0)
        self._conflicts = 0
        self._expiries = 0
        self._commits = 0
        self._committed_records = 0
        self._committed_changes = 0
        self._dropped_notifications = 0

        self._backend: StateBackend = backend if backend is not None else MemoryBackend()
        self._load(self._backend.open())

        self._handlers: dict[type, Callable[[Any], Any]] = {
            GetEntry: self._on_get,
            GetEntries: self._on_get_many,
            ListEntries: self._on_list,
            SubscribeState: self._on_subscribe,
            UnsubscribeState: self._on_unsubscribe,
            SetAccessRules: self._on_set_access_rules,
            _Sweep: self._on_sweep,
            CheckHealth: self._on_check_health,
        }
        for kind in _WRITES:
            self._handlers[kind] = self._on_write

    def _load(self, records: Iterable[Entry | Tombstone]) -> None:
        for record in records:
            if isinstance(record, Entry):
                self._entries[record.key] = record
                if record.expires_at is not None:
                    self._expiring.append((record.expires_at, record.key, record.version))
            elif record.key == _FLOOR_KEY:
                self._floor = max(self._floor, record.version)
            else:
                self._removed[record.key] = record.version
                self._due_for_purge(record.key, record.version)
        heapq.heapify(self._expiring)

    # -- lifecycle (the store's own thread) ------------------------------------------

    def on_start(self) -> None:
        """Spawn the child resolver if none was given; start the expiry sweep."""
        if self.resolver is None:
            self.resolver = self.spawn(ConflictResolver, **self._resolver_args)
        self.timers.start_periodic_timer(_SWEEP_TIMER, _Sweep(), interval=self._sweep_interval)

    def on_stop(self) -> None:
        """Close the backend (nothing is ever left uncommitted between messages)."""
        self._backend.close()

    def on_failure(self, *_exc_info: object) -> None:
        """Close the backend, so that a restarted store can open it again."""
        self._backend.close()

    def on_receive(self, message: Any) -> Any:
        """Handle one store message (see `actors.state.messages`)."""
        handler = self._handlers.get(message.__class__)
        if handler is None:
            msg = (
                f"{self} does not understand {message!r}; send a message of actors.state "
                "(GetEntry, SetEntry, DeleteEntry, ListEntries, WriteBatch, SubscribeState, ...)"
            )
            raise MessageNotUnderstoodError(msg)
        return handler(message)

    # -- reads ---------------------------------------------------------------------

    def _read(self, key: str, agent: str | None, now: float, what: str) -> Entry | None:
        if self._access is not None:
            self._access.check(agent, key, write=False, what=what)
        entry = self._entries.get(key)
        if entry is not None and entry.expires_at is not None and entry.expires_at <= now:
            return None
        return entry

    def _on_get(self, message: GetEntry) -> Entry | None:
        self._ops["get"] += 1
        return self._read(message.key, message.agent, self._clock.now(), "get")

    def _on_get_many(self, message: GetEntries) -> tuple[Entry | None, ...]:
        self._ops["get_many"] += 1
        now = self._clock.now()
        return tuple(self._read(key, message.agent, now, "get") for key in message.keys)

    def _on_list(self, message: ListEntries) -> tuple[Entry, ...]:
        self._ops["list"] += 1
        prefix, agent, access = message.prefix, message.agent, self._access
        if access is not None:
            access.check_under(agent, prefix, what="list")
        now = self._clock.now()
        found = [
            entry
            for key, entry in self._entries.items()
            if key.startswith(prefix)
            and not entry.expired(now)
            and (access is None or access.allows(agent, key, write=False))
        ]
        found.sort(key=lambda entry: entry.key)
        return tuple(found)

    # -- writes: one message, then the ones queued behind it, then one commit -----

    def _on_write(self, message: Any) -> Any:
        now = self._clock.now()
        if self._awaits_resolver:
            counters = (dict(self._ops), self._conflicts)
            try:
                result = self._apply(message, now)
            except _AwaitResolver as needed:
                self._ops, self._conflicts = counters
                return self._write_awaiting_resolver(message, now, needed.request, counters)
        else:
            result = self._apply(message, now)
        # Take the writes queued right behind this one into the same commit.
        # If anything below raises, the context manager fails every ask taken.
        self._now = now
        with self.take_queued(self._takeable, limit=self._max_batch) as taken:
            acks = self._drain(taken, now)
            try:
                self._commit()
            except BaseException:
                if any(queued.reply_to is None for queued, _, _ in acks):
                    logger.error("{}: a failed commit lost writes sent with tell", self)
                raise
            for queued, value, error in acks:
                if error is None:
                    queued.reply(value)
                else:
                    queued.fail(error)
        return result

    async def _write_awaiting_resolver(
        self, message: Any, now: float, request: Any, counters: tuple[dict[str, int], int]
    ) -> Any:
        """Apply `message` in asyncio mode, awaiting the resolver's answers instead of blocking the loop.

        Why it is shaped this way: a write meets its conflicts deep inside
        `_apply`, which is synchronous. So `_apply` runs until it needs an
        answer (`_AwaitResolver`, everything staged rolled back), the answer
        is awaited, and `_apply` runs again from the start with the answers
        so far, in order (`_replies`). The turn is suspended meanwhile (the
        store is not reentrant): no other message changes the state, so each
        run asks the same questions in the same order. Committed alone (no
        group commit): it is the rare path.
        """
        answers: list[Any] = []
        while True:
            answers.append(await self._require_resolver().ask(request, block=False))
            self._replies = deque(answers)
            try:
                result = self._apply(message, now)
            except _AwaitResolver as needed:
                self._ops, self._conflicts = dict(counters[0]), counters[1]
                request = needed.request
                continue
            finally:
                left, self._replies = self._replies, None
            if left:
                msg = f"{self} re-ran a write and asked its resolver {len(left)} question(s) fewer than before"
                raise TroupeInternalError(msg)
            self._commit()
            return result

    def _ask_resolver(self, request: Any) -> Any:
        """Return the resolver's answer to `request`: blocking, or (asyncio mode) awaited by the caller."""
        replies = self._replies
        if replies:
            return replies.popleft()
        if self._awaits_resolver:
            raise _AwaitResolver(request)
        return self._require_resolver().ask(request)

    def _takeable(self, queued: QueuedMessage) -> bool:
        """Return whether `_drain` may take `queued`: a write, while the transaction has room.

        A write sent with tell is taken only if it will certainly succeed: one
        that would raise is left for the runtime to deliver, which records its
        refusal as a ``REJECTED`` dead letter (`Actor.refusals`). The take is lazy, so each test sees what
        the writes taken before it staged.
        """
        message = queued.message
        kind = message.__class__
        if kind not in _DRAINABLE or len(self._undo) >= self._max_batch:  # _undo: one entry per record staged
            return False
        if queued.reply_to is not None and not self._awaits_resolver:
            return True
        # (In asyncio mode, only writes that ask the resolver nothing: see `_write_awaiting_resolver`.)
        # Without access rules or race detection, a blind set cannot fail.
        if kind is SetEntry and message.expected_version is None and self._access is None and not self._race_window:
            return True
        return self._certain(message, self._now)

    def _drain(self, taken: Iterable[QueuedMessage], now: float) -> list[tuple[QueuedMessage, Any, Any]]:
        """Stage every write `taken` yields; return (write, its result, its error) for those to answer."""
        acks: list[tuple[QueuedMessage, Any, Any]] = []
        for queued in taken:
            message = queued.message
            if queued.reply_to is None and message.__class__ is SetEntry:
                self._set(message, now, answer=False)
                continue
            try:
                acks.append((queued, self._apply(message, now), None))
            except Exception as error:  # noqa: BLE001 - it reaches the asker, as a handler's would
                if queued.reply_to is not None:
                    acks.append((queued, None, error))
                else:  # `_certain` said it could not happen
                    logger.opt(exception=True).error("{}: a write sent with tell failed: {!r}", self, message)
                    self.actor_system.dead_letters.record(message, self.actor_ref, DeadLetterReason.REJECTED, error)
        return acks

    def _certain(self, message: Any, now: float) -> bool:
        """Return whether a told write would apply without raising or meeting a conflict."""
        kind = message.__class__
        if kind is not SetEntry and kind is not DeleteEntry:
            return False
        if self._access is not None and not self._access.allows(message.agent, message.key, write=True):
            return False
        current, _ = self._peek(message.key, now)
        return self._conflict_kind(message.expected_version, message.agent, current, now) is None

    def _apply(self, message: Any, now: float) -> Any:
        """Stage one write message; on error nothing of it stays staged."""
        mark = (len(self._undo), len(self._staged_events), len(self._replaced))
        # (A told set taken by `_drain` skips this: it cannot fail.)
        try:
            kind = message.__class__
            if kind is SetEntry:
                return self._set(message, now)
            if kind is DeleteEntry:
                return self._delete(message, now)
            if kind is WriteBatch:
                self._ops["batch"] += 1
                return tuple(
                    self._set(op, now) if op.__class__ is SetEntry else self._delete(op, now) for op in message.ops
                )
            if kind is MergeEntries:
                return self._merge(message, now)
            return self._resolve_parked(message, now)
        except BaseException:
            self._rollback(mark)
            raise

    def _set(self, message: SetEntry, now: float, *, answer: bool = True) -> WriteResult | None:
        # The hot path of the store: `_current` and `_stage_set` are inlined
        # for a plain set (~1.5 µs of 5 per write).
        key, agent, expected = message.key, message.agent, message.expected_version
        ops = self._ops
        if expected is None:
            ops["set"] += 1
        else:
            ops["cas"] += 1
        if self._access is not None:
            self._access.check(agent, key, write=True, what="set")
        staged = self._staged
        current: Any = staged.get(key)
        if current is not None:
            last = current.version
            if current.__class__ is not Entry:
                current = None
        else:
            current = self._entries.get(key)
            last = current.version if current is not None else self._removed.get(key, self._floor)
        if current is not None and current.expires_at is not None and current.expires_at <= now:
            current, last = None, self._stage_removal(current, last, now, _EXPIRE, None)
        ttl = message.ttl
        expires_at = None if ttl is None else now + ttl
        if expected is not None or self._race_window:
            conflict = self._conflict_kind(expected, agent, current, now)
            if conflict is not None:
                proposal = Proposal(message.value, agent, now, expected, False, message.metadata, expires_at)
                return self._settle(key, conflict, current=current, last=last, proposal=proposal, now=now)
        version = last + 1
        entry = Entry(
            key,
            message.value,
            version,
            now if current is None else current.created_at,
            now,
            agent,
            message.metadata,
            expires_at,
        )
        self._undo.append((key, staged.get(key, ABSENT)))
        staged[key] = entry
        if current is not None:
            self._replaced.append(current)
        self._staged_events.append((next(self._seq), _SET, key, version, now, agent, entry))
        return WriteResult(key, WriteOutcome.APPLIED, version, entry) if answer else None

    def _delete(self, message: DeleteEntry, now: float) -> WriteResult:
        key, agent, expected = message.key, message.agent, message.expected_version
        self._ops["delete"] += 1
        if self._access is not None:
            self._access.check(agent, key, write=True, what="delete")
        current, last = self._current_for_write(key, now)
        conflict = self._conflict_kind(expected, agent, current, now)
        if conflict is None:
            if current is None:
                return WriteResult(key, WriteOutcome.UNCHANGED, last)
            version = self._stage_removal(current, last, now, StateEventKind.DELETE, agent)
            return WriteResult(key, WriteOutcome.APPLIED, version)
        proposal = Proposal(None, agent, now, expected, True)
        return self._settle(key, conflict, current=current, last=last, proposal=proposal, now=now)

    def _merge(self, message: MergeEntries, now: float) -> tuple[WriteResult, ...]:
        self._ops["merge"] += 1
        if self._access is not None:
            for entry in message.entries:
                self._access.check(message.agent, entry.key, write=True, what="merge")
        results = []
        for remote in message.entries:
            key = remote.key
            current, last = self._current_for_write(key, now)
            value = freeze_value(remote.value)
            metadata = freeze_metadata(remote.metadata)
            if remote.expired(now) or (current is not None and same_json(current.value, value)):
                results.append(WriteResult(key, WriteOutcome.UNCHANGED, last, current))
            elif current is None:
                # The entry keeps its own write time and writer (and creation
                # time): last_writer_wins compares them, so that merges give
                # one state whatever their order.
                entry = self._stage_set(
                    key,
                    value,
                    writer=remote.writer,
                    metadata=metadata,
                    expires_at=remote.expires_at,
                    now=now,
                    current=None,
                    last=last,
                    written_at=remote.updated_at,
                    created_at=remote.created_at,
                )
                results.append(WriteResult(key, WriteOutcome.APPLIED, entry.version, entry))
            else:
                proposal = Proposal(value, remote.writer, remote.updated_at, None, False, metadata, remote.expires_at)
                results.append(
                    self._settle(key, ConflictKind.IMPORT, current=current, last=last, proposal=proposal, now=now)
                )
        return tuple(results)

    def _resolve_parked(self, message: ResolveConflict, now: float) -> WriteResult:
        self._ops["resolve"] += 1
        parked = cast("tuple[ConflictRecord, ...]", self._ask_resolver(ListParkedConflicts()))
        record = next((r for r in parked if r.id == message.conflict_id and r.conflict.store == self.actor_urn), None)
        if record is None:
            msg = (
                f"{self} has no parked conflict {message.conflict_id}: it is unknown, resolved already, "
                "or parked by another store; list them with ListParkedConflicts sent to the resolver"
            )
            raise ConflictNotFoundError(msg)
        key = record.conflict.key
        if self._access is not None:
            self._access.check(message.agent, key, write=True, what="resolve a conflict")
        settled = cast(
            "ConflictRecord",
            self._ask_resolver(
                CloseParkedConflict(message.conflict_id, message.resolution, self.actor_urn, message.agent)
            ),
        )
        current, last = self._current_for_write(key, now)
        return self._carry_out(
            settled.outcome,
            settled.value,
            key=key,
            current=current,
            last=last,
            proposal=record.conflict.remote,
            now=now,
            conflict_id=settled.id,
            written_at=record.conflict.remote.at if record.conflict.kind is ConflictKind.IMPORT else None,
        )

    # -- conflicts ---------------------------------------------------------------------

    def _conflict_kind(
        self, expected: int | None, agent: str | None, current: Entry | None, now: float
    ) -> ConflictKind | None:
        if expected is not None:
            return None if expected == (0 if current is None else current.version) else ConflictKind.STALE
        if (
            self._race_window
            and current is not None
            and current.writer != agent
            and now - current.updated_at < self._race_window
        ):
            return ConflictKind.RACE
        return None

    def _settle(
        self, key: str, kind: ConflictKind, *, current: Entry | None, last: int, proposal: Proposal, now: float
    ) -> WriteResult:
        self._conflicts += 1
        # The base of a stale write is the version it expected, if still kept.
        expected = proposal.expected_version
        base = self._bases.get((key, expected), ABSENT) if expected else ABSENT
        conflict = Conflict(key, kind, current, proposal, base, self.actor_urn)
        resolution = cast("Resolution", self._ask_resolver(DecideConflict(conflict)))
        if resolution.outcome is ConflictOutcome.REJECTED:
            raise _rejection(conflict, resolution)
        return self._carry_out(
            resolution.outcome,
            resolution.value,
            key=key,
            current=current,
            last=last,
            proposal=proposal,
            now=now,
            conflict_id=resolution.conflict_id,
            written_at=proposal.at if kind is ConflictKind.IMPORT else None,
        )

    def _carry_out(
        self,
        outcome: ConflictOutcome,
        value: Any,
        *,
        key: str,
        current: Entry | None,
        last: int,
        proposal: Proposal,
        now: float,
        conflict_id: int,
        written_at: float | None = None,
    ) -> WriteResult:
        """Apply what settled a conflict; an imported entry taken keeps its write time (`written_at`)."""
        if outcome is ConflictOutcome.KEPT_LOCAL:
            return WriteResult(key, WriteOutcome.KEPT_LOCAL, last, current, conflict_id)
        if outcome is ConflictOutcome.PARKED:
            return WriteResult(key, WriteOutcome.PARKED, last, current, conflict_id)
        if outcome is ConflictOutcome.TOOK_REMOTE and proposal.delete:
            if current is None:
                return WriteResult(key, WriteOutcome.UNCHANGED, last, None, conflict_id)
            version = self._stage_removal(current, last, now, StateEventKind.DELETE, proposal.writer)
            return WriteResult(key, WriteOutcome.APPLIED, version, None, conflict_id)
        if outcome is ConflictOutcome.TOOK_REMOTE:
            value, result = proposal.value, WriteOutcome.APPLIED
        elif outcome is ConflictOutcome.MERGED:
            result, written_at = WriteOutcome.MERGED, None  # a new value, written now
        else:
            msg = (
                f"conflict {conflict_id} on key {key!r} came back with outcome {outcome!r}, which a store cannot apply"
            )
            raise ValueError(msg)
        entry = self._stage_set(
            key,
            value,
            writer=proposal.writer,
            metadata=proposal.metadata,
            expires_at=proposal.expires_at,
            now=now,
            current=current,
            last=last,
            written_at=written_at,
        )
        return WriteResult(key, result, entry.version, entry, conflict_id)

    def _require_resolver(self) -> pykka.ActorRef[Any]:
        resolver = self.resolver
        if resolver is None:  # only before on_start, which a message never precedes
            msg = f"{self} has no conflict resolver yet"
            raise RuntimeError(msg)
        return resolver

    # -- staging -----------------------------------------------------------------------

    def _peek(self, key: str, now: float) -> tuple[Entry | None, int]:
        """Return the live entry of `key` (None if absent or expired) and its last version."""
        current, last = self._current(key)
        if current is not None and current.expires_at is not None and current.expires_at <= now:
            return None, last + 1
        return current, last

    def _current(self, key: str) -> tuple[Entry | None, int]:
        staged = self._staged.get(key)
        if staged is not None:
            if staged.__class__ is Entry:
                return staged, staged.version
            return None, staged.version
        entry = self._entries.get(key)
        if entry is not None:
            return entry, entry.version
        return None, self._removed.get(key, self._floor)

    def _current_for_write(self, key: str, now: float) -> tuple[Entry | None, int]:
        """Like `_peek`, but an expired entry is expired first, so that its event precedes the write's."""
        current, last = self._current(key)
        if current is not None and current.expires_at is not None and current.expires_at <= now:
            return None, self._stage_removal(current, last, now, StateEventKind.EXPIRE, None)
        return current, last

    def _stage(self, key: str, record: Entry | Tombstone, previous: Entry | None) -> None:
        staged = self._staged
        self._undo.append((key, staged.get(key, ABSENT)))
        staged[key] = record
        if previous is not None:
            self._replaced.append(previous)

    def _stage_set(
        self,
        key: str,
        value: Any,
        *,
        writer: str | None,
        metadata: Any,
        expires_at: float | None,
        now: float,
        current: Entry | None,
        last: int,
        written_at: float | None = None,
        created_at: float | None = None,
    ) -> Entry:
        # `written_at`: an imported entry's own write time (default: now).
        version = last + 1
        updated = now if written_at is None else written_at
        if current is not None:
            created = current.created_at
        else:
            created = updated if created_at is None else min(created_at, updated)
        entry = Entry(key, value, version, created, updated, writer, metadata, expires_at)
        self._stage(key, entry, current)
        self._staged_events.append((next(self._seq), _SET, key, version, now, writer, entry))
        return entry

    def _stage_removal(self, current: Entry, last: int, now: float, kind: StateEventKind, writer: str | None) -> int:
        version = last + 1
        if kind is StateEventKind.EXPIRE:
            self._expiring_staged = True
        self._stage(current.key, Tombstone(current.key, version, now), current)
        self._staged_events.append((next(self._seq), kind, current.key, version, now, writer, None))
        return version

    def _rollback(self, mark: tuple[int, int, int]) -> None:
        undo_len, events_len, replaced_len = mark
        staged, undo = self._staged, self._undo
        while len(undo) > undo_len:
            key, previous = undo.pop()
            if previous is ABSENT:
                del staged[key]
            else:
                staged[key] = previous
        del self._staged_events[events_len:]
        del self._replaced[replaced_len:]

    def _commit(self) -> None:
        """Make what is staged durable, then visible, then known to subscribers."""
        staged = self._staged
        if not staged:
            return
        try:
            self._backend.apply(list(staged.values()))
        except BaseException:
            self._rollback((0, 0, 0))
            raise
        self._commits += 1
        self._committed_records += len(staged)
        self._committed_changes += len(self._undo)
        entries, removed, expiring = self._entries, self._removed, self._expiring
        for key, record in staged.items():
            if isinstance(record, Entry):
                entries[key] = record
                if removed:
                    removed.pop(key, None)
                if record.expires_at is not None:
                    heapq.heappush(expiring, (record.expires_at, key, record.version))
            else:
                entries.pop(key, None)
                removed[key] = record.version
                self._due_for_purge(key, record.version)
        if self._bases_kept:
            bases = self._bases
            for previous in self._replaced:
                bases[(previous.key, previous.version)] = previous.value
            if len(bases) > 2 * self._bases_kept:
                self._bases = dict(itertools.islice(bases.items(), len(bases) - self._bases_kept, None))
        events = self._staged_events
        self._staged = {}
        self._undo = []
        self._staged_events = []
        self._replaced = []
        self._publish(events)

    # -- events and subscriptions ------------------------------------------------------

    def _publish(self, events: list[_Event]) -> None:
        # Sequence numbers are taken when an event is staged: one rolled back leaves a gap.
        self._history.extend(events)
        if self._expiring_staged:
            self._expiring_staged = False
            self._expiries += sum(1 for event in events if event[1] is _EXPIRE)
        if self._subscriptions:
            for event in events:
                self._notify(StateEvent(*event))

    def _notify(self, event: StateEvent) -> None:
        key = event.key
        targets = list(self._exact_subs.get(key, ()))
        for glob, subs in self._glob_subs.values():
            if glob.matches(key):
                targets.extend(subs)
        access = self._access
        dead = []
        for sub in targets:
            if access is not None and not access.allows(sub.agent, key, write=False):
                continue
            try:
                sub.ref.tell(StateChanged(sub.id, event))
            except ActorDeadError:
                dead.append(sub.id)
            except MailboxFullError:
                self._dropped_notifications += 1
                logger.warning("{}: subscriber {} has a full mailbox; dropped {!r}", self, sub.ref, event)
        for sub_id in dead:
            logger.debug("{}: subscription {} dropped, its subscriber has stopped", self, sub_id)
            self._unsubscribe(sub_id)

    def _on_subscribe(self, message: SubscribeState) -> int:
        self._ops["subscribe"] += 1
        glob = message.pattern
        if self._access is not None:
            self._access.check_under(message.agent, glob.prefix, what=f"subscribe to {glob.pattern!r}")
        sub = _Subscription(next(self._sub_ids), glob, message.subscriber, message.agent)
        self._subscriptions[sub.id] = sub
        if glob.literal:
            self._exact_subs.setdefault(glob.pattern, []).append(sub)
        else:
            self._glob_subs.setdefault(glob.pattern, (glob, []))[1].append(sub)
        return sub.id

    def _on_unsubscribe(self, message: UnsubscribeState) -> bool:
        self._ops["unsubscribe"] += 1
        return self._unsubscribe(message.subscription_id)

    def _unsubscribe(self, sub_id: int) -> bool:
        sub = self._subscriptions.pop(sub_id, None)
        if sub is None:
            return False
        pattern = sub.glob.pattern
        if sub.glob.literal:
            subs = self._exact_subs[pattern]
            subs.remove(sub)
            if not subs:
                del self._exact_subs[pattern]
        else:
            subs = self._glob_subs[pattern][1]
            subs.remove(sub)
            if not subs:
                del self._glob_subs[pattern]
        return True

    # -- administration ------------------------------------------------------------------

    def _on_set_access_rules(self, message: SetAccessRules) -> None:
        if self._access is not None:
            self._access.check_admin(message.agent)
        self._access = None if message.rules is None else AccessRules(message.rules)

    def _due_for_purge(self, key: str, version: int) -> None:
        horizon = self._tombstone_horizon
        if horizon is not None:
            self._purge_due.append((self.actor_system.clock.now() + horizon, key, version))

    def _purge_tombstones(self) -> None:
        """Purge the tombstones older than the horizon: durably, the floor first (the sweep)."""
        due, removed = self._purge_due, self._removed
        now = self.actor_system.clock.now()
        purged: list[str] = []
        floor = self._floor
        while due and due[0][0] <= now:
            _, key, version = due.popleft()
            if removed.get(key) == version:  # not written again since (nor purged)
                purged.append(key)
                floor = max(floor, version)
        if not purged:
            return
        record = Tombstone(_FLOOR_KEY, floor, now)
        purge = getattr(self._backend, "purge", None)
        try:
            if purge is not None:
                purge(purged, record)
            else:
                self._backend.apply([record])
        except BaseException:
            # Nothing purged: they are due again at the next sweep.
            self._purge_due.extendleft((now, key, removed[key]) for key in reversed(purged))
            raise
        self._floor = floor
        for key in purged:
            del removed[key]

    def _on_sweep(self, _message: _Sweep) -> None:
        now = self._clock.now()
        expiring, entries = self._expiring, self._entries
        while expiring and expiring[0][0] <= now:
            _, key, version = heapq.heappop(expiring)
            entry = entries.get(key)
            if entry is not None and entry.version == version:
                self._stage_removal(entry, version, now, StateEventKind.EXPIRE, None)
            if len(self._undo) >= self._max_batch:
                self._commit()
        self._commit()
        self._purge_tombstones()

    # -- queries (call through a proxy) ----------------------------------------------------

    def _on_check_health(self, _message: CheckHealth) -> HealthReport:
        """Answer a health check: probe the backend (``ping()``, if it has one: the database reachable)."""
        ping = getattr(self._backend, "ping", None)
        measurements = {"entries": len(self._entries)}
        if ping is not None:
            try:
                ping()
            except Exception as error:  # noqa: BLE001 - the answer is the report
                return HealthReport(
                    HealthStatus.UNHEALTHY,
                    f"{self._backend!r} unreachable: {type(error).__name__}: {error}",
                    {**measurements, "backend_reachable": 0},
                )
        return HealthReport(
            HealthStatus.HEALTHY, f"{self._backend!r} reachable", {**measurements, "backend_reachable": 1}
        )

    def statistics(self) -> StoreStatistics:
        """Return a snapshot of the store's counters."""
        now = self._clock.now()
        return StoreStatistics(
            keys=sum(1 for entry in self._entries.values() if not entry.expired(now)),
            ops=self._ops,  # frozen (copied) by the snapshot
            conflicts=self._conflicts,
            expiries=self._expiries,
            subscribers=len(self._subscriptions),
            history=len(self._history),
            commits=self._commits,
            committed_records=self._committed_records,
            committed_changes=self._committed_changes,
            tombstones=len(self._removed),
        )

    def history(
        self,
        *,
        key: str | None = None,
        pattern: str | None = None,
        since: float | None = None,
        until: float | None = None,
        kind: StateEventKind | str | None = None,
        limit: int | None = None,
        agent: str | None = None,
    ) -> tuple[StateEvent, ...]:
        """Return kept events, oldest first, filtered by every argument given.

        Under access rules, only events of keys `agent` may read are returned
        (no `agent`: those the ``"*"`` rules let anyone read).

        Args:
            key: only this key.
            pattern: only keys matching this glob.
            since: only events at or after this time (store clock).
            until: only events before this time.
            kind: only this kind of event.
            limit: only the most recent `limit` of those.
            agent: who reads (see above).

        Raises:
            PatternError: `pattern` is malformed.
        """
        glob = None if pattern is None else compile_glob(pattern)
        wanted = None if kind is None else StateEventKind(kind)
        access = self._access
        found = [
            StateEvent(*event)
            for event in self._history
            if (key is None or event[2] == key)
            and (glob is None or glob.matches(event[2]))
            and (since is None or event[4] >= since)
            and (until is None or event[4] < until)
            and (wanted is None or event[1] is wanted)
            and (access is None or access.allows(agent, event[2], write=False))
        ]
        if limit is not None:
            found = found[-limit:] if limit > 0 else []
        return tuple(found)


def _rejection(conflict: Conflict, resolution: Resolution) -> ConflictError:
    local, remote = conflict.local, conflict.remote
    who = f"agent {remote.writer!r}" if remote.writer else "an anonymous writer"
    what = "delete of" if remote.delete else "write to"
    held = (
        f"version {local.version} (written by {local.writer!r})"
        if local is not None
        else f"no value (version {conflict.local_version})"
    )
    if conflict.kind is ConflictKind.STALE:
        how = f"it expected version {remote.expected_version} but the store holds {held}"
    elif conflict.kind is ConflictKind.RACE:
        how = f"it raced with the write of {held}"
    else:
        how = f"the imported value differs from {held}"
    because = f" ({resolution.reason})" if resolution.reason else ""
    msg = (
        f"{what} key {conflict.key!r} by {who} conflicts: {how}; strategy {resolution.strategy!r} rejected it"
        f"{because} [conflict {resolution.conflict_id}]. Read the key again and retry with "
        f"expected_version={conflict.local_version}, or set another strategy for this key"
    )
    return ConflictError(
        msg, key=conflict.key, local_version=conflict.local_version, remote_version=remote.expected_version
    )
