"""The WorkflowOrchestrator runs DAGs: inputs, join rules, limits, retries, timeouts, cancel, watch, results.

Every test runs the orchestrator in each execution mode. Time is the
fixture's ManualClock; tasks that must be "running" block on a Gate.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from typing import TYPE_CHECKING, Any

import pykka
import pytest
from pykka import ActorDeadError

from actors import (
    Actor,
    Future,
    GetEntry,
    StateStore,
    TaskTimeoutError,
    ThreadActor,
    WorkflowNotFoundError,
)
from patterns.orchestrator import (
    DefineWorkflow,
    ExecutionFinished,
    ExecutionState,
    TaskEvent,
    WaitForCompletion,
    WorkflowClient,
    WorkflowOrchestrator,
    state_key,
)
from patterns.retry import RetryPolicy
from patterns.workflow import CancelTask, RunTask, Skip, Task, TaskState, Workflow
from tests.core.actors_for_tests import WAIT, Gate

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from actors import ActorRef, ActorSystem, ManualClock


class Watcher(Actor):
    """Puts every event it is told into a queue the test reads."""

    def __init__(self, events: queue.Queue[Any]) -> None:
        super().__init__()
        self.events = events

    def on_receive(self, message: Any) -> None:
        self.events.put(message)


class Events:
    def __init__(self, system: ActorSystem) -> None:
        self.queue: queue.Queue[Any] = queue.Queue()
        self.ref = system.spawn(Watcher, self.queue)
        self.seen: list[Any] = []

    def until(self, predicate: Callable[[Any], bool]) -> Any:
        while True:
            event = self.queue.get(timeout=WAIT)
            self.seen.append(event)
            if predicate(event):
                return event

    def task(self, task_id: str, state: TaskState, attempt: int | None = None) -> TaskEvent:
        def match(e: Any) -> bool:
            return (
                isinstance(e, TaskEvent)
                and e.task_id == task_id
                and e.state is state
                and (attempt is None or e.attempt == attempt)
            )

        return self.until(match)  # type: ignore[no-any-return]

    def finished(self) -> ExecutionFinished:
        return self.until(lambda e: isinstance(e, ExecutionFinished))  # type: ignore[no-any-return]


@pytest.fixture
def orchestrator(system: ActorSystem, mode: str) -> ActorRef[Any]:
    return system.spawn(WorkflowOrchestrator, mode=mode)


@pytest.fixture
def client(orchestrator: ActorRef[Any]) -> WorkflowClient:
    return WorkflowClient(orchestrator, timeout=WAIT)


@pytest.fixture
def events(system: ActorSystem) -> Events:
    return Events(system)


@pytest.fixture
def gates() -> Iterator[list[Gate]]:
    made: list[Gate] = []
    yield made
    for gate in made:  # never leave a worker thread blocked
        gate.released.set()


def gate(gates: list[Gate]) -> Gate:
    g = Gate()
    gates.append(g)
    return g


def held(g: Gate, value: Any = None) -> Callable[[RunTask], Any]:
    def run(_request: RunTask) -> Any:
        g.hold()
        return value

    return run


def run_workflow(client: WorkflowClient, tasks: list[Task], **execute: Any) -> Any:
    client.define(Workflow("w", tasks))
    execution_id = client.execute("w", **execute)
    return client.wait_for_completion(execution_id, timeout=WAIT)


# -- inputs and scheduling -----------------------------------------------------------------------------


def test_the_results_of_dependencies_are_the_inputs_of_their_dependants(client: WorkflowClient) -> None:
    status = run_workflow(
        client,
        [
            Task("a", lambda r: r.params["base"]),
            Task("b", lambda r: r.inputs["a"] + 1, depends_on="a"),
            Task("c", lambda r: r.inputs["a"] * 10, depends_on="a", inline=True),
            Task("d", lambda r: dict(r.inputs), depends_on=["b", "c"]),
        ],
        inputs={"base": 4},
    )
    assert status.state is ExecutionState.SUCCEEDED
    assert status.results() == {"a": 4, "b": 5, "c": 40, "d": {"b": 5, "c": 40}}
    assert all(t.attempts == 1 for t in status.tasks)


def test_a_slow_branch_never_holds_up_an_unrelated_fast_one(
    client: WorkflowClient, events: Events, gates: list[Gate]
) -> None:
    slow = gate(gates)
    client.define(
        Workflow(
            "w",
            [
                Task("a", lambda r: 1),
                Task("slow", held(slow), depends_on="a"),
                Task("fast1", lambda r: 2, depends_on="a"),
                Task("fast2", lambda r: 3, depends_on="fast1"),
            ],
        )
    )
    execution_id = client.execute("w", watchers=(events.ref,))
    events.task("fast2", TaskState.SUCCEEDED)
    assert client.status(execution_id).task("slow").state is TaskState.RUNNING
    slow.released.set()
    assert client.wait_for_completion(execution_id, timeout=WAIT).state is ExecutionState.SUCCEEDED


def test_the_parallel_limit_caps_the_attempts_in_flight(client: WorkflowClient, gates: list[Gate]) -> None:
    lock = threading.Lock()
    running = [0, 0]  # now, most
    started = threading.Semaphore(0)
    release = gate(gates)

    def work(_request: RunTask) -> None:
        with lock:
            running[0] += 1
            running[1] = max(running)
        started.release()
        release.released.wait(WAIT)
        with lock:
            running[0] -= 1

    client.define(Workflow("w", [Task(f"t{i}", work) for i in range(6)]))
    execution_id = client.execute("w", max_parallel=2)
    assert started.acquire(timeout=WAIT)
    assert started.acquire(timeout=WAIT)
    states = [t.state for t in client.status(execution_id).tasks]
    assert states.count(TaskState.RUNNING) == 2
    assert states.count(TaskState.PENDING) == 4
    release.released.set()
    assert client.wait_for_completion(execution_id, timeout=WAIT).state is ExecutionState.SUCCEEDED
    assert running[1] == 2


# -- join rules and failure policies -------------------------------------------------------------------


def test_a_skip_propagates_by_the_join_rules(client: WorkflowClient) -> None:
    status = run_workflow(
        client,
        [
            Task("a", lambda r: Skip("nothing to do")),
            Task("x", lambda r: 1),
            Task("b", lambda r: 2, depends_on="a"),
            Task("c", lambda r: sorted(r.inputs), depends_on=["a", "x"], join="none_failed"),
            Task("d", lambda r: 4, depends_on="b"),
        ],
    )
    states = {t.task_id: t.state for t in status.tasks}
    assert states == {
        "a": TaskState.SKIPPED,
        "x": TaskState.SUCCEEDED,
        "b": TaskState.SKIPPED,
        "c": TaskState.SUCCEEDED,
        "d": TaskState.SKIPPED,
    }
    assert status.task("c").result == ["x"]
    assert status.state is ExecutionState.SUCCEEDED


def boom(_request: RunTask) -> None:
    msg = "task failed on purpose"
    raise ValueError(msg)


def test_run_all_runs_what_the_join_rules_allow_after_a_failure(client: WorkflowClient) -> None:
    status = run_workflow(
        client,
        [
            Task("a", boom),
            Task("b", lambda r: 1),
            Task("after_a", lambda r: 2, depends_on="a"),
            Task("cleanup", lambda r: 3, depends_on=["a", "b"], join="all_done"),
            Task("either", lambda r: 4, depends_on=["a", "b"], join="one_success"),
        ],
    )
    states = {t.task_id: t.state for t in status.tasks}
    assert states == {
        "a": TaskState.FAILED,
        "b": TaskState.SUCCEEDED,
        "after_a": TaskState.UPSTREAM_FAILED,
        "cleanup": TaskState.SUCCEEDED,
        "either": TaskState.SUCCEEDED,
    }
    assert isinstance(status.task("a").error, ValueError)
    assert status.state is ExecutionState.FAILED


def test_fail_fast_cancels_what_runs_and_starts_nothing_more(
    client: WorkflowClient, events: Events, gates: list[Gate]
) -> None:
    slow = gate(gates)
    seen: list[bool] = []
    failing = gate(gates)

    def slow_task(request: RunTask) -> None:
        slow.hold()
        seen.append(request.cancelled())

    def fail_when_told(_request: RunTask) -> None:
        failing.hold()
        boom(_request)

    client.define(
        Workflow(
            "w",
            [
                Task("slow", slow_task),
                Task("fails", fail_when_told),
                Task("after", lambda r: 1, depends_on="slow"),
            ],
        )
    )
    execution_id = client.execute("w", failure_policy="fail_fast", watchers=(events.ref,))
    slow.wait_entered()
    failing.released.set()
    status = events.finished().status
    assert status.state is ExecutionState.FAILED
    assert status.task("fails").state is TaskState.FAILED
    assert status.task("slow").state is TaskState.CANCELLED
    assert status.task("after").state is TaskState.CANCELLED
    assert status.task("after").attempts == 0
    slow.released.set()
    assert client.wait_for_completion(execution_id, timeout=WAIT).task("slow").state is TaskState.CANCELLED


# -- retries and timeouts on the manual clock ----------------------------------------------------------


def test_a_failed_attempt_is_retried_after_the_policys_delay_on_the_system_clock(
    client: WorkflowClient, events: Events, clock: ManualClock
) -> None:
    attempts: list[int] = []

    def flaky(request: RunTask) -> str:
        attempts.append(request.attempt)
        if request.attempt < 3:
            msg = f"attempt {request.attempt} fails"
            raise ConnectionError(msg)
        return "ok"

    retry = RetryPolicy(max_attempts=3, initial_delay=1.0, backoff=2.0)
    client.define(Workflow("w", [Task("t", flaky, retry=retry)]))
    execution_id = client.execute("w", watchers=(events.ref,))
    events.task("t", TaskState.PENDING, attempt=1)
    clock.advance(0.5)
    assert client.status(execution_id).task("t").attempts == 1  # not due yet
    clock.advance(0.5)
    events.task("t", TaskState.PENDING, attempt=2)
    clock.advance(1.0)
    assert client.status(execution_id).task("t").attempts == 2  # the second delay is 2 s
    clock.advance(1.0)
    status = client.wait_for_completion(execution_id, timeout=WAIT)
    assert status.task("t").state is TaskState.SUCCEEDED
    assert status.task("t").attempts == 3
    assert attempts == [1, 2, 3]
    assert client.statistics().retries == 2


def test_the_last_failure_is_kept_when_retries_run_out(
    client: WorkflowClient, events: Events, clock: ManualClock
) -> None:
    client.define(Workflow("w", [Task("t", boom, retry=RetryPolicy(max_attempts=2, initial_delay=1.0))]))
    execution_id = client.execute("w", watchers=(events.ref,))
    events.task("t", TaskState.PENDING, attempt=1)
    clock.advance(1.0)
    status = client.wait_for_completion(execution_id, timeout=WAIT)
    assert status.task("t").state is TaskState.FAILED
    assert status.task("t").attempts == 2
    assert isinstance(status.task("t").error, ValueError)


def test_an_attempt_past_its_timeout_fails_is_told_to_stop_and_its_late_result_is_discarded(
    system: ActorSystem, mode: str, clock: ManualClock, gates: list[Gate]
) -> None:
    client = WorkflowClient(system.spawn(WorkflowOrchestrator, mode=mode, workers=1), timeout=WAIT)
    g = gate(gates)
    saw_cancel: list[bool] = []

    def stuck(request: RunTask) -> str:
        g.hold()
        saw_cancel.append(request.cancelled())
        return "too late"

    client.define(Workflow("w", [Task("t", stuck, timeout=5.0)]))
    execution_id = client.execute("w")
    g.wait_entered()  # the timer is armed in the turn that started the attempt
    clock.advance(4.9)
    assert client.status(execution_id).task("t").state is TaskState.RUNNING
    clock.advance(0.1)
    status = client.wait_for_completion(execution_id, timeout=WAIT)
    assert status.task("t").state is TaskState.FAILED
    assert isinstance(status.task("t").error, TaskTimeoutError)
    g.released.set()
    # The one worker runs the next execution only after the stuck one returned.
    assert run_workflow(client, [Task("t", lambda r: 1)]).state is ExecutionState.SUCCEEDED
    assert saw_cancel == [True]
    stats = client.statistics()
    assert stats.timeouts == 1
    assert stats.late_results_discarded == 1
    assert client.status(execution_id).task("t").state is TaskState.FAILED


def test_a_timed_out_attempt_is_retried(
    client: WorkflowClient, events: Events, clock: ManualClock, gates: list[Gate]
) -> None:
    g = gate(gates)

    def first_hangs(request: RunTask) -> int:
        if request.attempt == 1:
            g.hold()
        return request.attempt

    client.define(Workflow("w", [Task("t", first_hangs, timeout=2.0, retry=RetryPolicy(initial_delay=1.0))]))
    execution_id = client.execute("w", watchers=(events.ref,))
    g.wait_entered()
    clock.advance(2.0)
    events.task("t", TaskState.PENDING, attempt=1)
    clock.advance(1.0)
    status = client.wait_for_completion(execution_id, timeout=WAIT)
    assert status.task("t").result == 2
    g.released.set()


# -- cancellation --------------------------------------------------------------------------------------


def test_cancel_stops_the_running_attempt_and_queued_tasks_never_start(
    client: WorkflowClient, gates: list[Gate]
) -> None:
    g = gate(gates)
    started: list[str] = []
    saw_cancel: list[bool] = []

    returned = threading.Event()

    def first(request: RunTask) -> None:
        started.append(request.task_id)
        g.hold()
        saw_cancel.append(request.cancelled())
        returned.set()

    def other(request: RunTask) -> None:
        started.append(request.task_id)

    client.define(
        Workflow("w", [Task("first", first), Task("queued", other), Task("after", other, depends_on="first")])
    )
    execution_id = client.execute("w", max_parallel=1)
    g.wait_entered()
    status = client.cancel(execution_id)
    assert status.state is ExecutionState.CANCELLED
    assert {t.task_id: t.state for t in status.tasks} == dict.fromkeys(
        ["first", "queued", "after"], TaskState.CANCELLED
    )
    assert status.task("queued").attempts == 0
    g.released.set()
    assert client.wait_for_completion(execution_id, timeout=WAIT).state is ExecutionState.CANCELLED
    # A second workflow on the same orchestrator runs: the cancelled one is over.
    assert run_workflow(client, [Task("x", other)]).state is ExecutionState.SUCCEEDED
    assert started == ["first", "x"]
    assert returned.wait(WAIT)
    assert saw_cancel == [True]


class BlockingAgent(ThreadActor):
    """An actor target that blocks on the Gate in its request's params and records CancelTask."""

    def __init__(self) -> None:
        super().__init__()
        self.cancels: list[CancelTask] = []

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, RunTask):
            message.params["gate"].hold()
            return "done"
        if isinstance(message, CancelTask):
            self.cancels.append(message)
            return None
        if message == "cancels":
            return list(self.cancels)
        return None


