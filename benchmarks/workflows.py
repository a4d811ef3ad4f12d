"""Workflow and coordination-pattern benchmarks: DAG engine overhead, pipeline throughput and memory, votes.

DAG overhead (``dag``): N no-op tasks that combine their
inputs, as N independent tasks (wide) or one chain (deep). Per-task time of
the whole execution, definition excluded. Implementations:

- ``pykka``: the same dependency-driven scheduling on plain pykka: a
  coordinator ThreadingActor hands each ready task to a worker
  ThreadingActor and starts dependants as replies come back;
- ``troupe``: `WorkflowOrchestrator`, callables on its pool of pooled workers
  (two hand-offs per task: to a worker and back);
- ``inline``: `WorkflowOrchestrator` with ``inline=True`` tasks: the engine's
  own bookkeeping, no hand-off;
- ``langgraph``: LangGraph's `StateGraph` (optional: ``pip install
  troupe-actors[bench]``; skipped when missing), one node per task;
- ``taskgroup``: `asyncio.TaskGroup`, each task a coroutine awaiting its
  dependencies' tasks.

Every case also measures, in its own process, the floor: the same tasks
called in a plain loop in topological order (``floor_us``), and reports its
own figure as a multiple of it (``x_floor``).

Pipeline: N items through 4 stages that each add one, against a chain of 4
pykka ThreadingActors that each tell the next (unbounded mailboxes). Memory:
the same with 4 KB payloads and a slow last stage (0.2 ms per item): pykka's
chain queues everything in front of the slow stage; the troupe pipeline holds
at most the sum of its buffers. The pipeline's stages reply to asks and its
credit callbacks move each item on; the pykka chain is tells only, with no
bound, no order kept across parallel stages and no error channel.

Consensus: one vote among N voter actors (yes from two of three), until the
result, with the early decision on (threshold 0.5 over votes cast) and off
(threshold 1.0 over eligible, so every ballot is needed).
"""

from __future__ import annotations

import asyncio
import gc
import graphlib
import threading
import time
from typing import Annotated, Any, TypedDict

import psutil
import pykka

from actors import Actor, ActorSystem
from benchmarks._harness import Benchmark, Headline, Metric, Target
from patterns.consensus import consensus_vote
from patterns.orchestrator import WorkflowClient, WorkflowOrchestrator
from patterns.pipeline import Stage, pipeline
from patterns.workflow import RunTask, Task, Workflow

__all__ = ["BENCHMARKS", "consensus", "dag", "pipeline_memory", "pipeline_throughput"]

_WAIT_S = 600.0


# -- DAGs ---------------------------------------------------------------------------------------------


def _deps(n: int, shape: str) -> dict[str, tuple[str, ...]]:
    if shape == "wide":
        return {f"t{i}": () for i in range(n)}
    return {f"t{i}": ((f"t{i - 1}",) if i else ()) for i in range(n)}


def _combine(task_id: str, inputs: dict[str, int]) -> int:
    return len(task_id) + sum(inputs.values())


def _floor_s(deps: dict[str, tuple[str, ...]]) -> float:
    start = time.perf_counter()
    results: dict[str, int] = {}
    for task_id in graphlib.TopologicalSorter(deps).static_order():
        results[task_id] = _combine(task_id, {d: results[d] for d in deps[task_id]})
    return time.perf_counter() - start


def _taskgroup_s(deps: dict[str, tuple[str, ...]]) -> float:
    async def main() -> None:
        tasks: dict[str, asyncio.Task[int]] = {}

        async def node(task_id: str) -> int:
            inputs = {d: await tasks[d] for d in deps[task_id]}
            return _combine(task_id, inputs)

        async with asyncio.TaskGroup() as group:
            for task_id in graphlib.TopologicalSorter(deps).static_order():
                tasks[task_id] = group.create_task(node(task_id))

    start = time.perf_counter()
    asyncio.run(main())
    return time.perf_counter() - start


class _PykkaWorker(pykka.ThreadingActor):
    def on_receive(self, message: Any) -> None:
        task_id, inputs, reply_to = message  # pykka futures have no callbacks: the worker tells back
        reply_to.tell((task_id, _combine(task_id, inputs)))


