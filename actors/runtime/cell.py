"""The cell: the stable home of one actor, whatever its execution mode.

A cell owns what must outlive any one instance of an actor: its mailbox, its
address (the `ActorRef`), its place in the tree (parent and children), its
timers and its scheduling state. pykka's `ActorRef.actor_inbox` *is* the cell.

How a message is handled (the hot path)::

    ref.tell(m) -> queue.append(m) -> sched.acquire(False) ? executor.submit(cell)
    executor thread -> cell.run(): up to `throughput` items, then release

Mailbox items are either a bare message (a tell: no envelope is allocated,
~15% of a tell's cost) or a pykka `Envelope` (an ask, with its reply future).

`sched` is a plain lock used as an atomic test-and-set: whoever acquires it
owns the right to run the actor, and it stays held from submission until the
end of the turn. So one actor handles one message at a time, in order, in
every mode; and because `run` re-checks the queue *after* releasing, a
message that arrives while a turn is ending is never stranded.

Executors are what differ between modes: a shared `DispatcherPool` (pooled),
one dedicated thread (thread), an event loop (asyncio). All of them just call
`cell.run()` with `sched` held.

Stopping is asynchronous, Akka-style, so that no executor thread ever blocks
waiting for another actor: a stopping cell stops its children youngest first,
one at a time, and resumes when each has terminated; only then does it run
``on_stop`` and terminate. A child on the same dispatcher pool is stopped
inline, on the parent's dispatcher thread, which keeps a shutdown of 100,000
pooled actors to one pass.
"""

from __future__ import annotations

import sys
import threading
from _thread import allocate_lock
from typing import TYPE_CHECKING, Any

import pykka
from loguru import logger
from pykka import ActorDeadError, ActorRegistry
from pykka._envelope import Envelope
from pykka.messages import ProxyCall, ProxyGetAttr, ProxySetAttr, _ActorStop

from actors.runtime.deadletters import DeadLetterReason
from actors.runtime.errors import MailboxFullError
from actors.runtime.timers import Timers, _TimerFired

if TYPE_CHECKING:
    from collections.abc import Callable

    from actors.runtime.mailbox import MessageQueue
    from actors.runtime.ref import ActorRef
    from actors.runtime.system import ActorSystem

__all__ = ["RUNNING", "STARTING", "STOPPING", "TERMINATED", "Cell", "current_executor", "unwrap"]

# Cell states; they only move forward.
STARTING, RUNNING, STOPPING, TERMINATED = range(4)

# How `_process` treats a message, by its exact class. Anything else goes to
# on_receive: one dict lookup per message on the hot path.
_PROXY, _STOP_MESSAGE, _TIMER = 1, 2, 3
_KINDS: dict[type, int] = {
    ProxyCall: _PROXY,
    ProxyGetAttr: _PROXY,
    ProxySetAttr: _PROXY,
    _ActorStop: _STOP_MESSAGE,
    _TimerFired: _TIMER,
}
_pykka_handle_receive = pykka.Actor._handle_receive  # noqa: SLF001 - reuse pykka's proxy dispatch

_local = threading.local()


def current_executor() -> object | None:
    """Return the executor whose thread is running this code, if any."""
    return getattr(_local, "executor", None)


def inline_depth() -> int:
    """Return how many inline asks are running nested on this thread."""
    return getattr(_local, "inline_depth", 0)


def bind_executor(executor: object) -> None:
    """Mark the calling thread as one of `executor`'s threads (called once per thread)."""
    _local.executor = executor


class _InlineDrain:
    """The executor of a terminated cell: late mail is dead-lettered on the sender's thread."""

    __slots__ = ()

    def submit(self, cell: Cell) -> None:
        cell.run()


_DRAIN = _InlineDrain()


