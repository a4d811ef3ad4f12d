"""Asyncio handler tasks: what an asyncio actor's cell keeps, and does, beside the common turn.

Asyncio cells (``cell.aio`` is set) add one thing, on the loop's thread only:
a handler (``on_receive``, a proxied method, a lifecycle hook) may return a
coroutine. The cell runs it as a task and the turn is *suspended*, not ended:
``cell.awaiting`` holds the task and `sched` stays held, so no other message
is handled meanwhile. The handler of the last message queued takes its
first step at once, in the turn, as that task (`AsyncioExecutor.step_now`):
one that ends without suspending is delivered there, a loop pass sooner;
one that suspends leaves the rest to its task. A task whose coroutine was
cancelled (or cancelled itself) is not given the turn's next one. When the coroutine ends, its task (`handler_done`, in
the task's last step) delivers the outcome exactly as the synchronous path
does (the reply future; the actor's failure for a tell; a hook's next step)
and carries on with the turn (``cell.run()``); a coroutine the rest of the
turn meets is driven by that same task, so a busy actor costs one task, not
one per message. A reentrant actor does not suspend for message handlers:
each runs in a task of its own, the turn goes on at once, and each outcome is
delivered when its task ends (through a system message, so that it runs
inside a turn).

System messages are not held up by a suspended turn: the executor runs them
between steps of the handler. Whatever stops the children (stopping, a
restart's teardown) first cancels the handlers in flight and waits for them
to end (`quiesce`). Only asyncio cells look at handler results (`process`,
the asyncio twin of ``Cell._process``), so the pooled and thread hot paths
pay one test per turn for all this.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sys
from collections.abc import Coroutine
from types import CoroutineType
from typing import TYPE_CHECKING, Any

from pykka import ActorDeadError

from actors._core._pykka import Envelope, handle_receive
from actors._core.deadletters import DeadLetterReason
from actors._core.executors import HandlerExit
from actors._core.future import Receipt
from actors._core.lifecycle import exc_info_of
from actors._core.logbridge import report
from actors._core.messages import KINDS, PROXY, STOP_MESSAGE, TIMER, TRACED, SelfStop
from actors._core.tracing import Traced, run_traced
from actors.errors import EventLoopError

if TYPE_CHECKING:
    from collections.abc import Callable

    import pykka

    from actors._core._pykka import OptExcInfo
    from actors._core.cell import Cell

__all__ = ["AsyncioState", "Hook", "is_coroutine", "reply", "reply_exception"]


def is_coroutine(value: Any) -> bool:
    """Return whether a handler's result is a coroutine to await."""
    return value.__class__ is CoroutineType or isinstance(value, Coroutine)


def reply(reply_to: pykka.Future[Any], value: Any) -> None:
    """Set an ask's reply, unless its asker gave up and its future was settled then."""
    try:  # noqa: SIM105 - contextlib.suppress would cost a context manager per reply
        reply_to.set(value)
    except queue.Full:
        pass  # the asker gave up and its future was settled then


def reply_exception(reply_to: pykka.Future[Any], exc_info: OptExcInfo) -> None:
    """Set an ask's exception, unless its future is already settled."""
    try:  # noqa: SIM105 - as in reply
        reply_to.set_exception(exc_info)
    except queue.Full:
        pass  # already settled (abandoned by its asker)


class Hook:
    """A lifecycle hook a task runs, and the step that comes after it."""

    __slots__ = ("cancellable", "done", "name")

    def __init__(self, name: str, done: Callable[[BaseException | None], None], *, cancellable: bool) -> None:
        self.name = name
        # Called once the hook has ended: with what it raised, or None.
        self.done = done
        # Start hooks are cancelled by a stop; teardown hooks (on_stop, pre_restart) are not.
        self.cancellable = cancellable


class _InFlight:
    """What a running handler task is handling."""

    __slots__ = ("abandoned", "hook", "message", "on_done", "reply_to")

    def __init__(self, message: Any, reply_to: pykka.Future[Any] | None, hook: Hook | None) -> None:
        self.message = message
        self.reply_to = reply_to
        self.hook = hook
        # Set when the asker gave up: what its future was told.
        self.abandoned: BaseException | None = None
        # Set by the metrics probe (actors._core.observe) to time the handler to its end;
        # called on the loop thread when the handler ends, however it ends.
        self.on_done: Callable[[], None] | None = None


