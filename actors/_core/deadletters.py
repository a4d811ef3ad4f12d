"""Dead letters: where messages go that no actor will handle.

A message becomes a dead letter when it is sent to an actor that has stopped,
when it is still queued as its actor stops, when a bounded mailbox drops it,
or when an asyncio handler is cancelled before it finishes. Each is recorded
(a bounded window of recent ones), counted by reason, and handed to
subscribers. Recording never raises into the runtime's threads.

Nothing is lost, and that includes a reply future travelling inside a
message: a message class that carries one (a router's management ask, an ask
a router routes from its own thread, any service's envelope of the kind)
declares it with a ``carried_reply()`` method (the `CarriesReply` protocol).
Every path that makes a message a dead letter goes through
`DeadLetters.record`, and recording fails the carried future: with the
letter's exception if it has one (a mailbox overflow, the handler's error),
else with `ActorDeadError`. So an ask told as a wrapper resolves exactly as a
plain ask queued in the same place does, whatever ends its recipient.
"""

from __future__ import annotations

import enum
import inspect
import queue
import threading
from collections import Counter, deque
from typing import TYPE_CHECKING, Any, Protocol

import attrs
from loguru import logger
from pykka import ActorDeadError

from actors._core.frozendict import FrozenDict

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    import pykka

__all__ = ["CarriesReply", "DeadLetter", "DeadLetterReason", "DeadLetterStatistics", "DeadLetters"]


class DeadLetterReason(enum.StrEnum):
    """Why a message was not handled."""

    RECIPIENT_STOPPED = "recipient_stopped"
    """Sent to an actor that had already stopped."""
    QUEUED_AT_STOP = "queued_at_stop"
    """Still waiting in the mailbox when its actor stopped."""
    MAILBOX_OVERFLOW = "mailbox_overflow"
    """Dropped by a bounded mailbox (policy `drop_oldest` or `drop_newest`)."""
    HANDLER_FAILED = "handler_failed"
    """Its handler raised; `DeadLetter.exception` holds what."""
    STOPPED_WHILE_HANDLING = "stopped_while_handling"
    """Its (asyncio) handler was cancelled mid-way because its actor stopped."""
    ASK_ABANDONED = "ask_abandoned"
    """The asker of an asyncio actor gave up (ask timeout, or the awaiting task
    was cancelled): the message was skipped, or its handler cancelled."""
    NODE_DOWN = "node_down"
    """Bound for an actor on a cluster node that is DOWN (or went DOWN with it in flight)."""
    NO_SUBSCRIBER = "no_subscriber"
    """Published to a topic (or multicast to an agent) that nobody subscribed to."""
    REJECTED = "rejected"
    """A shared service refused it as malformed; `DeadLetter.exception` says why."""


class CarriesReply(Protocol):
    """A message that carries a reply future someone waits on (the protocol `DeadLetters.record` keeps).

    Declare it on the message's class; a message that becomes a dead letter
    has its carried future failed (unless it is settled already), so its
    asker never waits for ever. Called on whichever thread records the dead
    letter; it must only return the future (or None: a tell in the same wrapper).
    """

    def carried_reply(self) -> pykka.Future[Any] | None:
        """Return the future this message's asker waits on, or None."""
        ...


def _refuse_carried(
    message: Any, recipient: pykka.ActorRef[Any], reason: DeadLetterReason, exc: BaseException | None
) -> None:
    """Fail the reply future `message` carries (`CarriesReply`), if it carries one that is not settled yet."""
    carried_reply = getattr(message.__class__, "carried_reply", None)
    if carried_reply is None:
        return
    future = carried_reply(message)
    if future is None or future.done():
        return
    if exc is None:
        # pykka's text for a message to an actor that is gone; else the cell's for mail left at a stop.
        what = "not found" if reason is DeadLetterReason.RECIPIENT_STOPPED else "stopped before handling the message"
        exc = ActorDeadError(f"{recipient} {what}")
    try:  # noqa: SIM105 - as `reply_exception`
        future.set_exception((type(exc), exc, None))
    except queue.Full:
        pass  # settled meanwhile (its asker gave up, or a racing reply)


@attrs.frozen
class DeadLetter:
    """One message that was not handled."""

    message: Any
    recipient: pykka.ActorRef[Any]
    reason: DeadLetterReason
    exception: BaseException | None = None


