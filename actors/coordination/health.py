"""Agent health: the worst of a set of rules, with hysteresis so it does not flap.

The coordinator keeps one `HealthTracker` per agent and feeds it what it
sees: each task outcome with its run time, each heartbeat with the mailbox
depth the agent reported, and the heartbeat lag at every sweep. `evaluate`
applies the rules of a `HealthPolicy`; the level it reports moves only after
the rules have agreed on a new level `confirmations` evaluations in a row
(Prometheus's ``for`` and ``keep_firing_for``, counted in evaluations).

Threading: a tracker belongs to one coordinator and is used on its turns only.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import attrs

from actors.errors import TaskSpecError

__all__ = ["Health", "HealthPolicy", "HealthSample", "HealthTracker"]


class Health(enum.IntEnum):
    """How well an agent does; higher is worse, so the worst of several is their `max`."""

    HEALTHY = 0
    DEGRADED = 1
    UNHEALTHY = 2

    def __str__(self) -> str:
        return self.name.lower()


@attrs.frozen
class HealthSample:
    """What the rules see of an agent at one evaluation."""

    error_rate: float
    """Failed outcomes over the last `HealthPolicy.window` outcomes (0 with none)."""
    p95_run_time: float | None
    """95th percentile of those outcomes' run times, seconds (None with none, or when no rule reads it)."""
    mailbox_depth: int
    """Messages waiting in its mailbox, as it last reported."""
    heartbeat_lag: float
    """Seconds since the coordinator last heard from it."""
    outcomes: int
    """How many outcomes the window holds."""


