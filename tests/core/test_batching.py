"""Batching: `Actor.take_queued` on every mailbox kind, in every mode."""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING, Any, cast

import attrs
import pykka
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors import (
    Actor,
    ActorSystem,
    BoundedMailbox,
    DeadLetterReason,
    FifoMailbox,
    PriorityMailbox,
    QueuedMessage,
)
from actors._core.mailbox import NOTHING, take_head
from tests.core.actors_for_tests import WAIT, Gate

if TYPE_CHECKING:
    from collections.abc import Callable

    from actors._core import Cell
    from actors._core.mailbox import MailboxSpec

KINDS: dict[str, Callable[[int], MailboxSpec]] = {
    "fifo": lambda _n: FifoMailbox(),
    "priority": lambda _n: PriorityMailbox(),
    "bounded": lambda n: BoundedMailbox(n + 4),
    "bounded-priority": lambda n: BoundedMailbox(n + 4, inner=PriorityMailbox()),
}


@pytest.fixture(params=sorted(KINDS))
def kind(request: pytest.FixtureRequest) -> str:
    """Each mailbox kind in turn."""
    return str(request.param)


def _prioritised(kind: str) -> bool:
    return "priority" in kind


@attrs.frozen
class Item:
    seq: int
    priority: int = 0
    match: bool = True


@attrs.frozen(eq=False)
class Take:
    """Take the matching `Item`s queued behind this one (at most `limit`), then call `then`."""

    limit: int
    fail: bool = False
    stop_after: int | None = None
    then: Callable[[], None] | None = None
    priority: int = 100  # first out of a priority mailbox


@attrs.frozen
class Get:
    priority: int = -100  # last out of a priority mailbox


class Batcher(Actor):
    """Logs ("took", seq) for each item it takes in a batch and ("turn", seq) for each it gets a turn for."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[tuple[str, int]] = []
        self.asked: list[int] = []  # the items the predicate was asked about

    def _matches(self, queued: QueuedMessage) -> bool:
        message = queued.message
        if isinstance(message, Item):
            self.asked.append(message.seq)
            return message.match
        return False

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Gate):
            message.hold()
            return None
        if isinstance(message, Get):
            return (list(self.log), list(self.asked))
        if isinstance(message, Take):
            with self.take_queued(self._matches, limit=message.limit) as taken:
                for count, queued in enumerate(taken, 1):
                    assert isinstance(queued, QueuedMessage)
                    self.log.append(("took", queued.message.seq))
                    if not message.fail:
                        queued.reply(("took", queued.message.seq))
                    if count == message.stop_after:
                        break
                if message.then is not None:
                    message.then()
                if message.fail:
                    msg = "the batch failed"
                    raise ValueError(msg)
            return "taken"
        assert isinstance(message, Item)
        self.log.append(("turn", message.seq))
        return ("turn", message.seq)


def _held(system: ActorSystem, mode: str, mailbox: MailboxSpec) -> tuple[pykka.ActorRef[Any], Gate]:
    """Spawn a Batcher and hold it on a gate, so that what is sent next queues up."""
    ref = system.spawn(Batcher, mode=mode, mailbox=mailbox)
    gate = Gate()
    ref.tell(gate)
    gate.wait_entered()
    return ref, gate


def _handout(kind: str, items: list[Item]) -> list[Item]:
    """The order the mailbox hands `items` out in."""
    if _prioritised(kind):
        return sorted(items, key=lambda item: (-item.priority, item.seq))
    return list(items)


def _run(
    system: ActorSystem, mode: str, kind: str, items: list[Item], *, asks: set[int], take: Take
) -> tuple[list[tuple[str, int]], list[int], dict[int, Any], Any]:
    """Queue `take` then `items` behind a gate; return the log, the predicate's calls, the replies."""
    ref, gate = _held(system, mode, KINDS[kind](len(items)))
    take_reply = ref.ask(take, block=False)
    futures = {}
    for item in items:
        if item.seq in asks:
            futures[item.seq] = ref.ask(item, block=False)
        else:
            ref.tell(item)
    gate.released.set()
    got: Any = ref.ask(Get(), timeout=WAIT)
    log, asked = got
    replies = {}
    for seq, future in futures.items():
        try:
            replies[seq] = future.get(timeout=WAIT)
        except ValueError as exc:
            replies[seq] = exc
    try:
        outcome = take_reply.get(timeout=WAIT)
    except ValueError as exc:
        outcome = exc
    ref.stop()
    return log, asked, replies, outcome