def test_an_actor_target_is_told_to_cancel_and_its_reply_is_discarded(
    system: ActorSystem, client: WorkflowClient, gates: list[Gate]
) -> None:
    agent = system.spawn(BlockingAgent)
    g = gate(gates)
    client.define(Workflow("w", [Task("t", agent, params={"gate": g})]))
    execution_id = client.execute("w")
    g.wait_entered()
    assert client.cancel(execution_id).task("t").state is TaskState.CANCELLED
    g.released.set()
    cancels = agent.ask("cancels", timeout=WAIT)
    assert [(c.task_id, c.attempt, c.idempotency_key) for c in cancels] == [("t", 1, f"{execution_id}/t")]
    assert client.wait_for_completion(execution_id, timeout=WAIT).task("t").result is None


def test_a_coroutine_target_is_cancelled_on_its_loop(client: WorkflowClient) -> None:
    entered = threading.Event()
    cancelled = threading.Event()

    async def waits_forever(_request: RunTask) -> None:
        entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    client.define(Workflow("w", [Task("t", waits_forever)]))
    execution_id = client.execute("w")
    assert entered.wait(WAIT)
    client.cancel(execution_id)
    assert cancelled.wait(WAIT)


# -- targets that fail, and bad input ------------------------------------------------------------------


