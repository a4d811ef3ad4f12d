"""The Agent base: heartbeats through its mailbox, declared statuses, health with hysteresis, protocol edges."""

from __future__ import annotations

from typing import Any

import attrs
import hypothesis.strategies as st
import pytest
from hypothesis import given

from actors import (
    AgentHeartbeat,
    AgentId,
    AgentStatus,
    Future,
    Health,
    HealthPolicy,
    HealthSample,
    ProtocolError,
    Register,
    RegistrationResult,
    RegistryEvent,
    RunTask,
    StatusChange,
    Task,
    TaskFinished,
    TaskSpecError,
    WatchRegistry,
    from_agent_message,
    to_agent_message,
)
from actors.coordination.health import HealthTracker
from actors.coordination.messages import _run_task, _task_finished
from actors.coordination.status import LEGAL, derive_status, is_legal
from actors.coordination.tasks import TaskHandle, _handle
from actors.protocol import AgentMessage, FrozenMapping, MessageType, from_json, to_json
from actors.testing import ActorTestKit
from tests.coordination.agents_for_tests import AsyncEcho, Echo, Gate, info, settle, spawn_agent, spawn_coordinator


def test_heartbeats_are_timer_messages_handled_in_the_agents_own_mailbox(
    actor_testkit: ActorTestKit, mode: str
) -> None:
    probe = actor_testkit.probe()  # stands in for the coordinator
    probe.reply_with(lambda m: RegistrationResult(m.descriptor.id, replaced=False) if isinstance(m, Register) else None)
    agent = actor_testkit.spawn(Echo, "e1", coordinator=probe.ref, mode=mode, heartbeat_interval=10)
    probe.expect_message()  # the registration
    probe.expect_no_message(within=9.9)
    beat = probe.expect_message(AgentHeartbeat, within=0.1)
    assert beat.agent == AgentId("echo", "e1")
    assert len(actor_testkit.expect_heartbeats(probe, 3, interval=10)) == 3
    assert agent.is_alive()


def test_an_agent_stuck_in_a_handler_sends_no_heartbeat(actor_testkit: ActorTestKit) -> None:
    probe = actor_testkit.probe()
    agent = actor_testkit.spawn(Echo, "e1", coordinator=probe.ref, heartbeat_interval=10)
    probe.expect_message()
    gate = Gate()
    agent.tell(RunTask(Task("t", "k", ("gate", gate), 1, "t"), probe.ref))
    assert gate.entered.wait(5)
    probe.expect_no_message(within=30)  # three beats due, none handled
    gate.open()
    assert probe.expect_message(TaskFinished).value == "opened"
    assert [type(m) for m in probe.expect_messages(3)] == [AgentHeartbeat] * 3  # the queued beats, late


def test_the_kit_runs_a_task_on_an_agent_as_the_coordinator_would(actor_testkit: ActorTestKit, mode: str) -> None:
    agent = actor_testkit.spawn(Echo, "e1", mode=mode)
    done = actor_testkit.run_task(agent, "echo", "hello", attempt=2)
    assert (done.value, done.error, done.attempt, done.agent) == ("hello", None, 2, AgentId("echo", "e1"))
    failed = actor_testkit.run_task(agent, "echo", ("fail", 1))
    assert isinstance(failed.error, ValueError)


def test_an_async_handler_agent_runs_in_asyncio_mode_by_default(actor_testkit: ActorTestKit) -> None:
    agent = actor_testkit.spawn(AsyncEcho, "a1")
    assert actor_testkit.run_task(agent, "echo", 7).value == 7


def test_status_follows_declarations_and_every_change_is_numbered(actor_testkit: ActorTestKit, mode: str) -> None:
    class Waiter(Echo):
        def handle_message(self, message: Any) -> Any:
            if message == "block":
                self._cm = self.blocked("waiting for review")
                self._cm.__enter__()
            elif message == "unblock":
                self._cm.__exit__(None, None, None)
            elif message == "session":
                self._cm = self.collaborating("s-1")
                self._cm.__enter__()
            return None

    coord = spawn_coordinator(actor_testkit)
    probe = actor_testkit.probe()
    coord.ask(WatchRegistry(probe.ref))
    agent = spawn_agent(actor_testkit, Waiter, "w", coord, mode=mode)
    for message in ("block", "unblock", "session", "unblock"):
        agent.ask(message)
    settle(actor_testkit, coord, agent)
    changes = [m.status_change for m in probe.received() if isinstance(m, RegistryEvent) and m.status_change]
    assert [(c.seq, c.new) for c in changes] == [
        (1, AgentStatus.IDLE),
        (2, AgentStatus.BLOCKED),
        (3, AgentStatus.IDLE),
        (4, AgentStatus.COLLABORATING),
        (5, AgentStatus.IDLE),
    ]
    assert info(coord, "echo/w").status_seq == 5


