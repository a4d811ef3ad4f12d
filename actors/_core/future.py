"""The future every troupe actor returns from `ask` and proxy calls.

`Future` is a `pykka.Future`: `get(timeout=)`, `set`, `set_exception`,
`set_get_hook`, `map`, `filter`, `join`, `reduce` and `pykka.get_all` behave
as pykka documents them. Two things differ from `pykka.ThreadingFuture`:

- waiting is a single `_thread.lock`, made locked by the first `get()` that
  has to wait and released by `set()`: no `threading.Condition` per future (a
  Condition allocates a lock per waiter and runs in Python; the lock is C
  and is ~4x cheaper per ask), and none at all for a future set before
  anyone waits (an inline ask, a reply collected later);
- `await future` inside a coroutine suspends only that coroutine: the value
  is handed to the event loop with `call_soon_threadsafe` (pykka's own
  `__await__` blocks the loop, pykka issue #99). Futures derived with `map`,
  `filter`, `join` and `reduce` remember their sources, so awaiting them
  waits for those sources the same way: no thread is used. Awaiting an
  actor's reply from a loop with nothing else ready spins briefly first
  (`_spin_for_reply`): a reply from another thread within the spin costs
  no loop wake-up.

A reply that an asyncio actor will produce knows that actor's cell, which
lets two mistakes fail clearly instead of hanging (a blocking `get()` on the
very loop that must produce the value; a handler awaiting a reply from its
own actor) and lets a cancelled awaiter cancel the handler it waits for.

Like pykka's futures, it does not copy the value it carries: send immutable
values across actors.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import queue
import sys
import threading
import weakref
from _thread import allocate_lock
from asyncio import _get_running_loop
from collections import deque
from typing import TYPE_CHECKING, Any, TypeVar, cast

import pykka
from loguru import logger

from actors._core._pykka import Unset
from actors.errors import EventLoopError

if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Iterable

    from actors._core._pykka import OptExcInfo
    from actors._core.cell import Cell

__all__ = ["Asked", "Future", "Receipt"]

T = TypeVar("T")
M = TypeVar("M")

_UNSET = Unset()


class Future(pykka.Future[T]):
    """A value that an actor will provide, waitable from threads and coroutines.

    Thread contract: any number of threads may wait in `get()` and any number
    of coroutines (on any loops) may await it; exactly one party sets it.
    Done-callbacks run on the thread that sets the future.

    Awaiting: the awaiting coroutine is resumed on its own loop. If it is
    cancelled while it waits for a reply from an asyncio actor, that ask is
    abandoned: the message is skipped if still queued, its handler cancelled
    if running (as asyncio cancels the future a cancelled task awaits; wrap
    the future in `asyncio.shield` to keep the handler running).
    """

    # pykka.Future reads these; class-level defaults save two allocations per ask.
    _get_hook = None
    _get_hook_result: Any = _UNSET
    # The futures a derived future (map/filter/join/reduce) computes from.
    _sources: tuple[pykka.Future[Any], ...] | None = None
    # The asyncio cell that will set this future (its reply), or None.
    _cell: Cell | None = None
    # True while an awaiting task on another thread spins for this reply
    # (`_spin_for_reply`): its setter then yields the CPU and the GIL at once.
    _spun = False

    __slots__ = ("_callbacks", "_done", "_exc_info", "_label", "_value", "_waiter")

    def __init__(self) -> None:
        # Invariant: None until a getter has to wait (`_make_waiter`), then a
        # lock, made held and never replaced, released once by the setter (or
        # `set_get_hook`); a getter acquires and at once releases it, so every
        # waiter is woken in turn. Made lazily: a lock per future was one
        # more object for the garbage collector per reply still held (a
        # million of them after asking a million actors), and its allocation
        # and acquire ~0.1 µs of every ask.
        self._waiter: Any = None
        self._done = False
        self._value: Any = None
        self._exc_info: OptExcInfo | None = None
        self._callbacks: list[Callable[[Future[T]], None]] | None = None
        # What this future waits for: the ref asked (`ActorRef.ask`, ``stop``),
        # formatted only for the Timeout message ("reply from ..."), and read
        # by an awaiting task to warm the executor that replies (`_spin_for_reply`).
        self._label: Any = None

    def __repr__(self) -> str:
        state = "done" if self._done else "pending"
        return f"<actors.Future {state}{f' for {self._label}' if self._label else ''}>"

    def done(self) -> bool:
        """Return whether a value or an exception has been set."""
        return self._done

    def get(self, *, timeout: float | None = None) -> T:
        """Return the value, waiting up to `timeout` seconds; raise it if it is an exception.

        Raises:
            pykka.Timeout: no value arrived within `timeout` seconds.
        """
        if not self._done and self._get_hook is None:
            if self._cell is not None:
                self._refuse_blocking_on_loop()
            waiter = self._waiter
            if waiter is None:
                waiter = self._make_waiter()
            # Read again now that the waiter is in place: a setter writes
            # `_done` before it reads `_waiter` (`_settle`), so either it
            # releases this waiter or this read sees it done.
            if not self._done and self._get_hook is None:
                if not waiter.acquire(True, -1 if timeout is None else max(timeout, 0.0)):
                    what = f"a reply from {self._label}" if self._label else "a value"
                    msg = (
                        f"waited {timeout} seconds for {what} and got none; "
                        "the actor may be busy or blocked: raise the timeout or check what it is doing"
                    )
                    raise pykka.Timeout(msg)
                waiter.release()
        if self._get_hook is not None:
            return super().get(timeout=timeout)
        exc_info = self._exc_info
        if exc_info is not None:
            _, exc_value, traceback = exc_info
            raise exc_value.with_traceback(traceback)  # type: ignore[union-attr]  # set_exception stores an exception
        return self._value  # type: ignore[no-any-return]

    def _make_waiter(self) -> Any:
        """Return the lock getters wait on, made held by the first of them (under `_waiter_lock`)."""
        with _waiter_lock:
            waiter = self._waiter
            if waiter is None:
                waiter = allocate_lock()
                waiter.acquire()
                self._waiter = waiter
        return waiter

    def set(self, value: Any = None) -> None:
        """Set the value and wake every waiter.

        Raises:
            queue.Full: the future was already set or has a get hook (as pykka).
        """
        if self._cell is not None:  # a reply its asker may abandon: settled under a lock
            with _contested_lock:
                if self._done or self._get_hook is not None:
                    raise queue.Full
                self._value = value
                self._done = True  # the race is decided: the waking is done outside the lock
            self._settle()
            if self._spun:
                _yield()  # the asker spins: let it run now (see `_spin_for_reply`)
            return
        if self._done or self._get_hook is not None:
            raise queue.Full
        self._value = value
        self._settle()  # a seam: subclasses (the routing table's tracked futures) extend it

    def set_exception(self, exc_info: OptExcInfo | None = None) -> None:
        """Set an exception (default: the one being handled) and wake every waiter.

        Raises:
            queue.Full: the future was already set or has a get hook (as pykka).
        """
        if exc_info is None:
            exc_info = sys.exc_info()
        assert len(exc_info) == 3  # noqa: S101, PLR2004 - pykka's own check of the argument, kept as pykka has it
        exc_type, exc_value, traceback = exc_info
        if exc_value is None:
            assert exc_type is not None  # noqa: S101 - as pykka: an exc_info without a value has a type
            exc_value = exc_type()
        if self._cell is not None:  # as in `set`
            with _contested_lock:
                if self._done or self._get_hook is not None:
                    raise queue.Full
                self._exc_info = (exc_type, exc_value, traceback)
                self._done = True
            self._settle()
            if self._spun:
                _yield()  # as in `set`
            return
        if self._done or self._get_hook is not None:
            raise queue.Full
        self._exc_info = (exc_type, exc_value, traceback)
        self._settle()

    def set_get_hook(self, func: Callable[[float | None], T]) -> None:
        """Compute the value by calling `func(timeout)` on `get()` (as pykka)."""
        if self._done or self._get_hook is not None:
            raise queue.Full
        super().set_get_hook(func)
        waiter = self._waiter  # read after the hook is in place, as `_settle` reads it after `_done`
        if waiter is not None:
            try:
                waiter.release()
            except RuntimeError:
                raise queue.Full from None

    def map(self, func: Callable[[T], M]) -> Future[M]:
        """Return a future of `func(value)`, computed on get (as pykka); awaitable without a thread."""
        return _derived(super().map(func), (self,))

    def filter(self, func: Callable[[Any], bool]) -> Future[Iterable[Any]]:
        """Return a future of the items of the value for which `func` is true (as pykka)."""
        return _derived(super().filter(func), (self,))  # type: ignore[misc]  # pykka types self as iterable

    def join(self, *futures: pykka.Future[Any]) -> Future[Iterable[Any]]:
        """Return a future of the list of this future's value and those of `futures` (as pykka)."""
        return _derived(super().join(*futures), (self, *futures))

    def reduce(self, func: Callable[[Any, Any], Any], *args: Any) -> Future[Any]:
        """Return a future of `functools.reduce(func, value, *args)` (as pykka)."""
        return _derived(super().reduce(func, *args), (self,))  # type: ignore[misc]  # pykka types self as iterable

    def add_done_callback(self, fn: Callable[[Future[T]], None]) -> None:
        """Call `fn(self)` once the future is set; at once if it already is.

        The callback runs on the thread that sets the future. An exception from
        it is logged, never raised into the setter.

        Raises:
            TypeError: `fn` is a coroutine function: nothing would await it.
        """
        if asyncio.iscoroutinefunction(fn):
            msg = (
                f"add_done_callback() needs a plain function, got coroutine function {fn!r}: "
                "it would be called on the setter's thread and never awaited; await the future instead"
            )
            raise TypeError(msg)
        self._add_done_callback(fn)

    def _add_done_callback(self, fn: Callable[[Future[T]], None]) -> None:
        with _callbacks_lock:
            if not self._done:
                if self._callbacks is None:
                    self._callbacks = []
                self._callbacks.append(fn)
                return
        _call(fn, self)

    def _settle(self) -> None:
        # `_done` first, then `_waiter`: see `get`. Under the GIL the two
        # orders pair up, so a getter never waits on a lock nobody releases.
        self._done = True
        waiter = self._waiter
        if waiter is not None:
            try:
                waiter.release()
            except RuntimeError:
                # Two parties raced to set the same future; the first one won.
                raise queue.Full from None
        if self._callbacks is not None:
            with _callbacks_lock:
                callbacks, self._callbacks = self._callbacks, None
            for fn in callbacks or ():
                _call(fn, self)

    def __await__(self) -> Generator[Any, None, T]:
        if self._done:
            return self.get()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            # Not inside a running loop (e.g. a plain generator-based driver):
            # behave as pykka does.
            yield
            return self.get()
        if self._get_hook is None:
            self._refuse_awaiting_own_reply()
            if self._label is not None and _spin_for_reply(self, loop):
                return self.get()
            leaves = [self]
        else:
            # A derived future: wait for the futures it is computed from, then
            # compute it here. A hook of unknown sources runs on a thread.
            leaves = []
            if not _collect_leaves(self, leaves):
                return (yield from _get_on_a_thread(self, loop))
        try:
            for leaf in leaves:
                if not leaf._done:  # noqa: SLF001
                    yield from leaf._wait(loop)  # noqa: SLF001
        except asyncio.CancelledError:
            for leaf in leaves:
                cell = leaf._cell  # noqa: SLF001
                if cell is not None and not leaf._done:  # noqa: SLF001
                    cell.abandon(leaf, asyncio.CancelledError("the coroutine awaiting this reply was cancelled"))
            raise
        return self.get()

    def _wait(self, loop: asyncio.AbstractEventLoop) -> Generator[Any, None, None]:
        waiter = _Waiter(loop)
        self._add_done_callback(waiter.on_set)
        if not waiter.done():  # set meanwhile on this thread: nothing to wait for
            waiter._asyncio_future_blocking = True  # noqa: SLF001 - asyncio's protocol for future-likes
            yield waiter
        waiter.result()  # raises CancelledError if the task was cancelled

    def _refuse_blocking_on_loop(self) -> None:
        cell = self._cell
        if cell is not None and cell.on_own_loop():
            msg = (
                f"a blocking wait for a reply from {self._label} on the thread of the event loop that must "
                "produce that reply would deadlock; from a coroutine, await it instead: "
                "`await ref.ask(msg, block=False)`, `await proxy.method()`, `await ref.stop(block=False)`"
            )
            raise EventLoopError(msg)

    def _refuse_awaiting_own_reply(self) -> None:
        cell = self._cell
        if cell is not None and cell.suspended_on(asyncio.current_task()):
            msg = (
                f"a handler of {self._label} awaits a reply from its own actor, which only handles the message "
                "once this handler returns (deadlock); call the method directly, or set `reentrant = True` "
                "on the actor class"
            )
            raise EventLoopError(msg)

    __iter__ = __await__


