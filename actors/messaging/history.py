"""`MessageHistory`: an append-only, queryable log of messages in SQLite (WAL), with retention.

    history = system.spawn(MessageHistory, tmp_path / "history.db")
    broker = system.spawn(MessageBroker, history=history)
    page = history.query(agent="coder", limit=50)
    page = history.query(agent="coder", after=page.next_cursor)  # the next page

Entries. Every entry belongs to a stream (``topic:<name>``, ``session:<id>``,
``direct:<from>:<to>``) and has a sequence number within it, 1, 2, 3...,
in the order entries were told to the history (so one publisher's entries
to one stream keep their order), given when they commit. A stream's
numbering survives retention: the last number of each stream is kept in
its own table.

Group commit, off the sender's path. A sender tells the history an
`Append` (the broker calls `HistoryRef.record` with the entry's columns,
the same without the `Append`); its ref puts it in the history's journal
(`_Journal`: a flat list behind a lock, on the sender's thread, with the
entry's timestamp) and tells the history's mailbox only when the journal
had nothing waiting, or the entry is awaited, or `batch` entries wait: a
storm of publications wakes the history's thread once per commit, not once
per entry. The
history commits what waits in one transaction, then settles each entry's
``ack`` future. Entries nobody awaits (a plain publication) wait
``commit_delay`` (5 ms of the system's clock) for company; an awaited
entry, a query, a flush or a stop commits at once.

**Acknowledged means committed.** An entry is acknowledged when its
``ack`` future (`HistoryRef.append`, `BrokerRef.publish_acked`) is settled,
or when a `HistoryRef.flush` told after it returns, and that happens only
after the transaction holding it has committed. In WAL mode with
``synchronous="NORMAL"`` (the default) a committed transaction survives the
process being killed (kill -9); ``"FULL"`` also survives a power loss, at
the cost of an fsync per commit. A plain publication is not acknowledged:
up to ``commit_delay`` of them can be lost with the process.

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
A topic is found through its stream's index (``topic:<name>``), and the
topic index holds only the entries told with another stream, so a
publication pays for one index, the stream's.
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

import contextlib
import json
import math
import os
import reprlib
import sqlite3
import threading
import time
from itertools import accumulate, groupby, repeat
from operator import mul, sub
from typing import TYPE_CHECKING, Any, ClassVar, Literal, NamedTuple, cast

import attrs
from loguru import logger
from pykka import ActorDeadError

from actors._core import ActorRef, DeadLetterReason, Future, QueuedMessage, ThreadActor, check_count, check_seconds
from actors.errors import HistoryPayloadError, HistoryQueryError, ProtocolError
from actors.messaging._service import Service, ServiceRef
from actors.protocol import AgentMessage, freeze_json, from_json, to_json

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from actors._core import Cell

__all__ = [
    "DEFAULT_MAX_AGE",
    "Append",
    "EnforceRetention",
    "EntryColumns",
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
# A commit's rows: no cycle check (~20% of encoding a [timestamp, message] row); a cyclic message
# raises RecursionError instead, and `_json_rows` then finds it with `_JSON`, which names the cycle.
_ROWS = json.JSONEncoder(allow_nan=False, separators=(",", ":"), check_circular=False)
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
    payload TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS streams (stream TEXT PRIMARY KEY, last_seq INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS entries_stream ON entries (stream, id);
CREATE INDEX IF NOT EXISTS entries_sender ON entries (sender, id) WHERE sender IS NOT NULL;
CREATE INDEX IF NOT EXISTS entries_recipient ON entries (recipient, id) WHERE recipient IS NOT NULL;
CREATE INDEX IF NOT EXISTS entries_session ON entries (session, id) WHERE session IS NOT NULL;
CREATE INDEX IF NOT EXISTS entries_topic_apart ON entries (topic, id) WHERE topic IS NOT NULL AND {apart};
CREATE INDEX IF NOT EXISTS entries_type ON entries (message_type, id) WHERE message_type IS NOT NULL;
CREATE INDEX IF NOT EXISTS entries_correlation ON entries (correlation_id, id) WHERE correlation_id IS NOT NULL;
DROP INDEX IF EXISTS entries_topic;
"""
_APART = "stream <> 'topic:' || topic"  # an entry whose topic is not its stream's (the query must say it alike)
_SCHEMA = _SCHEMA.format(apart=_APART)
_TOPIC_EITHER = (  # the second half says _APART as the index does
    "id IN (SELECT id FROM entries WHERE stream = ? AND topic = ? "
    "UNION ALL SELECT id FROM entries WHERE topic = ? AND stream <> 'topic:' || topic)"
)
assert _TOPIC_EITHER.endswith(_APART + ")")  # noqa: S101 - a constant's consistency, at import
# The stream index (stream, id) serves queries by stream and by topic: a topic's entries are its stream's
# (``topic:<name>``, the broker's), and `entries_topic_apart` holds only those whose topic is not their
# stream's (an `Append` told with another stream). It replaces a (topic, id) index that duplicated the
# stream's for every publication (dropped from files made before), and the UNIQUE (stream, seq) index
# (files made before keep it: a table's constraint stays; it costs them an insert more, and holds): seqs
# are given by the one writer, which checks the streams table moved only under it (`_move_streams`).