class _PykkaCoordinator(pykka.ThreadingActor):
    """Dependency-driven scheduling on plain pykka: ready tasks go to the worker; replies start dependants."""

    def __init__(self, deps: dict[str, tuple[str, ...]], worker: pykka.ActorRef[Any], done: threading.Event) -> None:
        super().__init__()
        self.deps = deps
        self.worker = worker
        self.done = done
        self.waiting = {t: len(d) for t, d in deps.items()}
        self.dependants: dict[str, list[str]] = {t: [] for t in deps}
        for task_id, ds in deps.items():
            for d in ds:
                self.dependants[d].append(task_id)
        self.results: dict[str, int] = {}

    def on_start(self) -> None:
        for task_id, count in self.waiting.items():
            if count == 0:
                self._send(task_id)

    def _send(self, task_id: str) -> None:
        inputs = {d: self.results[d] for d in self.deps[task_id]}
        self.worker.tell((task_id, inputs, self.actor_ref))

    def on_receive(self, message: Any) -> None:
        task_id, value = message
        self.results[task_id] = value
        for dependant in self.dependants[task_id]:
            self.waiting[dependant] -= 1
            if self.waiting[dependant] == 0:
                self._send(dependant)
        if len(self.results) == len(self.deps):
            self.done.set()


def _pykka_s(deps: dict[str, tuple[str, ...]]) -> float:
    done = threading.Event()
    try:
        worker = _PykkaWorker.start()
        start = time.perf_counter()
        _PykkaCoordinator.start(deps, worker, done)
        if not done.wait(_WAIT_S):
            msg = f"the pykka DAG did not finish within {_WAIT_S} s"
            raise RuntimeError(msg)
        return time.perf_counter() - start
    finally:
        pykka.ActorRegistry.stop_all()


def _troupe_s(deps: dict[str, tuple[str, ...]], *, inline: bool) -> float:
    def run(request: RunTask) -> int:
        return _combine(request.task_id, dict(request.inputs))

    with ActorSystem("bench") as system:
        client = WorkflowClient(system.spawn(WorkflowOrchestrator, workers=2, worker_mode="pooled"), timeout=_WAIT_S)
        client.define(Workflow("dag", [Task(t, run, depends_on=d, inline=inline) for t, d in deps.items()]))
        start = time.perf_counter()
        execution_id = client.execute("dag")
        status = client.wait_for_completion(execution_id, timeout=_WAIT_S)
        elapsed = time.perf_counter() - start
        if status.state.value != "succeeded":
            msg = f"the DAG execution ended {status.state.value}"
            raise RuntimeError(msg)
    return elapsed


def _merge(left: dict[str, int], right: dict[str, int]) -> dict[str, int]:
    left.update(right)  # in place: a copying reducer would make the chain quadratic
    return left


class _GraphState(TypedDict):
    results: Annotated[dict[str, int], _merge]


def _langgraph_s(deps: dict[str, tuple[str, ...]], shape: str) -> float:
    from langgraph.graph import END, START, StateGraph

    def node(task_id: str) -> Any:
        def run(state: _GraphState) -> dict[str, dict[str, int]]:
            results = state["results"]
            return {"results": {task_id: _combine(task_id, {d: results[d] for d in deps[task_id]})}}

        return run

    graph = StateGraph(_GraphState)
    for task_id in deps:
        graph.add_node(task_id, node(task_id))
    for task_id, ds in deps.items():
        if not ds:
            graph.add_edge(START, task_id)
        for d in ds:
            graph.add_edge(d, task_id)
    leaves = set(deps) - {d for ds in deps.values() for d in ds}
    for leaf in leaves:
        graph.add_edge(leaf, END)
    app = graph.compile()
    start = time.perf_counter()
    out = app.invoke({"results": {}}, {"recursion_limit": len(deps) + 10})
    elapsed = time.perf_counter() - start
    if len(out["results"]) != len(deps):
        msg = f"LangGraph ran {len(out['results'])} of {len(deps)} nodes ({shape})"
        raise RuntimeError(msg)
    return elapsed


def dag(impl: str, *, n: int) -> dict[str, float]:
    """Run `n` no-op tasks as a wide and as a deep DAG; per-task time, and its multiple of the plain-loop floor."""
    metrics = {}
    for shape in ("wide", "deep"):
        deps = _deps(n, shape)
        floor = min(_floor_s(deps) for _ in range(3))
        if impl == "taskgroup":
            elapsed = _taskgroup_s(deps)
        elif impl == "pykka":
            elapsed = _pykka_s(deps)
        elif impl == "langgraph":
            elapsed = _langgraph_s(deps, shape)
        else:
            elapsed = _troupe_s(deps, inline=impl == "inline")
        metrics[f"{shape}_per_task_us"] = elapsed / n * 1e6
        metrics[f"{shape}_floor_us"] = floor / n * 1e6
        metrics[f"{shape}_x_floor"] = elapsed / floor
    return metrics


# -- pipelines --------------------------------------------------------------------------------------


class _Stage(Stage):
    """A `Stage`: items arrive by tell, in batches, with credit (the tell hand-off)."""

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__()
        self.delay = delay

    def process(self, item: Any) -> Any:
        if self.delay:
            time.sleep(self.delay)  # the simulated slow stage
        return item + 1 if isinstance(item, int) else item


