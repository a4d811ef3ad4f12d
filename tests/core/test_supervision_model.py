"""Supervision against a model (hypothesis stateful), and a bounded chaos run.

Synchronisation: the workers' decider makes an exception raised in an *ask*
a failure, and the runtime reports that failure to the supervisor before the
asker gets the exception. The supervisor handles no user message while it
restarts a group, so a ``which_children`` sent after the ask has raised is
answered only once the whole restart is over.
"""

from __future__ import annotations

import random
import threading
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from pykka import ActorDeadError

from actors import (
    MODES,
    Actor,
    ActorSystem,
    ChildSpec,
    DeadLetterReason,
    Decider,
    ManualClock,
    SupervisionPolicy,
    Supervisor,
)
from tests.core.actors_for_tests import WAIT


class Boom(Exception):
    pass


class Member(Actor):
    """Counts its incarnations in a shared dict; an ask of ``"boom"`` fails it."""

    def __init__(self, inits: dict[str, int], tag: str) -> None:
        super().__init__()
        inits[tag] = inits.get(tag, 0) + 1

    def on_receive(self, message: Any) -> Any:
        if message == "boom":
            raise Boom
        return message


WINDOW = 10.0


class SupervisorModel(RuleBasedStateMachine):
    """Restart intensity and the three strategies against a small model."""

    mode = "pooled"

    @initialize(
        types=st.lists(st.sampled_from(["permanent", "transient", "temporary"]), min_size=1, max_size=4),
        strategy=st.sampled_from(["one_for_one", "one_for_all", "rest_for_one"]),
        max_restarts=st.integers(0, 3),
    )
    def start(self, types: list[str], strategy: str, max_restarts: int) -> None:
        self.clock = ManualClock()
        self.system = ActorSystem("model", clock=self.clock, dispatchers=2)
        self.inits: dict[str, int] = {}
        self.tags = [f"c{i}" for i in range(len(types))]
        self.types = dict(zip(self.tags, types, strict=True))
        specs = [
            ChildSpec(Member, (self.inits, tag), name=tag, mode=self.mode, restart=types[i])
            for i, tag in enumerate(self.tags)
        ]
        policy = SupervisionPolicy(
            strategy, max_restarts=max_restarts, within_seconds=WINDOW, decider=Decider(ask_failures=[Boom])
        )
        self.strategy = strategy
        self.max_restarts = max_restarts
        self.sup = self.system.spawn(Supervisor, specs, policy=policy)
        self.refs = {c.name: c.ref for c in self.sup.proxy().which_children().get(timeout=WAIT)}
        # The model.
        self.alive = list(self.tags)  # start order
        self.expected_inits = dict.fromkeys(self.tags, 1)
        self.restarts: list[float] = []
        self.sup_alive = True

    def teardown(self) -> None:
        self.system.shutdown(timeout=WAIT)

    @precondition(lambda self: self.sup_alive and self.alive)
    @rule(data=st.data())
    def fail_a_child(self, data: st.DataObject) -> None:
        tag = data.draw(st.sampled_from(self.alive))
        with pytest.raises(Boom):
            self.refs[tag].ask("boom", timeout=WAIT)
        # The model of Erlang's supervisor.
        if self.types[tag] == "temporary":
            self.alive.remove(tag)
            return
        now = self.clock.now()
        self.restarts = [t for t in self.restarts if t > now - WINDOW] + [now]
        if len(self.restarts) > self.max_restarts:
            self.sup_alive = False
            self.alive = []
            return
        if self.strategy == "one_for_one":
            group = [tag]
        elif self.strategy == "one_for_all":
            group = list(self.alive)
        else:
            group = self.alive[self.alive.index(tag) :]
        for member in group:
            if self.types[member] == "temporary":
                self.alive.remove(member)
            else:
                self.expected_inits[member] += 1

    @rule(seconds=st.sampled_from([1.0, 4.0, 11.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @invariant()
    def the_tree_matches_the_model(self) -> None:
        if not self.sup_alive:
            assert self.sup.actor_stopped.wait(WAIT)
            for tag in self.tags:
                assert self.refs[tag].actor_stopped.wait(WAIT)
            return
        children = self.sup.proxy().which_children().get(timeout=WAIT)
        assert [c.name for c in children] == self.alive
        assert {t: self.inits[t] for t in self.alive} == {t: self.expected_inits[t] for t in self.alive}
        for tag in self.alive:
            assert self.refs[tag].ask("ping", timeout=WAIT) == "ping"
        for tag in set(self.tags) - set(self.alive):
            assert self.refs[tag].actor_stopped.wait(WAIT)


for _mode in MODES:
    _machine: type[SupervisorModel] = type(f"SupervisorModel_{_mode}", (SupervisorModel,), {"mode": _mode})
    _machine.TestCase.settings = settings(
        max_examples=12, stateful_step_count=10, deadline=None, suppress_health_check=[HealthCheck.too_slow]
    )
    globals()[f"TestSupervisorModel_{_mode}"] = _machine.TestCase


# -- chaos ---------------------------------------------------------------------------------


class Flaky(Actor):
    """Handles integers; the ones in `fails` raise. Records what it handled."""

    def __init__(self, handled: list[int], fails: frozenset[int]) -> None:
        super().__init__()
        self.handled = handled
        self.fails = fails

    def on_receive(self, message: Any) -> Any:
        if message == "ping":
            return "pong"
        if message in self.fails:
            raise Boom(message)
        self.handled.append(message)  # list.append is atomic; one actor at a time anyway
        return None


def test_chaos_every_message_is_handled_once_or_dead_lettered_and_refs_survive(mode: str) -> None:
    n, workers = 100_000, 8
    rng = random.Random(2026)
    fails = frozenset(i for i in range(n) if rng.random() < 0.01)
    handled: list[int] = []
    policy = SupervisionPolicy(max_restarts=len(fails) + 1, within_seconds=3600)
    specs = [ChildSpec(Flaky, (handled, fails), name=f"w{i}", mode=mode) for i in range(workers)]
    with ActorSystem("chaos", dispatchers=2, dead_letters_kept=len(fails) + 100) as system:
        sup = system.spawn(Supervisor, specs, policy=policy)
        refs = [c.ref for c in sup.proxy().which_children().get(timeout=WAIT)]
        for i in range(n):
            refs[i % workers].tell(i)
        for ref in refs:
            assert ref.ask("ping", timeout=60) == "pong"
        failed = [d for d in system.dead_letters.recent() if d.reason is DeadLetterReason.HANDLER_FAILED]
        assert sorted(handled) == sorted(set(range(n)) - fails)  # exactly once each
        assert sorted(d.message for d in failed) == sorted(fails)
        assert all(isinstance(d.exception, Boom) for d in failed)
        assert [c.ref for c in sup.proxy().which_children().get(timeout=WAIT)] == refs
        assert all(ref.is_alive() for ref in refs)


def test_a_supervisor_restarting_children_does_not_lose_its_own_mail(mode: str) -> None:
    # User messages sent to a busy supervisor wait; none is dropped.
    inits: dict[str, int] = {}
    specs = [ChildSpec(Member, (inits, f"m{i}"), name=f"m{i}", mode=mode) for i in range(3)]
    policy = SupervisionPolicy("one_for_all", max_restarts=100, decider=Decider(ask_failures=[Boom]))
    with ActorSystem("busy", dispatchers=2) as system:
        sup = system.spawn(Supervisor, specs, policy=policy)
        refs = [c.ref for c in sup.proxy().which_children().get(timeout=WAIT)]
        replies = []
        for _ in range(10):
            with pytest.raises(Boom):
                refs[0].ask("boom", timeout=WAIT)
            replies.append(sup.proxy().which_children())
        assert all(len(r.get(timeout=WAIT)) == 3 for r in replies)
        assert inits == {"m0": 11, "m1": 11, "m2": 11}
    with pytest.raises(ActorDeadError):
        refs[0].ask("ping")


def test_threads_started_by_restarts_are_joined(mode: str) -> None:
    before = threading.active_count()
    with ActorSystem("joined", dispatchers=1) as system:
        ref = system.spawn(Member, {}, "x", mode=mode, restart="permanent")
        ref.tell("boom")
        assert ref.ask("ping", timeout=WAIT) == "ping"
    assert threading.active_count() <= before
