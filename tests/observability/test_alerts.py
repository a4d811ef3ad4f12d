"""Alert rules (issue 15 §3): Prometheus's pending -> firing -> (keep firing) -> resolved, on the manual clock."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from actors import Actor, ActorSystem, AlertRuleError, ManualClock
from actors.observability import (
    AlertEvent,
    AlertManager,
    AlertPhase,
    AlertRule,
    AlertState,
    EvaluateAlerts,
    GetAlerts,
    SubscribeAlerts,
    UnsubscribeAlerts,
    enable_metrics,
)
from tests.conftest import LogRecords

WAIT = 10


class HistoryModel(RuleBasedStateMachine):
    """`AlertState` against the rule stated over the history of evaluations.

    The model keeps only when the current run of holding (or not holding)
    evaluations began, and says: an inactive alert fires at the first
    evaluation at which the condition has held since ``for_`` seconds or
    more; a firing one resolves at the first at which it has not held since
    ``keep_firing_for`` seconds or more; nothing else is announced.
    """

    @initialize(for_=st.sampled_from([0.0, 1.0, 5.0, 30.0]), keep=st.sampled_from([0.0, 1.0, 10.0]))
    def start(self, for_: float, keep: float) -> None:
        self.rule = AlertRule("r", "system.actors", ">", 10, for_=for_, keep_firing_for=keep)
        self.state = AlertState(self.rule)
        self.now = 0.0
        self.firing = False
        self.held_since: float | None = None
        self.cleared_since: float | None = None
        self.events: list[AlertEvent] = []

    @rule(dt=st.sampled_from([0.0, 0.5, 1.0, 2.5, 5.0, 15.0]), value=st.sampled_from([None, 0.0, 10.0, 11.0, 99.0]))
    def evaluate(self, dt: float, value: float | None) -> None:
        self.now += dt
        holds = value is not None and value > 10
        if holds:
            self.held_since = self.now if self.held_since is None else self.held_since
            self.cleared_since = None
        else:
            self.held_since = None
            self.cleared_since = self.now if self.cleared_since is None else self.cleared_since
        expected: str | None = None
        if not self.firing and holds and self.held_since is not None and self.now - self.held_since >= self.rule.for_:
            expected, self.firing = AlertPhase.FIRING, True
        elif (
            self.firing
            and self.cleared_since is not None
            and self.now - self.cleared_since >= self.rule.keep_firing_for
        ):
            expected, self.firing = AlertPhase.RESOLVED, False
        event = self.state.evaluate(value, self.now)
        assert (event.phase if event else None) == expected, (self.state, value, self.now)
        if event is not None:
            self.events.append(event)
            assert (event.at, event.value, event.rule, event.threshold) == (self.now, value, "r", 10)
            if event.phase == AlertPhase.FIRING:
                assert self.held_since is not None
                assert event.active_since == self.held_since

    @invariant()
    def phases_agree(self) -> None:
        if not hasattr(self, "state"):
            return
        if self.firing:
            assert self.state.phase == AlertPhase.FIRING
        elif self.held_since is not None:
            assert self.state.phase == AlertPhase.PENDING
            assert self.state.active_since == self.held_since
        else:
            assert self.state.phase == AlertPhase.INACTIVE
            assert self.state.active_since is None

    @invariant()
    def announcements_alternate(self) -> None:
        phases = [e.phase for e in getattr(self, "events", [])]
        assert phases == [AlertPhase.FIRING, AlertPhase.RESOLVED] * (len(phases) // 2) + [AlertPhase.FIRING] * (
            len(phases) % 2
        )


TestAlertStateMachine = HistoryModel.TestCase
TestAlertStateMachine.settings = settings(max_examples=100, stateful_step_count=25, deadline=None)


def test_the_four_phases_in_order_with_for_and_keep_firing_for() -> None:
    state = AlertState(AlertRule("q", "system.actors", ">=", 5, for_=10, keep_firing_for=20))
    assert state.evaluate(5, 0) is None
    assert state.phase == AlertPhase.PENDING
    assert state.evaluate(6, 9.99) is None  # not yet for 10 s
    firing = state.evaluate(7, 10)
    assert firing is not None
    assert (firing.phase, firing.active_since, firing.at) == ("firing", 0, 10)
    assert state.evaluate(0, 15) is None  # cleared at 15: keeps firing until 35
    assert state.evaluate(9, 20) is None  # holds again: the clearing is forgotten
    assert state.evaluate(0, 25) is None
    assert state.evaluate(0, 44.99) is None
    assert state.phase == AlertPhase.FIRING
    resolved = state.evaluate(0, 45)
    assert resolved is not None
    assert resolved.phase == "resolved"
    assert state.phase == AlertPhase.INACTIVE


@given(st.lists(st.floats(min_value=0, max_value=4, allow_nan=False), max_size=20))
def test_an_alert_that_stops_holding_while_pending_is_never_announced(gaps: list[float]) -> None:
    state = AlertState(AlertRule("q", "system.actors", ">", 0, for_=5))
    now = 0.0
    for gap in gaps:
        assert state.evaluate(1, now) is None  # pending
        now += min(gap, 4.9)
        assert state.evaluate(0, now) is None  # back to inactive, silently
        now += 0.01


class Idle(Actor):
    def on_receive(self, message: Any) -> Any:
        return message


def test_a_manager_on_the_system_clock_fires_and_resolves_to_subscribers_and_the_log(
    system: ActorSystem, clock: ManualClock, mode: str, logs: LogRecords
) -> None:
    values = {"class.Worker.mailbox_depth": 0.0}
    rules = [
        AlertRule(
            "backlog",
            "class.Worker.mailbox_depth",
            ">",
            100,
            for_=30,
            keep_firing_for=60,
            severity="critical",
            summary="workers are behind",
        )
    ]
    manager = system.spawn(AlertManager, rules, interval=10, source=lambda: dict(values), mode=mode)
    seen: list[AlertEvent] = []
    probe = system.spawn(Collector, seen)
    assert manager.ask(SubscribeAlerts(probe)) is True
    called: list[AlertEvent] = []
    manager.ask(SubscribeAlerts(called.append))

    def after(seconds: float) -> tuple[Any, ...]:
        clock.advance(seconds)
        alerts = manager.ask(GetAlerts(), timeout=WAIT)  # the timer's evaluation was queued before it
        probe.ask("sync", timeout=WAIT)
        return tuple(alerts)

    values["class.Worker.mailbox_depth"] = 500
    (pending,) = after(10)
    assert (pending.phase, pending.active_since) == ("pending", 10)
    assert after(20)[0].phase == "pending"  # held 20 s of 30
    assert after(10)[0].phase == "firing"  # held 30 s
    assert [(e.phase, e.value, e.active_since, e.at) for e in seen] == [("firing", 500, 10, 40)]
    assert called == seen
    assert any("Alert backlog firing" in m and "workers are behind" in m for m in logs.messages("CRITICAL"))

    values["class.Worker.mailbox_depth"] = 0  # cleared at 50: keeps firing until 110
    assert after(10)[0].phase == "firing"
    values["class.Worker.mailbox_depth"] = 101  # a flap: still firing, clearing forgotten
    assert after(10)[0].phase == "firing"
    values["class.Worker.mailbox_depth"] = 0
    assert after(10)[0].phase == "firing"  # seen cleared at 70 (evaluations read the clock when they run)
    assert after(40)[0].phase == "firing"  # 110 - 70 = 40 < 60
    assert after(10)[0].phase == "firing"  # 50
    assert after(10) == ()  # 130 - 70 = 60: resolved
    assert [e.phase for e in seen] == ["firing", "resolved"]
    assert any("Alert backlog resolved" in m for m in logs.messages("INFO"))
    assert manager.ask(UnsubscribeAlerts(probe)) is True
    assert manager.ask(UnsubscribeAlerts(probe)) is False


class Collector(Actor):
    def __init__(self, into: list[AlertEvent]) -> None:
        super().__init__()
        self.into = into

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, AlertEvent):
            self.into.append(message)
        return message


def test_rules_read_the_systems_real_metrics(system: ActorSystem, clock: ManualClock) -> None:
    enable_metrics(system)
    rules = [AlertRule("crowd", "system.actors", ">", 3, severity="info")]
    manager = system.spawn(AlertManager, rules, interval=5)
    assert manager.ask(EvaluateAlerts()) == ()  # only the manager is alive
    extra = [system.spawn(Idle) for _ in range(4)]
    (event,) = manager.ask(EvaluateAlerts())
    assert (event.phase, event.value) == ("firing", 5)
    for ref in extra:
        ref.stop()
    clock.advance(5)
    assert manager.ask(GetAlerts()) == ()


def test_a_subscriber_that_raises_is_logged_and_the_manager_goes_on(system: ActorSystem, logs: LogRecords) -> None:
    values = {"system.failures": 1.0}

    def bad(_event: AlertEvent) -> None:
        msg = "subscriber bug"
        raise RuntimeError(msg)

    manager = system.spawn(AlertManager, [AlertRule("f", "system.failures", ">", 0)], source=lambda: values)
    manager.ask(SubscribeAlerts(bad))
    (event,) = manager.ask(EvaluateAlerts())
    assert event.phase == "firing"
    assert any("alert subscriber" in m for m in logs.messages("ERROR"))
    assert manager.ask(GetAlerts())[0].phase == "firing"


def test_with_metrics_off_the_manager_logs_once_and_evaluates_nothing(system: ActorSystem, logs: LogRecords) -> None:
    manager = system.spawn(AlertManager, [AlertRule("f", "system.failures", ">", 0)])
    assert manager.ask(EvaluateAlerts()) == ()
    assert manager.ask(EvaluateAlerts()) == ()
    assert len([m for m in logs.messages("ERROR") if "metrics are off" in m]) == 1


def test_an_absent_metric_never_holds(system: ActorSystem) -> None:
    manager = system.spawn(
        AlertManager, [AlertRule("gone", "class.Nobody.failures", "<", 1)], source=lambda: {"system.actors": 1.0}
    )
    assert manager.ask(EvaluateAlerts()) == ()
    assert manager.ask(GetAlerts()) == ()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"metric": "system.actorz"}, "unknown metric 'system.actorz'"),
        ({"metric": "class.Worker.mailbox_dept"}, "unknown metric"),
        ({"for_": -1}, "for_ must be a finite number of seconds >= 0"),
        ({"keep_firing_for": float("inf")}, "keep_firing_for must be"),
        ({"for_": float("nan")}, "for_ must be"),
        ({"op": "=>"}, "op must be one of"),
        ({"threshold": float("nan")}, "threshold must be a finite number"),
        ({"threshold": "10"}, "threshold must be a finite number"),
        ({"severity": "urgent"}, "severity must be one of"),
        ({"name": ""}, "non-empty name"),
    ],
)
def test_a_bad_rule_is_refused_with_a_named_error(kwargs: dict[str, Any], match: str) -> None:
    fields: dict[str, Any] = {"name": "r", "metric": "system.actors", **kwargs}
    with pytest.raises(AlertRuleError, match=match):
        AlertRule(**fields)


def test_two_rules_of_one_name_are_refused(system: ActorSystem) -> None:
    rule = AlertRule("same", "system.actors")
    with pytest.raises(AlertRuleError, match="two rules have this name"):
        system.spawn(AlertManager, [rule, rule]).ask(GetAlerts())
