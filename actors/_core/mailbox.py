"""Mailboxes: the queue in front of each actor, and what happens when it is full.

A mailbox is chosen per actor at spawn time (``system.spawn(cls, mailbox=...)``)
from these immutable specs:

- `FifoMailbox` (the default): first in, first out; unbounded.
- `PriorityMailbox`: higher `key(message)` first, FIFO within one priority.
  The default key reads ``message.priority`` (0 when absent), so
  `actors.protocol.AgentMessage` orders by its `Priority`.
- `BoundedMailbox`: at most `capacity` messages, with an overflow policy:
  ``"fail"`` (the sender gets `MailboxFullError`), ``"drop_oldest"`` /
  ``"drop_newest"`` (the dropped message goes to dead letters; an ask that is
  dropped fails with `MailboxFullError`), or ``"block"`` (the sender waits up
  to `block_timeout` seconds for room, then gets `MailboxFullError`; a sender
  on the event loop of the asyncio actor it fills gets it at once).

Each spec builds a queue object with the small interface the runtime uses:
``append(item)`` (a sender's), ``offer(item)`` (the runtime's: never
blocks), ``popleft()`` (raises `IndexError` when empty) and ``len()`` (the
`MessageQueue` protocol). An item is a bare message (a tell), an `Asked`
(an ask's future carrying its message) or a pykka `Envelope` (see
`actors._core.cell`). The FIFO queue is a bare `collections.deque`, whose
append and popleft are atomic in CPython, so the default hot path takes no
lock; its append never blocks, so it needs no ``offer``. Until an actor's
second message it is a 48-byte `LazyFifo` (an empty deque is 760 bytes, most
of an idle actor), which holds the first message itself and puts the deque
in its place on the second.

Batching (`take_head`, behind `Actor.take_queued`): the actor's own turn may
take the item at the head of its queue if its message passes a test. Each
queue kind offers ``peek()`` (the head, `IndexError` when empty) and
``pop_head(item)`` (take the head if it is still `item`); the deque gets both
as functions here. The test runs with no lock held, so it may be any code;
the head is taken only if it did not change meanwhile (a higher priority
arrived, or a ``drop_oldest`` sender dropped it), else the new head is tested.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from _thread import allocate_lock
from asyncio import _get_running_loop
from collections import deque
from typing import TYPE_CHECKING, Any, Literal, Protocol

import attrs

from actors._core._pykka import Envelope
from actors._core.deadletters import DeadLetterReason
from actors._core.future import Asked
from actors.errors import MailboxFullError

if TYPE_CHECKING:
    from collections.abc import Callable

    from actors._core.cell import Cell

__all__ = [
    "BoundedMailbox",
    "FifoMailbox",
    "LazyFifo",
    "MailboxSpec",
    "MessageQueue",
    "Overflow",
    "PriorityMailbox",
    "message_priority",
    "take_head",
]

Overflow = Literal["fail", "drop_oldest", "drop_newest", "block"]


class MessageQueue(Protocol):
    """What the runtime needs of a mailbox's queue.

    `append` is a sender's: it may block (a bounded ``"block"`` mailbox) or
    raise `MailboxFullError`. `offer` is the runtime's own (a timer firing,
    a `Terminated`), from threads that must never wait: it raises
    `MailboxFullError` or drops, as the overflow policy says, but never blocks.
    `offer` is optional, so not declared here: a queue whose `append` never
    blocks may leave it out (the FIFO mailbox's bare deque does), and
    `Cell.post_internal` then appends. The bounded and priority queues have it.
    """

    def append(self, item: Any, /) -> None: ...
    def popleft(self) -> Any: ...
    def __len__(self) -> int: ...


class MailboxSpec(Protocol):
    """A mailbox description; `create` builds the queue for one actor."""

    def create(self, cell: Cell) -> MessageQueue: ...


def message_priority(message: Any) -> Any:
    """Return ``message.priority``, or 0 for messages without one (the default key)."""
    return getattr(message, "priority", 0)


@attrs.frozen
class FifoMailbox:
    """Unbounded, first in first out. The default."""

    def create(self, cell: Cell) -> MessageQueue:
        """Build the queue for one actor: a placeholder until its first message (`LazyFifo`)."""
        return LazyFifo(cell)


class LazyFifo:
    """An actor's FIFO queue until its second message: 48 bytes where an empty deque is 760.

    Most of a million idle actors' memory would be empty deques, and most of
    a million actors asked once would be deques that held one message (one
    ask to each of 1,000,000 actors made 1,000,000 deques: 0.76 GB, ~0.85 µs
    and one more object for the garbage collector to walk, each). This
    placeholder stands in ``cell.queue`` and holds the first message itself;
    the second `append` (or `offer`), whether or not the first was taken
    meanwhile, puts a bare `collections.deque` in its place, for good, with
    the message still held at its head. From then on the hot path is the
    deque's own (`ActorRef.tell`: ``cell.queue.append``): a bare deque, not a
    subclass with an `offer`, since `cell.queue.append` and `len(cell.queue)`
    on a subclass cost ~7 ns more per tell (27 -> 34 ns, pinned, 3.11). An
    actor sent one message after another (ping-pong) so gets its deque on
    its second message, as one sent a burst does. Its append never blocks:
    it is its offer.

    Thread contract: any thread may call any method, also on a placeholder
    already replaced (a sender or the turn that read ``cell.queue`` just
    before): every method then goes to the deque, so no message is lost and
    the order of one sender's messages holds. The held message and the
    replacement change under a lock, taken only while an actor has no deque,
    so two first senders at once make one deque; one of `_STRIPES`, chosen
    by the placeholder's address, not one for all: with one, a million
    first asks from one thread and their turns on the dispatchers queued on
    it (13 µs an append, measured), where a lock per actor would be one
    more object each.
    """

    __slots__ = ("_cell", "_item")

    def __init__(self, cell: Cell) -> None:
        self._cell = cell
        # Invariant (changed under the placeholder's lock of `_STRIPES`): `_FRESH` (never held a
        # message), the one message queued, or `_SPENT` (it held one, taken
        # since; the next append makes the deque, `append_stop` does not). `_SPENT` also once the
        # deque is in the cell's place.
        self._item: Any = _FRESH

    def append(self, item: Any, /) -> None:
        """Hold `item` if it is the first message ever; else put the cell's deque in place (once) and append."""
        cell = self._cell
        with _STRIPES[id(self) >> 4 & _STRIPE_MASK]:
            queue: Any = cell.queue
            if queue is self:
                held = self._item
                if held is _FRESH:
                    self._item = item
                    return
                queue = cell.queue = deque() if held is _SPENT else deque((held,))
                self._item = _SPENT
        queue.append(item)

    offer = append  # unbounded: never full

    def append_stop(self, item: Any, /) -> None:
        """Queue a stop (`ActorRef.stop`): as `append`, but held here if no message is, even after the first.

        A stop is the last message an actor handles (what comes after it is
        dead-lettered), so an actor asked once, then stopped, needs no deque
        for it: making one (760 bytes, freed again at the stop) was ~0.5 µs
        of each of 100,000 ``stop(block=False)`` in a row, on the sender's
        thread. A message appended after it still finds it held and moves
        it to the head of the deque, so the order holds.
        """
        cell = self._cell
        with _STRIPES[id(self) >> 4 & _STRIPE_MASK]:
            queue: Any = cell.queue
            if queue is self:
                held = self._item
                if held is _FRESH or held is _SPENT:
                    self._item = item
                    return
                queue = cell.queue = deque((held,))
                self._item = _SPENT
        queue.append(item)

    def popleft(self) -> Any:
        """Take the head (IndexError when empty)."""
        with _STRIPES[id(self) >> 4 & _STRIPE_MASK]:
            queue = self._cell.queue
            if queue is self:
                held = self._item
                if held is not _FRESH and held is not _SPENT:
                    self._item = _SPENT
                    return held
        if queue is self:
            raise IndexError(_EMPTY)  # outside the lock's block: cheaper
        return queue.popleft()

    def take(self) -> Any:
        """Take the head, or return `NOTHING` when empty: `len` and `popleft` in one call (`Cell._process`)."""
        held = self._item
        queue: Any = self._cell.queue
        if queue is self:
            if held is _FRESH or held is _SPENT:
                return NOTHING  # read without the lock, as `__len__`: a message arriving now gets its own turn
            with _STRIPES[id(self) >> 4 & _STRIPE_MASK]:
                queue = self._cell.queue
                if queue is self:  # only the turn takes: the message read above is still held
                    held, self._item = self._item, _SPENT
                    return held
        return queue.popleft() if len(queue) else NOTHING  # the deque in the cell's place

    def peek(self) -> Any:
        """Return the head (IndexError when empty)."""
        with _STRIPES[id(self) >> 4 & _STRIPE_MASK]:
            queue: Any = self._cell.queue
            if queue is self:
                held = self._item
                if held is _FRESH or held is _SPENT:
                    raise IndexError(_EMPTY)
                return held
        return queue[0]

    def pop_head(self, item: Any) -> bool:
        """Take the head if it is still `item`; return whether it was."""
        with _STRIPES[id(self) >> 4 & _STRIPE_MASK]:
            queue = self._cell.queue
            if queue is self:
                if self._item is not item or item is _FRESH or item is _SPENT:
                    return False
                self._item = _SPENT
                return True
        return _pop_head(queue, item)

    def __len__(self) -> int:
        # No lock: a hint, as a deque's len. `_item` is read before the cell's
        # queue, so a held message is counted, or the deque it moved to is.
        held = self._item
        queue = self._cell.queue
        if queue is not self:
            return len(queue)
        return 0 if held is _FRESH or held is _SPENT else 1


_STRIPE_MASK = 63
_STRIPES = tuple(allocate_lock() for _ in range(_STRIPE_MASK + 1))
"""Locks, one held while a `LazyFifo` takes or gives its message, or puts its deque in the cell's place."""

_FRESH: Any = object()
"""`LazyFifo._item` of a placeholder that never held a message."""

_SPENT: Any = object()
"""`LazyFifo._item` of a placeholder whose one message was taken (or whose deque is in place)."""

_EMPTY = "the mailbox is empty"


@attrs.frozen
class PriorityMailbox:
    """Unbounded; a higher `key(message)` is handled first, FIFO within one priority.

    `key` runs on the sender's thread for every message and must not raise;
    control messages (stop, proxy calls) get the key of their wrapped message
    or 0.
    """

    key: Callable[[Any], Any] = message_priority

    def create(self, cell: Cell) -> MessageQueue:  # noqa: ARG002 - the MailboxSpec protocol's signature
        """Build the queue for one actor."""
        return _PriorityQueue(self.key)


@attrs.frozen
class BoundedMailbox:
    """At most `capacity` queued messages; `overflow` says what happens beyond."""

    capacity: int = attrs.field(validator=[attrs.validators.instance_of(int), attrs.validators.gt(0)])
    overflow: Overflow = attrs.field(
        default="fail",
        validator=attrs.validators.in_(("fail", "drop_oldest", "drop_newest", "block")),
    )
    block_timeout: float | None = attrs.field(default=None)
    inner: FifoMailbox | PriorityMailbox = attrs.field(factory=FifoMailbox)

    @block_timeout.validator
    def _check_block_timeout(self, _: object, value: float | None) -> None:
        if value is not None and value < 0:
            msg = f"BoundedMailbox.block_timeout must be None (wait forever) or >= 0 seconds, got {value!r}"
            raise ValueError(msg)

    def create(self, cell: Cell) -> MessageQueue:
        """Build the queue for one actor."""
        # The bounded queue owns its inner queue, so a FIFO one is a deque at once
        # (a `LazyFifo` replaces itself in the cell, which holds the bounded queue).
        inner = deque() if isinstance(self.inner, FifoMailbox) else self.inner.create(cell)
        return _BoundedQueue(self, inner, cell)


class _PriorityQueue:
    # Invariant: _heap holds (-priority, seq, envelope); seq is unique and
    # increasing, so equal priorities pop in arrival order and envelopes are
    # never compared.
    __slots__ = ("_heap", "_key", "_lock", "_seq")

    def __init__(self, key: Callable[[Any], Any]) -> None:
        self._heap: list[tuple[Any, int, Envelope[Any]]] = []
        self._key = key
        self._seq = itertools.count()
        self._lock = threading.Lock()

    def append(self, envelope: Any) -> None:
        cls = envelope.__class__
        # An `Asked` still on its way is an ask (a told copy of one is ordered as its message, see `Asked`).
        message = envelope.message if cls is Envelope or (cls is Asked and envelope.target is not None) else envelope
        entry = (-self._key(message), next(self._seq), envelope)
        with self._lock:
            heapq.heappush(self._heap, entry)

    offer = append  # unbounded: never full; its lock is held only to push

    def popleft(self) -> Any:
        with self._lock:
            return heapq.heappop(self._heap)[2]

    def peek(self) -> Envelope[Any]:
        """Return the item `popleft` would take (IndexError when empty)."""
        with self._lock:
            return self._heap[0][2]

    def pop_head(self, item: Envelope[Any]) -> bool:
        """Take the head if it is still `item`; return whether it was."""
        with self._lock:
            heap = self._heap
            if not heap or heap[0][2] is not item:
                return False
            heapq.heappop(heap)
            return True

    def pop_oldest(self) -> Envelope[Any]:
        with self._lock:
            i = min(range(len(self._heap)), key=lambda j: self._heap[j][1])
            entry = self._heap[i]
            self._heap[i] = self._heap[-1]
            self._heap.pop()
            heapq.heapify(self._heap)
            return entry[2]

    def __len__(self) -> int:
        return len(self._heap)


class _BoundedQueue:
    # Invariant: len(_inner) <= capacity at every moment outside _cond.
    __slots__ = ("_cell", "_cond", "_inner", "_spec")

    def __init__(self, spec: BoundedMailbox, inner: MessageQueue, cell: Cell) -> None:
        self._spec = spec
        self._inner = inner
        self._cell = cell
        self._cond = threading.Condition(threading.Lock())

    def append(self, envelope: Envelope[Any], *, may_block: bool = True) -> None:
        spec = self._spec
        dropped: Envelope[Any] | None = None
        with self._cond:
            if len(self._inner) >= spec.capacity:
                policy = spec.overflow
                if policy == "block" and may_block:
                    self._wait_for_room()
                elif policy == "fail":
                    raise MailboxFullError(self._full_message())
                elif policy == "drop_oldest":
                    dropped = self._pop_oldest()
                else:  # drop_newest, or a timer firing into a full "block" mailbox
                    dropped, envelope = envelope, None  # type: ignore[assignment]
            if envelope is not None:
                self._inner.append(envelope)
        if dropped is not None:
            self._cell.reject(dropped, DeadLetterReason.MAILBOX_OVERFLOW, MailboxFullError(self._full_message()))

    def offer(self, envelope: Envelope[Any]) -> None:
        # Never waits: a full "block" mailbox drops it as "drop_newest" would.
        self.append(envelope, may_block=False)

    def popleft(self) -> Any:
        with self._cond:
            envelope = self._inner.popleft()
            self._cond.notify()
            return envelope

    def __len__(self) -> int:
        return len(self._inner)

    def peek(self) -> Envelope[Any]:
        """Return the item `popleft` would take (IndexError when empty)."""
        with self._cond:
            head: Envelope[Any] = _peek(self._inner)
            return head

    def pop_head(self, item: Envelope[Any]) -> bool:
        """Take the head if it is still `item`, and wake a sender waiting for room; return whether it was."""
        with self._cond:
            if not _pop_head(self._inner, item):
                return False
            self._cond.notify()
            return True

    def _pop_oldest(self) -> Any:
        inner = self._inner
        if isinstance(inner, _PriorityQueue):
            return inner.pop_oldest()
        return inner.popleft()

    def _wait_for_room(self) -> None:
        # Called with _cond held.
        aio = self._cell.aio
        if aio is not None and _get_running_loop() is aio.loop:
            # Only this loop can make room: waiting here would block it for good.
            msg = (
                f"{self._full_message()}; the sender runs on the event loop that {self._cell.ref} runs on, "
                "so it cannot wait for room (the loop would stop); tell from another thread, or pick "
                "another overflow policy"
            )
            raise MailboxFullError(msg)
        timeout = self._spec.block_timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        while len(self._inner) >= self._spec.capacity:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                msg = f"{self._full_message()}; waited {timeout} seconds for room"
                raise MailboxFullError(msg)
            self._cond.wait(remaining)

    def _full_message(self) -> str:
        return (
            f"mailbox of {self._cell.ref} is full ({self._spec.capacity} messages, overflow={self._spec.overflow!r}); "
            "slow down the sender, raise the capacity or pick another overflow policy"
        )


NOTHING: Any = object()
"""What `take_head` returns when it takes nothing."""


def _peek(queue: Any) -> Any:
    # The FIFO queue is a bare deque: its head is queue[0].
    return queue[0] if queue.__class__ is deque else queue.peek()


def _pop_head(queue: Any, item: Any) -> bool:
    if queue.__class__ is deque:
        # Only the actor's own turn takes from a FIFO deque (senders append
        # on the right), so its head is still `item`; the check costs nothing.
        if queue and queue[0] is item:
            queue.popleft()
            return True
        return False
    return bool(queue.pop_head(item))


def take_head(queue: MessageQueue, accept: Callable[[Any], bool]) -> Any:
    """Take the head item of `queue` if `accept(item)`; return it, or `NOTHING`.

    An item is a bare message (a tell) or an `Envelope` (an ask, or a tell
    with a receipt). `accept` runs with no lock held; if the head
    changed while it ran, the new head is tested instead.

    Thread contract: only the queue's consumer (the actor's turn) calls it.
    """
    while True:
        if not len(queue):  # the common case, without raising IndexError
            return NOTHING
        try:
            item = _peek(queue)
        except IndexError:
            return NOTHING
        if accept(item):
            if _pop_head(queue, item):
                return item
            continue
        try:
            if _peek(queue) is item:
                return NOTHING
        except IndexError:
            return NOTHING
