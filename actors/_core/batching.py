"""Batching: a handler takes the messages queued right behind its own (`Actor.take_queued`).

An actor that does one costly thing per message (a commit, a flush, a call
over the network) can do it once for a run of messages: its handler takes the
matching messages queued behind the current one, handles them all, does the
costly thing once, then answers each. The StateStore's group commit is built
on it::

    def on_receive(self, message):
        with self.take_queued(lambda queued: isinstance(queued.message, Write), limit=99) as taken:
            batch = list(taken)
            self.commit([message, *(queued.message for queued in batch)])  # raises: every ask taken fails
            for queued in batch:
                queued.reply(None)       # an ask's reply (or a receipt's); nothing for a plain tell
        return None                      # the current message's reply, as always

Semantics, the same on every mailbox kind (FIFO, priority, bounded) and in
every mode:

- *Mailbox order.* Messages are taken from the head of the mailbox, in the
  order the actor would otherwise receive them (priority first, then arrival,
  on a priority mailbox), and the take stops at the first message the
  predicate refuses. It never skips one: what is taken is exactly what the
  next turns would have handled first, so handling a batch is handling those
  messages in order, only sooner. (A selective receive that skipped messages
  would reorder them around the ones it left.)
- *Lazily.* The iterator takes a message only when it yields it, and calls
  the predicate on it then, so the predicate may depend on what the handler
  did with the previous ones. Stop iterating and the rest stay queued.
  (A take from a mailbox empty when `take_queued` is called is empty: what
  arrives later is for the next turns.)
  The predicate gets the `QueuedMessage` it would yield, so it can tell an
  ask (whose error would reach its asker) from a tell (whose error would
  fail the actor).
- *At most `limit`* messages, fewer if the mailbox runs out, a message is
  refused, or a system message is waiting (a stop that does not wait its
  turn, a supervisor's directive): a batch never holds those up.
- *Never a runtime message*: the take stops at a message the runtime handles
  itself (``ref.stop()``'s stop, a proxy call, a timer's message, a
  `Terminated`); the predicate never sees them.
- *Abandoned asks* (an asyncio asker that gave up) are not yielded: they
  become dead letters, as when the turn reaches them.

Nothing is lost: each `QueuedMessage` carries the reply future the handler
now owns. A taken ask must be answered (`QueuedMessage.reply` or `fail`),
now or later; a taken tell is the handler's, as the current message is (a
tell sent with a receipt carries it as `reply_to`: settle it too). Used
as a context manager, `TakenMessages` answers every ask it yielded and the
handler has not answered with the exception that leaves the block, so a
failing handler fails its whole batch as it would fail one ask.

Bounded mailboxes: each message taken frees its slot at once, as one handled
would, so a sender waiting for room (``overflow="block"``) is woken.

Plain tells of one class (`Actor.take_queued_tells`). A handler that only
batches fire-and-forget notifications of one message class (registrations
told by the thousand, say) has no reply to settle and no predicate to ask:
``take_queued_tells(cls, limit=n)`` yields the messages themselves, taken
from the head while the head is a plain tell of exactly class `cls` (an ask,
a tell with a receipt, a traced message or a subclass ends the take, and
gets its own turn). The same mailbox order, laziness, `limit`, system-message
and runtime-message rules as `take_queued` hold, at a fraction of the cost
(a FIFO mailbox: one C-level check and pop a message, no `QueuedMessage`, no
predicate call). A taken tell is the handler's, as the current message is: an
error it raises is the handler's to deal with (a service that refuses bad
requests records them as it would a refused tell).

Thread contract: only the actor's own handlers call `Actor.take_queued` (or
`Actor.take_queued_tells`) and
iterate what it returns, during a turn (``on_receive``, a proxied method,
a hook; in asyncio mode also after an ``await`` in one, on the loop's
thread). The mailbox's single consumer is the turn; a take from any other
thread would race it. In a reentrant asyncio actor a take after an ``await``
runs beside the turn (on the same thread, so it is safe), but what it takes
then comes after messages other handlers have already started on.
"""

from __future__ import annotations

import queue
import sys
from collections import deque
from typing import TYPE_CHECKING, Any, Self

import attrs

from actors._core._pykka import Envelope
from actors._core.deadletters import DeadLetterReason
from actors._core.future import Asked
from actors._core.mailbox import NOTHING, take_head
from actors._core.messages import KINDS as _KINDS
from actors._core.tracing import Traced

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from types import TracebackType

    import pykka

    from actors._core.cell import Cell

__all__ = ["NO_MESSAGES", "QueuedMessage", "TakenMessages", "take_tells"]


@attrs.frozen
class QueuedMessage:
    """A message taken from the mailbox, with the reply future its handler now owns.

    `reply_to` is None for a plain tell; for an ask (or a tell sent with a
    receipt) it is the future to settle, through `reply` or `fail`.
    """

    message: Any
    reply_to: pykka.Future[Any] | None = None

    def reply(self, value: Any = None) -> None:
        """Answer the ask with `value` (nothing for a tell; an asker that gave up is ignored)."""
        if self.reply_to is not None:
            try:  # noqa: SIM105 - as the cell's _reply
                self.reply_to.set(value)
            except queue.Full:
                pass  # already settled: its asker gave up

    def fail(self, exc: BaseException | None = None) -> None:
        """Answer the ask with `exc` (default: the exception being handled); nothing for a tell."""
        if self.reply_to is None:
            return
        exc_info = sys.exc_info() if exc is None else (type(exc), exc, exc.__traceback__)
        try:  # noqa: SIM105 - as the cell's _reply_exception
            self.reply_to.set_exception(exc_info)
        except queue.Full:
            pass


