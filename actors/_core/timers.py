"""Timers: the system's scheduler and each actor's keyed timers (pykka issue #53).

Two layers:

- `Scheduler` belongs to an `ActorSystem`. It keeps one heap of deadlines
  read from the system's clock. With a real clock it runs one thread,
  ``troupe-timers-<system>``; with a `ManualClock` it runs no thread at all
  and fires what fell due inside `ManualClock.advance()`.
- `Timers` is what an actor sees as ``self.timers``: keyed single-shot and
  periodic timers that deliver a message to the actor itself, the way Akka's
  ``TimerScheduler`` does.

A timer never calls into the actor: firing only puts a private envelope in the
actor's mailbox. When the actor takes it out, the timer is checked against the
actor's current table, so a timer that was cancelled or replaced after its
message was queued is dropped there and never reaches ``on_receive``.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from typing import TYPE_CHECKING, Any

from loguru import logger

from actors._core.checks import check_seconds
from actors._core.clock import ManualClock
from actors.errors import TroupeInternalError

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable

    from actors._core.cell import Cell
    from actors._core.clock import Clock

__all__ = ["Scheduler", "TimerHandle", "Timers"]


class TimerHandle:
    """One scheduled callback. Cancel it with `Scheduler.cancel`."""

    __slots__ = ("callback", "cancelled", "deadline", "internal", "interval", "seq")

    def __init__(self, deadline: float, seq: int, callback: Callable[[], None], interval: float | None) -> None:
        self.deadline = deadline
        self.seq = seq
        self.callback = callback
        self.interval = interval
        self.cancelled = False
        # The runtime's own housekeeping (the held-dispatcher watch): not counted by `pending`.
        self.internal = False

    def __lt__(self, other: TimerHandle) -> bool:
        return (self.deadline, self.seq) < (other.deadline, other.seq)


class Scheduler:
    """Run callbacks at deadlines read from a clock.

    Callbacks run on the timer thread (or, with a `ManualClock`, on the thread
    that calls `advance()`), one at a time, in deadline order. They must be
    quick and must not block: the runtime's own callbacks only put a message
    in a mailbox. An exception from a callback is logged and the scheduler
    keeps going.

    A periodic entry is re-armed at ``deadline + interval`` (fixed rate): if
    the clock jumps several intervals at once, it fires once per interval
    passed, in order.
    """

    def __init__(self, clock: Clock, *, name: str) -> None:
        self.clock = clock
        self._name = name
        self._cond = threading.Condition(threading.Lock())
        # Invariant: a heap ordered by (deadline, seq); guarded by _cond.
        self._heap: list[TimerHandle] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._stopping = False

    def start(self) -> None:
        """Begin firing: attach to a manual clock, or start the timer thread."""
        if isinstance(self.clock, ManualClock):
            self.clock._attach(self)  # noqa: SLF001
            return
        self._thread = threading.Thread(target=self._loop, name=f"troupe-timers-{self._name}", daemon=True)
        self._thread.start()

    def shutdown(self, *, timeout: float | None = None) -> None:
        """Stop firing, drop every pending entry and join the timer thread."""
        with self._cond:
            self._stopping = True
            self._heap.clear()
            self._cond.notify_all()
        if isinstance(self.clock, ManualClock):
            self.clock._detach(self)  # noqa: SLF001
        if self._thread is not None:
            self._thread.join(timeout)

    def call_later(
        self, delay: float, callback: Callable[[], None], *, interval: float | None = None, internal: bool = False
    ) -> TimerHandle:
        """Run `callback` after `delay` seconds, then every `interval` seconds if given.

        An `internal` entry (the runtime's own housekeeping) is not counted by
        `pending`, so tests that wait for a number of timers do not see it.
        """
        check_seconds("timer interval", interval, optional=True)
        check_seconds("timer delay", delay, positive=False)
        handle = TimerHandle(self.clock.now() + delay, next(self._seq), callback, interval)
        handle.internal = internal
        with self._cond:
            if self._stopping:
                handle.cancelled = True
                return handle
            heapq.heappush(self._heap, handle)
            if self._heap[0] is handle:
                self._cond.notify()
        if self._thread is None and isinstance(self.clock, ManualClock) and not internal:
            self.clock._timer_added()  # noqa: SLF001
        return handle

    def cancel(self, handle: TimerHandle) -> None:
        """Make sure `handle` never fires again (lazy removal: it is skipped when due)."""
        handle.cancelled = True

    def pending(self) -> int:
        """Return how many entries are scheduled and not cancelled."""
        with self._cond:
            return sum(1 for h in self._heap if not h.cancelled and not h.internal)

    def run_due(self) -> None:
        """Fire every entry whose deadline is at or before the clock's time."""
        while True:
            with self._cond:
                handle = self._pop_due(self.clock.now())
            if handle is None:
                return
            self._fire(handle)

    def _pop_due(self, now: float) -> TimerHandle | None:
        # Called with _cond held. Re-arms periodic entries before they run, so a
        # callback that cancels its own handle wins over the re-arm.
        heap = self._heap
        while heap and heap[0].cancelled:
            heapq.heappop(heap)
        if not heap or heap[0].deadline > now:
            return None
        handle = heapq.heappop(heap)
        if handle.interval is not None:
            heapq.heappush(
                heap,
                _rearmed(handle, next(self._seq)),
            )
        return handle

    def _fire(self, handle: TimerHandle) -> None:
        if handle.cancelled:
            return
        try:
            handle.callback()
        except Exception:  # noqa: BLE001 - a timer callback must never kill the timer thread
            logger.opt(exception=True).error("Timer callback {!r} failed on scheduler {}", handle.callback, self._name)

    def _loop(self) -> None:
        while True:
            with self._cond:
                if self._stopping:
                    return
                handle = self._pop_due(self.clock.now())
                if handle is None:
                    timeout = self._heap[0].deadline - self.clock.now() if self._heap else None
                    self._cond.wait(timeout)
                    continue
            self._fire(handle)


def _rearmed(handle: TimerHandle, seq: int) -> TimerHandle:
    # The same handle object keeps living so that `cancel(handle)` still reaches
    # every future firing: move it forward in place and re-insert it.
    interval = handle.interval
    if interval is None:
        msg = f"a single-shot timer was re-armed: {handle!r}"
        raise TroupeInternalError(msg)
    handle.deadline += interval
    handle.seq = seq
    return handle


class _TimerFired:
    """The private envelope a timer puts in its actor's mailbox."""

    __slots__ = ("generation", "key", "message")

    def __init__(self, key: Hashable, generation: int, message: Any) -> None:
        self.key = key
        self.generation = generation
        self.message = message

    def __repr__(self) -> str:
        return f"_TimerFired(key={self.key!r}, message={self.message!r})"


class _Timer:
    __slots__ = ("generation", "handle", "periodic")

    def __init__(self, generation: int, handle: TimerHandle, *, periodic: bool) -> None:
        self.generation = generation
        self.handle = handle
        self.periodic = periodic


_generations = itertools.count(1)


class Timers:
    """An actor's keyed timers, reached as ``self.timers`` inside the actor.

    Thread contract: call these methods only from the actor's own handlers
    (``on_start``, ``on_receive``, proxied methods, ``on_stop``): the table is
    the actor's private state, like every other attribute of it. Timers are
    cancelled when the actor stops.

    Keys: starting a timer with a key that is in use cancels the old timer,
    and a message the old timer already queued is not delivered.
    """

    __slots__ = ("_cell", "_table")

    def __init__(self, cell: Cell) -> None:
        self._cell = cell
        self._table: dict[Hashable, _Timer] = {}

    def start_single_timer(self, key: Hashable, message: Any, delay: float) -> None:
        """Deliver `message` to this actor once, `delay` seconds from now."""
        self._start(key, message, delay, None)

    def start_periodic_timer(
        self,
        key: Hashable,
        message: Any,
        interval: float,
        *,
        initial_delay: float | None = None,
    ) -> None:
        """Deliver `message` to this actor every `interval` seconds (fixed rate).

        The first delivery is after `initial_delay` seconds (default: `interval`).
        """
        self._start(key, message, interval if initial_delay is None else initial_delay, interval)

    def cancel(self, key: Hashable) -> None:
        """Cancel the timer with `key`; a message it already queued is dropped. No-op if unknown."""
        timer = self._table.pop(key, None)
        if timer is not None:
            self._cell.system.scheduler.cancel(timer.handle)

    def cancel_all(self) -> None:
        """Cancel every timer of this actor."""
        scheduler = self._cell.system.scheduler
        for timer in self._table.values():
            scheduler.cancel(timer.handle)
        self._table.clear()

    def is_timer_active(self, key: Hashable) -> bool:
        """Return whether a timer with `key` is running (a fired single-shot one is not)."""
        return key in self._table

    def keys(self) -> list[Hashable]:
        """Return the keys of the active timers."""
        return list(self._table)

    def _start(self, key: Hashable, message: Any, delay: float, interval: float | None) -> None:
        self.cancel(key)
        generation = next(_generations)
        cell = self._cell
        fired = _TimerFired(key, generation, message)
        handle = cell.system.scheduler.call_later(delay, lambda: cell.post_internal(fired), interval=interval)
        self._table[key] = _Timer(generation, handle, periodic=interval is not None)

    def _accept(self, fired: _TimerFired) -> bool:
        """Return whether a fired timer is still current; forget a single-shot one."""
        timer = self._table.get(fired.key)
        if timer is None or timer.generation != fired.generation:
            return False
        if not timer.periodic:
            del self._table[fired.key]
        return True