def _frozen_counts(counts: Mapping[DeadLetterReason, int]) -> FrozenDict[DeadLetterReason, int]:
    return counts if isinstance(counts, FrozenDict) else FrozenDict(counts)


@attrs.frozen
class DeadLetterStatistics:
    """A snapshot of the dead-letter counters: immutable all the way down, hashable, equal when equal.

    Attributes:
        total: dead letters recorded since the system started.
        by_reason: how many of them for each reason met so far (a reason never
            met is absent); a `FrozenDict`, which equals a plain dict of the
            same counts.
    """

    total: int
    by_reason: FrozenDict[DeadLetterReason, int] = attrs.field(converter=_frozen_counts)


Subscriber = "pykka.ActorRef[Any] | Callable[[DeadLetter], object]"


class DeadLetters:
    """The dead-letter office of one `ActorSystem`.

    Thread contract: every method may be called from any thread. Subscribers
    are called (or told) on the thread that records the dead letter, outside
    any lock; a callable subscriber that raises is logged and kept, an actor
    subscriber that has stopped is dropped.
    """

    def __init__(self, *, keep: int = 1000) -> None:
        self._lock = threading.Lock()
        self._recent: deque[DeadLetter] = deque(maxlen=keep)
        self._by_reason: Counter[DeadLetterReason] = Counter()
        self._subscribers: tuple[Any, ...] = ()

    def record(
        self,
        message: Any,
        recipient: pykka.ActorRef[Any],
        reason: DeadLetterReason,
        exception: BaseException | None = None,
    ) -> None:
        """Record one dead letter, fail the reply it carries (`CarriesReply`), tell the subscribers. Never raises."""
        try:
            _refuse_carried(message, recipient, reason, exception)
        except Exception:  # noqa: BLE001 - a message's carried_reply must not reach the runtime
            logger.opt(exception=True).error("carried_reply of dead letter {!r} failed", message)
        letter = DeadLetter(message, recipient, reason, exception)
        with self._lock:
            self._recent.append(letter)
            self._by_reason[reason] += 1
            subscribers = self._subscribers
        for subscriber in subscribers:
            self._deliver(subscriber, letter)

    def subscribe(self, subscriber: pykka.ActorRef[Any] | Callable[[DeadLetter], object]) -> None:
        """Receive every future dead letter: an actor is told it, a callable is called with it.

        Raises:
            TypeError: `subscriber` is a coroutine function: it would be called
                on the recording thread and never awaited (subscribe an asyncio
                actor instead).
        """
        if inspect.iscoroutinefunction(subscriber):
            msg = (
                f"dead-letter subscriber {subscriber!r} is a coroutine function, which nothing would await; "
                "subscribe a plain function, or an actor (e.g. an asyncio actor with an async on_receive)"
            )
            raise TypeError(msg)
        with self._lock:
            self._subscribers = (*self._subscribers, subscriber)

    def unsubscribe(self, subscriber: Any) -> None:
        """Stop sending dead letters to `subscriber`. No-op if it is not subscribed."""
        with self._lock:
            self._subscribers = tuple(s for s in self._subscribers if s is not subscriber)

    @property
    def count(self) -> int:
        """Return how many dead letters were recorded since the system started."""
        with self._lock:
            return sum(self._by_reason.values())

    def recent(self) -> list[DeadLetter]:
        """Return the most recent dead letters, oldest first (a bounded window)."""
        with self._lock:
            return list(self._recent)

    def statistics(self) -> DeadLetterStatistics:
        """Return a snapshot of the counters."""
        with self._lock:
            return DeadLetterStatistics(total=sum(self._by_reason.values()), by_reason=FrozenDict(self._by_reason))

    def _deliver(self, subscriber: Any, letter: DeadLetter) -> None:
        tell = getattr(subscriber, "tell", None)
        try:
            if tell is not None:
                tell(letter)
            else:
                subscriber(letter)
        except ActorDeadError:
            self.unsubscribe(subscriber)
        except Exception:  # noqa: BLE001 - a subscriber's failure must not reach the runtime
            logger.opt(exception=True).error("Dead-letter subscriber {!r} failed on {!r}", subscriber, letter)
