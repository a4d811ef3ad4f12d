"""Mailboxes: FIFO, priority, and bounded with each overflow policy."""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pykka import ActorDeadError

from actors import (
    ActorSystem,
    BoundedMailbox,
    DeadLetterReason,
    MailboxFullError,
    ManualClock,
    PriorityMailbox,
    TroupeInternalError,
)
from tests.core.actors_for_tests import WAIT, Gate, Recorder


@attrs.frozen
class Job:
    priority: int
    seq: int


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(priorities=st.lists(st.integers(min_value=-3, max_value=3), max_size=40))
def test_a_priority_mailbox_hands_out_higher_priorities_first_and_fifo_within_one(
    system: ActorSystem, mode: str, priorities: list[int]
) -> None:
    # "get" ranks below every job, so it is answered after all of them.
    mailbox = PriorityMailbox(key=lambda m: m.priority if isinstance(m, Job) else -100)
    ref = system.spawn(Recorder, mode=mode, mailbox=mailbox)
    gate = Gate()
    ref.tell(gate)
    gate.wait_entered()
    for seq, priority in enumerate(priorities):
        ref.tell(Job(priority, seq))
    gate.released.set()
    handled = ref.ask("get", timeout=WAIT)
    ref.stop()
    expected = sorted((Job(p, s) for s, p in enumerate(priorities)), key=lambda j: (-j.priority, j.seq))
    assert handled == expected


def test_a_priority_mailbox_with_a_custom_key(system: ActorSystem, mode: str) -> None:
    mailbox = PriorityMailbox(key=lambda m: len(m) if isinstance(m, str) and m != "get" else -1)
    ref = system.spawn(Recorder, mode=mode, mailbox=mailbox)
    gate = Gate()
    ref.tell(gate)
    gate.wait_entered()
    for word in ["a", "ccc", "bb", "dddd"]:
        ref.tell(word)
    gate.released.set()
    assert ref.ask("get", timeout=WAIT) == ["dddd", "ccc", "bb", "a"]


class Collector(Recorder):
    """Sets `done` once it has recorded `expect` messages: read it without sending more mail."""

    def __init__(self, expect: int, done: threading.Event) -> None:
        super().__init__()
        self.expect = expect
        self.done = done

    def on_receive(self, message: Any) -> Any:
        result = super().on_receive(message)
        if len(self.received) >= self.expect:
            self.done.set()
        return result


def _recorded(ref: Any) -> list[Any]:
    actor = ref._actor_weakref()
    assert actor.done.wait(WAIT), f"only got {actor.received}"
    return list(actor.received)


def _filled(system: ActorSystem, mode: str, mailbox: BoundedMailbox, count: int, expect: int) -> tuple[Any, Gate]:
    ref = system.spawn(Collector, expect, threading.Event(), mode=mode, mailbox=mailbox, name="bounded")
    gate = Gate()
    ref.tell(gate)
    gate.wait_entered()
    for i in range(count):
        ref.tell(i)
    return ref, gate


def test_a_full_mailbox_with_policy_fail_refuses_with_an_error_naming_actor_and_capacity(
    system: ActorSystem, mode: str
) -> None:
    ref, gate = _filled(system, mode, BoundedMailbox(3), 3, expect=3)
    with pytest.raises(MailboxFullError, match=r"'bounded'.*full \(3 messages"):
        ref.tell("one too many")
    refused = ref.ask("asked too", block=False)
    with pytest.raises(MailboxFullError):
        refused.get(timeout=WAIT)
    gate.released.set()
    assert _recorded(ref) == [0, 1, 2]


@pytest.mark.parametrize(
    ("policy", "kept", "dropped"),
    [("drop_oldest", [2, 3, 4], [0, 1]), ("drop_newest", [0, 1, 2], [3, 4])],
)
def test_a_dropping_mailbox_sends_what_it_drops_to_dead_letters(
    system: ActorSystem, mode: str, policy: str, kept: list[int], dropped: list[int]
) -> None:
    ref, gate = _filled(system, mode, BoundedMailbox(3, overflow=policy), 5, expect=3)  # type: ignore[arg-type]
    gate.released.set()
    assert _recorded(ref) == kept
    letters = system.dead_letters.recent()
    assert [d.message for d in letters] == dropped
    assert {d.reason for d in letters} == {DeadLetterReason.MAILBOX_OVERFLOW}


def test_an_ask_dropped_by_a_full_mailbox_fails_instead_of_hanging(system: ActorSystem, mode: str) -> None:
    ref, gate = _filled(system, mode, BoundedMailbox(1, overflow="drop_oldest"), 0, expect=1)
    victim = ref.ask("first", block=False)
    ref.tell("second")
    with pytest.raises(MailboxFullError):
        victim.get(timeout=WAIT)
    gate.released.set()
    assert _recorded(ref) == ["second"]