def test_status_is_derived_in_a_fixed_order_and_only_legal_changes_exist() -> None:
    derive = derive_status
    assert derive(offline=True, blocked=True, session=True, in_flight=1, max_concurrent=1) is AgentStatus.OFFLINE
    assert derive(offline=False, blocked=True, session=True, in_flight=1, max_concurrent=1) is AgentStatus.BLOCKED
    assert (
        derive(offline=False, blocked=False, session=True, in_flight=0, max_concurrent=1) is AgentStatus.COLLABORATING
    )
    assert derive(offline=False, blocked=False, session=False, in_flight=2, max_concurrent=2) is AgentStatus.BUSY
    assert derive(offline=False, blocked=False, session=False, in_flight=1, max_concurrent=2) is AgentStatus.WORKING
    assert derive(offline=False, blocked=False, session=False, in_flight=0, max_concurrent=2) is AgentStatus.IDLE
    assert not is_legal(AgentStatus.OFFLINE, AgentStatus.BLOCKED)
    assert not is_legal(AgentStatus.IDLE, AgentStatus.IDLE)
    assert is_legal(AgentStatus.BUSY, AgentStatus.OFFLINE)
    assert len(LEGAL) == 6 * 5 - 2


def _sample(policy: HealthPolicy, tracker: HealthTracker, outcomes: list[bool], lag: float = 0.0) -> Health:
    for ok in outcomes:
        tracker.record(ok=ok, run_time=0.1)
    return tracker.evaluate(lag)


def test_health_is_the_worst_rule_and_needs_confirmations_to_move() -> None:
    policy = HealthPolicy(window=10, min_outcomes=4, confirmations=2)
    tracker = HealthTracker(policy, lag_degraded=45)
    assert _sample(policy, tracker, [False] * 4) is Health.HEALTHY  # unhealthy once: not confirmed yet
    assert tracker.evaluate(0) is Health.UNHEALTHY  # twice: it moves
    assert _sample(policy, tracker, [True] * 10) is Health.UNHEALTHY  # good once: stays (no flapping)
    assert tracker.evaluate(0) is Health.HEALTHY
    assert tracker.evaluate(50) is Health.HEALTHY  # heartbeat lag, once
    assert tracker.evaluate(50) is Health.DEGRADED
    tracker.mailbox_depth = 20_000
    assert tracker.evaluate(0) is Health.DEGRADED
    assert tracker.evaluate(0) is Health.UNHEALTHY
    assert tracker.sample(0).outcomes == 10


def test_custom_health_rules_and_latency_rules_count() -> None:
    def slow_model(sample: HealthSample) -> Health:
        return Health.DEGRADED if sample.mailbox_depth > 3 else Health.HEALTHY

    policy = HealthPolicy(rules=[slow_model], p95_unhealthy=2.0, confirmations=1)
    tracker = HealthTracker(policy, lag_degraded=None)
    tracker.mailbox_depth = 4
    assert tracker.evaluate(0) is Health.DEGRADED
    tracker.record(ok=True, run_time=3.0)
    assert tracker.evaluate(0) is Health.UNHEALTHY
    with pytest.raises(TaskSpecError, match="error_rate_degraded"):
        HealthPolicy(error_rate_degraded=-1)


