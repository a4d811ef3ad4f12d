"""Where a `StateStore` keeps its entries: the backend interface and two backends.

The store keeps every live entry in memory and reads from there; a backend
is what makes the entries outlive the store. The interface is three calls:

- ``open()`` returns every record the backend holds (entries and tombstones),
  once, when the store starts;
- ``apply(records)`` makes a group of records durable, all or none, and only
  returns once they are (a record replaces the one with the same key);
- ``close()`` releases the backend when the store stops.

The store calls them from its own handlers only, one at a time (on whichever
thread runs the store: its own in thread mode, a dispatcher thread in pooled
mode), so a backend needs no lock of its own. A backend serves one store at a
time.

`SqliteBackend` is the durable default: standard-library SQLite in WAL mode.
`MemoryBackend` keeps records in a dict: nothing survives the process, but a
store restarted with the same backend object finds its entries again.
"""

from __future__ import annotations

import json
import os
import sqlite3
from typing import TYPE_CHECKING, Any, Literal, Protocol

from actors.errors import ProtocolError
from actors.protocol import FrozenMapping
from actors.state.codec import structure, unstructure
from actors.state.entry import Entry, Tombstone

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

__all__ = ["MemoryBackend", "Record", "SqliteBackend", "StateBackend"]

Record = Entry | Tombstone
"""What a backend stores per key: the live entry, or the tombstone of a removed one."""


class StateBackend(Protocol):
    """What a `StateStore` needs of its storage.

    A backend may also offer ``purge(keys, floor)``: in one transaction,
    delete the (tombstone) records of `keys` and store `floor`, the
    `Tombstone` of the reserved key ``""`` that keeps the highest version
    purged. Both built-in backends do; without it the store writes the floor
    with `apply` and keeps the tombstones on disk (they are purged from
    memory only).
    """

    def open(self) -> Iterable[Record]:
        """Start serving a store; return every record held (one per key)."""
        ...

    def apply(self, records: Sequence[Record]) -> None:
        """Store `records` atomically; return only once they survive a crash.

        Raises:
            Exception: nothing of `records` was stored.
        """
        ...

    def close(self) -> None:
        """Release the backend; `open` may be called again later."""
        ...


class MemoryBackend:
    """Records in a dict: fast, and gone with the process.

    A store restarted with the same `MemoryBackend` (by a supervisor, say)
    finds the entries its predecessor wrote.
    """

    def __init__(self) -> None:
        self._records: dict[str, Record] = {}

    def __repr__(self) -> str:
        return f"MemoryBackend({len(self._records)} records)"

    def open(self) -> list[Record]:
        """Return every record held."""
        return list(self._records.values())

    def apply(self, records: Sequence[Record]) -> None:
        """Store `records` (cannot fail)."""
        stored = self._records
        for record in records:
            stored[record.key] = record

    def purge(self, keys: Sequence[str], floor: Record) -> None:
        """Delete the records of `keys` and store `floor` (cannot fail)."""
        stored = self._records
        for key in keys:
            stored.pop(key, None)
        stored[floor.key] = floor

    def close(self) -> None:
        """Do nothing: the records stay for the next `open`."""


