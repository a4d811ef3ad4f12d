"""The event loop a system runs its asyncio actors on when it starts one of its own.

`ParkingEventLoop` is asyncio's `SelectorEventLoop` with one change: while
the only file descriptor it watches is its own self-pipe (no user socket,
pipe, subprocess or signal handler), the loop thread waits for work on a
lock instead of in ``epoll_wait``, and a wake-up from another thread
(``call_soon_threadsafe``, which is how troupe hands the loop a message) is
a lock release instead of a socket write.

Why: what bounds an awaited ask to an asyncio actor from another thread on
an idle machine is waking the loop thread. Measured with timestamps on both
threads, a wake-up through the self-pipe (the waker's ``send``, epoll
returning, the loop's ``recv``) cost 40-70 µs a leg, against 20-23 µs for
a pooled actor's dispatcher, which parks on a lock (a futex: one syscall to
wake, one to return); plain asyncio's round trip between two loops was
106-114 µs against 69-80 µs for a `queue.Queue` round trip. Measured with
this loop (benchmarks/asyncio_mode.py, coro_ask_vs_pykka, at real-time
priority so that a woken thread finds a free CPU, as on the idle machine):
troupe 56-111 -> 41-93 µs, 1.44-1.89x -> 1.16-1.58x pykka's blocking ask;
on the loaded machine unchanged (0.47-0.57x -> 0.52-0.54x).

How a wake-up cannot be lost: the wake-up is a token, a `_thread.lock`
held while there is none. A waker releases it (a release that finds it
already released is a token already there: the two coalesce, as two bytes
in the self-pipe do); the parked loop acquires it, with the timeout asyncio
computed for its next timer, and so consumes it. A wake-up that comes
between asyncio's look at its ready queue and the park leaves the token
released and the park returns at once, as a byte written to the self-pipe
makes epoll return at once. The waker writes to the self-pipe as well
whenever the loop watches other descriptors (`_ParkingSelector.parkable`
false): then the loop waits in the real selector, which that write wakes.
That flag changes only on the loop's thread, between two waits (asyncio
registers descriptors from loop callbacks): a waker that read it as true
put its callback in the ready queue before the loop registered anything,
so the loop's next wait has a timeout of 0. The real selector's wait also
consumes a token left over and then does not block, for good measure.

A signal handler (``add_signal_handler``; only on the main thread, where a
system's own loop never runs) turns parking off for good: CPython's C signal
handler writes to the self-pipe directly (``signal.set_wakeup_fd``).

Not used on Windows, where asyncio's default loop is the proactor.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import selectors
import threading
from _thread import allocate_lock
from typing import TYPE_CHECKING, Any, TypeVarTuple

if TYPE_CHECKING:
    from collections.abc import Callable

    from _typeshed import FileDescriptorLike

__all__ = ["ParkingEventLoop"]

_TIMEOUT_MAX = threading.TIMEOUT_MAX
_Ts = TypeVarTuple("_Ts")
_yield = os.sched_yield


class _ParkingSelector(selectors.DefaultSelector):
    """The platform's default selector, which parks on a lock while it watches only the loop's self-pipe.

    Thread contract: `select`, `register`, `unregister` and `modify` run on
    the loop's thread; `wake_token` is released from any thread.
    """

    def __init__(self) -> None:
        super().__init__()
        # Invariant: held while no wake-up is pending; released by a waker,
        # acquired (consumed) by `select`.
        self.wake_token = allocate_lock()
        self.wake_token.acquire()
        self.self_pipe_fd = -1
        self.allowed = True
        # Invariant: true iff parking is allowed and the one descriptor
        # registered is the self-pipe; written only on the loop's thread.
        self.parkable = False

    def update(self) -> None:
        """Recompute `parkable` after the set of registered descriptors changed (loop thread)."""
        fd = self.self_pipe_fd
        keys = self.get_map()  # None once closed
        self.parkable = self.allowed and fd >= 0 and keys is not None and len(keys) == 1 and fd in keys

    def register(self, fileobj: FileDescriptorLike, events: int, data: Any = None) -> selectors.SelectorKey:
        """Register as the platform's selector does, then recompute whether the loop may park."""
        try:
            return super().register(fileobj, events, data)
        finally:
            self.update()

    def unregister(self, fileobj: FileDescriptorLike) -> selectors.SelectorKey:
        """Unregister as the platform's selector does, then recompute whether the loop may park."""
        try:
            return super().unregister(fileobj)
        finally:
            self.update()

    def modify(self, fileobj: FileDescriptorLike, events: int, data: Any = None) -> selectors.SelectorKey:
        """Modify as the platform's selector does (which unregisters on failure), then recompute."""
        try:
            return super().modify(fileobj, events, data)
        finally:
            self.update()

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        """Wait for a wake-up on the lock while only the self-pipe is watched; else in the real selector."""
        token = self.wake_token
        if self.parkable:
            if token.acquire(False):
                return []
            # Let go of the CPU and the GIL once before parking, as epoll_wait
            # does even with a timeout of 0: an asker on another thread that
            # spins for its reply (futures' `_spin_for_reply`) then sends its
            # next message now, and the loop takes it without parking and being
            # woken again. Measured (coro_ask_vs_pykka on the loaded machine):
            # without this yield 0.96-1.66x pykka's blocking ask against the
            # self-pipe loop's 0.47-0.55x, with it 0.52-0.55x.
            _yield()
            if timeout is None:
                token.acquire()
            elif timeout > 0:
                token.acquire(True, min(timeout, _TIMEOUT_MAX))
            else:
                token.acquire(False)
            return []  # the loop runs what is ready: nothing to read from the self-pipe
        if token.acquire(False):  # a wake-up pending (sent while parking was on): do not block
            timeout = 0
        return super().select(timeout)


class ParkingEventLoop(asyncio.SelectorEventLoop):
    """asyncio's selector event loop, parked on a lock between wake-ups while it has no I/O to watch.

    Everything asyncio offers works on it (sockets, pipes, subprocesses,
    timers, ``call_soon_threadsafe`` and ``run_in_executor`` from any
    thread): the loop waits in the real selector while any descriptor
    besides its self-pipe is registered.
    """

    _parking: _ParkingSelector

    def __init__(self) -> None:
        selector = _ParkingSelector()
        self._parking = selector
        super().__init__(selector)
        selector.self_pipe_fd = self._ssock.fileno()  # type: ignore[attr-defined] # asyncio's self-pipe
        selector.update()

    def _write_to_self(self) -> None:
        # Any thread: release the token (a waker that finds it released is
        # coalesced with the one before); write the self-pipe too while the
        # loop waits in the real selector. The order matters: see the module.
        selector = self._parking
        token = selector.wake_token
        if token.locked():
            with contextlib.suppress(RuntimeError):  # released by another waker in between: one stands for both
                token.release()
        if not selector.parkable:
            super()._write_to_self()  # type: ignore[misc] # asyncio's self-pipe write

    def add_signal_handler(self, sig: int, callback: Callable[[*_Ts], object], *args: *_Ts) -> None:
        """Add a signal handler as asyncio does, and wait in the real selector from now on."""
        selector = self._parking
        selector.allowed = False
        selector.update()
        super().add_signal_handler(sig, callback, *args)
