"""The future every troupe actor returns from `ask` and proxy calls.

`Future` is a `pykka.Future`: `get(timeout=)`, `set`, `set_exception`,
`set_get_hook`, `map`, `filter`, `join`, `reduce` and `pykka.get_all` behave
as pykka documents them. Two things differ from `pykka.ThreadingFuture`:

- waiting is a single `_thread.lock` that is created locked and released by
  `set()`: no `threading.Condition` per future (a Condition allocates a lock
  per waiter and runs in Python; the lock is C and is ~4x cheaper per ask);
- `await future` inside a coroutine suspends only that coroutine: the value
  is handed to the event loop with `call_soon_threadsafe` (pykka's own
  `__await__` blocks the loop, pykka issue #99).

Like pykka's futures, it does not copy the value it carries: send immutable
values across actors.
"""

from __future__ import annotations

import asyncio
import queue
import sys
from _thread import allocate_lock
from typing import TYPE_CHECKING, Any, TypeVar

import pykka
from loguru import logger
from pykka._future import _Unset

if TYPE_CHECKING:
    from collections.abc import Callable, Generator

    from pykka._types import OptExcInfo

__all__ = ["Future", "Receipt"]

T = TypeVar("T")

_UNSET = _Unset()


class Future(pykka.Future[T]):
    """A value that an actor will provide, waitable from threads and coroutines.

    Thread contract: any number of threads may wait in `get()` and any number
    of coroutines (on any loops) may await it; exactly one party sets it.
    Done-callbacks run on the thread that sets the future.
    """

    # pykka.Future reads these; class-level defaults save two allocations per ask.
    _get_hook = None
    _get_hook_result: Any = _UNSET

    __slots__ = ("_callbacks", "_done", "_exc_info", "_label", "_value", "_waiter")

    def __init__(self) -> None:
        # Invariant: _waiter is held until the future is set (or given a get
        # hook); a getter acquires and at once releases it, so every waiter
        # is woken in turn.
        self._waiter = allocate_lock()
        self._waiter.acquire()
        self._done = False
        self._value: Any = None
        self._exc_info: OptExcInfo | None = None
        self._callbacks: list[Callable[[Future[T]], None]] | None = None
        # What this future waits for, for the Timeout message ("reply from ...").
        self._label: str | None = None

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
            waiter = self._waiter
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
            assert exc_value is not None
            raise exc_value.with_traceback(traceback)
        return self._value  # type: ignore[no-any-return]

    def set(self, value: Any = None) -> None:
        """Set the value and wake every waiter.

        Raises:
            queue.Full: the future was already set or has a get hook (as pykka).
        """
        if self._done or self._get_hook is not None:
            raise queue.Full
        self._value = value
        self._settle()

    def set_exception(self, exc_info: OptExcInfo | None = None) -> None:
        """Set an exception (default: the one being handled) and wake every waiter.

        Raises:
            queue.Full: the future was already set or has a get hook (as pykka).
        """
        if exc_info is None:
            exc_info = sys.exc_info()
        assert len(exc_info) == 3
        if self._done or self._get_hook is not None:
            raise queue.Full
        exc_type, exc_value, traceback = exc_info
        if exc_value is None:
            assert exc_type is not None
            exc_value = exc_type()
        self._exc_info = (exc_type, exc_value, traceback)
        self._settle()

    def set_get_hook(self, func: Callable[[float | None], T]) -> None:
        """Compute the value by calling `func(timeout)` on `get()` (as pykka)."""
        if self._done:
            raise queue.Full
        super().set_get_hook(func)
        try:
            self._waiter.release()
        except RuntimeError:
            raise queue.Full from None

    def add_done_callback(self, fn: Callable[[Future[T]], None]) -> None:
        """Call `fn(self)` once the future is set; at once if it already is.

        The callback runs on the thread that sets the future. An exception from
        it is logged, never raised into the setter.
        """
        with _callbacks_lock:
            if not self._done:
                if self._callbacks is None:
                    self._callbacks = []
                self._callbacks.append(fn)
                return
        _call(fn, self)

    def _settle(self) -> None:
        self._done = True
        try:
            self._waiter.release()
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
        waiter = loop.create_future()
        if self._get_hook is not None:
            # A derived future (map/join/...): its sources are unknown here, so
            # compute it on the loop's default executor instead of blocking.
            return (yield from loop.run_in_executor(None, self.get).__await__())  # type: ignore[no-any-return]

        def wake(_: Future[T]) -> None:
            loop.call_soon_threadsafe(_resolve, waiter)

        self.add_done_callback(wake)
        yield from waiter.__await__()
        return self.get()

    __iter__ = __await__


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


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _call(fn: Callable[[Future[Any]], None], future: Future[Any]) -> None:
    try:
        fn(future)
    except Exception:  # noqa: BLE001 - a callback's failure must not reach the setter
        logger.opt(exception=True).error("Done-callback {!r} of {!r} failed", fn, future)


# One lock for every future's callback list: taken only when callbacks exist,
# so the common ask (no callbacks) never touches it.
_callbacks_lock = allocate_lock()
