"""The cell: the stable home of one actor, whatever its execution mode.

A cell owns what must outlive any one instance of an actor: its mailbox, its
address (the `ActorRef`), its place in the tree (parent and children), its
timers and its scheduling state. pykka's `ActorRef.actor_inbox` *is* the cell.
This module holds that one concept: the inbox, the scheduling lock and the
turn loop, and the cell's own way through failing and stopping. Around it:

- `actors._core.executors`: what runs turns (one `Executor` per mode);
- `actors._core.handlers`: an asyncio cell's handler tasks (`AsyncioState`);
- `actors._core.lifecycle`: stopping the children and restarting in place,
  as state machines of named steps;
- `actors._core.supervision`: the supervisor's side (`Supervising`).

How a message is handled (the hot path)::

    ref.tell(m) -> queue.append(m) -> sched.acquire(False) ? executor.submit(cell)
    executor thread -> cell.run(): up to `throughput` items, then release

Mailbox items are either a bare message (a tell: no envelope is allocated,
~15% of a tell's cost), an `Asked` (the reply future of an ask or a stop to
a pooled or thread-mode actor, carrying its message: no envelope either, see
`actors._core.future.Asked`) or a pykka `Envelope` (an asyncio actor's ask, a
forwarded one with a future of its own, or a tell with a `Receipt`: a
failure of its handler still fails the actor).

`sched` is a plain lock used as an atomic test-and-set: whoever acquires it
owns the right to run the actor, and it stays held from submission until the
end of the turn. So one actor handles one message at a time, in order, in
every mode; and because `run` re-checks the queue *after* releasing, a
message that arrives while a turn is ending is never stranded. Outside this
module, only the measured hot paths take `sched` (``ActorRef.tell`` and
``ask``, ``RouterRef.tell``), always as ``acquire(False)`` followed by
``executor.submit``, which is what `put` does.

Executors are what differ between modes: a shared `DispatcherPool` (pooled),
one dedicated thread (thread), an event loop (asyncio). All of them just call
`cell.run()` with `sched` held.

Stopping is asynchronous, Akka-style, so that no executor thread ever blocks
waiting for another actor: a stopping cell stops its children youngest first,
one at a time (`StopChildren`), and resumes when each has terminated; only
then does it run ``on_stop`` and terminate.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sys
import threading
import time
import uuid
from _thread import allocate_lock
from asyncio import _get_running_loop
from collections import deque
from os import urandom
from types import CoroutineType
from typing import TYPE_CHECKING, Any

import pykka
from loguru import logger
from pykka import ActorDeadError, ActorRegistry

from actors._core._pykka import ActorStop, Envelope, handle_receive
from actors._core.deadletters import DeadLetterReason
from actors._core.executors import DRAIN, THREAD_STATE, current_executor
from actors._core.future import Asked, Receipt
from actors._core.handlers import AsyncioState, Hook, is_coroutine, reply_exception
from actors._core.lifecycle import RUNNING, STARTING, STOP, STOPPING, TERMINATED, StopChildren, exc_info_of
from actors._core.logbridge import pykka_logs, report, to_pykka_logger
from actors._core.mailbox import NOTHING, LazyFifo
from actors._core.messages import KINDS, PROXY, STOP_MESSAGE, TIMER, TRACED, SelfStop
from actors._core.supervision import RestartType, Supervising, Terminated, policy_of
from actors._core.timers import Timers, _TimerFired
from actors._core.tracing import Traced
from actors.errors import MailboxFullError, ModeError, TroupeInternalError

if TYPE_CHECKING:
    from collections.abc import Callable

    from actors._core._pykka import OptExcInfo
    from actors._core.executors import Executor
    from actors._core.mailbox import MailboxSpec, MessageQueue
    from actors._core.ref import ActorRef
    from actors._core.system import ActorSystem

__all__ = [
    "RUNNING",
    "STARTING",
    "STOP",
    "STOPPING",
    "TERMINATED",
    "Cell",
    "bind_constructing",
    "constructing_cell",
    "constructing_instance",
    "count_observing",
    "record_constructing",
    "unwrap",
]

_constructing = threading.local()

_URN_LOCK = allocate_lock()
"""Held while a cell's URN is drawn on first read (`Cell.urn`)."""

_SYSQ_LOCK = allocate_lock()
"""Held while a cell's list of system messages is made (`Cell.system_queue`)."""

# How many systems have an observer (`count_observing`). While 0, a turn pays
# one check of this global (a specialized LOAD_GLOBAL) instead of reading
# ``system.observer`` (measured: the attribute read made a pinned inline ask ~4% slower).
_observing = 0


def count_observing(delta: int) -> None:
    """A system's observer was set (+1) or removed (-1): turns look for observers while any is."""
    global _observing  # noqa: PLW0603 - the turn loop's flag, a module global for speed
    _observing += delta


def bind_constructing(cell: Cell | None) -> Cell | None:
    """Make `cell` the one `Actor.__init__` binds to on this thread; return the previous one."""
    previous = getattr(_constructing, "cell", None)
    _constructing.cell = cell
    return previous


def constructing_cell() -> Cell | None:
    """Return the cell an actor constructed on this thread right now belongs to, if any."""
    return getattr(_constructing, "cell", None)


def record_constructing(instance: Any) -> None:
    """Record `instance` as the one being constructed on this thread (`Actor.__init__`)."""
    _constructing.instance = instance


def constructing_instance(cell: Cell) -> Any:
    """Return the instance of `cell` whose ``__init__`` runs on this thread right now, or None.

    `Actor.__init__` records it, so that ``self.actor_ref.proxy()`` works in
    a constructor (pykka allows it) before `Cell.actor` is set. A child
    spawned inside a constructor binds its own cell: the record names the
    cell it belongs to, so it is never the wrong one.
    """
    newborn = getattr(_constructing, "instance", None)
    if newborn is not None and getattr(newborn, "_troupe_cell", None) is cell:
        return newborn
    return None


