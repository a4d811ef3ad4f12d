"""Asyncio-mode benchmarks: IO-bound agents, and what a message costs on an event loop.

Implementations (one subprocess each, see `benchmarks._harness`):

- ``pykka``: plain `pykka.ThreadingActor`, the baseline (one thread per actor);
- ``pooled``: troupe's pooled mode, the mode asyncio is compared with;
- ``asyncio``: troupe's asyncio mode on the system's own loop thread, the
  caller on another thread (or on a loop of its own);
- ``asyncio-same-loop``: the same, the system given the caller's running
  loop (``ActorSystem(loop=...)``): no thread hop at all;
- ``autogen``: autogen-core's `SingleThreadedAgentRuntime` (optional
  dependency: ``pip install troupe-actors[bench]``; skipped when missing).

IO agents: each of N agents handles one request whose handler waits 100 ms
of simulated IO (``asyncio.sleep`` in a coroutine; ``time.sleep`` in a pykka
thread, which is what a thread-per-actor agent does with blocking IO). The
figure is the wall time from the first request sent to the last reply: with
overlapping waits it stays near 0.1 s. Spawning is timed apart (autogen
creates its agents on their first message, inside the timed part).

Ask and tell: an echo actor; asyncio actors echo from an ``async def``
handler (a task per message: the cost a coroutine handler carries). Asks
are awaited from a coroutine (``await ref.ask(msg, block=False)``); pykka's
future blocks the loop while it waits, which in a one-coroutine loop only
costs nothing else.
"""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from typing import TYPE_CHECKING, Any

import pykka

from actors import Actor, ActorSystem
from benchmarks._harness import Benchmark, Headline, Metric, Target
from benchmarks.runtime import Echo, PykkaEcho

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

__all__ = [
    "BENCHMARKS",
    "AsyncEcho",
    "IOAgent",
    "PykkaIOAgent",
    "coroutine_ask",
    "coroutine_ask_vs_pykka",
    "io_agents",
    "tell",
]

_WAIT_S = 600.0
"""Timeout of the waits that end a measurement: generous, they only guard against hangs."""

_IO_S = 0.1
"""Simulated IO per request, seconds."""


class IOAgent(Actor):
    """Awaits 100 ms of simulated IO per request (a mode-neutral class with a coroutine: asyncio mode)."""

    async def on_receive(self, message: Any) -> Any:
        await asyncio.sleep(_IO_S)
        return message


class PykkaIOAgent(pykka.ThreadingActor):
    """Blocks its thread for 100 ms of simulated IO per request (plain pykka)."""

    def on_receive(self, message: Any) -> Any:
        time.sleep(_IO_S)
        return message


class AsyncEcho(Actor):
    """Reply with the message from a coroutine handler."""

    async def on_receive(self, message: Any) -> Any:
        return message


def io_agents(impl: str, *, n: int) -> dict[str, float]:
    """Spawn `n` agents, send each one request that waits 100 ms of IO, time until every reply."""
    clock = time.perf_counter
    if impl == "autogen":
        from benchmarks._autogen_agents import run_io_agents  # the optional dependency

        spawn_s, all_s = asyncio.run(run_io_agents(n, _IO_S, clock))
    elif impl == "pykka":
        try:
            start = clock()
            refs = [PykkaIOAgent.start() for _ in range(n)]
            spawn_s = clock() - start
            all_s = _ask_all(refs, clock)
        finally:
            pykka.ActorRegistry.stop_all()
    else:
        with ActorSystem(name="bench") as system:
            start = clock()
            refs = [system.spawn(IOAgent, mode="asyncio") for _ in range(n)]
            spawn_s = clock() - start
            all_s = _ask_all(refs, clock)
    return {"all_done_s": all_s, "spawn_s": spawn_s, "overlap": n * _IO_S / all_s}


def _ask_all(refs: list[Any], clock: Callable[[], float]) -> float:
    start = clock()
    futures = [ref.ask(i, block=False) for i, ref in enumerate(refs)]
    replies = [future.get(timeout=_WAIT_S) for future in futures]
    elapsed = clock() - start
    if replies != list(range(len(refs))):
        msg = f"the IO agents replied {replies!r}, not each its own request number"
        raise RuntimeError(msg)
    return elapsed


