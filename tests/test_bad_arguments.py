"""A bad constructor argument fails where it is given, with an error naming the argument and what it expects."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import actors as a
from actors import ActorSystem
from actors.errors import ResourceRequestError, TaskSpecError


class _Idle(a.Actor):
    pass


class _Timing(a.Actor):
    def on_receive(self, message: Any) -> Any:
        kind, value = message
        if kind == "single":
            self.timers.start_single_timer("k", "tick", delay=value)
        else:
            self.timers.start_periodic_timer("k", "tick", interval=value)
        return None


# (label, how to build it from a system and a temporary directory, the error, what its message must say)
_Case = tuple[str, Callable[[ActorSystem, Path], Any], type[BaseException], str]

SPAWNS: list[_Case] = [
    ("StateStore given a path", lambda s, d: s.spawn(a.StateStore, "state.db"), TypeError, r"backend must be a State"),
    (
        "StateStore max_batch=0",
        lambda s, d: s.spawn(a.StateStore, max_batch=0),
        ValueError,
        r"max_batch must be >= 1, got 0",
    ),
    (
        "StateStore max_batch='5'",
        lambda s, d: s.spawn(a.StateStore, max_batch="5"),
        TypeError,
        r"max_batch must be an int",
    ),
    (
        "StateStore sweep_interval='1'",
        lambda s, d: s.spawn(a.StateStore, sweep_interval="1"),
        TypeError,
        "sweep_interval",
    ),
    (
        "StateStore race_window=-1",
        lambda s, d: s.spawn(a.StateStore, race_window=-1),
        ValueError,
        "race_window must be >= 0",
    ),
    ("StateStore clock='x'", lambda s, d: s.spawn(a.StateStore, clock="x"), TypeError, r"clock must be a Clock"),
    (
        "StateStore resolver='x'",
        lambda s, d: s.spawn(a.StateStore, resolver="x"),
        TypeError,
        r"resolver must be an ActorRef",
    ),
    (
        "ConflictResolver history_limit='1'",
        lambda s, d: s.spawn(a.ConflictResolver, history_limit="1"),
        TypeError,
        "history_limit",
    ),
    (
        "Coordinator health='x'",
        lambda s, d: s.spawn(a.Coordinator, health="x"),
        TypeError,
        "health must be a HealthPolicy",
    ),
    (
        "Coordinator keep_finished=-1",
        lambda s, d: s.spawn(a.Coordinator, keep_finished=-1),
        ValueError,
        "keep_finished",
    ),
    ("Coordinator result_writer=1", lambda s, d: s.spawn(a.Coordinator, result_writer=1), TypeError, "result_writer"),
    ("Coordinator tick='1'", lambda s, d: s.spawn(a.Coordinator, tick="1"), TaskSpecError, "tick must be > 0"),
    (
        "ResourceManager capacities=None",
        lambda s, d: s.spawn(a.ResourceManager, None),
        TypeError,
        "capacities must be a mapping",
    ),
    (
        "ResourceManager capacity -1",
        lambda s, d: s.spawn(a.ResourceManager, {"gpu": -1}),
        ResourceRequestError,
        "'gpu': -1",
    ),
    (
        "MessageBroker history='h.db'",
        lambda s, d: s.spawn(a.MessageBroker, "h.db"),
        TypeError,
        "history must be an ActorRef",
    ),
    (
        "MessageBroker callback_mode",
        lambda s, d: s.spawn(a.MessageBroker, callback_mode="x"),
        ValueError,
        "callback_mode",
    ),
    ("MessageHistory path=None", lambda s, d: s.spawn(a.MessageHistory, None), TypeError, "path must be the database"),
    (
        "MessageHistory batch=0",
        lambda s, d: s.spawn(a.MessageHistory, d / "h.db", batch=0),
        ValueError,
        "batch must be >= 1",
    ),
    (
        "MessageHistory retention=5",
        lambda s, d: s.spawn(a.MessageHistory, d / "h.db", retention=5),
        TypeError,
        "retention",
    ),
    (
        "MessageHistory now=1",
        lambda s, d: s.spawn(a.MessageHistory, d / "h.db", now=1),
        TypeError,
        "now must be a callable",
    ),
    (
        "MessageHistory commit_delay='1'",
        lambda s, d: s.spawn(a.MessageHistory, d / "h.db", commit_delay="1"),
        TypeError,
        "commit_delay",
    ),
    ("DurableInbox path=5", lambda s, d: s.spawn(a.DurableInbox, 5), TypeError, "path must be the database"),
    (
        "DurableInbox visibility_timeout='1'",
        lambda s, d: s.spawn(a.DurableInbox, d / "i.db", visibility_timeout="1"),
        TypeError,
        "visibility_timeout",
    ),
    (
        "SessionManager history='x'",
        lambda s, d: s.spawn(a.SessionManager, "x"),
        TypeError,
        "history must be an ActorRef",
    ),
    (
        "SessionManager broker='x'",
        lambda s, d: s.spawn(a.SessionManager, None, "x"),
        TypeError,
        "broker must be an ActorRef",
    ),
    (
        "ProducerController consumer='x'",
        lambda s, d: s.spawn(a.ProducerController, "x"),
        TypeError,
        "consumer must be an ActorRef",
    ),
    (
        "ProducerController resend_interval=0",
        lambda s, d: s.spawn(a.ProducerController, s.spawn(_Idle), resend_interval=0),
        ValueError,
        "resend_interval",
    ),
    (
        "ConsumerController deliver_to='x'",
        lambda s, d: s.spawn(a.ConsumerController, "x"),
        TypeError,
        "deliver_to must be an ActorRef",
    ),
    (
        "Agent coordinator='x'",
        lambda s, d: s.spawn(a.Agent, coordinator="x"),
        TypeError,
        "coordinator must be an ActorRef",
    ),
]

BUILDS: list[tuple[str, Callable[[], Any], type[BaseException], str]] = [
    ("ActorSystem clock='x'", lambda: ActorSystem(clock="x"), TypeError, r"ActorSystem: clock must be a Clock"),  # type: ignore[arg-type]
    ("ActorSystem dispatchers=0", lambda: ActorSystem(dispatchers=0), ValueError, "dispatchers must be >= 1, got 0"),
    ("ActorSystem dispatchers='2'", lambda: ActorSystem(dispatchers="2"), TypeError, "dispatchers must be an int"),  # type: ignore[arg-type]
    ("ActorSystem throughput=0", lambda: ActorSystem(throughput=0), ValueError, "throughput must be >= 1"),
    ("ActorSystem dead_letters_kept=-1", lambda: ActorSystem(dead_letters_kept=-1), ValueError, "dead_letters_kept"),
    ("Cluster transport='x'", lambda: a.Cluster("x"), TypeError, "transport must be a cluster transport"),
    ("MemoryTransport clock='x'", lambda: a.MemoryTransport("x"), TypeError, "clock must be a Clock"),  # type: ignore[arg-type]
    ("MemoryTransport dispatchers=0", lambda: a.MemoryTransport(dispatchers=0), ValueError, "dispatchers must be >= 1"),
    ("MemoryTransport config='x'", lambda: a.MemoryTransport(config="x"), TypeError, "config must be a LinkConfig"),  # type: ignore[arg-type]
    ("MemoryTransport colocate='x'", lambda: a.MemoryTransport(colocate="x"), TypeError, "colocate must be True or"),  # type: ignore[arg-type]
]


@pytest.mark.parametrize("case", SPAWNS, ids=[case[0] for case in SPAWNS])
def test_a_service_spawned_with_a_bad_argument_fails_spawn_naming_it(
    system: ActorSystem, tmp_path: Path, case: _Case
) -> None:
    _, build, error, says = case
    with pytest.raises(error, match=says):
        build(system, tmp_path)


@pytest.mark.parametrize("case", BUILDS, ids=[case[0] for case in BUILDS])
def test_a_system_or_cluster_built_with_a_bad_argument_fails_at_once_naming_it(
    case: tuple[str, Callable[[], Any], type[BaseException], str],
) -> None:
    _, build, error, says = case
    with pytest.raises(error, match=says):
        build()


@pytest.mark.parametrize(
    "case",
    [
        ("single", "5", TypeError, r"delay must be a number of seconds \(>= 0\), got '5'"),
        ("single", -1, ValueError, "delay must be >= 0 seconds, got -1"),
        ("single", float("nan"), ValueError, "delay must be >= 0 seconds"),
        ("periodic", "1", TypeError, "interval must be a number of seconds"),
        ("periodic", 0, ValueError, "interval must be > 0 seconds, got 0"),
    ],
)
def test_a_timer_started_with_a_bad_delay_fails_the_call_naming_it(
    system: ActorSystem, mode: str, case: tuple[str, object, type[BaseException], str]
) -> None:
    kind, value, error, says = case
    ref = system.spawn(_Timing, mode=mode)
    with pytest.raises(error, match=says):
        ref.ask((kind, value), timeout=10)
    assert ref.ask(("single", 1.0), timeout=10) is None  # the actor keeps serving
