"""Workflow definitions: tasks, their targets and dependencies, validated when built.

    wf = Workflow("analysis", [
        Task("analyze", analyzer_ref, params={"run_id": "123"}),
        Task("insights", insight_pool, depends_on=["analyze"]),
        Task("visualize", render, depends_on=["analyze"], retry=RetryPolicy(max_attempts=3), timeout=30.0),
        Task("publish", publisher_ref, depends_on=["insights", "visualize"], join="all_done"),
    ])

A task's **target** is what runs it; every target receives one `RunTask`
request per attempt (the task's parameters, its dependencies' results as
``inputs``, the attempt number and an idempotency key):

- an actor ref (any `ActorRef`, a `Pool` or `Router` ref included): asked
  ``RunTask``; its reply is the result. On cancel or timeout it is told a
  `CancelTask` (ignore it if you cannot stop) and its reply is discarded.
- a plain callable ``fn(request)``: run on the orchestrator's own worker
  actors (thread mode by default, as it may block; an inline callable must
  be pure, as it runs before its start is journaled); a coroutine
  function runs on an asyncio worker and is cancelled (`asyncio.CancelledError`)
  on cancel or timeout; a blocking one can poll ``request.cancelled()``.
  With ``inline=True`` a (cheap, pure) callable runs in the orchestrator's own
  turn instead, with no hand-off; it cannot time out.
- a `TaskTarget`: any object with ``submit(request) -> Future`` and
  ``cancel(request)``. This is the seam for capability routing: a Coordinator
  adapter that submits the request to whichever agent serves a capability
  fills it (issue 12), without the orchestrator knowing about capabilities.

A target returns `Skip` to skip its task (it ends ``skipped``, and its
dependants decide by their join rule).
"""

from __future__ import annotations

import enum
import graphlib
import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol, runtime_checkable

import attrs

from actors import ActorRef, Future, WorkflowDefinitionError
from patterns.retry import RetryPolicy

__all__ = [
    "CancelTask",
    "JoinRule",
    "RunTask",
    "Skip",
    "Task",
    "TaskState",
    "TaskTarget",
    "Workflow",
]


class JoinRule(enum.StrEnum):
    """When a task with dependencies runs (Airflow's trigger rules), decided as they end.

    - ``all_success`` (default): every dependency succeeded. If one failed the
      task is ``upstream_failed``; else if one was skipped it is ``skipped``.
    - ``all_done``: every dependency ended, however.
    - ``one_success``: as soon as one dependency succeeded (it does not wait
      for the others; its inputs are the results there were then). If none
      did: ``skipped`` when all were skipped, else ``upstream_failed``.
    - ``none_failed``: every dependency ended and none failed (skips are fine).
    """

    ALL_SUCCESS = "all_success"
    ALL_DONE = "all_done"
    ONE_SUCCESS = "one_success"
    NONE_FAILED = "none_failed"