class _AskedStage(Actor):
    """A plain actor: each item is asked (the ask hand-off, for any actor, a Pool included)."""

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__()
        self.delay = delay

    def on_receive(self, message: Any) -> Any:
        if self.delay:
            time.sleep(self.delay)
        return message + 1 if isinstance(message, int) else message


class _PykkaStage(pykka.ThreadingActor):
    def __init__(self, following: pykka.ActorRef[Any] | None, sink: Any, delay: float = 0.0) -> None:
        super().__init__()
        self.following = following
        self.sink = sink
        self.delay = delay

    def on_receive(self, message: Any) -> None:
        if self.delay:
            time.sleep(self.delay)
        out = message + 1 if isinstance(message, int) else message
        if self.following is not None:
            self.following.tell(out)
        else:
            self.sink(out)


def _pykka_chain(items: Any, n: int, delays: list[float], sample: Any = None) -> tuple[float, int]:
    """Tell every item to a chain of pykka actors; return (seconds, most items in the chain at once)."""
    done = threading.Event()
    count = [0]
    held = [0]

    def sink(_value: Any) -> None:
        count[0] += 1
        if count[0] == n:
            done.set()

    try:
        following = None
        for delay in reversed(delays):
            following = _PykkaStage.start(following, sink, delay)
        first = following
        if first is None:
            msg = "a pipeline needs at least one stage"
            raise ValueError(msg)
        start = time.perf_counter()
        for i, item in enumerate(items):
            first.tell(item)
            if i % 256 == 0:
                held[0] = max(held[0], i + 1 - count[0])
                if sample is not None:
                    sample()
        while not done.wait(0.05):
            if sample is not None:
                sample()
        return time.perf_counter() - start, held[0]
    finally:
        pykka.ActorRegistry.stop_all()


def _troupe_pipeline(impl: str, items: Any, delays: list[float], buffer: int, sample: Any = None) -> tuple[float, int]:
    count = [0]

    def sink(_value: Any) -> None:
        count[0] += 1
        if sample is not None and count[0] % 256 == 0:
            sample()

    with ActorSystem("bench") as system:
        mode = impl if impl in ("thread", "pooled") else "pooled"
        cls = _AskedStage if impl == "ask" else _Stage
        stages = [system.spawn(cls, d, mode="thread" if d else mode) for d in delays]
        start = time.perf_counter()
        result = pipeline(stages, items, buffer=buffer, sink=sink).get(timeout=_WAIT_S)
        elapsed = time.perf_counter() - start
    return elapsed, result.high_water


def pipeline_throughput(impl: str, *, items: int, buffer: int) -> dict[str, float]:
    """Push `items` integers through 4 stages; items per second."""
    if impl == "pykka":
        elapsed, _ = _pykka_chain(range(items), items, [0.0] * 4)
    else:
        elapsed, _ = _troupe_pipeline(impl, range(items), [0.0] * 4, buffer)
    return {"items_per_s": items / elapsed}


def pipeline_memory(impl: str, *, items: int, buffer: int, delay: float) -> dict[str, float]:
    """4 KB payloads through 4 stages, the last one slow; the RSS the run adds at its peak."""
    process = psutil.Process()
    gc.collect()
    base = process.memory_info().rss
    peak = [base]

    def sample() -> None:
        peak[0] = max(peak[0], process.memory_info().rss)

    payloads = (bytes(4096) + i.to_bytes(4, "little") for i in range(items))
    delays = [0.0, 0.0, 0.0, delay]
    if impl == "pykka":
        elapsed, held = _pykka_chain(payloads, items, delays, sample)
    else:
        elapsed, held = _troupe_pipeline(impl, payloads, delays, buffer, sample)
    sample()
    return {"peak_growth_mb": (peak[0] - base) / 2**20, "items_held_max": held, "memory_items_per_s": items / elapsed}


# -- consensus --------------------------------------------------------------------------------------


class _Voter(Actor):
    def __init__(self, *, ballot: bool) -> None:
        super().__init__()
        self.ballot = ballot

    def on_receive(self, _message: Any) -> bool:
        return self.ballot


class _PykkaVoter(pykka.ThreadingActor):
    def __init__(self, *, ballot: bool) -> None:
        super().__init__()
        self.ballot = ballot

    def on_receive(self, _message: Any) -> bool:
        return self.ballot


