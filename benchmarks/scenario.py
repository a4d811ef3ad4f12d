"""The headline: the seeds' systems end to end, as one troupe system (``python -m benchmarks --only scenario``).

One case per implementation runs every phase in one process, in order:

1. **agents**: `agents` agents with capabilities register with the
   coordinator (seed 000's registry; every agent holds ``work``, one of ten
   ``skill<k>`` and one seed 001 step: ``analyze``, ``insights``,
   ``visualize`` or ``publish``);
2. **tasks**: a supervisor submits `tasks` tasks by capability and priority
   (seed 003's ``assign_task(required_capabilities=..., priority=...)``),
   `window` in flight, while 1% of the agents crash (a told message whose
   handler raises) and are restarted. Latency is submission to result
   under that load; every task id is checked: lost (never resolved, or
   failed) must be 0, duplicates (ran more than once) are counted;
3. **workflows**: `workflows` executions of seed 001's DAG, analyze ->
   (insights, visualize) -> publish, the two middle steps in parallel, each
   step given to a capable agent by the coordinator. Results land in the
   StateStore (``workflow/<execution>/<task>``) and the agents share data
   through it: each step reads its dependencies' results from the store, not
   from its inputs; the publish step publishes on the broker
   (``workflow.published``, history on);
4. **vote**: a consensus vote among 100 agents (threshold 0.6 over votes
   cast, quorum 0.5); the supervisor opens a session with them (history on)
   and broadcasts the outcome to it.

Implementations:

- ``pooled``: troupe: `Agent`s (pooled, ``restart="permanent"``) and the
  `Coordinator`, `WorkflowOrchestrator` with a `TaskTarget` that submits to
  the coordinator by capability, `StateStore`, `MessageBroker` +
  `MessageHistory` (SQLite) + `SessionManager`, `consensus_vote`;
- ``pykka``: the same system written by hand on pykka: a ThreadingActor
  coordinator (capability index, priority queue per capability, one task per
  agent at a time) that also walks the workflow DAGs, ThreadingActor agents
  that tell it when they fail (it starts a new one and reassigns what the dead
  one held), a dict store actor, a broker actor with a list for history; the
  vote asks all and counts. It has no sessions (not in the pykka version);
- ``floor``: the same logic as plain calls on one thread: what no actor
  runtime can beat.

Observability: troupe's run has metrics on (``enable_metrics``, the default
sampling), and the run checks the runtime's own count of restarts against
the scenario's. Tracing is off: with the OpenTelemetry SDK a
span costs more than a message here (see the observability module).
"""

from __future__ import annotations

import contextlib
import functools
import heapq
import itertools
import statistics
import tempfile
import threading
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any

import pykka

from actors import (
    ActorSystem,
    Agent,
    CancelTask,
    Coordinator,
    FindAgents,
    Future,
    GetEntry,
    MessageBroker,
    MessageHistory,
    SessionManager,
    StateStore,
    SupervisionPolicy,
    Task,
    TaskSpec,
    submit_task,
)
from actors.messaging import spawn_service
from actors.observability import enable_metrics, metrics_of
from benchmarks._harness import Benchmark, Metric, Target
from patterns.consensus import consensus_vote
from patterns.orchestrator import WorkflowClient, WorkflowOrchestrator, state_key
from patterns.workflow import RunTask, Workflow
from patterns.workflow import Task as WorkflowTask

__all__ = ["BENCHMARKS", "scenario"]

_WAIT_S = 600.0
"""Timeout of the waits that end a phase: generous, they only guard against hangs."""

_STEPS = ("analyze", "insights", "visualize", "publish")
_DEPENDS: dict[str, tuple[str, ...]] = {
    "analyze": (),
    "insights": ("analyze",),
    "visualize": ("analyze",),
    "publish": ("insights", "visualize"),
}
_SKILLS = 10
_VOTERS = 100
_QUESTION = "ship the analysis?"


