"""Supervision benchmarks: what a restart costs, what supervision adds to a tell, a big tree.

pykka has no supervision, so its figures are what a pykka user pays instead:
for a restart, starting a replacement actor and getting its first reply; for
the tree, 10,000 plain actors started and stopped. The supervised-tell
benchmark compares troupe with itself (supervised against unsupervised, same
mode), so it has no pykka column.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import pykka

from actors import Actor, ActorSystem, ChildSpec, SupervisionPolicy, Supervisor
from benchmarks._harness import Benchmark, Metric, Target
from benchmarks.runtime import Echo, PykkaEcho

__all__ = ["BENCHMARKS", "restart_latency", "supervised_tell", "tree"]

_WAIT_S = 600.0


class Fragile(Actor):
    """Echo, except ``"boom"`` raises."""

    def on_receive(self, message: Any) -> Any:
        if message == "boom":
            msg = "boom"
            raise RuntimeError(msg)
        return message


def restart_latency(impl: str, *, restarts: int) -> dict[str, float]:
    """Time from a failing tell to the first reply of the restarted instance."""
    samples = []
    if impl == "pykka":
        try:
            for _ in range(restarts):
                start = time.perf_counter_ns()
                ref = PykkaEcho.start()
                ref.ask(None, timeout=_WAIT_S)
                samples.append(time.perf_counter_ns() - start)
                ref.stop()
        finally:
            pykka.ActorRegistry.stop_all()
    else:
        policy = SupervisionPolicy(max_restarts=restarts + 1, within_seconds=3600)
        with ActorSystem(name="bench", root_policy=policy) as system:
            ref = system.spawn(Fragile, mode=impl, restart="permanent")
            ref.ask(None, timeout=_WAIT_S)
            for _ in range(restarts):
                start = time.perf_counter_ns()
                ref.tell("boom")
                ref.ask(None, timeout=_WAIT_S)
                samples.append(time.perf_counter_ns() - start)
    samples.sort()
    return {
        "restart_median_us": statistics.median(samples) / 1000,
        "restart_p99_us": samples[min(len(samples) - 1, int(len(samples) * 0.99))] / 1000,
    }


def _tell_rate(ref: pykka.ActorRef[Any], messages: int, rounds: int) -> float:
    rates = []
    send = ref.tell
    for _ in range(rounds):
        start = time.perf_counter()
        for i in range(messages):
            send(i)
        ref.ask(None, timeout=_WAIT_S)
        rates.append(messages / (time.perf_counter() - start))
    return statistics.median(rates)


def supervised_tell(impl: str, *, messages: int, rounds: int) -> dict[str, float]:
    """Tell throughput of a permanent child of a `Supervisor` against a plain temporary actor."""
    with ActorSystem(name="bench") as system:
        plain = system.spawn(Echo, mode=impl)
        sup = system.spawn(Supervisor, [ChildSpec(Echo, mode=impl)])
        [child] = sup.proxy().which_children().get(timeout=_WAIT_S)
        supervised = child.ref
        for ref in (plain, supervised):
            ref.ask(None, timeout=_WAIT_S)
        # Interleaved rounds, so both meet the same noise on the machine.
        plain_rates, supervised_rates = [], []
        for _ in range(rounds):
            plain_rates.append(_tell_rate(plain, messages, 1))
            supervised_rates.append(_tell_rate(supervised, messages, 1))
    plain_rate = statistics.median(plain_rates)
    supervised_rate = statistics.median(supervised_rates)
    return {
        "plain_tell_per_s": plain_rate,
        "supervised_tell_per_s": supervised_rate,
        "overhead_pct": (plain_rate / supervised_rate - 1) * 100,
    }


def tree(impl: str, *, n: int) -> dict[str, float]:
    """Start `n` supervised actors (a root supervisor over sqrt(n) supervisors), then shut down."""
    fanout = max(1, round(n**0.5))
    if impl == "pykka":
        try:
            start = time.perf_counter()
            refs = [PykkaEcho.start() for _ in range(n)]
            for future in [ref.ask(None, block=False) for ref in refs]:
                future.get(timeout=_WAIT_S)
            start_s = time.perf_counter() - start
            start = time.perf_counter()
            pykka.ActorRegistry.stop_all()
            stop_s = time.perf_counter() - start
        finally:
            pykka.ActorRegistry.stop_all()
        return {"tree_start_s": start_s, "tree_shutdown_s": stop_s}
    system = ActorSystem(name="bench")
    try:
        leaves = [ChildSpec(Echo, mode=impl) for _ in range(fanout)]
        middles = [ChildSpec(Supervisor, (leaves,)) for _ in range(-(-n // fanout))]
        start = time.perf_counter()
        root = system.spawn(Supervisor, middles)
        refs = [
            leaf.ref
            for middle in root.proxy().which_children().get(timeout=_WAIT_S)
            for leaf in middle.ref.proxy().which_children().get(timeout=_WAIT_S)
        ]
        for future in [ref.ask(None, block=False) for ref in refs]:
            future.get(timeout=_WAIT_S)
        start_s = time.perf_counter() - start
        start = time.perf_counter()
    finally:
        system.shutdown()
    return {"tree_start_s": start_s, "tree_shutdown_s": time.perf_counter() - start}


BENCHMARKS = (
    Benchmark(
        name="restart",
        func=restart_latency,
        metrics=(
            Metric("restart_median_us", "restart, failure to first reply, median (µs; pykka: start a new one)"),
            Metric("restart_p99_us", "restart p99 (µs)"),
        ),
        params={"restarts": 2_000},
        quick_params={"restarts": 50},
    ),
    Benchmark(
        name="supervised_tell",
        func=supervised_tell,
        metrics=(
            Metric("plain_tell_per_s", "tell, unsupervised actor (msg/s)", higher_is_better=True),
            Metric("supervised_tell_per_s", "tell, supervised actor (msg/s)", higher_is_better=True),
            Metric("overhead_pct", "supervision overhead on tell (%)", better="less", worse="more"),
        ),
        params={"messages": 100_000, "rounds": 7},
        quick_params={"messages": 5_000, "rounds": 1},
        impls=("thread", "pooled"),
        targets=(Target("supervised tell overhead <= 10%", "overhead_pct", 10.0, unit="%"),),
    ),
    Benchmark(
        name="tree",
        func=tree,
        metrics=(
            Metric("tree_start_s", "supervision tree: start N and get a reply from each (s)", plot=True),
            Metric("tree_shutdown_s", "supervision tree: shutdown (s)", plot=True),
        ),
        sizes=(1_000, 10_000),
        quick_sizes=(100,),
        # pykka's and thread mode's 10,000 threads took 31 s of CPU each in a default run: --full runs them.
        default_sizes=(1_000, 10_000),
        default_max_n={"pykka": 1_000, "thread": 1_000},
        budget_s=60.0,
    ),
)
"""The supervision benchmarks, in report order."""