# A run of entries is inserted from one JSON array of rows (`MessageHistory._commit`); what varies along a
# run comes from each row, the rest is bound once. `->` and `->>` need SQLite 3.38; before that,
# json_extract reads the rows, and a JSON message travels wrapped in a one-element array (json_extract
# would unquote a string; the array's text, brackets stripped, is the message's own encoding). A row's
# timestamp is its first element plus ?10, times ?9: an integer count of 2**-22 s where every stamp of the run is
# one exactly (every `time.time()` reading from 2004 to 2038 is, and later ones too: a double at or over
# 2**30 is a multiple of 2**-22; an int's text costs about a seventh of a float's repr), else the float
# itself and ?9 = 1.0. Either way the stored REAL is the stamp, bit for bit.
_RUN = (
    "INSERT INTO entries (stream, seq, ts, kind, sender, recipient, topic, session, message_type, "
    "correlation_id, message_id, payload) SELECT ?1, ?2 + key, ({ts} + ?10) * ?9, ?3, ?4, ?5, ?6, ?7, {rest} "
    "FROM json_each(?8)"
)
_JSON_RUN = _RUN.format(ts="value ->> 0", rest="NULL, NULL, NULL, value -> 1")
_AGENT_RUN = _RUN.format(ts="value ->> 0", rest="value ->> 2, value ->> 3, value ->> 4, value ->> 1")
_JSON_RUN_LEGACY = _RUN.format(
    ts="json_extract(value, '$[0]')",
    rest="NULL, NULL, NULL, substr(json_extract(value, '$[1]'), 2, length(json_extract(value, '$[1]')) - 2)",
)
_AGENT_RUN_LEGACY = _RUN.format(
    ts="json_extract(value, '$[0]')",
    rest="json_extract(value, '$[2]'), json_extract(value, '$[3]'), json_extract(value, '$[4]'), "
    "json_extract(value, '$[1]')",
)
_ARROWS = sqlite3.sqlite_version_info >= (3, 38, 0)
_TICKS = float(2**22)  # per second: a stamp's unit in a run's rows, where every stamp is a whole number of them
_TICK = 1.0 / _TICKS
_INT64 = float(2**63)
_WHOLE_TICKS = float(2**30)  # a stamp at or over it is a whole number of ticks
_TICKS_FIT = _INT64 / _TICKS  # a stamp under it, in ticks, fits an int64


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
    except (TypeError, ValueError, RecursionError) as exc:  # RecursionError: nested too deep
        shown = reprlib.repr(message)  # bounded: the message may be too deep for repr too
        msg = f"the history cannot store {shown} as JSON: {exc}; send JSON-compatible data or an AgentMessage"
        raise HistoryPayloadError(msg) from exc
    return "json", payload, None, None, None