class AsyncioState:
    """What an asyncio actor's cell keeps beside the common state, and the handler tasks' code.

    Thread contract: read and written only on the loop's thread (`loop`),
    except `loop`, `reentrant` and `cell`, which never change; `abandon`,
    which may be called from any thread; and `lose_loop`, which runs once the
    loop is gone, in a turn on the executor that took the cell over. Every
    method but `abandon` runs in a turn of `cell` (holding its `sched`) or in
    a handler task's last step (`handler_done`, through ``Cell.deliver``).
    """

    __slots__ = ("after_cancel", "cell", "driver", "handling", "loop", "reentrant")

    def __init__(self, cell: Cell, loop: asyncio.AbstractEventLoop, *, reentrant: bool) -> None:
        self.cell = cell
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

    # -- the turn ------------------------------------------------------------------

    def process(self, limit: int) -> None:
        """Handle up to `limit` user messages: ``Cell._process`` for asyncio cells (loop thread).

        A coroutine result runs as a task and suspends the turn (or,
        reentrant, runs beside it), and a reply future may already be settled
        by an asker that gave up. Kept apart so the pooled and thread hot path
        pays nothing for it (sharing one loop cost every pooled tell ~10 ns, ~5%).
        """
        cell = self.cell
        pop = cell.queue.popleft
        actor = cell.actor
        kinds = KINDS
        while limit > 0 and not cell.sysq:  # read each round: a system message posted meanwhile stops the turn
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
                    if message.__class__ is Traced:
                        message = message.message
                    cell.system.dead_letters.record(message, cell.ref, DeadLetterReason.ASK_ABANDONED)
                    continue
            else:
                message = item
                reply_to = None
            try:
                kind = kinds.get(message.__class__)
                if kind is None:
                    result = actor.on_receive(message)
                elif kind == PROXY:
                    result = handle_receive(actor, message)
                elif kind == STOP_MESSAGE:
                    cell.begin_stop(reply_to, self_stop=message.__class__ is SelfStop)
                    return
                elif kind == TIMER:
                    if not cell.timer_accepts(message):
                        continue
                    message = message.message
                    result = actor.on_receive(message)
                elif kind == TRACED:  # sent with tracing on (actors._core.tracing)
                    traced = message
                    message = traced.message
                    result = run_traced(cell, actor, traced, proxy=kinds.get(message.__class__) == PROXY)
                else:  # Terminated
                    if not cell.still_watching(message):
                        continue
                    result = actor.on_receive(message)
            except Exception:  # noqa: BLE001
                if reply_to is None or isinstance(reply_to, Receipt):
                    if cell.tell_failed(sys.exc_info(), message, reply_to):
                        return
                elif cell.ask_failed(sys.exc_info(), message, reply_to):
                    return
            except BaseException:  # noqa: BLE001
                cell.fatal(sys.exc_info())
                return
            else:
                if is_coroutine(result):
                    if self.run_handler(result, message, reply_to):
                        return
                elif reply_to is not None:
                    reply(reply_to, result)  # its asker may have given up meanwhile

    def run_handler(
        self, coro: Any, message: Any, reply_to: pykka.Future[Any] | None, hook: Hook | None = None
    ) -> bool:
        """Run a handler's coroutine as a task; return whether the turn is now suspended on it."""
        cell = self.cell
        driver = self.driver
        if (
            driver is not None
            and driver.next is None
            and (hook is not None or not self.reentrant)
            and not driver.task.cancelling()  # a cancel for the coroutine that ended would reach this one
        ):
            driver.next = coro  # the task that just finished a coroutine of this turn runs this one too
            task = driver.task
        else:
            executor = cell.executor
            task = executor.start_handler(cell, coro)  # type: ignore[attr-defined]  # an AsyncioExecutor
            if hook is None and not self.reentrant and not len(cell.queue):
                # The last message queued: its handler's first step runs now,
                # in this turn, and one that ends without suspending answers
                # without a loop pass. With more queued behind, the task runs
                # them all one after the other (no step of its own each: a
                # burst of 100,000 tells ran 1.5x slower stepped one by one).
                self.handling[task] = _InFlight(message, reply_to, None)
                cell.awaiting = task  # as when suspended: a handler awaiting its own actor is refused
                outcome = executor.step_now(task)  # type: ignore[attr-defined]
                if outcome is None:  # suspended: the task goes on with it
                    if cell.sysq:  # posted before `awaiting` was set: its poster did not wake us
                        cell.executor.wake(cell)
                    return True
                cell.awaiting = None
                value, exc = outcome
                self._finish_handler(task, value, exc)
                # The turn goes on, unless the handler raised (what that
                # started ends this turn; the next one sees it) or started a
                # hook's task.
                return exc is not None or cell.awaiting is not None
        self.handling[task] = _InFlight(message, reply_to, hook)
        if hook is None and self.reentrant:
            return False
        cell.awaiting = task
        if cell.sysq:  # posted before `awaiting` was set: its poster did not wake us
            cell.executor.wake(cell)
        return True

    # -- a handler task has ended ----------------------------------------------------

    def handler_done(self, task: asyncio.Task[Any], value: Any, exc: BaseException | None) -> None:
        """Deliver what a handler coroutine of `task` ended with (loop thread, in the task's last step).

        `exc` is what it raised (a `CancelledError` if it was cancelled), or
        None and `value` is what it returned.
        """
        cell = self.cell
        if cell.awaiting is task:
            # The suspended turn goes on: we hold `sched`.
            cell.awaiting = None
            self._finish_handler(task, value, exc)
            if cell.awaiting is None:
                cell.run()
        else:
            # A reentrant handler: deliver inside a turn of its own.
            cell.post_system(lambda _cell: self._finish_handler(task, value, exc))

    def _finish_handler(self, task: asyncio.Task[Any], value: Any, exc: BaseException | None) -> None:
        cell = self.cell
        if cell.aio is not self:  # the loop was lost meanwhile (`lose_loop`)
            return
        entry = self.handling.pop(task)
        if entry.on_done is not None:
            entry.on_done()
        if isinstance(exc, asyncio.CancelledError):
            if entry.hook is not None:
                entry.hook.done(exc)
            elif entry.abandoned is None and cell.is_running() and self.after_cancel is None:
                # Cancelled by someone else than troupe (the loop shutting down?): a failure.
                msg = f"the handler of {cell.ref} was cancelled, but not by troupe; was its event loop closed?"
                self._handler_raised(entry, EventLoopError(msg))
            else:
                self._handler_cancelled(entry)
        elif exc is not None:
            self._handler_raised(entry, exc)
        elif entry.hook is not None:
            entry.hook.done(None)
        elif entry.reply_to is not None:
            reply(entry.reply_to, value)
        if self.after_cancel is not None and not self.handling:
            then, self.after_cancel = self.after_cancel, None
            then()

    def _handler_cancelled(self, entry: _InFlight) -> None:
        cell = self.cell
        if entry.abandoned is not None:
            reason = DeadLetterReason.ASK_ABANDONED
            exc: BaseException = entry.abandoned
        else:
            reason = DeadLetterReason.STOPPED_WHILE_HANDLING
            what = "stopped" if cell.is_stopping() else "restarted"
            exc = ActorDeadError(f"{cell.ref} was {what} while handling the message; its handler was cancelled")
        cell.system.dead_letters.record(entry.message, cell.ref, reason, exc)
        if entry.reply_to is not None:
            reply_exception(entry.reply_to, (type(exc), exc, None))

    def _handler_raised(self, entry: _InFlight, exc: BaseException) -> None:
        cell = self.cell
        if isinstance(exc, HandlerExit):
            exc = exc.exception
        if not isinstance(exc, Exception):
            cell.fatal(exc_info_of(exc))
            if entry.hook is not None:
                entry.hook.done(None)
        elif entry.hook is not None:
            entry.hook.done(exc)
        elif entry.reply_to is not None and not isinstance(entry.reply_to, Receipt):
            cell.ask_failed(exc_info_of(exc), entry.message, entry.reply_to)
        elif cell.is_stopping() or cell.failed:
            # This instance is already on its way out (a reentrant handler that
            # ended after the failure that ends it): log it, once is enough.
            report(logging.ERROR, f"Unhandled exception in {cell.ref} as it was ending:", exc_info_of(exc))
            cell.system.dead_letters.record(entry.message, cell.ref, DeadLetterReason.HANDLER_FAILED, exc)
            if entry.reply_to is not None:
                reply_exception(entry.reply_to, exc_info_of(exc))
        else:
            cell.tell_failed(exc_info_of(exc), entry.message, entry.reply_to)

    # -- cancelling ------------------------------------------------------------------

    def quiesce(self, then: Callable[[], None]) -> None:
        """Cancel the message handlers and start hooks in flight; `then()` once every task has ended.

        Teardown hooks (on_stop, pre_restart) are not cancelled, only waited for.
        """
        if not self.handling:
            then()
            return
        previous = self.after_cancel
        if previous is None:
            self.after_cancel = then
        else:

            def both() -> None:
                previous()
                then()

            self.after_cancel = both
        for task, entry in self.handling.items():
            if entry.hook is None or entry.hook.cancellable:
                task.cancel(f"{self.cell.ref} is stopping or restarting")

    def abandon(self, reply_to: pykka.Future[Any], exc: BaseException) -> None:
        """Cancel the running handler of an ask whose asker gave up, if any (any thread).

        The reply future is already settled with `exc`; the cancellation runs on the loop.
        """
        with contextlib.suppress(RuntimeError):  # the loop has closed: nothing runs there any more
            self.loop.call_soon_threadsafe(self._cancel_abandoned, reply_to, exc)

    def _cancel_abandoned(self, reply_to: pykka.Future[Any], exc: BaseException) -> None:
        if self.cell.aio is not self:
            return
        for task, entry in self.handling.items():
            if entry.reply_to is reply_to:
                entry.abandoned = exc
                task.cancel(f"the asker of {self.cell.ref} gave up: {exc!r}")
                return

    def lose_loop(self, exc: EventLoopError) -> None:
        """The loop that ran this asyncio actor has closed: fail it for good (a system message).

        Its in-flight handlers died with the loop and what is queued can
        never be handled: their askers get `exc`. It is not restarted.
        """
        cell = self.cell
        for entry in self.handling.values():
            if entry.reply_to is not None:
                reply_exception(entry.reply_to, (type(exc), exc, None))
        self.handling.clear()
        after, self.after_cancel = self.after_cancel, None
        cell.lost_loop(exc)
        if after is not None:  # what waited for the dead handlers goes on
            after()
