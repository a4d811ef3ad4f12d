"""`MessageHistory`: an append-only, queryable log of messages in SQLite (WAL), with retention.

    history = system.spawn(MessageHistory, tmp_path / "history.db")
    broker = system.spawn(MessageBroker, history=history)
    page = history.query(agent="coder", limit=50)
    page = history.query(agent="coder", after=page.next_cursor)  # the next page

Entries. Every entry belongs to a stream (``topic:<name>``, ``session:<id>``,
``direct:<from>:<to>``) and has a sequence number within it, 1, 2, 3...,
assigned in the order entries reach the history's mailbox (so one
publisher's entries to one stream keep their order). A stream's numbering
survives retention: the last number of each stream is kept in its own table.

Group commit, off the sender's path. Senders only tell the history an
`Append` (on their own thread that is one mailbox append). The history
collects entries and commits them in one transaction when its mailbox is
empty or `batch` entries wait, then settles each entry's ``ack`` future:
**acknowledged means committed**. Entries nobody awaits (a plain
publication) may wait ``commit_delay`` (5 ms of the system's clock) for
more: a storm of publications then commits in batches, not one by one. In WAL mode with ``synchronous="NORMAL"``
(the default) a committed transaction survives the process being killed;
``"FULL"`` also survives a power loss, at the cost of an fsync per commit.

Payloads. A message is stored as JSON: an `AgentMessage` in its wire form
(`actors.protocol.to_json`), anything else as a JSON value. `check_payload`
(called on the sender's thread by the broker and sessions) refuses what
cannot be either with `HistoryPayloadError`; a value that still fails to
encode (a nested non-JSON value) fails its ``ack`` and becomes a
``REJECTED`` dead letter, and the others in its batch commit. Reading a row
back goes through the protocol's converter: a row that is not a valid
message raises `ProtocolError` naming the field.

Queries (`HistoryQuery`): by agent (either side), sender, recipient, session, topic,
stream, message type, correlation id and time range, oldest first, with
keyset paging (``after=page.next_cursor``). Every filter has an index; the
per-column ones are partial (``WHERE column IS NOT NULL``), so an entry
pays only for the columns it has (a topic publication has no recipient,
session or correlation id): each index is a B-tree insert on every append.
Time has no index: timestamps never decrease along the log (a clock stepped
back repeats its last reading), so a time bound becomes an id bound, found
by bisection on the primary key (O(log^2 n) lookups). A
query sees every entry appended before it (it commits what waits first).

HistoryRetention is always on: entries older than ``max_age`` (default 30 days) and
beyond the newest ``max_rows`` (default unlimited) are deleted every
``interval`` seconds of the system's clock (a timer, so a `ManualClock`
drives it), and on `EnforceRetention`. Timestamps come from ``now`` (default
`time.time`, a wall clock, so ages carry across restarts).

Threading: the history is a thread-mode actor (SQLite calls block); its
connection is used only by its own turns.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import time
from typing import TYPE_CHECKING, Any, ClassVar, Literal, NamedTuple, cast

import attrs
from loguru import logger

from actors._core import ActorRef, DeadLetterReason, Future, QueuedMessage, ThreadActor, check_count, check_seconds
from actors.errors import HistoryPayloadError, HistoryQueryError, ProtocolError
from actors.messaging._service import Service, ServiceRef
from actors.protocol import AgentMessage, freeze_json, from_json, to_json

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = [
    "DEFAULT_MAX_AGE",
    "Append",
    "EnforceRetention",
    "HistoryEntry",
    "HistoryPage",
    "HistoryQuery",
    "HistoryRef",
    "HistoryRetention",
    "HistoryStatistics",
    "MessageHistory",
    "check_payload",
]

DEFAULT_MAX_AGE = 30 * 24 * 3600.0
"""Thirty days, in seconds: how long entries are kept by default (the seed's retention)."""

_MAX_LIMIT = 10_000
# One encoder: json.dumps with options builds a new JSONEncoder per call (~40% of encoding a small value).
_JSON = json.JSONEncoder(allow_nan=False, separators=(",", ":"))
_JSON_SCALARS = (str, int, float, bool, type(None))
Synchronous = Literal["NORMAL", "FULL", "EXTRA"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY,
    stream TEXT NOT NULL,
    seq INTEGER NOT NULL,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    sender TEXT,
    recipient TEXT,
    topic TEXT,
    session TEXT,
    message_type TEXT,
    correlation_id TEXT,
    message_id TEXT,
    payload TEXT NOT NULL,
    UNIQUE (stream, seq)
);
CREATE TABLE IF NOT EXISTS streams (stream TEXT PRIMARY KEY, last_seq INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS entries_sender ON entries (sender, id) WHERE sender IS NOT NULL;
CREATE INDEX IF NOT EXISTS entries_recipient ON entries (recipient, id) WHERE recipient IS NOT NULL;
CREATE INDEX IF NOT EXISTS entries_session ON entries (session, id) WHERE session IS NOT NULL;
CREATE INDEX IF NOT EXISTS entries_topic ON entries (topic, id) WHERE topic IS NOT NULL;
CREATE INDEX IF NOT EXISTS entries_type ON entries (message_type, id) WHERE message_type IS NOT NULL;
CREATE INDEX IF NOT EXISTS entries_correlation ON entries (correlation_id, id) WHERE correlation_id IS NOT NULL;
"""

_INSERT = (
    "INSERT INTO entries (stream, seq, ts, kind, sender, recipient, topic, session, message_type, "
    "correlation_id, message_id, payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_COLUMNS = "id, stream, seq, ts, kind, sender, recipient, topic, session, message_type, correlation_id, payload"


def _is_append(queued: QueuedMessage) -> bool:
    return queued.message.__class__ is Append


def check_payload(message: object) -> None:
    """Refuse, on the caller's thread, a message the history could not store.

    Raises:
        HistoryPayloadError: `message` is neither an `AgentMessage` nor a JSON value (str, number, bool,
            None, list/tuple, dict with str keys) at its top level.
    """
    cls = message.__class__
    if cls is AgentMessage or cls in _JSON_SCALARS or cls in (list, tuple, dict):
        if cls is float and not math.isfinite(message):  # type: ignore[arg-type]
            msg = f"the history stores JSON, which cannot carry {message!r}; send a finite number"
            raise HistoryPayloadError(msg)
        return
    msg = (
        f"the history stores AgentMessages and JSON values, not {cls.__name__} {message!r}; "
        "send an AgentMessage (actors.protocol), or convert the payload to JSON-compatible data"
    )
    raise HistoryPayloadError(msg)


def _encode(message: Any) -> tuple[str, str, str | None, str | None, str | None]:
    """Return (kind, payload, message type, correlation id, message id)."""
    if message.__class__ is AgentMessage:
        return "agent", to_json(message), message.type.value, message.correlation_id, message.message_id
    try:
        payload = _JSON.encode(message)
    except (TypeError, ValueError) as exc:
        msg = f"the history cannot store {message!r} as JSON: {exc}; send JSON-compatible data or an AgentMessage"
        raise HistoryPayloadError(msg) from exc
    return "json", payload, None, None, None


# -- requests and results -----------------------------------------------------------------------------


class Append(NamedTuple):
    """Append one message to `stream` (told; `ack`, if given, settles with the entry's seq once committed).

    A named tuple, not an attrs class as the other messages are: it is built
    on every publication's path, and a tuple is ~5x cheaper to make (2.75 ->
    0.5 us on the machine of the benchmarks). It is just as immutable.
    """

    stream: str
    message: Any
    sender: str | None = None
    recipient: str | None = None
    topic: str | None = None
    session: str | None = None
    kind: str | None = None
    ack: Future[Any] | None = None


@attrs.frozen
class HistoryQuery:
    """Find entries. All filters combine with AND; ``agent`` matches the sender or the recipient.

    ``since`` / ``until`` bound the timestamp (inclusive); ``after`` is the
    previous page's ``next_cursor``; ``limit`` is at most 10,000.
    """

    agent: str | None = None
    sender: str | None = None
    recipient: str | None = None
    session: str | None = None
    topic: str | None = None
    stream: str | None = None
    message_type: str | None = None
    correlation_id: str | None = None
    since: float | None = None
    until: float | None = None
    after: int | None = None
    limit: int = 100


@attrs.frozen
class EnforceRetention:
    """Apply the retention rules now; asked, the reply is how many entries were deleted."""


@attrs.frozen
class _Flush:
    pass


@attrs.frozen
class _CommitDue:
    pass


@attrs.frozen
class _Stats:
    pass


def _check_path(owner: str, path: object) -> None:
    """Refuse a database path that is not a str or an os.PathLike, naming the argument (TypeError)."""
    if not isinstance(path, str | os.PathLike):
        msg = f"{owner}: path must be the database file's path (a str or os.PathLike), got {path!r}"
        raise TypeError(msg)


def _frozen_message(message: Any) -> Any:
    """Return a history entry's message frozen: an `AgentMessage` as is, a JSON value by `freeze_json`."""
    return message if message.__class__ is AgentMessage else freeze_json(message, "message")


@attrs.frozen
class HistoryEntry:
    """One stored message.

    Attributes:
        id: its position in the whole log (the paging cursor).
        stream, seq: its stream and number within it.
        timestamp: when it was appended (the history's ``now``).
        kind: "agent" (an AgentMessage), "json" or "event" (a session's membership record).
        message: the message, decoded.
    """

    id: int
    stream: str
    seq: int
    timestamp: float
    kind: str
    sender: str | None
    recipient: str | None
    topic: str | None
    session: str | None
    message_type: str | None
    correlation_id: str | None
    message: Any = attrs.field(converter=_frozen_message)


@attrs.frozen
class HistoryPage:
    """A page of entries in log order; ``next_cursor`` is None on the last page."""

    entries: tuple[HistoryEntry, ...]
    next_cursor: int | None


@attrs.frozen
class HistoryStatistics:
    """The history's counters: entries committed, commits, rejected entries, deleted by retention."""

    appended: int
    commits: int
    rejected: int
    deleted: int
    largest_batch: int


@attrs.frozen
class HistoryRetention:
    """How long entries are kept: by age (seconds) and/or count; checked every `interval` seconds."""

    max_age: float | None = DEFAULT_MAX_AGE
    max_rows: int | None = None
    interval: float = 3600.0

    def __attrs_post_init__(self) -> None:
        if self.max_age is not None and not self.max_age > 0:
            msg = f"HistoryRetention.max_age must be > 0 seconds or None, got {self.max_age!r}"
            raise ValueError(msg)
        if self.max_rows is not None and self.max_rows < 1:
            msg = f"HistoryRetention.max_rows must be >= 1 or None, got {self.max_rows!r}"
            raise ValueError(msg)
        if not self.interval > 0:
            msg = f"HistoryRetention.interval must be > 0 seconds, got {self.interval!r}"
            raise ValueError(msg)


# -- the ref and the actor ------------------------------------------------------------------------------


class HistoryRef(ServiceRef):
    """The address of a `MessageHistory`, with its requests as methods."""

    __slots__ = ()

    def append(self, stream: str, message: Any, **fields: Any) -> Future[Any]:
        """Append `message` to `stream`; return a future of its seq, settled once committed."""
        check_payload(message)
        ack: Future[Any] = Future()
        self.tell(Append(stream, message, ack=ack, **fields))
        return ack

    def query(self, *, timeout: float | None = None, **filters: Any) -> HistoryPage:
        """Run a `HistoryQuery` (keyword arguments are its fields)."""
        return cast("HistoryPage", self.ask(HistoryQuery(**filters), timeout=timeout))

    def flush(self) -> None:
        """Return once everything appended before this call has committed."""
        self.ask(_Flush())

    def enforce_retention(self) -> int:
        """Apply the retention rules now; return how many entries were deleted."""
        return cast("int", self.ask(EnforceRetention()))

    def statistics(self) -> HistoryStatistics:
        """Return a snapshot of the history's counters."""
        return cast("HistoryStatistics", self.ask(_Stats()))


class MessageHistory(Service, ThreadActor):
    """The history actor (see the module docs). Spawn it; use its `HistoryRef`.

    Args:
        path: the database file (created if missing).
        retention: the retention rules (default: 30 days, any number of rows, checked hourly).
        now: where timestamps come from (default `time.time`).
        batch: entries committed at most in one transaction.
        synchronous: SQLite's ``PRAGMA synchronous``.
        commit_delay: seconds of the system's clock that entries nobody awaits (plain publications)
            may wait for company before they commit; an entry with an ack, a query, a flush or a
            stop commits at once. 0: commit whenever the mailbox is empty.
    """

    _troupe_ref_class: ClassVar[type[ActorRef[Any]]] = HistoryRef

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        retention: HistoryRetention | None = None,
        now: Callable[[], float] = time.time,
        batch: int = 4096,
        synchronous: Synchronous = "NORMAL",
        commit_delay: float = 0.005,
    ) -> None:
        super().__init__()
        if synchronous not in ("NORMAL", "FULL", "EXTRA"):
            msg = f"synchronous must be 'NORMAL', 'FULL' or 'EXTRA', got {synchronous!r}"
            raise ValueError(msg)
        _check_path("MessageHistory", path)
        if retention is not None and not isinstance(retention, HistoryRetention):
            msg = f"MessageHistory: retention must be a HistoryRetention or None, got {retention!r}"
            raise TypeError(msg)
        if not callable(now):
            msg = f"MessageHistory: now must be a callable returning seconds since the epoch, got {now!r}"
            raise TypeError(msg)
        check_count("batch", batch, minimum=1, owner="MessageHistory")
        check_seconds("commit_delay", commit_delay, positive=False, owner="MessageHistory")
        self.path = os.fspath(path)
        self.retention = retention if retention is not None else HistoryRetention()
        self.now = now
        self.batch = batch
        self.commit_delay = commit_delay
        self.db = _open(self.path, _SCHEMA, synchronous)
        # Invariant: the last seq given in each stream, committed or pending.
        self.seqs: dict[str, int] = dict(self.db.execute("SELECT stream, last_seq FROM streams").fetchall())
        last = self.db.execute("SELECT ts FROM entries ORDER BY id DESC LIMIT 1").fetchone()
        self.last_ts: float = last[0] if last is not None else -math.inf
        self.pending: list[tuple[Append, tuple[Any, ...]]] = []
        # Invariant: awaited is True iff an entry in pending has an ack future.
        self.awaited = False
        self.appended = self.commits = self.rejected = self.deleted = self.largest = 0

    def on_start(self) -> None:
        """Arm the retention timer."""
        self.timers.start_periodic_timer("retention", EnforceRetention(), self.retention.interval)

    def on_stop(self) -> None:
        """Commit what waits (queued appends included) and close the database."""
        try:
            for entry in self.take_told(Append):
                self._append(entry)
            self._commit()
        finally:
            self.db.close()

    def handle(self, message: Any) -> Any:
        """Handle an append (group commit), a query, retention, a flush or statistics."""
        cls = message.__class__
        if cls is Append:
            self._append(message)
            self._take_appends()
            if len(self.pending) >= self.batch:
                self._commit()
            elif not len(self.actor_inbox.queue):
                if self.awaited or self.commit_delay == 0:
                    self._commit()  # somebody waits for an acknowledgement: now
                elif not self.timers.is_timer_active("commit"):
                    # Nobody waits: gather more before paying for a transaction (a publication
                    # storm would otherwise commit one entry at a time).
                    self.timers.start_single_timer("commit", _CommitDue(), self.commit_delay)
            return None
        if cls is _CommitDue:
            self._commit()
            return None
        self._commit()
        match message:
            case HistoryQuery():
                return self._query(message)
            case EnforceRetention():
                return self._enforce()
            case _Flush():
                return None
            case _Stats():
                return HistoryStatistics(self.appended, self.commits, self.rejected, self.deleted, self.largest)
        return super().handle(message)

    # -- appends ------------------------------------------------------------------------------------------

    def _append(self, entry: Append) -> None:
        try:
            kind, payload, mtype, correlation, message_id = _encode(entry.message)
        except HistoryPayloadError as exc:
            self._reject(entry, exc)
            return
        seq = self.seqs.get(entry.stream, 0) + 1
        self.seqs[entry.stream] = seq
        row = (
            entry.stream, seq, self._stamp(), entry.kind or kind, entry.sender, entry.recipient, entry.topic,
            entry.session, mtype, correlation, message_id, payload,
        )  # fmt: skip
        self.pending.append((entry, row))
        if entry.ack is not None:
            self.awaited = True

    def _stamp(self) -> float:
        # Invariant: timestamps never decrease along ids (a wall clock stepped back repeats its last
        # reading), so a time bound is an id bound, found by bisection on the primary key: no
        # timestamp index to update on every append.
        now = self.now()
        if now < self.last_ts:
            return self.last_ts
        self.last_ts = now
        return now

    def _first_id(self, ts: float, *, after: bool) -> int:
        """Return the first id whose timestamp is >= `ts` (> `ts` with `after`), or the next id if none."""
        db = self.db
        lo, hi = db.execute("SELECT MIN(id), MAX(id) FROM entries").fetchone()
        if lo is None:
            return 0
        hi += 1
        probe = "SELECT id, ts FROM entries WHERE id >= ? ORDER BY id LIMIT 1"
        while lo < hi:
            mid = (lo + hi) // 2
            found_id, found_ts = db.execute(probe, (mid,)).fetchone()
            if found_ts < ts or (after and found_ts == ts):
                lo = found_id + 1
            else:
                hi = mid
        return cast("int", lo)

    def _take_appends(self) -> None:
        """Take the appends queued right behind this one, in order, without a turn each.

        Group commit's other half: a turn per entry costs about as much as
        the entry's encoding (`Actor.take_queued`, the core's batching seam).
        """
        room = self.batch - len(self.pending)
        if room > 0:
            append = self._append
            with self.take_queued(_is_append, limit=room) as taken:
                for queued in taken:
                    append(queued.message)

    def _reject(self, entry: Append, exc: Exception) -> None:
        self.rejected += 1
        logger.warning("{} rejected an entry for stream {!r}: {}", self, entry.stream, exc)
        self.actor_system.dead_letters.record(entry.message, self.actor_ref, DeadLetterReason.REJECTED, exc)
        if entry.ack is not None:
            entry.ack.set_exception((type(exc), exc, exc.__traceback__))

    def _commit(self) -> None:
        pending = self.pending
        if not pending:
            return
        self.pending = []
        self.awaited = False
        rows = [row for _, row in pending]
        streams: dict[str, int] = {}
        for row in rows:
            streams[row[0]] = row[1]
        db = self.db
        try:
            db.execute("BEGIN IMMEDIATE")
            db.executemany(_INSERT, rows)
            db.executemany(
                "INSERT INTO streams (stream, last_seq) VALUES (?, ?) "
                "ON CONFLICT(stream) DO UPDATE SET last_seq = excluded.last_seq",
                list(streams.items()),
            )
            db.execute("COMMIT")
        except Exception as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            # The numbers these entries took are given back, so the streams have no gaps.
            self.seqs.update(dict(db.execute("SELECT stream, last_seq FROM streams").fetchall()))
            for stream in streams:
                if db.execute("SELECT 1 FROM streams WHERE stream = ?", (stream,)).fetchone() is None:
                    self.seqs.pop(stream, None)
            for entry, _ in pending:
                if entry.ack is not None:
                    entry.ack.set_exception((type(exc), exc, exc.__traceback__))
            raise
        self.commits += 1
        self.appended += len(rows)
        self.largest = max(self.largest, len(rows))
        for entry, row in pending:
            if entry.ack is not None:
                entry.ack.set(row[1])

    # -- queries ----------------------------------------------------------------------------------------------

    def _query(self, query: HistoryQuery) -> HistoryPage:
        limit = query.limit
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            msg = f"a history query's limit must be an int >= 0, got {limit!r}"
            raise HistoryQueryError(msg)
        limit = min(limit, _MAX_LIMIT)
        if query.since is not None and query.until is not None and query.since > query.until:
            msg = f"a history query's time range is inverted: since={query.since!r} > until={query.until!r}"
            raise HistoryQueryError(msg)
        if query.after is not None and (isinstance(query.after, bool) or not isinstance(query.after, int)):
            msg = f"a history query's cursor must be an int (a page's next_cursor), got {query.after!r}"
            raise HistoryQueryError(msg)
        clauses: list[str] = []
        params: list[Any] = []
        if query.agent is not None:
            clauses.append(
                "id IN (SELECT id FROM entries WHERE sender = ? UNION SELECT id FROM entries WHERE recipient = ?)"
            )
            params += [query.agent, query.agent]
        for column in ("sender", "recipient", "session", "topic", "stream", "message_type", "correlation_id"):
            value = getattr(query, column)
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if query.since is not None:
            clauses.append("id >= ?")
            params.append(self._first_id(query.since, after=False))
        if query.until is not None:
            clauses.append("id < ?")
            params.append(self._first_id(query.until, after=True))
        if query.after is not None:
            clauses.append("id > ?")
            params.append(query.after)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self.db.execute(
            f"SELECT {_COLUMNS} FROM entries {where} ORDER BY id LIMIT ?",  # noqa: S608 - our clauses; values bound
            [*params, limit + 1],
        ).fetchall()
        more = len(rows) > limit
        entries = tuple(_decode(row) for row in rows[:limit])
        return HistoryPage(entries, entries[-1].id if more and entries else None)

    # -- retention -------------------------------------------------------------------------------------------

    def _enforce(self) -> int:
        deleted = 0
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            if self.retention.max_age is not None:
                cutoff = self._first_id(self.now() - self.retention.max_age, after=False)
                deleted += db.execute("DELETE FROM entries WHERE id < ?", (cutoff,)).rowcount
            if self.retention.max_rows is not None:
                row = db.execute(
                    "SELECT id FROM entries ORDER BY id DESC LIMIT 1 OFFSET ?", (self.retention.max_rows,)
                ).fetchone()
                if row is not None:
                    deleted += db.execute("DELETE FROM entries WHERE id <= ?", (row[0],)).rowcount
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        self.deleted += deleted
        if deleted:
            logger.debug("{} retention deleted {} entries", self, deleted)
        return deleted


def _open(path: str, schema: str, synchronous: str) -> sqlite3.Connection:
    """Open `path` in WAL mode with `schema`; used by the history and the inbox."""
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=5.0)
    try:
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode not in ("wal", "memory"):
            msg = f"could not put {path!r} in WAL mode (SQLite answered {mode!r})"
            raise RuntimeError(msg)  # noqa: TRY301
        db.execute(f"PRAGMA synchronous={synchronous}")
        db.executescript(schema)
    except BaseException:
        db.close()
        raise
    return db


def _decode(row: Sequence[Any]) -> HistoryEntry:
    entry_id, stream, seq, ts, kind, sender, recipient, topic, session, mtype, correlation, payload = row
    try:
        message = from_json(payload) if kind == "agent" else json.loads(payload)
        # The entry freezes a JSON value (a dict becomes a FrozenMapping, a list a tuple).
        return HistoryEntry(
            entry_id, stream, seq, ts, kind, sender, recipient, topic, session, mtype, correlation, message
        )
    except ProtocolError as exc:
        msg = f"history entry {entry_id} ({stream!r} #{seq}) holds an invalid message: {exc}"
        raise ProtocolError(msg, field=exc.field) from exc
    except ValueError as exc:
        msg = f"history entry {entry_id} ({stream!r} #{seq}) holds invalid JSON: {exc}"
        raise ProtocolError(msg, field="payload") from exc
