"""Reliable delivery between two actors: Akka's producer and consumer controllers.

    consumer = system.spawn(ConsumerController, handler_ref, window=50)
    producer = system.spawn(ProducerController, consumer)
    producer.tell(job)            # reaches handler_ref exactly once, in order

The guarantee, in one sentence: every message the producer controller
accepts reaches the handler at least once and, while both controllers live,
exactly once and in the order accepted (at-least-once, deduplicated; there
is no durable outbox yet, so what a killed producer had accepted is lost).

Protocol (Akka's, from akka-actor-typed's reliable delivery):

- The producer numbers each accepted message (`SequencedMessage`, seq 1, 2,
  3... per producer-consumer pair) and keeps it until it is confirmed.
- The consumer drives demand: it grants a window (default 50) with a
  `Request(confirmed, up_to)` and grants more when half of it is used, each
  request also confirming what it has delivered. The producer sends only up
  to ``up_to``; the rest waits in its buffer.
- The producer resends what is unconfirmed when a resend tick passes without
  progress, the interval doubling from ``resend_interval`` to
  ``max_resend_interval`` (reset on progress); the consumer repeats its
  request on its own tick when it has news or hears nothing, and on every
  duplicate, so a lost request costs one tick.
- The consumer delivers seq n only after n - 1: an early message waits (up
  to a window's worth); a duplicate is dropped. The handler is told each
  message once, in order.

Links. What travels between the controllers goes through ``link``, a
function taking the destination's ``tell`` and returning the function to
send with: the default is the tell itself. `LossyLink` drops, duplicates and
reorders a seeded fraction of messages, for tests and benchmarks.

Timers run on the system's clock (a `ManualClock` drives them in tests).
Threading: each controller is an ordinary actor; its state is touched only by
its own turns; `LossyLink` may be called from any thread.
"""

from __future__ import annotations

import random
import threading
from typing import TYPE_CHECKING, Any

import attrs

from actors._core import Actor, ActorRef

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "ConsumerController",
    "ConsumerStatistics",
    "LossyLink",
    "ProducerController",
    "ProducerStatistics",
    "Request",
    "SequencedMessage",
]

Link = "Callable[[Callable[[Any], None]], Callable[[Any], None]]"


@attrs.frozen
class SequencedMessage:
    """A message on its way from a producer controller to its consumer controller."""

    seq: int
    message: Any


@attrs.frozen
class Request:
    """Demand from the consumer: everything up to `confirmed` was delivered; send up to `up_to`."""

    confirmed: int
    up_to: int


@attrs.frozen
class ProducerStatistics:
    """A producer controller's counters."""

    accepted: int
    sent: int
    resent: int
    confirmed: int
    buffered: int


@attrs.frozen
class ConsumerStatistics:
    """A consumer controller's counters."""

    delivered: int
    duplicates: int
    early: int
    requests: int


@attrs.frozen
class _Register:
    producer: ActorRef[Any]


@attrs.frozen
class _Tick:
    pass


@attrs.frozen
class GetStatistics:
    """Ask either controller for its statistics."""


class ProducerController(Actor):
    """The sending side (see the module docs): tell it messages; they reach the consumer's handler.

    Args:
        consumer: the `ConsumerController` ref.
        link: wraps the tell toward the consumer (default: none).
        resend_interval / max_resend_interval: the resend backoff, in seconds of the system's clock.
    """

    def __init__(
        self,
        consumer: ActorRef[Any],
        *,
        link: Callable[[Callable[[Any], None]], Callable[[Any], None]] | None = None,
        resend_interval: float = 1.0,
        max_resend_interval: float = 30.0,
    ) -> None:
        super().__init__()
        self.consumer = consumer
        self.send = link(consumer.tell) if link is not None else consumer.tell
        self.initial = resend_interval
        self.maximum = max_resend_interval
        self.interval = resend_interval
        # Invariant: buffer holds seq confirmed+1 .. next_seq-1; of those, up to sent_up_to went out at least once.
        self.buffer: dict[int, Any] = {}
        self.next_seq = 1
        self.confirmed = 0
        self.sent_up_to = 0
        self.up_to = 0
        self.progress = False
        self.sent = self.resent = 0

    def on_start(self) -> None:
        """Introduce this producer to the consumer (a local tell) and arm the resend tick."""
        self.consumer.tell(_Register(self.actor_ref))  # type: ignore[arg-type]
        self.timers.start_single_timer("resend", _Tick(), self.interval)

    def on_receive(self, message: Any) -> Any:
        """Accept a message (its seq is the reply to an ask), or handle the protocol's own."""
        cls = message.__class__
        if cls is Request:
            self._requested(message)
        elif cls is _Tick:
            self._tick()
        elif cls is GetStatistics:
            return ProducerStatistics(self.next_seq - 1, self.sent, self.resent, self.confirmed, len(self.buffer))
        else:
            seq = self.next_seq
            self.next_seq += 1
            self.buffer[seq] = message
            if seq <= self.up_to:
                self.sent_up_to = seq
                self.sent += 1
                self.send(SequencedMessage(seq, message))
            return seq
        return None

    def _requested(self, request: Request) -> None:
        if request.confirmed > self.confirmed:
            for seq in range(self.confirmed + 1, min(request.confirmed, self.next_seq - 1) + 1):
                self.buffer.pop(seq, None)
            self.confirmed = request.confirmed
            self.sent_up_to = max(self.sent_up_to, self.confirmed)
            self.progress = True
        self.up_to = max(self.up_to, request.up_to)
        last = min(self.up_to, self.next_seq - 1)
        while self.sent_up_to < last:
            self.sent_up_to += 1
            self.sent += 1
            self.send(SequencedMessage(self.sent_up_to, self.buffer[self.sent_up_to]))

    def _tick(self) -> None:
        if self.progress or self.sent_up_to == self.confirmed:
            self.interval = self.initial
        else:
            # No confirmation since the last tick: resend what is out, and back off.
            for seq in range(self.confirmed + 1, self.sent_up_to + 1):
                self.resent += 1
                self.send(SequencedMessage(seq, self.buffer[seq]))
            self.interval = min(self.interval * 2, self.maximum)
        self.progress = False
        self.timers.start_single_timer("resend", _Tick(), self.interval)


