"""Supervision in every execution mode: restarts in place, strategies, intensity, death watch.

Synchronisation without sleeps: mail sent after a failure is queued behind it
and the failed actor is suspended until its supervisor has decided, so an ask
sent after the failure is answered by whatever instance comes next.
"""

from __future__ import annotations

import random
import threading
from typing import Any

import pykka
import pytest
from pykka import ActorDeadError

from actors import (
    Actor,
    ActorRef,
    ActorSystem,
    Backoff,
    ChildSpec,
    DeadLetterReason,
    Decider,
    Directive,
    ManualClock,
    RestartIntensityError,
    RestartType,
    SupervisionPolicy,
    Supervisor,
    Terminated,
)
from tests.core.actors_for_tests import WAIT, Gate


class Boom(Exception):
    pass


class Log:
    """A thread-safe event list the test can wait on."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []
        self._cond = threading.Condition()

    def add(self, *event: Any) -> None:
        with self._cond:
            self.events.append(event)
            self._cond.notify_all()

    def wait_for(self, *event: Any, count: int = 1) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: self.events.count(event) >= count, WAIT), (
                f"never saw {event} x{count}; saw {self.events}"
            )

    def kinds(self, tag: str) -> list[str]:
        return [e[0] for e in self.events if len(e) > 1 and e[1] == tag]


class Worker(Actor):
    """Counts what it handles. ``"boom"`` raises, ``"exit"`` stops itself, ``Gate`` blocks."""

    def __init__(self, log: Log, tag: str = "w", *, fail_start: bool = False) -> None:
        super().__init__()
        self.log = log
        self.tag = tag
        self.fail_start = fail_start
        self.seen: list[Any] = []
        log.add("init", tag)

    def on_start(self) -> None:
        self.log.add("start", self.tag)
        if self.fail_start:
            raise Boom("start")

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Gate):
            message.hold()
            return None
        if message == "boom":
            raise Boom(self.tag)
        if message == "exit":
            self.stop()
            return None
        if message == "seen":
            return list(self.seen)
        self.seen.append(message)
        return message

    def on_stop(self) -> None:
        self.log.add("stop", self.tag)

    def on_failure(self, *exc_info: Any) -> None:
        self.log.add("failure", self.tag)

    def pre_restart(self, exc: BaseException | None) -> None:
        self.log.add("pre_restart", self.tag, type(exc).__name__)

    def post_restart(self, exc: BaseException | None) -> None:
        self.log.add("post_restart", self.tag, type(exc).__name__)
        super().post_restart(exc)

    def timer_keys(self) -> list[Any]:
        return self.timers.keys()

    def start_timer(self) -> None:
        self.timers.start_periodic_timer("tick", "tick", 1.0)


def spec(log: Log, tag: str, mode: str, restart: str = "permanent", **kwargs: Any) -> ChildSpec:
    return ChildSpec(Worker, (log, tag), kwargs, name=tag, mode=mode, restart=restart)


def children(sup: ActorRef[Any]) -> dict[str, ActorRef[Any]]:
    return {c.name: c.ref for c in sup.proxy().which_children().get(timeout=WAIT)}


# -- the default stays pykka's -------------------------------------------------------------


def test_an_actor_spawned_from_the_system_is_temporary_and_a_failure_stops_it(system: ActorSystem, mode: str) -> None:
    log = Log()
    ref = system.spawn(Worker, log, mode=mode)
    ref.tell("boom")
    assert ref.actor_stopped.wait(WAIT)
    with pytest.raises(ActorDeadError):
        ref.ask("x")
    assert "pre_restart" not in log.kinds("w")
    assert log.kinds("w").count("init") == 1


def test_an_exception_in_an_ask_goes_to_the_caller_and_the_state_is_kept(system: ActorSystem, mode: str) -> None:
    ref = system.spawn(Worker, Log(), mode=mode, restart="permanent")
    ref.tell("a")
    with pytest.raises(Boom):
        ref.ask("boom")
    assert ref.ask("seen") == ["a"]


# -- restarts in place -------------------------------------------------------------------


def test_a_permanent_actor_is_restarted_in_place_and_old_refs_and_proxies_reach_it(
    system: ActorSystem, mode: str
) -> None:
    log = Log()
    ref = system.spawn(Worker, log, mode=mode, name="w", restart="permanent")
    proxy = ref.proxy()
    ref.tell("a")
    ref.tell("boom")
    assert ref.ask("seen", timeout=WAIT) == []  # a fresh instance
    assert proxy.tag.get(timeout=WAIT) == "w"
    assert ref.is_alive()
    assert system.lookup("w") == ref
    assert log.kinds("w") == ["init", "start", "failure", "pre_restart", "init", "post_restart", "start"]


def test_messages_queued_before_a_crash_reach_the_restarted_actor_in_order(system: ActorSystem, mode: str) -> None:
    ref = system.spawn(Worker, Log(), mode=mode, restart="permanent")
    gate = Gate()
    ref.tell(gate)
    gate.wait_entered()
    ref.tell("boom")
    for i in range(20):
        ref.tell(i)
    reply = ref.ask("seen", block=False)
    gate.released.set()
    assert reply.get(timeout=WAIT) == list(range(20))


def test_the_message_that_raised_goes_to_dead_letters_with_its_exception(system: ActorSystem, mode: str) -> None:
    ref = system.spawn(Worker, Log(), mode=mode, restart="permanent")
    ref.tell("boom")
    ref.ask("seen", timeout=WAIT)
    [letter] = [d for d in system.dead_letters.recent() if d.reason is DeadLetterReason.HANDLER_FAILED]
    assert letter.message == "boom"
    assert isinstance(letter.exception, Boom)


def test_a_decider_can_make_ask_exceptions_failures_and_the_asker_still_gets_them(
    system: ActorSystem, mode: str
) -> None:
    policy = SupervisionPolicy(decider=Decider(ask_failures=[Boom]))
    sup = system.spawn(Supervisor, [spec(Log(), "w", mode)], policy=policy)
    ref = children(sup)["w"]
    ref.tell("a")
    with pytest.raises(Boom):
        ref.ask("boom", timeout=WAIT)
    assert ref.ask("seen", timeout=WAIT) == []


def test_a_failure_in_on_start_counts_and_the_actor_is_restarted(system: ActorSystem, mode: str) -> None:
    log = Log()

    class FailsFirstStart(Worker):
        def on_start(self) -> None:
            self.log.add("start", self.tag)
            if self.log.kinds(self.tag).count("start") == 1:
                raise Boom("first start")

    ref = system.spawn(FailsFirstStart, log, mode=mode, restart="permanent")
    assert ref.ask("x", timeout=WAIT) == "x"
    assert log.kinds("w") == ["init", "start", "pre_restart", "init", "post_restart", "start"]


def test_timers_of_a_restarted_actor_are_cancelled(system: ActorSystem, mode: str) -> None:
    ref = system.spawn(Worker, Log(), mode=mode, restart="permanent")
    ref.proxy().start_timer().get(timeout=WAIT)
    assert ref.proxy().timer_keys().get(timeout=WAIT) == ["tick"]
    ref.tell("boom")
    assert ref.proxy().timer_keys().get(timeout=WAIT) == []


def test_a_transient_actor_is_restarted_after_a_failure_but_not_after_it_exits(system: ActorSystem, mode: str) -> None:
    ref = system.spawn(Worker, Log(), mode=mode, restart="transient")
    ref.tell("boom")
    assert ref.ask("x", timeout=WAIT) == "x"
    ref.tell("exit")
    assert ref.actor_stopped.wait(WAIT)


def test_a_permanent_actor_that_stops_itself_is_restarted_but_ref_stop_is_final(system: ActorSystem, mode: str) -> None:
    log = Log()
    ref = system.spawn(Worker, log, mode=mode, restart="permanent")
    ref.tell("a")
    ref.tell("exit")  # stop() queues the stop behind mail already sent, as in pykka
    log.wait_for("start", "w", count=2)
    assert ref.ask("seen", timeout=WAIT) == []
    assert log.kinds("w") == ["init", "start", "stop", "pre_restart", "init", "post_restart", "start"]
    assert ref.stop(timeout=WAIT) is True
    assert not ref.is_alive()


# -- directives ----------------------------------------------------------------------------


def test_resume_keeps_the_state_and_skips_the_message(system: ActorSystem, mode: str) -> None:
    policy = SupervisionPolicy(decider=Decider({Boom: Directive.RESUME}))
    sup = system.spawn(Supervisor, [spec(Log(), "w", mode)], policy=policy)
    ref = children(sup)["w"]
    ref.tell("a")
    ref.tell("boom")
    ref.tell("b")
    assert ref.ask("seen", timeout=WAIT) == ["a", "b"]


def test_stop_stops_the_child_for_good_and_watchers_get_the_reason(system: ActorSystem, mode: str) -> None:
    policy = SupervisionPolicy(decider=Decider({Boom: Directive.STOP}))
    sup = system.spawn(Supervisor, [spec(Log(), "w", mode)], policy=policy)
    ref = children(sup)["w"]
    watcher = system.spawn(Watcher, mode=mode)
    watcher.proxy().watch(ref).get(timeout=WAIT)
    ref.tell("boom")
    [terminated] = wait_terminated(watcher, 1)
    assert terminated.ref == ref
    assert isinstance(terminated.reason, Boom)
    assert children(sup) == {}


def test_the_most_specific_decider_rule_wins() -> None:
    class Sub(Boom):
        pass

    decider = Decider({Exception: Directive.STOP, Boom: Directive.RESUME}, default=Directive.ESCALATE)
    assert decider(Sub()) is Directive.RESUME
    assert decider(ValueError()) is Directive.STOP
    assert decider(KeyboardInterrupt()) is Directive.ESCALATE


def test_escalate_fails_the_supervisor_and_its_parent_restarts_the_subtree(system: ActorSystem, mode: str) -> None:
    log = Log()
    inner_policy = SupervisionPolicy(decider=Decider({Boom: Directive.ESCALATE}))
    inner = ChildSpec(Supervisor, ([spec(log, "w", mode)],), {"policy": inner_policy}, name="inner")
    outer = system.spawn(Supervisor, [inner])
    inner_ref = children(outer)["inner"]
    children(inner_ref)["w"].tell("boom")
    log.wait_for("init", "w", count=2)
    worker = children(inner_ref)["w"]  # a new child: the inner supervisor started afresh
    assert worker.ask("x", timeout=WAIT) == "x"
    assert log.kinds("w") == ["init", "start", "failure", "init", "start"]


# -- strategies ----------------------------------------------------------------------------


def test_one_for_all_restarts_every_permanent_child_stopping_in_reverse_and_starting_in_order(
    system: ActorSystem, mode: str
) -> None:
    log = Log()
    specs = [spec(log, "a", mode), spec(log, "b", mode), spec(log, "c", mode, restart="temporary")]
    sup = system.spawn(Supervisor, specs, policy=SupervisionPolicy("one_for_all"))
    refs = children(sup)
    del log.events[:]
    refs["a"].tell("boom")
    # "a" is rebuilt first, after the whole group was torn down; "b" is
    # suspended from its teardown until it is rebuilt, right after "a".
    assert refs["a"].ask("x", timeout=WAIT) == "x"
    assert refs["b"].ask("x", timeout=WAIT) == "x"
    assert refs["c"].actor_stopped.wait(WAIT)  # temporary: stopped, never restarted
    teardown = [e for e in log.events if e[0] in ("stop", "pre_restart")]
    assert teardown == [("stop", "c"), ("stop", "b"), ("pre_restart", "b", "Boom"), ("pre_restart", "a", "Boom")]
    assert [e[1] for e in log.events if e[0] == "init"] == ["a", "b"]
    assert set(children(sup)) == {"a", "b"}


def test_rest_for_one_restarts_the_failed_child_and_the_younger_ones(system: ActorSystem, mode: str) -> None:
    log = Log()
    specs = [spec(log, "a", mode), spec(log, "b", mode), spec(log, "c", mode)]
    sup = system.spawn(Supervisor, specs, policy=SupervisionPolicy("rest_for_one", max_restarts=5))
    refs = children(sup)
    for ref in refs.values():
        assert ref.ask("before", timeout=WAIT) == "before"  # handled by the first instances
    refs["b"].tell("boom")
    assert refs["b"].ask("seen", timeout=WAIT) == []
    assert refs["c"].ask("seen", timeout=WAIT) == []
    assert refs["a"].ask("seen", timeout=WAIT) == ["before"]
    assert [e[1] for e in log.events if e[0] == "init"] == ["a", "b", "c", "b", "c"]


# -- intensity and backoff ---------------------------------------------------------------


def test_too_many_restarts_make_the_supervisor_give_up_and_escalate(
    system: ActorSystem, clock: ManualClock, mode: str
) -> None:
    log = Log()
    sup = system.spawn(Supervisor, [spec(log, "w", mode)], policy=SupervisionPolicy(max_restarts=2, within_seconds=10))
    watcher = system.spawn(Watcher, mode=mode)
    watcher.proxy().watch(sup).get(timeout=WAIT)
    ref = children(sup)["w"]
    for _ in range(2):
        ref.tell("boom")
        ref.ask("x", timeout=WAIT)
        clock.advance(4)
    ref.tell("boom")  # the third within 10 s
    [terminated] = wait_terminated(watcher, 1)
    assert isinstance(terminated.reason, RestartIntensityError)
    assert "more than 2 restart(s) within 10" in str(terminated.reason)
    assert ref.actor_stopped.wait(WAIT)


def test_restarts_older_than_the_window_do_not_count(system: ActorSystem, clock: ManualClock, mode: str) -> None:
    sup = system.spawn(Supervisor, [spec(Log(), "w", mode)], policy=SupervisionPolicy(max_restarts=1, within_seconds=5))
    ref = children(sup)["w"]
    for _ in range(5):
        ref.tell("boom")
        assert ref.ask("x", timeout=WAIT) == "x"
        clock.advance(5)
    assert sup.is_alive()


def test_at_the_root_a_child_given_up_on_stays_down_and_it_is_logged(clock: ManualClock, mode: str, logs: Any) -> None:
    with ActorSystem("root", clock=clock, dispatchers=2, root_policy=SupervisionPolicy(max_restarts=0)) as system:
        ref = system.spawn(Worker, Log(), mode=mode, restart="permanent")
        ref.tell("boom")
        assert ref.actor_stopped.wait(WAIT)
        other = system.spawn(Worker, Log(), mode=mode)
        assert other.ask("x", timeout=WAIT) == "x"
    assert any("its failure reached the root" in m for m in logs.messages("ERROR"))


def test_backoff_delays_the_restart_on_the_injected_clock(system: ActorSystem, clock: ManualClock, mode: str) -> None:
    backoff = Backoff(minimum=2, maximum=8, jitter=0)
    sup = system.spawn(Supervisor, [spec(Log(), "w", mode)], policy=SupervisionPolicy(max_restarts=9, backoff=backoff))
    ref = children(sup)["w"]
    for delay in (2, 4, 8, 8):
        ref.tell("boom")
        reply = ref.ask("x", block=False)
        assert clock.wait_for_timers(1, timeout=WAIT)
        clock.advance(delay - 0.5)
        assert not reply.done()
        clock.advance(0.5)
        assert reply.get(timeout=WAIT) == "x"


def test_backoff_grows_exponentially_with_bounded_jitter() -> None:
    backoff = Backoff(minimum=1, maximum=30, factor=2, jitter=0.5, random=random.Random(7))
    for attempt, base in enumerate([1, 2, 4, 8, 16, 30, 30]):
        assert base <= backoff.delay(attempt) <= base * 1.5


# -- death watch ---------------------------------------------------------------------------


class Watcher(Actor):
    def __init__(self) -> None:
        super().__init__()
        self.terminated: list[Terminated] = []
        self.waiting: list[tuple[int, pykka.Future[list[Terminated]]]] = []

    def on_receive(self, message: Any) -> None:
        if isinstance(message, Terminated):
            self.terminated.append(message)
            for n, future in list(self.waiting):
                if len(self.terminated) >= n:
                    future.set(list(self.terminated))
                    self.waiting.remove((n, future))

    def wait_terminated(self, n: int) -> Any:
        """Return a future of the first `n` Terminated messages (proxy: a future of a future)."""
        future = self._create_future()
        if len(self.terminated) >= n:
            future.set(list(self.terminated))
        else:
            self.waiting.append((n, future))
        return future


def wait_terminated(watcher: pykka.ActorRef[Any], n: int) -> list[Terminated]:
    return watcher.proxy().wait_terminated(n).get(timeout=WAIT).get(timeout=WAIT)  # type: ignore[no-any-return]


def test_watch_delivers_terminated_when_the_actor_stops(system: ActorSystem, mode: str) -> None:
    watcher = system.spawn(Watcher, mode=mode)
    target = system.spawn(Worker, Log(), mode=mode)
    watcher.proxy().watch(target).get(timeout=WAIT)
    target.stop()
    assert wait_terminated(watcher, 1) == [Terminated(target, None)]


def test_watching_a_dead_actor_delivers_terminated_at_once(system: ActorSystem, mode: str) -> None:
    watcher = system.spawn(Watcher, mode=mode)
    target = system.spawn(Worker, Log(), mode=mode)
    target.stop()
    watcher.proxy().watch(target).get(timeout=WAIT)
    assert wait_terminated(watcher, 1) == [Terminated(target, None)]


def test_restarts_are_not_terminations_and_unwatch_cancels(system: ActorSystem, mode: str) -> None:
    watcher = system.spawn(Watcher, mode=mode)
    restarted = system.spawn(Worker, Log(), mode=mode, restart="permanent")
    unwatched = system.spawn(Worker, Log(), mode=mode)
    last = system.spawn(Worker, Log(), mode=mode)
    proxy = watcher.proxy()
    for ref in (restarted, unwatched, last):
        proxy.watch(ref).get(timeout=WAIT)
    proxy.watch(last).get(timeout=WAIT)  # twice: delivered once
    restarted.tell("boom")
    restarted.ask("x", timeout=WAIT)
    proxy.unwatch(unwatched).get(timeout=WAIT)
    unwatched.stop()
    last.stop()
    assert wait_terminated(watcher, 1) == [Terminated(last, None)]
    assert proxy.terminated.get(timeout=WAIT) == [Terminated(last, None)]


def test_a_watcher_that_stops_leaves_nothing_registered_on_the_watched(system: ActorSystem, mode: str) -> None:
    target = system.spawn(Worker, Log(), mode=mode)
    for _ in range(3):
        watcher = system.spawn(Watcher, mode=mode)
        watcher.proxy().watch(target).get(timeout=WAIT)
        watcher.stop()
    assert not target.actor_inbox._watchers
    assert not target.actor_inbox._watched_by


def test_every_watcher_of_one_actor_gets_terminated_but_the_one_that_unwatched(system: ActorSystem, mode: str) -> None:
    # One watcher is held without a dict, more in one (`Cell._watched_by`): the cases in turn.
    target = system.spawn(Worker, Log(), mode=mode)
    watchers = [system.spawn(Watcher, mode=mode) for _ in range(3)]
    for watcher in watchers:
        watcher.proxy().watch(target).get(timeout=WAIT)
    watchers[1].proxy().unwatch(target).get(timeout=WAIT)
    target.stop()
    for watcher in (watchers[0], watchers[2]):
        assert wait_terminated(watcher, 1) == [Terminated(target, None)]
    assert watchers[1].proxy().terminated.get(timeout=WAIT) == []


def test_a_lone_watcher_that_unwatches_and_watches_again_gets_one_terminated(system: ActorSystem, mode: str) -> None:
    target = system.spawn(Worker, Log(), mode=mode)
    watcher = system.spawn(Watcher, mode=mode)
    proxy = watcher.proxy()
    proxy.watch(target).get(timeout=WAIT)
    proxy.unwatch(target).get(timeout=WAIT)
    assert target.actor_inbox._watched_by is None
    proxy.watch(target).get(timeout=WAIT)
    target.stop()
    assert wait_terminated(watcher, 1) == [Terminated(target, None)]
    assert proxy.terminated.get(timeout=WAIT) == [Terminated(target, None)]


def test_watch_needs_a_troupe_ref(system: ActorSystem) -> None:
    watcher = system.spawn(Watcher)
    with pytest.raises(TypeError, match="watch\\(\\) needs an ActorRef"):
        watcher.proxy().watch("not a ref").get(timeout=WAIT)


# -- bad input -----------------------------------------------------------------------------


def test_bad_supervision_input_is_refused_with_clear_errors(system: ActorSystem) -> None:
    with pytest.raises(ValueError, match="unknown restart type 'sometimes'"):
        system.spawn(Worker, Log(), restart="sometimes")
    with pytest.raises(ValueError, match="unknown supervision strategy"):
        SupervisionPolicy("one_for_some")
    with pytest.raises(ValueError, match="within_seconds must be > 0"):
        SupervisionPolicy(within_seconds=0)
    with pytest.raises(ValueError, match="maximum"):
        Backoff(minimum=5, maximum=1)
    not_directives: Any = {Boom: "restart"}  # the wrong type is the point
    with pytest.raises(TypeError, match="must be a Directive"):
        Decider(not_directives)
    with pytest.raises(TypeError, match="ChildSpec"):
        system.spawn(Supervisor, [Worker])
    assert ChildSpec(Worker).restart is RestartType.PERMANENT


def test_a_decider_that_raises_escalates(system: ActorSystem, mode: str, logs: Any) -> None:
    def broken(exc: BaseException) -> Directive:
        msg = "decider bug"
        raise RuntimeError(msg)

    log = Log()
    policy = SupervisionPolicy(decider=broken)
    outer = system.spawn(Supervisor, [ChildSpec(Supervisor, ([spec(log, "w", mode)],), {"policy": policy}, name="in")])
    inner = children(outer)["in"]
    children(inner)["w"].tell("boom")
    log.wait_for("init", "w", count=2)  # the inner supervisor was restarted with a fresh child
    assert children(inner)["w"].ask("x", timeout=WAIT) == "x"
    assert any("Decider of" in m for m in logs.messages("ERROR"))


def test_terminate_child_stops_it_for_good_and_start_child_adds_one(system: ActorSystem, mode: str) -> None:
    log = Log()
    sup = system.spawn(Supervisor, [spec(log, "a", mode)])
    proxy = sup.proxy()
    added = proxy.start_child(spec(log, "b", mode, restart="transient")).get(timeout=WAIT)
    assert [(c.name, c.restart) for c in proxy.which_children().get(timeout=WAIT)] == [
        ("a", RestartType.PERMANENT),
        ("b", RestartType.TRANSIENT),
    ]
    a = children(sup)["a"]
    assert proxy.terminate_child("a").get(timeout=WAIT) is True
    assert a.actor_stopped.wait(WAIT)
    assert proxy.terminate_child(a).get(timeout=WAIT) is False
    assert [c.ref for c in proxy.which_children().get(timeout=WAIT)] == [added]
    assert log.kinds("a") == ["init", "start", "stop"]


def test_an_actor_that_fails_for_good_is_terminated_with_its_exception(system: ActorSystem, mode: str) -> None:
    watcher = system.spawn(Watcher, mode=mode)
    target = system.spawn(Worker, Log(), mode=mode)
    watcher.proxy().watch(target).get(timeout=WAIT)
    target.tell("boom")
    [terminated] = wait_terminated(watcher, 1)
    assert terminated.ref == target
    assert isinstance(terminated.reason, Boom)


def test_any_actor_supervises_the_children_it_spawns_with_a_restart_type(system: ActorSystem, mode: str) -> None:
    log = Log()

    class Parent(Actor):
        supervision_policy = SupervisionPolicy(max_restarts=5)

        def on_start(self) -> None:
            self.child = self.spawn(Worker, log, "kid", mode=mode, restart="transient")

        def on_receive(self, message: Any) -> Any:
            return self.child

    parent = system.spawn(Parent, mode=mode)
    child = parent.ask("child", timeout=WAIT)
    child.tell("boom")
    assert child.ask("x", timeout=WAIT) == "x"
    assert log.kinds("kid").count("init") == 2
