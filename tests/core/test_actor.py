"""pykka's documented ThreadingActor semantics, in every execution mode."""

from __future__ import annotations

import threading
import traceback
from typing import Any

import pykka
import pytest
from pykka import ActorDeadError

from actors import Actor, ActorSystem, DeadLetterReason, PooledActor, ThreadActor, default_system
from tests.core.actors_for_tests import WAIT, Gate, Recorder


class Lifecycle(Actor):
    def __init__(self, events: list[str], *, fail_in: str | None = None) -> None:
        super().__init__()
        self.events = events
        self.fail_in = fail_in
        self.events.append("init")

    def on_start(self) -> None:
        self.events.append("on_start")
        if self.fail_in == "on_start":
            msg = "start failed"
            raise RuntimeError(msg)

    def on_receive(self, message: Any) -> Any:
        self.events.append(f"receive {message}")
        if message == "raise":
            msg = "tell failed"
            raise RuntimeError(msg)
        return message

    def on_stop(self) -> None:
        self.events.append("on_stop")
        if self.fail_in == "on_stop":
            msg = "stop failed"
            raise RuntimeError(msg)

    def on_failure(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.events.append(f"on_failure {exc}")


def test_on_start_runs_before_the_first_message_and_on_stop_after_the_last(system: ActorSystem, mode: str) -> None:
    events: list[str] = []
    ref = system.spawn(Lifecycle, events, mode=mode)
    ref.tell("a")
    assert ref.ask("b") == "b"
    assert ref.stop() is True
    assert events == ["init", "on_start", "receive a", "receive b", "on_stop"]


def test_hooks_run_on_the_actor_thread_and_init_on_the_spawner(system: ActorSystem, mode: str) -> None:
    seen: dict[str, str] = {}

    class Where(Actor):
        def __init__(self) -> None:
            super().__init__()
            seen["init"] = threading.current_thread().name

        def on_start(self) -> None:
            seen["on_start"] = threading.current_thread().name

        def on_receive(self, message: Any) -> Any:
            return threading.current_thread().name

    ref = system.spawn(Where, mode=mode, name="where")
    handler_thread = ref.ask("x", timeout=WAIT)  # with a timeout: never inline
    assert seen["init"] == threading.current_thread().name
    if mode == "thread":
        assert seen["on_start"] == handler_thread
        assert handler_thread.startswith("where-")
    elif mode == "asyncio":
        assert seen["on_start"] == handler_thread == "troupe-test-asyncio"
    else:
        assert seen["on_start"].startswith("troupe-test-dispatcher-")
        assert handler_thread.startswith("troupe-test-dispatcher-")


def test_messages_from_one_sender_are_handled_in_order(system: ActorSystem, mode: str) -> None:
    ref = system.spawn(Recorder, mode=mode)
    futures = []
    for i in range(500):
        if i % 7 == 0:
            futures.append(ref.ask(i, block=False))
        elif i % 11 == 0:
            assert ref.ask(i) == i
        else:
            ref.tell(i)
    assert ref.ask("get") == list(range(500))
    assert [f.get(timeout=WAIT) for f in futures] == list(range(0, 500, 7))


def test_an_exception_in_an_ask_goes_to_the_caller_and_the_actor_keeps_its_state(
    system: ActorSystem, mode: str
) -> None:
    ref = system.spawn(Recorder, mode=mode)
    ref.tell("kept")
    with pytest.raises(ValueError, match="fail on purpose"):
        ref.ask("fail")
    future = ref.ask("fail", block=False)
    with pytest.raises(ValueError, match="fail on purpose"):
        future.get(timeout=WAIT)
    assert ref.is_alive()
    assert ref.ask("get") == ["kept"]


def test_an_exception_in_a_tell_stops_the_actor_calls_on_failure_and_is_logged_with_its_name(
    system: ActorSystem, mode: str, logs: Any
) -> None:
    events: list[str] = []
    ref = system.spawn(Lifecycle, events, mode=mode, name="fragile")
    ref.tell("raise")
    assert ref.actor_stopped.wait(WAIT)
    ref.stop()  # already stopping or stopped: returns once it has terminated
    assert not ref.is_alive()
    assert events == ["init", "on_start", "receive raise", "on_failure tell failed"]  # no on_stop, as pykka
    errors = logs.messages("ERROR")
    assert any("fragile" in m and "Unhandled exception" in m for m in errors)
    letters = system.dead_letters.recent()
    assert [(d.message, d.reason) for d in letters] == [("raise", DeadLetterReason.HANDLER_FAILED)]
    assert isinstance(letters[0].exception, RuntimeError)


def test_a_failing_on_start_stops_the_actor_without_on_failure(system: ActorSystem, mode: str, logs: Any) -> None:
    events: list[str] = []
    ref = system.spawn(Lifecycle, events, mode=mode, fail_in="on_start")
    assert ref.actor_stopped.wait(WAIT)
    with pytest.raises(ActorDeadError):
        ref.ask("late")
    assert events == ["init", "on_start"]
    assert any("start failed" in str(r["exception"]) for r in logs if r["exception"])


def test_a_failing_on_stop_is_logged_and_the_actor_still_stops(system: ActorSystem, mode: str, logs: Any) -> None:
    events: list[str] = []
    ref = system.spawn(Lifecycle, events, mode=mode, fail_in="on_stop")
    assert ref.stop() is True
    assert not ref.is_alive()
    assert any("stop failed" in str(r["exception"]) for r in logs if r["exception"])


def test_stop_handles_messages_sent_before_it_and_returns_false_the_second_time(system: ActorSystem, mode: str) -> None:
    log: list[Any] = []
    ref = system.spawn(Recorder, log, mode=mode)
    for i in range(50):
        ref.tell(i)
    first = ref.stop(block=False)
    assert first.get(timeout=WAIT) is True
    assert log == list(range(50))
    assert ref.stop() is False
    assert not ref.is_alive()


def test_an_actor_can_stop_itself_in_on_start(system: ActorSystem, mode: str) -> None:
    stopped = threading.Event()

    class EarlyStopper(Actor):
        def on_start(self) -> None:
            self.stop()

        def on_stop(self) -> None:
            stopped.set()

    ref = system.spawn(EarlyStopper, mode=mode)
    assert stopped.wait(WAIT)
    assert ref.actor_stopped.wait(WAIT)


def test_a_message_to_self_sent_before_stop_is_handled_before_stopping(system: ActorSystem, mode: str) -> None:
    greeted = threading.Event()

    class SelfMessenger(Actor):
        def on_receive(self, message: Any) -> None:
            if message == "message self then stop":
                self.actor_ref.tell("greetings")
                self.stop()
            elif message == "greetings":
                greeted.set()

    ref = system.spawn(SelfMessenger, mode=mode)
    ref.tell("message self then stop")
    assert greeted.wait(WAIT)
    assert ref.actor_stopped.wait(WAIT)


def test_a_base_exception_in_a_handler_stops_every_actor_of_the_system(system: ActorSystem, mode: str) -> None:
    class Exiter(Actor):
        def on_receive(self, message: Any) -> None:
            raise SystemExit

    bystander = system.spawn(Recorder, mode=mode)
    ref = system.spawn(Exiter, mode=mode)
    ref.tell("exit")
    assert ref.actor_stopped.wait(WAIT)
    assert bystander.actor_stopped.wait(WAIT)
    other = ActorSystem("bystander", dispatchers=1)
    try:
        assert system.spawn(Recorder, mode=mode).ask(1) == 1  # the system itself keeps working
        assert other.spawn(Recorder, mode=mode).ask(2) == 2
    finally:
        other.shutdown()


class Counter(Actor):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.child = NestedThing()

    def increment(self, by: int = 1) -> int:
        self.count += by
        return self.count

    def explode(self) -> None:
        msg = "boom"
        raise KeyError(msg)


class NestedThing:
    pykka_traversable = True

    def __init__(self) -> None:
        self.value = "nested"

    def shout(self) -> str:
        return self.value.upper()


def test_proxies_call_methods_read_and_set_attributes_and_traverse(system: ActorSystem, mode: str) -> None:
    proxy = system.spawn(Counter, mode=mode).proxy()
    assert proxy.increment().get(timeout=WAIT) == 1
    proxy.increment.defer(5)
    assert proxy.count.get(timeout=WAIT) == 6
    proxy.count = 10
    assert proxy.increment().get(timeout=WAIT) == 11
    assert proxy.child.shout().get(timeout=WAIT) == "NESTED"
    with pytest.raises(KeyError, match="boom"):
        proxy.explode().get(timeout=WAIT)
    assert proxy.actor_ref.is_alive()


def test_futures_map_filter_join_reduce_and_get_all(system: ActorSystem, mode: str) -> None:
    refs = [system.spawn(Recorder, mode=mode) for _ in range(3)]
    futures = [ref.ask(i + 1, block=False) for i, ref in enumerate(refs)]
    assert futures[0].map(lambda v: v * 10).get(timeout=WAIT) == 10
    joined = futures[0].join(futures[1], futures[2])
    assert joined.get(timeout=WAIT) == [1, 2, 3]
    assert joined.filter(lambda v: v > 1).get(timeout=WAIT) == [2, 3]
    assert joined.reduce(lambda a, b: a + b).get(timeout=WAIT) == 6
    assert pykka.get_all(futures, timeout=WAIT) == [1, 2, 3]


def test_a_future_get_hook_is_called_with_the_timeout(system: ActorSystem) -> None:
    future = system.spawn(Recorder).ask(1, block=False)
    future.get(timeout=WAIT)
    hooked = type(future)()
    hooked.set_get_hook(lambda timeout: ("hooked", timeout))
    assert hooked.get(timeout=3) == ("hooked", 3)


def test_an_ask_timeout_raises_pykka_timeout_naming_the_actor(system: ActorSystem, mode: str) -> None:
    ref = system.spawn(Recorder, mode=mode, name="sluggish")
    gate = Gate()
    ref.tell(gate)
    gate.wait_entered()
    with pytest.raises(pykka.Timeout, match="sluggish"):
        ref.ask("late", timeout=0.05)
    gate.released.set()
    if mode == "asyncio":
        # An abandoned ask of an asyncio actor is skipped (issue 3), not delivered.
        assert "late" not in ref.ask("get")
        assert [d.message for d in system.dead_letters.recent()] == ["late"]
    else:
        assert "late" in ref.ask("get")  # the message was still delivered, as in pykka


def test_a_tell_to_a_stopped_actor_raises_actor_dead_error_and_becomes_a_dead_letter(
    system: ActorSystem, mode: str
) -> None:
    ref = system.spawn(Recorder, mode=mode)
    ref.stop()
    with pytest.raises(ActorDeadError) as told:
        ref.tell("too late")
    with pytest.raises(ActorDeadError) as asked:
        ref.ask("also too late")
    # pykka's exact text; troupe's help is a note, shown in tracebacks
    for raised in (told, asked):
        assert str(raised.value) == f"{ref} not found"
        assert raised.value.__notes__ == ["it has stopped; the message went to dead letters (system.dead_letters)"]
        assert "went to dead letters" in "".join(traceback.format_exception(raised.value))
    with pytest.raises(ActorDeadError) as later:
        ref.ask("future", block=False).get(timeout=5)
    assert str(later.value) == f"{ref} not found"
    reasons = [(d.message, d.reason) for d in system.dead_letters.recent()]
    assert reasons == [
        ("too late", DeadLetterReason.RECIPIENT_STOPPED),
        ("also too late", DeadLetterReason.RECIPIENT_STOPPED),
        ("future", DeadLetterReason.RECIPIENT_STOPPED),
    ]


def test_messages_queued_when_an_actor_stops_become_dead_letters_and_asks_fail(system: ActorSystem, mode: str) -> None:
    ref = system.spawn(Recorder, mode=mode)
    gate = Gate()
    ref.tell(gate)
    gate.wait_entered()
    ref.tell("fail")  # the handler failure stops the actor with these still queued
    ref.tell("queued 1")
    pending = ref.ask("queued 2", block=False)
    gate.released.set()
    with pytest.raises(ActorDeadError, match="stopped before handling"):
        pending.get(timeout=WAIT)
    queued = [d.message for d in system.dead_letters.recent() if d.reason == DeadLetterReason.QUEUED_AT_STOP]
    assert queued == ["queued 1", "queued 2"]


def test_dead_letters_reach_callable_and_actor_subscribers_and_a_failing_subscriber_is_only_logged(
    system: ActorSystem, mode: str, logs: Any
) -> None:
    seen: list[Any] = []
    inbox = system.spawn(Recorder, mode=mode)

    def broken(_: object) -> None:
        msg = "subscriber bug"
        raise RuntimeError(msg)

    system.dead_letters.subscribe(seen.append)
    system.dead_letters.subscribe(broken)
    system.dead_letters.subscribe(inbox)
    dead = system.spawn(Recorder, mode=mode)
    dead.stop()
    with pytest.raises(ActorDeadError):
        dead.tell("lost")
    assert [d.message for d in seen] == ["lost"]
    assert [d.message for d in inbox.ask("get")] == ["lost"]
    assert system.dead_letters.statistics().by_reason == {DeadLetterReason.RECIPIENT_STOPPED: 1}
    assert system.dead_letters.count == 1
    assert any("subscriber bug" in str(r["exception"]) for r in logs if r["exception"])
    system.dead_letters.unsubscribe(broken)


def test_an_actor_can_ask_another_actor_while_handling_a_message(mode: str) -> None:
    # One dispatcher thread: a pooled actor blocking on a pooled actor must
    # not deadlock the pool; one event loop: an asyncio actor awaits instead.
    class Asker(Actor):
        def __init__(self, other: Any) -> None:
            super().__init__()
            self.other = other

        def on_receive(self, message: Any) -> Any:
            return ("via", self.other.ask(message))

    class AwaitingAsker(Asker):
        async def on_receive(self, message: Any) -> Any:
            return ("via", await self.other.ask(message, block=False))

    with ActorSystem("nested", dispatchers=1) as system:
        inner = system.spawn(Recorder, mode=mode)
        outer = system.spawn(AwaitingAsker if mode == "asyncio" else Asker, inner, mode=mode)
        assert outer.ask("hi") == ("via", "hi")
        assert outer.ask("again", block=False).get(timeout=WAIT) == ("via", "again")


def test_pykka_start_runs_a_troupe_actor_on_the_default_system_and_stop_all_stops_it() -> None:
    class Started(Recorder):
        pass

    ref = Started.start()
    try:
        assert ref.ask("x") == "x"
        assert ref in pykka.ActorRegistry.get_all()
        assert isinstance(ref.proxy().received_so_far().get(timeout=WAIT), list)
    finally:
        pykka.ActorRegistry.stop_all()
        assert not ref.is_alive()
        assert ref not in pykka.ActorRegistry.get_all()
        default_system().shutdown()


def test_a_plain_pykka_threading_actor_runs_in_thread_mode(system: ActorSystem) -> None:
    class Plain(pykka.ThreadingActor):
        def on_receive(self, message: Any) -> Any:
            return (message, threading.current_thread().name)

    ref = system.spawn(Plain, name="plain")
    message, thread = ref.ask("hi")
    assert message == "hi"
    assert thread.startswith("plain-")
    assert isinstance(ref._actor_weakref(), Plain)


def test_one_mode_neutral_class_runs_in_each_mode(system: ActorSystem, mode: str) -> None:
    ref = system.spawn(Counter, mode=mode)
    actor = ref._actor_weakref()
    assert isinstance(actor, Counter)
    assert type(actor).__name__ == "Counter"
    assert ref.proxy().increment().get(timeout=WAIT) == 1


def test_a_class_bound_to_a_mode_runs_in_it_by_default(system: ActorSystem) -> None:
    class OwnThread(ThreadActor):
        def on_receive(self, message: Any) -> Any:
            return threading.current_thread().name

    class Pooled(PooledActor):
        def on_receive(self, message: Any) -> Any:
            return threading.current_thread().name

    assert system.spawn(OwnThread, name="own").ask(1).startswith("own-")
    assert system.spawn(Pooled).ask(1, timeout=WAIT).startswith("troupe-test-dispatcher-")


def test_pooled_actors_share_the_dispatcher_threads(system: ActorSystem) -> None:
    before = threading.active_count()
    refs = [system.spawn(Recorder) for _ in range(300)]
    futures = [ref.ask(i, block=False) for i, ref in enumerate(refs)]
    assert [f.get(timeout=WAIT) for f in futures] == list(range(300))
    assert threading.active_count() == before


def test_one_busy_pooled_actor_yields_its_thread_after_throughput_messages() -> None:
    order: list[Any] = []
    with ActorSystem("fair", dispatchers=1, throughput=10) as system:
        busy = system.spawn(Recorder, order)
        other = system.spawn(Recorder, order)
        gate = Gate()
        blocker = system.spawn(Recorder)
        blocker.tell(gate)
        gate.wait_entered()  # the only dispatcher thread is held
        for i in range(100):
            busy.tell(i)
        other.tell("other")
        gate.released.set()
        assert other.ask("get", timeout=WAIT)
        busy.ask("get", timeout=WAIT)
    assert order.index("other") == 10


def test_a_pending_ask_future_told_to_another_actor_is_a_plain_message_there(system: ActorSystem, mode: str) -> None:
    # In pooled and thread mode the future of an ask is also its mailbox item
    # (`Asked`): told to another actor before it is answered, it must reach
    # that actor as the future it is, not run the ask there.
    asked = system.spawn(Recorder, mode=mode)
    # Not on the loop the gate holds (asyncio): the collector must answer meanwhile.
    collector = system.spawn(Recorder, mode="thread" if mode == "asyncio" else mode)
    gate = Gate()
    asked.tell(gate)
    gate.wait_entered()
    pending = asked.ask("for the asked one", block=False)
    collector.tell(pending)
    assert collector.ask("get", timeout=WAIT) == [pending]
    gate.released.set()
    assert pending.get(timeout=WAIT) == "for the asked one"
    assert asked.ask("get", timeout=WAIT) == ["for the asked one"]