class Cell:
    """One actor's mailbox, address, tree position and scheduling state.

    Thread contract: `put`, `post_system`, `post_timer` and `on_terminated`
    may be called from any thread. Everything else runs only while holding
    `sched`, i.e. on the executor's thread during a turn.
    """

    __slots__ = (
        "__weakref__",
        "_pending_stop",
        "_stopped_event",
        "_timers",
        "_watchers",
        "actor",
        "actor_class",
        "alive",
        "children",
        "executor",
        "failed",
        "name",
        "parent",
        "pykka_registered",
        "queue",
        "ref",
        "sched",
        "state",
        "stop_replies",
        "sysq",
        "system",
        "throughput",
        "urn",
    )

    def __init__(
        self,
        system: ActorSystem,
        actor_class: type[pykka.Actor],
        executor: Any,
        *,
        name: str | None,
        parent: Cell | None,
        urn: str,
        throughput: int,
        ref_class: Callable[[Cell], ActorRef[Any]],
    ) -> None:
        self.system = system
        self.actor_class = actor_class
        self.executor = executor
        self.name = name
        self.parent = parent
        self.urn = urn
        self.throughput = throughput
        self.ref = ref_class(self)
        self.actor: Any = None
        # Invariant: held from the moment the cell is submitted to an executor
        # until the end of that turn. A new cell starts held: it is being built.
        self.sched = allocate_lock()
        self.sched.acquire()
        # Invariant: `state` only moves forward; `alive` turns False exactly once,
        # when stopping begins, and from then on tell/ask raise ActorDeadError.
        self.state = STARTING
        self.alive = True
        self.failed = False
        self.queue: MessageQueue = None  # type: ignore[assignment]  # set by the system right after
        # System messages: callables run with this cell before any user message.
        self.sysq: list[Callable[[Cell], None]] = []
        # Guarded by system.tree_lock; insertion-ordered, so reversed() is youngest first.
        self.children: dict[Cell, None] | None = None
        self.stop_replies: list[pykka.Future[Any]] | None = None
        self._watchers: list[Callable[[Cell], None]] | None = None
        self._timers: Timers | None = None
        # Children still to stop, youngest last; set when stopping begins.
        self._pending_stop: list[Cell] | None = None
        self._stopped_event: threading.Event | None = None
        self.pykka_registered = False

    def __repr__(self) -> str:
        return f"<Cell {self.ref} state={self.state}>"

    # -- the pykka inbox interface ---------------------------------------------

    def put(self, envelope: Envelope[Any], /) -> None:
        """Queue an envelope and make sure the actor gets a turn (pykka inbox interface)."""
        self.queue.append(envelope)
        if self.sched.acquire(False):
            self.executor.submit(self)

    def get(self) -> Envelope[Any]:
        """Take the next item as an envelope (pykka inbox interface; IndexError when empty)."""
        item = self.queue.popleft()
        return item if item.__class__ is Envelope else Envelope(item)

    def empty(self) -> bool:
        """Return whether no message is waiting."""
        return not len(self.queue)

    # -- posting from any thread ---------------------------------------------

    def post_system(self, message: Callable[[Cell], None], *, inline: bool = False) -> None:
        """Queue a system message (runs before user messages) and schedule the cell.

        With `inline`, a cell served by the calling thread's own executor is run
        right here instead of being submitted (used to stop children quickly).
        """
        self.sysq.append(message)
        if self.sched.acquire(False):
            if inline and self.executor is current_executor():
                self.run()
            else:
                self.executor.submit(self)

    def post_timer(self, fired: _TimerFired) -> None:
        """Queue a timer's message; never blocks (timers run on the scheduler's thread)."""
        if not self.alive:
            return
        queue = self.queue
        try:
            if hasattr(queue, "_spec"):  # a bounded mailbox: never block the timer thread
                queue.append(fired, may_block=False)  # type: ignore[call-arg]
            else:
                queue.append(fired)
        except MailboxFullError as exc:
            self.reject(fired, DeadLetterReason.MAILBOX_OVERFLOW, exc)
            return
        if self.sched.acquire(False):
            self.executor.submit(self)

    def on_terminated(self, callback: Callable[[Cell], None]) -> None:
        """Call `callback(cell)` once the actor has terminated; at once if it has."""
        with self.system.tree_lock:
            if self.state != TERMINATED:
                if self._watchers is None:
                    self._watchers = []
                self._watchers.append(callback)
                return
        callback(self)

    def stopped_event(self) -> threading.Event:
        """Return an event that is set once the actor stops being alive."""
        with self.system.tree_lock:
            if self._stopped_event is None:
                self._stopped_event = threading.Event()
                if not self.alive:
                    self._stopped_event.set()
            return self._stopped_event

    @property
    def timers(self) -> Timers:
        """Return the actor's timers, created on first use."""
        if self._timers is None:
            self._timers = Timers(self)
        return self._timers

    # -- a turn ----------------------------------------------------------------

    def run(self, until: pykka.Future[Any] | None = None) -> None:
        """Run one turn. The caller holds `sched`; this releases it.

        With `until`, the turn runs on the calling thread for a blocking ask
        (see `ActorRef.ask`) and ends once `until` has its answer.
        """
        if until is not None:
            _local.inline_depth = getattr(_local, "inline_depth", 0) + 1
        try:
            if self.state == STARTING:
                self._start()
            if self.sysq:
                self._process_system()
            state = self.state
            if state == RUNNING:
                self._process(self.throughput, until)
            elif state == TERMINATED:
                self._drain()
        except BaseException:  # noqa: BLE001 - an executor thread must survive anything
            logger.opt(exception=True).critical("troupe runtime error while running {}; please report it", self.ref)
        finally:
            if until is not None:
                _local.inline_depth -= 1
            self.sched.release()
        # Re-check after releasing: a message that arrived during the turn found
        # `sched` held and did not schedule; whoever acquires now does.
        if (self.sysq or (len(self.queue) and self.state != STOPPING)) and self.sched.acquire(False):
            self.executor.submit(self)

    def _start(self) -> None:
        self.state = RUNNING
        try:
            self.actor.on_start()
        except Exception:  # noqa: BLE001
            self._fail(sys.exc_info(), during_start=True)
        except BaseException:  # noqa: BLE001
            self._fatal(sys.exc_info())

    def _process_system(self) -> None:
        sysq = self.sysq
        while sysq:
            sysq.pop(0)(self)

    def _process(self, limit: int, until: pykka.Future[Any] | None = None) -> None:
        pop = self.queue.popleft
        actor = self.actor
        kinds = _KINDS
        sysq = self.sysq
        while limit > 0 and not sysq:
            limit -= 1
            try:
                item = pop()
            except IndexError:
                return
            if item.__class__ is Envelope:
                message = item.message
                reply_to = item.reply_to
            else:
                message = item
                reply_to = None
            try:
                kind = kinds.get(message.__class__)
                if kind is None:
                    result = actor.on_receive(message)
                elif kind == _PROXY:
                    result = _pykka_handle_receive(actor, message)
                elif kind == _STOP_MESSAGE:
                    self._begin_stop(reply_to)
                    return
                else:
                    if self._timers is None or not self._timers._accept(message):  # noqa: SLF001
                        continue
                    actor.on_receive(message.message)
                    continue
            except Exception:  # noqa: BLE001
                if reply_to is not None:
                    logger.opt(exception=True).info("Exception returned from {} to caller:", self.ref)
                    reply_to.set_exception()
                    if reply_to is until:
                        return
                else:
                    self._fail(sys.exc_info(), message)
                    return
            except BaseException:  # noqa: BLE001
                self._fatal(sys.exc_info())
                return
            else:
                if reply_to is not None:
                    reply_to.set(result)
                    if reply_to is until:
                        return

    # -- failure ---------------------------------------------------------------

    def _fail(self, exc_info: Any, message: Any = None, *, during_start: bool = False) -> None:
        """An exception escaped a tell handler or on_start: log it and stop (pykka semantics)."""
        logger.opt(exception=exc_info).error("Unhandled exception in {}:", self.ref)
        if message is not None:
            self.system.dead_letters.record(message, self.ref, DeadLetterReason.HANDLER_FAILED, exc_info[1])
        self.failed = True
        self._mark_dead()
        if not during_start:
            try:
                self.actor.on_failure(*exc_info)
            except Exception:  # noqa: BLE001
                logger.opt(exception=True).error("Unhandled exception in on_failure of {}:", self.ref)
        self.state = STOPPING
        self._continue_stop()

    def _fatal(self, exc_info: Any) -> None:
        """A BaseException escaped a handler: stop this actor and every actor (as pykka)."""
        logger.opt(exception=exc_info).error(
            "{!r} in {}: stopping every actor of system {!r}", exc_info[1], self.ref, self.system.name
        )
        self._begin_stop()
        self.system._stop_all_actors()  # noqa: SLF001

    # -- stopping --------------------------------------------------------------

    def _begin_stop(self, reply_to: pykka.Future[Any] | None = None) -> None:
        if reply_to is not None:
            if self.stop_replies is None:
                self.stop_replies = []
            self.stop_replies.append(reply_to)
        if self.state >= STOPPING:
            return
        self._mark_dead()
        self.state = STOPPING
        self._continue_stop()

    def _continue_stop(self) -> None:
        # Children go first, youngest first, one at a time. A child that cannot
        # be stopped right here calls us back (a system message) when it has
        # terminated; then we go on with the next one. The children are
        # snapshotted once: a stopping cell accepts no new children, and
        # walking a dict from its end after many deletions is O(n) per step.
        pending = self._pending_stop
        if pending is None:
            with self.system.tree_lock:
                pending = self._pending_stop = list(self.children or ())
        while pending:
            child = pending[-1]
            if child.state != TERMINATED:
                child.post_system(_stop, inline=True)
                if child.state != TERMINATED:
                    child.on_terminated(self._child_terminated)
                    return
            pending.pop()
        self._finish_stop()

    def _child_terminated(self, _child: Cell) -> None:
        self.post_system(_continue_stop)

    def _finish_stop(self) -> None:
        if self._timers is not None:
            self._timers.cancel_all()
        if not self.failed:
            try:
                self.actor.on_stop()
            except Exception:  # noqa: BLE001
                logger.opt(exception=True).error("Unhandled exception in {}:", self.ref)
        self._terminate()

    def _mark_dead(self) -> None:
        if not self.alive:
            return
        self.alive = False
        if self._stopped_event is not None:
            self._stopped_event.set()
        if self.pykka_registered:
            ActorRegistry.unregister(self.ref)

    def _terminate(self) -> None:
        self.executor = _DRAIN
        self._drain()
        for reply_to in self.stop_replies or ():
            reply_to.set(True)
        self.stop_replies = None
        system = self.system
        with system.tree_lock:
            self.state = TERMINATED
            if self.parent is not None and self.parent.children is not None:
                self.parent.children.pop(self, None)
            if self.name is not None and system.registry.get(self.name) is self:
                del system.registry[self.name]
            watchers, self._watchers = self._watchers, None
        for callback in watchers or ():
            try:
                callback(self)
            except Exception:  # noqa: BLE001
                logger.opt(exception=True).error("Termination callback {!r} of {} failed", callback, self.ref)

    def _drain(self) -> None:
        pop = self.queue.popleft
        while True:
            try:
                item = pop()
            except IndexError:
                return
            message, reply_to = unwrap(item)
            if message.__class__ is _ActorStop:
                if reply_to is not None:
                    reply_to.set(True)  # "was being stopped at the time of the call"
            elif message.__class__ is not _TimerFired:
                self.reject(item, DeadLetterReason.QUEUED_AT_STOP)

    def reject(self, item: Any, reason: DeadLetterReason, exc: BaseException | None = None) -> None:
        """Record a mailbox item as a dead letter; an ask gets `exc` (default ActorDeadError)."""
        message, reply_to = unwrap(item)
        self.system.dead_letters.record(message, self.ref, reason, exc)
        if reply_to is not None:
            if exc is None:
                exc = ActorDeadError(f"{self.ref} stopped before handling the message")
            reply_to.set_exception((type(exc), exc, None))


def unwrap(item: Any) -> tuple[Any, pykka.Future[Any] | None]:
    """Return (message, reply future or None) of a mailbox item."""
    if item.__class__ is Envelope:
        return item.message, item.reply_to
    return item, None


def _stop(cell: Cell) -> None:
    cell._begin_stop()  # noqa: SLF001


def _continue_stop(cell: Cell) -> None:
    if cell.state == STOPPING:
        cell._continue_stop()  # noqa: SLF001


STOP = _stop
"""The system message that stops a cell now, ahead of queued user messages."""
