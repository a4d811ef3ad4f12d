"""The cell: the stable home of one actor, whatever its execution mode.

A cell owns what must outlive any one instance of an actor: its mailbox, its
address (the `ActorRef`), its place in the tree (parent and children), its
timers and its scheduling state. pykka's `ActorRef.actor_inbox` *is* the cell.

How a message is handled (the hot path)::

    ref.tell(m) -> queue.append(m) -> sched.acquire(False) ? executor.submit(cell)
    executor thread -> cell.run(): up to `throughput` items, then release

Mailbox items are either a bare message (a tell: no envelope is allocated,
~15% of a tell's cost) or a pykka `Envelope` (an ask, with its reply future,
or a tell with a `Receipt`: a failure of its handler still fails the actor).

`sched` is a plain lock used as an atomic test-and-set: whoever acquires it
owns the right to run the actor, and it stays held from submission until the
end of the turn. So one actor handles one message at a time, in order, in
every mode; and because `run` re-checks the queue *after* releasing, a
message that arrives while a turn is ending is never stranded.

Executors are what differ between modes: a shared `DispatcherPool` (pooled),
one dedicated thread (thread), an event loop (asyncio). All of them just call
`cell.run()` with `sched` held.

Asyncio cells (``cell.aio`` is set) add one thing, on the loop's thread only:
a handler (``on_receive``, a proxied method, a lifecycle hook) may return a
coroutine. The cell runs it as a task and the turn is *suspended*, not ended:
`awaiting` holds the task and `sched` stays held, so no other message is
handled meanwhile. When the coroutine ends, its task (`handler_done`, in the
task's last step) delivers the outcome exactly as the synchronous path does
(the reply future; `_fail` for a tell; a hook's continuation) and carries on
with the turn (`run()`); a coroutine the rest of the turn meets is driven by
that same task, so a busy actor costs one task, not one per message. A
reentrant actor does not suspend for message handlers: each runs in a task
of its own, the turn goes on at once, and each outcome is delivered when its
task ends (through a system message, so that it runs inside a turn).
System messages are not held up by a suspended turn: the executor runs them
between steps of the handler. Whatever stops the children (stopping, a
restart's teardown) first cancels the handlers in flight and waits for them
to end. Only asyncio cells look at handler results (`_process_async`), so
the pooled and thread hot paths pay one test per turn
for all this.

Stopping is asynchronous, Akka-style, so that no executor thread ever blocks
waiting for another actor: a stopping cell stops its children youngest first,
one at a time, and resumes when each has terminated; only then does it run
``on_stop`` and terminate. A child on the same dispatcher pool is stopped
inline, on the parent's dispatcher thread, which keeps a shutdown of 100,000
pooled actors to one pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sys
import threading
from _thread import allocate_lock
from collections.abc import Coroutine
from types import CoroutineType
from typing import TYPE_CHECKING, Any

import pykka
from loguru import logger
from pykka import ActorDeadError, ActorRegistry
from pykka._envelope import Envelope
from pykka.messages import ProxyCall, ProxyGetAttr, ProxySetAttr, _ActorStop

from actors._core.deadletters import DeadLetterReason
from actors._core.future import Receipt
from actors._core.supervision import (
    DEFAULT_POLICY,
    Directive,
    RestartLog,
    RestartType,
    SupervisionPolicy,
    SupervisionStrategy,
    Terminated,
)
from actors._core.timers import Timers, _TimerFired
from actors.errors import EventLoopError, MailboxFullError, ModeError, RestartIntensityError

if TYPE_CHECKING:
    from collections.abc import Callable

    from pykka._types import OptExcInfo

    from actors._core.mailbox import MessageQueue
    from actors._core.ref import ActorRef
    from actors._core.system import ActorSystem

__all__ = [
    "RUNNING",
    "STARTING",
    "STOPPING",
    "TERMINATED",
    "AsyncioState",
    "Cell",
    "HandlerExit",
    "bind_constructing",
    "current_executor",
    "unwrap",
]

# Cell states; they only move forward.
STARTING, RUNNING, STOPPING, TERMINATED = range(4)

# How `_process` treats a message, by its exact class. Anything else goes to
# on_receive: one dict lookup per message on the hot path.
_PROXY, _STOP_MESSAGE, _TIMER, _TERMINATED = 1, 2, 3, 4


class _SelfStop(_ActorStop):
    """`Actor.stop()`: the actor ends itself, a normal exit (a permanent child is restarted)."""


_KINDS: dict[type, int] = {
    ProxyCall: _PROXY,
    ProxyGetAttr: _PROXY,
    ProxySetAttr: _PROXY,
    _ActorStop: _STOP_MESSAGE,
    _SelfStop: _STOP_MESSAGE,
    _TimerFired: _TIMER,
    Terminated: _TERMINATED,
}
_pykka_handle_receive = pykka.Actor._handle_receive  # noqa: SLF001 - reuse pykka's proxy dispatch

_local = threading.local()
_constructing = threading.local()


def bind_constructing(cell: Cell | None) -> Cell | None:
    """Make `cell` the one `Actor.__init__` binds to on this thread; return the previous one."""
    previous = getattr(_constructing, "cell", None)
    _constructing.cell = cell
    return previous


def constructing_cell() -> Cell | None:
    """Return the cell an actor constructed on this thread right now belongs to, if any."""
    return getattr(_constructing, "cell", None)


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

    def wake(self, cell: Cell) -> None:
        """Nothing to wake: a terminated cell awaits nothing."""


_DRAIN = _InlineDrain()


class HandlerExit(Exception):  # a carrier, never raised to users
    """Carries a SystemExit or KeyboardInterrupt out of a handler task.

    asyncio re-raises those two out of the event loop itself; the executor
    wraps them so the cell can apply pykka's rule (stop every actor) instead.
    """

    def __init__(self, exception: BaseException) -> None:
        super().__init__(repr(exception))
        self.exception = exception


class _Hook:
    """A lifecycle hook a task runs, and what comes after it."""

    __slots__ = ("cancellable", "done", "name")

    def __init__(self, name: str, done: Callable[[BaseException | None], None], *, cancellable: bool) -> None:
        self.name = name
        # Called once the hook has ended: with what it raised, or None.
        self.done = done
        # Start hooks are cancelled by a stop; teardown hooks (on_stop, pre_restart) are not.
        self.cancellable = cancellable


class _InFlight:
    """What a running handler task is handling."""

    __slots__ = ("abandoned", "hook", "message", "reply_to")

    def __init__(self, message: Any, reply_to: pykka.Future[Any] | None, hook: _Hook | None) -> None:
        self.message = message
        self.reply_to = reply_to
        self.hook = hook
        # Set when the asker gave up: what its future was told.
        self.abandoned: BaseException | None = None


class AsyncioState:
    """What an asyncio actor's cell keeps beside the common state.

    Thread contract: read and written only on the loop's thread (`loop`),
    except `loop` and `reentrant`, which never change.
    """

    __slots__ = ("after_cancel", "driver", "handling", "loop", "reentrant")

    def __init__(self, loop: asyncio.AbstractEventLoop, *, reentrant: bool) -> None:
        self.loop = loop
        self.reentrant = reentrant
        # Invariant: exactly the handler tasks of this actor that have not been
        # delivered yet (a task leaves it in `_finish_handler`).
        self.handling: dict[asyncio.Task[Any], _InFlight] = {}
        # Set while the cancelled handlers are ending: what to do once every
        # task of this actor has ended.
        self.after_cancel: Callable[[], None] | None = None
        # The executor's driver of the task whose coroutine just ended, while
        # it delivers (`handler_done`): the next coroutine of the turn is given
        # to it instead of a new task.
        self.driver: Any = None


def _is_coroutine(value: Any) -> bool:
    return value.__class__ is CoroutineType or isinstance(value, Coroutine)


def _exc_info(exc: BaseException) -> OptExcInfo:
    return (type(exc), exc, exc.__traceback__)


def _reply(reply_to: pykka.Future[Any], value: Any) -> None:
    try:  # noqa: SIM105 - contextlib.suppress would cost a context manager per reply
        reply_to.set(value)
    except queue.Full:
        pass  # the asker gave up and its future was settled then


def _reply_exception(reply_to: pykka.Future[Any], exc_info: OptExcInfo) -> None:
    try:  # noqa: SIM105 - as in _reply
        reply_to.set_exception(exc_info)
    except queue.Full:
        pass  # already settled (abandoned by its asker)


class Cell:
    """One actor's mailbox, address, tree position and scheduling state.

    Thread contract: `put`, `post_system`, `post_internal`, `on_terminated`,
    `remove_on_terminated` and `abandon` may be called from any thread.
    Everything else runs only while holding `sched`, i.e. on the executor's
    thread during a turn; for an asyncio cell that is always the loop's
    thread, where `handler_done` also runs (in a handler task's last step).
    """

    __slots__ = (
        "__weakref__",
        "_after_children",
        "_pending_stop",
        "_restarts",
        "_stopped_event",
        "_timers",
        "_watchers",
        "_watching",
        "actor",
        "actor_class",
        "aio",
        "alive",
        "awaiting",
        "children",
        "executor",
        "failed",
        "incarnation",
        "name",
        "parent",
        "pykka_registered",
        "queue",
        "reason",
        "ref",
        "restart",
        "sched",
        "spec",
        "state",
        "stop_replies",
        "suspended",
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
        # Invariant: True while the current instance must not get on_stop: it
        # failed, or it was torn down for a restart.
        self.failed = False
        # Invariant: while True no user message is handled (a failed child
        # waiting for its supervisor's directive, or one being restarted);
        # system messages still run and mail keeps queueing.
        self.suspended = False
        # None for a temporary child (never restarted); else its restart type,
        # and `spec` holds the constructor arguments a restart uses again.
        self.restart: RestartType | None = None
        self.spec: tuple[tuple[Any, ...], dict[str, Any]] | None = None
        # Counts instances: a failure report from an older instance is stale.
        self.incarnation = 0
        # Why the actor terminated: None (a normal stop) or the exception it failed with.
        self.reason: BaseException | None = None
        self.queue: MessageQueue = None  # type: ignore[assignment]  # set by the system right after
        # System messages: callables run with this cell before any user message.
        self.sysq: list[Callable[[Cell], None]] = []
        # Guarded by system.tree_lock; insertion-ordered, so reversed() is youngest first.
        self.children: dict[Cell, None] | None = None
        self.stop_replies: list[pykka.Future[Any]] | None = None
        # Guarded by system.tree_lock: key -> callback run once this cell terminates.
        self._watchers: dict[object, Callable[[Cell], None]] | None = None
        # The cells this actor watches (death watch); only its own turn touches it.
        self._watching: dict[Cell, None] | None = None
        # What to do once the children are stopped (stopping, or a restart's teardown).
        self._after_children: Callable[[], None] | None = None
        # As a supervisor: recent restarts, and the group restart under way.
        self._restarts: _Supervising | None = None
        self._timers: Timers | None = None
        # Children still to stop, youngest last; set when stopping begins.
        self._pending_stop: list[Cell] | None = None
        self._stopped_event: threading.Event | None = None
        self.pykka_registered = False
        # Asyncio mode only (set by the system right after): the handler tasks.
        self.aio: AsyncioState | None = None
        # Invariant: the task the current turn is suspended on, or None. While
        # set, `sched` is held by that turn and no message is handled.
        self.awaiting: asyncio.Task[Any] | None = None

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
        elif self.awaiting is not None:
            # The turn is suspended on a handler task: system messages do not
            # wait for it (a stop cancels it).
            self.executor.wake(self)

    def post_internal(self, message: Any) -> None:
        """Queue a message the runtime sends (a timer's, a `Terminated`); never blocks.

        Timers fire on the scheduler's thread and `Terminated` on whichever
        thread ended the watched actor: neither may wait for room in a bounded
        mailbox, so a full one turns the message into a dead letter.
        """
        if not self.alive:
            return
        queue = self.queue
        try:
            if hasattr(queue, "_spec"):  # a bounded mailbox
                queue.append(message, may_block=False)  # type: ignore[call-arg]
            else:
                queue.append(message)
        except MailboxFullError as exc:
            self.reject(message, DeadLetterReason.MAILBOX_OVERFLOW, exc)
            return
        if self.sched.acquire(False):
            self.executor.submit(self)

    def on_terminated(self, callback: Callable[[Cell], None], *, key: object = None) -> None:
        """Call `callback(cell)` once the actor has terminated; at once if it has.

        `key` (default: the callback) names the registration for `remove_on_terminated`.
        """
        with self.system.tree_lock:
            if self.state != TERMINATED:
                if self._watchers is None:
                    self._watchers = {}
                self._watchers[callback if key is None else key] = callback
                return
        callback(self)

    def remove_on_terminated(self, key: object) -> None:
        """Forget the `on_terminated` callback registered under `key`, if any."""
        with self.system.tree_lock:
            if self._watchers is not None:
                self._watchers.pop(key, None)

    # -- death watch (called in the watcher's turn) ------------------------------

    def watch(self, target: Cell) -> None:
        """Deliver `Terminated(target.ref, reason)` to this actor when `target` terminates."""
        if self._watching is None:
            self._watching = {}
        if target in self._watching:
            return
        self._watching[target] = None
        target.on_terminated(self._watched_terminated, key=self)

    def unwatch(self, target: Cell) -> None:
        """Stop watching `target`; a `Terminated` already queued for it is dropped."""
        if self._watching and target in self._watching:
            del self._watching[target]
            target.remove_on_terminated(self)

    def _watched_terminated(self, target: Cell) -> None:
        self.post_internal(Terminated(target.ref, target.reason))

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

    def construct(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Instantiate `actor_class` bound to this cell (at spawn, and again at each restart).

        Raises:
            TypeError: the class's ``__init__`` did not call ``super().__init__()``.
            Exception: whatever the constructor raised.
        """
        previous = bind_constructing(self)  # a context manager here costs ~1 µs per spawn
        try:
            actor = self.actor_class(*args, **kwargs)
        finally:
            bind_constructing(previous)
        if actor.__dict__.get("_troupe_cell") is not self:
            msg = (
                f"{self.actor_class.__qualname__}.__init__ did not call super().__init__(); "
                "call it so the actor is bound to its mailbox"
            )
            raise TypeError(msg)
        return actor

    # -- a turn ----------------------------------------------------------------

    def run(self, until: pykka.Future[Any] | None = None) -> None:
        """Run one turn. The caller holds `sched`; this releases it.

        With `until`, the turn runs on the calling thread for a blocking ask
        (see `ActorRef.ask`) and ends once `until` has its answer.
        """
        if until is not None:
            _local.inline_depth = getattr(_local, "inline_depth", 0) + 1
        try:
            if self.state != STARTING or self._start():
                if self.sysq:
                    self._process_system()
                state = self.state
                if state == RUNNING:
                    if not self.suspended:
                        if self.aio is None:
                            self._process(self.throughput, until)
                        elif self.awaiting is None:  # a system message may have started a hook task
                            self._process_async(self.throughput)
                elif state == TERMINATED:
                    self._drain()
        except BaseException:  # noqa: BLE001 - an executor thread must survive anything
            logger.opt(exception=True).critical("troupe runtime error while running {}; please report it", self.ref)
        finally:
            if until is not None:
                _local.inline_depth -= 1
            if self.awaiting is None:
                self.sched.release()
            # else: suspended on a handler task; its done-callback goes on with the turn.
        # Re-check after releasing: a message that arrived during the turn found
        # `sched` held and did not schedule; whoever acquires now does.
        if (self.sysq or (len(self.queue) and self.state != STOPPING and not self.suspended)) and self.sched.acquire(
            False
        ):
            self.executor.submit(self)

    def _start(self) -> bool:
        """Run on_start; return False if it is a coroutine the turn now waits for."""
        self.state = RUNNING
        self._hook("on_start", self.actor.on_start, self._started, cancellable=True)
        return self.awaiting is None

    def _started(self, exc: BaseException | None) -> None:
        if exc is not None and not isinstance(exc, asyncio.CancelledError):
            self._fail(_exc_info(exc), during_start=True)

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
                    if result.__class__ is CoroutineType:
                        _refuse_coroutine(self, result, message)
                elif kind == _STOP_MESSAGE:
                    self._begin_stop(reply_to, self_stop=message.__class__ is _SelfStop)
                    return
                elif kind == _TIMER:
                    if self._timers is None or not self._timers._accept(message):  # noqa: SLF001
                        continue
                    actor.on_receive(message.message)
                    continue
                else:  # Terminated: only while still watching (unwatch drops it)
                    if not self._still_watching(message):
                        continue
                    result = actor.on_receive(message)
            except Exception:  # noqa: BLE001
                if reply_to is not None and not isinstance(reply_to, Receipt):
                    if self._ask_failed(sys.exc_info(), message, reply_to) or reply_to is until:
                        return
                else:  # a tell (with a receipt or not): it fails the actor
                    self._tell_failed(sys.exc_info(), message, reply_to)
                    return
            except BaseException:  # noqa: BLE001
                self._fatal(sys.exc_info())
                return
            else:
                if reply_to is not None:
                    reply_to.set(result)
                    if reply_to is until:
                        return

    def _process_async(self, limit: int) -> None:
        # `_process` for asyncio cells (loop thread): a coroutine result runs
        # as a task and suspends the turn (or, reentrant, runs beside it), and
        # a reply future may already be settled by an asker that gave up.
        # Kept apart so the pooled and thread hot path pays nothing for it
        # (sharing one loop cost every pooled tell ~10 ns, ~5%).
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
                if reply_to._done:  # type: ignore[union-attr]  # noqa: SLF001 - every reply future is ours
                    # Settled before it was handled: its asker gave up (`abandon`).
                    self.system.dead_letters.record(message, self.ref, DeadLetterReason.ASK_ABANDONED)
                    continue
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
                    self._begin_stop(reply_to, self_stop=message.__class__ is _SelfStop)
                    return
                elif kind == _TIMER:
                    if self._timers is None or not self._timers._accept(message):  # noqa: SLF001
                        continue
                    message = message.message
                    result = actor.on_receive(message)
                else:  # Terminated
                    if not self._still_watching(message):
                        continue
                    result = actor.on_receive(message)
            except Exception:  # noqa: BLE001
                if reply_to is None or isinstance(reply_to, Receipt):
                    self._tell_failed(sys.exc_info(), message, reply_to)
                    return
                if self._ask_failed(sys.exc_info(), message, reply_to):
                    return
            except BaseException:  # noqa: BLE001
                self._fatal(sys.exc_info())
                return
            else:
                if _is_coroutine(result):
                    if self._await(result, message, reply_to):
                        return
                elif reply_to is not None:
                    _reply(reply_to, result)  # its asker may have given up meanwhile

    def _still_watching(self, message: Terminated) -> bool:
        """Return whether a `Terminated` is still wanted (unwatch drops it), forgetting its target."""
        watching = self._watching
        target = message.ref._cell  # noqa: SLF001
        if watching is None or target not in watching:
            return False
        del watching[target]
        return True

    def _tell_failed(self, exc_info: OptExcInfo, message: Any, receipt: pykka.Future[Any] | None) -> None:
        """A tell's handler raised: the actor fails; a tell with a `Receipt` then says so."""
        self._fail(exc_info, message)
        if receipt is not None:
            _reply_exception(receipt, exc_info)

    def _ask_failed(self, exc_info: OptExcInfo, message: Any, reply_to: pykka.Future[Any]) -> bool:
        """Give an ask's exception to its asker; return True if the actor failed too (its supervisor's policy)."""
        exc = exc_info[1]
        assert exc is not None
        if self.parent is not None and self._policy_of_parent().fails_on_ask(exc):
            # Fail first, so the supervisor hears of it before the asker does.
            self._fail(exc_info, message)
            _reply_exception(reply_to, exc_info)
            return True
        logger.opt(exception=exc_info).info("Exception returned from {} to caller:", self.ref)
        _reply_exception(reply_to, exc_info)
        return False

    # -- asyncio handlers (loop thread only) -------------------------------------

    def _await(self, coro: Any, message: Any, reply_to: pykka.Future[Any] | None, hook: _Hook | None = None) -> bool:
        """Run a handler's coroutine as a task; return whether the turn is now suspended on it."""
        aio = self.aio
        assert aio is not None
        driver = aio.driver
        if driver is not None and driver.next is None and (hook is not None or not aio.reentrant):
            driver.next = coro  # the task that just finished a coroutine of this turn runs this one too
            task = driver.task
        else:
            task = self.executor.start_handler(self, coro)
        aio.handling[task] = _InFlight(message, reply_to, hook)
        if hook is None and aio.reentrant:
            return False
        self.awaiting = task
        if self.sysq:  # posted before `awaiting` was set: its poster did not wake us
            self.executor.wake(self)
        return True

    def _hook(
        self,
        name: str,
        call: Callable[[], Any],
        done: Callable[[BaseException | None], None],
        *,
        cancellable: bool,
    ) -> None:
        """Run a lifecycle hook, then `done(what it raised, or None)`.

        A coroutine (asyncio cells) is awaited first, the turn suspended;
        `done` then gets a `CancelledError` if the task was cancelled. A
        BaseException stops every actor (pykka's rule), then `done(None)`.
        """
        try:
            result = call()
        except Exception as exc:  # noqa: BLE001
            done(exc)
            return
        except BaseException:  # noqa: BLE001
            self._fatal(sys.exc_info())
            done(None)
            return
        if self.aio is not None and _is_coroutine(result):
            self._await(result, None, None, _Hook(name, done, cancellable=cancellable))
            return
        done(None)

    def handler_done(self, task: asyncio.Task[Any], value: Any, exc: BaseException | None) -> None:
        """Deliver what a handler coroutine of `task` ended with (loop thread, in the task's last step).

        `exc` is what it raised (a `CancelledError` if it was cancelled), or
        None and `value` is what it returned.
        """
        if self.awaiting is task:
            # The suspended turn goes on: we hold `sched`.
            self.awaiting = None
            self._finish_handler(task, value, exc)
            if self.awaiting is None:
                self.run()
        else:
            # A reentrant handler: deliver inside a turn of its own.
            self.post_system(lambda cell: cell._finish_handler(task, value, exc))  # noqa: SLF001

    def _finish_handler(self, task: asyncio.Task[Any], value: Any, exc: BaseException | None) -> None:
        aio = self.aio
        if aio is None:  # the loop was lost meanwhile (`lose_loop`)
            return
        entry = aio.handling.pop(task)
        if isinstance(exc, asyncio.CancelledError):
            if entry.hook is not None:
                entry.hook.done(exc)
            elif entry.abandoned is None and self.state == RUNNING and aio.after_cancel is None:
                # Cancelled by someone else than troupe (the loop shutting down?): a failure.
                msg = f"the handler of {self.ref} was cancelled, but not by troupe; was its event loop closed?"
                self._handler_raised(entry, EventLoopError(msg))
            else:
                self._handler_cancelled(entry)
        elif exc is not None:
            self._handler_raised(entry, exc)
        elif entry.hook is not None:
            entry.hook.done(None)
        elif entry.reply_to is not None:
            _reply(entry.reply_to, value)
        if aio.after_cancel is not None and not aio.handling:
            then, aio.after_cancel = aio.after_cancel, None
            then()

    def _handler_cancelled(self, entry: _InFlight) -> None:
        if entry.abandoned is not None:
            reason = DeadLetterReason.ASK_ABANDONED
            exc: BaseException = entry.abandoned
        else:
            reason = DeadLetterReason.STOPPED_WHILE_HANDLING
            what = "stopped" if self.state >= STOPPING else "restarted"
            exc = ActorDeadError(f"{self.ref} was {what} while handling the message; its handler was cancelled")
        self.system.dead_letters.record(entry.message, self.ref, reason, exc)
        if entry.reply_to is not None:
            _reply_exception(entry.reply_to, (type(exc), exc, None))

    def _handler_raised(self, entry: _InFlight, exc: BaseException) -> None:
        if isinstance(exc, HandlerExit):
            exc = exc.exception
        if not isinstance(exc, Exception):
            self._fatal(_exc_info(exc))
            if entry.hook is not None:
                entry.hook.done(None)
        elif entry.hook is not None:
            entry.hook.done(exc)
        elif entry.reply_to is not None and not isinstance(entry.reply_to, Receipt):
            self._ask_failed(_exc_info(exc), entry.message, entry.reply_to)
        elif self.state >= STOPPING or self.failed:
            # This instance is already on its way out (a reentrant handler that
            # ended after the failure that ends it): log it, once is enough.
            logger.opt(exception=_exc_info(exc)).error("Unhandled exception in {} as it was ending:", self.ref)
            self.system.dead_letters.record(entry.message, self.ref, DeadLetterReason.HANDLER_FAILED, exc)
            if entry.reply_to is not None:
                _reply_exception(entry.reply_to, _exc_info(exc))
        else:
            self._tell_failed(_exc_info(exc), entry.message, entry.reply_to)

    def _quiesce(self, then: Callable[[], None]) -> None:
        """Cancel the message handlers and start hooks in flight; `then()` once every task has ended.

        Teardown hooks (on_stop, pre_restart) are not cancelled, only waited for.
        """
        aio = self.aio
        if aio is None or not aio.handling:
            then()
            return
        previous = aio.after_cancel
        if previous is None:
            aio.after_cancel = then
        else:

            def both() -> None:
                previous()
                then()

            aio.after_cancel = both
        for task, entry in aio.handling.items():
            if entry.hook is None or entry.hook.cancellable:
                task.cancel(f"{self.ref} is stopping or restarting")

    def abandon(self, reply_to: pykka.Future[Any], exc: BaseException) -> bool:
        """Give up an ask of this asyncio actor (any thread): skip it if queued, cancel its handler if running.

        `reply_to` is settled with `exc` at once, so the message is skipped
        when reached; a running handler is cancelled on the loop. Return
        False if the reply had already come (nothing is given up).
        """
        try:
            reply_to.set_exception((type(exc), exc, None))
        except queue.Full:
            return False
        aio = self.aio
        if aio is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: nothing runs there any more
                aio.loop.call_soon_threadsafe(self._cancel_abandoned, reply_to, exc)
        return True

    def _cancel_abandoned(self, reply_to: pykka.Future[Any], exc: BaseException) -> None:
        aio = self.aio
        if aio is None:
            return
        for task, entry in aio.handling.items():
            if entry.reply_to is reply_to:
                entry.abandoned = exc
                task.cancel(f"the asker of {self.ref} gave up: {exc!r}")
                return

    def lose_loop(self, exc: EventLoopError) -> None:
        """The loop that ran this asyncio actor has closed: fail it for good (a system message).

        Its in-flight handlers died with the loop and what is queued can
        never be handled: their askers get `exc`. It is not restarted.
        """
        aio = self.aio
        assert aio is not None
        for entry in aio.handling.values():
            if entry.reply_to is not None:
                _reply_exception(entry.reply_to, (type(exc), exc, None))
        aio.handling.clear()
        self.awaiting = None
        self.aio = None  # nothing can await any more
        pop = self.queue.popleft
        while True:
            try:
                item = pop()
            except IndexError:
                break
            message, reply_to = unwrap(item)
            if isinstance(message, _ActorStop):
                if reply_to is not None:  # answered once the actor has terminated
                    self.stop_replies = [*(self.stop_replies or ()), reply_to]
            elif message.__class__ is not _TimerFired and message.__class__ is not Terminated:
                self.reject(item, DeadLetterReason.QUEUED_AT_STOP, exc)
        self.restart = None  # a restart could only land on the same dead loop
        after, aio.after_cancel = aio.after_cancel, None
        if self.state < STOPPING:
            self._fail((type(exc), exc, None))
        if after is not None:  # what waited for the dead handlers goes on
            after()

    # -- failure and supervision (the child's side) --------------------------------

    def _fail(self, exc_info: Any, message: Any = None, *, during_start: bool = False) -> None:
        """An exception escaped a tell handler or a start hook: the single failure entry point.

        Logs it, dead-letters the message, calls ``on_failure`` (not for a start
        hook), then either stops the actor (pykka semantics: a temporary child,
        the default) or suspends it and reports to its supervisor.
        """
        exc = exc_info[1]
        logger.opt(exception=exc_info).error("Unhandled exception in {}:", self.ref)
        if message is not None:
            self.system.dead_letters.record(message, self.ref, DeadLetterReason.HANDLER_FAILED, exc)
        self.failed = True
        supervised = self.restart is not None and self.parent is not None
        if not supervised:
            self._mark_dead()
        if not during_start and self.actor is not None:
            try:
                self.actor.on_failure(*exc_info)
            except Exception:  # noqa: BLE001
                logger.opt(exception=True).error("Unhandled exception in on_failure of {}:", self.ref)
        if supervised:
            self._report(exc)
            return
        self.reason = exc
        self.state = STOPPING
        self._stop_children(self._finish_stop)

    def _report(self, exc: BaseException | None) -> None:
        """Suspend and ask the supervisor what to do (`exc` None: a permanent child exited)."""
        self.suspended = True
        incarnation = self.incarnation
        self.parent.post_system(lambda parent: parent._child_failed(self, exc, incarnation))  # type: ignore[union-attr]  # noqa: SLF001

    def _policy_of_parent(self) -> SupervisionPolicy:
        return getattr(self.parent.actor, "supervision_policy", DEFAULT_POLICY)  # type: ignore[union-attr]

    def _teardown(self, exc: BaseException | None, then: Callable[[], None]) -> None:
        """End the current instance for a restart: its handlers, timers, hooks and children; then `then()`.

        Each step may wait (an asyncio handler being cancelled, a coroutine
        hook): the next one runs from where it ended.
        """
        if self.state != RUNNING:
            then()
            return
        self.suspended = True
        self._quiesce(lambda: self._teardown_on_stop(exc, then))

    def _teardown_on_stop(self, exc: BaseException | None, then: Callable[[], None]) -> None:
        if self.state != RUNNING:  # stopped meanwhile: stopping takes over
            then()
            return
        if self._timers is not None:
            self._timers.cancel_all()
        old = self.actor
        call_on_stop = old is not None and not self.failed
        self.failed = True  # torn down: on_stop is called here or not at all, never twice
        if call_on_stop:
            self._hook("on_stop", old.on_stop, lambda e: self._teardown_pre_restart(e, exc, then), cancellable=False)
        else:
            self._teardown_pre_restart(None, exc, then)

    def _teardown_pre_restart(
        self, stop_exc: BaseException | None, exc: BaseException | None, then: Callable[[], None]
    ) -> None:
        if stop_exc is not None:
            logger.opt(exception=_exc_info(stop_exc)).error("Unhandled exception in on_stop of {}:", self.ref)
        if self.state != RUNNING:  # stopped meanwhile: stopping takes over
            then()
            return
        old = self.actor
        pre_restart = getattr(old, "pre_restart", None)
        if pre_restart is not None:
            self._hook(
                "pre_restart", lambda: pre_restart(exc), lambda e: self._teardown_children(e, then), cancellable=False
            )
        else:
            self._teardown_children(None, then)

    def _teardown_children(self, hook_exc: BaseException | None, then: Callable[[], None]) -> None:
        if hook_exc is not None:
            logger.opt(exception=_exc_info(hook_exc)).error("Unhandled exception in pre_restart of {}:", self.ref)
        self.failed = True
        if self.state != RUNNING:
            then()
            return
        self._stop_children(then)

    def _rebuild(self, exc: BaseException | None, then: Callable[[], None]) -> None:
        """Build a fresh instance into this cell, run ``post_restart``, resume; then `then()`."""
        if self.state != RUNNING:
            then()
            return
        self.incarnation += 1
        try:
            actor = self.construct(*self.spec)  # type: ignore[misc]
        except Exception:  # noqa: BLE001
            self.actor = None
            self._fail(sys.exc_info(), during_start=True)
            then()
            return
        self.actor = actor
        self.failed = False
        self.suspended = False
        post_restart = getattr(actor, "post_restart", None)
        call = actor.on_start if post_restart is None else (lambda: post_restart(exc))
        self._hook("post_restart", call, lambda e: self._restarted(e, then), cancellable=True)

    def _restarted(self, exc: BaseException | None, then: Callable[[], None]) -> None:
        if exc is not None and not isinstance(exc, asyncio.CancelledError):
            self._fail(_exc_info(exc), during_start=True)
        then()

    def _resume(self) -> None:
        if self.state == RUNNING:
            self.failed = False
            self.suspended = False
            group = self._restarts.group if self._restarts is not None else None
            if group is not None and group.parked:
                group.parked = False
                self._group_step()

    # -- failure and supervision (the supervisor's side) ----------------------------

    def _child_failed(self, child: Cell, exc: BaseException | None, incarnation: int) -> None:
        """Decide what happens to a failed child (a system message in this, the parent's, turn)."""
        if self.state != RUNNING or child.state != RUNNING or child.incarnation != incarnation:
            return  # we are stopping (the child will be too), or the report is stale
        sup = self._supervising()
        if sup.group is not None:
            sup.deferred.append((child, exc, incarnation))
            return
        policy: SupervisionPolicy = getattr(self.actor, "supervision_policy", DEFAULT_POLICY)
        if exc is None or child.actor is None:
            directive = Directive.RESTART  # a normal exit, or no instance left to resume
        else:
            try:
                directive = policy.decider(exc)
                if not isinstance(directive, Directive):
                    msg = f"the decider of {self.ref} returned {directive!r}, not a Directive"
                    raise TypeError(msg)  # noqa: TRY301
            except Exception:  # noqa: BLE001
                logger.opt(exception=True).error("Decider of {} failed on {!r}; escalating", self.ref, exc)
                directive = Directive.ESCALATE
        if directive is Directive.RESUME:
            child.post_system(_resume)
        elif directive is Directive.STOP:
            child.reason = exc
            child.post_system(STOP)
        elif directive is Directive.ESCALATE:
            self._escalate(child, exc)  # type: ignore[arg-type]
        else:
            exceeded, attempt = sup.log.record(self.system.clock.now(), child.urn, policy)
            if exceeded:
                err = RestartIntensityError(
                    f"{self.ref} gave up: more than {policy.max_restarts} restart(s) within "
                    f"{policy.within_seconds} s; the last failure was in {child.ref}: {exc!r}. "
                    "Fix the failing actor, or raise max_restarts / within_seconds in its supervision_policy"
                )
                err.__cause__ = exc
                self._escalate(child, err)
                return
            delay = policy.backoff.delay(attempt) if policy.backoff is not None else 0.0
            sup.group = _GroupRestart(self._restart_group(child, policy), exc, delay)
            self._group_step()

    def _restart_group(self, child: Cell, policy: SupervisionPolicy) -> list[Cell]:
        if policy.strategy is SupervisionStrategy.ONE_FOR_ONE:
            return [child]
        with self.system.tree_lock:
            children = list(self.children or ())
        if policy.strategy is SupervisionStrategy.REST_FOR_ONE:
            children = children[children.index(child) :] if child in children else [child]
        return [c for c in children if c.state < STOPPING]

    def _group_step(self) -> None:
        """Advance the group restart by one child: teardown in reverse start order, then rebuild in order.

        Each step is one system message to one child; the child posts
        `_group_step` back to us when it is done, so the order holds across
        executors and no thread ever waits for another.
        """
        sup = self._restarts
        group = sup.group if sup is not None else None
        if group is None or self.state != RUNNING:
            return
        if self.failed:  # we failed meanwhile: our parent decides; a resume goes on from here
            group.parked = True
            return
        # Busy restarting: user messages wait, as an Erlang supervisor is busy too.
        self.suspended = True
        step = self._continue_group
        if group.teardown:
            child = group.teardown.pop()
            if child.restart is None:  # temporary: stopped, never restarted
                group.members.remove(child)
                child.post_system(STOP)
                child.on_terminated(lambda _c: step())
            else:
                exc = group.exc
                if not group.teardown and group.delay == 0 and child is group.members[0]:
                    # The last one torn down is the first one rebuilt: one
                    # system message does both (a one_for_one restart is then
                    # three hand-offs: report, restart, done).
                    group.next = 1
                    child.post_system(lambda c: c._teardown(exc, lambda: c._rebuild(exc, step)))  # noqa: SLF001
                else:
                    child.post_system(lambda c: c._teardown(exc, step))  # noqa: SLF001
            return
        if group.delay > 0:
            delay, group.delay = group.delay, 0.0
            self.suspended = False  # not busy while the backoff runs
            self.system.scheduler.call_later(delay, step)
            return
        if group.next < len(group.members):
            child = group.members[group.next]
            group.next += 1
            exc = group.exc
            child.post_system(lambda c: c._rebuild(exc, step))  # noqa: SLF001
            return
        sup.group = None
        self.suspended = False
        deferred, sup.deferred = sup.deferred, []
        for child, exc, incarnation in deferred:
            self._child_failed(child, exc, incarnation)

    def _continue_group(self) -> None:
        self.post_system(_group_step)

    def _escalate(self, child: Cell, exc: BaseException) -> None:
        """Give up on `child`: at the root, stop it and log; elsewhere fail ourselves with `exc`."""
        if self.parent is None:  # the system's root actor never fails
            logger.opt(exception=exc).error("{} stopped for good: its failure reached the root", child.ref)
            child.reason = exc
            child.post_system(STOP)
            return
        # Erlang: a supervisor that gives up terminates its children, then exits.
        self.suspended = True
        self._stop_children(lambda: self._fail((type(exc), exc, exc.__traceback__)))

    def _supervising(self) -> _Supervising:
        if self._restarts is None:
            self._restarts = _Supervising()
        return self._restarts

    # -- stopping --------------------------------------------------------------

    def _fatal(self, exc_info: Any) -> None:
        """A BaseException escaped a handler: stop this actor and every actor (as pykka)."""
        logger.opt(exception=exc_info).error(
            "{!r} in {}: stopping every actor of system {!r}", exc_info[1], self.ref, self.system.name
        )
        self._begin_stop()
        self.system._stop_all_actors()  # noqa: SLF001

    def _begin_stop(self, reply_to: pykka.Future[Any] | None = None, *, self_stop: bool = False) -> None:
        if reply_to is not None:
            if self.stop_replies is None:
                self.stop_replies = []
            self.stop_replies.append(reply_to)
        if self.state >= STOPPING:
            return
        if self_stop and self.restart is RestartType.PERMANENT and self.parent is not None:
            self._report(None)  # Erlang: a permanent child that exits is restarted
            return
        self._mark_dead()
        self.state = STOPPING
        after = self._after_children
        if after is None:
            self._stop_children(self._finish_stop)
        else:
            # A restart's teardown is stopping the children: finish stopping
            # instead, then let the supervisor's group restart go on.
            self._after_children = lambda: (self._finish_stop(), after())

    def _stop_children(self, then: Callable[[], None]) -> None:
        """Stop every child, youngest first, one at a time; then call `then()` (in a later turn maybe).

        Asyncio handlers still running are cancelled first, and waited for.
        """
        self._after_children = then
        self._quiesce(lambda: _continue_children(self))

    def _continue_children(self) -> None:
        # A child that cannot be stopped right here calls us back (a system
        # message) when it has terminated; then we go on with the next one.
        # The children are snapshotted once: a stopping cell accepts no new
        # children, and walking a dict from its end after many deletions is
        # O(n) per step.
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
        self._pending_stop = None
        then, self._after_children = self._after_children, None
        then()  # type: ignore[misc]

    def _child_terminated(self, _child: Cell) -> None:
        self.post_system(_continue_children)

    def _finish_stop(self) -> None:
        if self._timers is not None:
            self._timers.cancel_all()
        if not self.failed and self.actor is not None:
            self._hook("on_stop", self.actor.on_stop, self._stopped, cancellable=False)
        else:
            self._terminate()

    def _stopped(self, exc: BaseException | None) -> None:
        if exc is not None and not isinstance(exc, asyncio.CancelledError):
            logger.opt(exception=_exc_info(exc)).error("Unhandled exception in {}:", self.ref)
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
        for target in self._watching or ():
            target.remove_on_terminated(self)
        self._watching = None
        for callback in (watchers or {}).values():
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
            if isinstance(message, _ActorStop):
                if reply_to is not None:
                    reply_to.set(True)  # "was being stopped at the time of the call"
            elif message.__class__ is not _TimerFired and message.__class__ is not Terminated:
                self.reject(item, DeadLetterReason.QUEUED_AT_STOP)

    def reject(self, item: Any, reason: DeadLetterReason, exc: BaseException | None = None) -> None:
        """Record a mailbox item as a dead letter; an ask gets `exc` (default ActorDeadError)."""
        message, reply_to = unwrap(item)
        self.system.dead_letters.record(message, self.ref, reason, exc)
        if reply_to is not None:
            if exc is None:
                exc = ActorDeadError(f"{self.ref} stopped before handling the message")
            _reply_exception(reply_to, (type(exc), exc, None))


def unwrap(item: Any) -> tuple[Any, pykka.Future[Any] | None]:
    """Return (message, reply future or None) of a mailbox item."""
    if item.__class__ is Envelope:
        return item.message, item.reply_to
    return item, None


def _refuse_coroutine(cell: Cell, coro: Any, message: Any) -> None:
    coro.close()  # never awaited: close it so Python does not warn about it
    name = ".".join(getattr(message, "attr_path", ())) or "a proxied method"
    msg = (
        f"{cell.ref}: {name} returned a coroutine, but the actor runs in a mode without an event loop; "
        "spawn it with mode='asyncio' to have coroutines awaited"
    )
    raise ModeError(msg)


def _stop(cell: Cell) -> None:
    cell._begin_stop()  # noqa: SLF001


def _continue_children(cell: Cell) -> None:
    if cell._after_children is not None:  # noqa: SLF001
        cell._continue_children()  # noqa: SLF001


def _resume(cell: Cell) -> None:
    cell._resume()  # noqa: SLF001


def _group_step(cell: Cell) -> None:
    cell._group_step()  # noqa: SLF001


class _GroupRestart:
    """A restart under way: `members` (start order) torn down last-first, then rebuilt in order."""

    __slots__ = ("delay", "exc", "members", "next", "parked", "teardown")

    def __init__(self, members: list[Cell], exc: BaseException | None, delay: float) -> None:
        self.parked = False  # a step arrived while the supervisor itself had failed
        self.members = members
        self.teardown = list(members)  # popped from the end: reverse start order
        self.exc = exc
        self.delay = delay
        self.next = 0


class _Supervising:
    """A cell's state as a supervisor; only its own turn touches it."""

    __slots__ = ("deferred", "group", "log")

    def __init__(self) -> None:
        self.log = RestartLog()
        # Invariant: at most one group restart at a time; failures reported
        # meanwhile wait in `deferred`, in arrival order.
        self.group: _GroupRestart | None = None
        self.deferred: list[tuple[Cell, BaseException | None, int]] = []


STOP = _stop
"""The system message that stops a cell now, ahead of queued user messages."""
