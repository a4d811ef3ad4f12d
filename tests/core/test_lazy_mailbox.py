"""An idle actor's mailbox costs 48 bytes: the FIFO queue holds one message and is made on the second (`LazyFifo`).

What must not change for it: order, nothing lost when the first messages
race in from many threads, timers and system messages reaching an actor
that never had mail, dead letters on stop, and the other mailbox kinds.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pykka import ActorDeadError

from actors import (
    Actor,
    ActorSystem,
    BoundedMailbox,
    DeadLetterReason,
    FifoMailbox,
    ManualClock,
    PriorityMailbox,
)
from actors._core.mailbox import LazyFifo, MailboxSpec
from tests.core.actors_for_tests import WAIT, Gate, Recorder

SPECS: dict[str, MailboxSpec | None] = {
    "default": None,
    "fifo": FifoMailbox(),
    "priority": PriorityMailbox(),
    "bounded": BoundedMailbox(1_000),
    "bounded-priority": BoundedMailbox(1_000, inner=PriorityMailbox()),
}


@pytest.fixture(params=sorted(SPECS))
def spec(request: pytest.FixtureRequest) -> str:
    """Each mailbox kind in turn."""
    return str(request.param)


def _queue(ref: Any) -> Any:
    return ref.actor_inbox.queue


def test_a_fifo_mailbox_is_a_placeholder_until_the_second_message_then_a_deque(system: ActorSystem, mode: str) -> None:
    ref = system.spawn(Recorder, mode=mode)
    assert type(_queue(ref)) is LazyFifo
    assert not ref.actor_inbox.sysq  # no system message yet: no list either
    ref.tell(1)
    assert type(_queue(ref)) is LazyFifo  # it holds the first message itself
    ref.tell(2)
    assert type(_queue(ref)) is deque  # the hot path is a bare deque's from now on
    ref.tell(3)
    assert ref.ask("get", timeout=WAIT) == [1, 2, 3]


def test_an_actor_asked_once_answers_without_a_deque_and_gets_one_on_its_next_message(
    system: ActorSystem, mode: str
) -> None:
    ref = system.spawn(Recorder, mode=mode)
    assert ref.ask("get", timeout=WAIT) == []
    assert type(_queue(ref)) is LazyFifo  # the message held was taken: still no deque
    assert len(_queue(ref)) == 0
    ref.tell(1)
    assert type(_queue(ref)) is deque
    assert ref.ask("get", timeout=WAIT) == [1]


def test_the_other_kinds_keep_their_own_queue_from_the_start(system: ActorSystem, mode: str) -> None:
    for name in ("priority", "bounded", "bounded-priority"):
        ref = system.spawn(Recorder, mode=mode, mailbox=SPECS[name])
        assert type(_queue(ref)) is not LazyFifo, name
        ref.tell(1)
        assert ref.ask("get", timeout=WAIT) == [1], name


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(senders=st.integers(min_value=2, max_value=6), each=st.integers(min_value=1, max_value=30))
def test_first_messages_racing_in_from_many_threads_all_arrive_in_each_senders_order(
    system: ActorSystem, mode: str, spec: str, senders: int, each: int
) -> None:
    ref = system.spawn(Recorder, mode=mode, mailbox=SPECS[spec])
    start = threading.Barrier(senders)

    def send(sender: int) -> None:
        start.wait(WAIT)
        for i in range(each):
            ref.tell((sender, i))

    threads = [threading.Thread(target=send, args=(sender,)) for sender in range(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    received = ref.ask("get", timeout=WAIT)
    ref.stop()
    assert sorted(received) == [(sender, i) for sender in range(senders) for i in range(each)]
    for sender in range(senders):
        assert [i for s, i in received if s == sender] == list(range(each))


def test_an_actor_that_never_had_mail_stops_cleanly_and_later_mail_is_a_dead_letter(
    system: ActorSystem, mode: str, spec: str
) -> None:
    ref = system.spawn(Recorder, mode=mode, mailbox=SPECS[spec])
    assert ref.stop(timeout=WAIT) is True
    assert system.dead_letters.recent() == []  # nothing was queued: nothing dead-lettered
    with pytest.raises(ActorDeadError):
        ref.tell("late")
    assert [(d.message, d.reason) for d in system.dead_letters.recent()] == [
        ("late", DeadLetterReason.RECIPIENT_STOPPED)
    ]


def test_mail_queued_behind_a_stop_is_dead_lettered_and_its_asks_fail(
    system: ActorSystem, mode: str, spec: str
) -> None:
    ref = system.spawn(Recorder, mode=mode, mailbox=SPECS[spec])
    gate = Gate()
    ref.tell(gate)
    gate.wait_entered()
    stopped = ref.stop(block=False)
    ref.tell("told")
    asked = ref.ask("asked", block=False)
    gate.released.set()
    assert stopped.get(timeout=WAIT) is True
    with pytest.raises(ActorDeadError):
        asked.get(timeout=WAIT)
    letters = sorted((d.message, d.reason) for d in system.dead_letters.recent())
    assert letters == [("asked", DeadLetterReason.QUEUED_AT_STOP), ("told", DeadLetterReason.QUEUED_AT_STOP)]


def test_shutdown_stops_actors_that_never_had_mail(clock: ManualClock, mode: str, spec: str) -> None:
    system = ActorSystem(name="lazy", clock=clock)
    refs = [system.spawn(Recorder, mode=mode, mailbox=SPECS[spec]) for _ in range(20)]
    system.shutdown()
    assert not any(ref.is_alive() for ref in refs)


class _RingsOnStart(Actor):
    """Starts a timer in on_start: its first message is the timer's, put by the runtime."""

    def __init__(self, started: threading.Event, rang: threading.Event) -> None:
        super().__init__()
        self.started, self.rang = started, rang

    def on_start(self) -> None:
        self.timers.start_single_timer("ring", "ring", 1.0)
        self.started.set()

    def on_receive(self, message: Any) -> Any:
        if message == "ring":
            self.rang.set()
        return message