def _with_actor(impl: str, body: Callable[[Any], Coroutine[Any, Any, dict[str, float]]]) -> dict[str, float]:
    """Run ``body(ref)`` in a coroutine on a fresh loop, against one echo actor of `impl`."""
    if impl == "pykka":
        try:
            return asyncio.run(body(PykkaEcho.start()))
        finally:
            pykka.ActorRegistry.stop_all()
    if impl == "pooled":
        with ActorSystem(name="bench") as system:
            return asyncio.run(body(system.spawn(Echo, mode="pooled")))
    if impl == "asyncio":
        with ActorSystem(name="bench") as system:
            return asyncio.run(body(system.spawn(AsyncEcho)))

    async def on_the_same_loop() -> dict[str, float]:
        async with ActorSystem(name="bench", loop=asyncio.get_running_loop()) as system:
            return await body(system.spawn(AsyncEcho))

    return asyncio.run(on_the_same_loop())


def coroutine_ask(impl: str, *, asks: int) -> dict[str, float]:
    """Time `asks` awaited asks (``await ref.ask(i, block=False)``) from a coroutine."""

    async def body(ref: Any) -> dict[str, float]:
        clock = time.perf_counter_ns
        ask = ref.ask
        for i in range(max(1, asks // 10)):  # warm-up
            await ask(i, block=False)
        samples = [0] * asks
        for i in range(asks):
            start = clock()
            await ask(i, block=False)
            samples[i] = clock() - start
        samples.sort()
        return {
            "coro_ask_median_us": statistics.median(samples) / 1000,
            "coro_ask_p99_us": samples[min(asks - 1, int(asks * 0.99))] / 1000,
        }

    return _with_actor(impl, body)


def coroutine_ask_vs_pykka(impl: str, *, asks: int, block: int) -> dict[str, float]:
    """Awaited asks to a troupe actor of `impl` against pykka's blocking ask, interleaved in one process.

    Issue 16 §3: ``await ref.ask(i, block=False)`` from a coroutine on the
    caller's own loop, the actor on another thread (a pooled or thread actor,
    or an asyncio actor on the system's loop thread), against pykka's
    blocking ``ref.ask(i)`` made from the same coroutine. The two alternate
    in blocks of `block` asks, so a noisy neighbour on the machine hits both
    alike; the figure that counts is the ratio of the medians.

    A third block, interleaved the same way, times the floor of a round trip
    between two loops with no troupe code: the coroutine hands a plain
    asyncio loop on another thread a callback (``call_soon_threadsafe``),
    which answers the same way; each leg is a self-pipe write, a selector
    return and a read. What an awaited ask costs beyond that floor is
    troupe's (the asyncio actor's loop parks on a lock instead, and the
    asker spins for the reply: it can read below the floor).
    """
    clock = time.perf_counter_ns

    async def body(ref: Any, pykka_ref: Any, other: asyncio.AbstractEventLoop) -> dict[str, float]:
        ours: list[int] = []
        theirs: list[int] = []
        floor: list[int] = []
        ask, blocking_ask = ref.ask, pykka_ref.ask
        here = asyncio.get_running_loop()

        async def round_trip() -> None:
            reply = here.create_future()
            other.call_soon_threadsafe(_answer_from_another_loop, here, reply)
            await reply

        for i in range(max(1, asks // 10)):  # warm-up
            await ask(i, block=False)
            blocking_ask(i)
            await round_trip()
        for _ in range(max(1, asks // block)):
            for i in range(block):
                start = clock()
                await ask(i, block=False)
                ours.append(clock() - start)
            for i in range(block):
                start = clock()
                blocking_ask(i)
                theirs.append(clock() - start)
            for _ in range(block):
                start = clock()
                await round_trip()
                floor.append(clock() - start)
        troupe_us = statistics.median(ours) / 1000
        pykka_us = statistics.median(theirs) / 1000
        floor_us = statistics.median(floor) / 1000
        return {
            "troupe_us": troupe_us,
            "pykka_us": pykka_us,
            "ratio": troupe_us / pykka_us,
            "floor_us": floor_us,
            "vs_floor": troupe_us / floor_us,
        }

    other = asyncio.new_event_loop()
    serving = threading.Thread(target=other.run_forever, name="bench-floor-loop")
    serving.start()
    try:
        with ActorSystem(name="bench") as system:
            actor = system.spawn(AsyncEcho) if impl == "asyncio" else system.spawn(Echo, mode=impl)
            return asyncio.run(body(actor, PykkaEcho.start(), other))
    finally:
        pykka.ActorRegistry.stop_all()
        other.call_soon_threadsafe(other.stop)
        serving.join()
        other.close()


def _answer_from_another_loop(loop: asyncio.AbstractEventLoop, reply: asyncio.Future[None]) -> None:
    loop.call_soon_threadsafe(reply.set_result, None)


def tell(impl: str, *, messages: int, rounds: int) -> dict[str, float]:
    """Send `messages` tells from a coroutine, then await one ask so all were handled; median of `rounds`."""

    async def body(ref: Any) -> dict[str, float]:
        await ref.ask(None, block=False)  # the actor is up before the clock starts
        send = ref.tell
        rates = []
        for _ in range(rounds):
            start = time.perf_counter()
            for i in range(messages):
                send(i)
            await ref.ask(None, block=False)  # mailboxes are FIFO: this reply comes last
            rates.append(messages / (time.perf_counter() - start))
        return {"tell_per_s": statistics.median(rates)}

    return _with_actor(impl, body)


_ECHO_IMPLS = ("pykka", "pooled", "asyncio", "asyncio-same-loop")

BENCHMARKS = (
    Benchmark(
        name="io_agents",
        func=io_agents,
        metrics=(
            Metric("all_done_s", "N agents, one request each awaiting 100 ms of IO: until every reply (s)", plot=True),
            Metric("overlap", "waits overlapped (N x 0.1 s / wall time)", higher_is_better=True, better="more"),
            Metric("spawn_s", "spawn N agents (s; autogen: registration, agents made on first message)"),
        ),
        sizes=(1_000, 10_000),
        quick_sizes=(100,),
        impls=("pykka", "asyncio", "autogen"),
        max_n={"pykka": 10_000},
        requires={"autogen": "autogen_core"},
        targets=(Target("10,000 IO agents in < 1 s", "all_done_s", 1.0, n=10_000, unit="s", impl="asyncio"),),
        # pykka's ratio at 1,000: its 10,000 threads took 77 s of a loaded default run.
        default_sizes=(1_000, 10_000),
        default_max_n={"pykka": 1_000},
    ),
    Benchmark(
        name="coro_ask",
        func=coroutine_ask,
        metrics=(
            Metric("coro_ask_median_us", "await ask from a coroutine, median (µs)"),
            Metric("coro_ask_p99_us", "await ask from a coroutine, p99 (µs)"),
        ),
        params={"asks": 20_000},
        quick_params={"asks": 1_000},
        impls=_ECHO_IMPLS,
        headlines=(Headline("coro_ask_median_us", impl="asyncio"),),
    ),
    Benchmark(
        name="coro_ask_vs_pykka",
        func=coroutine_ask_vs_pykka,
        metrics=(
            Metric("troupe_us", "await ask from a coroutine, actor on another thread, median (µs)"),
            Metric("pykka_us", "pykka's blocking ask from the same coroutine, interleaved, median (µs)"),
            Metric("ratio", "await ask / pykka's blocking ask (same process)"),
            Metric("floor_us", "floor: round trip between two plain asyncio loops, interleaved, median (µs)"),
            Metric("vs_floor", "await ask / the two-loop floor (same process)"),
        ),
        params={"asks": 20_000, "block": 200},
        quick_params={"asks": 500, "block": 100},
        impls=("pooled", "thread", "asyncio"),
        quick_impls=("pooled", "asyncio"),
        targets=(
            Target("awaited ask to an asyncio actor <= pykka's blocking ask", "ratio", 1.0, impl="asyncio"),
            Target("awaited ask to a pooled actor <= pykka's blocking ask", "ratio", 1.0, impl="pooled"),
        ),
    ),
    Benchmark(
        name="coro_tell",
        func=tell,
        metrics=(Metric("tell_per_s", "tell throughput from a coroutine, one actor (msg/s)", higher_is_better=True),),
        params={"messages": 100_000, "rounds": 5},
        quick_params={"messages": 5_000, "rounds": 1},
        impls=_ECHO_IMPLS,
    ),
)
"""The asyncio-mode benchmarks, in report order."""
