"""Health checks (issue 15 §3): each service answers CheckHealth; the registry aggregates one system health."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, cast

import pytest

from actors import (
    Actor,
    ActorSystem,
    BrokerRef,
    Coordinator,
    GetCoordinationStatistics,
    MessageBroker,
    SqliteBackend,
    StateStore,
    Submit,
    TaskSpec,
    ThreadActor,
)
from actors.observability import CheckHealth, HealthChecks, HealthReport, HealthStatus

WAIT = 10


def test_the_three_services_answer_and_the_system_health_is_the_worst(
    system: ActorSystem, tmp_path: Path, mode: str
) -> None:
    store = system.spawn(StateStore, SqliteBackend(tmp_path / "state.db"), mode=mode)
    coordinator = system.spawn(Coordinator, mode=mode)
    broker = system.spawn(MessageBroker, mode=mode)
    disk_ok = [True]
    checks = HealthChecks(clock=system.clock, timeout=WAIT)
    checks.register_actor("state", store)
    checks.register_actor(
        "coordinator", coordinator, degraded_above={"queue_depth": 2}, unhealthy_above={"queue_depth": 4}
    )
    checks.register_actor("broker", broker, degraded_above={"dropped": 0}, deltas=("dropped",))
    checks.register("disk", lambda: disk_ok[0])

    health = checks.check()
    assert health.status is HealthStatus.HEALTHY
    assert health.healthy
    assert list(health.checks) == ["state", "coordinator", "broker", "disk"]
    assert health.checks["state"].measurements["backend_reachable"] == 1
    assert health.checks["coordinator"].measurements["queue_depth"] == 0

    for n in range(3):  # nobody can run them: they wait in the queue
        coordinator.ask(Submit(TaskSpec("lint", payload=n, requires={"python"})))
    health = checks.check()
    assert health.status is HealthStatus.DEGRADED
    assert health.checks["coordinator"].status is HealthStatus.DEGRADED
    assert "queue_depth 3 > 2" in health.checks["coordinator"].detail

    disk_ok[0] = False
    health = checks.check()
    assert health.status is HealthStatus.UNHEALTHY
    assert health.checks["disk"].status is HealthStatus.UNHEALTHY
    assert coordinator.ask(GetCoordinationStatistics()).tasks.queued == 3


class Slow(ThreadActor):
    """Blocks on CheckHealth until the test lets it go."""

    def __init__(self, gate: threading.Event, started: threading.Event | None = None) -> None:
        super().__init__()
        self.gate = gate
        self.started = started

    def on_receive(self, message: Any) -> Any:
        if self.started is not None:
            self.started.set()
        self.gate.wait(WAIT)
        return HealthReport(HealthStatus.HEALTHY)


class Plain(Actor):
    def on_receive(self, message: Any) -> Any:
        return message


def test_the_broker_check_judges_dropped_messages_since_the_last_check(system: ActorSystem) -> None:
    broker = cast("BrokerRef", system.spawn(MessageBroker))
    gate, started = threading.Event(), threading.Event()
    slow = system.spawn(Slow, gate, started)
    broker.subscribe("t", slow, capacity=1)
    checks = HealthChecks(timeout=WAIT)
    checks.register_actor("broker", broker, degraded_above={"dropped": 0}, deltas=("dropped",))
    try:
        broker.publish("t", 1)
        assert started.wait(WAIT)  # Slow took it and blocks
        broker.publish("t", 2)  # waits in its buffer (capacity 1)
        broker.publish("t", 3)  # dropped
        first = checks.check().checks["broker"]
        assert (first.status, first.measurements["dropped"]) == (HealthStatus.DEGRADED, 1)
        assert "dropped 1 > 0 (since last check)" in first.detail
        second = checks.check().checks["broker"]  # nothing dropped since
        assert (second.status, second.measurements["dropped"]) == (HealthStatus.HEALTHY, 0)
    finally:
        gate.set()


def test_a_store_whose_database_is_gone_is_unhealthy(system: ActorSystem, tmp_path: Path) -> None:
    backend = SqliteBackend(tmp_path / "state.db")
    store = system.spawn(StateStore, backend)
    checks = HealthChecks(timeout=WAIT)
    checks.register_actor("state", store)
    assert checks.check().healthy
    backend.close()  # the database connection is lost under the store
    result = checks.check().checks["state"]
    assert result.status is HealthStatus.UNHEALTHY
    assert "unreachable" in result.detail
    assert result.measurements["backend_reachable"] == 0


def test_actors_that_stopped_fail_or_do_not_answer_are_unhealthy(system: ActorSystem) -> None:
    gate = threading.Event()
    stopped = system.spawn(Plain)
    stopped.stop()
    checks = HealthChecks(timeout=WAIT)
    checks.register_actor("stopped", stopped)
    checks.register_actor("plain", system.spawn(Plain))  # answers the CheckHealth itself, not a report
    checks.register_actor("slow", system.spawn(Slow, gate), timeout=0.05)
    checks.register("raises", lambda: 1 / 0 > 0)
    checks.register("odd", lambda: "yes")  # type: ignore[arg-type, return-value]
    try:
        health = checks.check()
    finally:
        gate.set()
    details = {name: (r.status, r.detail) for name, r in health.checks.items()}
    assert all(status is HealthStatus.UNHEALTHY for status, _ in details.values()), details
    assert "stopped" in details["stopped"][1] or "cannot be asked" in details["stopped"][1]
    assert "not a HealthReport" in details["plain"][1]
    assert "did not answer CheckHealth within 0.05 s" in details["slow"][1]
    assert "ZeroDivisionError" in details["raises"][1]
    assert "return a HealthReport, HealthStatus or bool" in details["odd"][1]


def test_a_non_critical_check_makes_the_system_degraded_at_worst(system: ActorSystem) -> None:
    checks = HealthChecks()
    checks.register("cache", lambda: HealthStatus.UNHEALTHY, critical=False)
    checks.register("db", lambda: HealthReport(HealthStatus.HEALTHY, "fine", {"latency_ms": 3}))
    health = checks.check()
    assert health.status is HealthStatus.DEGRADED
    assert health.checks["cache"].status is HealthStatus.UNHEALTHY
    assert health.checks["db"].measurements == {"latency_ms": 3}
    assert checks.unregister("cache")
    assert not checks.unregister("cache")
    assert checks.check().healthy


def test_check_health_answered_by_a_users_actor(system: ActorSystem) -> None:
    class Mine(Actor):
        def on_receive(self, message: Any) -> Any:
            if isinstance(message, CheckHealth):
                return HealthReport(HealthStatus.DEGRADED, "warming up", {"loaded": 0.5})
            return None

    checks = HealthChecks()
    checks.register_actor("mine", system.spawn(Mine), unhealthy_above={"loaded": 0.9})
    result = checks.check().checks["mine"]
    assert (result.status, result.detail) == (HealthStatus.DEGRADED, "warming up")


def test_bad_registrations_are_refused(system: ActorSystem) -> None:
    checks = HealthChecks()
    checks.register("a", lambda: True)
    with pytest.raises(ValueError, match="registered already"):
        checks.register("a", lambda: True)
    with pytest.raises(ValueError, match="non-empty name"):
        checks.register("", lambda: True)
    with pytest.raises(TypeError, match="needs a callable"):
        checks.register("b", "not callable")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="needs an actor ref"):
        checks.register_actor("c", "not a ref")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must be a number"):
        checks.register_actor("d", system.spawn(Plain), degraded_above={"x": "high"})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="timeout"):
        HealthChecks(timeout=-1)
    with pytest.raises(TypeError, match="clock"):
        HealthChecks(clock="wall")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout"):
        checks.register_actor("e", system.spawn(Plain), timeout=0)
    with pytest.raises(ValueError, match="NaN"):
        HealthReport(HealthStatus.HEALTHY, "", {"x": float("nan")})
