"""`WorkflowJournal`: the orchestrator's write-ahead record of its executions, in SQLite (WAL).

What it holds, per execution: the workflow id and shape (task ids and
dependencies, to check a resumed definition against), the execution's
settings and inputs, its state; per task: state, attempts, times, the result
(pickled) or the error (its repr), and for a task waiting for a retry when it
is due (on the system clock: `time.monotonic()`, which holds across processes
on one host until a reboot; a `ManualClock` in tests), so a resumed retry
fires at its original due time, at once if that has passed.

Write-ahead: the orchestrator records a task as running, and commits, before
it hands the attempt to its target; it records the end, and commits, before
any dependant starts. So after the process is killed, a task the journal
shows as ``succeeded`` never runs again, and the ones it shows as
``running`` are exactly those that were in flight: a resume runs those again,
with the same idempotency key and the next attempt number.

Thread contract: one orchestrator owns a journal and calls it from its own
turns only (never two at once); the connection is opened with
``check_same_thread=False`` because a pooled actor's turns may run on
different dispatcher threads.
"""

from __future__ import annotations

import json
import os
import pickle
import sqlite3
from typing import TYPE_CHECKING, Any, Literal

import attrs

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

__all__ = ["ExecutionRecord", "TaskRecord", "WorkflowJournal"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS executions (
    id TEXT PRIMARY KEY,
    workflow_id TEXT NOT NULL,
    shape TEXT NOT NULL,
    state TEXT NOT NULL,
    max_parallel INTEGER,
    failure_policy TEXT NOT NULL,
    inputs BLOB NOT NULL,
    started_at REAL NOT NULL,
    ended_at REAL
);
CREATE TABLE IF NOT EXISTS tasks (
    execution_id TEXT NOT NULL,
    task_id TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    started_at REAL,
    ended_at REAL,
    result BLOB,
    error TEXT,
    retry_due REAL,
    PRIMARY KEY (execution_id, task_id)
) WITHOUT ROWID;
"""


@attrs.frozen
class TaskRecord:
    """One task's row as the journal last committed it."""

    task_id: str
    state: str
    attempts: int
    started_at: float | None
    ended_at: float | None
    result: Any
    error: str | None
    retry_due: float | None = None
    """For a task waiting for a retry: when it is due, on the system clock (`ActorSystem.clock`)."""


@attrs.frozen
class ExecutionRecord:
    """One execution as the journal last committed it."""

    id: str
    workflow_id: str
    shape: tuple[tuple[str, tuple[str, ...]], ...]
    state: str
    max_parallel: int | None
    failure_policy: str
    inputs: Mapping[str, Any]
    started_at: float
    ended_at: float | None
    tasks: tuple[TaskRecord, ...]


class WorkflowJournal:
    """An SQLite file (WAL) holding executions and their tasks; see the module docs.

    Args:
        path: the database file; created if missing.
        synchronous: SQLite's ``PRAGMA synchronous``. ``"NORMAL"`` (default)
            survives the process being killed, which is what resume needs;
            ``"FULL"`` also survives a power loss, at an fsync per commit.
    """

    def __init__(self, path: str | os.PathLike[str], *, synchronous: Literal["NORMAL", "FULL"] = "NORMAL") -> None:
        if synchronous not in ("NORMAL", "FULL"):
            msg = f"synchronous must be 'NORMAL' or 'FULL', got {synchronous!r}"
            raise ValueError(msg)
        self.path = os.fspath(path)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={synchronous}")
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(tasks)")}
        if "retry_due" not in columns:  # a journal written before retry delays were kept
            self._db.execute("ALTER TABLE tasks ADD COLUMN retry_due REAL")
        # Invariant: True while a transaction holds writes not yet committed.
        self._dirty = False

    def _begin(self) -> None:
        if not self._dirty:
            self._db.execute("BEGIN")
            self._dirty = True

    def begin_execution(
        self,
        execution_id: str,
        workflow_id: str,
        shape: Iterable[tuple[str, tuple[str, ...]]],
        *,
        max_parallel: int | None,
        failure_policy: str,
        inputs: Mapping[str, Any],
        started_at: float,
    ) -> None:
        """Record a new execution and its tasks, all pending."""
        shape = tuple(shape)
        self._begin()
        self._db.execute(
            "INSERT INTO executions VALUES (?, ?, ?, 'running', ?, ?, ?, ?, NULL)",
            (
                execution_id,
                workflow_id,
                json.dumps([[t, list(d)] for t, d in shape]),
                max_parallel,
                failure_policy,
                pickle.dumps(dict(inputs)),
                started_at,
            ),
        )
        self._db.executemany(
            "INSERT INTO tasks VALUES (?, ?, 'pending', 0, NULL, NULL, NULL, NULL, NULL)",
            [(execution_id, task_id) for task_id, _ in shape],
        )

    def task_started(self, execution_id: str, task_id: str, attempt: int, at: float) -> None:
        """Record that attempt `attempt` of a task is being handed to its target."""
        self._begin()
        self._db.execute(
            "UPDATE tasks SET state='running', attempts=?, started_at=COALESCE(started_at, ?), retry_due=NULL "
            "WHERE execution_id=? AND task_id=?",
            (attempt, at, execution_id, task_id),
        )

    def task_pending(self, execution_id: str, task_id: str, attempts: int, retry_due: float | None = None) -> None:
        """Record that a task waits for its next attempt, due at `retry_due` on the system clock (a retry's delay)."""
        self._begin()
        self._db.execute(
            "UPDATE tasks SET state='pending', attempts=?, retry_due=? WHERE execution_id=? AND task_id=?",
            (attempts, retry_due, execution_id, task_id),
        )

    def task_ended(
        self,
        execution_id: str,
        task_id: str,
        state: str,
        *,
        attempts: int,
        at: float,
        result: bytes | None = None,
        error: str | None = None,
    ) -> None:
        """Record a task's terminal state; `result` is already pickled (see `dumps`)."""
        self._begin()
        self._db.execute(
            "UPDATE tasks SET state=?, attempts=?, ended_at=?, result=?, error=?, retry_due=NULL "
            "WHERE execution_id=? AND task_id=?",
            (state, attempts, at, result, error, execution_id, task_id),
        )

    def execution_ended(self, execution_id: str, state: str, at: float) -> None:
        """Record an execution's terminal state."""
        self._begin()
        self._db.execute("UPDATE executions SET state=?, ended_at=? WHERE id=?", (state, at, execution_id))

    def commit(self) -> None:
        """Commit what this turn wrote (no-op if nothing)."""
        if self._dirty:
            self._dirty = False
            self._db.execute("COMMIT")

    @staticmethod
    def dumps(value: Any) -> bytes:
        """Pickle a result for the journal (raises what pickle raises)."""
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)

    def load(self, execution_id: str) -> ExecutionRecord | None:
        """Return the committed record of an execution, or None if the journal has none."""
        row = self._db.execute(
            "SELECT id, workflow_id, shape, state, max_parallel, failure_policy, inputs, started_at, ended_at "
            "FROM executions WHERE id=?",
            (execution_id,),
        ).fetchone()
        if row is None:
            return None
        tasks = tuple(
            TaskRecord(t, s, a, sa, ea, pickle.loads(r) if r is not None else None, e, d)  # noqa: S301 - our own
            for t, s, a, sa, ea, r, e, d in self._db.execute(
                "SELECT task_id, state, attempts, started_at, ended_at, result, error, retry_due "
                "FROM tasks WHERE execution_id=?",
                (execution_id,),
            )
        )
        shape = tuple((t, tuple(d)) for t, d in json.loads(row[2]))
        return ExecutionRecord(
            id=row[0],
            workflow_id=row[1],
            shape=shape,
            state=row[3],
            max_parallel=row[4],
            failure_policy=row[5],
            inputs=pickle.loads(row[6]),  # noqa: S301 - our own journal, written by this class
            started_at=row[7],
            ended_at=row[8],
            tasks=tasks,
        )

    def unfinished(self) -> tuple[str, ...]:
        """Return the ids of the executions the journal shows as still running, oldest first."""
        rows = self._db.execute("SELECT id FROM executions WHERE state='running' ORDER BY started_at, id")
        return tuple(r[0] for r in rows)

    def close(self) -> None:
        """Commit and close the connection."""
        try:
            self.commit()
        finally:
            self._db.close()
