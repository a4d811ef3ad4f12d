"""Clocks: where the runtime reads the time.

Every TTL, timer, heartbeat, eviction and backoff in troupe reads the clock
its `ActorSystem` was given. Production code uses `MonotonicClock`; tests use
`ManualClock` and move time forward with `advance()`, so no test ever sleeps
to let time pass (trio's `MockClock`, Akka's `ExplicitlyTriggeredScheduler`).
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from actors._core.timers import Scheduler

__all__ = ["Clock", "ManualClock", "MonotonicClock"]


class Clock(Protocol):
    """What the runtime needs of a clock: the current time, in seconds.

    The value is only meaningful relative to other readings of the same
    clock (like `time.monotonic`).
    """

    def now(self) -> float:
        """Return the current time in seconds."""
        ...


class MonotonicClock:
    """The real clock: `time.monotonic()`. A system's timers get a thread of their own."""

    __slots__ = ()

    # `time.monotonic` itself, not a method calling it: `clock.now` is then the C
    # function, so a hot path that keeps `clock.now` pays no Python call a reading.
    now = staticmethod(time.monotonic)

    def __repr__(self) -> str:
        return "MonotonicClock()"


class ManualClock:
    """A clock that only moves when told to, for tests.

    `advance()` moves the time forward and, before it returns, delivers every
    timer that fell due to its actor's mailbox, in deadline order, on the
    calling thread. A test that advances the clock and then asks the actor
    anything is therefore guaranteed that the timer messages were handled
    first (mailboxes are FIFO).

    Thread-safe: any thread may call `now()` and `advance()`.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._lock = threading.RLock()
        # Notified (under _lock) whenever an attached scheduler gets a new entry.
        self._scheduled = threading.Condition(self._lock)
        # Invariant: only changes under _lock, and never decreases.
        self._now = float(start)
        self._schedulers: list[Scheduler] = []

    def now(self) -> float:
        """Return the current manual time."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move time forward by `seconds` and fire every timer that fell due.

        Raises:
            ValueError: if `seconds` is negative; time never goes back.
        """
        if seconds < 0:
            msg = f"ManualClock.advance() got {seconds!r}: time only moves forward; pass seconds >= 0"
            raise ValueError(msg)
        with self._lock:
            self._now += seconds
            schedulers = list(self._schedulers)
        for scheduler in schedulers:
            scheduler.run_due()

    def pending_timers(self) -> int:
        """Return how many timers are waiting to fall due, over every system using this clock."""
        with self._lock:
            return sum(scheduler.pending() for scheduler in self._schedulers)

    def wait_for_timers(self, count: int = 1, *, timeout: float | None = None) -> bool:
        """Block until at least `count` timers are pending; return False on `timeout`.

        For tests of work that schedules a timer from another thread (a
        restart backoff, a pool's maintenance): wait for the timer to exist,
        then `advance()` past it, instead of sleeping.
        """
        with self._scheduled:
            return self._scheduled.wait_for(lambda: self.pending_timers() >= count, timeout)

    def _timer_added(self) -> None:
        with self._scheduled:
            self._scheduled.notify_all()

    def _attach(self, scheduler: Scheduler) -> None:
        with self._lock:
            self._schedulers.append(scheduler)

    def _detach(self, scheduler: Scheduler) -> None:
        with self._lock:
            if scheduler in self._schedulers:
                self._schedulers.remove(scheduler)

    def __repr__(self) -> str:
        return f"ManualClock(now={self._now!r})"
