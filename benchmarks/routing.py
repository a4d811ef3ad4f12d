"""Routing benchmarks: what a router adds to a tell, and what a pool delivers.

Each function runs in its own subprocess (see `benchmarks._harness`) for one
implementation:

- ``pykka``: plain `pykka.ThreadingActor`s. pykka has no router, so its
  "routed" figure is what a pykka user writes: a router actor that forwards
  each message to the next routee (two mailbox hops); its "pool" is a
  hand-made round robin over N ThreadingActors, on the sender's thread;
- ``thread`` / ``pooled``: troupe's `Router` and `Pool`, with routees in
  that execution mode.

`pool_throughput` runs the same tasks through a `Pool` of N routees
(round robin, ``max_concurrent=8``, overflow queued) and through the pykka
round robin: CPU-light tasks (the pool's own cost) and tasks that sleep
(`time.sleep`, a blocking wait: what thread mode is for; in pooled mode a
sleeping handler holds one of the CPU-count dispatcher threads). The
``pooled-blocking`` column is the fix for that: pooled routees on a
dispatcher group of their own (``ActorSystem(dispatchers={"default": <CPU
count>, "blocking": 32})``, `BlockingWorker.dispatcher`), Akka's dedicated
dispatcher.

`routed_tell` measures direct and routed tells in the same process, in
alternating rounds, so the ratio compares figures taken a few milliseconds
apart; ``router_overhead`` is direct throughput over routed throughput (the
target is <= 1.5).
"""

from __future__ import annotations

import itertools
import statistics
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pykka

from actors import Actor, ActorSystem, AwaitStarted, ChildSpec, Pool, PoolConfig, Router
from benchmarks._harness import Benchmark, Metric, Target

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

__all__ = ["BENCHMARKS", "pool_throughput", "routed_tell"]

_WAIT_S = 600.0
"""Timeout of the waits that end a measurement: generous, they only guard against hangs."""


class Echo(Actor):
    """Reply with the message (troupe, mode chosen at spawn)."""

    def on_receive(self, message: Any) -> Any:
        return message


class PykkaEcho(pykka.ThreadingActor):
    """Reply with the message (plain pykka)."""

    def on_receive(self, message: Any) -> Any:
        return message


class PykkaForwarder(pykka.ThreadingActor):
    """A hand-made pykka router: forward each tell to the next routee in turn."""

    def __init__(self, routees: list[pykka.ActorRef[Any]]) -> None:
        super().__init__()
        self.routees = routees
        self.turn = itertools.count()

    def on_receive(self, message: Any) -> None:
        self.routees[next(self.turn) % len(self.routees)].tell(message)


@contextmanager
def _targets(impl: str, routees: int) -> Iterator[tuple[list[pykka.ActorRef[Any]], pykka.ActorRef[Any]]]:
    """Yield (routees, router over them) for `impl`; stop everything on exit."""
    if impl == "pykka":
        try:
            refs = [PykkaEcho.start() for _ in range(routees)]
            yield refs, PykkaForwarder.start(refs)
        finally:
            pykka.ActorRegistry.stop_all()
    else:
        with ActorSystem(name="bench") as system:
            refs = [system.spawn(Echo, mode=impl) for _ in range(routees)]
            yield refs, system.spawn(Router, refs)


def _rate(send: Callable[[Any], None], messages: int, drain: Callable[[], None]) -> float:
    start = time.perf_counter()
    for i in range(messages):
        send(i)
    drain()
    return messages / (time.perf_counter() - start)


def routed_tell(impl: str, *, messages: int, rounds: int) -> dict[str, float]:
    """Tell throughput straight to actors and through a round-robin router, in alternating rounds.

    One routee: direct tells to the actor against tells through a router in
    front of it (the router's own cost). Four routees: a hand-written round
    robin over the refs on the sender's thread against the router.
    """
    figures: dict[str, float] = {}
    for routees, label in ((1, ""), (4, "4")):
        with _targets(impl, routees) as (refs, router):

            def drain(refs: list[pykka.ActorRef[Any]] = refs, router: pykka.ActorRef[Any] = router) -> None:
                if impl == "pykka":
                    router.ask(None, timeout=_WAIT_S)  # the forwarder has passed everything on
                for ref in refs:
                    ref.ask(None, timeout=_WAIT_S)  # mailboxes are FIFO: these replies come last

            if routees == 1:
                direct = refs[0].tell
            else:
                turn = itertools.count().__next__
                tells = [ref.tell for ref in refs]

                def direct(message: Any, turn: Callable[[], int] = turn, tells: list[Any] = tells) -> None:
                    tells[turn() % 4](message)

            drain()  # everything is up before the clock starts
            direct_rates, routed_rates = [], []
            for _ in range(rounds):
                direct_rates.append(_rate(direct, messages, drain))
                routed_rates.append(_rate(router.tell, messages, drain))
            figures[f"direct{label}_tell_per_s"] = statistics.median(direct_rates)
            figures[f"routed{label}_tell_per_s"] = statistics.median(routed_rates)
            figures[f"router{label}_overhead"] = statistics.median(
                d / r for d, r in zip(direct_rates, routed_rates, strict=True)
            )
    return figures


_LIGHT_WORK = 50
"""Iterations of the CPU-light task: ~1 µs of Python, about the cost of a message."""