def _spin_for_reply(future: Future[Any], loop: asyncio.AbstractEventLoop) -> bool:
    """Spin briefly for an actor's reply before the awaiting task suspends; return whether it came (loop thread).

    What bounds an awaited ask from another thread is waking threads, not
    Python: a reply set on another thread wakes this loop through its
    self-pipe (``call_soon_threadsafe``: a socket write, the loop's epoll
    returning, a read), and while that other thread runs Python this one
    sleeps on the GIL and must be woken again (each wake-up ~8-10 µs
    here, measured with timestamps on both threads). When this loop has
    nothing else ready, the task spins instead, yielding the CPU (and
    the GIL) each round, and warms the executor that will reply (a
    dispatcher pool's listener: see `DispatcherPool.warm`), so that it
    too spins for the next ask rather than parks: measured, awaited asks
    from a coroutine went 1.2-1.4x -> 0.35x pykka's blocking ask to a
    pooled actor, 0.75x to a thread actor.

    An asyncio actor's reply (a future with a `_cell`) marked as spun for
    is followed at once by a yield on the loop thread that set it
    (`Future.set`): without it the loop thread went on holding the GIL
    to the end of its turn and its next loop pass, and the asker, asleep
    in CPython's GIL wait, was woken only at the loop's next GIL release
    (its spin or epoll), ~6 µs after the reply (timestamps on both
    threads); with it the asker runs first, usually on the CPU it just
    woke on. Measured interleaved with pykka's blocking ask in one
    process (benchmarks/asyncio_mode.py, coro_ask_vs_pykka, unpinned):
    0.87-1.03x -> 0.55-0.64x. The asyncio loop itself no longer spins
    before it blocks (it did, warmed by such an asker): with this yield
    the asker's next ask mostly came before the loop got to block, and
    the spin, ~200 times in 22,000 asks, ran thousands of times in the
    runs that went bad (1.5-1.8x: sched_yield spinners lose their CPU to
    other processes on a loaded machine); without it 0.39-0.57x in 21
    runs, 0.48-0.69x and two such outliers in 24 with it.

    Not for a reply this very loop must produce (an asyncio actor on it),
    nor while callbacks wait on this loop (a spin stops when one is
    queued, and never runs on a loop without a ``_ready`` queue, such
    as uvloop). The budget adapts as the dispatchers' does: halved when
    the reply did not come within it, doubled when it did, so a slow
    actor soon costs an awaiting task ~8 yields.
    """
    global _await_spin  # noqa: PLW0603 - the adaptive budget, racy by design (a hint)
    cell = future._cell  # noqa: SLF001
    if cell is not None and cell.on_own_loop():
        return False
    ready = getattr(loop, "_ready", None)  # asyncio's BaseEventLoop: the callbacks due this pass
    if ready is None or ready:
        return False
    executor = getattr(getattr(future._label, "_cell", None), "executor", None)  # noqa: SLF001 - the ref asked
    warm = getattr(executor, "warm", None)
    if warm is not None:
        warm()
    budget = _await_spin
    future._spun = True  # noqa: SLF001
    for _ in range(budget):
        _yield()
        if future._done:  # noqa: SLF001
            if budget < _SPIN_MAX:
                _await_spin = budget * 2
            return True
        if ready:
            future._spun = False  # noqa: SLF001
            return False
    future._spun = False  # noqa: SLF001 - the task suspends: its reply wakes it through the loop
    if budget > _SPIN_MIN:
        _await_spin = budget // 2
    return False