class ConsumerController(Actor):
    """The receiving side (see the module docs): tells `deliver_to` each message once, in order.

    Args:
        deliver_to: the handler's ref.
        window: messages granted at a time (refilled at half).
        link: wraps the tell toward the producer (default: none).
        request_interval: seconds between repeated requests when it has news or hears nothing.
    """

    def __init__(
        self,
        deliver_to: ActorRef[Any],
        *,
        window: int = 50,
        link: Callable[[Callable[[Any], None]], Callable[[Any], None]] | None = None,
        request_interval: float = 1.0,
    ) -> None:
        super().__init__()
        if isinstance(window, bool) or not isinstance(window, int) or window < 2:
            msg = f"the window must be an int >= 2 messages, got {window!r}"
            raise ValueError(msg)
        self.deliver_to = deliver_to
        self.window = window
        self.link = link
        self.interval = request_interval
        self.reply: Callable[[Any], None] | None = None
        # Invariant: every seq <= delivered was told to deliver_to exactly once, in order;
        # early holds seqs > delivered + 1.
        self.delivered = 0
        self.requested = 0
        self.acked = 0
        self.early: dict[int, Any] = {}
        self.heard = False
        self.duplicates = self.early_count = self.requests = 0

    def on_receive(self, message: Any) -> Any:
        """Handle the protocol's messages."""
        cls = message.__class__
        if cls is SequencedMessage:
            self._arrived(message)
        elif cls is _Tick:
            if self.delivered > self.acked or self.early or not self.heard:
                self._request()
            self.heard = False
            self.timers.start_single_timer("request", _Tick(), self.interval)
        elif cls is _Register:
            producer = message.producer
            self.reply = self.link(producer.tell) if self.link is not None else producer.tell
            self.requested = self.delivered + self.window
            self._request()
            self.timers.start_single_timer("request", _Tick(), self.interval)
        elif cls is GetStatistics:
            return ConsumerStatistics(self.delivered, self.duplicates, self.early_count, self.requests)
        return None

    def _arrived(self, sequenced: SequencedMessage) -> None:
        self.heard = True
        seq = sequenced.seq
        if seq <= self.delivered or seq in self.early:
            self.duplicates += 1
            self._request()  # the producer did not hear our confirmation
            return
        if seq != self.delivered + 1:
            if seq <= self.requested:
                self.early[seq] = sequenced.message
                self.early_count += 1
            return
        tell = self.deliver_to.tell
        tell(sequenced.message)
        self.delivered = seq
        early = self.early
        while early:
            following = early.pop(self.delivered + 1, None)
            if following is None:
                break
            tell(following)
            self.delivered += 1
        if self.requested - self.delivered <= self.window // 2:
            self.requested = self.delivered + self.window
            self._request()

    def _request(self) -> None:
        if self.reply is not None:
            self.requests += 1
            self.acked = self.delivered
            self.reply(Request(self.delivered, self.requested))


class LossyLink:
    """A seeded unreliable link: drops, duplicates and reorders a fraction of what passes.

    ``link = LossyLink(drop=0.1, duplicate=0.05, reorder=0.05, seed=1)`` is given
    as ``link=`` to a controller. Reordering holds a message back until the next
    one has passed. Thread-safe; the counters say what it did.
    """

    def __init__(self, *, drop: float = 0.0, duplicate: float = 0.0, reorder: float = 0.0, seed: int = 0) -> None:
        for name, value in (("drop", drop), ("duplicate", duplicate), ("reorder", reorder)):
            if not 0.0 <= value < 1.0:
                msg = f"{name} must be a fraction in [0, 1), got {value!r}"
                raise ValueError(msg)
        self.drop, self.duplicate, self.reorder = drop, duplicate, reorder
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.held: dict[int, tuple[Callable[[Any], None], Any]] = {}
        self.passed = self.dropped = self.duplicated = self.reordered = 0

    def __call__(self, tell: Callable[[Any], None]) -> Callable[[Any], None]:
        """Return the lossy version of `tell`."""
        key = id(tell)

        def send(item: Any) -> None:
            with self.lock:
                roll = self.rng.random()
                held = self.held.pop(key, None)
                if roll < self.drop:
                    self.dropped += 1
                    out: list[Any] = []
                elif roll < self.drop + self.duplicate:
                    self.duplicated += 1
                    out = [item, item]
                elif roll < self.drop + self.duplicate + self.reorder and held is None:
                    self.reordered += 1
                    self.held[key] = (tell, item)
                    out = []
                else:
                    out = [item]
                self.passed += len(out)
            for each in out:
                tell(each)
            if held is not None:
                held[0](held[1])

        return send