def _non_negative(_inst: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and not (isinstance(value, int | float) and value >= 0 and math.isfinite(value)):
        msg = f"HealthPolicy.{attribute.name} must be a finite number >= 0 or None, got {value!r}"
        raise TaskSpecError(msg)


def _rules(value: Iterable[Callable[[HealthSample], Health]]) -> tuple[Callable[[HealthSample], Health], ...]:
    return tuple(value)


@attrs.frozen
class HealthPolicy:
    """The rules and thresholds of agent health. A threshold of None turns its rule off.

    Defaults: error rate over the last 20 outcomes degraded at 25 %, unhealthy
    at 50 % (once at least 4 outcomes are in); mailbox depth degraded at 1,000,
    unhealthy at 10,000; heartbeat lag degraded past 1.5 intervals (set by the
    coordinator from the agent's interval when left None); p95 off; 2
    confirmations. `rules` are callables ``(HealthSample) -> Health``.
    """

    window: int = 20
    min_outcomes: int = 4
    error_rate_degraded: float | None = attrs.field(default=0.25, validator=_non_negative)
    error_rate_unhealthy: float | None = attrs.field(default=0.5, validator=_non_negative)
    p95_degraded: float | None = attrs.field(default=None, validator=_non_negative)
    p95_unhealthy: float | None = attrs.field(default=None, validator=_non_negative)
    mailbox_degraded: int | None = attrs.field(default=1000, validator=_non_negative)
    mailbox_unhealthy: int | None = attrs.field(default=10000, validator=_non_negative)
    lag_degraded: float | None = attrs.field(default=None, validator=_non_negative)
    rules: tuple[Callable[[HealthSample], Health], ...] = attrs.field(default=(), converter=_rules)
    confirmations: int = 2

    def __attrs_post_init__(self) -> None:
        if self.window < 1 or self.confirmations < 1 or self.min_outcomes < 0:
            msg = f"HealthPolicy needs window >= 1, confirmations >= 1, min_outcomes >= 0; got {self!r}"
            raise TaskSpecError(msg)


_HEALTHY = Health.HEALTHY  # a global: an enum member read off its class is ~10x slower


def _level(value: float | None, degraded: float | None, unhealthy: float | None) -> Health:
    if value is None:
        return Health.HEALTHY
    if unhealthy is not None and value >= unhealthy:
        return Health.UNHEALTHY
    if degraded is not None and value >= degraded:
        return Health.DEGRADED
    return Health.HEALTHY


class HealthTracker:
    """One agent's health: the outcomes window, the last reports, and the hysteresis state."""

    __slots__ = (
        "_candidate",
        "_depth_limit",
        "_errors",
        "_needs_p95",
        "_outcomes",
        "_plain",
        "_streak",
        "_times",
        "lag_degraded",
        "level",
        "mailbox_depth",
        "policy",
    )

    def __init__(self, policy: HealthPolicy, *, lag_degraded: float | None) -> None:
        self.policy = policy
        self.lag_degraded = policy.lag_degraded if policy.lag_degraded is not None else lag_degraded
        # Invariant: the ok flags of at most policy.window outcomes, oldest first; made on the
        # first outcome (an empty deque is ~600 bytes, a third of a registration's memory).
        # Flags, not (ok, run_time) pairs: a bool is no object for the garbage collector, a
        # pair was one more tracked allocation per task.
        self._outcomes: deque[bool] | None = None
        # Invariant: how many of _outcomes failed (kept as outcomes come and go: no sum per evaluation).
        self._errors = 0
        # The p95 needs a sort: only when a rule may read it (~60% of a task's cost otherwise).
        self._needs_p95 = bool(policy.rules) or policy.p95_degraded is not None or policy.p95_unhealthy is not None
        # Invariant: the run times of the outcomes in _outcomes, in the same order, kept only
        # when a rule may read the p95 (None otherwise).
        self._times: deque[float] | None = deque(maxlen=policy.window) if self._needs_p95 else None
        self.mailbox_depth = 0
        # `outcome`'s shortcut holds when no rule can call a clean record anything but healthy:
        # no custom rules, no p95 rule, no threshold at 0 (which even a rate or lag of 0 meets).
        degraded, unhealthy, lag = policy.error_rate_degraded, policy.error_rate_unhealthy, self.lag_degraded
        self._plain = (
            not self._needs_p95
            and (degraded is None or degraded > 0)
            and (unhealthy is None or unhealthy > 0)
            and (lag is None or lag > 0)
        )
        # The mailbox depth below which its rule says healthy.
        depth_degraded, depth_unhealthy = policy.mailbox_degraded, policy.mailbox_unhealthy
        self._depth_limit: float = min(
            math.inf if depth_degraded is None else depth_degraded,
            math.inf if depth_unhealthy is None else depth_unhealthy,
        )
        self.level = _HEALTHY
        self._candidate = _HEALTHY
        self._streak = 0

    def record(self, *, ok: bool, run_time: float) -> None:
        """Add one task outcome."""
        outcomes = self._outcomes
        if outcomes is None:
            outcomes = self._outcomes = deque(maxlen=self.policy.window)
        if len(outcomes) == outcomes.maxlen and not outcomes[0]:
            self._errors -= 1  # the oldest, about to drop out, was a failure
        outcomes.append(ok)
        if not ok:
            self._errors += 1
        if self._times is not None:
            self._times.append(run_time)

    def outcome(self, *, ok: bool, run_time: float) -> Health:
        """Add one task outcome (`record`) and return the level after it (``evaluate(0.0)``).

        The common case is decided without evaluating the rules: a healthy agent,
        with no failure in its window, no pending change and a healthy mailbox,
        stays healthy (what `evaluate` would find, at a third of its cost per task).
        """
        self.record(ok=ok, run_time=run_time)
        if ok and (
            self._errors == 0
            and self._plain
            and self.level is _HEALTHY
            and self._streak == 0  # so no other level is a candidate
            and self.mailbox_depth < self._depth_limit
        ):
            return _HEALTHY
        return self.evaluate(0.0)

    def succeeded(self, run_time: float) -> Health:
        """``outcome(ok=True, run_time=run_time)``, with `record` inlined: the coordinator's call per task."""
        outcomes = self._outcomes
        if outcomes is None:
            outcomes = self._outcomes = deque(maxlen=self.policy.window)
        if len(outcomes) == outcomes.maxlen and not outcomes[0]:
            self._errors -= 1  # the oldest, about to drop out, was a failure
        outcomes.append(True)
        if self._times is not None:
            self._times.append(run_time)
        if (
            self._errors == 0
            and self._plain
            and self.level is _HEALTHY
            and self._streak == 0
            and self.mailbox_depth < self._depth_limit
        ):
            return _HEALTHY
        return self.evaluate(0.0)

    def sample(self, lag: float) -> HealthSample:
        """Return what the rules see now, with `lag` seconds since the last beat."""
        outcomes = self._outcomes or ()
        n = len(outcomes)
        p95 = None
        if n and self._times is not None:
            times = sorted(self._times)
            p95 = times[min(n - 1, math.ceil(0.95 * n) - 1)]
        rate = self._errors / n if n else 0.0
        return HealthSample(rate, p95, self.mailbox_depth, lag, n)

    def evaluate(self, lag: float) -> Health:
        """Apply the rules to the current sample; return the level after hysteresis."""
        policy = self.policy
        if self._needs_p95:
            sample = self.sample(lag)
            n, rate, p95, depth = sample.outcomes, sample.error_rate, sample.p95_run_time, sample.mailbox_depth
        else:
            # No rule reads the p95 nor the sample: skip building one (it was ~40% of a
            # task's health bookkeeping, which runs on every TaskFinished).
            outcomes = self._outcomes
            n = len(outcomes) if outcomes is not None else 0
            rate = self._errors / n if n else 0.0
            p95, depth = None, self.mailbox_depth
        worst = _HEALTHY
        if n >= policy.min_outcomes:
            worst = _level(rate, policy.error_rate_degraded, policy.error_rate_unhealthy)
        if p95 is not None:
            worst = max(worst, _level(p95, policy.p95_degraded, policy.p95_unhealthy))
        worst = max(worst, _level(depth, policy.mailbox_degraded, policy.mailbox_unhealthy))
        worst = max(worst, _level(lag, self.lag_degraded, None))
        for rule in policy.rules:  # rules set _needs_p95: the sample was built above
            worst = max(worst, Health(rule(sample)))
        if worst == self.level:
            self._candidate, self._streak = worst, 0
        elif worst == self._candidate:
            self._streak += 1
        else:
            self._candidate, self._streak = worst, 1
        if self._streak >= policy.confirmations:
            self.level, self._streak = worst, 0
        return self.level