_SPIN_MAX = 256
"""Most ``sched_yield`` rounds an awaiting task spins for a reply (as `actors._core.executors` spins)."""
_SPIN_MIN = 8
_await_spin = _SPIN_MAX
_yield = os.sched_yield


def _derived(future: pykka.Future[Any], sources: tuple[pykka.Future[Any], ...]) -> Future[Any]:
    # pykka's map/filter/join/reduce build `self.__class__()`: one of ours.
    derived = cast("Future[Any]", future)
    derived._sources = sources  # noqa: SLF001
    return derived


def _collect_leaves(future: pykka.Future[Any], leaves: list[Future[Any]]) -> bool:
    """Add to `leaves` the plain futures `future` is computed from; False if some are unknown."""
    if not isinstance(future, Future):
        return False  # a foreign future: no way to be told when it is set
    if future._get_hook is None:  # noqa: SLF001
        leaves.append(future)
        return True
    if not isinstance(future._get_hook_result, Unset):  # noqa: SLF001
        return True  # computed already
    sources = future._sources  # noqa: SLF001
    return sources is not None and all(_collect_leaves(source, leaves) for source in sources)


def _get_on_a_thread(future: Future[T], loop: asyncio.AbstractEventLoop) -> Generator[Any, None, T]:
    # A user's get hook may block for as long as it likes: run it on a thread
    # of its own, which ends when the hook returns (an executor's threads
    # would outlive it).
    waiter: asyncio.Future[tuple[bool, Any]] = loop.create_future()

    def compute() -> None:
        try:
            outcome: tuple[bool, Any] = (True, future.get())
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine
            outcome = (False, exc)
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody awaits this any more
            loop.call_soon_threadsafe(_settle_waiter, waiter, outcome)

    threading.Thread(target=compute, name="troupe-future-get-hook", daemon=True).start()
    ok, value = yield from waiter
    if ok:
        return cast("T", value)
    raise value