items_strategy = st.lists(
    st.tuples(st.integers(min_value=-2, max_value=2), st.booleans(), st.booleans()), max_size=12
).map(lambda specs: [(Item(seq, priority, match), ask) for seq, (priority, match, ask) in enumerate(specs)])


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(specs=items_strategy, limit=st.integers(min_value=0, max_value=14))
def test_a_take_is_the_run_of_matching_messages_at_the_head_in_mailbox_order_and_the_rest_get_turns(
    system: ActorSystem, mode: str, kind: str, specs: list[tuple[Item, bool]], limit: int
) -> None:
    items = [item for item, _ in specs]
    asks = {item.seq for item, ask in specs if ask}
    log, asked, replies, outcome = _run(system, mode, kind, items, asks=asks, take=Take(limit))
    order = _handout(kind, items)
    run = 0
    while run < min(limit, len(order)) and order[run].match:
        run += 1
    expected = [("took", item.seq) for item in order[:run]] + [("turn", item.seq) for item in order[run:]]
    assert outcome == "taken"
    assert log == expected  # order kept, predicate and limit respected, nothing stranded
    # The predicate was asked about each taken item, and about the one that ended the run.
    assert asked == [item.seq for item in order[: run + (run < len(order) and run < limit)]]
    assert replies == {seq: entry for entry in expected for seq in [entry[1]] if seq in asks}


def test_a_take_stops_at_the_first_message_the_predicate_refuses(system: ActorSystem, mode: str, kind: str) -> None:
    items = [Item(0), Item(1), Item(2, match=False), Item(3)]
    log, _, _, _ = _run(system, mode, kind, items, asks=set(), take=Take(limit=10))
    assert log == [("took", 0), ("took", 1), ("turn", 2), ("turn", 3)]


def test_a_take_takes_at_most_its_limit(system: ActorSystem, mode: str, kind: str) -> None:
    items = [Item(seq) for seq in range(5)]
    log, _, _, _ = _run(system, mode, kind, items, asks=set(), take=Take(limit=3))
    assert log == [("took", 0), ("took", 1), ("took", 2), ("turn", 3), ("turn", 4)]


def test_asks_taken_are_answered_by_the_handler_and_the_others_by_their_turn(
    system: ActorSystem, mode: str, kind: str
) -> None:
    items = [Item(seq) for seq in range(4)]
    _, _, replies, _ = _run(system, mode, kind, items, asks={0, 2, 3}, take=Take(limit=2))
    assert replies == {0: ("took", 0), 2: ("turn", 2), 3: ("turn", 3)}


def test_a_take_asks_the_predicate_only_about_the_messages_it_reaches(
    system: ActorSystem, mode: str, kind: str
) -> None:
    items = [Item(seq) for seq in range(5)]
    log, asked, _, _ = _run(system, mode, kind, items, asks=set(), take=Take(limit=10, stop_after=2))
    assert asked == [0, 1]  # iteration stopped after two: the others were never looked at
    assert log == [("took", 0), ("took", 1), ("turn", 2), ("turn", 3), ("turn", 4)]


def test_an_exception_leaving_the_take_fails_every_ask_it_took(system: ActorSystem, mode: str, kind: str) -> None:
    items = [Item(seq) for seq in range(4)]
    log, _, replies, outcome = _run(system, mode, kind, items, asks={0, 1, 3}, take=Take(limit=2, fail=True))
    assert isinstance(outcome, ValueError)
    assert isinstance(replies[0], ValueError)
    assert isinstance(replies[1], ValueError)
    assert replies[3] == ("turn", 3)  # not taken: handled in its own turn
    assert log == [("took", 0), ("took", 1), ("turn", 2), ("turn", 3)]


def test_a_message_sent_after_a_take_emptied_the_mailbox_still_gets_its_turn(
    system: ActorSystem, mode: str, kind: str
) -> None:
    ref, gate = _held(system, mode, KINDS[kind](4))
    late = Gate()
    ref.tell(Take(limit=10, then=late.hold))
    ref.tell(Item(0))
    gate.released.set()
    late.wait_entered()  # the take has emptied the mailbox; the turn is still running
    reply = ref.ask(Item(1), block=False)
    late.released.set()
    assert reply.get(timeout=WAIT) == ("turn", 1)
    log, _ = ref.ask(Get(), timeout=WAIT)
    assert log == [("took", 0), ("turn", 1)]