class CrashesOnTell(ThreadActor):
    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Gate):
            message.hold()
            msg = "the agent crashes"
            raise RuntimeError(msg)  # noqa: TRY004 - a crash, not a type check
        return "handled"


def test_a_target_that_dies_mid_run_fails_its_task_and_other_executions_keep_running(
    system: ActorSystem, client: WorkflowClient, gates: list[Gate]
) -> None:
    agent = system.spawn(CrashesOnTell)
    g = gate(gates)
    agent.tell(g)
    g.wait_entered()
    client.define(Workflow("w", [Task("t", agent)]))
    doomed = client.execute("w")
    client.define(Workflow("ok", [Task("t", lambda r: 1)]))
    fine = client.execute("ok")
    assert client.wait_for_completion(fine, timeout=WAIT).state is ExecutionState.SUCCEEDED
    g.released.set()
    status = client.wait_for_completion(doomed, timeout=WAIT)
    assert status.task("t").state is TaskState.FAILED
    assert isinstance(status.task("t").error, ActorDeadError)


def test_unknown_ids_get_named_errors_and_the_orchestrator_keeps_working(client: WorkflowClient) -> None:
    with pytest.raises(WorkflowNotFoundError, match="no execution 'nope'"):
        client.wait_for_completion("nope", timeout=WAIT)
    with pytest.raises(WorkflowNotFoundError, match="no execution 'nope'"):
        client.status("nope")
    with pytest.raises(WorkflowNotFoundError, match="no workflow 'nope'; define it first"):
        client.execute("nope")
    with pytest.raises(TypeError):
        DefineWorkflow("not a workflow")  # type: ignore[arg-type]
    assert run_workflow(client, [Task("t", lambda r: 1)]).state is ExecutionState.SUCCEEDED