def _settle_waiter(waiter: asyncio.Future[Any], outcome: tuple[bool, Any]) -> None:
    if not waiter.done():
        waiter.set_result(outcome)


_PENDING = 0
_DONE = 1
_CANCELLED = 2


class _Waiter:
    """What a task awaiting a `Future` suspends on: an asyncio future-like, one per await.

    asyncio's `Task` accepts any object with ``_asyncio_future_blocking``,
    ``get_loop``, ``add_done_callback``, ``result`` and ``cancel`` (its
    "Future-compatible" protocol). Unlike an ``asyncio.Future``, whose
    `set_result` only schedules the task's wake-up for the *next* loop
    iteration, this one wakes the task at once when it is resolved from a
    plain loop callback: a reply from another thread (`_Waker`) resumes the
    awaiting coroutine in the iteration the loop woke up in, one pass of the
    loop (an epoll call and its bookkeeping) fewer per cross-thread ask.
    Set on its own loop's thread while a task runs (a same-loop reply), it
    schedules the wake-up as asyncio does.

    Thread contract: `on_set` runs on the thread that sets the future;
    everything else on the loop's thread.
    """

    __slots__ = ("_asyncio_future_blocking", "_callbacks", "_cancel_message", "_loop", "_state")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._asyncio_future_blocking = False
        self._callbacks: list[tuple[Callable[[Any], None], contextvars.Context]] = []
        self._state = _PENDING
        self._cancel_message: Any = None

    def get_loop(self) -> asyncio.AbstractEventLoop:
        """Return the loop the waiting task runs on."""
        return self._loop

    def done(self) -> bool:
        """Return whether it was resolved or cancelled."""
        return self._state != _PENDING

    def cancelled(self) -> bool:
        """Return whether it was cancelled."""
        return self._state == _CANCELLED

    def result(self) -> None:
        """Return None once resolved; raise CancelledError if cancelled."""
        if self._state == _CANCELLED:
            raise asyncio.CancelledError(*(() if self._cancel_message is None else (self._cancel_message,)))
        if self._state == _PENDING:
            msg = "the reply has not arrived yet"
            raise asyncio.InvalidStateError(msg)

    def exception(self) -> BaseException | None:
        """Return None (it never holds an exception); raise CancelledError if cancelled."""
        self.result()
        return None

    def add_done_callback(self, fn: Callable[[Any], None], *, context: contextvars.Context | None = None) -> None:
        """Call `fn(self)` once done, in `context` (a task's wake-up)."""
        if context is None:
            context = contextvars.copy_context()
        if self._state == _PENDING:
            self._callbacks.append((fn, context))
        else:
            self._loop.call_soon(fn, self, context=context)

    def remove_done_callback(self, fn: Callable[[Any], None]) -> int:
        """Forget `fn`; return how many registrations were removed."""
        kept = [entry for entry in self._callbacks if entry[0] != fn]
        removed = len(self._callbacks) - len(kept)
        self._callbacks = kept
        return removed

    def cancel(self, msg: Any = None) -> bool:
        """Cancel the wait (the task is being cancelled); return False if already done."""
        if self._state != _PENDING:
            return False
        self._state = _CANCELLED
        self._cancel_message = msg
        self._schedule()
        return True

    def on_set(self, _future: Future[Any]) -> None:
        """The future was set (any thread): wake the waiting task."""
        if _get_running_loop() is self._loop:
            # On its own loop's thread, in an actor's turn or task: as asyncio would.
            if self._state == _PENDING:
                self._state = _DONE
                self._schedule()
            return
        _waker_of(self._loop).wake(self)

    def resolve_now(self) -> None:
        """Resolve and run the waiting task's wake-up right here (the loop's thread, from a plain callback)."""
        if self._state != _PENDING:
            return
        self._state = _DONE
        if asyncio.current_task(self._loop) is not None:
            self._schedule()  # a task is running: its wake-up cannot run inside it
            return
        callbacks, self._callbacks = self._callbacks, []
        for fn, context in callbacks:
            context.run(fn, self)

    def _schedule(self) -> None:
        callbacks, self._callbacks = self._callbacks, []
        for fn, context in callbacks:
            self._loop.call_soon(fn, self, context=context)