def _times(stamps: Sequence[float]) -> tuple[Sequence[Any], int, float]:
    """Return a run's timestamps as written in its rows, their origin and their unit (see `_RUN`).

    Whole ticks (2**-22 s) after the first stamp's where every stamp is a whole number of ticks that fits
    an int64 (a few digits each, where the whole numbers had 16: an int's text costs by its digits), else
    the stamps themselves (origin 0, unit 1.0). The stamps never decrease (`MessageHistory._runs`): the
    first and last bound them. A double at or over 2**30 is a whole number of ticks (its last bit is worth
    2**-22 or more): a wall clock's, checked by its bounds alone.
    """
    try:
        if stamps[0] >= _WHOLE_TICKS and stamps[-1] < _TICKS_FIT:
            ticks: list[Any] = list(map(int, map(mul, stamps, repeat(_TICKS))))
        else:
            scaled = list(map(mul, stamps, repeat(_TICKS)))
            if not (scaled[0] > -_INT64 and scaled[-1] < _INT64 and all(map(float.is_integer, scaled))):
                return stamps, 0, 1.0
            ticks = list(map(int, scaled))
    except TypeError:  # a stamp that is not a number: let the encoder name it
        return stamps, 0, 1.0
    origin = ticks[0]
    return list(map(sub, ticks, repeat(origin))), origin, _TICK


# -- requests and results -----------------------------------------------------------------------------


EntryColumns = tuple[str, str | None, str | None, str | None, str | None, str | None]
"""What an entry shares with its run: (stream, sender, recipient, topic, session, kind) (`HistoryRef.record`)."""

# A journal's and a commit's entries lie flat in one list, _WIDTH items each: columns, message, ack,
# timestamp. Nothing per entry outlives the append (a tuple kept per entry was an object for the
# collector to count and walk), and the history takes each field by a strided slice.
_WIDTH = 4


class Append(NamedTuple):
    """Append one message to `stream` (told; `ack`, if given, settles with the entry's seq once committed).

    A named tuple, not an attrs class as the other messages are: it is built
    on every publication's path, and a tuple is ~5x cheaper to make (2.75 ->
    0.5 us on the machine of the benchmarks). It is just as immutable.
    """

    # Invariant: the fields in this order (`HistoryRef.tell` slices the columns out).
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
class _Drain:
    """The journal holds entries: commit them now, or arm the commit timer (`_Journal`)."""

    now: bool


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
    """The history's counters: entries committed, commits, rejected entries, deleted by retention.

    ``cpu_seconds`` is the CPU time the history's thread has used (its
    thread's clock, read on it): what the history costs, apart from the
    senders' side (`benchmarks/messaging.py` divides it by the entries).
    """

    appended: int
    commits: int
    rejected: int
    deleted: int
    largest_batch: int
    cpu_seconds: float = 0.0


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