def test_a_timer_is_the_first_message_of_an_actor_that_never_had_mail(
    system: ActorSystem, clock: ManualClock, mode: str
) -> None:
    started, rang = threading.Event(), threading.Event()
    ref = system.spawn(_RingsOnStart, started, rang, mode=mode)
    assert started.wait(WAIT)
    assert type(_queue(ref)) is LazyFifo
    clock.advance(1.0)
    assert rang.wait(WAIT)
    assert ref.ask("after", timeout=WAIT) == "after"
    assert type(_queue(ref)) is deque  # the ask was its second message


class _Cell:
    """What a queue needs of its cell: the cell holds it."""

    queue: Any = None


def test_a_replaced_placeholder_still_works_for_whoever_read_it_before() -> None:
    cell = _Cell()
    placeholder: Any = FifoMailbox().create(cell)  # type: ignore[arg-type]
    cell.queue = placeholder
    assert len(placeholder) == 0
    with pytest.raises(IndexError):
        placeholder.popleft()
    with pytest.raises(IndexError):
        placeholder.peek()
    assert not placeholder.pop_head("x")
    placeholder.append("a")
    assert cell.queue is placeholder  # held, no deque yet
    assert len(placeholder) == 1
    assert placeholder.peek() == "a"
    assert not placeholder.pop_head("x")
    placeholder.append("b")
    assert type(cell.queue) is deque
    assert list(cell.queue) == ["a", "b"]  # the held message kept its place at the head
    placeholder.append("c")  # a sender that read cell.queue before the swap
    placeholder.offer("d")  # the runtime's (a timer's)
    assert len(placeholder) == 4
    assert placeholder.peek() == "a"
    assert placeholder.pop_head("a")
    assert placeholder.popleft() == "b"
    assert list(cell.queue) == ["c", "d"]


def test_a_placeholder_whose_one_message_was_taken_makes_its_deque_on_the_next() -> None:
    cell = _Cell()
    placeholder: Any = FifoMailbox().create(cell)  # type: ignore[arg-type]
    cell.queue = placeholder
    placeholder.append("a")
    assert placeholder.pop_head("a")
    assert len(placeholder) == 0
    with pytest.raises(IndexError):
        placeholder.popleft()
    placeholder.append("b")
    assert type(cell.queue) is deque
    assert list(cell.queue) == ["b"]
    assert placeholder.popleft() == "b"
    with pytest.raises(IndexError):
        placeholder.popleft()


def test_a_stop_after_the_one_message_is_held_without_a_deque_and_what_follows_queues_behind_it() -> None:
    cell = _Cell()
    placeholder: Any = FifoMailbox().create(cell)  # type: ignore[arg-type]
    cell.queue = placeholder
    placeholder.append("asked once")
    assert placeholder.popleft() == "asked once"
    placeholder.append_stop("stop")  # `ActorRef.stop`: the last message needs no deque
    assert cell.queue is placeholder
    assert len(placeholder) == 1
    placeholder.append("late")  # a message sent after the stop still comes after it
    assert type(cell.queue) is deque
    assert list(cell.queue) == ["stop", "late"]


def test_a_stop_behind_a_held_message_goes_to_the_deque_after_it() -> None:
    cell = _Cell()
    placeholder: Any = FifoMailbox().create(cell)  # type: ignore[arg-type]
    cell.queue = placeholder
    placeholder.append("first")
    placeholder.append_stop("stop")
    assert list(cell.queue) == ["first", "stop"]
