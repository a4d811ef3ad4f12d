"""The `harness` fixture: every shared cluster test runs over MemoryTransport and RayTransport.

The memory half runs on a `ManualClock` (deterministic, no sleeping). The Ray
half uses one `ray.cluster_utils.Cluster` for the whole `tests.cluster`
package (a head and three worker Ray nodes, handed out one per troupe node and
added as crashes remove them, with tuned health checks; one cluster start,
~10 s here, instead of one per module), with ``RAY_TMPDIR`` in its temporary
directory and everything shut down after the package's last test. Without Ray
installed the Ray half is skipped.
"""

from __future__ import annotations

import importlib.util
import itertools
import math
import os
import threading
from typing import TYPE_CHECKING, Any

import pytest

from actors import ManualClock
from actors.cluster import Cluster, LinkConfig, MemoryTransport

if TYPE_CHECKING:
    from collections.abc import Iterator

HAVE_RAY = importlib.util.find_spec("ray") is not None
RAY_ENV = {
    "RAY_AUTH_MODE": "disabled",
    "RAY_health_check_period_ms": "500",
    # 6 x 500 ms (not 3): on a loaded 2-CPU box (load 10+) a raylet missed 3 checks and Ray declared
    # a live node dead mid-test. A crash by remove_node is seen at once either way (< 0.6 s measured).
    "RAY_health_check_failure_threshold": "6",
    "RAY_health_check_timeout_ms": "1000",
    "RAY_health_check_initial_delay_ms": "1000",
    "RAY_USAGE_STATS_ENABLED": "0",
}
_names = itertools.count(1)


class RayPool:
    """A module's Ray cluster: worker Ray nodes handed out one per troupe node."""

    def __init__(self, tmp: str) -> None:
        import ray  # noqa: PLC0415 - only when the Ray half runs
        from ray.cluster_utils import Cluster as RayCluster  # noqa: PLC0415

        self.saved = {k: os.environ.get(k) for k in (*RAY_ENV, "RAY_TMPDIR")}
        os.environ.update(RAY_ENV)
        os.environ["RAY_TMPDIR"] = tmp
        self.ray = ray
        self.cluster = RayCluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
        self.free = [self.cluster.add_node(num_cpus=1) for _ in range(3)]
        ray.init(address=self.cluster.address, include_dashboard=False, log_to_driver=False)

    def take(self) -> Any:
        if not self.free:
            self.free.append(self.cluster.add_node(num_cpus=1))
        return self.free.pop(0)

    def give_back(self, node: Any) -> None:
        self.free.append(node)

    def replace(self, node: Any) -> None:
        self.cluster.remove_node(node, allow_graceful=False)

    def close(self) -> None:
        self.ray.shutdown()
        self.cluster.shutdown()
        for key, value in self.saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class Harness:
    """One test's cluster, with the operations that differ per transport."""

    def __init__(self, kind: str, pool: RayPool | None, config: LinkConfig | None = None) -> None:
        self.kind = kind
        self.pool = pool
        self.ray_nodes: dict[str, Any] = {}
        if kind == "memory":
            self.clock = ManualClock()
            self.transport: Any = MemoryTransport(self.clock, seed=7, config=config)
        else:
            from actors.cluster.ray import RayTransport  # noqa: PLC0415 - imports ray

            self.transport = RayTransport(
                namespace=f"troupe-test-{next(_names)}",
                config=config or LinkConfig(suspect_after=1.0, down_after=2.0, join_grace=30.0),
            )
        self.cluster = Cluster(self.transport, name=f"t{next(_names)}")

    def start(self, *names: str) -> None:
        for name in names:
            if self.pool is None:
                self.cluster.start_node(name)
            else:
                ray_node = self.pool.take()
                self.ray_nodes[name] = ray_node
                self.cluster.start_node(name, ray_node=ray_node.node_id)

    def crash(self, name: str) -> None:
        """Crash node `name` hard: on Ray, the whole Ray node goes (remove_node, not graceful)."""
        if self.pool is None:
            self.cluster.crash_node(name)
        else:
            self.pool.replace(self.ray_nodes.pop(name))
            self.transport.forget(name)

    def node_call(self, node: str, op: str, *args: Any) -> Any:
        return self.transport.control(node, op, *args)

    def wait(self, predicate: Any, timeout: float = 30.0) -> None:
        assert self.cluster.wait(predicate, timeout=timeout), "the cluster did not get there in time"

    def elapse(self, seconds: float) -> None:
        """Let `seconds` of node time pass: on memory, the manual clock advanced now; on Ray, nothing to do.

        For a bound in node time (the detector's `down_after`, say) that a test
        must outlast: `wait` ticks a manual clock 1 ms per round with a real
        pause between rounds, so 20 s of it took 16-40 s of real time, more than
        `wait`'s 30 s budget under load. Here the clock moves in steps of half a
        heartbeat, each step ticking every node, so live nodes keep hearing each
        other (no one is suspected) and the time costs only the ticks' work. On
        Ray the node clock is the real one: the `wait` that follows covers it.
        """
        if self.kind != "memory":
            return
        step = self.transport.config.heartbeat_every / 2
        for _ in range(math.ceil(seconds / step)):
            self.transport.advance(step)

    def close(self) -> None:
        self.cluster.shutdown()
        if self.pool is not None:
            for node in self.ray_nodes.values():
                self.pool.give_back(node)


@pytest.fixture(scope="package")
def ray_pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayPool]:
    if not HAVE_RAY:
        pytest.skip("Ray is not installed: pip install 'troupe-actors[ray]' to run the Ray half of the cluster suite")
    pool = RayPool(str(tmp_path_factory.mktemp("ray")))
    yield pool
    pool.close()


@pytest.fixture(params=["memory", "ray"])
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    pool = request.getfixturevalue("ray_pool") if request.param == "ray" else None
    h = Harness(request.param, pool)
    yield h
    h.close()


PATIENT = LinkConfig(suspect_after=10.0, down_after=20.0, join_grace=30.0)
"""A failure detector slow enough for a test to delay links by seconds (Ray: real ones) and suspect nobody."""


@pytest.fixture(params=["memory", "ray"])
def patient(request: pytest.FixtureRequest) -> Iterator[Harness]:
    """`harness` with the `PATIENT` detector."""
    pool = request.getfixturevalue("ray_pool") if request.param == "ray" else None
    h = Harness(request.param, pool, PATIENT)
    yield h
    h.close()


@pytest.fixture
def ray_harness(ray_pool: RayPool) -> Iterator[Harness]:
    """A test's cluster on Ray only (what only Ray shows: its node table, a real process to hang)."""
    h = Harness("ray", ray_pool)
    yield h
    h.close()


@pytest.fixture
def memory() -> Iterator[Harness]:
    h = Harness("memory", None)
    yield h
    h.close()


@pytest.fixture(autouse=True)
def _no_leaked_threads(request: pytest.FixtureRequest) -> Iterator[None]:
    """The root conftest's guard, with the module's Ray (and its driver threads) started before it looks."""
    callspec = getattr(request.node, "callspec", None)
    params = {} if callspec is None else callspec.params
    if "ray" in (params.get("harness"), params.get("patient")) or "ray_harness" in request.fixturenames:
        request.getfixturevalue("ray_pool")
    before = set(threading.enumerate())
    yield
    leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    for thread in leaked:
        thread.join(timeout=2)
    leaked = [t for t in leaked if t.is_alive()]
    assert not leaked, f"test leaked threads: {[t.name for t in leaked]}"
