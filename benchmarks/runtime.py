"""Runtime benchmarks: the cost of a message, of an actor, and of a hundred thousand.

Each function below runs in its own subprocess (see `benchmarks._harness`)
for one implementation:

- ``pykka``: plain `pykka.ThreadingActor`, the baseline;
- ``thread``: troupe's thread mode (one OS thread per actor, as pykka);
- ``pooled``: troupe's pooled mode (actors share the dispatcher threads).

The actors echo their message, the cheapest handler there is, so the figures
are the runtime's own cost. Calls are made as a user would make them: a
blocking ``ref.ask(msg)`` on an idle pooled actor runs the handler on the
asking thread by design; ``ask(msg, timeout=...)`` never does, so the ask
benchmark reports both.
"""

from __future__ import annotations

import functools
import gc
import statistics
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import psutil
import pykka

from actors import Actor, ActorSystem
from benchmarks._harness import Benchmark, Headline, Metric, Target

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

__all__ = ["BENCHMARKS", "Echo", "PykkaEcho", "ask", "million", "shutdown", "spawn_ask_stop", "stop_each", "tell"]

_WAIT_S = 600.0
"""Timeout of the waits that end a measurement: generous, they only guard against hangs."""

_SIZES = (1_000, 10_000, 100_000)
_QUICK_SIZES = (100, 1_000)

# One OS thread per actor stops scaling between 10,000 and 20,000 actors: on
# 2 CPUs, 20,000 pykka actors take ~30 s to spawn and ~40 s for one round of
# asks, where 10,000 take ~6 s and ~2 s.
_THREAD_PER_ACTOR_CAP = {"pykka": 10_000, "thread": 10_000}

_HEADLINE_PLACEMENTS = ("unpinned", "pinned")
"""These are the headline rows: a default run measures them in both placements."""


class Echo(Actor):
    """Reply with the message (troupe, mode chosen at spawn)."""

    def on_receive(self, message: Any) -> Any:
        return message


class PykkaEcho(pykka.ThreadingActor):
    """Reply with the message (plain pykka, the baseline)."""

    def on_receive(self, message: Any) -> Any:
        return message


@contextmanager
def _spawner(impl: str) -> Iterator[Callable[[], pykka.ActorRef[Any]]]:
    """Yield a function that starts one echo actor of `impl`; stop them all on exit."""
    if impl == "pykka":
        try:
            yield PykkaEcho.start
        finally:
            pykka.ActorRegistry.stop_all()
    else:
        with ActorSystem(name="bench") as system:
            yield functools.partial(system.spawn, Echo, mode=impl)


def _rss_bytes() -> int:
    # Collect first: garbage awaiting the cycle collector would count as actors.
    gc.collect()
    return int(psutil.Process().memory_info().rss)


def tell(impl: str, *, messages: int, rounds: int) -> dict[str, float]:
    """Send `messages` tells to one actor, then one ask to wait until all were handled.

    Repeated `rounds` times; the median round counts, so that one round that
    met a noisy neighbour on the machine does not set the figure.
    """
    rates = []
    with _spawner(impl) as spawn:
        ref = spawn()
        ref.ask(None, timeout=_WAIT_S)  # the actor is up before the clock starts
        send = ref.tell
        for _ in range(rounds):
            start = time.perf_counter()
            for i in range(messages):
                send(i)
            ref.ask(None, timeout=_WAIT_S)  # mailboxes are FIFO: this reply comes last
            rates.append(messages / (time.perf_counter() - start))
    return {"tell_per_s": statistics.median(rates)}


def _ask_latencies_us(ask: Callable[[int], Any], count: int) -> list[float]:
    clock = time.perf_counter_ns
    samples = [0] * count
    for i in range(count):
        start = clock()
        ask(i)
        samples[i] = clock() - start
    samples.sort()
    return [sample / 1000 for sample in samples]