def consensus(impl: str, *, n: int, rounds: int) -> dict[str, float]:
    """One vote among `n` voters: ms to the result, early decision on and off (pykka: ask all, count)."""
    early, full = [], []
    if impl == "pykka":
        try:
            refs = [_PykkaVoter.start(ballot=i % 3 != 0) for i in range(n)]
            for _ in range(rounds):
                start = time.perf_counter()
                ballots = pykka.get_all([r.ask("q", block=False) for r in refs], timeout=_WAIT_S)
                if sum(ballots) * 2 < n:  # the same outcome as the troupe vote's
                    msg = "the pykka vote came out wrong"
                    raise RuntimeError(msg)
                full.append(time.perf_counter() - start)
            early = full
        finally:
            pykka.ActorRegistry.stop_all()
    else:
        with ActorSystem("bench") as system:
            voters = {f"v{i}": system.spawn(_Voter, ballot=i % 3 != 0, mode=impl) for i in range(n)}
            for _ in range(rounds):
                start = time.perf_counter()
                result = consensus_vote(voters, "q", threshold=0.5, basis="cast").get(timeout=_WAIT_S)
                early.append(time.perf_counter() - start)
                if not result.approved:
                    msg = f"the vote came out wrong: {result}"
                    raise RuntimeError(msg)
                start = time.perf_counter()
                result = consensus_vote(voters, "q", threshold=1.0, basis="eligible").get(timeout=_WAIT_S)
                full.append(time.perf_counter() - start)
                if not result.decided:
                    msg = f"the vote did not end: {result}"
                    raise RuntimeError(msg)
    return {"vote_early_ms": min(early) * 1e3, "vote_all_ms": min(full) * 1e3}


def _dag_metrics(shape: str) -> tuple[Metric, ...]:
    return (
        Metric(f"{shape}_per_task_us", f"{shape} DAG: per-task time (µs)"),
        Metric(f"{shape}_floor_us", f"{shape} DAG: plain topological loop, same process (µs/task)"),
        Metric(f"{shape}_x_floor", f"{shape} DAG: multiple of the plain loop (x)", better="less", worse="more"),
    )


_DAG_IMPLS = ("pykka", "troupe", "inline", "langgraph", "taskgroup")

BENCHMARKS = (
    Benchmark(
        name="dag",
        func=dag,
        metrics=(*_dag_metrics("wide"), *_dag_metrics("deep")),
        sizes=(1_000, 10_000),
        quick_sizes=(200,),
        impls=_DAG_IMPLS,
        requires={"langgraph": "langgraph"},
        # LangGraph's 10,000-task DAGs take ~80 s (7 ms a task deep): a default run compares at 1,000.
        default_sizes=(1_000, 10_000),
        default_max_n={"langgraph": 1_000},
        headlines=(
            Headline("wide_per_task_us", impl="troupe", n=1_000),
            Headline("deep_per_task_us", impl="troupe", n=1_000),
        ),
        budget_s=240.0,
        timeout_s=600.0,
        targets=(
            Target("wide DAG per task <= 10x the plain loop", "wide_x_floor", 10.0, n=10_000, impl="troupe"),
            Target("deep DAG per task <= 10x the plain loop", "deep_x_floor", 10.0, n=10_000, impl="troupe"),
        ),
    ),
    Benchmark(
        name="pipeline",
        func=pipeline_throughput,
        metrics=(Metric("items_per_s", "4-stage pipeline (items/s)", higher_is_better=True),),
        params={"items": 20_000, "buffer": 64},
        quick_params={"items": 500, "buffer": 16},
        impls=("pykka", "thread", "pooled", "ask"),
        quick_impls=("pykka", "thread", "pooled"),  # the ask hand-off only in full runs: keep --quick short
        targets=(Target("pipeline >= 5x the pykka chain", "items_per_s", 5.0, at_most=False, relative=True),),
    ),
    Benchmark(
        name="pipeline_memory",
        func=pipeline_memory,
        metrics=(
            Metric("peak_growth_mb", "4 KB items, slow last stage: peak RSS growth (MB)", better="less", worse="more"),
            Metric("items_held_max", "items in the pipeline at once, at most", better="less", worse="more"),
            Metric("memory_items_per_s", "items/s with the slow stage", higher_is_better=True),
        ),
        params={"items": 10_000, "buffer": 16, "delay": 0.0002},
        quick_params={"items": 300, "buffer": 8, "delay": 0.0002},
        impls=("pykka", "pooled", "ask"),
        quick_impls=("pykka", "pooled"),
        timeout_s=300.0,
    ),
    Benchmark(
        name="consensus",
        func=consensus,
        metrics=(
            Metric("vote_early_ms", "vote, early decision (ms; pykka: ask all, count)"),
            Metric("vote_all_ms", "vote, every ballot needed (ms)"),
        ),
        params={"rounds": 3},
        quick_params={"rounds": 1},
        sizes=(100, 10_000),
        quick_sizes=(100,),
        impls=("pykka", "thread", "pooled"),
        max_n={"pykka": 1_000, "thread": 1_000},
    ),
)
"""The workflow and pattern benchmarks, in report order."""
