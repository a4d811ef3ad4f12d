"""Coordination benchmarks: registration, discovery, status streaming, tasks end to end, resource grants.

Each function runs in its own subprocess (see `benchmarks._harness`) for one
implementation:

- ``pykka``: a coordinator written by hand the pykka way: a
  `pykka.ThreadingActor` with a dict registry (discovery scans it), round
  robin over the capable agents, `ThreadingActor` agents, and a dict of
  resource counts for grants;
- ``pooled``: troupe's `Coordinator`, `Agent`s and `ResourceManager`, pooled;
- ``floor``: the same assignment logic as plain function calls on one thread
  (`_PlainCoordinator`: an indexed dict registry, credit per agent, round
  robin, a FIFO queue, handlers called inline): what no actor can beat.

The seeds' published figures (seed 000: registration ~1 ms per agent, a status
update ~0.3 ms, 10,000+ agents, 100,000+ messages/s) are quoted in the README
next to these.
"""

from __future__ import annotations

import gc
import itertools
import os
import statistics
import threading
import time
from collections import OrderedDict, deque
from pathlib import Path
from typing import Any, cast

import pykka

from actors import (
    Acquire,
    Actor,
    ActorSystem,
    Agent,
    AgentDeclared,
    AgentDescriptor,
    AgentId,
    Coordinator,
    FindAgents,
    GetCoordinationStatistics,
    Register,
    RegistryEvent,
    Release,
    ResourceManager,
    Submit,
    Task,
    TaskSpec,
    WatchRegistry,
    submit_task,
)
from benchmarks._harness import Benchmark, Metric, Target

__all__ = ["BENCHMARKS", "registry", "resources", "services", "status_stream", "tasks"]

_WAIT_S = 600.0
"""Timeout of the waits that end a measurement: generous, they only guard against hangs."""

_IMPLS = ("pykka", "pooled", "floor")


_MATCHES = 10
"""How many agents the measured capability query matches, at every registry size."""


def _check(condition: object, what: str) -> None:
    """Fail the case if a measurement did not do what it claims (asserts vanish under -O)."""
    if not condition:
        msg = f"benchmark check failed: {what}"
        raise RuntimeError(msg)


