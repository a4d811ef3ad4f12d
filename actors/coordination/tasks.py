"""Tasks: what is submitted (`TaskSpec`), its retry policy and timeouts, and what callers get back.

Defaults, chosen from the anchors (../shared/research/anchors-coordination.md):

- `RetryPolicy` (in `actors.coordination.retry`, shared with the workflow
  orchestrator): Temporal's shape (1 s initial delay, x2 backoff, capped at
  100x the initial delay, non-retryable types), but at most 3 attempts (Ray's
  and LangGraph's limit) rather than Temporal's unlimited ones, so that a
  handler that always raises reaches its caller.
- `Timeouts`: none by default: a task waits for a capable agent as long as it
  takes and is never dropped. Set ``schedule_to_start`` to bound that wait,
  ``start_to_close`` per attempt (catches a lost task), ``schedule_to_close``
  over all attempts, ``heartbeat`` for a hung one (the agent calls
  `Agent.report_progress`).

Threading: frozen values, and a `TaskHandle` whose future any thread may wait on.
"""

from __future__ import annotations

import enum
import math
import uuid
from collections.abc import Iterable
from typing import Any

import attrs

from actors._core import Future
from actors.coordination.identity import AgentId
from actors.coordination.retry import RetryPolicy
from actors.errors import TaskSpecError

__all__ = ["Task", "TaskHandle", "TaskInfo", "TaskSpec", "TaskState", "Timeouts"]


def _positive_or_none(_inst: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        msg = f"{attribute.name} must be a finite number of seconds > 0 (or None for no limit), got {value!r}"
        raise TaskSpecError(msg)


NO_RETRY = RetryPolicy(max_attempts=1)
DEFAULT_RETRY = RetryPolicy()


@attrs.frozen
class Timeouts:
    """Temporal's four timeouts, in seconds on the system clock; None: no limit (the default)."""

    schedule_to_start: float | None = attrs.field(default=None, validator=_positive_or_none)
    start_to_close: float | None = attrs.field(default=None, validator=_positive_or_none)
    schedule_to_close: float | None = attrs.field(default=None, validator=_positive_or_none)
    heartbeat: float | None = attrs.field(default=None, validator=_positive_or_none)


NO_TIMEOUTS = Timeouts()


def _caps(value: Iterable[str]) -> frozenset[str]:
    if value.__class__ is frozenset:  # the common case, as is: one call fewer per TaskSpec
        return value
    return frozenset((value,) if isinstance(value, str) else value)


@attrs.frozen
class TaskSpec:
    """A task to submit to a `Coordinator`.

    Attributes:
        kind: what to do; the agent's handler dispatches on it.
        payload: its input (pass immutable values: it is shared, not copied).
        requires: capabilities the agent must hold, all of them.
        priority: higher first; waiting raises a task's rank (see `Coordinator`).
        idempotency_key: a second submission with the same key while the first
            is not failed returns the first's handle; it travels with every attempt.
        retry: the `RetryPolicy`.
        timeouts: the `Timeouts`.
        result_key: if set, the result is handed to the coordinator's
            ``result_writer(key, value)`` (a `StateStore` write, say).
    """

    kind: str
    payload: Any = None
    requires: frozenset[str] = attrs.field(default=frozenset(), converter=_caps)
    priority: int = 0
    idempotency_key: str | None = None
    retry: RetryPolicy = DEFAULT_RETRY  # frozen: one shared default, not one per task
    timeouts: Timeouts = attrs.field(default=NO_TIMEOUTS)
    result_key: str | None = None


@attrs.frozen
class Task:
    """One attempt of a task, as its agent receives it."""

    task_id: str
    kind: str
    payload: Any
    attempt: int
    """1 for the first start; above 1 the task may have run before (a retry or a reassignment)."""
    idempotency_key: str
    """The spec's key, or the task id when none was given: the same on every attempt."""


class TaskState(enum.StrEnum):
    """Where a task is. The last four are final."""

    QUEUED = "queued"
    RUNNING = "running"
    BACKOFF = "backoff"
    COMPLETED = "completed"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"


FINAL_STATES = frozenset({TaskState.COMPLETED, TaskState.FAILED, TaskState.TIMED_OUT, TaskState.CANCELLED})


@attrs.frozen
class TaskInfo:
    """A snapshot of one task."""

    task_id: str
    kind: str
    state: TaskState
    attempt: int
    agent: AgentId | None
    submitted_at: float
    started_at: float | None
    finished_at: float | None
    result: Any = None
    error: BaseException | None = None


@attrs.frozen(eq=False)
class TaskHandle:
    """What `Submit` returns: the task's id and the future of its result.

    ``handle.future.get(timeout=...)`` (or ``await handle.future``) returns the
    result, or raises what ended the task: the handler's exception after the
    retries, `TaskTimeoutError`, `TaskCancelledError`, or
    `CoordinationStoppedError` if the coordinator stopped first.
    """

    task_id: str
    future: Future[Any]

    def result(self, *, timeout: float | None = None) -> Any:
        """Wait for the result (`Future.get`)."""
        return self.future.get(timeout=timeout)


# A handle built past attrs' __init__ by its slots' setters (as `messages._run_task`): the
# coordinator makes one per submission from its own values (~0.2 µs less).
_new = object.__new__
_set_handle_task_id, _set_handle_future = (TaskHandle.__dict__[name].__set__ for name in ("task_id", "future"))


def _handle(task_id: str, future: Future[Any]) -> TaskHandle:
    """``TaskHandle(task_id, future)``, past the constructor."""
    handle = _new(TaskHandle)
    _set_handle_task_id(handle, task_id)
    _set_handle_future(handle, future)
    return handle


def new_task_id() -> str:
    """Return a fresh task id."""
    return uuid.uuid4().hex