Synchronous = Literal["FULL", "NORMAL", "EXTRA"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    key        TEXT PRIMARY KEY,
    version    INTEGER NOT NULL,
    value      TEXT,              -- JSON; NULL for a tombstone
    created_at REAL,
    updated_at REAL NOT NULL,     -- for a tombstone: when it was removed
    writer     TEXT,
    metadata   TEXT,              -- JSON object, NULL when empty
    expires_at REAL
) WITHOUT ROWID
"""
_SCHEMA_VERSION = 1

_UPSERT = (
    "INSERT OR REPLACE INTO entries (key, version, value, created_at, updated_at, writer, metadata, expires_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


def _encode_default(value: object) -> object:
    if isinstance(value, FrozenMapping):
        return dict(value)
    msg = f"{value!r} is not a JSON value"  # unreachable: values are frozen JSON when they enter the store
    raise TypeError(msg)


def _dumps(value: object) -> str:
    return json.dumps(value, default=_encode_default, allow_nan=False, ensure_ascii=False, separators=(",", ":"))


class SqliteBackend:
    """Entries in one SQLite database file, in WAL mode: the durable backend.

    Each `apply` is one transaction; the store groups many writes into each
    (group commit). With ``synchronous="FULL"`` (the default) a committed
    transaction survives the process being killed and the machine losing
    power; ``"NORMAL"`` survives the process being killed, not a power loss,
    and commits several times faster when each commit holds few writes.

    Times (``updated_at``, ``expires_at``) are stored as read from the store's
    clock. `MonotonicClock` readings are comparable across processes of one
    boot only; give the store a wall clock if TTLs must carry across reboots.

    Args:
        path: the database file; created if missing. ``":memory:"`` works,
            without durability (for tests).
        synchronous: SQLite's ``PRAGMA synchronous`` level.
        timeout: seconds to wait for a lock held by another connection.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, synchronous: Synchronous = "FULL", timeout: float = 5.0
    ) -> None:
        if synchronous not in ("FULL", "NORMAL", "EXTRA"):
            msg = f"synchronous must be 'FULL', 'NORMAL' or 'EXTRA', got {synchronous!r}"
            raise ValueError(msg)
        self.path = os.fspath(path)
        self.synchronous = synchronous
        self.timeout = timeout
        self._connection: sqlite3.Connection | None = None

    def __repr__(self) -> str:
        return f"SqliteBackend({self.path!r}, synchronous={self.synchronous!r})"

    def open(self) -> list[Record]:
        """Open (creating if needed) the database and return every record in it.

        Raises:
            RuntimeError: the backend is already open.
            ProtocolError: a stored value is not valid JSON (the file was
                changed by something else); the message names the key.
            sqlite3.Error: the file is not a database, or cannot be opened.
        """
        if self._connection is not None:
            msg = f"{self!r} is already open; a backend serves one store at a time"
            raise RuntimeError(msg)
        connection = sqlite3.connect(
            self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
        )  # the store uses it from one handler at a time, on whichever thread runs it
        try:
            mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode not in ("wal", "memory"):
                msg = f"could not put {self.path!r} in WAL mode (SQLite answered {mode!r})"
                raise RuntimeError(msg)  # noqa: TRY301
            connection.execute(f"PRAGMA synchronous={self.synchronous}")
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, _SCHEMA_VERSION):
                msg = (
                    f"{self.path!r} has state-store schema version {version}, this troupe reads "
                    f"version {_SCHEMA_VERSION}; open it with the troupe that wrote it"
                )
                raise RuntimeError(msg)  # noqa: TRY301
            connection.execute(_SCHEMA)
            connection.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
            rows = connection.execute(
                "SELECT key, version, value, created_at, updated_at, writer, metadata, expires_at FROM entries"
            ).fetchall()
            records = [_decode(row) for row in rows]
        except BaseException:
            connection.close()
            raise
        self._connection = connection
        return records

    def apply(self, records: Sequence[Record]) -> None:
        """Write `records` in one transaction; return once it has committed.

        Raises:
            RuntimeError: the backend is not open.
            sqlite3.Error: the transaction failed and was rolled back.
        """
        connection = self._connection
        if connection is None:
            msg = f"{self!r} is not open; the store opens it when it starts"
            raise RuntimeError(msg)
        rows = [_encode(record) for record in records]
        connection.execute("BEGIN IMMEDIATE")
        try:
            connection.executemany(_UPSERT, rows)
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise

    def purge(self, keys: Sequence[str], floor: Record) -> None:
        """Delete the records of `keys` and store `floor`, in one transaction.

        Raises:
            RuntimeError: the backend is not open.
            sqlite3.Error: the transaction failed and was rolled back.
        """
        connection = self._connection
        if connection is None:
            msg = f"{self!r} is not open; the store opens it when it starts"
            raise RuntimeError(msg)
        connection.execute("BEGIN IMMEDIATE")
        try:
            connection.executemany("DELETE FROM entries WHERE key = ?", [(key,) for key in keys])
            connection.execute(_UPSERT, _encode(floor))
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise

    def ping(self) -> None:
        """Check the database answers (a health check's probe: one ``SELECT`` on the store's table).

        Raises:
            RuntimeError: the backend is not open.
            sqlite3.Error: the database does not answer.
        """
        connection = self._connection
        if connection is None:
            msg = f"{self!r} is not open; the store opens it when it starts"
            raise RuntimeError(msg)
        connection.execute("SELECT count(*) FROM (SELECT 1 FROM entries LIMIT 1)").fetchone()

    def close(self) -> None:
        """Close the database (idempotent)."""
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()


def _encode(record: Record) -> tuple[Any, ...]:
    """Return the row of *record*, from its converter form (`actors.state.codec`)."""
    data = unstructure(record)
    if isinstance(record, Tombstone):
        return (data["key"], data["version"], None, None, data["removed_at"], None, None, None)
    metadata = data["metadata"]
    return (
        data["key"],
        data["version"],
        _dumps(data["value"]),
        data["created_at"],
        data["updated_at"],
        data["writer"],
        _dumps(metadata) if metadata else None,
        data["expires_at"],
    )


def _decode(row: tuple[Any, ...]) -> Record:
    """Build the record of *row* through the converter; its value comes back frozen."""
    key, version, value, created_at, updated_at, writer, metadata, expires_at = row
    if value is None:
        return structure({"key": key, "version": version, "removed_at": updated_at}, Tombstone)
    try:
        data = {
            "key": key,
            "value": json.loads(value),
            "version": version,
            "created_at": created_at,
            "updated_at": updated_at,
            "writer": writer,
            "metadata": json.loads(metadata) if metadata else {},
            "expires_at": expires_at,
        }
    except ValueError as error:
        msg = f"stored value of key {key!r} is not valid JSON ({error}); the database was altered outside troupe"
        raise ProtocolError(msg, field=key) from error
    try:
        return structure(data, Entry)
    except ProtocolError as error:
        msg = f"stored entry of key {key!r} is not a valid entry ({error}); the database was altered outside troupe"
        raise ProtocolError(msg, field=key) from error