def _rss_kb() -> float:
    statm = Path(f"/proc/{os.getpid()}/statm").read_text()
    return int(statm.split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1024


def _caps(i: int, n: int) -> frozenset[str]:
    # Every capability "cap<j>" is held by 10 agents whatever n is, and every agent holds "common".
    return frozenset({f"cap{i % max(1, n // 10)}", "common"})


# -- the floor: the assignment logic as plain calls ---------------------------------------------


class _PlainAgent:
    __slots__ = ("caps", "credit", "id", "max")

    def __init__(self, agent_id: str, caps: frozenset[str], max_tasks: int) -> None:
        self.id = agent_id
        self.caps = caps
        self.max = max_tasks
        self.credit = max_tasks

    def handle_task(self, payload: Any) -> Any:
        return payload


class _PlainCoordinator:
    """Registry indexed by capability, credit per agent, round robin, a FIFO queue: one thread, no actors."""

    def __init__(self) -> None:
        self.agents: dict[str, _PlainAgent] = {}
        self.by_cap: dict[str, set[str]] = {}
        self.ready: OrderedDict[str, _PlainAgent] = OrderedDict()  # agents with credit, round-robin order
        self.queue: deque[tuple[int, frozenset[str], Any]] = deque()
        self.results: dict[int, Any] = {}
        self.subscribers: list[Any] = []

    def register(self, agent: _PlainAgent) -> None:
        self.agents[agent.id] = agent
        for cap in agent.caps:
            self.by_cap.setdefault(cap, set()).add(agent.id)
        self.ready[agent.id] = agent

    def find(self, all_of: frozenset[str]) -> list[str]:
        sets = [self.by_cap.get(c, set()) for c in all_of]
        smallest = min(sets, key=len)
        return sorted(a for a in smallest if all_of <= self.agents[a].caps)

    def submit(self, task_id: int, requires: frozenset[str], payload: Any) -> None:
        for agent in self.ready.values():
            if requires <= agent.caps:
                self._run(agent, task_id, payload)
                return
        self.queue.append((task_id, requires, payload))

    def _run(self, agent: _PlainAgent, task_id: int, payload: Any) -> None:
        agent.credit -= 1
        del self.ready[agent.id]
        if agent.credit:
            self.ready[agent.id] = agent  # to the back: round robin
        self.results[task_id] = agent.handle_task(payload)
        agent.credit += 1
        self.ready.pop(agent.id, None)
        self.ready[agent.id] = agent
        if self.queue:
            task_id, requires, payload = self.queue.popleft()
            self.submit(task_id, requires, payload)

    def declare(self, agent_id: str, blocked: str | None) -> None:
        for subscriber in self.subscribers:
            subscriber((agent_id, blocked))


# -- the pykka way ---------------------------------------------------------------------------------


class _PykkaAgent(pykka.ThreadingActor):
    def __init__(self, coordinator: pykka.ActorRef[Any]) -> None:
        super().__init__()
        self.coordinator = coordinator

    def on_receive(self, message: Any) -> Any:
        task_id, payload = message
        self.coordinator.tell(("done", task_id, payload))
        return None


class _PykkaCoordinator(pykka.ThreadingActor):
    """A dict registry, round robin over capable agents, futures for results, a subscriber list."""

    def __init__(self) -> None:
        super().__init__()
        self.agents: dict[str, tuple[Any, frozenset[str]]] = {}
        self.rr = itertools.count()
        self.pending: dict[int, pykka.ThreadingFuture[Any]] = {}
        self.ids = itertools.count()
        self.subscribers: list[pykka.ActorRef[Any]] = []
        self.resources = {"gpu": 4, "llm-api": 100}
        self.leases: dict[int, dict[str, int]] = {}

    def on_receive(self, message: Any) -> Any:
        kind = message[0]
        if kind == "register":
            _, agent_id, ref, caps = message
            self.agents[agent_id] = (ref, caps)
            return None
        if kind == "find":
            caps = message[1]
            return sorted(a for a, (_, have) in self.agents.items() if caps <= have)
        if kind == "submit":
            _, requires, payload = message
            capable = [ref for ref, caps in self.agents.values() if requires <= caps]
            ref = capable[next(self.rr) % len(capable)]
            task_id = next(self.ids)
            future: pykka.ThreadingFuture[Any] = pykka.ThreadingFuture()
            self.pending[task_id] = future
            ref.tell((task_id, payload))
            return future
        if kind == "submit_told":  # the caller made the future and does not wait for the coordinator
            _, requires, payload, future = message
            capable = [ref for ref, caps in self.agents.values() if requires <= caps]
            ref = capable[next(self.rr) % len(capable)]
            task_id = next(self.ids)
            self.pending[task_id] = future
            ref.tell((task_id, payload))
            return None
        if kind == "done":
            self.pending.pop(message[1]).set(message[2])
            return None
        if kind == "declare":
            for sub in self.subscribers:
                sub.tell(message)
            return None
        if kind == "subscribe":
            self.subscribers.append(message[1])
            return None
        if kind == "acquire":
            bundle = message[1]
            if all(self.resources[k] >= v for k, v in bundle.items()):
                for k, v in bundle.items():
                    self.resources[k] -= v
                lease = next(self.ids)
                self.leases[lease] = bundle
                return lease
            return None
        if kind == "release":
            for k, v in self.leases.pop(message[1]).items():
                self.resources[k] += v
            return None
        msg = f"unknown {message!r}"
        raise ValueError(msg)


class _Signal(pykka.ThreadingActor):
    """A pykka subscriber that sets an event per message."""

    def __init__(self, event: threading.Event) -> None:
        super().__init__()
        self.event = event

    def on_receive(self, _message: Any) -> None:
        self.event.set()


# -- troupe ---------------------------------------------------------------------------------------------


class _Worker(Agent):
    agent_type = "w"
    # Beats are not what these cases measure: at 100,000 agents, a beat each every 30 s
    # would keep the dispatchers busy under the registration being timed.
    heartbeat_interval = 3600.0

    def handle_task(self, task: Task) -> Any:
        return task.payload

    def handle_message(self, _message: Any) -> Any:
        return None  # "ping": see _settle_spawned


class _Watcher(Actor):
    def __init__(self, event: threading.Event) -> None:
        super().__init__()
        self.event = event

    def on_receive(self, message: Any) -> None:
        if isinstance(message, RegistryEvent):
            self.event.set()


def _settle_spawned(refs: list[Any]) -> None:
    # Wait until every agent has run on_start (a timer each, perhaps a registration):
    # the dispatchers would otherwise compete with the measured thread.
    for ref in refs:
        ref.ask("ping", timeout=_WAIT_S)


# -- benchmark functions ------------------------------------------------------------------------------


def _freeze_setup() -> None:
    """Move everything the setup made out of the collector's sight, in every implementation alike.

    Profiled (issue 12): at 100,000 agents troupe's case holds 2.3M tracked
    objects (the agents spawned as setup; pykka's case spawns none, the floor's
    are 100,000 small objects), and the one full collection that the
    registrations' own allocations trigger walks them all: 1.7 s, 17 µs per
    registration, which is what made registration look 10x slower in the
    benchmark than quiet (the rest was load: wall time was 2-3x CPU time).
    The collection's cost belongs to the size of the heap, not to registering;
    an application with 100,000 live actors pays it whatever it does (and
    ``gc.freeze()`` after start-up is how one avoids it).
    """
    gc.collect()
    gc.freeze()


def registry(impl: str, *, n: int, queries: int = 2_000) -> dict[str, float]:
    """Register `n` agents, then time a capability query that matches 10 of them.

    Every implementation sends its registrations the same way, pipelined (told,
    then one ask that waits for them all), after `_freeze_setup`.
    """
    ids = [f"w/w{i}" for i in range(n)]
    caps = [_caps(i, n) for i in range(n)]
    query_caps = frozenset({"cap7", "common"})
    gc.collect()
    if impl == "floor":
        plain = _PlainCoordinator()
        agents = [_PlainAgent(ids[i], caps[i], 1) for i in range(n)]
        _freeze_setup()
        before = _rss_kb()
        start = time.perf_counter()
        for agent in agents:
            plain.register(agent)
        elapsed = time.perf_counter() - start
        kb = (_rss_kb() - before) / n
        start = time.perf_counter()
        for _ in range(queries):
            found = plain.find(query_caps)
        query_s = (time.perf_counter() - start) / queries
        _check(len(found) == _MATCHES, "the query matches 10 agents")
    elif impl == "pykka":
        coordinator = _PykkaCoordinator.start()
        try:
            _freeze_setup()
            before = _rss_kb()
            start = time.perf_counter()
            for i in range(n):
                coordinator.tell(("register", ids[i], None, caps[i]))  # no agent actors: n threads would not fit
            coordinator.ask(("find", query_caps), timeout=_WAIT_S)
            elapsed = time.perf_counter() - start
            kb = (_rss_kb() - before) / n
            rounds = max(3, min(queries, 200_000 // n))
            start = time.perf_counter()
            for _ in range(rounds):
                listed = cast("list[str]", coordinator.ask(("find", query_caps), timeout=_WAIT_S))
            query_s = (time.perf_counter() - start) / rounds
            _check(len(listed) == _MATCHES, "the query matches 10 agents")
        finally:
            coordinator.stop()
    else:
        with ActorSystem("bench-registry") as system:
            coordinator = system.spawn(Coordinator)
            refs = [system.spawn(_Worker, ids[i].partition("/")[2]) for i in range(n)]
            descriptors = [AgentDescriptor(AgentId.parse(ids[i]), caps[i]) for i in range(n)]
            _settle_spawned(refs)
            _freeze_setup()
            before = _rss_kb()
            start = time.perf_counter()
            for ref, descriptor in zip(refs, descriptors, strict=True):
                coordinator.tell(Register(ref, descriptor))
            registered = coordinator.ask(GetCoordinationStatistics()).agents
            elapsed = time.perf_counter() - start
            _check(registered == n, "every agent registered")
            kb = (_rss_kb() - before) / n
            query = FindAgents(all_of=query_caps)
            coordinator.ask(query)
            start = time.perf_counter()
            for _ in range(queries):
                found = coordinator.ask(query)
            query_s = (time.perf_counter() - start) / queries
            _check(len(found) == _MATCHES, "the query matches 10 agents")
    return {
        "register_s": elapsed,
        "register_us": elapsed / n * 1e6,
        "register_per_s": n / elapsed,
        "register_kb": kb,
        "query_us": query_s * 1e6,
    }


def tasks(
    impl: str,
    *,
    agents: int = 1_000,
    count: int = 20_000,
    window: int = 2_000,
    latency_samples: int = 2_000,
    told: bool = False,
) -> dict[str, float]:
    """Run `count` tasks end to end through a coordinator with `agents` agents; time closed-loop latency too.

    Submitted by ask (the coordinator answers the task's future), or with `told`
    by tell, carrying a future the caller made (troupe's `submit_task`; pykka's
    the same by hand): the caller never waits for the coordinator's turn. The
    floor's plain calls are the same either way.

    Every implementation is timed after `_freeze_setup`, as the other cases
    are: what the imports and the setup made (troupe's 1,000 agents hold
    ~19,000 tracked objects, pykka's ~46,000 with their threads, the floor's
    ~1,000) is then not walked by the collections that the tasks' own
    allocations trigger.
    """
    requires = frozenset({"work"})
    if impl == "floor":
        plain = _PlainCoordinator()
        for i in range(agents):
            plain.register(_PlainAgent(f"w/w{i}", requires, 1))
        _freeze_setup()
        start = time.perf_counter()
        for i in range(count):
            plain.submit(i, requires, i)
        elapsed = time.perf_counter() - start
        _check(len(plain.results) == count, "every task ran")
        latencies = []
        for i in range(latency_samples):
            t0 = time.perf_counter()
            plain.submit(count + i, requires, i)
            latencies.append(time.perf_counter() - t0)
    elif impl == "pykka":
        coordinator = _PykkaCoordinator.start()
        refs = [_PykkaAgent.start(coordinator) for _ in range(agents)]
        try:
            for i, ref in enumerate(refs):
                coordinator.tell(("register", f"w/w{i}", ref, requires))
            coordinator.ask(("find", requires), timeout=_WAIT_S)  # every registration handled
            _freeze_setup()

            def submit_pykka(i: int) -> Any:
                if not told:
                    return coordinator.ask(("submit", requires, i))
                future: pykka.ThreadingFuture[Any] = pykka.ThreadingFuture()
                coordinator.tell(("submit_told", requires, i, future))
                return future

            elapsed, latencies = _drive(submit_pykka, count, window, latency_samples)
        finally:
            for ref in refs:
                ref.stop(block=False)
            for ref in refs:
                ref.actor_stopped.wait(_WAIT_S)
            coordinator.stop()
    else:
        with ActorSystem("bench-tasks") as system:
            coordinator = system.spawn(Coordinator)
            refs = [
                system.spawn(_Worker, f"w{i}", capabilities=requires, coordinator=coordinator) for i in range(agents)
            ]
            _settle_spawned(refs)
            coordinator.ask(GetCoordinationStatistics())
            _freeze_setup()

            def submit(i: int) -> Any:
                if told:
                    return submit_task(coordinator, TaskSpec("echo", i, requires=requires)).future
                return coordinator.ask(Submit(TaskSpec("echo", i, requires=requires))).future

            elapsed, latencies = _drive(submit, count, window, latency_samples)
    latencies.sort()
    return {
        "tasks_per_s": count / elapsed,
        "task_p50_us": statistics.median(latencies) * 1e6,
        "task_p99_us": latencies[int(0.99 * (len(latencies) - 1))] * 1e6,
    }


def _drive(submit: Any, count: int, window: int, samples: int) -> tuple[float, list[float]]:
    """Keep `window` tasks in flight until `count` are done; then time `samples` one at a time."""
    inflight: deque[Any] = deque()
    start = time.perf_counter()
    for i in range(count):
        inflight.append(submit(i))
        if len(inflight) >= window:
            inflight.popleft().get(timeout=_WAIT_S)
    while inflight:
        inflight.popleft().get(timeout=_WAIT_S)
    elapsed = time.perf_counter() - start
    latencies = []
    for i in range(samples):
        t0 = time.perf_counter()
        _check(submit(i).get(timeout=_WAIT_S) == i, "the task echoes its payload")
        latencies.append(time.perf_counter() - t0)
    return elapsed, latencies


def status_stream(impl: str, *, changes: int = 5_000) -> dict[str, float]:
    """Time one status change, from the agent's declaration to a registry watcher."""
    event = threading.Event()
    if impl == "floor":
        plain = _PlainCoordinator()
        plain.subscribers.append(lambda _change: event.set())
        start = time.perf_counter()
        for i in range(changes):
            event.clear()
            plain.declare("w/w0", "busy" if i % 2 == 0 else None)
            _check(event.is_set(), "the subscriber was called")
        elapsed = time.perf_counter() - start
    elif impl == "pykka":
        coordinator = _PykkaCoordinator.start()
        signal = _Signal.start(event)
        try:
            coordinator.ask(("subscribe", signal))
            start = time.perf_counter()
            for i in range(changes):
                event.clear()
                coordinator.tell(("declare", "w/w0", "busy" if i % 2 == 0 else None))
                _check(event.wait(_WAIT_S), "the watcher got the change")
            elapsed = time.perf_counter() - start
        finally:
            signal.stop()
            coordinator.stop()
    else:
        with ActorSystem("bench-status") as system:
            coordinator = system.spawn(Coordinator)
            agent = system.spawn(_Worker, "w0")
            coordinator.ask(Register(agent, AgentDescriptor("w/w0")))
            watcher = system.spawn(_Watcher, event)
            coordinator.ask(WatchRegistry(watcher))
            agent_id = AgentId("w", "w0")
            start = time.perf_counter()
            for i in range(changes):
                event.clear()
                coordinator.tell(AgentDeclared(agent_id, blocked="busy" if i % 2 == 0 else None))
                _check(event.wait(_WAIT_S), "the watcher got the change")
            elapsed = time.perf_counter() - start
    return {"status_us": elapsed / changes * 1e6}


def resources(impl: str, *, ops: int = 50_000) -> dict[str, float]:
    """Request, grant and release a bundle, `ops` times, one at a time."""
    bundle = {"gpu": 1, "llm-api": 10}
    if impl == "floor":
        free = {"gpu": 4, "llm-api": 100}
        start = time.perf_counter()
        for _ in range(ops):
            if all(free[k] >= v for k, v in bundle.items()):
                for k, v in bundle.items():
                    free[k] -= v
            for k, v in bundle.items():
                free[k] += v
        elapsed = time.perf_counter() - start
    elif impl == "pykka":
        coordinator = _PykkaCoordinator.start()
        try:
            start = time.perf_counter()
            for _ in range(ops):
                lease = coordinator.ask(("acquire", bundle))
                coordinator.ask(("release", lease))
            elapsed = time.perf_counter() - start
        finally:
            coordinator.stop()
    else:
        with ActorSystem("bench-resources") as system:
            manager = system.spawn(ResourceManager, {"gpu": 4, "llm-api": 100})
            acquire = Acquire("bench", bundle)
            start = time.perf_counter()
            for _ in range(ops):
                lease = manager.ask(acquire).future.get(timeout=_WAIT_S)
                manager.ask(Release(lease.lease_id, "bench"))
            elapsed = time.perf_counter() - start
    return {"grants_per_s": ops / elapsed}


def services(
    impl: str,
    *,
    agents: int = 1_000,
    count: int = 20_000,
    window: int = 2_000,
    latency_samples: int = 2_000,
    changes: int = 5_000,
    ops: int = 50_000,
) -> dict[str, float]:
    """Tasks end to end (asked, then told), status to a watcher, resource grants: one process, one case each impl."""
    asked = tasks(impl, agents=agents, count=count, window=window, latency_samples=latency_samples)
    told = tasks(impl, agents=agents, count=count, window=window, latency_samples=latency_samples, told=True)
    return {
        **asked,
        **{f"told_{name}": value for name, value in told.items()},
        **status_stream(impl, changes=changes),
        **resources(impl, ops=ops),
    }


BENCHMARKS = (
    Benchmark(
        name="registry",
        func=registry,
        metrics=(
            Metric("register_s", "register N agents (s)"),
            Metric("register_us", "registration (µs/agent)"),
            Metric("register_per_s", "registrations/s", higher_is_better=True),
            Metric("register_kb", "registry memory (KB/agent)", better="less", worse="more"),
            Metric("query_us", "capability query matching 10 (µs)", plot=True),
        ),
        sizes=(10_000, 100_000),
        quick_sizes=(1_000,),
        quick_params={"queries": 200},
        impls=_IMPLS,
        budget_s=90.0,
        timeout_s=300.0,
        targets=(
            Target(
                "registration >= 100,000 agents/s at 100,000",
                "register_per_s",
                100_000,
                at_most=False,
                n=100_000,
                unit="/s",
            ),
            Target("capability query at 100,000 agents <= 50 µs", "query_us", 50, n=100_000, unit=" µs"),
        ),
    ),
    Benchmark(
        name="services",
        func=services,
        metrics=(
            Metric("tasks_per_s", "tasks end to end, 1,000 agents (tasks/s)", higher_is_better=True),
            Metric("task_p50_us", "one task, closed loop: median (µs)"),
            Metric("task_p99_us", "one task, closed loop: p99 (µs)"),
            Metric(
                "told_tasks_per_s", "tasks end to end, submitted by tell (submit_task) (tasks/s)", higher_is_better=True
            ),
            Metric("told_task_p50_us", "one task submitted by tell, closed loop: median (µs)"),
            Metric("told_task_p99_us", "one task submitted by tell, closed loop: p99 (µs)"),
            Metric("status_us", "status change to a watcher (µs)"),
            Metric("grants_per_s", "resource request + grant + release (ops/s)", higher_is_better=True),
        ),
        quick_params={
            "agents": 50,
            "count": 500,
            "window": 100,
            "latency_samples": 100,
            "changes": 200,
            "ops": 500,
        },
        impls=_IMPLS,
        budget_s=90.0,
        timeout_s=300.0,
        targets=(
            Target(">= 50,000 tasks/s end to end", "tasks_per_s", 50_000, at_most=False, unit="/s"),
            Target(">= 5x the pykka coordinator's tasks/s", "tasks_per_s", 5, at_most=False, relative=True),
            Target("resource grants >= 100,000/s", "grants_per_s", 100_000, at_most=False, unit="/s"),
        ),
    ),
)
"""The coordination benchmarks, in report order."""
