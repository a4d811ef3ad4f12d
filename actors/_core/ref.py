"""`ActorRef`: pykka's actor reference, pointed at a cell instead of an instance.

Every attribute pykka documents on `pykka.ActorRef` is here, read from the
cell, so an address stays valid for as long as the cell lives: a supervisor
may replace the actor instance behind it and the ref, its proxies and the
mail waiting in its mailbox carry on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

import pykka
from pykka import ActorDeadError

from actors._core._pykka import ActorStop, Envelope
from actors._core.cell import constructing_instance
from actors._core.deadletters import DeadLetterReason
from actors._core.executors import DispatcherPool, ThreadExecutor, inline_depth
from actors._core.future import Asked, Future, Receipt
from actors._core.mailbox import LazyFifo
from actors._core.messages import KINDS, PROXY
from actors.errors import EventLoopError, TroupeError

if TYPE_CHECKING:
    from collections.abc import Callable

    from actors._core.cell import Cell
    from actors._core.system import ActorSystem

__all__ = ["ActorRef", "StoppedFlag", "count_tracing"]

# Nested inline asks allowed on one thread before asks go through the executor
# (each level is a few Python frames deep).
_MAX_INLINE = 32

A = TypeVar("A", bound=pykka.Actor)

# How many systems have a tracer (`count_tracing`). While 0, tell and ask pay
# one check of this global, a specialized LOAD_GLOBAL, and nothing else.
_tracing = 0


_kind_of = KINDS.get
"""``KINDS.get`` bound once (CPython 3.11 makes a bound method per call of a method of an imported name)."""


def count_tracing(delta: int) -> None:
    """A system's tracer was set (+1) or removed (-1): `ActorRef.tell` and ``ask`` look for tracers while any is."""
    global _tracing  # noqa: PLW0603 - the hot path's flag, a module global for speed
    _tracing += delta


def trace_message(cell: Cell, message: Any) -> Any:
    """Return `message` as `cell`'s system's tracer wraps it for sending (as ``ActorRef.tell`` does), or as it is.

    For a service that puts mail straight into a cell's queue, behind ``if TRACING:``, and for
    the ref's own less travelled paths (``tell`` and ``ask`` write it out); any thread.
    """
    tracer = cell.system.tracer
    if tracer is None or _kind_of(message.__class__, PROXY) != PROXY:
        return message
    return tracer.send(cell, message)


_ACTOR_STOP = ActorStop()
"""The one stop message every `ActorRef.stop` sends: an empty, immutable tuple (one allocation less per stop)."""


def _append_stop(queue: Any, item: Any) -> None:
    """Queue a stop; a mailbox still without its deque holds it without making one (`LazyFifo.append_stop`)."""
    if queue.__class__ is LazyFifo:
        queue.append_stop(item)
    else:
        queue.append(item)