def test_a_blocking_mailbox_makes_the_sender_wait_for_room(system: ActorSystem, mode: str) -> None:
    ref, gate = _filled(system, mode, BoundedMailbox(2, overflow="block", block_timeout=WAIT), 2, expect=3)
    sent = threading.Event()

    def sender() -> None:
        ref.tell("waited")
        sent.set()

    thread = threading.Thread(target=sender)
    thread.start()
    assert not sent.is_set()  # the mailbox is full: nothing could have made room yet
    gate.released.set()
    thread.join(WAIT)
    assert sent.is_set()
    assert _recorded(ref) == [0, 1, "waited"]


def test_a_blocking_mailbox_gives_up_after_its_timeout(system: ActorSystem, mode: str) -> None:
    ref, gate = _filled(system, mode, BoundedMailbox(1, overflow="block", block_timeout=0.05), 1, expect=1)
    with pytest.raises(MailboxFullError, match=r"waited 0\.05 seconds"):
        ref.tell("no room")
    gate.released.set()
    assert _recorded(ref) == [0]


def test_bad_mailbox_specs_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="capacity"):
        BoundedMailbox(0)
    with pytest.raises(ValueError, match="overflow"):
        BoundedMailbox(5, overflow="discard")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="block_timeout"):
        BoundedMailbox(5, overflow="block", block_timeout=-1)


class Alarm(Collector):
    """A Collector that arms a single-shot timer on ``("arm", payload, delay)``."""

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, tuple) and message[:1] == ("arm",):
            self.timers.start_single_timer("alarm", message[1], message[2])
            return None
        return super().on_receive(message)


@pytest.mark.parametrize("policy", ["fail", "block", "drop_newest"])
def test_a_timer_firing_into_a_full_bounded_mailbox_becomes_a_dead_letter_without_waiting_for_room(
    system: ActorSystem, clock: ManualClock, mode: str, policy: str
) -> None:
    mailbox = BoundedMailbox(2, overflow=policy, block_timeout=WAIT)  # type: ignore[arg-type]
    ref = system.spawn(Alarm, 2, threading.Event(), mode=mode, mailbox=mailbox)
    ref.ask(("arm", "ring", 1.0))
    gate = Gate()
    ref.tell(gate)
    gate.wait_entered()
    ref.tell(0)
    ref.tell(1)
    clock.advance(1.0)  # the timer fires here, on this thread: it must not wait for room
    letters = system.dead_letters.recent()
    assert [(getattr(d.message, "message", None), d.reason) for d in letters] == [
        ("ring", DeadLetterReason.MAILBOX_OVERFLOW)
    ]
    gate.released.set()
    assert _recorded(ref) == [0, 1]


class _BreaksWhenArmed(deque[Any]):
    """A FIFO queue whose next `popleft` raises once `armed`: a fault inside the turn loop itself."""

    offer = deque.append

    def __init__(self) -> None:
        super().__init__()
        self.armed = False

    def popleft(self) -> Any:
        if self.armed:
            self.armed = False
            msg = "a fault in the turn loop"
            raise RuntimeError(msg)
        return super().popleft()


@attrs.define
class _BreakingMailbox:
    queues: list[_BreaksWhenArmed] = attrs.Factory(list)

    def create(self, cell: object) -> _BreaksWhenArmed:
        queue = _BreaksWhenArmed()
        self.queues.append(queue)
        return queue


def test_a_fault_in_the_turn_loop_is_an_internal_error_that_stops_the_actor_and_reaches_its_asker(
    system: ActorSystem, mode: str, logs: Any
) -> None:
    mailbox = _BreakingMailbox()
    ref = system.spawn(Recorder, mode=mode, mailbox=mailbox)
    assert ref.ask("warm") == "warm"
    mailbox.queues[0].armed = True
    with pytest.raises((TroupeInternalError, ActorDeadError)) as caught:
        ref.ask("doomed")  # no timeout: a pooled actor's turn then runs inline, on this thread
    if mode == "pooled":
        # An idle pooled actor's blocking ask runs the turn on the asking
        # thread: the asker is the one who hears of the fault.
        assert isinstance(caught.value, TroupeInternalError)
        assert isinstance(caught.value.__cause__, RuntimeError)
    # Elsewhere the fault ends a turn on the actor's own thread or loop; the
    # actor stops, and the ask is rejected (or refused) with ActorDeadError.
    assert ref.actor_stopped.wait(WAIT)
    assert any("troupe runtime error" in m for m in logs.messages("CRITICAL"))
