"""`WorkflowOrchestrator`: runs workflow DAGs, as an actor.

    orchestrator = system.spawn(WorkflowOrchestrator, store=store_ref, journal="runs.db")
    client = WorkflowClient(orchestrator)
    client.define(workflow)                               # validated already; redefining replaces it
    execution_id = client.execute("analysis", inputs={"run_id": "123"}, max_parallel=4)
    status = client.wait_for_completion(execution_id, timeout=600)
    status.task("insights").state                         # TaskState.SUCCEEDED

Scheduling is dependency-driven: a task is decided the moment the last
dependency it needs ends (or, for ``one_success``, the first that succeeds),
never at a "superstep", so a slow branch never holds up an unrelated fast
one. A decided task waits only for a slot under the execution's
``max_parallel``. Its inputs are the results of its dependencies that
succeeded; the execution's inputs are its parameters' defaults.

Failure policy, per execution: ``run_all`` (default: failures propagate by the
join rules, everything else runs) or ``fail_fast`` (the first failed task
cancels the running ones and nothing more starts; as `asyncio.TaskGroup`).

Retries and timeouts run on the system's clock (timers: a `ManualClock` in
tests). A timed-out or cancelled attempt is cancelled (a coroutine target's
task is cancelled; a blocking one sees ``request.cancelled()``; an actor
target is told `CancelTask`) and its result, if it comes, is discarded.

Results go to the `StateStore` given as ``store``, under
``workflow/<execution id>/<task id>`` (a skipped task stores nothing). The
write is asynchronous; a refused write is counted in the statistics
(``store_errors``) and logged, and never fails the task.

Durable resume: with a ``journal`` (see `patterns.journal`), a new
orchestrator in a new process, given the same workflow definitions, resumes
an execution with `ResumeExecution`: tasks that had ended keep their state and
result, the ones that were in flight run again (same idempotency key, next
attempt number), and the rest follow as usual.

Threading: like every actor it handles one message at a time. Targets' futures
complete on other threads; their done-callbacks only tell the orchestrator
(`_Ended`). Callable targets run on the orchestrator's own child workers
(``workers`` of them, in ``worker_mode``, thread by default), handed out in
batches to the least loaded; coroutine functions run on one asyncio worker.

Stopping the orchestrator does not cancel executions in the journal (they can
be resumed); waiters get `ActorDeadError`, attempts in flight are told to stop.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import itertools
import random
import uuid
from collections import deque
from typing import TYPE_CHECKING, Any, Literal, cast

import attrs
import pykka
from loguru import logger
from pykka import ActorDeadError

from actors import (
    Actor,
    ActorRef,
    AsyncioActor,
    Future,
    SetEntry,
    TaskTimeoutError,
    WorkflowDefinitionError,
    WorkflowNotFoundError,
)
from patterns.journal import WorkflowJournal
from patterns.workflow import (
    CancelTask,
    RunTask,
    Skip,
    Task,
    TaskState,
    Workflow,
    join_decision,
)

if TYPE_CHECKING:
    import os
    from collections.abc import Iterable, Mapping

__all__ = [
    "CancelExecution",
    "DefineWorkflow",
    "ExecuteWorkflow",
    "ExecutionFinished",
    "ExecutionState",
    "ExecutionStatus",
    "GetExecution",
    "GetOrchestratorStatistics",
    "ListUnfinished",
    "OrchestratorStatistics",
    "ResumeExecution",
    "TaskEvent",
    "TaskStatus",
    "WaitForCompletion",
    "WatchExecution",
    "WorkflowClient",
    "WorkflowOrchestrator",
    "state_key",
]

FailurePolicy = Literal["run_all", "fail_fast"]
_POLICIES = ("run_all", "fail_fast")


def state_key(execution_id: str, task_id: str) -> str:
    """Return the StateStore key of a task's result: ``workflow/<execution>/<task>``."""
    return f"workflow/{execution_id}/{task_id}"


# -- snapshots and events ---------------------------------------------------------------------------


class ExecutionState(enum.StrEnum):
    """Where an execution stands: running, then exactly one of the other three."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


@attrs.frozen
class TaskStatus:
    """One task of one execution at one moment.

    Attributes:
        attempts: attempts started so far (retries and resumes included).
        started_at / ended_at: the system clock's time of the first attempt's
            start and of the end (None: not yet).
        error: the last attempt's error (failed), or the upstream reason.
        result: the target's result (succeeded only).
    """

    task_id: str
    state: TaskState
    attempts: int
    started_at: float | None
    ended_at: float | None
    error: BaseException | None = None
    result: Any = None


@attrs.frozen
class ExecutionStatus:
    """An execution at one moment: its state and every task's `TaskStatus`, in definition order."""

    execution_id: str
    workflow_id: str
    state: ExecutionState
    tasks: tuple[TaskStatus, ...]
    started_at: float
    ended_at: float | None

    @property
    def done(self) -> bool:
        """Whether the execution has ended."""
        return self.state is not ExecutionState.RUNNING

    def task(self, task_id: str) -> TaskStatus:
        """Return the status of `task_id`."""
        for status in self.tasks:
            if status.task_id == task_id:
                return status
        msg = f"execution {self.execution_id!r} has no task {task_id!r}"
        raise KeyError(msg)

    def results(self) -> dict[str, Any]:
        """Return a new dict of the succeeded tasks' results, by task id."""
        return {t.task_id: t.result for t in self.tasks if t.state is TaskState.SUCCEEDED}


@attrs.frozen
class TaskEvent:
    """Told to watchers each time a task of the execution changes state."""

    execution_id: str
    task_id: str
    state: TaskState
    attempt: int
    at: float
    error: BaseException | None = None