def _waker_of(loop: asyncio.AbstractEventLoop) -> _Waker:
    # One entry remembered: the loop replies go to is nearly always the last
    # one (a WeakKeyDictionary lookup makes a weakref each time).
    last_loop, last_waker = _last_waker
    if last_loop() is loop:
        return cast("_Waker", last_waker)
    waker = _wakers.get(loop)
    if waker is None:
        with _callbacks_lock:
            waker = _wakers.setdefault(loop, _Waker(loop))
    _remember(loop, waker)
    return waker


def _remember(loop: asyncio.AbstractEventLoop, waker: _Waker) -> None:
    global _last_waker  # noqa: PLW0603 - a one-entry cache; a tuple is replaced atomically
    _last_waker = (weakref.ref(loop), waker)


class _Waker:
    """Resolves waiters on one loop from other threads, one ``call_soon_threadsafe`` per burst.

    A reply set from another thread must wake the awaiting coroutine's loop,
    and each ``call_soon_threadsafe`` writes to a socket: 10,000 replies
    arriving together would cost 10,000 writes and as many loop wake-ups.
    Waiters queue here instead and one callback resolves them all (the same
    scheme as `actors._core.executors.AsyncioExecutor.submit`), each waking
    its task there and then (`_Waiter.resolve_now`).
    """

    __slots__ = ("__weakref__", "_loop", "_pending", "_waiters")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._waiters: deque[_Waiter] = deque()
        # Invariant: while True, a `_resolve_all` that has not cleared it yet is scheduled.
        self._pending = False

    def wake(self, waiter: _Waiter) -> None:
        self._waiters.append(waiter)
        if not self._pending:
            self._pending = True
            try:
                self._loop.call_soon_threadsafe(self._resolve_all)
            except RuntimeError:
                self._pending = False  # the loop has closed: nobody awaits there any more
                self._waiters.clear()

    def _resolve_all(self) -> None:
        self._pending = False  # first: a waiter queued from now on schedules another round
        waiters = self._waiters
        pop = waiters.popleft
        try:
            for _ in range(len(waiters)):
                pop().resolve_now()
        finally:
            if waiters and not self._pending:
                # A wake-up raised (KeyboardInterrupt): the rest go on in another round.
                self._pending = True
                self._loop.call_soon(self._resolve_all)