def _check(condition: object, what: str) -> None:
    if not condition:
        msg = f"scenario check failed: {what}"
        raise RuntimeError(msg)


def _caps(i: int) -> frozenset[str]:
    return frozenset({"work", f"skill{i % _SKILLS}", _STEPS[i % len(_STEPS)]})


def _task_requires(i: int) -> frozenset[str]:
    return frozenset({"work", f"skill{i % _SKILLS}"})


def _priority(i: int) -> int:
    return i % 3  # seed 003's LOW / MEDIUM / HIGH


def _ballot(i: int) -> bool:
    return i % 3 != 0


def _step_value(step: str, inputs: dict[str, int], execution: int) -> int:
    """What a workflow step computes from its dependencies' results (read from the store)."""
    return execution + len(step) + sum(inputs.values())


def _expected_publish(execution: int) -> int:
    results: dict[str, int] = {}
    for step in _STEPS:
        results[step] = _step_value(step, {d: results[d] for d in _DEPENDS[step]}, execution)
    return results["publish"]


class _Ledger:
    """What the agents ran, shared by every agent of one case (list.append and += under a lock)."""

    def __init__(self) -> None:
        self.ran: list[str] = []
        self.restarts = 0
        self.lock = threading.Lock()

    def restarted(self) -> None:
        with self.lock:
            self.restarts += 1

    def duplicates(self, keys: list[str]) -> int:
        wanted = set(keys)
        counts = Counter(k for k in self.ran if k in wanted)
        return sum(c - 1 for c in counts.values())


def _percentiles(latencies: list[float]) -> tuple[float, float]:
    ordered = sorted(latencies)
    return statistics.median(ordered), ordered[int(0.99 * (len(ordered) - 1))]


def _metrics(
    register_s: float,
    agents: int,
    tasks: tuple[float, list[float], int, int, int],
    flows: tuple[float, list[float], int],
    vote_s: float,
) -> dict[str, float]:
    tasks_s, latencies, restarts, lost, duplicates = tasks
    flows_s, flow_latencies, count = flows
    p50, p99 = _percentiles(latencies)
    fp50, _ = _percentiles(flow_latencies)
    return {
        "register_s": register_s,
        "register_per_s": agents / register_s,
        "tasks_per_s": len(latencies) / tasks_s,
        "task_p50_ms": p50 * 1e3,
        "task_p99_ms": p99 * 1e3,
        "restarts": restarts,
        "tasks_lost": lost,
        "duplicates": duplicates,
        "workflows_per_s": count / flows_s,
        "workflow_p50_ms": fp50 * 1e3,
        "vote_ms": vote_s * 1e3,
    }


