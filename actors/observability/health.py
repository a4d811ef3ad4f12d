"""Health checks registered per service, aggregated into one system health.

    health = HealthChecks()
    health.register_actor("state", store)                           # its database reachable
    health.register_actor("coordinator", coordinator,
                          degraded_above={"queue_depth": 1_000}, unhealthy_above={"queue_depth": 10_000})
    health.register_actor("broker", broker, degraded_above={"dropped": 0}, deltas=("dropped",))
    health.register("disk", lambda: shutil.disk_usage("/").free > 1e9)   # a custom callable
    report = health.check(timeout=2)       # SystemHealth: the worst status, and each check's result

A check of a service asks that service's actor `CheckHealth` (the services
never read each other's state): the StateStore probes its backend (SQLite:
one ``SELECT``; measurements ``backend_reachable``, ``entries``), the
Coordinator reports ``queue_depth``, ``running``, ``agents``,
``agents_unhealthy``, the MessageBroker ``dropped``, ``published``,
``delivered``, ``no_subscriber``, ``subscriptions``. The check takes the
actor's own status, then the worst of its thresholds: a measurement above
``unhealthy_above[name]`` is UNHEALTHY, above ``degraded_above[name]``
DEGRADED. A name in `deltas` is judged by its increase since the previous
check (a counter such as the broker's ``dropped``). An actor that does not
answer within the timeout, has stopped, or fails is UNHEALTHY, the reason in
the detail.

A custom check is a callable returning a `HealthReport`, a `HealthStatus`
or a bool (True: healthy); one that raises is UNHEALTHY. The system's status
is the worst of its checks'; a check registered with ``critical=False``
makes it DEGRADED at worst.

Threading: every method may be called from any thread but an actor's own
turn (`check` waits for the actors' answers): from a handler, ask each
service yourself without blocking. Checks run one `check` at a time.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs
import pykka

from actors._core import (
    CheckHealth,
    Clock,
    FrozenDict,
    HealthReport,
    HealthStatus,
    MonotonicClock,
    check_interface,
    check_seconds,
)

__all__ = ["CheckResult", "HealthChecks", "SystemHealth"]

HealthCallable = Callable[[], "HealthReport | HealthStatus | bool"]


@attrs.frozen
class CheckResult:
    """One check's outcome.

    Attributes:
        name: the check's name.
        status: its status after the thresholds.
        detail: why (the service's own words, or the threshold crossed).
        measurements: what the service reported (deltas already applied).
        critical: whether it can make the system UNHEALTHY.
    """

    name: str
    status: HealthStatus
    detail: str
    measurements: FrozenDict[str, float]
    critical: bool = True


@attrs.frozen
class SystemHealth:
    """The system's health: the worst of its checks' (see the module docstring).

    Attributes:
        status: HEALTHY, DEGRADED or UNHEALTHY.
        checks: each check's result, by name, in registration order.
        checked_at: the clock's time of the check.
    """

    status: HealthStatus
    checks: FrozenDict[str, CheckResult]
    checked_at: float

    @property
    def healthy(self) -> bool:
        """Whether every check is healthy."""
        return self.status is HealthStatus.HEALTHY


def _limits(name: str, value: Mapping[str, float] | None) -> dict[str, float]:
    limits = dict(value or {})
    for key, number in limits.items():
        if isinstance(number, bool) or not isinstance(number, int | float) or math.isnan(number):
            msg = f"health check {name!r}: threshold {key!r} must be a number, got {number!r}"
            raise ValueError(msg)
    return limits


class _ActorCheck:
    def __init__(
        self,
        ref: pykka.ActorRef[Any],
        degraded_above: Mapping[str, float] | None,
        unhealthy_above: Mapping[str, float] | None,
        deltas: Iterable[str],
        name: str,
    ) -> None:
        if not isinstance(ref, pykka.ActorRef):
            msg = f"health check {name!r}: register_actor needs an actor ref, got {ref!r}"
            raise TypeError(msg)
        self.ref = ref
        self.degraded = _limits(name, degraded_above)
        self.unhealthy = _limits(name, unhealthy_above)
        self.deltas = frozenset(deltas)
        # Invariant: the last reading of each delta measurement, from the previous answer.
        self.previous: dict[str, float] = {}

    def judge(self, name: str, critical: bool, report: HealthReport) -> CheckResult:  # noqa: FBT001
        measured = dict(report.measurements)
        for key in self.deltas & measured.keys():
            current = measured[key]
            measured[key] = current - self.previous.get(key, 0.0)  # the first check: since the start
            self.previous[key] = current
        status, reasons = report.status, [report.detail] if report.detail else []
        for limits, level in ((self.degraded, HealthStatus.DEGRADED), (self.unhealthy, HealthStatus.UNHEALTHY)):
            for key, limit in limits.items():
                value = measured.get(key)
                if value is not None and value > limit:
                    status = max(status, level)
                    reasons.append(f"{key} {value:g} > {limit:g}{' (since last check)' if key in self.deltas else ''}")
        return CheckResult(name, status, "; ".join(reasons), FrozenDict(measured), critical)


@attrs.frozen
class _Registered:
    name: str
    check: _ActorCheck | HealthCallable
    critical: bool
    timeout: float | None


class HealthChecks:
    """A registry of health checks and their aggregation (see the module docstring).

    Args:
        clock: stamps `SystemHealth.checked_at` (pass the system's clock; default `MonotonicClock`).
        timeout: seconds a check of an actor waits for its answer, unless its own is given (default 5).
    """

    def __init__(self, *, clock: Clock | None = None, timeout: float = 5.0) -> None:
        check_seconds("timeout", timeout, owner="HealthChecks")
        if clock is not None:
            check_interface("clock", clock, ("now",), "a Clock (system.clock) or None", owner="HealthChecks")
        self._clock = clock if clock is not None else MonotonicClock()
        self._timeout = timeout
        self._lock = threading.Lock()
        self._running = threading.Lock()  # one check() at a time: deltas are per check
        self._checks: dict[str, _Registered] = {}

    def __repr__(self) -> str:
        return f"HealthChecks({list(self._checks)})"

    def register_actor(
        self,
        name: str,
        ref: pykka.ActorRef[Any],
        *,
        degraded_above: Mapping[str, float] | None = None,
        unhealthy_above: Mapping[str, float] | None = None,
        deltas: Iterable[str] = (),
        critical: bool = True,
        timeout: float | None = None,
    ) -> None:
        """Check a service by asking its actor `CheckHealth`, judging its measurements by the thresholds.

        Raises:
            ValueError: `name` is taken or empty, a threshold is not a number, a bad `timeout`.
            TypeError: `ref` is not an actor ref.
        """
        check_seconds("timeout", timeout, optional=True, owner="HealthChecks.register_actor")
        self._add(_Registered(name, _ActorCheck(ref, degraded_above, unhealthy_above, deltas, name), critical, timeout))

    def register(self, name: str, check: HealthCallable, *, critical: bool = True) -> None:
        """Add a custom check: a callable returning a `HealthReport`, a `HealthStatus` or a bool.

        Raises:
            ValueError: `name` is taken or empty.
            TypeError: `check` is not callable.
        """
        if not callable(check):
            msg = f"health check {name!r}: register needs a callable, got {check!r}"
            raise TypeError(msg)
        self._add(_Registered(name, check, critical, None))

    def unregister(self, name: str) -> bool:
        """Remove a check; return whether it was registered."""
        with self._lock:
            return self._checks.pop(name, None) is not None

    def _add(self, entry: _Registered) -> None:
        if not isinstance(entry.name, str) or not entry.name:
            msg = f"a health check needs a non-empty name (str), got {entry.name!r}"
            raise ValueError(msg)
        with self._lock:
            if entry.name in self._checks:
                msg = f"a health check named {entry.name!r} is registered already; unregister it first"
                raise ValueError(msg)
            self._checks[entry.name] = entry

    def check(self, *, timeout: float | None = None) -> SystemHealth:
        """Run every check (the actors are asked at once, then awaited) and aggregate them.

        Args:
            timeout: seconds to wait for each actor's answer (default: its own, else the registry's).
        """
        with self._lock:
            entries = list(self._checks.values())
        with self._running:
            asked: dict[str, Any] = {}
            for entry in entries:
                if isinstance(entry.check, _ActorCheck):
                    try:
                        asked[entry.name] = entry.check.ref.ask(CheckHealth(), block=False)
                    except Exception as error:  # noqa: BLE001 - reported as the check's result
                        asked[entry.name] = error
            results = {entry.name: self._result(entry, asked.get(entry.name), timeout) for entry in entries}
        worst = HealthStatus.HEALTHY
        for result in results.values():
            status = result.status if result.critical else min(result.status, HealthStatus.DEGRADED)
            worst = max(worst, status)
        return SystemHealth(worst, FrozenDict(results), self._clock.now())

    def _result(self, entry: _Registered, pending: Any, timeout: float | None) -> CheckResult:
        name, check = entry.name, entry.check
        if isinstance(check, _ActorCheck):
            return self._actor_result(entry, check, pending, timeout)
        try:
            answer = check()
        except Exception as error:  # noqa: BLE001 - a failing check is an unhealthy one
            return _failed(name, entry.critical, f"the check raised {type(error).__name__}: {error}")
        if isinstance(answer, HealthReport):
            return CheckResult(name, answer.status, answer.detail, answer.measurements, entry.critical)
        if isinstance(answer, HealthStatus):
            return CheckResult(name, answer, "", FrozenDict(), entry.critical)
        if isinstance(answer, bool):
            status = HealthStatus.HEALTHY if answer else HealthStatus.UNHEALTHY
            return CheckResult(name, status, "" if answer else "the check returned False", FrozenDict(), entry.critical)
        return _failed(
            name, entry.critical, f"the check returned {answer!r}; return a HealthReport, HealthStatus or bool"
        )

    def _actor_result(self, entry: _Registered, check: _ActorCheck, pending: Any, timeout: float | None) -> CheckResult:
        name = entry.name
        if isinstance(pending, BaseException):
            return _failed(name, entry.critical, f"{check.ref} cannot be asked: {type(pending).__name__}: {pending}")
        wait = timeout if timeout is not None else entry.timeout if entry.timeout is not None else self._timeout
        try:
            report = pending.get(timeout=wait)
        except pykka.Timeout:
            return _failed(name, entry.critical, f"{check.ref} did not answer CheckHealth within {wait} s")
        except pykka.ActorDeadError:
            return _failed(name, entry.critical, f"{check.ref} has stopped")
        except Exception as error:  # noqa: BLE001 - the service's answer is an error
            return _failed(name, entry.critical, f"{check.ref} answered {type(error).__name__}: {error}")
        if not isinstance(report, HealthReport):
            return _failed(name, entry.critical, f"{check.ref} answered {report!r}, not a HealthReport")
        return check.judge(name, entry.critical, report)


def _failed(name: str, critical: bool, detail: str) -> CheckResult:  # noqa: FBT001
    return CheckResult(name, HealthStatus.UNHEALTHY, detail, FrozenDict(), critical)