class TaskState(enum.StrEnum):
    """Where a task of one execution stands. The last five are terminal; a task ends in exactly one."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    UPSTREAM_FAILED = "upstream_failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        """Whether the task has ended."""
        return self not in (TaskState.PENDING, TaskState.RUNNING)


def join_decision(rule: JoinRule, deps: int, succeeded: int, failed: int, skipped: int) -> TaskState | None:
    """Return what the ends of a task's dependencies decide: RUNNING (start it), a terminal state, or None (wait).

    `failed` counts dependencies that ended failed, upstream_failed or cancelled.
    Pure: the orchestrator and the tests' model both use it.
    """
    ended = succeeded + failed + skipped
    if rule is JoinRule.ONE_SUCCESS:
        if succeeded:
            return TaskState.RUNNING
        if ended < deps:
            return None
        return TaskState.SKIPPED if skipped == deps else TaskState.UPSTREAM_FAILED
    if ended < deps:
        return None
    if rule is JoinRule.ALL_DONE:
        return TaskState.RUNNING
    if failed:
        return TaskState.UPSTREAM_FAILED
    if rule is JoinRule.NONE_FAILED or not skipped:
        return TaskState.RUNNING
    return TaskState.SKIPPED


@attrs.frozen
class Skip:
    """Returned by a target: skip this task (it ends ``skipped``; nothing is stored for it)."""

    reason: str = ""


class _CancelLatch:
    """A one-way flag, the only mutable thing a `RunTask` carries (set once, by the orchestrator).

    A plain attribute, not a `threading.Event`: it only goes from False to
    True, a reader on another thread sees either value safely, and an Event
    costs a lock and a condition per attempt (~2 µs of a ~20 µs task).
    """

    __slots__ = ("_set",)

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set

    def __repr__(self) -> str:
        return f"<cancel {'set' if self.is_set() else 'clear'}>"


@attrs.frozen(eq=False)
class RunTask:
    """One attempt of one task, as its target receives it.

    Attributes:
        execution_id, task_id: what it belongs to.
        params: the task's parameters, merged over the execution's inputs.
        inputs: the results of its dependencies that succeeded, by task id.
        attempt: 1 for the first attempt, counted across resumes.
        idempotency_key: ``<execution>/<task>``, the same for every attempt of
            the task in this execution, before and after a resume: a target
            with side effects uses it to do them once.
    """

    execution_id: str
    task_id: str
    params: Mapping[str, Any]
    inputs: Mapping[str, Any]
    attempt: int
    idempotency_key: str
    _latch: _CancelLatch = attrs.field(factory=_CancelLatch, repr=False, alias="latch")

    def cancelled(self) -> bool:
        """Return whether this attempt was cancelled or timed out: a blocking target should stop.

        Its result is discarded either way.
        """
        return self._latch.is_set()


@attrs.frozen
class CancelTask:
    """Told to an actor target whose attempt was cancelled or timed out: stop if you can; the reply is discarded."""

    execution_id: str
    task_id: str
    attempt: int
    idempotency_key: str


@runtime_checkable
class TaskTarget(Protocol):
    """A target that runs requests its own way (the seam a Coordinator's capability routing fills)."""

    def submit(self, request: RunTask) -> Future[Any]:
        """Start the attempt; return a future of its result (or its error). Called on the orchestrator's turn."""
        ...

    def cancel(self, request: RunTask) -> None:
        """Stop the attempt if possible; its result is discarded either way."""
        ...


def _task_id(_: object, __: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str) or not value or "/" in value:
        msg = f"a task id must be a non-empty str without '/', got {value!r}"
        raise WorkflowDefinitionError(msg)


def _params(value: Mapping[str, Any] | None) -> dict[str, Any]:
    return dict(value or {})


def _deps(value: Iterable[str] | str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    return tuple(value)


def _join(value: JoinRule | str) -> JoinRule:
    try:
        return JoinRule(value)
    except ValueError:
        msg = f"unknown join rule {value!r}; choose one of {[r.value for r in JoinRule]}"
        raise WorkflowDefinitionError(msg) from None


@attrs.frozen
class Task:
    """One node of a workflow.

    Args:
        id: unique in its workflow; no ``/`` (it is part of state keys).
        target: an actor ref, a callable, or a `TaskTarget` (see the module docs).
        params: passed to every attempt as ``request.params``.
        depends_on: ids of the tasks whose results are this one's inputs.
        join: the `JoinRule` (default ``all_success``).
        retry: the `RetryPolicy` (default: one attempt, no retry).
        timeout: seconds one attempt may run (on the system's clock) before it
            is cancelled and fails with `TaskTimeoutError`; None: no limit.
        inline: run a callable target in the orchestrator's own turn.
    """

    id: str = attrs.field(validator=_task_id)
    target: Any
    params: Mapping[str, Any] = attrs.field(factory=dict, converter=_params)
    depends_on: tuple[str, ...] = attrs.field(default=(), converter=_deps)
    join: JoinRule = attrs.field(default=JoinRule.ALL_SUCCESS, converter=_join)
    retry: RetryPolicy | None = None
    timeout: float | None = None
    inline: bool = False
    # What the target is, decided once: "actor", "target" (a TaskTarget), "coroutine" or "callable".
    kind: str = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        target = self.target
        if isinstance(target, ActorRef):
            kind = "actor"
            if not target.is_alive():
                msg = f"task {self.id!r}: its target {target} has stopped; give a live actor ref"
                raise WorkflowDefinitionError(msg)
            if self.inline:
                msg = f"task {self.id!r}: inline=True applies to callable targets only, not to {target}"
                raise WorkflowDefinitionError(msg)
        elif isinstance(target, TaskTarget):
            kind = "target"
            if self.inline:
                msg = f"task {self.id!r}: inline=True applies to callable targets only"
                raise WorkflowDefinitionError(msg)
        elif inspect.iscoroutinefunction(target):
            kind = "coroutine"
            if self.inline:
                msg = f"task {self.id!r}: a coroutine function cannot run inline (it runs on the asyncio worker)"
                raise WorkflowDefinitionError(msg)
        elif callable(target):
            kind = "callable"
        else:
            msg = (
                f"task {self.id!r}: target {target!r} is neither an actor ref, a callable, "
                "nor a TaskTarget (an object with submit(request) and cancel(request))"
            )
            raise WorkflowDefinitionError(msg)
        object.__setattr__(self, "kind", kind)
        if self.timeout is not None and (isinstance(self.timeout, bool) or not self.timeout > 0):
            msg = f"task {self.id!r}: timeout must be > 0 seconds or None, got {self.timeout!r}"
            raise WorkflowDefinitionError(msg)
        if self.retry is not None and not isinstance(self.retry, RetryPolicy):
            msg = f"task {self.id!r}: retry must be a RetryPolicy, got {self.retry!r}"
            raise WorkflowDefinitionError(msg)
        if self.id in self.depends_on:
            msg = f"task {self.id!r} depends on itself: cycle {self.id} -> {self.id}"
            raise WorkflowDefinitionError(msg)
        if len(set(self.depends_on)) != len(self.depends_on):
            msg = f"task {self.id!r} lists a dependency twice: {list(self.depends_on)}"
            raise WorkflowDefinitionError(msg)


def _tasks(value: Iterable[Task]) -> tuple[Task, ...]:
    tasks = tuple(value)
    for task in tasks:
        if not isinstance(task, Task):
            msg = f"a workflow's tasks must be Task objects, got {task!r}"
            raise WorkflowDefinitionError(msg)
    return tasks


@attrs.frozen
class Workflow:
    """A validated DAG of tasks. Built at run time like any value; define it with the orchestrator.

    Raises:
        WorkflowDefinitionError: no tasks, a duplicate id, a dependency on an
            unknown task, or a cycle (named: ``a -> b -> a``).
    """

    id: str = attrs.field(validator=_task_id)
    tasks: tuple[Task, ...] = attrs.field(converter=_tasks)
    description: str = ""
    # Invariant: every task id, in a topological order (dependencies first).
    order: tuple[str, ...] = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if not self.tasks:
            msg = f"workflow {self.id!r} has no tasks; give at least one Task"
            raise WorkflowDefinitionError(msg)
        seen: set[str] = set()
        for task in self.tasks:
            if task.id in seen:
                msg = f"workflow {self.id!r}: duplicate task id {task.id!r}; task ids must be unique"
                raise WorkflowDefinitionError(msg)
            seen.add(task.id)
        for task in self.tasks:
            unknown = [d for d in task.depends_on if d not in seen]
            if unknown:
                msg = (
                    f"workflow {self.id!r}: task {task.id!r} depends on unknown task(s) {unknown}; "
                    f"known: {sorted(seen)}"
                )
                raise WorkflowDefinitionError(msg)
        sorter = graphlib.TopologicalSorter({t.id: t.depends_on for t in self.tasks})
        try:
            order = tuple(sorter.static_order())
        except graphlib.CycleError as exc:
            # CycleError's second argument lists the cycle, first node repeated at the
            # end, each node a dependency of the next one.
            cycle = list(exc.args[1])
            msg = (
                f"workflow {self.id!r} has a cycle: {' -> '.join(cycle)} (each arrow: a dependency, "
                "then the task that depends on it); a workflow must be acyclic"
            )
            raise WorkflowDefinitionError(msg) from None
        object.__setattr__(self, "order", order)

    def task(self, task_id: str) -> Task:
        """Return the task with `task_id`."""
        for task in self.tasks:
            if task.id == task_id:
                return task
        msg = f"workflow {self.id!r} has no task {task_id!r}"
        raise KeyError(msg)

    def shape(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        """Return (task id, dependencies) per task: what a journal checks a resumed definition against."""
        return tuple((t.id, t.depends_on) for t in self.tasks)


TargetCallable = Callable[[RunTask], Any]
