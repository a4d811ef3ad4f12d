"""Alert rules over the flat metrics, with Prometheus's alerting semantics, on the system clock.

    rules = [AlertRule("dead-letters", "system.dead_letters", ">", 100, for_=60, severity="warning"),
             AlertRule("slow-workers", "class.Worker.handler_seconds.p99", ">", 0.5, for_=30,
                       keep_firing_for=120, severity="critical")]
    alerts = system.spawn(AlertManager, rules, interval=15)
    alerts.ask(SubscribeAlerts(my_ref_or_callable))      # AlertEvent: firing, resolved

A rule is a condition (``metric op threshold``) over `MetricsSnapshot.flat`.
Every `interval` seconds of the system clock the manager reads one snapshot
and moves each rule (Prometheus's alerting rule states):

- *inactive* -> *pending* when the condition holds (the alert's ``active_at``);
- *pending* -> *firing* once it has held for `for_` seconds (at once when
  `for_` is 0); *pending* -> *inactive* if it stops holding first (nothing
  was announced, nothing is);
- *firing* stays firing while the condition holds, and for
  `keep_firing_for` seconds after it last stopped holding (a flapping
  metric does not resolve and re-fire); then *resolved* -> *inactive*.

A metric absent from the snapshot (a class with no actor yet) is a condition
that does not hold, as an absent series in Prometheus. Firing and resolved
are announced: an `AlertEvent` to each subscriber (an actor ref is told it;
a callable is called on the manager's turn, and its exceptions are logged,
never the manager's failure) and a log line (firing at the level of its
severity, resolved at INFO). Pending is visible in `GetAlerts`.

Threading: `AlertState` (the state machine) is plain data used by one
thread; the `AlertManager` actor evaluates on its own turns, one at a time.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

import attrs
import pykka
from loguru import logger

from actors._core import Actor, ActorRef, check_seconds
from actors.errors import AlertRuleError, MessageNotUnderstoodError, MetricsOffError, TroupeError
from actors.observability.metrics import is_metric_name

__all__ = [
    "SEVERITIES",
    "AlertEvent",
    "AlertManager",
    "AlertPhase",
    "AlertRule",
    "AlertState",
    "AlertStatus",
    "EvaluateAlerts",
    "GetAlerts",
    "SubscribeAlerts",
    "UnsubscribeAlerts",
]

SEVERITIES = ("info", "warning", "error", "critical")
"""The severities a rule may have, mildest first; a firing alert is logged at the level of the same name."""

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}
_LEVELS = {"info": "INFO", "warning": "WARNING", "error": "ERROR", "critical": "CRITICAL"}


def _rule_error(rule: str, text: str) -> AlertRuleError:
    return AlertRuleError(f"alert rule {rule!r}: {text}")


@attrs.frozen
class AlertRule:
    """``metric op threshold``, held for `for_` seconds, kept firing `keep_firing_for` after (see the module).

    Attributes:
        name: names the alert (unique within a manager).
        metric: a flat metric name (`actors.observability.METRIC_NAMES`).
        op: one of ``>``, ``>=``, ``<``, ``<=``, ``==``, ``!=``.
        threshold: the number the metric is compared with.
        for_: seconds the condition must hold before the alert fires (Prometheus's ``for``); 0: at once.
        keep_firing_for: seconds a firing alert keeps firing after the condition stops holding.
        severity: one of `SEVERITIES`.
        summary: a line for people, in the log and the events.

    Raises:
        AlertRuleError: an unknown metric, an unknown op or severity, a
            threshold that is not a finite number, a negative duration.
    """

    name: str
    metric: str
    op: str = ">"
    threshold: float = 0.0
    for_: float = 0.0
    keep_firing_for: float = 0.0
    severity: str = "warning"
    summary: str = ""

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            msg = f"an alert rule needs a non-empty name (str), got {self.name!r}"
            raise AlertRuleError(msg)
        if not isinstance(self.metric, str) or not is_metric_name(self.metric):
            raise _rule_error(
                self.name,
                f"unknown metric {self.metric!r}; use a name of actors.observability.METRIC_NAMES "
                "(system.* or class.<Class>.*)",
            )
        if self.op not in _OPS:
            raise _rule_error(self.name, f"op must be one of {list(_OPS)}, got {self.op!r}")
        threshold = self.threshold
        if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not math.isfinite(threshold):
            raise _rule_error(self.name, f"threshold must be a finite number, got {threshold!r}")
        for field, value in (("for_", self.for_), ("keep_firing_for", self.keep_firing_for)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0 or math.isinf(value):
                raise _rule_error(self.name, f"{field} must be a finite number of seconds >= 0, got {value!r}")
        if self.severity not in SEVERITIES:
            raise _rule_error(self.name, f"severity must be one of {list(SEVERITIES)}, got {self.severity!r}")
        if not isinstance(self.summary, str):
            raise _rule_error(self.name, f"summary must be a str, got {self.summary!r}")

    def holds(self, value: float | None) -> bool:
        """Whether the condition holds for `value` (None or NaN: absent, never holds)."""
        return value is not None and not math.isnan(value) and _OPS[self.op](value, self.threshold)


class AlertPhase:
    """The states of an alert (strings, as Prometheus names them)."""

    INACTIVE = "inactive"
    PENDING = "pending"
    FIRING = "firing"
    RESOLVED = "resolved"  # announced once, on the way back to inactive


@attrs.frozen
class AlertEvent:
    """A change of an alert that is announced: it began firing, or it resolved.

    Attributes:
        rule: the rule's name.
        phase: ``"firing"`` or ``"resolved"`` (`AlertPhase`).
        severity: the rule's severity.
        metric: the metric the rule reads.
        value: the metric's value at this evaluation (None: absent).
        threshold: the rule's threshold.
        at: the system clock's time of the evaluation.
        active_since: when the condition began to hold (the alert's ``active_at``).
        summary: the rule's summary.
    """

    rule: str
    phase: str
    severity: str
    metric: str
    value: float | None
    threshold: float
    at: float
    active_since: float
    summary: str = ""


@attrs.define
class AlertState:
    """One rule's alert and its state machine (see the module docstring); not thread-safe.

    Invariants: `active_since` is set exactly when the phase is pending or
    firing; `cleared_since` only while firing, from the first evaluation at
    which the condition did not hold.
    """

    rule: AlertRule
    phase: str = AlertPhase.INACTIVE
    active_since: float | None = None
    fired_at: float | None = None
    cleared_since: float | None = None
    value: float | None = None

    def evaluate(self, value: float | None, now: float) -> AlertEvent | None:
        """Move the state machine by one evaluation at time `now`; return the event to announce, if any."""
        rule = self.rule
        self.value = value
        if rule.holds(value):
            self.cleared_since = None
            if self.phase == AlertPhase.INACTIVE:
                self.phase, self.active_since = AlertPhase.PENDING, now
            since = self.active_since
            if self.phase == AlertPhase.PENDING and since is not None and now - since >= rule.for_:
                self.phase, self.fired_at = AlertPhase.FIRING, now
                return self._event(AlertPhase.FIRING, now)
            return None
        if self.phase == AlertPhase.PENDING:
            self.phase, self.active_since = AlertPhase.INACTIVE, None
            return None
        if self.phase == AlertPhase.FIRING:
            if self.cleared_since is None:
                self.cleared_since = now
            if now - self.cleared_since >= rule.keep_firing_for:
                event = self._event(AlertPhase.RESOLVED, now)
                self.phase, self.active_since, self.fired_at, self.cleared_since = AlertPhase.INACTIVE, None, None, None
                return event
        return None

    def _event(self, phase: str, now: float) -> AlertEvent:
        rule = self.rule
        since = self.active_since if self.active_since is not None else now
        return AlertEvent(
            rule.name, phase, rule.severity, rule.metric, self.value, rule.threshold, now, since, rule.summary
        )


@attrs.frozen
class SubscribeAlerts:
    """Send every firing and resolved `AlertEvent` to `subscriber` (an actor ref, or a callable); answers True."""

    subscriber: Any


@attrs.frozen
class UnsubscribeAlerts:
    """Stop sending to `subscriber`; answers whether it was subscribed."""

    subscriber: Any


@attrs.frozen
class GetAlerts:
    """Ask for the alerts that are pending or firing: a tuple of `AlertStatus`, by rule name."""


@attrs.frozen
class EvaluateAlerts:
    """Evaluate every rule now (besides the periodic evaluations); answers the events announced."""


@attrs.frozen
class AlertStatus:
    """A pending or firing alert, as `GetAlerts` reports it."""

    rule: str
    phase: str
    severity: str
    value: float | None
    active_since: float
    fired_at: float | None


@attrs.frozen
class _Tick:
    pass


class AlertManager(Actor):
    """Evaluates alert rules every `interval` seconds of the system clock and announces alerts.

    Args:
        rules: the `AlertRule` s (names unique).
        interval: seconds of the system clock between evaluations (Prometheus's
            ``evaluation_interval``; default 15).
        source: what returns the flat metrics (default: ``system.metrics().flat()``,
            which needs `enable_metrics`).

    Raises:
        AlertRuleError: a rule that is not an `AlertRule`, or two of one name.
        ValueError: an `interval` that is not a positive number of seconds.
    """

    refusals: ClassVar[tuple[type[BaseException], ...]] = (TroupeError,)
    """A shared service: a told request it refuses is a ``REJECTED`` dead letter, not its failure."""

    def __init__(
        self,
        rules: Iterable[AlertRule],
        *,
        interval: float = 15.0,
        source: Callable[[], Mapping[str, float]] | None = None,
    ) -> None:
        super().__init__()
        check_seconds("interval", interval, owner="AlertManager")
        states: dict[str, AlertState] = {}
        for rule in rules:
            if not isinstance(rule, AlertRule):
                msg = f"AlertManager takes AlertRule objects, got {rule!r}"
                raise AlertRuleError(msg)
            if rule.name in states:
                raise _rule_error(rule.name, "two rules have this name; give each its own")
            states[rule.name] = AlertState(rule)
        # Invariant: one state per rule, in the order given; changed on this actor's turns only.
        self._states = states
        self._interval = float(interval)
        self._source = source
        self._subscribers: list[Any] = []
        self._metrics_off_logged = False

    def on_start(self) -> None:
        """Start the periodic evaluation on the system clock."""
        self.timers.start_periodic_timer("evaluate", _Tick(), self._interval)

    def on_receive(self, message: Any) -> Any:
        """Handle a subscription change, a query or an evaluation."""
        match message:
            case _Tick() | EvaluateAlerts():
                return self._evaluate()
            case SubscribeAlerts(subscriber=subscriber):
                if not (isinstance(subscriber, pykka.ActorRef) or callable(subscriber)):
                    msg = f"SubscribeAlerts needs an actor ref or a callable, got {subscriber!r}"
                    raise AlertRuleError(msg)
                if subscriber not in self._subscribers:
                    self._subscribers.append(subscriber)
                return True
            case UnsubscribeAlerts(subscriber=subscriber):
                if subscriber in self._subscribers:
                    self._subscribers.remove(subscriber)
                    return True
                return False
            case GetAlerts():
                return tuple(
                    AlertStatus(s.rule.name, s.phase, s.rule.severity, s.value, s.active_since, s.fired_at)
                    for s in self._states.values()
                    if s.active_since is not None
                )
        msg = (
            f"{self} does not understand {message!r}; "
            "send SubscribeAlerts, UnsubscribeAlerts, GetAlerts or EvaluateAlerts"
        )
        raise MessageNotUnderstoodError(msg)

    def _read(self) -> Mapping[str, float] | None:
        if self._source is not None:
            return self._source()
        try:
            snapshot = self.actor_system.metrics()
        except MetricsOffError:
            if not self._metrics_off_logged:
                self._metrics_off_logged = True
                logger.error(
                    "{}: metrics are off, so no alert rule can be evaluated; call enable_metrics(system)", self
                )
            return None
        self._metrics_off_logged = False
        flat: Mapping[str, float] = snapshot.flat()
        return flat

    def _evaluate(self) -> tuple[AlertEvent, ...]:
        values = self._read()
        if values is None:
            return ()
        now = self.actor_system.clock.now()
        events = []
        for state in self._states.values():
            value = values.get(state.rule.metric)
            event = state.evaluate(None if value is None else float(value), now)
            if event is not None:
                events.append(event)
                self._announce(event)
        return tuple(events)

    def _announce(self, event: AlertEvent) -> None:
        if event.phase == AlertPhase.FIRING:
            logger.log(
                _LEVELS[event.severity],
                "Alert {} firing ({} severity): {} = {} {} {} since {} {}",
                event.rule,
                event.severity,
                event.metric,
                event.value,
                self._states[event.rule].rule.op,
                event.threshold,
                event.active_since,
                event.summary,
            )
        else:
            logger.info("Alert {} resolved: {} = {}", event.rule, event.metric, event.value)
        audit = self.actor_system.audit
        if audit.errors and event.phase == AlertPhase.FIRING and event.severity in ("error", "critical"):
            audit.emit("errors", {"event": "alert_firing", "actor": event.rule, "error": event.summary or event.metric})
        for subscriber in list(self._subscribers):
            if isinstance(subscriber, ActorRef | pykka.ActorRef):
                try:
                    subscriber.tell(event)
                except pykka.ActorDeadError:
                    self._subscribers.remove(subscriber)
                    logger.debug("{}: alert subscriber {} has stopped; dropped", self, subscriber)
                continue
            try:
                subscriber(event)
            except Exception:  # noqa: BLE001 - one subscriber's failure is logged, never the manager's
                logger.opt(exception=True).error("{}: alert subscriber {!r} raised on {}", self, subscriber, event)