def test_a_take_stops_at_a_stop_queued_behind_the_messages(system: ActorSystem, mode: str, kind: str) -> None:
    ref, gate = _held(system, mode, KINDS[kind](4))
    reply = ref.ask(Take(limit=10), block=False)
    ref.tell(Item(0))
    stopped = ref.stop(block=False)
    gate.released.set()
    assert reply.get(timeout=WAIT) == "taken"
    assert stopped.get(timeout=WAIT) is True


def test_taking_from_a_blocking_bounded_mailbox_wakes_a_sender_waiting_for_room(system: ActorSystem, mode: str) -> None:
    ref, gate = _held(system, mode, BoundedMailbox(2, overflow="block", block_timeout=WAIT))
    sent = [threading.Event(), threading.Event()]
    both_sent = threading.Event()

    def then() -> None:
        # Inside the turn, after the take: the turn took the Take (room for one
        # sender) and the take took Item(0); only the take can have made room
        # for the other sender.
        if all(event.wait(WAIT) for event in sent):
            both_sent.set()

    ref.tell(Take(limit=1, then=then))
    ref.tell(Item(0))  # the mailbox is full

    def sender(i: int) -> None:
        ref.tell(Item(i + 1))
        sent[i].set()

    threads = [threading.Thread(target=sender, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    gate.released.set()
    for thread in threads:
        thread.join(WAIT)
    got: Any = ref.ask(Get(), timeout=WAIT)
    log, _ = got
    assert both_sent.is_set()
    assert log[0] == ("took", 0)
    assert sorted(log[1:]) == [("turn", 1), ("turn", 2)]


def test_an_ask_abandoned_before_it_is_taken_becomes_a_dead_letter(system: ActorSystem, mode: str, kind: str) -> None:
    ref, gate = _held(system, mode, KINDS[kind](4))
    ref.tell(Take(limit=10))
    ref.tell(Item(0))
    given_up = ref.ask(Item(1), block=False)
    cast("Cell", ref.actor_inbox).abandon(given_up, TimeoutError("gave up"))
    ref.tell(Item(2))
    gate.released.set()
    log, _ = ref.ask(Get(), timeout=WAIT)
    assert log == [("took", 0), ("took", 2)]
    letters = [letter for letter in system.dead_letters.recent() if letter.message == Item(1)]
    assert [letter.reason for letter in letters] == [DeadLetterReason.ASK_ABANDONED]


class AsksOnly(Batcher):
    """Takes only asks: the predicate sees each message's reply future."""

    def _matches(self, queued: QueuedMessage) -> bool:
        return isinstance(queued.message, Item) and queued.reply_to is not None


def test_the_predicate_can_tell_an_ask_from_a_tell(system: ActorSystem, mode: str, kind: str) -> None:
    ref = system.spawn(AsksOnly, mode=mode, mailbox=KINDS[kind](4))
    gate = Gate()
    ref.tell(gate)
    gate.wait_entered()
    ref.tell(Take(limit=10))
    asked = [ref.ask(Item(0), block=False), ref.ask(Item(1), block=False)]
    ref.tell(Item(2))
    gate.released.set()
    log, _ = ref.ask(Get(), timeout=WAIT)
    assert log == [("took", 0), ("took", 1), ("turn", 2)]
    assert [future.get(timeout=WAIT) for future in asked] == [("took", 0), ("took", 1)]


class AsyncBatcher(Actor):
    """Takes the queued items after an await, in a coroutine handler (asyncio mode)."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[tuple[str, int]] = []

    async def on_receive(self, message: Any) -> Any:
        if isinstance(message, Gate):
            message.entered.set()
            await asyncio.wait_for(message.released.opened, WAIT)
            return None
        if isinstance(message, Get):
            return list(self.log)
        if isinstance(message, Take):
            await asyncio.sleep(0)  # give the loop a turn: the take happens after an await
            with self.take_queued(lambda queued: isinstance(queued.message, Item), limit=message.limit) as taken:
                for queued in taken:
                    self.log.append(("took", queued.message.seq))
                    queued.reply(("took", queued.message.seq))
            return "taken"
        self.log.append(("turn", message.seq))
        return ("turn", message.seq)


def test_a_coroutine_handler_can_take_after_an_await(system: ActorSystem, kind: str) -> None:
    ref = system.spawn(AsyncBatcher, mode="asyncio", mailbox=KINDS[kind](4))
    gate = Gate()
    ref.tell(gate)
    gate.wait_entered()
    ref.tell(Take(limit=2))
    asked = [ref.ask(Item(seq), block=False) for seq in range(3)]
    gate.released.set()
    assert [future.get(timeout=WAIT) for future in asked] == [("took", 0), ("took", 1), ("turn", 2)]
    assert ref.ask(Get(), timeout=WAIT) == [("took", 0), ("took", 1), ("turn", 2)]


def test_a_negative_limit_is_a_clear_error(system: ActorSystem, mode: str) -> None:
    class Negative(Actor):
        def on_receive(self, message: Any) -> Any:
            return self.take_queued(lambda _m: True, limit=-1)

    ref = system.spawn(Negative, mode=mode)
    with pytest.raises(ValueError, match="limit must be >= 0"):
        ref.ask("go", timeout=WAIT)


# -- the mailbox primitive, on its own -------------------------------------------


class _NoCell:
    """What a queue needs of its cell when nothing overflows: it holds the queue (a FIFO one replaces itself)."""

    ref = "<test>"
    aio = None
    queue: Any = None


@settings(max_examples=200, deadline=None)
@given(
    kind=st.sampled_from(sorted(KINDS)),
    items=st.lists(st.tuples(st.integers(min_value=-2, max_value=2), st.booleans()), max_size=20),
    takes=st.integers(min_value=0, max_value=25),
)
def test_take_head_takes_the_head_while_it_matches_and_leaves_the_rest_in_order(
    kind: str, items: list[tuple[int, bool]], takes: int
) -> None:
    cell = _NoCell()
    cell.queue = KINDS[kind](len(items)).create(cell)  # type: ignore[arg-type]
    queue = cell.queue  # a FIFO one: its placeholder, which goes on working once replaced
    messages = [Item(seq, priority, match) for seq, (priority, match) in enumerate(items)]
    for message in messages:
        queue.append(message)
    taken = []
    for _ in range(takes):
        item = take_head(queue, lambda item: item.match)
        if item is NOTHING:
            break
        taken.append(item)
    rest = []
    while len(queue):
        rest.append(queue.popleft())
    order = _handout(kind, messages)
    run = 0
    while run < min(takes, len(order)) and order[run].match:
        run += 1
    assert taken == order[:run]
    assert rest == order[run:]


# -- take_queued_tells: plain tells of one class, no predicate, no reply futures -----------------


@attrs.frozen(eq=False)
class TakeTells:
    """Take the `Item` tells queued behind this one (at most `limit`), stopping after `stop_after` or failing."""

    limit: int
    stop_after: int | None = None
    fail_at: int | None = None
    priority: int = 100  # first out of a priority mailbox


class TellBatcher(Batcher):
    """A `Batcher` whose `TakeTells` takes with `take_queued_tells`, logging ("took", seq)."""

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, TakeTells):
            for count, item in enumerate(self.take_queued_tells(Item, limit=message.limit), 1):
                assert isinstance(item, Item)  # the message itself, not a QueuedMessage
                if item.seq == message.fail_at:
                    msg = f"item {item.seq} failed"
                    raise ValueError(msg)
                self.log.append(("took", item.seq))
                if count == message.stop_after:
                    break
            return "taken"
        return super().on_receive(message)


def _run_tells(
    system: ActorSystem, mode: str, kind: str, items: list[Item], *, asks: set[int], take: TakeTells
) -> tuple[list[tuple[str, int]], dict[int, Any], Any]:
    """Queue `take` then `items` (asked or told) behind a gate; return the log, the asks' replies, the outcome."""
    ref = system.spawn(TellBatcher, mode=mode, mailbox=KINDS[kind](len(items)))
    gate = Gate()
    ref.tell(gate)
    gate.wait_entered()
    take_reply = ref.ask(take, block=False)
    futures = {}
    for item in items:
        if item.seq in asks:
            futures[item.seq] = ref.ask(item, block=False)
        else:
            ref.tell(item)
    gate.released.set()
    log, _ = ref.ask(Get(), timeout=WAIT)
    replies = {seq: future.get(timeout=WAIT) for seq, future in futures.items()}
    try:
        outcome = take_reply.get(timeout=WAIT)
    except ValueError as exc:
        outcome = exc
    ref.stop()
    return log, replies, outcome


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(specs=items_strategy, limit=st.integers(min_value=0, max_value=14))
def test_a_take_of_tells_is_the_run_of_plain_tells_of_the_class_at_the_head_and_the_rest_get_turns(
    system: ActorSystem, mode: str, kind: str, specs: list[tuple[Item, bool]], limit: int
) -> None:
    items = [item for item, _ in specs]
    asks = {item.seq for item, ask in specs if ask}
    log, replies, outcome = _run_tells(system, mode, kind, items, asks=asks, take=TakeTells(limit))
    order = _handout(kind, items)
    run = 0
    while run < min(limit, len(order)) and order[run].seq not in asks:  # an ask ends the take
        run += 1
    expected = [("took", item.seq) for item in order[:run]] + [("turn", item.seq) for item in order[run:]]
    assert outcome == "taken"
    assert log == expected
    assert replies == {seq: ("turn", seq) for seq in asks}  # every ask had its own turn and its answer


def test_a_take_of_tells_stops_at_a_message_of_another_class(system: ActorSystem, mode: str, kind: str) -> None:
    ref = system.spawn(TellBatcher, mode=mode, mailbox=KINDS[kind](4))
    gate = Gate()
    ref.tell(gate)
    gate.wait_entered()
    reply = ref.ask(TakeTells(limit=10), block=False)
    ref.tell(Item(0))
    other = ref.ask(Get(priority=0), block=False)  # not an Item: ends the take
    ref.tell(Item(1))
    gate.released.set()
    assert reply.get(timeout=WAIT) == "taken"
    assert other.get(timeout=WAIT) == ([("took", 0)], [])
    log, _ = ref.ask(Get(), timeout=WAIT)
    assert log == [("took", 0), ("turn", 1)]
    ref.stop()


def test_a_take_of_tells_is_lazy_so_what_is_not_iterated_keeps_its_turn(
    system: ActorSystem, mode: str, kind: str
) -> None:
    items = [Item(seq) for seq in range(5)]
    log, _, _ = _run_tells(system, mode, kind, items, asks=set(), take=TakeTells(limit=10, stop_after=2))
    assert log == [("took", 0), ("took", 1), ("turn", 2), ("turn", 3), ("turn", 4)]


def test_a_handler_raising_in_a_take_of_tells_leaves_the_rest_queued(system: ActorSystem, mode: str, kind: str) -> None:
    items = [Item(seq) for seq in range(4)]
    log, _, outcome = _run_tells(system, mode, kind, items, asks=set(), take=TakeTells(limit=10, fail_at=1))
    assert isinstance(outcome, ValueError)  # the asker of the turn's message hears of it
    assert log == [("took", 0), ("turn", 2), ("turn", 3)]  # item 1 was the handler's: it raised on it


def test_a_take_of_tells_takes_at_most_its_limit(system: ActorSystem, mode: str, kind: str) -> None:
    items = [Item(seq) for seq in range(5)]
    log, _, _ = _run_tells(system, mode, kind, items, asks=set(), take=TakeTells(limit=3))
    assert log == [("took", 0), ("took", 1), ("took", 2), ("turn", 3), ("turn", 4)]


class _TakesRuntimeMessages(Actor):
    def on_receive(self, message: Any) -> Any:
        return list(self.take_queued_tells(message, limit=1))


def test_a_take_of_tells_refuses_a_runtime_class_and_a_negative_limit(system: ActorSystem, mode: str) -> None:
    from actors import Terminated  # noqa: PLC0415 - only this test needs it

    ref = system.spawn(_TakesRuntimeMessages, mode=mode)
    with pytest.raises(TypeError, match="runtime handles"):
        ref.ask(Terminated, timeout=WAIT)
    ref.stop()
    batcher = system.spawn(TellBatcher, mode=mode)
    with pytest.raises(ValueError, match="limit must be >= 0"):
        batcher.ask(TakeTells(limit=-1), timeout=WAIT)
    batcher.stop()