def _crash_every(tasks: int, agents: int) -> int:
    crashes = max(1, agents // 100)
    return max(1, tasks // crashes)


# -- troupe ---------------------------------------------------------------------------------------


class _Crash(Exception):  # noqa: N818 - the simulated crash, not an error condition
    """Raised by an agent told `_CRASH`: a failure its supervisor restarts."""


_CRASH = "crash"


class _ScenarioAgent(Agent):
    agent_type = "apex"
    heartbeat_interval = 3600.0  # beats are not what this measures

    def __init__(
        self,
        key: str,
        *,
        index: int,
        coordinator: Any,
        ledger: _Ledger,
        store: Any,
        broker: Any,
    ) -> None:
        super().__init__(key, capabilities=_caps(index), coordinator=coordinator)
        self.index = index
        self.ledger = ledger
        self.store = store
        self.broker = broker

    def post_restart(self, exc: BaseException | None) -> None:
        self.ledger.restarted()
        super().post_restart(exc)

    def handle_task(self, task: Task) -> Any:
        self.ledger.ran.append(task.idempotency_key)
        if task.kind == "work":
            return task.payload
        execution_id, execution = task.payload
        inputs = {}
        for dep in _DEPENDS[task.kind]:  # shared through the store: the orchestrator wrote it there
            entry = self.store.ask(GetEntry(state_key(execution_id, dep)), timeout=_WAIT_S)
            inputs[dep] = entry.value
        value = _step_value(task.kind, inputs, execution)
        if task.kind == "publish":
            self.broker.publish(
                "workflow.published", {"execution": execution_id, "value": value}, sender=str(self.agent_id)
            )
        return value

    def handle_message(self, message: Any) -> Any:
        if message == _CRASH:
            msg = f"{self.agent_id} crashes (simulated)"
            raise _Crash(msg)
        if message == _QUESTION:
            return _ballot(self.index)
        return None  # "ping"


class _ByCapability:
    """A `TaskTarget`: each workflow step goes to the coordinator, to an agent holding the step's capability."""

    def __init__(self, coordinator: Any, step: str, executions: dict[str, int]) -> None:
        self.coordinator = coordinator
        self.step = step
        self.executions = executions
        self.running: dict[str, str] = {}

    def submit(self, request: RunTask) -> Future[Any]:
        spec = TaskSpec(
            self.step,
            (request.execution_id, self.executions[request.execution_id]),
            requires={self.step},
            idempotency_key=f"{request.idempotency_key}#{request.attempt}",
        )
        handle = submit_task(self.coordinator, spec)
        self.running[request.idempotency_key] = handle.task_id
        key = request.idempotency_key

        def ended(_f: Future[Any]) -> None:
            self.running.pop(key, None)

        handle.future.add_done_callback(ended)
        return handle.future

    def cancel(self, request: RunTask) -> None:
        task_id = self.running.pop(request.idempotency_key, None)
        if task_id is not None:
            self.coordinator.tell(CancelTask(task_id))


def _troupe(agents: int, tasks: int, window: int, workflows: int) -> dict[str, float]:
    ledger = _Ledger()
    published = [0]
    with (
        tempfile.TemporaryDirectory() as tmp,
        ActorSystem("scenario", root_policy=SupervisionPolicy(max_restarts=10 * agents, within_seconds=60)) as system,
    ):
        enable_metrics(system)
        history = spawn_service(system, MessageHistory, str(Path(tmp) / "history.db"))
        broker = spawn_service(system, MessageBroker, history=history)
        sessions = spawn_service(system, SessionManager, history=history, broker=broker)
        # Its own thread: the agents' blocking reads must not wait for a dispatcher they occupy themselves.
        store = system.spawn(StateStore, mode="thread")
        coordinator = system.spawn(Coordinator)
        broker.subscribe("workflow.*", lambda _m: published.__setitem__(0, published[0] + 1))

        # 1. agents
        start = time.perf_counter()
        refs = [
            system.spawn(
                _ScenarioAgent,
                f"a{i}",
                index=i,
                coordinator=coordinator,
                ledger=ledger,
                store=store,
                broker=broker,
                restart="permanent",
            )
            for i in range(agents)
        ]
        for ref in refs:
            ref.ask("ping", timeout=_WAIT_S)
        found = coordinator.ask(FindAgents(all_of={"work"}), timeout=_WAIT_S)
        register_s = time.perf_counter() - start
        _check(len(found) == agents, f"all {agents} agents registered (found {len(found)})")

        # 2. tasks by capability and priority, 1% of the agents crashing
        submitted: list[float] = [0.0] * tasks
        finished: list[float] = [0.0] * tasks
        keys: list[str] = []
        inflight: deque[Any] = deque()
        crash_every = _crash_every(tasks, agents)
        failures = 0
        start = time.perf_counter()
        for i in range(tasks):
            submitted[i] = time.perf_counter()
            handle = submit_task(coordinator, TaskSpec("work", i, requires=_task_requires(i), priority=_priority(i)))
            keys.append(handle.task_id)
            handle.future.add_done_callback(functools.partial(_stamp, finished, i))
            inflight.append(handle.future)
            if i % crash_every == crash_every // 2:
                refs[(i * 7919) % agents].tell(_CRASH)
            if len(inflight) >= window:
                failures += _settled(inflight.popleft())
        while inflight:
            failures += _settled(inflight.popleft())
        tasks_s = time.perf_counter() - start
        latencies = [f - s for s, f in zip(submitted, finished, strict=True) if f]
        lost = failures + (tasks - len(latencies))
        restarts = ledger.restarts

        # 3. seed 001's workflows: results in the store, data shared through it
        executions: dict[str, int] = {}
        orchestrator = system.spawn(WorkflowOrchestrator, store=store)
        client = WorkflowClient(orchestrator, timeout=_WAIT_S)
        client.define(
            Workflow(
                "analysis",
                [
                    WorkflowTask(step, _ByCapability(coordinator, step, executions), depends_on=_DEPENDS[step])
                    for step in _STEPS
                ],
            )
        )
        flow_latencies = []
        start = time.perf_counter()
        started: dict[str, tuple[int, float]] = {}
        for w in range(workflows):
            t0 = time.perf_counter()
            execution_id = f"run-{w}"
            executions[execution_id] = w
            started[client.execute("analysis", execution_id=execution_id)] = (w, t0)
        for execution_id, (w, t0) in started.items():
            status = client.wait_for_completion(execution_id, timeout=_WAIT_S)
            flow_latencies.append(time.perf_counter() - t0)
            _check(status.state.value == "succeeded", f"workflow {execution_id} succeeded ({status.state.value})")
            entry = store.ask(GetEntry(state_key(execution_id, "publish")), timeout=_WAIT_S)
            _check(entry.value == _expected_publish(w), f"workflow {execution_id}'s result is in the store")
        flows_s = time.perf_counter() - start

        # 4. a vote among 100 agents, its outcome broadcast to a session of them
        voters = {str(i): refs[i] for i in range(min(_VOTERS, agents))}
        start = time.perf_counter()
        result = consensus_vote(voters, _QUESTION, threshold=0.6, basis="cast", quorum=0.5, deadline=60).get(
            timeout=_WAIT_S
        )
        vote_s = time.perf_counter() - start
        _check(result.decided and result.approved, f"the vote passed: {result}")
        session = sessions.create("supervisor", metadata={"question": _QUESTION})
        for key, ref in voters.items():
            sessions.join(session, key, ref)
        reached = sessions.broadcast(session, {"approved": result.approved, "yes": result.yes}, sender="supervisor")
        _check(reached == len(voters), f"the session broadcast reached {reached} of {len(voters)}")
        history.flush()
        _check(published[0] == workflows, f"every publish reached the broker's subscriber ({published[0]})")
        duplicates = ledger.duplicates(keys)
        flat = metrics_of(system).flat()
        _check(flat["system.restarts"] >= restarts, f"the runtime counted {flat['system.restarts']} restarts")
    return _metrics(
        register_s,
        agents,
        (tasks_s, latencies, restarts, lost, duplicates),
        (flows_s, flow_latencies, workflows),
        vote_s,
    )


def _stamp(finished: list[float], i: int, _future: Future[Any]) -> None:
    finished[i] = time.perf_counter()


def _flow_done(latencies: list[float], t0: float, event: threading.Event, _value: Any) -> None:
    latencies.append(time.perf_counter() - t0)
    event.set()


def _settled(future: Future[Any]) -> int:
    """Wait for one task; 1 if it failed (lost to its caller), else 0."""
    try:
        future.get(timeout=_WAIT_S)
    except Exception:  # noqa: BLE001 - counted as lost
        return 1
    return 0


# -- pykka, by hand -------------------------------------------------------------------------------


class _PkStore(pykka.ThreadingActor):
    def __init__(self) -> None:
        super().__init__()
        self.data: dict[str, Any] = {}

    def on_receive(self, message: Any) -> Any:
        if message[0] == "set":
            self.data[message[1]] = message[2]
            return None
        return self.data.get(message[1])


class _PkBroker(pykka.ThreadingActor):
    """Topic fan-out to callables, every message kept in a list (the history)."""

    def __init__(self) -> None:
        super().__init__()
        self.subscribers: list[Any] = []
        self.history: list[tuple[str, Any]] = []

    def on_receive(self, message: Any) -> Any:
        if message[0] == "subscribe":
            self.subscribers.append(message[1])
            return None
        if message[0] == "ping":
            return None
        _, topic, payload = message
        self.history.append((topic, payload))
        for subscriber in self.subscribers:
            subscriber(payload)
        return None


class _PkAgent(pykka.ThreadingActor):
    def __init__(self, index: int, coordinator: Any, ledger: _Ledger, store: Any, broker: Any) -> None:
        super().__init__()
        self.index = index
        self.coordinator = coordinator
        self.ledger = ledger
        self.store = store
        self.broker = broker

    def on_receive(self, message: Any) -> Any:
        if message == _CRASH:
            msg = f"agent {self.index} crashes (simulated)"
            raise _Crash(msg)
        if message == _QUESTION:
            return _ballot(self.index)
        if message == "ping":
            return None
        _, task_id, kind, payload = message
        self.ledger.ran.append(task_id)
        if kind == "work":
            value = payload
        else:
            execution_id, execution = payload
            inputs = {d: self.store.ask(("get", state_key(execution_id, d))) for d in _DEPENDS[kind]}
            value = _step_value(kind, inputs, execution)
            if kind == "publish":
                self.broker.tell(("publish", "workflow.published", {"execution": execution_id, "value": value}))
        self.coordinator.tell(("done", self.index, task_id, value))
        return None

    def on_failure(self, *_exc: object) -> None:
        self.coordinator.tell(("died", self.index))


class _PkCoordinator(pykka.ThreadingActor):
    """Capability index, a priority queue per capability, one task per agent; restarts agents; walks DAGs."""

    def __init__(self, ledger: _Ledger, store: Any, broker: Any) -> None:
        super().__init__()
        self.ledger = ledger
        self.store = store
        self.broker = broker
        self.agents: dict[int, Any] = {}
        self.caps: dict[int, frozenset[str]] = {}
        self.free: dict[str, dict[int, None]] = {}  # capability -> free agents, in order
        self.busy: dict[int, tuple[str, str, frozenset[str], int, Any]] = {}
        self.queues: dict[frozenset[str], list[tuple[int, int, str, str, Any]]] = {}
        self.seq = itertools.count()
        self.done: dict[str, Any] = {}  # task id -> callback
        self.flows: dict[str, dict[str, Any]] = {}

    def on_receive(self, message: Any) -> Any:
        kind = message[0]
        if kind == "register":
            _, index, ref = message
            self.agents[index] = ref
            self.caps[index] = _caps(index)
            self._freed(index)
        elif kind == "submit":
            _, task_id, requires, priority, payload, callback = message
            self.done[task_id] = callback
            self._submit(task_id, requires, priority, "work", payload)
        elif kind == "done":
            _, index, task_id, value = message
            self.busy.pop(index, None)
            self._finish(task_id, value)
            self._freed(index)
        elif kind == "died":
            index = message[1]
            for cap in self.caps[index]:
                self.free.get(cap, {}).pop(index, None)
            self.ledger.restarted()
            self.agents[index] = _PkAgent.start(index, self.actor_ref, self.ledger, self.store, self.broker)
            held = self.busy.pop(index, None)
            if held is not None:  # what the dead agent held goes out again
                task_id, step, requires, priority, payload = held
                self._submit(task_id, requires, priority, step, payload)
            self._freed(index)
        elif kind == "workflow":
            _, execution_id, execution, callback = message
            self.flows[execution_id] = {"execution": execution, "left": dict(_DEPENDS), "callback": callback}
            self._start_ready(execution_id)
        return None

    def _submit(self, task_id: str, requires: frozenset[str], priority: int, step: str, payload: Any) -> None:
        cap = min(requires, key=lambda c: len(self.free.get(c, ())))
        for index in self.free.get(cap, {}):
            if requires <= self.caps[index]:
                self._send(index, (task_id, step, requires, priority, payload))
                return
        heapq.heappush(self.queues.setdefault(requires, []), (-priority, next(self.seq), task_id, step, payload))

    def _send(self, index: int, task: tuple[str, str, frozenset[str], int, Any]) -> None:
        for cap in self.caps[index]:
            self.free.get(cap, {}).pop(index, None)
        self.busy[index] = task
        task_id, step, _, _, payload = task
        with contextlib.suppress(pykka.ActorDeadError):  # it crashed: its "died" is coming, and resubmits the task
            self.agents[index].tell(("task", task_id, step, payload))

    def _freed(self, index: int) -> None:
        caps = self.caps[index]
        best = None
        for requires, queue in self.queues.items():
            if queue and requires <= caps and (best is None or queue[0] < self.queues[best][0]):
                best = requires
        if best is not None:
            priority, _, task_id, step, payload = heapq.heappop(self.queues[best])
            self._send(index, (task_id, step, best, -priority, payload))
            return
        for cap in caps:
            self.free.setdefault(cap, {})[index] = None

    def _finish(self, task_id: str, value: Any) -> None:
        callback = self.done.pop(task_id, None)
        if callback is not None:
            callback(value)
            return
        execution_id, _, step = task_id.partition("/")
        flow = self.flows[execution_id]
        self.store.tell(("set", state_key(execution_id, step), value))  # before any dependant can read it
        del flow["left"][step]
        if not flow["left"]:
            del self.flows[execution_id]
            flow["callback"](value)
            return
        self._start_ready(execution_id, finished=step)

    def _start_ready(self, execution_id: str, finished: str | None = None) -> None:
        flow = self.flows[execution_id]
        left = flow["left"]
        for step, deps in list(left.items()):
            if deps is None:
                continue  # started
            deps_left = tuple(d for d in deps if d != finished)
            if deps_left:
                left[step] = deps_left
                continue
            left[step] = None
            self._submit(f"{execution_id}/{step}", frozenset({step}), 0, step, (execution_id, flow["execution"]))


def _pykka(agents: int, tasks: int, window: int, workflows: int) -> dict[str, float]:
    ledger = _Ledger()
    published = [0]
    try:
        store = _PkStore.start()
        broker = _PkBroker.start()
        broker.ask(("subscribe", lambda _m: published.__setitem__(0, published[0] + 1)))
        coordinator = _PkCoordinator.start(ledger, store, broker)

        start = time.perf_counter()
        refs = [_PkAgent.start(i, coordinator, ledger, store, broker) for i in range(agents)]
        for i, ref in enumerate(refs):
            coordinator.tell(("register", i, ref))
        for ref in refs:
            ref.ask("ping", timeout=_WAIT_S)
        coordinator.ask(("ping",), timeout=_WAIT_S)
        register_s = time.perf_counter() - start

        submitted: list[float] = [0.0] * tasks
        finished: list[float] = [0.0] * tasks
        keys = [f"t{i}" for i in range(tasks)]
        inflight: deque[threading.Event] = deque()
        crash_every = _crash_every(tasks, agents)
        start = time.perf_counter()
        for i in range(tasks):
            event = threading.Event()

            def callback(_value: Any, i: int = i, event: threading.Event = event) -> None:
                finished[i] = time.perf_counter()
                event.set()

            submitted[i] = time.perf_counter()
            coordinator.tell(("submit", keys[i], _task_requires(i), _priority(i), i, callback))
            inflight.append(event)
            if i % crash_every == crash_every // 2:
                victim = (i * 7919) % agents
                refs[victim] = coordinator.proxy().agents.get()[victim]  # its current ref (a crashed one is replaced)
                refs[victim].tell(_CRASH)
            if len(inflight) >= window:
                _check(inflight.popleft().wait(_WAIT_S), "a pykka task finished")
        while inflight:
            _check(inflight.popleft().wait(_WAIT_S), "a pykka task finished")
        tasks_s = time.perf_counter() - start
        latencies = [f - s for s, f in zip(submitted, finished, strict=True) if f]
        lost = tasks - len(latencies)
        restarts = ledger.restarts

        done: dict[str, threading.Event] = {}
        flow_latencies: list[float] = []
        start = time.perf_counter()
        for w in range(workflows):
            event = threading.Event()
            done[f"run-{w}"] = event
            t0 = time.perf_counter()
            coordinator.tell(
                (
                    "workflow",
                    f"run-{w}",
                    w,
                    functools.partial(_flow_done, flow_latencies, t0, event),
                )
            )
        for w, event in enumerate(done.values()):
            _check(event.wait(_WAIT_S), "a pykka workflow finished")
            value = store.ask(("get", state_key(f"run-{w}", "publish")), timeout=_WAIT_S)
            _check(value == _expected_publish(w), "the pykka workflow's result is in the store")
        flows_s = time.perf_counter() - start

        voters = [coordinator.proxy().agents.get()[i] for i in range(min(_VOTERS, agents))]
        start = time.perf_counter()
        ballots = list(pykka.get_all([v.ask(_QUESTION, block=False) for v in voters], timeout=_WAIT_S))
        vote_s = time.perf_counter() - start
        _check(sum(ballots) >= 0.6 * len(ballots), "the pykka vote passed")
        broker.ask(("ping",))
        _check(published[0] == workflows, f"every pykka publish reached the subscriber ({published[0]})")
        duplicates = ledger.duplicates(keys)
    finally:
        pykka.ActorRegistry.stop_all()
    return _metrics(
        register_s,
        agents,
        (tasks_s, latencies, restarts, lost, duplicates),
        (flows_s, flow_latencies, workflows),
        vote_s,
    )


# -- the floor: plain calls on one thread ---------------------------------------------------------


class _PlainAgent:
    __slots__ = ("caps", "index", "ledger", "store")

    def __init__(self, index: int, ledger: _Ledger, store: dict[str, Any]) -> None:
        self.index = index
        self.caps = _caps(index)
        self.ledger = ledger
        self.store = store

    def run(self, task_id: str, step: str, payload: Any, history: list[Any], subscribers: list[Any]) -> Any:
        self.ledger.ran.append(task_id)
        if step == "work":
            return payload
        execution_id, execution = payload
        value = _step_value(step, {d: self.store[state_key(execution_id, d)] for d in _DEPENDS[step]}, execution)
        if step == "publish":
            message = {"execution": execution_id, "value": value}
            history.append(("workflow.published", message))
            for subscriber in subscribers:
                subscriber(message)
        return value


def _floor(agents: int, tasks: int, _window: int, workflows: int) -> dict[str, float]:
    ledger = _Ledger()
    store: dict[str, Any] = {}
    history: list[Any] = []
    published = [0]
    subscribers = [lambda _m: published.__setitem__(0, published[0] + 1)]
    start = time.perf_counter()
    pool = [_PlainAgent(i, ledger, store) for i in range(agents)]
    by_cap: dict[str, list[int]] = {}
    for agent in pool:
        for cap in agent.caps:
            by_cap.setdefault(cap, []).append(agent.index)
    register_s = time.perf_counter() - start
    turn = Counter[frozenset[str]]()

    def assign(requires: frozenset[str]) -> _PlainAgent:
        cap = min(requires, key=lambda c: len(by_cap[c]))
        capable = by_cap[cap]
        while True:  # round robin over the capable agents
            index = capable[turn[requires] % len(capable)]
            turn[requires] += 1
            if requires <= pool[index].caps:
                return pool[index]

    latencies = []
    crash_every = _crash_every(tasks, agents)
    queue: list[tuple[int, int, int]] = []
    start = time.perf_counter()
    for i in range(tasks):  # a priority queue in front, as the coordinators have
        heapq.heappush(queue, (-_priority(i), i, i))
        if i % crash_every == crash_every // 2:
            victim = (i * 7919) % agents
            pool[victim] = _PlainAgent(victim, ledger, store)  # the restart
            ledger.restarted()
        t0 = time.perf_counter()
        _, _, n = heapq.heappop(queue)
        _check(assign(_task_requires(n)).run(f"t{n}", "work", n, history, subscribers) == n, "the task echoes")
        latencies.append(time.perf_counter() - t0)
    tasks_s = time.perf_counter() - start

    flow_latencies = []
    start = time.perf_counter()
    for w in range(workflows):
        t0 = time.perf_counter()
        execution_id = f"run-{w}"
        for step in _STEPS:
            value = assign(frozenset({step})).run(
                f"{execution_id}/{step}", step, (execution_id, w), history, subscribers
            )
            store[state_key(execution_id, step)] = value
        _check(store[state_key(execution_id, "publish")] == _expected_publish(w), "the floor workflow's result")
        flow_latencies.append(time.perf_counter() - t0)
    flows_s = time.perf_counter() - start

    start = time.perf_counter()
    yes = sum(_ballot(i) for i in range(min(_VOTERS, agents)))
    vote_s = time.perf_counter() - start
    _check(yes >= 0.6 * min(_VOTERS, agents), "the floor vote passed")
    _check(published[0] == workflows, "every floor publish reached the subscriber")
    duplicates = ledger.duplicates([f"t{i}" for i in range(tasks)])
    return _metrics(
        register_s,
        agents,
        (tasks_s, latencies, ledger.restarts, 0, duplicates),
        (flows_s, flow_latencies, workflows),
        vote_s,
    )


def scenario(impl: str, *, agents: int, tasks: int, window: int, workflows: int) -> dict[str, float]:
    """The seeds' system end to end for one implementation (see the module docs)."""
    run = {"pooled": _troupe, "pykka": _pykka, "floor": _floor}[impl]
    return run(agents, tasks, window, workflows)


BENCHMARKS = (
    Benchmark(
        name="scenario",
        func=scenario,
        metrics=(
            Metric("register_s", "agents: spawn + register all (s)"),
            Metric("register_per_s", "agents registered per second", higher_is_better=True),
            Metric(
                "tasks_per_s", "tasks by capability + priority, 1% of agents crashing (tasks/s)", higher_is_better=True
            ),
            Metric("task_p50_ms", "task latency, submit to result, p50 (ms)"),
            Metric("task_p99_ms", "task latency, p99 (ms)"),
            Metric("restarts", "agents crashed and restarted", better="fewer", worse="more"),
            Metric("tasks_lost", "tasks lost (must be 0)", better="fewer", worse="more"),
            Metric("duplicates", "tasks run more than once", better="fewer", worse="more"),
            Metric("workflows_per_s", "seed 001 workflows (4 steps, via the store) per second", higher_is_better=True),
            Metric("workflow_p50_ms", "one workflow, start to end, p50 (ms)"),
            Metric("vote_ms", "consensus vote among 100 agents (ms)"),
        ),
        params={"agents": 10_000, "tasks": 100_000, "window": 2_000, "workflows": 1_000},
        # The default run keeps 10,000 agents and 1% of them crashing, with 30,000 tasks: pykka's
        # 100,000 took 39 of the run's 576 s at ~2,600 tasks/s, and its rate does not depend on the count.
        default_params={"agents": 10_000, "tasks": 30_000, "window": 2_000, "workflows": 1_000},
        quick_params={"agents": 200, "tasks": 2_000, "window": 200, "workflows": 20},
        impls=("pykka", "pooled", "floor"),
        budget_s=300.0,
        timeout_s=900.0,
        # The pykka version runs a thread per agent: 10,000 threads pinned to one CPU measure the kernel's scheduler.
        only_placements=("unpinned",),
        targets=(Target("no task lost", "tasks_lost", 0),),
    ),
)
"""The end-to-end scenario, one case per implementation."""