class _Journal:
    """Appends told to a history, waiting for its next commit: the sender's side of group commit.

    A told `Append` is put here on the sender's thread (with its timestamp),
    not in the mailbox: a mailbox append wakes the history's thread for every
    entry (most of an entry's cost in a publication storm, measured in
    benchmarks/messaging.py), while the journal wakes it once per commit. The
    history takes everything here when it commits (`MessageHistory._drain`),
    in the order it was put here, which is the order of the streams' numbers.

    Every field is guarded by `lock`, taken by senders and by the history's
    own turns, never while calling out.
    """

    __slots__ = ("acked", "closed", "due", "entries", "limit", "lock", "now")

    def __init__(self, now: Callable[[], float], batch: int, *, immediate: bool) -> None:
        self.lock = threading.Lock()
        self.now = now
        # The length of entries at which a commit is due at once: `batch` entries, or one (commit_delay == 0).
        self.limit = _WIDTH if immediate else batch * _WIDTH
        # Invariant: entries are columns, message, ack, timestamp, ... (_WIDTH each), in the order told;
        # none is in the mailbox too.
        self.entries: list[Any] = []
        # Invariant: acked is True iff an entry in entries has an ack future.
        self.acked = False
        # Invariant: due >= the commit the history was told to make for what is in entries:
        # _IDLE (none told), _LATER (told a _Drain that arms the commit timer), _NOW (a _Drain that commits).
        self.due = _IDLE
        # Invariant: closed once the history's on_stop has taken the entries; a later append goes to the
        # mailbox (a dead letter if the actor has gone, the next incarnation's if it is restarting).
        self.closed = False

    def take(self) -> tuple[list[Any], bool]:
        """Take every entry and whether one is awaited (the history's turns only); the next append tells it again."""
        with self.lock:
            entries, acked = self.entries, self.acked
            self.entries = []
            self.acked = False
            self.due = _IDLE
        return entries, acked


_IDLE, _LATER, _NOW = 0, 1, 2