_wakers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Waker] = weakref.WeakKeyDictionary()


_last_waker: tuple[Callable[[], Any], Any] = (lambda: None, None)
"""`_waker_of`'s one-entry cache: (a weakref to a loop, its `_Waker`)."""


class Receipt(Future[T]):
    """The reply future of a tell whose sender wants to know when it was handled.

    It travels in the envelope like an ask's future, but the message keeps a
    tell's semantics: if the handler raises, the receipt gets the error *and*
    the actor fails (pykka's rule for tells), where an ask's error would only
    go back to the asker. Routers with a per-routee limit use receipts to count
    tells in flight. Set when the handler returns, raises, or when the message
    becomes a dead letter.
    """

    __slots__ = ()


class Asked(Future[T]):
    """The reply future of an ask (or a stop) that is also its mailbox item: it carries its message.

    An ask to a pooled or thread-mode actor queues this one object where it
    queued an `Envelope` holding the message and the future: one object
    fewer per ask for the allocator and for the garbage collector to walk.
    Measured: one ask to each of 1,000,000 pooled actors made 2,000,000
    objects that outlived a young collection (a future the asker holds, an
    envelope still queued), more than a quarter of the ~5,200,000 a
    million idle actors are, and CPython 3.11 then runs a full collection
    (~1 s, of a 5.4 s ask-all); an envelope cost ~0.25 µs more per ask.

    `target` is the cell it was sent to, until that cell's turn takes it
    (`Cell._process`, ``take_queued``), which clears it with `message`: this
    future told as a message to some actor (to collect its result, say) is
    then only a message, there and anywhere else, since only `target`'s turn
    reads it as an ask. Told to its own `target` before that turn took the
    ask, the first of the two that turn takes is the ask and the other a
    message (in mailbox order, so the ask first in a FIFO mailbox).

    Thread contract: built by the asker; `message` and `target` are then
    written only by `target`'s turn.
    """

    __slots__ = ("message", "target")

    def __init__(self, message: Any = None, target: Cell | None = None, label: Any = None) -> None:
        """Make the future of an ask of `message` to `target` (without arguments: a plain one, for ``map``)."""
        # `Future.__init__` written out: one Python call per ask fewer.
        self._waiter = None
        self._done = False
        self._value = None
        self._exc_info = None
        self._callbacks = None
        self._label = label
        self.message: Any = message
        self.target: Cell | None = target


def _call(fn: Callable[[Future[Any]], None], future: Future[Any]) -> None:
    try:
        fn(future)
    except Exception:  # noqa: BLE001 - a callback's failure must not reach the setter
        logger.opt(exception=True).error("Done-callback {!r} of {!r} failed", fn, future)


# One lock for every future's callback list: taken only when callbacks exist,
# so the common ask (no callbacks) never touches it.
_callbacks_lock = allocate_lock()

_waiter_lock = allocate_lock()
"""Held while a getter that has to wait makes the future's waiter (`Future._make_waiter`)."""

_contested_lock = allocate_lock()
"""Held while a reply its asker may abandon is settled (an asyncio actor's: `Cell.abandon`).

Only that future is set by two parties (the actor and the asker giving up),
and one of them must see that it lost (`queue.Full`); every other future has
exactly one setter, and is set without a lock."""