class Cell:
    """One actor's mailbox, address, tree position and scheduling state.

    Thread contract: `put`, `post_system`, `post_internal`, `on_terminated`,
    `remove_on_terminated`, `stopped_event` and `abandon` may be called from
    any thread, and so may the read-only views (`is_running`,
    `is_stopping`, `is_terminated`, `load`). Everything else runs only while
    holding `sched`, i.e. on the executor's thread during a turn; for an
    asyncio cell that is always the loop's thread, where a handler task
    also delivers its outcome in its last step (`deliver`). `system`, `actor_class`,
    `name`, `parent`, `urn`, `throughput`, `ref` and `queue` are set once,
    when the cell is built, and never change.
    """

    __slots__ = (
        "__weakref__",
        "_stopped_event",
        "_supervising",
        "_timers",
        "_urn",
        "_watched_by",
        "_watchers",
        "_watching",
        "actor",
        "actor_class",
        "aio",
        "alive",
        "awaiting",
        "children",
        "children_stop",
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
    )

    def __init__(  # noqa: PLR0917 - positional on the spawn path (see `ActorSystem._new_cell`)
        self,
        system: ActorSystem,
        actor_class: type[pykka.Actor],
        executor: Executor,
        name: str | None,
        parent: Cell | None,
        urn: bytes | str | None,
        throughput: int,
        ref_class: Callable[[Cell], ActorRef[Any]],
        mailbox: MailboxSpec,
        loop: asyncio.AbstractEventLoop | None,
        reentrant: bool,  # noqa: FBT001 - positional: see `ActorSystem._new_cell`
        restart: RestartType | None,
        spec: tuple[tuple[Any, ...], dict[str, Any]] | None,
    ) -> None:
        self.system = system
        self.actor_class = actor_class
        # Invariant: the executor that runs this cell's turns; replaced only
        # while holding `sched` (by `_terminate`, with DRAIN) or under the
        # asyncio executor's lock (`hand_over`, when its loop is lost).
        self.executor = executor
        self.name = name
        self.parent = parent
        # None (or 16 random bytes) until the URN is first read (see `urn`), then its text.
        self._urn = urn
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
        self.restart = restart
        self.spec = spec
        # Counts instances: a failure report from an older instance is stale.
        self.incarnation = 0
        # Why the actor terminated: None (a normal stop) or the exception it failed with.
        self.reason: BaseException | None = None
        # System messages: callables run with this cell before any user message.
        # None until the first one (`system_queue`): a list is 56 bytes, and
        # most actors never get one (a stop that runs inline takes none).
        self.sysq: list[Callable[[Cell], None]] | None = None
        # Guarded by system.tree_lock; insertion-ordered, so reversed() is youngest first.
        self.children: dict[Cell, None] | None = None
        self.stop_replies: list[pykka.Future[Any]] | None = None
        # Guarded by system.tree_lock: key -> callback run once this cell terminates.
        self._watchers: dict[object, Callable[[Cell], None]] | None = None
        # The cells this actor watches (death watch); only its own turn touches it.
        self._watching: dict[Cell, None] | None = None
        # Guarded by system.tree_lock. Invariant: the cells watching this one (`watch`): None,
        # the one watcher itself, or a dict of them. Most actors have one watcher (their
        # coordinator, say); kept apart from `_watchers`, a watch costs no dict and no bound
        # method per target (~1-2 µs a registration at 100,000 agents, with the collector's share).
        self._watched_by: Cell | dict[Cell, None] | None = None
        # Invariant: the walk stopping the children (stopping, a restart's
        # teardown, a supervisor giving up) while one is under way, else None.
        self.children_stop: StopChildren | None = None
        # As a supervisor: recent restarts, and the group restart under way.
        self._supervising: Supervising | None = None
        self._timers: Timers | None = None
        self._stopped_event: threading.Event | None = None
        self.pykka_registered = False
        # Asyncio mode only: the handler tasks (None again once its loop is lost).
        self.aio = None if loop is None else AsyncioState(self, loop, reentrant=reentrant)
        # Invariant: the task the current turn is suspended on, or None. While
        # set, `sched` is held by that turn and no message is handled.
        self.awaiting: asyncio.Task[Any] | None = None
        # Last: a mailbox may keep the cell (a bounded one names its ref).
        self.queue: MessageQueue = mailbox.create(self)

    def __repr__(self) -> str:
        return f"<Cell {self.ref} state={self.state}>"

    @property
    def urn(self) -> str:
        """The actor's URN: pykka's uuid4 form, ``urn:uuid:<uuid4>``, drawn and formatted on first read.

        Most actors' URNs are never read (it is in ``str(ref)``, the logs, a
        router's table): drawing 16 random bytes (``os.urandom``, a system
        call) and formatting them (~1.5 µs) waits for the first read, and so
        do the 49 bytes of the bytes object. The first read takes a
        module-wide lock, so two threads reading it first at once see one URN.
        The spawner may also pass the random bytes (formatted on first read).
        """
        urn = self._urn
        if urn.__class__ is str:
            return urn
        with _URN_LOCK:
            urn = self._urn
            if not isinstance(urn, str):
                urn = self._urn = uuid.UUID(bytes=urn or urandom(16), version=4).urn
        return urn

    # -- the pykka inbox interface ---------------------------------------------

    def put(self, envelope: Envelope[Any], /) -> None:
        """Queue an envelope and make sure the actor gets a turn (pykka inbox interface)."""
        self.queue.append(envelope)
        if self.sched.acquire(False):
            self.executor.submit(self)

    def get(self) -> Envelope[Any]:
        """Take the next item as an envelope (pykka inbox interface; IndexError when empty)."""
        item: Any = self.queue.popleft()
        if item.__class__ is Asked and item.target is self:
            message, item.target, item.message = item.message, None, None
            return Envelope(message, reply_to=item)
        return item if item.__class__ is Envelope else Envelope(item)

    def empty(self) -> bool:
        """Return whether no message is waiting."""
        return not len(self.queue)

    # -- posting from any thread ---------------------------------------------

    def system_queue(self) -> list[Callable[[Cell], None]]:
        """Return the list of system messages, created on first use (any thread).

        Once made it stays: `_process_system` holds it and sees what is
        posted while it runs. Two threads making it at once make one.
        """
        sysq = self.sysq
        if sysq is None:
            with _SYSQ_LOCK:
                sysq = self.sysq
                if sysq is None:
                    sysq = self.sysq = []
        return sysq

    def post_system(self, message: Callable[[Cell], None]) -> None:
        """Queue a system message (runs before user messages) and schedule the cell."""
        self.system_queue().append(message)
        if self.sched.acquire(False):
            self.executor.submit(self)
        elif self.awaiting is not None:
            # The turn is suspended on a handler task: system messages do not
            # wait for it (a stop cancels it).
            self.executor.wake(self)

    def stop_now(self) -> None:
        """Stop the actor ahead of its queued mail, as posting `STOP` does; here if it is idle on this thread.

        A stopping parent's (`StopChildren`, any thread). A child on the
        calling thread's own executor with nothing else to do has its stop
        turn run right here instead of being submitted, which keeps a
        shutdown of 1,000,000 pooled actors to one pass on one dispatcher;
        that turn is `run`'s with `STOP` as its only system message, without
        making the list to hold it (56 B and a lock each). Any other child
        (busy, starting, with system messages queued, or elsewhere) gets
        `STOP` posted.
        """
        if self.sysq or self.state == STARTING or not self.sched.acquire(False):
            self.post_system(STOP)
            return
        if self.executor is not current_executor():
            self.system_queue().append(STOP)
            self.executor.submit(self)
            return
        try:
            self.begin_stop()
            if self.sysq:  # posted meanwhile, after the stop
                self._process_system()
            if self.state == TERMINATED:
                self._drain()
        except BaseException:  # noqa: BLE001 - as in `run`: the thread must survive anything
            self._internal_error(sys.exc_info(), None)
        finally:
            if self.awaiting is None:
                self.sched.release()
        # Re-check after releasing, as `run` does.
        if (self.sysq or (len(self.queue) and self.state != STOPPING and not self.suspended)) and self.sched.acquire(
            False
        ):
            self.executor.submit(self)

    def post_internal(self, message: Any) -> None:
        """Queue a message the runtime sends (a timer's, a `Terminated`); never blocks.

        Timers fire on the scheduler's thread and `Terminated` on whichever
        thread ended the watched actor: neither may wait for room in a bounded
        mailbox (`MessageQueue.offer`), so a full one turns the message into a
        dead letter.
        """
        if not self.alive:
            return
        queue = self.queue
        # `offer` is optional in the protocol: a queue without one (the FIFO
        # mailbox's bare deque) promises that its append never blocks.
        offer = getattr(queue, "offer", None)
        try:
            if offer is None:
                queue.append(message)
            else:
                offer(message)
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
            aio.abandon(reply_to, exc)
        return True

    # -- views (any thread) --------------------------------------------------------

    def is_running(self) -> bool:
        """Return whether the actor has started and is not stopping."""
        return self.state == RUNNING

    def is_stopping(self) -> bool:
        """Return whether the actor is stopping or has terminated."""
        return self.state >= STOPPING

    def is_terminated(self) -> bool:
        """Return whether the actor has terminated (its children, on_stop and callbacks are done)."""
        return self.state == TERMINATED

    def runs_handler(self, task: asyncio.Task[Any] | None) -> bool:
        """Return whether `task` is one of this asyncio actor's handler tasks."""
        aio = self.aio
        return aio is not None and task in aio.handling

    def on_own_loop(self) -> bool:
        """Return whether the calling thread is running this asyncio actor's event loop right now."""
        aio = self.aio
        return aio is not None and _get_running_loop() is aio.loop

    def suspended_on(self, task: asyncio.Task[Any] | None) -> bool:
        """Return whether the current turn is suspended on `task` (a handler awaiting its own actor)."""
        return self.awaiting is not None and self.awaiting is task

    def load(self) -> int:
        """Return the messages waiting, plus one if a turn is scheduled or running (a router's measure)."""
        return len(self.queue) + (1 if self.sched.locked() else 0)

    def children_snapshot(self) -> list[Cell]:
        """Return the children, oldest first (a copy taken under the tree lock)."""
        with self.system.tree_lock:
            return list(self.children or ())

    def stopped_event(self) -> threading.Event:
        """Return an event that is set once the actor stops being alive."""
        with self.system.tree_lock:
            if self._stopped_event is None:
                self._stopped_event = threading.Event()
                if not self.alive:
                    self._stopped_event.set()
            return self._stopped_event

    # -- building (the system, at spawn) ---------------------------------------------

    def adopt(self, child: Cell) -> None:
        """Record `child` as ours (the system, holding its tree lock, at spawn)."""
        if self.children is None:
            self.children = {}
        self.children[child] = None

    def disown(self, child: Cell) -> None:
        """Undo `adopt`: the spawn was refused (the system, holding its tree lock)."""
        if self.children is not None:
            self.children.pop(child, None)

    def construct(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Instantiate `actor_class` bound to this cell (at spawn, and again at each restart).

        Raises:
            TypeError: the class's ``__init__`` did not call ``super().__init__()``.
            Exception: whatever the constructor raised.
        """
        previous = bind_constructing(self)  # a context manager here costs ~1 µs per spawn
        newborn = getattr(_constructing, "instance", None)  # a parent constructing this child
        try:
            actor = self.actor_class(*args, **kwargs)
        finally:
            bind_constructing(previous)
            _constructing.instance = newborn
        # getattr, not ``actor.__dict__``: reading ``__dict__`` makes a 64-byte
        # dict object per instance (3.11 keeps attributes in a values array).
        if getattr(actor, "_troupe_cell", None) is not self:
            msg = (
                f"{self.actor_class.__qualname__}.__init__ did not call super().__init__(); "
                "call it so the actor is bound to its mailbox"
            )
            raise TypeError(msg)
        return actor

    def instantiate(self, args: tuple[Any, ...], kwargs: dict[str, Any], pykka_registry: bool) -> None:  # noqa: FBT001 - positional on the spawn path
        """Build the first instance (the system, at spawn, holding `sched`); register it with pykka if asked.

        Raises:
            BaseException: whatever `construct` raised; the cell is then
                terminated, as if it had never been (`abandon_unstarted`).
        """
        try:
            self.actor = self.construct(args, kwargs)
        except BaseException:
            self._abandon_unstarted()
            raise
        if pykka_registry:
            self.pykka_registered = True
            ActorRegistry.register(self.ref)

    def launch(self) -> None:
        """Give the new actor its first turn (the system, at spawn, holding `sched`; this releases it)."""
        if type(self.actor).on_start is pykka.Actor.on_start:
            # Nothing to run before the first message: skip the start turn.
            self.state = RUNNING
            self.sched.release()
            if (self.sysq or len(self.queue)) and self.sched.acquire(False):
                self.executor.submit(self)
        else:
            self.executor.submit(self)

    def _abandon_unstarted(self) -> None:
        # The constructor failed: the cell never ran. Unlink it and let anyone
        # who already posted to it (a stopping parent) see it terminated.
        self.alive = False
        self.failed = True
        self._terminate()
        self.sched.release()

    # -- death watch (called in the watcher's turn) ------------------------------

    def watch(self, target: Cell) -> None:
        """Deliver `Terminated(target.ref, reason)` to this actor when `target` terminates.

        A `target` that is not a `Cell` (the cluster's `WatchPoint`) is asked
        through its `on_terminated` / `remove_on_terminated`.
        """
        watching = self._watching
        if watching is None:
            watching = self._watching = {}
        if target in watching:
            return
        watching[target] = None
        if target.__class__ is not Cell:
            target.on_terminated(self.watched_terminated, key=self)
            return
        with target.system.tree_lock:
            if target.state != TERMINATED:
                by = target._watched_by
                if by is None:
                    target._watched_by = self
                elif by.__class__ is dict:
                    by[self] = None
                else:
                    target._watched_by = {by: None, self: None}  # type: ignore[dict-item]
                return
        self.watched_terminated(target)

    def unwatch(self, target: Cell) -> None:
        """Stop watching `target`; a `Terminated` already queued for it is dropped."""
        if self._watching and target in self._watching:
            del self._watching[target]
            target.forget_watcher(self)

    def forget_watcher(self, watcher: Cell) -> None:
        """`watcher` no longer watches this cell (any thread)."""
        with self.system.tree_lock:
            by = self._watched_by
            if by is watcher:
                self._watched_by = None
            elif by.__class__ is dict:
                by.pop(watcher, None)

    def watched_terminated(self, target: Cell) -> None:
        self.post_internal(Terminated(target.ref, target.reason))

    def still_watching(self, message: Terminated) -> bool:
        """Return whether a `Terminated` is still wanted (unwatch drops it), forgetting its target."""
        watching = self._watching
        target = message.ref._cell  # noqa: SLF001
        if watching is None or target not in watching:
            return False
        del watching[target]
        return True

    # -- timers --------------------------------------------------------------------

    @property
    def timers(self) -> Timers:
        """Return the actor's timers, created on first use."""
        if self._timers is None:
            self._timers = Timers(self)
        return self._timers

    def timer_accepts(self, message: _TimerFired) -> bool:
        """Return whether a timer's message is still wanted (its timer was not cancelled or replaced)."""
        return self._timers is not None and self._timers._accept(message)  # noqa: SLF001

    def cancel_timers(self) -> None:
        """Cancel every timer of the actor."""
        if self._timers is not None:
            self._timers.cancel_all()

    # -- a turn ----------------------------------------------------------------

    def run(self, until: pykka.Future[Any] | None = None) -> None:
        """Run one turn. The caller holds `sched`; this releases it.

        With `until`, the turn runs on the calling thread for a blocking ask
        (see `ActorRef.ask`) and ends once `until` has its answer.
        """
        if until is not None:
            THREAD_STATE.inline_depth = getattr(THREAD_STATE, "inline_depth", 0) + 1
        try:
            if self.state != STARTING or self._start():
                if self.sysq:
                    self._process_system()
                state = self.state
                if state == RUNNING:
                    if not self.suspended:
                        aio = self.aio
                        if _observing and (observer := self.system.observer) is not None:  # metrics on
                            # The common measured turn inline (`Probe.run_turn` has the
                            # others: a cell's first, the sampled one, every-message
                            # timing): a Python call less, ~500 instructions a turn.
                            try:  # not .get(): a subscript is specialized (~100 instructions less)
                                stats = observer.cells[self]
                            except KeyError:  # its first measured turn
                                countdown = 0
                            else:
                                countdown = stats.countdown
                            if countdown > 0:
                                stats.countdown = countdown - 1
                                depth = len(self.queue)
                                if depth > stats.high_water:  # noqa: PLR1730 - not max(): a builtin call
                                    stats.high_water = depth
                                stats.handled += self._process(self.throughput, until)
                            else:
                                observer.run_turn(self, until)
                        elif aio is None:
                            self._process(self.throughput, until)
                        elif self.awaiting is None:  # a system message may have started a hook task
                            aio.process(self.throughput)
                elif state == TERMINATED:
                    self._drain()
        except BaseException:  # noqa: BLE001 - an executor thread must survive anything
            self._internal_error(sys.exc_info(), until)
        finally:
            if until is not None:
                THREAD_STATE.inline_depth -= 1
            if self.awaiting is None:
                self.sched.release()
            # else: suspended on a handler task; its done-callback goes on with the turn.
        # Re-check after releasing: a message that arrived during the turn found
        # `sched` held and did not schedule; whoever acquires now does.
        if (self.sysq or (len(self.queue) and self.state != STOPPING and not self.suspended)) and self.sched.acquire(
            False
        ):
            self.executor.submit(self)

    def run_system_messages(self) -> None:
        """Run the system messages of a turn suspended on a handler task (the asyncio executor's wake)."""
        if self.awaiting is not None and self.sysq:
            try:
                self._process_system()
            except BaseException:  # noqa: BLE001 - the loop must survive anything
                self._internal_error(sys.exc_info(), None)

    def _internal_error(self, exc_info: OptExcInfo, until: pykka.Future[Any] | None) -> None:
        # A turn raised: troupe's own code failed (handlers' errors are all
        # caught where they are called). Nothing about this cell can be
        # trusted any more: the blocked asker hears of it, the log always does
        # (the error may reach no one else), and the actor is stopped.
        cause = exc_info[1]
        msg = f"troupe runtime error while running {self.ref}: {cause!r}; please report it, with this traceback"
        err = TroupeInternalError(msg)
        err.__cause__ = cause
        logger.opt(exception=err).critical("{}", msg)
        if until is not None:
            reply_exception(until, (TroupeInternalError, err, err.__traceback__))
        if self.reason is None:
            self.reason = err
        try:
            self.begin_stop()
        except BaseException:  # noqa: BLE001 - stopping failed too: it is logged, the thread goes on
            logger.opt(exception=True).critical("troupe could not stop {} after a runtime error", self.ref)

    def _start(self) -> bool:
        """Run on_start; return False if it is a coroutine the turn now waits for."""
        self.state = RUNNING
        self.hook("on_start", self.actor.on_start, self._started, cancellable=True)
        return self.awaiting is None

    def _started(self, exc: BaseException | None) -> None:
        if exc is not None and not isinstance(exc, asyncio.CancelledError):
            self.fail(exc_info_of(exc), during_start=True)

    def _process_system(self) -> None:
        sysq = self.system_queue()
        while sysq:
            sysq.pop(0)(self)

    def _process(self, limit: int, until: pykka.Future[Any] | None = None) -> int:
        """Handle up to `limit` user messages; return how many were taken from the queue."""
        box: Any = self.queue
        pop = box.popleft
        # A queue that is not a deque (an actor's `LazyFifo` until its second
        # message, the other mailbox kinds) is asked its length before each
        # pop: raising IndexError there at the end of a turn cost ~3 µs, most
        # of the turn of an actor asked once. A deque pays one local test.
        probe = box.__class__ is not deque
        # `LazyFifo.take`: its length and its head in one Python call, not two.
        take = box.take if box.__class__ is LazyFifo else None
        actor = self.actor
        start = limit
        kinds = KINDS
        # `self.sysq` read each round, not once: a system message posted
        # meanwhile stops the turn, and the list need not exist for that (made
        # here for the loop to hold, it was one more object per asked actor:
        # 56 B and one for the garbage collector to walk, of a million).
        while limit > 0 and not self.sysq:
            if probe:
                if take is not None:
                    item = take()
                    if item is NOTHING:
                        return start - limit
                elif not len(box):
                    return start - limit
                else:
                    try:
                        item = pop()
                    except IndexError:
                        return start - limit
            else:
                try:
                    item = pop()
                except IndexError:
                    return start - limit
            limit -= 1
            cls = item.__class__
            if cls is Asked and item.target is self:  # an ask (or a stop) to this actor: see `Asked`
                message = item.message
                reply_to = item
                item.target = item.message = None  # taken: from now on it is only a future
            elif cls is Envelope:
                message = item.message
                reply_to = item.reply_to
            else:
                message = item
                reply_to = None
            try:
                kind = kinds.get(message.__class__)
                if kind is None:
                    result = actor.on_receive(message)
                elif kind == PROXY:
                    result = handle_receive(actor, message)
                    if result.__class__ is CoroutineType:
                        _refuse_coroutine(self, result, message)
                elif kind == TRACED:  # sent with tracing on: handled under its trace context
                    traced = message
                    message = traced.message
                    proxy = kinds.get(message.__class__) == PROXY
                    # `run_traced` written out: a Python call less on every traced turn.
                    tracer = self.system.tracer
                    if tracer is not None:
                        result = tracer.process(self, actor, traced, proxy)
                    else:  # tracing was turned off while it was queued
                        result = handle_receive(actor, message) if proxy else actor.on_receive(message)
                    if proxy and result.__class__ is CoroutineType:
                        _refuse_coroutine(self, result, message)
                elif kind == STOP_MESSAGE:
                    self.begin_stop(reply_to, self_stop=message.__class__ is SelfStop)
                    return start - limit
                elif kind == TIMER:
                    if self._timers is None or not self._timers._accept(message):  # noqa: SLF001
                        continue
                    actor.on_receive(message.message)
                    continue
                else:  # Terminated: only while still watching (unwatch drops it)
                    if not self.still_watching(message):
                        continue
                    result = actor.on_receive(message)
            except Exception:  # noqa: BLE001
                if reply_to is not None and not isinstance(reply_to, Receipt):
                    if self.ask_failed(sys.exc_info(), message, reply_to) or reply_to is until:
                        return start - limit
                elif self.tell_failed(sys.exc_info(), message, reply_to):  # a tell (with a receipt or not)
                    return start - limit
            except BaseException:  # noqa: BLE001
                self.fatal(sys.exc_info())
                return start - limit
            else:
                if reply_to is not None:
                    reply_to.set(result)
                    if reply_to is until:
                        return start - limit
        return start - limit

    def tell_failed(self, exc_info: OptExcInfo, message: Any, receipt: pykka.Future[Any] | None) -> bool:
        """A tell's handler raised: the actor fails; a tell with a `Receipt` then says so.

        Unless the exception is one of the actor's `Actor.refusals` (and not a
        `TroupeInternalError`, a bug whatever the actor says): then it is a
        refused request, logged and dead-lettered (``REJECTED``), and the actor
        serves on. Return whether the actor failed.
        """
        exc = exc_info[1]
        if self.system.observer is not None:
            self.system.observer.handler_failed(self)
        refusals = self.actor.refusals if self.actor is not None else ()
        if refusals and isinstance(exc, refusals) and not isinstance(exc, TroupeInternalError):
            logger.opt(exception=exc_info).warning("{} rejected told message {!r}: {}", self.ref, message, exc)
            self.system.dead_letters.record(message, self.ref, DeadLetterReason.REJECTED, exc)
            if receipt is not None:
                reply_exception(receipt, exc_info)
            return False
        self.fail(exc_info, message)
        if receipt is not None:
            reply_exception(receipt, exc_info)
        return True

    def ask_failed(self, exc_info: OptExcInfo, message: Any, reply_to: pykka.Future[Any]) -> bool:
        """Give an ask's exception to its asker; return True if the actor failed too (its supervisor's policy)."""
        exc = exc_info[1]
        if exc is None:
            msg = f"the ask of {self.ref} failed without an exception"
            raise TroupeInternalError(msg)
        if self.system.observer is not None:
            self.system.observer.handler_failed(self)
        parent = self.parent
        if parent is not None and policy_of(parent.actor).fails_on_ask(exc):
            # Fail first, so the supervisor hears of it before the asker does.
            self.fail(exc_info, message)
            reply_exception(reply_to, exc_info)
            return True
        report(logging.INFO, f"Exception returned from {self.ref} to caller:", exc_info)
        reply_exception(reply_to, exc_info)
        return False

    def hook(
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
            self.fatal(sys.exc_info())
            done(None)
            return
        aio = self.aio
        if aio is not None and is_coroutine(result):
            aio.run_handler(result, None, None, Hook(name, done, cancellable=cancellable))
            return
        done(None)

    def deliver(self, driver: Any, value: Any, exc: BaseException | None) -> bool:
        """Deliver what a handler coroutine ended with (the executor's driver, in its task's last step).

        Return False if there is nothing to deliver to: the loop was lost (`AsyncioState.lose_loop`).
        """
        aio = self.aio
        if aio is None:
            return False
        aio.driver = driver
        try:
            aio.handler_done(driver.task, value, exc)
        finally:
            aio.driver = None
        return True

    def quiesce(self, then: Callable[[], None]) -> None:
        """Cancel the asyncio handlers and start hooks in flight; `then()` once every task has ended (or now)."""
        aio = self.aio
        if aio is None:
            then()
        else:
            aio.quiesce(then)

    # -- the asyncio executor's loop is lost ----------------------------------------

    def hand_over(self, old: Executor, new: Executor, exc: BaseException) -> bool:
        """Move to executor `new` to fail for good with `exc`, unless someone did already (`old`'s lock held).

        The first system message `new` runs is `AsyncioState.lose_loop`.
        """
        if self.executor is not old:
            return False
        aio = self.aio
        if aio is None:
            msg = f"{self.ref} lost an event loop it does not run on"
            raise TroupeInternalError(msg)

        def lose_loop(_cell: Cell) -> None:
            aio.lose_loop(exc)  # type: ignore[arg-type]  # an EventLoopError

        self.system_queue().insert(0, lose_loop)
        self.executor = new
        return True

    def lost_loop(self, exc: BaseException) -> None:
        """The cell's part of `AsyncioState.lose_loop`: what is queued dies, and so does the actor."""
        self.awaiting = None
        self.aio = None  # nothing can await any more
        pop = self.queue.popleft
        while True:
            try:
                item = pop()
            except IndexError:
                break
            message, reply_to = unwrap(item, self)
            if isinstance(message, ActorStop):
                if reply_to is not None:  # answered once the actor has terminated
                    self.stop_replies = [*(self.stop_replies or ()), reply_to]
            elif message.__class__ is not _TimerFired and message.__class__ is not Terminated:
                self.reject(item, DeadLetterReason.QUEUED_AT_STOP, exc)
        self.restart = None  # a restart could only land on the same dead loop
        if self.state < STOPPING:
            self.fail((type(exc), exc, None))

    # -- failure and supervision (the child's side) --------------------------------

    def fail(self, exc_info: OptExcInfo, message: Any = None, *, during_start: bool = False) -> None:
        """An exception escaped a tell handler or a start hook: the single failure entry point.

        Logs it, dead-letters the message, calls ``on_failure`` (not for a start
        hook), then either stops the actor (pykka semantics: a temporary child,
        the default) or suspends it and reports to its supervisor.
        """
        exc = exc_info[1]
        report(logging.ERROR, f"Unhandled exception in {self.ref}:", exc_info)
        audit = self.system.audit
        if audit.errors:
            audit.emit("errors", self.error_event("unhandled_exception", exc, message))
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
                report(logging.ERROR, f"Unhandled exception in on_failure of {self.ref}:", sys.exc_info())
        if supervised:
            self._report(exc)
            return
        self.reason = exc
        self.state = STOPPING
        self.stop_children(self.finish_stop)

    def error_event(self, event: str, exc: BaseException | None, message: Any = None) -> dict[str, object]:
        """Return the ``errors`` audit event of `exc` in this actor (its name, class and urn)."""
        ref = self.ref
        return {
            "event": event,
            "actor": self.name if self.name is not None else ref.actor_urn,
            "actor_class": ref.actor_class.__name__,
            "actor_urn": ref.actor_urn,
            "error_type": type(exc).__name__,
            "error": str(exc),
            "message_type": None if message is None else type(message).__name__,
        }

    def _report(self, exc: BaseException | None) -> None:
        """Suspend and ask the supervisor what to do (`exc` None: a permanent child exited)."""
        parent = self.parent
        if parent is None:
            msg = f"{self.ref} has no supervisor to report to"
            raise TroupeInternalError(msg)
        self.suspended = True
        incarnation = self.incarnation

        def child_failed(supervisor: Cell) -> None:
            supervisor.supervising().child_failed(self, exc, incarnation)

        parent.post_system(child_failed)

    def resume(self) -> None:
        """Go on after a failure, the same instance (the supervisor's RESUME, a system message)."""
        if self.state == RUNNING:
            self.failed = False
            self.suspended = False
            if self._supervising is not None:
                self._supervising.resumed()

    def supervising(self) -> Supervising:
        """Return this cell's side as a supervisor, created on first use."""
        if self._supervising is None:
            self._supervising = Supervising(self)
        return self._supervising

    # -- stopping --------------------------------------------------------------

    def fatal(self, exc_info: OptExcInfo) -> None:
        """A BaseException escaped a handler: stop this actor and every actor (as pykka)."""
        logger.opt(exception=exc_info).error(
            "{!r} in {}: stopping every actor of system {!r}", exc_info[1], self.ref, self.system.name
        )
        # pykka's record of it, where pykka code looks (loguru has the one above)
        to_pykka_logger(logging.DEBUG, f"{exc_info[1]!r} in {self.ref}. Stopping all actors.")
        self.begin_stop()
        self.system._stop_all_actors()  # noqa: SLF001

    def begin_stop(self, reply_to: pykka.Future[Any] | None = None, *, self_stop: bool = False) -> None:
        """Stop the actor (a stop message, `STOP`, a failure); `reply_to` is answered once it has terminated."""
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
        walk = self.children_stop
        if walk is None:
            self.stop_children(self.finish_stop)
        else:
            # A restart's teardown (or a supervisor giving up) is stopping the
            # children: finish stopping first, then let what waited go on.
            walk.finish_stop_first = True

    def stop_children(self, then: Callable[[], None]) -> None:
        """Stop every child, youngest first, one at a time; then call `then()` (in a later turn maybe)."""
        walk = self.children_stop
        if walk is None:
            if self.children is None and self.aio is None:
                # Never had a child, no handler task to cancel: nothing to walk
                # (the lock-free read of `children` is safe: see
                # `StopChildren.next_child`). A third of a pooled stop's cost.
                then()
                return
            walk = self.children_stop = StopChildren(self)
        walk.start(then)

    def finish_stop(self) -> None:
        """The children have stopped: run ``on_stop`` (unless the instance failed), then terminate."""
        self.cancel_timers()
        actor = self.actor
        if self.failed or actor is None or type(actor).on_stop is _NO_ON_STOP:
            # pykka's own on_stop does nothing: no hook to run (two bound
            # methods and three calls fewer per stop of an actor without one).
            self._terminate()
        else:
            self.hook("on_stop", actor.on_stop, self._stopped, cancellable=False)

    def _stopped(self, exc: BaseException | None) -> None:
        if exc is not None and not isinstance(exc, asyncio.CancelledError):
            report(logging.ERROR, f"Unhandled exception in {self.ref}:", exc_info_of(exc))
        self._terminate()

    def _mark_dead(self) -> None:
        if not self.alive:
            return
        self.alive = False
        if self._stopped_event is not None:
            self._stopped_event.set()
        if self.pykka_registered:
            ActorRegistry.unregister(self.ref)
        if pykka_logs(logging.DEBUG):  # formatting the ref would cost every stop ~1.5 µs
            to_pykka_logger(logging.DEBUG, f"Stopped {self.ref}")  # as pykka's `Actor._stop`

    def _terminate(self) -> None:
        self.release_held("stopped" if self.reason is None else f"failed ({self.reason!r})")
        self.executor = DRAIN
        self._drain()
        for reply_to in self.stop_replies or ():
            reply_to.set(True)
        self.stop_replies = None
        system = self.system
        tree_lock = system.tree_lock
        if not tree_lock.acquire(False):
            _acquire_contended(tree_lock)
        try:
            self.state = TERMINATED
            if self.parent is not None and self.parent.children is not None:
                self.parent.children.pop(self, None)
            if self.name is not None and system.registry.get(self.name) is self:
                del system.registry[self.name]
            watchers, self._watchers = self._watchers, None
            watched_by, self._watched_by = self._watched_by, None
        finally:
            tree_lock.release()
        for target in self._watching or ():
            if target.__class__ is Cell:
                target.forget_watcher(self)
            else:
                target.remove_on_terminated(self)
        self._watching = None
        if system.observer is not None:
            system.observer.retire(self)
        for callback in (watchers or {}).values():
            try:
                callback(self)
            except Exception:  # noqa: BLE001
                logger.opt(exception=True).error("Termination callback {!r} of {} failed", callback, self.ref)
        if watched_by is not None:
            for watcher in watched_by if watched_by.__class__ is dict else (watched_by,):
                watcher.watched_terminated(self)  # type: ignore[union-attr]

    def release_held(self, how: str) -> None:
        """The current instance has ended: let it refuse what it holds outside the mailbox (`refuse_held`).

        An actor that keeps asks or tells in its own state (a `Pool`'s
        admission queue, replies it answers later) defines
        ``refuse_held(error)``: fail every future it holds with `error` (an
        `ActorDeadError` saying `how` it ended) and dead-letter every tell.
        The cell calls it whatever ends the instance: a stop (after
        ``on_stop``), a failure or a supervisor giving up (``on_stop`` is
        skipped then), a shutdown, and a restart's teardown (`Restart`), once
        the children have stopped; in this cell's turn. It may be called
        twice for one instance (a teardown, then a stop before the rebuild):
        make it idempotent. What is queued in the mailbox is the cell's to
        dead-letter (`_drain`), futures carried in messages included (`CarriesReply`).
        """
        actor = self.actor
        refuse = getattr(actor, "refuse_held", None)
        if refuse is None:
            return
        error = ActorDeadError(f"{self.ref} {how} before handling the message")
        try:
            refuse(error)
        except Exception:  # noqa: BLE001 - the actor's bug: logged; the cell goes on ending
            logger.opt(exception=True).error("refuse_held of {} failed", self.ref)

    def _drain(self) -> None:
        queue = self.queue
        if not len(queue):  # the common case (twice per stop), without raising IndexError
            return
        pop = queue.popleft
        while True:
            try:
                item = pop()
            except IndexError:
                return
            message, reply_to = unwrap(item, self)
            if isinstance(message, ActorStop):
                if reply_to is not None:
                    reply_to.set(True)  # "was being stopped at the time of the call"
            elif message.__class__ is not _TimerFired and message.__class__ is not Terminated:
                self.reject(item, DeadLetterReason.QUEUED_AT_STOP)

    def take_mail(self) -> list[tuple[Any, pykka.Future[Any] | None]]:
        """Remove every queued message and return (message, reply future or None) for each, in mailbox order.

        For a handoff (a cluster migration ships the mail not yet handled to
        the actor's next home). The runtime's own items are left out: a
        timer's message (its timers end with this instance) and a
        `Terminated` (local death watch does not move).

        Thread contract: only the actor's own turn (a system message, a
        handler), as for any mailbox consumer.
        """
        taken: list[tuple[Any, pykka.Future[Any] | None]] = []
        pop = self.queue.popleft
        while True:
            try:
                item = pop()
            except IndexError:
                return taken
            message, reply_to = unwrap(item, self)
            if message.__class__ is not _TimerFired and message.__class__ is not Terminated:
                taken.append((message, reply_to))

    def reject(self, item: Any, reason: DeadLetterReason, exc: BaseException | None = None) -> None:
        """Record a mailbox item as a dead letter; an ask gets `exc` (default ActorDeadError)."""
        message, reply_to = unwrap(item, self)
        self.system.dead_letters.record(message, self.ref, reason, exc)
        if reply_to is not None:
            if exc is None:
                exc = ActorDeadError(f"{self.ref} stopped before handling the message")
            reply_exception(reply_to, (type(exc), exc, None))


_NO_ON_STOP = pykka.Actor.on_stop


def _acquire_contended(lock: Any) -> None:
    """Take `lock`, held by another thread: let the holder run first, and block only if it does not let go.

    The tree lock is held for a few operations at a time, so a thread finds
    it held only when its holder lost the GIL inside them. Blocking on it
    then (a futex sleep) convoys: the holder needs the GIL back, the woken
    thread the GIL again, and two dispatchers terminating 100,000 actors
    (`ActorRef.stop` of each, ``block=False``) made 10,000-36,000 context
    switches and 2-3x the CPU of one dispatcher doing it all (1.2-1.8 s
    against 0.8-0.9 s; with the lock made a no-op, 0.6-0.8 s). Sleeping 0
    seconds hands the GIL over, so the holder finishes and lets go.
    """
    for _ in range(_CONTENDED_YIELDS):
        _sleep(0)
        if lock.acquire(False):
            return
    lock.acquire()


_CONTENDED_YIELDS = 16
_sleep = time.sleep  # noqa: TID251 - sleep(0) hands the GIL over; it waits for nothing


def unwrap(item: Any, cell: Cell) -> tuple[Any, pykka.Future[Any] | None]:
    """Return (message, reply future or None) of an item taken from `cell`'s mailbox."""
    if item.__class__ is Envelope:
        message, reply_to = item.message, item.reply_to
    elif item.__class__ is Asked and item.target is cell:
        message, reply_to = item.message, item
    else:
        message, reply_to = item, None
    if message.__class__ is Traced:
        message = message.message
    return message, reply_to


def _refuse_coroutine(cell: Cell, coro: Any, message: Any) -> None:
    coro.close()  # never awaited: close it so Python does not warn about it
    name = ".".join(getattr(message, "attr_path", ())) or "a proxied method"
    msg = (
        f"{cell.ref}: {name} returned a coroutine, but the actor runs in a mode without an event loop; "
        "spawn it with mode='asyncio' to have coroutines awaited"
    )
    raise ModeError(msg)