class StoppedFlag:
    """The ``actor_stopped`` attribute: a read-mostly view with `threading.Event`'s interface.

    pykka gives every actor a `threading.Event`; a Condition and a lock per
    actor is the largest part of an idle pykka actor's footprint, so troupe
    creates the event only if somebody waits on it.
    """

    __slots__ = ("_cell",)

    def __init__(self, cell: Cell) -> None:
        self._cell = cell

    def is_set(self) -> bool:
        """Return whether the actor has stopped (or is stopping)."""
        return not self._cell.alive

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the actor stops, or `timeout` seconds pass; return `is_set()`."""
        return self._cell.stopped_event().wait(timeout)

    def set(self) -> None:
        """Refuse: an actor is stopped with `stop()`, not by setting its flag."""
        msg = "actor_stopped cannot be set directly in troupe; call actor.stop() or ref.stop()"
        raise TypeError(msg)


class ActorRef(pykka.ActorRef[A]):
    """A reference to an actor that may safely be passed around (see `pykka.ActorRef`).

    Thread contract: every method may be called from any thread. Messages
    sent from one thread to one actor arrive in the order they were sent.

    From a coroutine, ``await ref.ask(msg, block=False)`` (and ``await
    proxy.method()``) suspends only that coroutine, whatever the actor's mode.
    A blocking `ask` or `stop` on the thread running the loop of the asyncio
    actor it addresses raises `EventLoopError` instead of deadlocking.
    """

    __slots__ = ("_cell",)

    def __init__(self, cell: Cell) -> None:
        self._cell = cell

    @property
    def actor_class(self) -> type[A]:  # type: ignore[override]
        """The class of the referenced actor."""
        return self._cell.actor_class  # type: ignore[return-value]

    @property
    def actor_urn(self) -> str:  # type: ignore[override]
        """The actor's URN, unique across systems and processes."""
        return self._cell.urn

    @property
    def actor_inbox(self) -> Cell:  # type: ignore[override]
        """The actor's inbox (its cell)."""
        return self._cell

    @property
    def actor_stopped(self) -> StoppedFlag:  # type: ignore[override]
        """A `threading.Event`-like flag, set once the actor stops."""
        return StoppedFlag(self._cell)

    @property
    def actor_name(self) -> str | None:
        """The name the actor was spawned with, or None."""
        return self._cell.name

    @property
    def actor_system(self) -> ActorSystem:
        """The system the actor lives in."""
        return self._cell.system

    @property
    def _actor_weakref(self) -> Callable[[], A | None]:  # type: ignore[override]
        # pykka's ActorProxy reads the instance through this; resolving it on
        # every call follows the cell to the current instance.
        # During the instance's own ``__init__`` (a proxy taken there), the
        # instance under construction.
        cell = self._cell

        def current() -> A | None:
            newborn = constructing_instance(cell)
            return cell.actor if newborn is None else newborn  # type: ignore[no-any-return]

        return current

    def __str__(self) -> str:
        cell = self._cell
        named = f" {cell.name!r}" if cell.name is not None else ""
        return f"{cell.actor_class.__name__}{named} ({cell.urn})"

    def is_alive(self) -> bool:
        """Return whether the actor is alive (it may still stop at any moment, as in pykka)."""
        return self._cell.alive

    def tell(self, message: Any) -> None:
        """Send `message` without waiting for a reply.

        Raises:
            ActorDeadError: the actor has stopped; the message is a dead letter.
            MailboxFullError: a bounded mailbox with policy ``"fail"`` is full.
        """
        # The measured hot path (benchmarks/runtime.py, tell): `Cell.put`
        # inlined, touching the cell's `alive`, `queue`, `sched` and
        # `executor` directly, as `RouterRef.tell` does; calling `put` instead
        # is one more Python call per message, and each is ~8% of a pinned
        # pooled tell (measured for RouterRef.tell, actors/routing/router.py).
        cell = self._cell
        if not cell.alive:
            self._dead(message)
        if _tracing and (tracer := cell.system.tracer) is not None and _kind_of(message.__class__, PROXY) == PROXY:
            message = tracer.send(cell, message)  # `trace_message` written out: a Python call less
        cell.queue.append(message)
        if cell.sched.acquire(False):
            cell.executor.submit(cell)

    def ask(self, message: Any, *, block: bool = True, timeout: float | None = None) -> Any:
        """Send `message` and wait for the reply, or return a future with ``block=False``.

        As in pykka, an error in getting the message to the actor (it has
        stopped, its bounded mailbox refused it) is set on the future.

        Asyncio actors: on a `timeout` the ask is abandoned: the message is
        skipped if it is still queued, its handler cancelled if it is running
        (the same happens when a coroutine awaiting the future is cancelled).

        Raises:
            pykka.Timeout: with `block`, no reply within `timeout` seconds.
            EventLoopError: with `block`, called on the thread running the
                loop of the asyncio actor it addresses (await it instead).
            Exception: with `block`, whatever the actor raised.
        """
        cell = self._cell
        if cell.aio is None:
            # Pooled and thread mode: the reply future is the mailbox item
            # (`Asked`, no envelope). Its `Cell.put` is inlined, as in `tell`.
            future: Future[Any] = Asked(message, cell, self)
            try:
                if not cell.alive:
                    self._dead(message)
                if (
                    _tracing  # as in `tell`
                    and (tracer := cell.system.tracer) is not None
                    and _kind_of(message.__class__, PROXY) == PROXY
                ):
                    future.message = tracer.send(cell, message)  # type: ignore[attr-defined]
                cell.queue.append(future)
                if block and timeout is None and cell.executor is cell.system.inline_executor:
                    if inline_depth() < _MAX_INLINE:
                        # Inline ask: the asker would only sleep until a
                        # dispatcher thread woke up, ran the handler and woke
                        # it again. If the actor is idle, the asking thread
                        # runs the turn itself: the same one-at-a-time,
                        # in-order handling, without two thread wake-ups (most
                        # of a 25 µs cross-thread ask here). Only without a
                        # timeout, since a running handler cannot be
                        # abandoned. The hot path: `sched` taken here, as in
                        # `tell`, and the turn run.
                        if cell.sched.acquire(False):
                            cell.run(future)
                    elif cell.sched.acquire(False):
                        cell.executor.submit(cell)
                elif cell.sched.acquire(False):
                    cell.executor.submit(cell)
            except (ActorDeadError, TroupeError):
                future.set_exception()
            if block:
                if timeout is not None and type(executor := cell.executor) is DispatcherPool:
                    executor.settle(future)
                return future.get(timeout=timeout)
            return future
        future = Future()
        future._label = self  # noqa: SLF001 - formatted only on Timeout
        try:
            if not cell.alive:
                self._dead(message)
            self._refuse_blocking_on_loop(block=block, what="ask")
            future._cell = cell  # noqa: SLF001 - it replies from its loop
            cell.put(Envelope(trace_message(cell, message) if _tracing else message, reply_to=future))
        except (ActorDeadError, TroupeError):
            future.set_exception()
        if block:
            if timeout is not None:
                return self._get_or_abandon(future, timeout)
            return future.get(timeout=timeout)
        return future

    def _post_ask(self, message: Any, future: Future[Any], *, inline: bool) -> None:
        """Deliver an ask whose reply goes into `future`; errors in getting there are set on it.

        The body of `ask` without making the future or waiting on it: the seam
        routers use to forward an ask, future and all, to a routee (and that a
        `RouterRef` overrides to route). `ask` keeps its own copy because one
        more Python call is ~5% of an inline ask (2.81 -> 2.96 µs, pinned).
        With `inline`, an idle pooled actor may run the handler on this thread.
        """
        cell = self._cell
        try:
            if not cell.alive:
                self._dead(message)
            envelope = Envelope(trace_message(cell, message) if _tracing else message, reply_to=future)
            if inline and cell.executor is cell.system.inline_executor and inline_depth() < _MAX_INLINE:
                cell.queue.append(envelope)  # an inline ask, as in `ask`
                if cell.sched.acquire(False):
                    cell.run(future)
            else:
                if cell.aio is not None:
                    future._cell = cell  # noqa: SLF001 - it replies from its loop (as in `ask`)
                cell.put(envelope)
        except (ActorDeadError, TroupeError):
            future.set_exception()

    def _post_tell(self, message: Any, receipt: Receipt[Any]) -> None:
        """Deliver a tell whose sender wants to know when it has been handled.

        `receipt` is set when the handler returns (to its result) or raises
        (to the error, which still fails the actor as any tell's would), or
        when the message becomes a dead letter. Raises as `tell` does.
        """
        cell = self._cell
        if not cell.alive:
            self._dead(message)
        cell.put(Envelope(trace_message(cell, message) if _tracing else message, reply_to=receipt))

    def _get_or_abandon(self, future: Future[Any], timeout: float) -> Any:
        try:
            return future.get(timeout=timeout)
        except pykka.Timeout as exc:
            timed_out = pykka.Timeout(f"{exc}. The ask was abandoned: its handler is cancelled, or skipped if queued")
            if not self._cell.abandon(future, timed_out):
                return future.get()  # the reply came in the meantime
            raise timed_out from None

    def _refuse_blocking_on_loop(self, *, block: bool, what: str) -> None:
        if block and self._cell.on_own_loop():
            msg = (
                f"a blocking {what}() of {self} on the thread of the event loop it runs on would deadlock "
                f"(the loop cannot run the actor while it waits); from a coroutine, "
                f"use `await ref.{what}(..., block=False)`"
            )
            raise EventLoopError(msg)

    def stop(self, *, block: bool = True, timeout: float | None = None) -> Any:
        """Ask the actor to stop after the messages already sent (pykka's `ActorRef.stop`).

        Returns True if the actor stopped or was stopping at the time of the
        call, False if it was already dead; with ``block=False``, a future of
        that. The reply comes once the actor has terminated (its children
        first, then its ``on_stop``).

        A blocking stop without a timeout of an idle pooled actor runs its
        turn on the calling thread, as a blocking ask does (see `ask`): the
        messages sent before, then the stop and ``on_stop``, one at a time
        and in order as always; children on other threads stop on theirs.

        An asyncio actor's handler in flight is one of the messages sent
        before: it finishes first (a reentrant actor's running handlers are
        cancelled when the stop is reached). Stops that do not wait their
        turn (a parent stopping, `ActorSystem.shutdown`, a failure) cancel
        the handler in flight.

        Raises:
            EventLoopError: with `block`, called on the thread running the
                loop of the asyncio actor it addresses (await it instead).
        """
        cell = self._cell
        future: Future[bool]
        envelope: Any
        if cell.aio is None:
            # The reply future is the mailbox item, as an ask's (`Asked`).
            future = envelope = Asked(_ACTOR_STOP, cell, self)
        else:
            self._refuse_blocking_on_loop(block=block, what="stop")
            future = Future()
            future._label = self  # noqa: SLF001
            envelope = Envelope(_ACTOR_STOP, reply_to=future)
        if not cell.alive:
            future.set(False)
        else:
            try:
                if (
                    block
                    and timeout is None
                    and cell.executor is cell.system.inline_executor
                    and inline_depth() < _MAX_INLINE
                ):
                    # An inline stop, as an inline ask: an idle pooled actor
                    # is stopped by its turn run on this thread (the messages
                    # sent before first), without waking a dispatcher and
                    # then this thread again: a blocking stop of 100,000
                    # pooled actors one at a time cost ~20 us each that way.
                    _append_stop(cell.queue, envelope)
                    if cell.sched.acquire(False):
                        cell.run(future)
                else:
                    _append_stop(cell.queue, envelope)
                    if cell.sched.acquire(False):
                        executor = cell.executor
                        if isinstance(executor, ThreadExecutor):
                            # An idle actor thread is woken through the
                            # system's pacer: a burst of stops wakes them
                            # a few at a time (see `StopPacer`).
                            executor.submit_stop(cell)
                        else:
                            executor.submit(cell)
            except TroupeError:
                future.set_exception()
        if block:
            return future.get(timeout=timeout)
        return future

    def _dead(self, message: Any) -> None:
        if not isinstance(message, ActorStop):  # stop() on a dead actor is no dead letter
            self._cell.system.dead_letters.record(message, self, DeadLetterReason.RECIPIENT_STOPPED)
        # pykka's exact text; the help rides along as a note (PEP 678): it
        # shows in tracebacks without changing str() that pykka code matches.
        msg = f"{self} not found"
        err = ActorDeadError(msg)
        err.add_note("it has stopped; the message went to dead letters (system.dead_letters)")
        raise err