def test_waiting_past_the_timeout_raises_pykkas_timeout(client: WorkflowClient, gates: list[Gate]) -> None:
    g = gate(gates)
    client.define(Workflow("w", [Task("t", held(g))]))
    execution_id = client.execute("w")
    with pytest.raises(pykka.Timeout, match="had not ended"):
        client.wait_for_completion(execution_id, timeout=0)
    g.released.set()
    assert client.wait_for_completion(execution_id, timeout=WAIT).done


def test_waiters_get_actor_dead_error_when_the_orchestrator_stops(
    orchestrator: ActorRef[Any], client: WorkflowClient, gates: list[Gate]
) -> None:
    g = gate(gates)
    client.define(Workflow("w", [Task("t", held(g))]))
    execution_id = client.execute("w")
    g.wait_entered()
    reply: Future[Any] = Future()
    orchestrator.tell(WaitForCompletion(execution_id, reply))
    g.released.set()
    orchestrator.stop()
    with pytest.raises(ActorDeadError, match="resume it"):
        reply.get(timeout=WAIT)


# -- watch, results, statistics, the TaskTarget seam ---------------------------------------------------


def test_a_watcher_hears_every_change_then_the_end(client: WorkflowClient, events: Events, gates: list[Gate]) -> None:
    g = gate(gates)
    client.define(Workflow("w", [Task("a", held(g, 1)), Task("b", lambda r: 2, depends_on="a")]))
    client.execute("w", watchers=(events.ref,))
    g.wait_entered()
    g.released.set()
    finished = events.finished()
    changes = [(e.task_id, e.state) for e in events.seen if isinstance(e, TaskEvent)]
    assert changes == [
        ("a", TaskState.RUNNING),
        ("a", TaskState.SUCCEEDED),
        ("b", TaskState.RUNNING),
        ("b", TaskState.SUCCEEDED),
    ]
    assert finished.status.state is ExecutionState.SUCCEEDED