def ask(impl: str, *, asks: int, idle_s: float = 1.0) -> dict[str, float]:
    """Time `asks` blocking asks from the main thread, plain and with a timeout; then the idle CPU.

    Idle CPU is the process's CPU time over `idle_s` seconds of wall time
    after the asks, with the actor still up and nothing to do (after a short
    settle, so a dispatcher's last spin is not counted): what the runtime
    burns when idle (pooled dispatchers spin briefly after a timed ask, then
    block).
    """
    with _spawner(impl) as spawn:
        ref = spawn()
        # A timeout keeps a pooled ask off the inline path: the handler runs on a dispatcher.
        via_dispatcher = functools.partial(ref.ask, timeout=_WAIT_S)
        figures = {}
        for prefix, call in (("ask", ref.ask), ("ask_timeout", via_dispatcher)):
            _ask_latencies_us(call, max(1, asks // 10))  # warm-up
            samples = _ask_latencies_us(call, asks)
            figures[f"{prefix}_median_us"] = statistics.median(samples)
            figures[f"{prefix}_p99_us"] = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
        time.sleep(0.1)  # noqa: TID251 - a settle, not a sync: the last spin of a dispatcher ends well within it
        cpu, wall = time.process_time(), time.perf_counter()
        time.sleep(idle_s)  # noqa: TID251 - the idle window measured
        figures["idle_cpu_ms_per_s"] = (time.process_time() - cpu) / (time.perf_counter() - wall) * 1000
    return figures


def spawn_ask_stop(impl: str, *, n: int) -> dict[str, float]:
    """Spawn `n` actors, ask each once and wait for every reply, then stop each ref.

    Spawn time and RSS come first, from this fresh process. RSS per actor is
    the growth of the process over the spawn, so it includes the refs the
    caller holds, as a user's program would.
    """
    with _spawner(impl) as spawn:
        rss_before = _rss_bytes()
        start = time.perf_counter()
        refs = [spawn() for _ in range(n)]
        spawn_s = time.perf_counter() - start
        rss_after = _rss_bytes()

        start = time.perf_counter()
        futures = [ref.ask(i, block=False) for i, ref in enumerate(refs)]
        for future in futures:
            future.get(timeout=_WAIT_S)
        ask_all_s = time.perf_counter() - start

        start = time.perf_counter()
        futures = [ref.stop(block=False) for ref in refs]
        for future in futures:
            future.get(timeout=_WAIT_S)
        stop_s = time.perf_counter() - start
    return {
        "spawn_s": spawn_s,
        "spawn_us_per_actor": spawn_s / n * 1e6,
        "rss_kb_per_actor": (rss_after - rss_before) / n / 1024,
        "ask_all_s": ask_all_s,
        "stop_s": stop_s,
    }


def shutdown(impl: str, *, n: int) -> dict[str, float]:
    """Spawn `n` actors, ask each once, then time stopping everything at once.

    troupe: ``system.shutdown()``; pykka has no system, so its figure is
    ``ActorRegistry.stop_all()``, its way to stop every actor.
    """
    if impl == "pykka":
        try:
            _ask_all([PykkaEcho.start() for _ in range(n)])
            start = time.perf_counter()
            pykka.ActorRegistry.stop_all()
            elapsed = time.perf_counter() - start
        finally:
            pykka.ActorRegistry.stop_all()
    else:
        with ActorSystem(name="bench") as system:
            _ask_all([system.spawn(Echo, mode=impl) for _ in range(n)])
            start = time.perf_counter()
            system.shutdown()
            elapsed = time.perf_counter() - start
    return {"shutdown_s": elapsed}


def stop_each(impl: str, *, n: int) -> dict[str, float]:
    """Spawn `n` actors, ask each once, then stop them one blocking ``ref.stop()`` at a time (issue 16 §4).

    Each stop returns once its actor has terminated, so this is `n` stops in
    a row, not one pass over all of them (`shutdown`) nor `n` stops in flight
    at once (the ``actors`` benchmark's ``stop_s``).
    """
    with _spawner(impl) as spawn:
        refs = [spawn() for _ in range(n)]
        _ask_all(refs)
        start = time.perf_counter()
        for ref in refs:
            ref.stop()
        elapsed = time.perf_counter() - start
    return {"stop_each_s": elapsed, "stop_each_us_per_actor": elapsed / n * 1e6}


def million(impl: str, *, n: int, bulk: bool = True) -> dict[str, float]:
    """Spawn `n` pooled actors in one process, ask each once, then shut the system down.

    Issue 16 §2's bar at a million: spawn in <= 10 s at <= 1 KB of RSS each,
    the asks answered in <= 5 s, ``shutdown()`` in <= 5 s. With `bulk` the
    actors are spawned with one ``system.spawn_many`` (the bulk path, which
    pauses the garbage collector while it runs), else one ``spawn`` at a
    time (the ``actors`` case has that at 100,000). RSS per actor is
    measured after the spawn (idle actors) and again after the asks (each
    mailbox has held one message: still no deque, see `LazyFifo`).
    """
    with ActorSystem(name="bench") as system:
        rss_before = _rss_bytes()
        start = time.perf_counter()
        if bulk:
            refs = system.spawn_many(Echo, n, mode=impl)
        else:
            spawn = functools.partial(system.spawn, Echo, mode=impl)
            refs = [spawn() for _ in range(n)]
        spawn_s = time.perf_counter() - start
        rss_spawned = _rss_bytes()

        start = time.perf_counter()
        futures = [ref.ask(i, block=False) for i, ref in enumerate(refs)]
        for future in futures:
            future.get(timeout=_WAIT_S)
        ask_all_s = time.perf_counter() - start
        del futures
        rss_asked = _rss_bytes()

        start = time.perf_counter()
        system.shutdown()
        shutdown_s = time.perf_counter() - start
    return {
        "spawn_s": spawn_s,
        "rss_kb_per_actor": (rss_spawned - rss_before) / n / 1024,
        "ask_all_s": ask_all_s,
        "rss_kb_per_asked_actor": (rss_asked - rss_before) / n / 1024,
        "shutdown_s": shutdown_s,
    }


def _ask_all(refs: list[pykka.ActorRef[Any]]) -> None:
    # Every actor has handled a message: shutdown then stops actors that have run.
    for future in [ref.ask(None, block=False) for ref in refs]:
        future.get(timeout=_WAIT_S)


BENCHMARKS = (
    Benchmark(
        name="tell",
        func=tell,
        metrics=(Metric("tell_per_s", "tell throughput, one actor (msg/s)", higher_is_better=True),),
        params={"messages": 100_000, "rounds": 5},
        quick_params={"messages": 5_000, "rounds": 1},
        targets=(Target("tell >= 5x pykka", "tell_per_s", 5.0, at_most=False, relative=True),),
        default_placements=_HEADLINE_PLACEMENTS,
        headlines=(Headline("tell_per_s", impl="thread"),),
    ),
    Benchmark(
        name="ask",
        func=ask,
        metrics=(
            Metric("ask_median_us", "ask latency median (µs)"),
            Metric("ask_p99_us", "ask latency p99 (µs)"),
            Metric("ask_timeout_median_us", "ask(timeout=) median (µs), pooled via dispatcher"),
            Metric("ask_timeout_p99_us", "ask(timeout=) p99 (µs), pooled via dispatcher"),
            Metric("idle_cpu_ms_per_s", "idle CPU after the asks (ms per s)", better="less", worse="more"),
        ),
        params={"asks": 20_000},
        quick_params={"asks": 1_000, "idle_s": 0.05},
        targets=(
            Target("ask median <= 1/2 of pykka's", "ask_median_us", 0.5, relative=True),
            Target("ask(timeout=) median <= 1/3 of pykka's", "ask_timeout_median_us", 1 / 3, relative=True),
        ),
        default_placements=_HEADLINE_PLACEMENTS,
        headlines=(Headline("ask_median_us", impl="thread"),),
    ),
    Benchmark(
        name="actors",
        func=spawn_ask_stop,
        metrics=(
            Metric("spawn_s", "spawn N actors (s)", plot=True),
            Metric("spawn_us_per_actor", "spawn (µs/actor)"),
            Metric("rss_kb_per_actor", "RSS (KB/actor)", better="less", worse="more", plot=True),
            Metric("ask_all_s", "ask-all: one ask to each, wait for all (s)", plot=True),
            Metric("stop_s", "stop all: stop(block=False) each, wait all (s)", plot=True),
        ),
        sizes=_SIZES,
        quick_sizes=_QUICK_SIZES,
        max_n=_THREAD_PER_ACTOR_CAP,
        targets=(
            Target("spawn 100,000 in <= 3 s", "spawn_s", 3.0, n=100_000, unit="s"),
            Target("<= 3 KB RSS per actor at 100,000", "rss_kb_per_actor", 3.0, n=100_000, unit="KB"),
            Target("ask-all over 100,000 in <= 1 s", "ask_all_s", 1.0, n=100_000, unit="s"),
            Target("stop(block=False) each of 100,000, wait for all, <= 1 s", "stop_s", 1.0, n=100_000, unit="s"),
        ),
        # 10,000: the largest N pykka runs at (thread mode against it is issue 16's first row).
        default_sizes=(10_000, 100_000),
        default_placements=_HEADLINE_PLACEMENTS,
        timeout_s=300.0,  # pykka's 10,000 threads took over 120 s on the shared machine at a load of 100-200
        headlines=(
            Headline("spawn_s", n=10_000),
            Headline("spawn_s", impl="thread", n=10_000),
            Headline("ask_all_s", impl="thread", n=10_000),
            Headline("stop_s", impl="thread", n=10_000),
        ),
    ),
    Benchmark(
        name="shutdown",
        func=shutdown,
        metrics=(Metric("shutdown_s", "stop all: system.shutdown() (s; pykka: stop_all)", plot=True),),
        sizes=_SIZES,
        quick_sizes=_QUICK_SIZES,
        max_n=_THREAD_PER_ACTOR_CAP,
        targets=(Target("shutdown of 100,000 in <= 1 s", "shutdown_s", 1.0, n=100_000, unit="s"),),
        # pykka's side at 1,000: at 10,000 its spawn alone takes most of a case's time.
        default_sizes=(1_000, 100_000),
        default_placements=_HEADLINE_PLACEMENTS,
        headlines=(Headline("shutdown_s", n=1_000),),
    ),
    Benchmark(
        name="stop_each",
        func=stop_each,
        metrics=(
            Metric("stop_each_s", "stop each: one blocking ref.stop() at a time (s)", plot=True),
            Metric("stop_each_us_per_actor", "stop each (µs/actor)"),
        ),
        sizes=_SIZES,
        quick_sizes=_QUICK_SIZES,
        max_n=_THREAD_PER_ACTOR_CAP,
        targets=(
            Target(
                "stop each of 100,000, one ref.stop() at a time, in <= 1 s", "stop_each_s", 1.0, n=100_000, unit="s"
            ),
        ),
        default_sizes=(1_000, 100_000),
        default_placements=_HEADLINE_PLACEMENTS,
    ),
    Benchmark(
        name="million",
        func=million,
        metrics=(
            Metric("spawn_s", "spawn N pooled actors, one spawn_many (s)"),
            Metric("rss_kb_per_actor", "RSS after spawn (KB/actor)", better="less", worse="more"),
            Metric("ask_all_s", "ask-all: one ask to each, wait for all (s)"),
            Metric("rss_kb_per_asked_actor", "RSS after ask-all (KB/actor)", better="less", worse="more"),
            Metric("shutdown_s", "system.shutdown() (s)"),
        ),
        # One size, pooled only: a thread per actor cannot reach it (see
        # `_THREAD_PER_ACTOR_CAP`). A --quick run measures 1,000 as a smoke test.
        sizes=(1_000_000,),
        quick_sizes=(1_000,),
        impls=("pooled",),
        timeout_s=300.0,
        targets=(
            Target("spawn 1,000,000 in <= 10 s", "spawn_s", 10.0, n=1_000_000, unit="s"),
            Target("<= 1 KB RSS per actor at 1,000,000", "rss_kb_per_actor", 1.0, n=1_000_000, unit="KB"),
            Target("ask-all over 1,000,000 in <= 5 s", "ask_all_s", 5.0, n=1_000_000, unit="s"),
            Target("shutdown of 1,000,000 in <= 5 s", "shutdown_s", 5.0, n=1_000_000, unit="s"),
        ),
    ),
)
"""The runtime benchmarks, in report order."""
