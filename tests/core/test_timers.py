"""Actor timers (pykka issue #53), driven by the injected clock."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from actors import Actor, ActorSystem, ManualClock
from tests.core.actors_for_tests import WAIT, Gate


class Ticker(Actor):
    """Arms timers on command and records what they deliver."""

    def __init__(self) -> None:
        super().__init__()
        self.received: list[Any] = []

    def on_receive(self, message: Any) -> Any:
        match message:
            case ("single", key, payload, delay):
                self.timers.start_single_timer(key, payload, delay)
            case ("periodic", key, payload, interval):
                self.timers.start_periodic_timer(key, payload, interval)
            case ("cancel", key):
                self.timers.cancel(key)
            case ("active", key):
                return self.timers.is_timer_active(key)
            case ("gate-then-rearm", gate, key, payload, delay):
                gate.hold()
                self.timers.start_single_timer(key, payload, delay)
            case "get":
                return list(self.received)
            case _:
                self.received.append(message)
        return None


def test_a_single_shot_timer_delivers_once_when_its_time_comes(
    system: ActorSystem, clock: ManualClock, mode: str
) -> None:
    ref = system.spawn(Ticker, mode=mode)
    ref.ask(("single", "k", "ding", 5.0))
    clock.advance(4.999)
    assert ref.ask("get") == []
    assert ref.ask(("active", "k")) is True
    clock.advance(0.001)
    assert ref.ask("get") == ["ding"]
    assert ref.ask(("active", "k")) is False
    clock.advance(100)
    assert ref.ask("get") == ["ding"]


def test_a_periodic_timer_delivers_once_per_interval_passed(system: ActorSystem, clock: ManualClock, mode: str) -> None:
    ref = system.spawn(Ticker, mode=mode)
    ref.ask(("periodic", "tick", "t", 2.0))
    clock.advance(2)
    clock.advance(2)
    assert ref.ask("get") == ["t", "t"]
    clock.advance(6)  # a jump of three intervals fires three times (fixed rate)
    assert ref.ask("get") == ["t"] * 5
    ref.ask(("cancel", "tick"))
    clock.advance(10)
    assert ref.ask("get") == ["t"] * 5


def test_restarting_a_key_cancels_the_old_timer_even_if_its_message_is_already_queued(
    system: ActorSystem, clock: ManualClock, mode: str
) -> None:
    ref = system.spawn(Ticker, mode=mode)
    ref.ask(("single", "k", "old", 1.0))
    gate = Gate()
    ref.tell(("gate-then-rearm", gate, "k", "new", 5.0))
    gate.wait_entered()
    clock.advance(1)  # "old" fires and waits in the mailbox behind the gate
    gate.released.set()  # the handler re-arms "k" before "old" is taken out
    assert ref.ask("get") == []
    clock.advance(5)
    assert ref.ask("get") == ["new"]


def test_timers_are_cancelled_when_the_actor_stops(system: ActorSystem, clock: ManualClock, mode: str) -> None:
    ref = system.spawn(Ticker, mode=mode)
    ref.ask(("periodic", "p", "x", 1.0))
    ref.ask(("single", "s", "y", 3.0))
    assert system.scheduler.pending() == 2
    ref.stop()
    assert system.scheduler.pending() == 0
    clock.advance(10)
    assert system.dead_letters.count == 0


def test_timers_run_on_the_real_clock_with_a_thread_of_their_own(mode: str) -> None:
    fired = threading.Event()

    class Waker(Actor):
        def on_start(self) -> None:
            self.timers.start_single_timer("wake", "wake", 0.001)

        def on_receive(self, message: Any) -> None:
            fired.set()

    with ActorSystem("real-clock", dispatchers=1) as system:
        system.spawn(Waker, mode=mode)
        assert fired.wait(WAIT)
        assert any(t.name == "troupe-timers-real-clock" for t in threading.enumerate())


def test_bad_timer_arguments_are_clear_errors(system: ActorSystem) -> None:
    ref = system.spawn(Ticker)
    with pytest.raises(ValueError, match="delay must be >= 0"):
        ref.ask(("single", "k", "x", -1))
    with pytest.raises(ValueError, match="interval must be > 0"):
        ref.ask(("periodic", "k", "x", 0))
    with pytest.raises(ValueError, match="only moves forward"):
        ManualClock().advance(-1)