def _task(message: tuple[str, float]) -> int:
    kind, seconds = message
    if kind == "wait":
        time.sleep(seconds)
        return 0
    return sum(range(_LIGHT_WORK))


class Worker(Actor):
    """Run a task: ``("light", 0)`` computes a little, ``("wait", s)`` sleeps s seconds."""

    def on_receive(self, message: tuple[str, float]) -> int:
        return _task(message)


class BlockingWorker(Worker):
    """A `Worker` on the ``"blocking"`` dispatcher group."""

    dispatcher = "blocking"


_BLOCKING_GROUP = 32
"""Threads of the ``"blocking"`` group in ``pooled-blocking``: as many as routees x ``max_concurrent`` need."""

_POOL_IMPLS = ("pykka", "thread", "pooled", "pooled-blocking")


class PykkaWorker(pykka.ThreadingActor):
    """The same task in a plain pykka actor."""

    def on_receive(self, message: tuple[str, float]) -> int:
        return _task(message)


@contextmanager
def _pool(impl: str, n: int) -> Iterator[Callable[[Any], pykka.Future[Any]]]:
    """Yield a function that sends one task (an ask) and returns its future; stop everything on exit."""
    if impl == "pykka":
        try:
            refs = [PykkaWorker.start() for _ in range(n)]
            turn = itertools.count().__next__
            yield lambda task: refs[turn() % n].ask(task, block=False)
        finally:
            pykka.ActorRegistry.stop_all()
    else:
        config = PoolConfig(
            min_size=n, max_size=n, max_concurrent=8, strategy="round_robin", overflow="queue", queue_capacity=10**6
        )
        blocking = impl == "pooled-blocking"
        groups = {"blocking": _BLOCKING_GROUP} if blocking else None
        with ActorSystem(name="bench", dispatchers=groups) as system:
            spec = ChildSpec(BlockingWorker, mode="pooled") if blocking else ChildSpec(Worker, mode=impl)
            pool = system.spawn(Pool, spec, config=config)
            pool.ask(AwaitStarted(), timeout=_WAIT_S)
            yield lambda task: pool.ask(task, block=False)


def _throughput(send: Callable[[Any], pykka.Future[Any]], task: tuple[str, float], count: int) -> float:
    start = time.perf_counter()
    futures = [send(task) for _ in range(count)]
    for future in futures:
        future.get(timeout=_WAIT_S)
    return count / (time.perf_counter() - start)


def pool_throughput(impl: str, *, n: int, light_tasks: int, wait_tasks: int, wait_s: float) -> dict[str, float]:
    """Tasks per second through N routees: `light_tasks` CPU-light ones, then `wait_tasks` that sleep `wait_s`.

    Every task is an ask sent at once (``block=False``); the clock stops when
    the last reply is in. The median of three rounds counts for light tasks.
    """
    with _pool(impl, n) as send:
        _throughput(send, ("light", 0.0), max(1, light_tasks // 10))  # warm-up
        light = statistics.median(_throughput(send, ("light", 0.0), light_tasks) for _ in range(3))
        wait = _throughput(send, ("wait", wait_s), wait_tasks)
    return {"light_tasks_per_s": light, "wait_tasks_per_s": wait}


BENCHMARKS = (
    Benchmark(
        name="routed_tell",
        func=routed_tell,
        metrics=(
            Metric("direct_tell_per_s", "direct tell, one actor (msg/s)", higher_is_better=True),
            Metric("routed_tell_per_s", "routed tell, router + one routee (msg/s)", higher_is_better=True),
            Metric("router_overhead", "router overhead, one routee (direct / routed)"),
            Metric("direct4_tell_per_s", "hand round robin over 4 actors (msg/s)", higher_is_better=True),
            Metric("routed4_tell_per_s", "routed tell, router + 4 routees (msg/s)", higher_is_better=True),
            Metric("router4_overhead", "router overhead, 4 routees (hand / routed)"),
        ),
        params={"messages": 100_000, "rounds": 7},
        quick_params={"messages": 5_000, "rounds": 1},
        default_params={"messages": 50_000, "rounds": 3},  # pykka's four rows took minutes of a loaded default run
        targets=(
            Target("router overhead <= 1.5x direct tell", "router_overhead", 1.5, unit="x"),
            Target("router overhead <= 1.5x direct tell (thread)", "router_overhead", 1.5, impl="thread", unit="x"),
        ),
    ),
    Benchmark(
        name="pool",
        func=pool_throughput,
        metrics=(
            Metric("light_tasks_per_s", "pool, CPU-light tasks (tasks/s)", higher_is_better=True, plot=True),
            Metric("wait_tasks_per_s", "pool, tasks sleeping 2 ms (tasks/s)", higher_is_better=True, plot=True),
        ),
        params={"light_tasks": 20_000, "wait_tasks": 1_000, "wait_s": 0.002},
        quick_params={"light_tasks": 500, "wait_tasks": 40, "wait_s": 0.002},
        sizes=(1, 2, 4, 8, 16),
        quick_sizes=(1, 4),
        impls=_POOL_IMPLS,
        # The smoke run stays as it was (the quick suite is near its time limit on a loaded machine).
        quick_impls=("pykka", "thread", "pooled"),
    ),
)
"""The routing benchmarks, in report order."""