def test_results_land_in_the_state_store_under_workflow_execution_task(system: ActorSystem, mode: str) -> None:
    store = system.spawn(StateStore)
    client = WorkflowClient(system.spawn(WorkflowOrchestrator, store=store, mode=mode), timeout=WAIT)
    status = run_workflow(client, [Task("a", lambda r: {"score": 3}), Task("b", lambda r: Skip(), depends_on="a")])
    assert store.ask(GetEntry(state_key(status.execution_id, "a")), timeout=WAIT).value == {"score": 3}
    assert store.ask(GetEntry(state_key(status.execution_id, "b")), timeout=WAIT) is None
    assert state_key("e1", "a") == "workflow/e1/a"


class ManualTarget:
    """A TaskTarget: the seam a Coordinator fills. The test settles its futures."""

    def __init__(self) -> None:
        self.submitted: queue.Queue[tuple[RunTask, Future[Any]]] = queue.Queue()
        self.cancelled: list[str] = []

    def submit(self, request: RunTask) -> Future[Any]:
        future: Future[Any] = Future()
        self.submitted.put((request, future))
        return future

    def cancel(self, request: RunTask) -> None:
        self.cancelled.append(request.idempotency_key)


def test_a_task_target_gets_each_request_and_its_future_is_the_result(client: WorkflowClient) -> None:
    target = ManualTarget()
    client.define(Workflow("w", [Task("a", target, params={"capability": "sql"}), Task("b", target, depends_on="a")]))
    execution_id = client.execute("w")
    request, future = target.submitted.get(timeout=WAIT)
    assert (request.task_id, request.params, request.attempt) == ("a", {"capability": "sql"}, 1)
    future.set(7)
    request, future = target.submitted.get(timeout=WAIT)
    assert request.inputs == {"a": 7}
    future.set(8)
    assert client.wait_for_completion(execution_id, timeout=WAIT).results() == {"a": 7, "b": 8}


def test_statistics_count_executions_and_tasks(client: WorkflowClient) -> None:
    run_workflow(client, [Task("a", lambda r: 1), Task("b", boom), Task("c", lambda r: 1, depends_on="b")])
    stats = client.statistics()
    assert (stats.workflows, stats.executions_failed, stats.executions_running) == (1, 1, 0)
    assert (stats.tasks_started, stats.tasks_succeeded, stats.tasks_failed, stats.tasks_upstream_failed) == (2, 1, 1, 1)