class TakenMessages:
    """The messages `Actor.take_queued` takes, one per step of iteration (iterate it once); a context manager.

    See `actors._core.batching` for the semantics and the thread contract.
    """

    __slots__ = ("_candidate", "_cell", "_left", "_predicate", "_taken")

    def __init__(self, cell: Cell, predicate: Callable[[QueuedMessage], bool], limit: int) -> None:
        if limit < 0:
            msg = f"take_queued(limit={limit!r}) on {cell.ref}: the limit must be >= 0 messages"
            raise ValueError(msg)
        self._cell = cell
        self._left = limit
        self._predicate = predicate
        # The item `_accept` was last asked about, as the handler will see it.
        self._candidate: QueuedMessage | None = None
        # Invariant: every item yielded so far that has a reply future.
        self._taken: list[QueuedMessage] = []

    def _accept(self, item: Any) -> bool:
        cls = item.__class__
        if cls is Envelope or (cls is Asked and item.target is self._cell):
            message, reply_to = (item.message, item.reply_to) if cls is Envelope else (item.message, item)
            if getattr(reply_to, "_done", False):
                # Settled before it was handled: its asker gave up (`Cell.abandon`).
                # Take it whatever the predicate says: the turn would skip it too.
                self._candidate = None
                return True
        else:
            message, reply_to = item, None
        if message.__class__ is Traced:  # sent with tracing on: batched as the message it carries
            message = message.message
        if message.__class__ in _KINDS:
            return False
        self._candidate = candidate = QueuedMessage(message, reply_to)
        return bool(self._predicate(candidate))

    def __iter__(self) -> Iterator[QueuedMessage]:
        # A generator, not __next__: ending it costs no StopIteration (a store
        # write pays for one empty take per commit).
        cell = self._cell
        accept = self._accept
        taken = self._taken
        while self._left > 0 and not cell.sysq:
            item = take_head(cell.queue, accept)
            if item is NOTHING:
                break
            if item.__class__ is Asked:
                item.target = None  # taken: from now on only a future (see `Asked`)
            candidate = self._candidate
            if candidate is None:  # an abandoned ask
                cell.system.dead_letters.record(item.message, cell.ref, DeadLetterReason.ASK_ABANDONED)
                continue
            self._left -= 1
            if candidate.reply_to is not None:
                taken.append(candidate)
            yield candidate
        self._left = 0  # once it has stopped, it stays stopped

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._left = 0
        if exc is None:
            return
        for taken in self._taken:
            reply_to = taken.reply_to
            if reply_to is not None and not getattr(reply_to, "_done", False):
                taken.fail(exc)


class _NoMessages(TakenMessages):
    """What a take from an empty mailbox gives: nothing, at a fraction of the cost (~0.1 µs, not ~0.8)."""

    __slots__ = ()

    def __init__(self) -> None:
        self._left = 0
        self._taken = []

    def __iter__(self) -> Iterator[QueuedMessage]:
        return iter(())

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return


NO_MESSAGES: TakenMessages = _NoMessages()
"""The take of an empty mailbox (stateless, shared)."""


def take_tells(cell: Cell, cls: type, limit: int) -> Iterator[Any]:
    """`Actor.take_queued_tells`: yield the plain tells of class `cls` at the head of `cell`'s mailbox.

    At most `limit`, lazily (one taken per step), stopping at the first other
    item or a waiting system message. Only the cell's own turn calls it.
    """
    if cls in _RUNTIME_ITEMS:
        msg = f"take_queued_tells({cls!r}) on {cell.ref}: the runtime handles these itself; take them with take_queued"
        raise TypeError(msg)
    if limit <= 0 or not len(cell.queue):
        if limit < 0:
            msg = f"take_queued_tells(limit={limit!r}) on {cell.ref}: the limit must be >= 0 messages"
            raise ValueError(msg)
        return _NO_TELLS  # nothing queued now: what arrives later is for the next turns
    return _tells(cell, cls, limit)


_RUNTIME_ITEMS = frozenset({*_KINDS, Envelope, Asked, Traced})
"""Classes `take_tells` refuses: messages the runtime interprets, and the wrappers of asks and receipts."""

_NO_TELLS: Iterator[Any] = iter(())
"""What a take from an empty mailbox gives (exhausted, so shared)."""


def _tells(cell: Cell, cls: type, limit: int) -> Iterator[Any]:
    # A generator, so that the take is lazy: a handler that stops iterating (or raises)
    # leaves the rest queued for their own turns.
    def accept(head: Any) -> bool:
        return head.__class__ is cls

    while limit > 0 and not cell.sysq:
        box: Any = cell.queue  # read each time: a `LazyFifo` puts its deque in its place once
        if box.__class__ is deque:
            # The FIFO mailbox. Only this turn takes from it (senders append on the right),
            # so the head read is the head popped.
            if not box or box[0].__class__ is not cls:
                return
            limit -= 1
            yield box.popleft()
            continue
        item = take_head(box, accept)
        if item is NOTHING:
            return
        limit -= 1
        yield item