@attrs.frozen
class ExecutionFinished:
    """Told to watchers once, when the execution ends."""

    status: ExecutionStatus


@attrs.frozen
class OrchestratorStatistics:
    """Counters since the orchestrator started (frozen; holds no dicts)."""

    workflows: int
    executions_running: int
    executions_succeeded: int
    executions_failed: int
    executions_cancelled: int
    executions_resumed: int
    tasks_started: int
    tasks_succeeded: int
    tasks_failed: int
    tasks_skipped: int
    tasks_upstream_failed: int
    tasks_cancelled: int
    retries: int
    timeouts: int
    late_results_discarded: int
    store_errors: int


# -- messages -------------------------------------------------------------------------------------------


@attrs.frozen
class DefineWorkflow:
    """Define (or replace) a workflow; the reply is its id. Running executions keep their definition."""

    workflow: Workflow = attrs.field(validator=attrs.validators.instance_of(Workflow))


def _max_parallel(_: object, __: attrs.Attribute[Any], value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        msg = f"max_parallel must be an int >= 1 (or None: no limit), got {value!r}"
        raise WorkflowDefinitionError(msg)


def _policy(_: object, __: attrs.Attribute[Any], value: str) -> None:
    if value not in _POLICIES:
        msg = f"failure_policy must be one of {_POLICIES}, got {value!r}"
        raise WorkflowDefinitionError(msg)


def _execution_id(_: object, __: attrs.Attribute[Any], value: str | None) -> None:
    if value is not None and (not isinstance(value, str) or not value or "/" in value):
        msg = f"an execution id must be a non-empty str without '/', got {value!r}"
        raise WorkflowDefinitionError(msg)


def _inputs(value: Mapping[str, Any] | None) -> dict[str, Any]:
    return dict(value or {})


def _refs(value: Iterable[ActorRef[Any]]) -> tuple[ActorRef[Any], ...]:
    return tuple(value)


@attrs.frozen
class ExecuteWorkflow:
    """Start an execution of a defined workflow; the reply is its execution id.

    Args:
        workflow_id: a workflow defined with `DefineWorkflow`.
        inputs: defaults for every task's ``params`` (a task's own win).
        max_parallel: attempts of this execution in flight at once (None: no limit).
        failure_policy: ``"run_all"`` or ``"fail_fast"``.
        execution_id: the id to use (default: a fresh one).
        watchers: refs told every `TaskEvent` from the first (as `WatchExecution`, without the race).
    """

    workflow_id: str
    inputs: Mapping[str, Any] = attrs.field(factory=dict, converter=_inputs)
    max_parallel: int | None = attrs.field(default=None, validator=_max_parallel)
    failure_policy: FailurePolicy = attrs.field(default="run_all", validator=_policy)
    execution_id: str | None = attrs.field(default=None, validator=_execution_id)
    watchers: tuple[ActorRef[Any], ...] = attrs.field(default=(), converter=_refs)


@attrs.frozen
class CancelExecution:
    """Cancel an execution: nothing more starts, running attempts are cancelled. Reply: its `ExecutionStatus`."""

    execution_id: str


@attrs.frozen
class GetExecution:
    """Reply with the `ExecutionStatus` of an execution."""

    execution_id: str


@attrs.frozen
class WatchExecution:
    """Tell `subscriber` a `TaskEvent` per change and `ExecutionFinished` at the end; reply: the status now.

    A watcher that has stopped is dropped. Watching an ended execution gets
    `ExecutionFinished` at once.
    """

    execution_id: str
    subscriber: ActorRef[Any]


@attrs.frozen(eq=False)
class WaitForCompletion:
    """Tell this with a fresh `Future`: it is set to the `ExecutionStatus` once the execution ends.

    It is set to `WorkflowNotFoundError` for an unknown id, and to
    `ActorDeadError` if the orchestrator stops first. `WorkflowClient.wait_for_completion` wraps it.
    """

    execution_id: str
    reply: Future[ExecutionStatus]


@attrs.frozen
class ResumeExecution:
    """Resume an execution from the journal (its workflow must be defined, with the same shape). Reply: its id."""

    execution_id: str


@attrs.frozen
class ListUnfinished:
    """Reply with the ids of the executions the journal shows as unfinished (to resume)."""


@attrs.frozen
class GetOrchestratorStatistics:
    """Reply with an `OrchestratorStatistics`."""


@attrs.frozen(eq=False)
class _Ended:
    execution_id: str
    task_id: str
    request: RunTask
    future: Future[Any]
    worker: int  # the callable worker's index, or -1


@attrs.frozen
class _AttemptTimedOut:
    execution_id: str
    task_id: str
    attempt: int


@attrs.frozen
class _RetryDue:
    execution_id: str
    task_id: str


@attrs.frozen
class _StoreFailed:
    key: str
    error: BaseException


@attrs.frozen(eq=False)
class _Call:
    fn: Any
    request: RunTask


@attrs.frozen(eq=False)
class _CancelCall:
    request: RunTask


# -- workers for callable targets ---------------------------------------------------------------------


_BATCH = 64
"""Most attempts of plain callables handed to one worker in one message."""


@attrs.frozen(eq=False)
class _CallBatch:
    # (callable, request, the future its result goes to), run in order.
    calls: tuple[tuple[Any, RunTask, Future[Any]], ...]


class _CallWorker(Actor):
    """Runs plain callables one at a time, in the order given; a child of the orchestrator.

    An attempt cancelled (or timed out) before its turn here is not run at all.
    Every future of a batch is settled, whatever the callables do.
    """

    def on_receive(self, message: Any) -> None:
        if not isinstance(message, _CallBatch):
            return
        for fn, request, future in message.calls:
            if request.cancelled():
                future.set(_Cancelled())
                continue
            try:
                value = fn(request)
            except Exception as exc:  # noqa: BLE001 - the attempt's failure is its status
                _settle_exception(future, exc)
            else:
                future.set(value)

    def on_stop(self) -> None:
        """Nothing to do: a batch in progress finishes its turn; queued ones become dead letters."""


class _Cancelled:
    """What the asyncio worker replies for a cancelled coroutine (discarded by the orchestrator)."""


class _AsyncCallWorker(AsyncioActor):
    """Runs coroutine targets concurrently on the system's loop; `_CancelCall` cancels one."""

    reentrant = True

    def __init__(self) -> None:
        super().__init__()
        # Invariant: the asyncio task of every coroutine target still running, by its request's id.
        self._running: dict[int, asyncio.Task[Any]] = {}

    async def on_receive(self, message: Any) -> Any:
        if isinstance(message, _CancelCall):
            task = self._running.get(id(message.request))
            if task is not None:
                task.cancel()
            return None
        if not isinstance(message, _Call):
            return None
        task = asyncio.get_running_loop().create_task(message.fn(message.request))
        key = id(message.request)
        self._running[key] = task
        try:
            await asyncio.wait([task])
        finally:
            self._running.pop(key, None)
        if task.cancelled():
            return _Cancelled()
        return task.result()

    def on_stop(self) -> None:
        for task in self._running.values():
            task.cancel()


# -- the orchestrator's records (its private state) ----------------------------------------------------


class _TaskRun:
    __slots__ = (
        "attempts",
        "decided",
        "dependants",
        "ended_at",
        "error",
        "failed",
        "inputs",
        "request",
        "result",
        "skipped",
        "started_at",
        "state",
        "succeeded",
        "task",
    )

    def __init__(self, task: Task) -> None:
        self.task = task
        self.state = TaskState.PENDING
        self.attempts = 0
        self.started_at: float | None = None
        self.ended_at: float | None = None
        self.error: BaseException | None = None
        self.result: Any = None
        # Counts of dependencies by how they ended (failed: failed, upstream_failed, cancelled).
        self.succeeded = 0
        self.failed = 0
        self.skipped = 0
        # Invariant: True once the join rule has decided (to run, or a terminal state).
        self.decided = False
        self.inputs: dict[str, Any] = {}
        self.dependants: list[str] = []
        # The attempt in flight (RUNNING only), else None.
        self.request: RunTask | None = None

    def status(self) -> TaskStatus:
        return TaskStatus(
            self.task.id, self.state, self.attempts, self.started_at, self.ended_at, self.error, self.result
        )


class _Run:
    __slots__ = (
        "ended_at",
        "failure_policy",
        "id",
        "inputs",
        "max_parallel",
        "ready",
        "remaining",
        "running",
        "started_at",
        "state",
        "tasks",
        "waiters",
        "watchers",
        "workflow",
    )

    def __init__(
        self,
        execution_id: str,
        workflow: Workflow,
        *,
        inputs: dict[str, Any],
        max_parallel: int | None,
        failure_policy: str,
        started_at: float,
    ) -> None:
        self.id = execution_id
        self.workflow = workflow
        self.inputs = inputs
        self.max_parallel = max_parallel
        self.failure_policy = failure_policy
        self.state = ExecutionState.RUNNING
        self.started_at = started_at
        self.ended_at: float | None = None
        self.tasks: dict[str, _TaskRun] = {t.id: _TaskRun(t) for t in workflow.tasks}
        for task in workflow.tasks:
            for dep in task.depends_on:
                self.tasks[dep].dependants.append(task.id)
        # Invariant: ids of tasks decided to run and waiting for a slot, in decision order.
        self.ready: deque[str] = deque()
        # Invariant: how many tasks are RUNNING with an attempt in flight.
        self.running = 0
        # Invariant: how many tasks are not terminal.
        self.remaining = len(self.tasks)
        self.watchers: list[ActorRef[Any]] = []
        self.waiters: list[Future[ExecutionStatus]] = []

    def status(self) -> ExecutionStatus:
        return ExecutionStatus(
            self.id,
            self.workflow.id,
            self.state,
            tuple(self.tasks[t.id].status() for t in self.workflow.tasks),
            self.started_at,
            self.ended_at,
        )


_FAILED_LIKE = (TaskState.FAILED, TaskState.UPSTREAM_FAILED, TaskState.CANCELLED)


class WorkflowOrchestrator(Actor):
    """Define workflows, run executions of them, report and resume them (see the module docs).

    Args:
        store: a `StateStore` ref for the results (None: results stay in the statuses only).
        journal: a path or a `WorkflowJournal` for durable resume (None: no journal).
        workers: how many worker actors (children, spawned on first use) run plain callables.
        worker_mode: the execution mode of those workers (``"thread"``: callables may block).
        rng: random source of retry jitter (tests seed it).
    """

    def __init__(
        self,
        *,
        store: ActorRef[Any] | None = None,
        journal: str | os.PathLike[str] | WorkflowJournal | None = None,
        workers: int = 4,
        worker_mode: str = "thread",
        rng: random.Random | None = None,
    ) -> None:
        super().__init__()
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            msg = f"workers must be an int >= 1, got {workers!r}"
            raise WorkflowDefinitionError(msg)
        self._store = store
        self._journal_arg = journal
        self._journal: WorkflowJournal | None = None
        self._workers = workers
        self._worker_mode = worker_mode
        self._rng = rng or random.Random()
        self._workflows: dict[str, Workflow] = {}
        self._runs: dict[str, _Run] = {}
        # Invariant: attempts decided this turn, handed to their targets after the journal commits.
        self._outbox: list[tuple[_Run, _TaskRun, RunTask]] = []
        # Invariant: _worker_load[i] is the number of attempts sent to _workers_refs[i] whose _Ended is not handled.
        self._workers_refs: list[ActorRef[Any]] = []
        self._worker_load: list[int] = []
        self._async_worker: ActorRef[Any] | None = None
        self._ids = itertools.count(1)
        self._counts = dict.fromkeys(
            (
                "executions_succeeded",
                "executions_failed",
                "executions_cancelled",
                "executions_resumed",
                "tasks_started",
                "tasks_succeeded",
                "tasks_failed",
                "tasks_skipped",
                "tasks_upstream_failed",
                "tasks_cancelled",
                "retries",
                "timeouts",
                "late_results_discarded",
                "store_errors",
            ),
            0,
        )

    # -- lifecycle --------------------------------------------------------------------------------

    def on_start(self) -> None:
        """Open the journal (on the orchestrator's first turn)."""
        self._clock = self.actor_system.clock
        journal = self._journal_arg
        if journal is not None:
            self._journal = journal if isinstance(journal, WorkflowJournal) else WorkflowJournal(journal)

    def on_stop(self) -> None:
        """Tell attempts in flight to stop; waiters get `ActorDeadError`; the journal keeps what it has."""
        for run in self._runs.values():
            if run.state is not ExecutionState.RUNNING:
                continue
            for tr in run.tasks.values():
                if tr.request is not None:
                    self._cancel_attempt(tr)
            error = ActorDeadError(
                f"{self} stopped before execution {run.id!r} ended; with a journal, resume it "
                "(ResumeExecution) from a new orchestrator"
            )
            for waiter in run.waiters:
                _settle_exception(waiter, error)
            run.waiters.clear()
        if self._journal is not None:
            self._journal.close()

    # -- messages ---------------------------------------------------------------------------------

    def on_receive(self, message: Any) -> Any:
        """Handle one message; see the message classes for what each replies."""
        try:
            if isinstance(message, _Ended):
                self._on_ended(message)
                return None
            if isinstance(message, _AttemptTimedOut):
                self._on_timeout(message)
                return None
            if isinstance(message, _RetryDue):
                self._on_retry_due(message)
                return None
            if isinstance(message, _StoreFailed):
                self._store_failed(message.key, message.error)
                return None
            if isinstance(message, DefineWorkflow):
                self._workflows[message.workflow.id] = message.workflow
                return message.workflow.id
            if isinstance(message, ExecuteWorkflow):
                return self._execute(message)
            if isinstance(message, GetExecution):
                return self._run(message.execution_id).status()
            if isinstance(message, CancelExecution):
                run = self._run(message.execution_id)
                if run.state is ExecutionState.RUNNING:
                    self._stop_run(run, ExecutionState.CANCELLED)
                return run.status()
            if isinstance(message, WatchExecution):
                return self._watch(message)
            if isinstance(message, WaitForCompletion):
                self._wait(message)
                return None
            if isinstance(message, ResumeExecution):
                return self._resume(message.execution_id)
            if isinstance(message, ListUnfinished):
                return self._journal.unfinished() if self._journal is not None else ()
            if isinstance(message, GetOrchestratorStatistics):
                return self.statistics()
            return None
        finally:
            self._flush()

    def statistics(self) -> OrchestratorStatistics:
        """Return the counters now (also for a proxy: ``ref.proxy().statistics().get()``)."""
        running = sum(1 for r in self._runs.values() if r.state is ExecutionState.RUNNING)
        return OrchestratorStatistics(workflows=len(self._workflows), executions_running=running, **self._counts)

    def _run(self, execution_id: str) -> _Run:
        run = self._runs.get(execution_id)
        if run is None:
            msg = (
                f"{self} has no execution {execution_id!r}; known: {sorted(self._runs)[:10]}"
                f"{' (an unfinished one in the journal can be resumed with ResumeExecution)' if self._journal else ''}"
            )
            raise WorkflowNotFoundError(msg)
        return run

    def _workflow(self, workflow_id: str) -> Workflow:
        workflow = self._workflows.get(workflow_id)
        if workflow is None:
            msg = (
                f"{self} has no workflow {workflow_id!r}; define it first (DefineWorkflow); "
                f"known: {sorted(self._workflows)}"
            )
            raise WorkflowNotFoundError(msg)
        return workflow

    def _execute(self, message: ExecuteWorkflow) -> str:
        workflow = self._workflow(message.workflow_id)
        execution_id = message.execution_id or f"{workflow.id}-{uuid.uuid4().hex[:12]}"
        if execution_id in self._runs or (self._journal is not None and self._journal.load(execution_id)):
            msg = f"execution id {execution_id!r} is taken; give another or none"
            raise WorkflowDefinitionError(msg)
        now = self._clock.now()
        run = _Run(
            execution_id,
            workflow,
            inputs=dict(message.inputs),
            max_parallel=message.max_parallel,
            failure_policy=message.failure_policy,
            started_at=now,
        )
        self._runs[execution_id] = run
        run.watchers.extend(message.watchers)
        if self._journal is not None:
            self._journal.begin_execution(
                execution_id,
                workflow.id,
                workflow.shape(),
                max_parallel=message.max_parallel,
                failure_policy=message.failure_policy,
                inputs=dict(message.inputs),
                started_at=now,
            )
        self._evaluate_all(run)
        return execution_id

    def _resume(self, execution_id: str) -> str:
        if execution_id in self._runs:
            return execution_id
        record = self._journal.load(execution_id) if self._journal is not None else None
        if record is None:
            msg = f"{self} has no journal record of execution {execution_id!r}; nothing to resume"
            raise WorkflowNotFoundError(msg)
        workflow = self._workflow(record.workflow_id)
        if workflow.shape() != record.shape:
            msg = (
                f"cannot resume execution {execution_id!r}: workflow {workflow.id!r} is defined with other tasks "
                "or dependencies than the journal recorded; define it as it was"
            )
            raise WorkflowDefinitionError(msg)
        run = _Run(
            execution_id,
            workflow,
            inputs=dict(record.inputs),
            max_parallel=record.max_parallel,
            failure_policy=record.failure_policy,
            started_at=record.started_at,
        )
        self._runs[execution_id] = run
        self._counts["executions_resumed"] += 1
        for row in record.tasks:
            tr = run.tasks[row.task_id]
            tr.attempts = row.attempts
            tr.started_at = row.started_at
            state = TaskState(row.state)
            if state.terminal:
                tr.state = state
                tr.decided = True
                tr.ended_at = row.ended_at
                tr.result = row.result
                tr.error = RuntimeError(row.error) if row.error else None
                run.remaining -= 1
        if record.state != ExecutionState.RUNNING:
            run.state = ExecutionState(record.state)
            run.ended_at = record.ended_at
            return execution_id
        # Count each pending task's dependencies that had ended, then decide in topological order.
        for tr in run.tasks.values():
            if tr.state.terminal:
                continue
            for dep in tr.task.depends_on:
                if run.tasks[dep].state.terminal:
                    self._count_dependency(tr, run.tasks[dep])
        self._evaluate_all(run)
        return execution_id

    @staticmethod
    def _count_dependency(tr: _TaskRun, dep: _TaskRun) -> None:
        if dep.state is TaskState.SUCCEEDED:
            tr.succeeded += 1
            tr.inputs[dep.task.id] = dep.result
        elif dep.state is TaskState.SKIPPED:
            tr.skipped += 1
        else:
            tr.failed += 1

    def _evaluate_all(self, run: _Run) -> None:
        for task_id in run.workflow.order:
            tr = run.tasks[task_id]
            if not tr.decided:
                self._decide(run, tr)
        self._pump(run)
        self._maybe_finished(run)

    def _watch(self, message: WatchExecution) -> ExecutionStatus:
        run = self._run(message.execution_id)
        status = run.status()
        if run.state is ExecutionState.RUNNING:
            run.watchers.append(message.subscriber)
        else:
            _tell(message.subscriber, ExecutionFinished(status))
        return status

    def _wait(self, message: WaitForCompletion) -> None:
        run = self._runs.get(message.execution_id)
        if run is None:
            try:
                self._run(message.execution_id)
            except WorkflowNotFoundError as exc:
                _settle_exception(message.reply, exc)
            return
        if run.state is ExecutionState.RUNNING:
            run.waiters.append(message.reply)
        else:
            _settle(message.reply, run.status())

    # -- scheduling -------------------------------------------------------------------------------

    def _decide(self, run: _Run, tr: _TaskRun) -> None:
        """Apply `tr`'s join rule to its dependencies' ends so far; settle the consequences."""
        # A worklist, not recursion: skips propagate down chains of any length.
        work = [tr]
        while work:
            tr = work.pop()
            if tr.decided:
                continue
            deps = len(tr.task.depends_on)
            decision = (
                join_decision(tr.task.join, deps, tr.succeeded, tr.failed, tr.skipped) if deps else TaskState.RUNNING
            )
            if decision is None:
                continue
            tr.decided = True
            if decision is TaskState.RUNNING:
                run.ready.append(tr.task.id)
                continue
            tr.error = None
            self._settle(run, tr, decision)
            work.extend(self._propagate(run, tr))

    def _propagate(self, run: _Run, tr: _TaskRun) -> list[_TaskRun]:
        """Count `tr`'s end in each dependant; return the dependants still to decide."""
        undecided = []
        for dep_id in tr.dependants:
            dependant = run.tasks[dep_id]
            if dependant.decided:
                continue
            self._count_dependency(dependant, tr)
            undecided.append(dependant)
        return undecided

    def _pump(self, run: _Run) -> None:
        """Start ready tasks while the execution has slots."""
        ready = run.ready
        limit = run.max_parallel
        while ready and run.state is ExecutionState.RUNNING and (limit is None or run.running < limit):
            tr = run.tasks[ready.popleft()]
            self._start_attempt(run, tr)

    def _start_attempt(self, run: _Run, tr: _TaskRun) -> None:
        now = self._clock.now()
        tr.attempts += 1
        tr.state = TaskState.RUNNING
        if tr.started_at is None:
            tr.started_at = now
        task = tr.task
        params = {**run.inputs, **task.params} if run.inputs else task.params
        request = RunTask(run.id, task.id, params, tr.inputs, tr.attempts, f"{run.id}/{task.id}")
        tr.request = request
        run.running += 1
        self._counts["tasks_started"] += 1
        if self.actor_system.audit.task_history:
            _audit_task(self, run.id, tr, "started", now)
        if self._journal is not None:
            self._journal.task_started(run.id, task.id, tr.attempts, now)
        if task.timeout is not None and not task.inline:
            # Armed before watchers hear of the start, so a test that saw it may advance the clock.
            self.timers.start_single_timer(
                ("timeout", run.id, task.id), _AttemptTimedOut(run.id, task.id, tr.attempts), task.timeout
            )
        self._event(run, tr, now)
        if task.inline:
            try:
                value = task.target(request)
            except Exception as exc:  # noqa: BLE001 - a task's failure is its status
                self._attempt_ended(run, tr, None, exc)
            else:
                self._attempt_ended(run, tr, value, None)
            return
        self._outbox.append((run, tr, request))

    def _flush(self) -> None:
        """End of a turn: commit the journal, then hand the attempts decided in it to their targets."""
        if self._journal is not None:
            self._journal.commit()
        while self._outbox:
            outbox, self._outbox = self._outbox, []
            calls: list[tuple[_Run, _TaskRun, RunTask]] = []
            for run, tr, request in outbox:
                if tr.request is not request:  # cancelled within the same turn
                    continue
                if tr.task.kind == "callable":
                    calls.append((run, tr, request))
                else:
                    self._submit(run, tr, request)
            if calls:
                self._submit_calls(calls)
            if self._journal is not None:  # a submission that failed at once ended its task
                self._journal.commit()

    def _submit(self, run: _Run, tr: _TaskRun, request: RunTask) -> None:
        target = tr.task.target
        kind = tr.task.kind
        try:
            if kind == "actor":
                future = target.ask(request, block=False)
            elif kind == "target":
                future = target.submit(request)
            else:
                future = self._async_workers().ask(_Call(target, request), block=False)
        except Exception as exc:  # noqa: BLE001 - a task's failure is its status
            self._attempt_ended(run, tr, None, exc)
            return
        self._when_done(run, tr, request, future, -1)

    def _when_done(self, run: _Run, tr: _TaskRun, request: RunTask, future: Future[Any], worker: int) -> None:
        me = self.actor_ref
        ended = _Ended(run.id, tr.task.id, request, future, worker)
        future.add_done_callback(lambda _f: _tell_quietly(me, ended))

    def _submit_calls(self, calls: list[tuple[_Run, _TaskRun, RunTask]]) -> None:
        """Hand plain callables to the workers in batches: one message per worker per turn, not one per task.

        Each batch goes to the least-loaded worker and holds at most an even
        share of what is being handed out (so a batch never makes one worker
        hold work another could take now), and at most `_BATCH` attempts.
        Measured on 10,000 wide no-op tasks: a message per task cost ~30 µs a
        task to hand out (each post woke the worker, which then fought the
        orchestrator for the GIL); batches cost a few.
        """
        share = max(1, min(_BATCH, -(-len(calls) // self._workers)))
        for start in range(0, len(calls), share):
            chunk = calls[start : start + share]
            worker = self._least_loaded_worker()
            batch = []
            for run, tr, request in chunk:
                future: Future[Any] = Future()
                batch.append((tr.task.target, request, future))
                self._when_done(run, tr, request, future, worker)
            self._worker_load[worker] += len(chunk)
            # An ask, not a tell: if the worker dies with the batch queued or half run,
            # the batch's reply fails, and so does every attempt of it not yet settled.
            done = self._workers_refs[worker].ask(_CallBatch(tuple(batch)), block=False)
            done.add_done_callback(functools.partial(_settle_batch, batch))

    def _least_loaded_worker(self) -> int:
        """Return the index of the callable worker with the fewest attempts in flight (spawning them on first use).

        The orchestrator knows each worker's load exactly (it counts the
        attempts it sent and the `_Ended` it got back), so it picks the least
        loaded itself: a slow callable never holds up work another worker
        could take. Measured: a `Pool` with a queue in front cost ~60 µs per
        task on 10,000 wide no-op tasks, this ~15 µs.
        """
        if not self._workers_refs:
            self._workers_refs = [self.spawn(_CallWorker, mode=self._worker_mode) for _ in range(self._workers)]
            self._worker_load = [0] * self._workers
        load = self._worker_load
        best = 0
        for i in range(1, len(load)):
            if load[i] < load[best]:
                best = i
        return best

    def _async_workers(self) -> ActorRef[Any]:
        if self._async_worker is None:
            self._async_worker = self.spawn(_AsyncCallWorker)
        return self._async_worker

    # -- ends of attempts -------------------------------------------------------------------------

    def _on_ended(self, message: _Ended) -> None:
        if message.worker >= 0:
            self._worker_load[message.worker] -= 1
        run = self._runs.get(message.execution_id)
        tr = run.tasks.get(message.task_id) if run is not None else None
        if run is None or tr is None or tr.request is not message.request:
            self._counts["late_results_discarded"] += 1  # timed out or cancelled before it came
            return
        try:
            value = message.future.get()
        except Exception as exc:  # noqa: BLE001 - a task's failure is its status
            self._attempt_ended(run, tr, None, exc)
        else:
            self._attempt_ended(run, tr, value, None)
        self._pump(run)
        self._maybe_finished(run)

    def _on_timeout(self, message: _AttemptTimedOut) -> None:
        run = self._runs.get(message.execution_id)
        if run is None:
            return
        tr = run.tasks[message.task_id]
        if tr.request is None or tr.request.attempt != message.attempt:
            return
        self._counts["timeouts"] += 1
        self._cancel_attempt(tr)
        error = TaskTimeoutError(
            f"task {tr.task.id!r} of execution {run.id!r}: attempt {message.attempt} ran longer than its timeout "
            f"({tr.task.timeout} s); it was cancelled and its result will be discarded"
        )
        self._attempt_ended(run, tr, None, error)
        self._pump(run)
        self._maybe_finished(run)

    def _on_retry_due(self, message: _RetryDue) -> None:
        run = self._runs.get(message.execution_id)
        if run is None or run.state is not ExecutionState.RUNNING:
            return
        tr = run.tasks[message.task_id]
        if tr.state is TaskState.PENDING and tr.decided:
            run.ready.appendleft(tr.task.id)  # it already waited its turn once
            self._pump(run)

    def _attempt_ended(self, run: _Run, tr: _TaskRun, value: Any, error: BaseException | None) -> None:
        """One attempt of `tr` ended with `value` or `error`; retry, or settle the task and decide its dependants."""
        tr.request = None
        run.running -= 1
        if tr.task.timeout is not None:
            self.timers.cancel(("timeout", run.id, tr.task.id))
        now = self._clock.now()
        if error is None:
            if isinstance(value, Skip):
                state = TaskState.SKIPPED
            else:
                state = TaskState.SUCCEEDED
                tr.result = value
                if self._journal is not None:
                    try:
                        WorkflowJournal.dumps(value)
                    except Exception as exc:  # noqa: BLE001 - pickle raises many kinds
                        state, tr.result = TaskState.FAILED, None
                        error = TypeError(
                            f"task {tr.task.id!r} of execution {run.id!r} returned {type(value).__name__}, which "
                            f"cannot be journaled (pickle: {exc}); return plain data"
                        )
        else:
            policy = tr.task.retry
            if policy is not None and run.state is ExecutionState.RUNNING and policy.should_retry(error, tr.attempts):
                self._counts["retries"] += 1
                tr.state = TaskState.PENDING
                tr.error = error
                if self._journal is not None:
                    self._journal.task_pending(run.id, tr.task.id, tr.attempts)
                delay = policy.delay(tr.attempts, self._rng)
                self.timers.start_single_timer(("retry", run.id, tr.task.id), _RetryDue(run.id, tr.task.id), delay)
                self._event(run, tr, now)  # after the timer: a watcher that saw it may advance the clock
                return
            state = TaskState.FAILED
        tr.error = error
        self._settle(run, tr, state, now)
        if state is TaskState.SUCCEEDED and self._store is not None:
            self._store_result(run, tr)
        if state is TaskState.FAILED and run.failure_policy == "fail_fast":
            self._stop_run(run, ExecutionState.FAILED)
            return
        for dependant in self._propagate(run, tr):
            self._decide(run, dependant)

    def _settle(self, run: _Run, tr: _TaskRun, state: TaskState, now: float | None = None) -> None:
        """Put `tr` in terminal `state`: journal, counters, watchers."""
        now = self._clock.now() if now is None else now
        tr.state = state
        tr.ended_at = now
        run.remaining -= 1
        self._counts[f"tasks_{state.value}"] += 1
        if self.actor_system.audit.task_history:
            _audit_task(self, run.id, tr, state.value, now)
        if self._journal is not None:
            result = WorkflowJournal.dumps(tr.result) if state is TaskState.SUCCEEDED else None
            error = repr(tr.error) if tr.error is not None else None
            self._journal.task_ended(
                run.id, tr.task.id, state.value, attempts=tr.attempts, at=now, result=result, error=error
            )
        self._event(run, tr, now)

    def _store_result(self, run: _Run, tr: _TaskRun) -> None:
        key = state_key(run.id, tr.task.id)
        store = self._store
        if store is None:
            return
        try:
            future = store.ask(SetEntry(key, tr.result, agent="workflow-orchestrator"), block=False)
        except Exception as exc:  # noqa: BLE001 - a value the store cannot hold
            self._store_failed(key, exc)
            return
        me = self.actor_ref

        def check(done: Future[Any]) -> None:  # on the store's thread
            try:
                done.get()
            except Exception as exc:  # noqa: BLE001 - reported to the orchestrator
                _tell(me, _StoreFailed(key, exc))

        future.add_done_callback(check)

    def _store_failed(self, key: str, error: BaseException) -> None:
        self._counts["store_errors"] += 1
        logger.warning("Workflow result {} not stored: {!r}", key, error)

    # -- cancellation and the end -----------------------------------------------------------------

    def _cancel_attempt(self, tr: _TaskRun) -> None:
        """Tell the attempt in flight to stop; its result, if it comes, is discarded."""
        request = tr.request
        if request is None:
            return
        request._latch.set()  # noqa: SLF001 - the orchestrator owns the latch
        target = tr.task.target
        kind = tr.task.kind
        try:
            if kind == "actor":
                target.tell(CancelTask(request.execution_id, request.task_id, request.attempt, request.idempotency_key))
            elif kind == "target":
                target.cancel(request)
            elif kind == "coroutine" and self._async_worker is not None:
                self._async_worker.tell(_CancelCall(request))
        except ActorDeadError:
            pass  # nothing left to stop
        except Exception:  # noqa: BLE001 - a target's cancel must not stop the others'
            logger.opt(exception=True).warning("Cancelling task {} failed", request.idempotency_key)

    def _stop_run(self, run: _Run, state: ExecutionState) -> None:
        """End `run` early (cancelled, or failed fast): cancel what runs, start nothing more."""
        run.state = state
        run.ready.clear()
        now = self._clock.now()
        for tr in run.tasks.values():
            if tr.state.terminal:
                continue
            if tr.request is not None:
                self._cancel_attempt(tr)
                tr.request = None
                run.running -= 1
                self.timers.cancel(("timeout", run.id, tr.task.id))
            self.timers.cancel(("retry", run.id, tr.task.id))
            tr.decided = True
            self._settle(run, tr, TaskState.CANCELLED, now)
        self._finish(run, now)

    def _maybe_finished(self, run: _Run) -> None:
        if run.state is ExecutionState.RUNNING and run.remaining == 0:
            failed = any(tr.state is TaskState.FAILED for tr in run.tasks.values())
            run.state = ExecutionState.FAILED if failed else ExecutionState.SUCCEEDED
            self._finish(run, self._clock.now())

    def _finish(self, run: _Run, now: float) -> None:
        run.ended_at = now
        self._counts[f"executions_{run.state.value}"] += 1
        if self._journal is not None:
            self._journal.execution_ended(run.id, run.state.value, now)
        status = run.status()
        for watcher in run.watchers:
            _tell(watcher, ExecutionFinished(status))
        run.watchers.clear()
        for waiter in run.waiters:
            _settle(waiter, status)
        run.waiters.clear()

    def _event(self, run: _Run, tr: _TaskRun, now: float) -> None:
        if not run.watchers:
            return
        event = TaskEvent(run.id, tr.task.id, tr.state, tr.attempts, now, tr.error)
        run.watchers = [w for w in run.watchers if _tell(w, event)]


def _tell(ref: pykka.ActorRef[Any], message: Any) -> bool:
    """Tell `message`; return False if the actor has stopped (the message became a dead letter)."""
    try:
        ref.tell(message)
    except ActorDeadError:
        return False
    return True


def _tell_quietly(ref: pykka.ActorRef[Any], message: Any) -> None:
    _tell(ref, message)


def _settle_batch(batch: list[tuple[Any, RunTask, Future[Any]]], done: Future[Any]) -> None:
    """A batch's reply came; if it is an error (the worker died), fail every attempt it left unsettled."""
    try:
        done.get()
    except Exception as exc:  # noqa: BLE001 - given to each attempt
        for _fn, _request, future in batch:
            _settle_exception(future, exc)


def _settle(future: Future[Any], value: Any) -> None:
    if not future.done():
        future.set(value)


def _settle_exception(future: Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception((type(error), error, error.__traceback__))


# -- the client -----------------------------------------------------------------------------------------


class WorkflowClient:
    """Blocking calls to an orchestrator from a thread (not from an asyncio actor's loop), as in the seed.

    Every call is an ask; every error the orchestrator raises reaches the caller.
    """

    def __init__(self, orchestrator: ActorRef[Any], *, timeout: float | None = 30.0) -> None:
        self.orchestrator = orchestrator
        self.timeout = timeout

    def _ask(self, message: Any) -> Any:
        return self.orchestrator.ask(message, timeout=self.timeout)

    def define(self, workflow: Workflow) -> str:
        """Define (or replace) `workflow`; return its id."""
        return cast("str", self._ask(DefineWorkflow(workflow)))

    def execute(
        self,
        workflow_id: str,
        *,
        inputs: Mapping[str, Any] | None = None,
        max_parallel: int | None = None,
        failure_policy: FailurePolicy = "run_all",
        execution_id: str | None = None,
        watchers: tuple[ActorRef[Any], ...] = (),
    ) -> str:
        """Start an execution; return its id (see `ExecuteWorkflow`)."""
        message = ExecuteWorkflow(workflow_id, inputs or {}, max_parallel, failure_policy, execution_id, watchers)
        return cast("str", self._ask(message))

    def status(self, execution_id: str) -> ExecutionStatus:
        """Return the execution's status now."""
        return cast("ExecutionStatus", self._ask(GetExecution(execution_id)))

    def cancel(self, execution_id: str) -> ExecutionStatus:
        """Cancel the execution; return its status after."""
        return cast("ExecutionStatus", self._ask(CancelExecution(execution_id)))

    def watch(self, execution_id: str, subscriber: ActorRef[Any]) -> ExecutionStatus:
        """Have `subscriber` told the execution's events; return its status now."""
        message = WatchExecution(execution_id, subscriber)
        return cast("ExecutionStatus", self._ask(message))

    def resume(self, execution_id: str) -> str:
        """Resume the execution from the journal."""
        return cast("str", self._ask(ResumeExecution(execution_id)))

    def unfinished(self) -> tuple[str, ...]:
        """Return the journal's unfinished execution ids."""
        return cast("tuple[str, ...]", self._ask(ListUnfinished()))

    def statistics(self) -> OrchestratorStatistics:
        """Return the orchestrator's statistics."""
        return cast("OrchestratorStatistics", self._ask(GetOrchestratorStatistics()))

    def wait_for_completion(self, execution_id: str, *, timeout: float | None = None) -> ExecutionStatus:
        """Block until the execution ends; return its final status.

        Raises:
            WorkflowNotFoundError: no such execution.
            pykka.Timeout: it had not ended after `timeout` seconds.
            ActorDeadError: the orchestrator stopped first.
        """
        reply: Future[ExecutionStatus] = Future()
        self.orchestrator.tell(WaitForCompletion(execution_id, reply))
        try:
            return reply.get(timeout=timeout)
        except pykka.Timeout:
            msg = f"execution {execution_id!r} had not ended after {timeout} s; its status: ask GetExecution"
            raise pykka.Timeout(msg) from None


def _audit_task(orchestrator: Actor, execution_id: str, tr: _TaskRun, event: str, now: float) -> None:
    """Emit a workflow task's ``task_history`` audit event (README, Audit logs); the caller checked the flag."""
    error = tr.error if event != "started" else None
    orchestrator.actor_system.audit.emit(
        "task_history",
        {
            "event": event,
            "task_id": tr.task.id,
            "kind": "workflow",
            "execution_id": execution_id,
            "agent_id": None,
            "attempt": tr.attempts,
            "duration_ms": None if event == "started" or tr.started_at is None else (now - tr.started_at) * 1000.0,
            "success": None if event == "started" else event == TaskState.SUCCEEDED.value,
            "error_type": None if error is None else type(error).__name__,
            "error": None if error is None else str(error),
        },
    )