def test_coordinator_messages_cross_the_edge_as_agent_messages() -> None:
    task = Task("t1", "summarize", {"text": "x"}, 2, "key-1")
    wire = to_agent_message(RunTask(task, None), sender="coordinator", recipient="echo/e1")  # type: ignore[arg-type]
    assert wire.type is MessageType.TASK_REQUEST
    assert from_agent_message(from_json(to_json(wire))) == task
    done = TaskFinished(AgentId("echo", "e1"), "t1", 2, value=[1, 2], run_time=0.5)
    back = from_agent_message(to_agent_message(done, sender="echo/e1"))
    assert (back.value, back.attempt, back.run_time) == ((1, 2), 2, 0.5)
    failed = from_agent_message(
        to_agent_message(TaskFinished(AgentId("e", "1"), "t", 1, error=KeyError("k")), sender="e/1")
    )
    assert failed.error.error_type == "KeyError"
    beat = from_agent_message(to_agent_message(AgentHeartbeat(AgentId("e", "1"), 3), sender="e/1"))
    assert beat == AgentHeartbeat(AgentId("e", "1"), 3)
    change = StatusChange(AgentId("e", "1"), 4, AgentStatus.IDLE, AgentStatus.BUSY, 12.5)
    assert from_agent_message(to_agent_message(change, sender="coordinator")) == change
    with pytest.raises(ProtocolError, match="no AgentMessage form"):
        to_agent_message("nope", sender="x")
    bad = AgentMessage(sender="x", type=MessageType.HEARTBEAT, content={"agent": "e/1"})
    with pytest.raises(ProtocolError, match="mailbox_depth") as caught:
        from_agent_message(bad)
    assert caught.value.field == "content.mailbox_depth"


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3).map(tuple) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
_names = st.text(st.characters(codec="ascii", exclude_characters="/"), min_size=1, max_size=8)


@given(
    task_id=_names,
    kind=_names,
    payload=_json,
    attempt=st.integers(1, 50),
    key=_names,
    value=_json,
    run_time=st.floats(0, 1e6, allow_nan=False),
)
def test_tasks_and_results_round_trip_through_the_json_wire(
    *, task_id: str, kind: str, payload: Any, attempt: int, key: str, value: Any, run_time: float
) -> None:
    def frozen(v: Any) -> Any:
        if isinstance(v, dict):
            return FrozenMapping({k: frozen(x) for k, x in v.items()})
        if isinstance(v, tuple):
            return tuple(frozen(x) for x in v)
        return v

    task = Task(task_id, kind, frozen(payload), attempt, key)
    assert from_agent_message(from_json(to_json(to_agent_message(RunTask(task, None), sender="c")))) == task  # type: ignore[arg-type]
    done = TaskFinished(AgentId("t", key), task_id, attempt, value=frozen(value), run_time=run_time)
    back = from_agent_message(from_json(to_json(to_agent_message(done, sender="t/k"))))
    assert back == done


@given(
    task_id=_names,
    kind=_names,
    payload=_json,
    attempt=st.integers(1, 50),
    key=_names,
    value=_json,
    error=st.none() | st.builds(ValueError, _names),
    run_time=st.floats(0, 1e6, allow_nan=False),
)
def test_messages_made_past_init_equal_the_classes_own(
    *, task_id: str, kind: str, payload: Any, attempt: int, key: str, value: Any, error: Any, run_time: float
) -> None:
    # The coordinator and Agent build RunTask, Task, TaskFinished and TaskHandle by their slots'
    # setters (messages._run_task, ...): the same objects, every field set, still frozen.
    ref = object()
    future: Future[Any] = Future()
    made = _run_task(task_id, kind, payload, attempt, key, ref)  # type: ignore[arg-type]
    assert made == RunTask(Task(task_id, kind, payload, attempt, key), ref)  # type: ignore[arg-type]
    assert made.coordinator is ref
    finished = _task_finished(AgentId("t", key), task_id, attempt, value, error, run_time)
    assert finished == TaskFinished(AgentId("t", key), task_id, attempt, value, error, run_time)
    handle = _handle(task_id, future)
    assert (handle.task_id, handle.future) == (task_id, future)
    for obj, cls in ((made, RunTask), (made.task, Task), (finished, TaskFinished), (handle, TaskHandle)):
        assert type(obj) is cls
        assert repr(obj) == repr(attrs.evolve(obj))  # evolve goes through __init__
        for field in attrs.fields(cls):
            getattr(obj, field.name)  # an unset slot raises AttributeError: a field the maker forgot
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            setattr(obj, attrs.fields(cls)[0].name, None)
