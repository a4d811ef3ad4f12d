"""Cluster benchmarks: cross-node tells and asks, failure detection, migration, a node's footprint.

Implementations (one subprocess each, see `benchmarks._harness`):

- ``pykka``: the same workload in one process, plain `pykka.ThreadingActor`s
  (the floor a cluster is measured against);
- ``ray-naive``: one Ray call per message between two Ray actors (the design
  the issue rules out);
- ``memory``: troupe's cluster on `MemoryTransport` (two nodes in this process,
  real clock, the same link layer as on Ray);
- ``ray``: troupe's cluster on `RayTransport`, on a ``ray.cluster_utils.Cluster``
  with one Ray node per troupe node and tuned health checks.

A ``--quick`` run measures only ``pykka`` and ``memory`` (a Ray cluster takes
10-20 s to start here); ``python -m benchmarks --full --only cluster`` measures all four.
The seed's example flow runs as ``python -m benchmarks.cluster``; one case alone
(no harness, no ``ray-naive``, which takes ~2 min) as ``python -m benchmarks.cluster
IMPL BENCHMARK [ROUNDS]``, e.g. ``python -m benchmarks.cluster ray messaging 3``:
it prints the case's figures, once per round, with the load average.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pykka

from actors import Actor
from benchmarks._harness import Benchmark, Metric, Target

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

__all__ = ["BENCHMARKS", "messaging", "nodes", "run_case", "seed_flow"]

_RAY_ENV = {
    "RAY_AUTH_MODE": "disabled",
    "RAY_health_check_period_ms": "500",
    "RAY_health_check_failure_threshold": "3",
    "RAY_health_check_timeout_ms": "500",
    "RAY_health_check_initial_delay_ms": "1000",
    "RAY_USAGE_STATS_ENABLED": "0",
}


# -- the actors (module level: they pickle by reference into Ray workers) -----------------


class Counter(Actor):
    """Counts messages; notes `time.perf_counter()` when the `expect`-th arrives."""

    def __init__(self, expect: int) -> None:
        super().__init__()
        self.expect = expect
        self.count = 0
        self.done_at = 0.0

    def on_receive(self, message: Any) -> Any:
        if message == "done_at":
            return self.done_at if self.count >= self.expect else None
        self.count += 1
        if self.count == self.expect:
            self.done_at = time.perf_counter()
        return None


class Pusher(Actor):
    """``("push", ref, n)``: tell `ref` n messages, return the start time; ``("ping", ref, k)``: k ask latencies.

    ``"ping"`` asks with a timeout; ``"ping_untimed"`` without one, as the ``pykka`` baseline
    does (on the memory transport such an ask may run on the asker's thread: `Node.send_ask`).
    """

    def on_receive(self, message: Any) -> Any:
        kind, ref, n = message
        if kind == "push":
            start = time.perf_counter()
            for i in range(n):
                ref.tell(i)
            return start
        latencies = []
        timeout = None if kind == "ping_untimed" else 30
        for i in range(n):
            t0 = time.perf_counter()
            ref.ask(i, timeout=timeout)
            latencies.append(time.perf_counter() - t0)
        return latencies


class Echo(Actor):
    def on_receive(self, message: Any) -> Any:
        return message


class Blob(Actor):
    """`size` bytes of state, made by ``"fill"`` (not the constructor, which a migration runs again on the target)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size
        self.state = b""

    def on_receive(self, message: Any) -> Any:
        if message == "fill":
            self.state = os.urandom(self.size)
        return len(self.state)

    def snapshot(self) -> bytes:
        return self.state

    def restore(self, state: bytes) -> None:
        self.state = state


class _BarePeer:
    """Bare Ray: one of two Ray actors set up as a troupe node's (data in the default group, a control group).

    `oneway` is an ask made the way troupe's data path makes one (a one-way
    call there, a one-way call back: ``ping`` and ``pong``); `roundtrip` is
    one call whose return value is the answer (the way an exchange carries a
    reply). Both from the control group, so the default group is free for
    ``pong``; the answer wakes the asking thread, as a troupe reply does.
    """

    def __init__(self) -> None:
        self.other: Any = None
        self.answered = threading.Event()

    def set_other(self, other: Any) -> None:
        self.other = other

    def ping(self, payload: bytes) -> None:
        self.other.pong.remote(payload)

    def pong(self, _payload: bytes) -> None:
        self.answered.set()

    def echo(self, payload: bytes) -> bytes:
        return payload

    def oneway(self, asks: int) -> list[float]:
        payload, out = b"x" * 200, []
        for _ in range(asks):
            self.answered.clear()
            t0 = time.perf_counter()
            self.other.ping.remote(payload)
            self.answered.wait()
            out.append(time.perf_counter() - t0)
        return out

    def roundtrip(self, asks: int) -> list[float]:
        payload, out = b"x" * 200, []
        for _ in range(asks):
            self.answered.clear()
            t0 = time.perf_counter()
            self.other.echo.remote(payload).future().add_done_callback(lambda _f: self.answered.set())
            self.answered.wait()
            out.append(time.perf_counter() - t0)
        return out


class _PykkaCounter(pykka.ThreadingActor):
    def __init__(self, expect: int) -> None:
        super().__init__()
        self.expect, self.count, self.done = expect, 0, threading.Event()

    def on_receive(self, message: Any) -> Any:
        if message == "echo":
            return message
        self.count += 1
        if self.count == self.expect:
            self.done.set()
        return None


# -- helpers -----------------------------------------------------------------------------


@contextmanager
def _ray_cluster(workers: int) -> Iterator[tuple[Any, list[Any]]]:
    tmp = tempfile.mkdtemp(prefix="troupe-bench-ray-")
    os.environ.update(_RAY_ENV)
    os.environ["RAY_TMPDIR"] = tmp
    import ray
    from ray.cluster_utils import Cluster as RayCluster

    cluster = RayCluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        nodes = [cluster.add_node(num_cpus=1) for _ in range(workers)]
        ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
        yield cluster, nodes
    finally:
        ray.shutdown()
        cluster.shutdown()
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


def _summary(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "ask_median_us": statistics.median(ordered) * 1e6,
        "ask_p99_us": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e6,
    }


def _untimed(latencies: list[float]) -> dict[str, float]:
    """The median of asks made without a timeout (``pykka``'s and bare Ray's asks are)."""
    return {"untimed_ask_median_us": statistics.median(latencies) * 1e6}


def _poll(read: Any, timeout: float = 120.0) -> float:
    """Return `read()` once it is positive, reading every 5 ms."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while (value := read()) <= 0:
        if time.monotonic() > deadline:
            msg = "benchmark wait timed out"
            raise TimeoutError(msg)
        pause.wait(0.005)
    return float(value)


_BLOCKS = 5
"""With a bare-Ray baseline, the asks are made in this many blocks, alternating with the baseline's."""


def _troupe_messaging(
    cluster: Any, messages: int, asks: int, bare: Callable[[str, int], list[float]] | None = None
) -> dict[str, float]:
    counter = cluster.spawn(Counter, messages, node="b", name="counter")
    pusher = cluster.spawn(Pusher, node="a", name="pusher")
    echo = cluster.spawn(Echo, node="b", name="echo")
    pusher.ask(("ping", echo, 20), timeout=60)  # warm up both directions
    start = pusher.ask(("push", counter, messages), timeout=120)
    done_at = _poll(lambda: counter.ask("done_at", timeout=60) or 0.0)
    tell_per_s = messages / (done_at - start)
    if bare is None:
        latencies = pusher.ask(("ping", echo, asks), timeout=300)
        untimed = _untimed(pusher.ask(("ping_untimed", echo, asks), timeout=300))  # after: the timed ones as before
        return {"tell_per_s": tell_per_s, **_summary(latencies), **untimed}
    # Troupe's asks and bare Ray's, in alternating blocks between the same two Ray nodes: the same load.
    latencies, oneway, roundtrip = [], [], []
    for _ in range(_BLOCKS):
        latencies += pusher.ask(("ping", echo, asks // _BLOCKS), timeout=300)
        oneway += bare("oneway", asks // _BLOCKS)
        roundtrip += bare("roundtrip", asks // _BLOCKS)
    untimed = _untimed(pusher.ask(("ping_untimed", echo, asks), timeout=300))
    figures = {"tell_per_s": tell_per_s, **_summary(latencies), **untimed}
    for name, values in (("ray_oneway", oneway), ("ray_roundtrip", roundtrip)):
        figures.update({key.replace("ask", name): value for key, value in _summary(values).items()})
    return figures


def _bare_pair(ray_nodes: list[Any]) -> Callable[[str, int], list[float]]:
    """Two bare Ray actors on the Ray nodes of troupe's nodes a and b; return `run(kind, asks)` (from a to b)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    peer: Any = ray.remote(num_cpus=0, max_restarts=0, max_task_retries=0, concurrency_groups={"control": 2})(  # type: ignore[call-overload]
        _BarePeer
    )
    a, b = (
        peer.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node.node_id, soft=False)).remote()
        for node in ray_nodes[:2]
    )
    ray.get([a.set_other.remote(b), b.set_other.remote(a)])

    def run(kind: str, asks: int) -> list[float]:
        return list(ray.get(getattr(a, kind).options(concurrency_group="control").remote(asks)))

    run("oneway", 20)
    run("roundtrip", 20)
    return run


# -- benchmark functions ------------------------------------------------------------------


def messaging(impl: str, *, messages: int = 200_000, asks: int = 1_000) -> dict[str, float]:
    """Cross-node tell throughput (one sender, one receiver) and sequential ask latency.

    On ``ray`` it also returns bare Ray's asks between the same two Ray nodes,
    in blocks alternating with troupe's (`_BarePeer`: ``ray_oneway_*`` two
    one-way calls, ``ray_roundtrip_*`` one call and its return), the floor of
    troupe's ask under the same load; ``python -m benchmarks.cluster ray messaging`` prints them.
    """
    if impl == "pykka":
        counter = _PykkaCounter.start(messages)
        try:
            start = time.perf_counter()
            for i in range(messages):
                counter.tell(i)
            counter.proxy().done.get().wait(120)
            tell_per_s = messages / (time.perf_counter() - start)
            latencies = []
            for _ in range(asks):
                t0 = time.perf_counter()
                counter.ask("echo")
                latencies.append(time.perf_counter() - t0)
        finally:
            counter.stop()
        return {"tell_per_s": tell_per_s, **_summary(latencies), **_untimed(latencies)}
    if impl == "memory":
        from actors.cluster import Cluster, MemoryTransport

        with Cluster(MemoryTransport()) as cluster:
            cluster.start_node("a")
            cluster.start_node("b")
            return _troupe_messaging(cluster, messages, asks)
    if impl == "ray":
        from actors.cluster import Cluster
        from actors.cluster.ray import RayTransport

        with _ray_cluster(2) as (_, ray_nodes):
            cluster = Cluster(RayTransport(namespace="bench"))
            try:
                cluster.start_node("a", ray_node=ray_nodes[0].node_id)
                cluster.start_node("b", ray_node=ray_nodes[1].node_id)
                return _troupe_messaging(cluster, messages, asks, _bare_pair(ray_nodes))
            finally:
                cluster.shutdown()
    return _ray_naive(messages, asks)


def _ray_naive(messages: int, asks: int) -> dict[str, float]:
    with _ray_cluster(2) as (_, ray_nodes):
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        class Receiver:
            def __init__(self, expect: int) -> None:
                self.expect, self.count, self.done_at = expect, 0, 0.0

            def tell(self, _message: Any) -> None:
                self.count += 1
                if self.count == self.expect:
                    self.done_at = time.perf_counter()

            def echo(self, message: Any) -> Any:
                return message

            def done(self) -> float:
                return self.done_at

        class Caller:
            def push(self, receiver: Any, n: int) -> float:
                start = time.perf_counter()
                for i in range(n):
                    receiver.tell.remote(i)
                return start

            def ping(self, receiver: Any, k: int) -> list[float]:
                out = []
                for i in range(k):
                    t0 = time.perf_counter()
                    ray.get(receiver.echo.remote(i))
                    out.append(time.perf_counter() - t0)
                return out

        def on(node: Any) -> Any:
            return NodeAffinitySchedulingStrategy(node.node_id, soft=False)

        remote_receiver: Any = ray.remote(num_cpus=0)(Receiver)
        remote_caller: Any = ray.remote(num_cpus=0)(Caller)
        receiver = remote_receiver.options(scheduling_strategy=on(ray_nodes[1])).remote(messages)
        caller = remote_caller.options(scheduling_strategy=on(ray_nodes[0])).remote()
        ray.get(caller.ping.remote(receiver, 20))
        start = ray.get(caller.push.remote(receiver, messages))
        done_at = _poll(lambda: ray.get(receiver.done.remote()), timeout=600)
        latencies = ray.get(caller.ping.remote(receiver, asks))
        return {"tell_per_s": messages / (done_at - start), **_summary(latencies), **_untimed(latencies)}


def _rss_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def nodes(impl: str, *, agents: int = 100_000, state_bytes: int = 1_000_000, fast: bool = False) -> dict[str, float]:
    """Time to SUSPECT and DOWN after a hard node crash, migration of 1 MB of state, 100k agents on a node.

    With `fast` (``--quick``), the memory transport's detector runs ten times faster.
    """
    from actors.cluster import Cluster, LinkConfig, MemoryTransport

    if impl == "memory":
        config = LinkConfig(heartbeat_every=0.01, suspect_after=0.05, down_after=0.15) if fast else None
        with Cluster(MemoryTransport(config=config)) as cluster:
            for name in "abc":
                cluster.start_node(name)
            metrics = _troupe_nodes(cluster, state_bytes, crash=lambda: cluster.crash_node("c"))
            node = cluster.transport.node("a")
            before = _rss_mb()
            start = time.perf_counter()
            many = [node.system.spawn(Echo) for _ in range(agents)]
            metrics["spawn_s"] = time.perf_counter() - start
            metrics["node_mb"] = _rss_mb()
            metrics["kb_per_agent"] = (metrics["node_mb"] - before) * 1e3 / agents
            del many
            return metrics
    from actors.cluster.ray import RayTransport

    with _ray_cluster(3) as (ray_cluster, ray_nodes):
        cluster = Cluster(RayTransport(namespace="bench"))
        try:
            for name, ray_node in zip("abc", ray_nodes, strict=True):
                cluster.start_node(name, ray_node=ray_node.node_id)

            def crash() -> None:
                ray_cluster.remove_node(ray_nodes[2], allow_graceful=False)
                cluster.transport.forget("c")

            metrics = _troupe_nodes(cluster, state_bytes, crash=crash)
            before = cluster.transport.node_call("a", "rss") / 1e6
            start = time.perf_counter()
            cluster.transport.node_call("a", "spawn_many", Echo, agents)
            metrics["spawn_s"] = time.perf_counter() - start
            metrics["node_mb"] = cluster.transport.node_call("a", "rss") / 1e6
            metrics["kb_per_agent"] = (metrics["node_mb"] - before) * 1e3 / agents
            return metrics
        finally:
            cluster.shutdown()


_DOWN_WITHIN_S = 60.0
"""A crashed node not DOWN by then fails the case."""


def _check(ok: bool) -> None:  # noqa: FBT001
    if not ok:
        msg = "the migrated actor lost its state"
        raise RuntimeError(msg)


def _troupe_nodes(cluster: Any, state_bytes: int, *, crash: Any) -> dict[str, float]:
    from actors.cluster import NodeStatus

    blob = cluster.spawn(Blob, state_bytes, node="a", name="blob")
    _check(blob.ask("fill", timeout=60) == state_bytes)
    times = []
    for to in ("b", "a", "b", "a", "b", "a", "b"):  # the median of 7
        start = time.perf_counter()
        blob = cluster.migrate(blob, to=to)
        times.append(time.perf_counter() - start)
    _check(blob.ask("size", timeout=60) == state_bytes)
    start = time.perf_counter()
    crash()
    suspect_at = down_at = 0.0
    while down_at == 0.0:
        status = cluster.status("c")
        now = time.perf_counter() - start
        if status is not NodeStatus.UP and suspect_at == 0.0:
            suspect_at = now
        if status is NodeStatus.DOWN:
            down_at = now
        if now > _DOWN_WITHIN_S:
            msg = "node c was not declared DOWN within 60 s"
            raise TimeoutError(msg)
        threading.Event().wait(0.002)
    return {"migrate_ms": statistics.median(times) * 1e3, "suspect_s": suspect_at, "down_s": down_at}


BENCHMARKS = (
    Benchmark(
        name="messaging",
        func=messaging,
        metrics=(
            Metric("tell_per_s", "cross-node tells, one pair (msg/s)", higher_is_better=True),
            Metric("ask_median_us", "cross-node ask, median (µs)"),
            Metric("ask_p99_us", "cross-node ask, p99 (µs)"),
            Metric("untimed_ask_median_us", "cross-node ask without a timeout, median (µs)"),
        ),
        params={"messages": 200_000, "asks": 1_000},
        quick_params={"messages": 20_000, "asks": 200},
        impls=("pykka", "ray-naive", "memory", "ray"),
        quick_impls=("pykka", "memory"),
        # Ray: a cluster's start and the one-call-per-message baseline take minutes a case (--full runs them).
        default_impls=("pykka", "memory"),
        only_placements=("unpinned",),
        requires={"ray": "ray", "ray-naive": "ray"},
        targets=(
            Target(
                "Ray: cross-node tells >= 250,000 msg/s", "tell_per_s", 250_000, at_most=False, impl="ray", unit="/s"
            ),
            Target("Ray: ask median <= 1.5 ms", "ask_median_us", 1500, impl="ray", unit="µs"),
            Target("Ray: ask p99 <= 5 ms", "ask_p99_us", 5000, impl="ray", unit="µs"),
            Target("memory: ask median <= 50 µs", "ask_median_us", 50, impl="memory", unit="µs"),
        ),
        budget_s=300.0,
        timeout_s=600.0,
    ),
    Benchmark(
        name="nodes",
        func=nodes,
        metrics=(
            Metric("suspect_s", "hard crash to SUSPECT (s)"),
            Metric("down_s", "hard crash to DOWN (s)"),
            Metric("migrate_ms", "migrate an actor with 1 MB of state (ms)"),
            Metric("spawn_s", "spawn 100,000 agents on one node (s)"),
            Metric("node_mb", "node with 100,000 agents (MB RSS)", better="less", worse="more"),
            Metric("kb_per_agent", "per agent (KB)", better="less", worse="more"),
        ),
        params={"agents": 100_000},
        quick_params={"agents": 2_000, "fast": True},
        impls=("memory", "ray"),
        quick_impls=("memory",),
        default_impls=("memory",),
        only_placements=("unpinned",),
        requires={"ray": "ray"},
        targets=(
            Target("Ray: SUSPECT <= 2.5 s after a hard crash", "suspect_s", 2.5, impl="ray", unit="s"),
            Target("Ray: DOWN <= 2 s after a hard crash (tuned)", "down_s", 2.0, impl="ray", unit="s"),
            Target("Ray: migrate 1 MB <= 20 ms", "migrate_ms", 20, impl="ray", unit="ms"),
            Target("Ray: node with 100,000 agents <= 300 MB", "node_mb", 300, impl="ray", unit="MB"),
        ),
        budget_s=300.0,
        timeout_s=600.0,
    ),
)


def seed_flow() -> None:
    """The seed's example flow, printed: A registers, B discovers A, X on A, Y on B, they talk, A fails, X moves."""
    from actors import ManualClock
    from actors.cluster import Cluster, MemoryTransport

    transport = MemoryTransport(ManualClock())
    with Cluster(transport) as cluster:
        cluster.start_node("A")
        cluster.start_node("B")
        print("nodes:", [(n.name, n.status.value) for n in cluster.nodes()])
        x = cluster.spawn(Counter, 3, node="A", name="X", restart="permanent")
        y = cluster.spawn(Pusher, node="B", name="Y")
        print("Y asks X 3 times, latencies (s):", [round(t, 6) for t in y.ask(("ping", x, 3), timeout=10)])
        cluster.crash_node("A")
        cluster.wait(lambda: cluster.where("X") == "B", timeout=30)
        print("A crashed; nodes:", [(n.name, n.status.value) for n in cluster.nodes()], "X is on", cluster.where("X"))
        print("Y reaches X on its new node:", y.ask(("ping", x, 1), timeout=10) is not None)


def run_case(impl: str, name: str, rounds: int = 1) -> None:
    """Run one case (`messaging` or `nodes` of `impl`) `rounds` times at its default size; print its figures."""
    cases: dict[str, Callable[[str], dict[str, float]]] = {"messaging": messaging, "nodes": nodes}
    func = cases[name]
    for _ in range(rounds):
        load = Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "?"
        start = time.perf_counter()
        figures = func(impl)
        shown = ", ".join(f"{key} {value:,.1f}" for key, value in figures.items())
        print(f"{impl} {name}: {shown} ({time.perf_counter() - start:.0f} s, load {load})", flush=True)


if __name__ == "__main__":
    import sys

    # Through the importable module, not ``__main__``: the actors must pickle by reference into Ray workers.
    from benchmarks import cluster as _module  # noqa: PLW0406 - the importable module, on purpose

    if len(sys.argv) > 1:
        impl, case, *rounds = sys.argv[1:]
        _module.run_case(impl, case, *map(int, rounds[:1]))
    else:
        _module.seed_flow()