class HistoryRef(ServiceRef):
    """The address of a `MessageHistory`, with its requests as methods.

    A told `Append` goes to the history's journal on the caller's thread
    (`_Journal`); everything else to its mailbox.
    """

    __slots__ = ("_journal",)

    def __init__(self, cell: Cell) -> None:
        super().__init__(cell)
        self._journal: _Journal | None = None  # installed by the history's constructor

    def tell(self, message: Any) -> None:
        """Send `message`; an `Append` waits in the journal for the next commit, which it may call for.

        Raises:
            ActorDeadError: the history has stopped; the message is a dead letter.
        """
        if self._journal is None or message.__class__ is not Append:
            super().tell(message)
            return
        self.record(message[:1] + message[2:7], message.message, message.ack)

    def record(self, columns: EntryColumns, message: Any, ack: Future[Any] | None = None) -> None:
        """Append `message` with `columns` (told): what `tell(Append(...))` does, without the `Append`.

        The broker's path (one call a publication): `columns` is best the same
        tuple for every entry of a stream (the history finds its runs by
        comparing them, which is quickest on one object). The message is not
        checked here (`check_payload`).

        Raises:
            ActorDeadError: the history has stopped; the entry is a dead letter.
        """
        journal = self._journal
        if journal is not None:
            lock = journal.lock
            lock.acquire()  # not `with`: its enter and exit calls cost more than the rest of the append
            try:
                closed = journal.closed
                if not closed:
                    entries = journal.entries
                    entries += (columns, message, ack, journal.now())
                    if ack is not None:
                        journal.acked = True
                        due = _NOW
                    else:
                        due = _NOW if len(entries) >= journal.limit else _LATER
                    if due <= journal.due:
                        return  # the history was told already
                    journal.due = due
            finally:
                lock.release()
            if not closed:
                # Stopped after the append: its on_stop takes the journal (closing it under the lock after that).
                with contextlib.suppress(ActorDeadError):
                    super().tell(_Drain(now=due == _NOW))
                return
        # No journal yet, or stopping or stopped: the mailbox (or a dead letter) settles it.
        super().tell(Append(columns[0], message, *columns[1:], ack))

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
        self.legacy_json = not _ARROWS  # SQLite before 3.38: json_extract instead of -> and ->>
        # Invariant: the last seq committed in each stream.
        self.seqs: dict[str, int] = dict(self.db.execute("SELECT stream, last_seq FROM streams").fetchall())
        last = self.db.execute("SELECT ts FROM entries ORDER BY id DESC LIMIT 1").fetchone()
        self.last_ts: float = last[0] if last is not None else -math.inf
        # Invariant: entries to commit, in the order their streams number them, each with its timestamp.
        self.pending: list[Any] = []  # flat, as the journal's entries
        # Invariant: awaited is True iff an entry in pending has an ack future.
        self.awaited = False
        self.appended = self.commits = self.rejected = self.deleted = self.largest = 0
        ref = self.actor_ref
        self.journal: _Journal | None = None
        if isinstance(ref, HistoryRef):
            journal = ref._journal  # noqa: SLF001 - a restarted history takes over its predecessor's journal
            if journal is None:
                journal = ref._journal = _Journal(now, batch, immediate=commit_delay == 0)  # noqa: SLF001
            with journal.lock:
                journal.closed = False
                journal.due = _IDLE if not journal.entries else journal.due
            self.journal = journal

    def on_start(self) -> None:
        """Arm the retention timer."""
        self.timers.start_periodic_timer("retention", EnforceRetention(), self.retention.interval)

    def on_stop(self) -> None:
        """Commit what waits (the journal and queued appends) and close the database."""
        try:
            journal = self.journal
            if journal is not None:
                with journal.lock:
                    journal.closed = True  # later appends go to the mailbox, as dead letters
            self._drain()
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
            if len(self.pending) >= self.batch * _WIDTH:
                self._commit()
            elif not len(self.actor_inbox.queue):
                if self.awaited or self.commit_delay == 0:
                    self._commit()  # somebody waits for an acknowledgement: now
                elif not self.timers.is_timer_active("commit"):
                    # Nobody waits: gather more before paying for a transaction (a publication
                    # storm would otherwise commit one entry at a time).
                    self.timers.start_single_timer("commit", _CommitDue(), self.commit_delay)
            return None
        if cls is _Drain:
            if message.now or self.commit_delay == 0 or self.awaited:
                self._commit()
            elif not self.timers.is_timer_active("commit"):
                # Nobody waits: gather more before paying for a transaction; the journal wakes
                # the history no more until this commit has taken what it holds.
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
                return HistoryStatistics(
                    self.appended, self.commits, self.rejected, self.deleted, self.largest, time.thread_time()
                )
        return super().handle(message)

    # -- appends ------------------------------------------------------------------------------------------

    def _drain(self) -> None:
        """Move the journal's entries to `pending`, in the order they were told."""
        journal = self.journal
        if journal is None:
            return
        taken, acked = journal.take()
        if taken:
            self.pending += taken
            self.awaited = self.awaited or acked

    def _append(self, entry: Append) -> None:
        """Add `entry` (from the mailbox) to what the next commit writes, stamped now."""
        self.pending += (entry[:1] + entry[2:7], entry.message, entry.ack, self.now())
        if entry.ack is not None:
            self.awaited = True

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
        room = self.batch - len(self.pending) // _WIDTH
        if room > 0:
            append = self._append
            with self.take_queued(_is_append, limit=room) as taken:
                for queued in taken:
                    append(queued.message)

    def _reject(self, stream: str, message: Any, ack: Future[Any] | None, exc: Exception) -> None:
        self.rejected += 1
        logger.warning("{} rejected an entry for stream {!r}: {}", self, stream, exc)
        self.actor_system.dead_letters.record(message, self.actor_ref, DeadLetterReason.REJECTED, exc)
        if ack is not None:
            ack.set_exception((type(exc), exc, exc.__traceback__))

    def _commit(self) -> None:
        """Write what waits (the journal's entries, then `pending`) in one transaction; settle the acks.

        One statement per run of entries that share their columns and the
        kind of message (a publication storm on a topic is one run): the
        run's rows travel as one JSON array (encoded by one C call, the
        messages inside it) and SQLite inserts them from `json_each`. Per
        row, that is about half the CPU of an `executemany` over encoded
        rows (benchmarks/messaging.py, history), which also released and
        retook the GIL once per row, a thread switch each when the senders
        were running. Numbers are given at commit, so a rejected entry leaves
        no gap, and the streams' numbers move only once the commit succeeded.
        What is done per entry is done by C loops (zip, map, groupby, the
        encoder) where it can be: the Python around each entry was a third
        of the history's CPU.
        """
        self._drain()
        pending = self.pending
        if not pending:
            return
        self.pending = []
        awaited, self.awaited = self.awaited, False
        try:
            statements, written, streams = self._runs(pending)
        except Exception as exc:
            for i in range(0, len(pending), _WIDTH):  # nothing is lost silently: each is a dead letter, its ack failed
                self._reject(pending[i][0], pending[i + 1], pending[i + 2], exc)
            raise
        db = self.db
        try:
            db.execute("BEGIN IMMEDIATE")
            for sql, params in statements:
                db.execute(sql, params)
            self._move_streams(streams)
            db.execute("COMMIT")
        except Exception as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            if awaited:
                for acks, _ in written:
                    for ack in acks:
                        if ack is not None:
                            ack.set_exception((type(exc), exc, exc.__traceback__))
            raise
        self.seqs.update(streams)
        self.commits += 1
        count = sum(len(acks) for acks, _ in written)
        self.appended += count
        self.largest = max(self.largest, count)
        if awaited:
            for acks, first in written:
                for seq, ack in enumerate(acks, first):
                    if ack is not None:
                        ack.set(seq)

    def _move_streams(self, streams: dict[str, int]) -> None:
        """Record each stream's last seq, checking that no other writer numbered it meanwhile.

        The file's entries carry no UNIQUE (stream, seq) (an index more per
        append): one writer gives the numbers, from `seqs`. A second history
        on the same file would give them again; here its commit fails instead.

        Raises:
            sqlite3.IntegrityError: the streams table is not where this history left it.
        """
        db = self.db
        seqs = self.seqs
        for stream, last in streams.items():
            known = seqs.get(stream)
            if known is None:
                db.execute("INSERT INTO streams (stream, last_seq) VALUES (?, ?)", (stream, last))
            elif (
                db.execute(
                    "UPDATE streams SET last_seq = ? WHERE stream = ? AND last_seq = ?", (last, stream, known)
                ).rowcount
                != 1
            ):
                msg = (
                    f"{self}: stream {stream!r} of {self.path!r} was numbered past {known} by another writer; "
                    "open a history file with one MessageHistory at a time"
                )
                raise sqlite3.IntegrityError(msg)

    def _runs(
        self, pending: list[Any]
    ) -> tuple[list[tuple[str, tuple[Any, ...]]], list[tuple[Sequence[Future[Any] | None], int]], dict[str, int]]:
        """Return the statements writing `pending`, each run's acks with its first seq, and each stream's last seq.

        An entry whose message cannot be encoded is rejected here (a dead
        letter, its ack failed) and takes no number.
        """
        statements: list[tuple[str, tuple[Any, ...]]] = []
        written: list[tuple[Sequence[Future[Any] | None], int]] = []
        last: dict[str, int] = {}
        legacy = self.legacy_json
        all_columns, messages, acks, told = (pending[i::_WIDTH] for i in range(_WIDTH))
        # Timestamps never decrease along ids (a clock stepped back repeats its last reading), so a
        # time bound is an id bound, found by bisection on the primary key: no timestamp index.
        stamps = told
        if not (stamps[0] >= self.last_ts and sorted(stamps) == stamps):  # in order, as they mostly are
            stamps = list(accumulate(told, max, initial=self.last_ts))
            del stamps[0]
        self.last_ts = stamps[-1]
        start = 0
        kinds = list(map(isinstance, messages, repeat(AgentMessage)))
        if all_columns.count(all_columns[0]) == len(kinds) and kinds.count(kinds[0]) == len(kinds):
            runs: Any = (((all_columns[0], kinds[0]), kinds),)  # one run, as a storm on a topic is
        else:
            runs = groupby(zip(all_columns, kinds, strict=True))
        for (columns, agent), group in runs:
            end = start + len(list(group))
            run = slice(start, end)
            start = end
            stream, sender, recipient, topic, session, kind = columns
            if agent:
                run_acks, text, origin, unit = self._agent_rows(stream, messages[run], acks[run], stamps[run])
                sql = _AGENT_RUN_LEGACY if legacy else _AGENT_RUN
            else:
                run_acks, text, origin, unit = self._json_rows(
                    stream, messages[run], acks[run], stamps[run], legacy=legacy
                )
                sql = _JSON_RUN_LEGACY if legacy else _JSON_RUN
            if not run_acks:
                continue
            base = last.get(stream, self.seqs.get(stream, 0))
            last[stream] = base + len(run_acks)
            stored = kind or ("agent" if agent else "json")
            statements.append((sql, (stream, base + 1, stored, sender, recipient, topic, session, text, unit, origin)))
            written.append((run_acks, base + 1))
        return statements, written, last

    def _json_rows(
        self,
        stream: str,
        messages: Sequence[Any],
        acks: Sequence[Future[Any] | None],
        stamps: Sequence[float],
        *,
        legacy: bool,
    ) -> tuple[Sequence[Future[Any] | None], str, int, float]:
        """Encode a run of JSON messages as one array of [timestamp, message] rows: acks, text, time origin, unit."""
        times, origin, unit = _times(stamps)
        try:
            text = _ROWS.encode(list(zip(times, zip(messages) if legacy else messages, strict=True)))
        except (TypeError, ValueError, RecursionError):
            pass  # one of them cannot be stored: find it, reject it, write the others
        else:
            return acks, text, origin, unit
        kept: list[tuple[Any, Future[Any] | None, float]] = []
        for message, ack, stamp in zip(messages, acks, stamps, strict=True):
            try:
                _encode(message)
            except HistoryPayloadError as exc:
                self._reject(stream, message, ack, exc)
            else:
                kept.append((message, ack, stamp))
        if not kept:
            return (), "", 0, 1.0
        kept_messages, kept_acks, kept_stamps = zip(*kept, strict=True)
        return self._json_rows(stream, kept_messages, kept_acks, kept_stamps, legacy=legacy)

    def _agent_rows(
        self, stream: str, messages: Sequence[Any], acks: Sequence[Future[Any] | None], stamps: Sequence[float]
    ) -> tuple[Sequence[Future[Any] | None], str, int, float]:
        """Encode a run of `AgentMessage` entries as one array of [timestamp, wire text, type, correlation, id]."""
        times, origin, unit = _times(stamps)
        kept: list[Future[Any] | None] = []
        rows: list[list[Any]] = []
        for message, ack, stamp in zip(messages, acks, times, strict=True):
            try:
                text = to_json(message)
            except (TypeError, ValueError) as exc:
                error = HistoryPayloadError(
                    f"the history cannot store {message!r}: {exc}; send JSON-compatible content"
                )
                self._reject(stream, message, ack, error)
                continue
            kept.append(ack)
            rows.append([stamp, text, message.type.value, message.correlation_id, message.message_id])
        return kept, _ROWS.encode(rows) if rows else "", origin, unit

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
        if query.topic is not None:
            # A topic's entries are in its stream (the stream index, in log order), but for those that
            # were told with another stream: the partial index `entries_topic_apart` holds only those.
            topic = query.topic
            apart = self.db.execute(
                "SELECT 1 FROM entries WHERE topic = ? AND " + _APART + " LIMIT 1",  # noqa: S608 - constants
                (topic,),
            ).fetchone()
            if apart is None:
                clauses.append("stream = ? AND topic = ?")
                params += [f"topic:{topic}", topic]
            else:
                clauses.append(_TOPIC_EITHER)
                params += [f"topic:{topic}", topic, topic]
        for column in ("sender", "recipient", "session", "stream", "message_type", "correlation_id"):
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
