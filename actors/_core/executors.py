"""Executors: what runs actor turns, one kind per execution mode, behind one protocol.

An `Executor` runs ``cell.run()`` soon, on one of its threads, when a cell is
submitted; the cell's `sched` lock guarantees a cell is submitted at most
once at a time (see `actors._core.cell`). The three kinds:

- `DispatcherPool` (pooled mode): a fixed set of threads sharing one run
  queue, a C `queue.SimpleQueue` (put/get without Python-level locks); a
  system has one per dispatcher group (``"default"``, and any it is given).
- `ThreadExecutor` (thread mode): one thread for one actor, alive from spawn
  until the actor terminates, as pykka's `ThreadingActor`. A message or a
  stop sent to an idle one from another thread wakes its thread through the
  system's `StopPacer`, which has at most `STOP_WAKE_WIDTH` such threads
  waking at once; at most `START_WIDTH` started threads wait to run.
- `AsyncioExecutor` (asyncio mode): one event loop that runs the turns of a
  system's asyncio actors, and their handler coroutines as tasks.

Beside them, `DRAIN`, the executor of a terminated cell (late mail is
dead-lettered on the sender's thread), and the thread-local state the
executors keep (`current_executor`, `inline_depth`).

The asyncio executor has the same one-method contract: ``submit(cell)`` runs
``cell.run()`` soon, here as a callback on the loop: ``call_soon`` on the
loop's thread; from any other, the cell joins a queue that one
``call_soon_threadsafe`` callback drains, so a burst of sends from another
thread wakes the loop once, not once per actor (one wake-up is a socket
write, and 10,000 of them cost the sender ~0.5 s). What a turn does with a
handler that returns a coroutine is the cell's asyncio state's business (see
`actors._core.handlers`); the executor runs that coroutine as a task and
hands the outcome back when it is done.

The handler task of the last message queued takes its first step in the
turn that started it (as a Python 3.12 eager task would;
`AsyncioExecutor.step_now`), so a coroutine handler that ends without
suspending answers in that turn. The loop does not spin before it blocks:
an awaited ask from another thread is fast because its asker spins and the
loop yields to it once the reply is set (`actors._core.future`).

Which loop: by default the system starts its own, on a daemon thread named
``troupe-<system>-asyncio``, the first time an asyncio actor is spawned (a
system with no asyncio actor starts no such thread): a `ParkingEventLoop`,
which waits for wake-ups on a lock rather than in epoll while no handler
watches any socket, pipe or subprocess (`actors._core.eventloop`), and stops and joins it
on shutdown: remaining tasks are cancelled, async generators and the default
executor shut down, the loop closed. Given a running loop instead
(``ActorSystem(loop=...)``), the system uses it and never stops or closes it.

Blocking the loop: every callback the executor runs (a turn, system
messages) and every step of a handler task is timed on the system's clock;
one that holds the loop longer than ``slow_callback_duration`` (0.1 s by
default, as asyncio's own debug-mode threshold) logs a warning naming the
actor and the time held. All actors on the loop stand still while one holds
it. The same threshold applies to a pooled turn holding a dispatcher thread of
the default group, sampled instead of timed (`HeldDispatcherWatch`).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
import math
import os
import queue
import sys
import threading
import time
from asyncio import _get_running_loop
from collections import deque
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Protocol, cast

from loguru import logger

from actors._core.eventloop import ParkingEventLoop
from actors.errors import EventLoopError, TroupeInternalError

if TYPE_CHECKING:
    from collections.abc import Callable, Generator
    from types import FrameType

    from actors._core.cell import Cell
    from actors._core.clock import Clock
    from actors._core.timers import Scheduler

__all__ = [
    "DEFAULT_DISPATCHER",
    "DEFAULT_SLOW_CALLBACK_DURATION",
    "DRAIN",
    "START_WIDTH",
    "STOP_WAKE_WIDTH",
    "THREAD_STATE",
    "AsyncioExecutor",
    "DispatcherPool",
    "Executor",
    "HandlerExit",
    "HeldDispatcherWatch",
    "StopPacer",
    "ThreadExecutor",
    "bind_executor",
    "current_executor",
    "inline_depth",
]


class Executor(Protocol):
    """What runs a cell's turns.

    Thread contract: `submit` and `wake` may be called from any thread, by
    whoever holds the cell's `sched` (`submit`) or sees its turn suspended
    (`wake`).
    """

    def submit(self, cell: Cell, /) -> None:
        """Run ``cell.run()`` soon on one of my threads (the caller holds ``cell.sched``)."""

    def wake(self, cell: Cell, /) -> None:
        """Have a turn of `cell` that is suspended on a handler task run its system messages now."""


# Per thread: the executor whose thread this is (`executor`), and how many
# inline asks run nested on it right now (`inline_depth`; see `Cell.run`).
THREAD_STATE = threading.local()


def current_executor() -> object | None:
    """Return the executor whose thread is running this code, if any."""
    return getattr(THREAD_STATE, "executor", None)


def inline_depth() -> int:
    """Return how many inline asks are running nested on this thread."""
    return getattr(THREAD_STATE, "inline_depth", 0)


def bind_executor(executor: object) -> None:
    """Mark the calling thread as one of `executor`'s threads (called once per thread)."""
    THREAD_STATE.executor = executor


class _InlineDrain:
    """The executor of a terminated cell: late mail is dead-lettered on the sender's thread."""

    __slots__ = ()

    def submit(self, cell: Cell) -> None:
        cell.run()

    def wake(self, cell: Cell) -> None:
        """Nothing to wake: a terminated cell awaits nothing."""


DRAIN: Executor = _InlineDrain()


class HandlerExit(Exception):  # noqa: N818 - a carrier for SystemExit/KeyboardInterrupt, never raised to users
    """Carries a SystemExit or KeyboardInterrupt out of a handler task.

    asyncio re-raises those two out of the event loop itself; the executor
    wraps them so the cell can apply pykka's rule (stop every actor) instead.
    """

    def __init__(self, exception: BaseException) -> None:
        super().__init__(repr(exception))
        self.exception = exception


# -- pooled and thread modes -------------------------------------------------------


DEFAULT_DISPATCHER = "default"
"""The dispatcher group pooled actors run on unless spawned with ``dispatcher=``."""

_SPIN_MAX = 256
"""Most ``sched_yield`` rounds a dispatcher (or a timed asker) spins before it parks.

A parked thread takes ~10 µs to wake here, and a cross-thread ask needs two
wake-ups (the dispatcher, then the asker): measured, a timed pooled ask went
from ~20 µs to ~7 µs when both sides spin first (benchmarks/runtime.py, ask).
"""
_SPIN_MIN = 8


class DispatcherPool:
    """`size` daemon threads named ``troupe-<system>-dispatcher-<i>`` (another group: ``-<group>-dispatcher-``).

    Fairness comes from the cells: each turn handles at most the system's
    `throughput` messages, then the cell goes to the back of the run queue.

    Waking is shaped for latency without burning a core: at most one idle
    thread, the *listener*, waits on the run queue, spinning for a short
    adaptive while (yielding the CPU each round) before it blocks there; the
    others park on a gate of their own, so that a submit while the listener
    is hot wakes no thread at all (with every idle thread blocked on the run
    queue, each submit woke a second one that then fought for the GIL: a
    timed ask took ~20 µs instead of ~7 µs). A parked thread is woken when
    work is queued and nobody listens: by `submit`, or by a listener that
    takes a cell and sees more queued behind it. An idle pool spins for at most
    `_SPIN_MAX` rounds after its last turn, then blocks: no CPU when idle.

    Thread contract: `submit` may be called from any thread by whoever holds
    the cell's `sched`; `shutdown` from any thread but the pool's own.
    """

    def __init__(self, system_name: str, size: int, *, group: str = "default") -> None:
        if size < 1:
            msg = f"a dispatcher pool needs at least 1 thread, got {size}"
            raise ValueError(msg)
        self.size = size
        self.group = group
        self._runq: queue.SimpleQueue[Cell | None] = queue.SimpleQueue()
        self._put = self._runq.put
        # Idle threads that are not the listener park here; a token wakes one.
        self._gate: queue.SimpleQueue[bool] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._started = False
        # The held-dispatcher watch pauses while the pool is idle (it sets
        # `watch_paused`); the first thread to wake calls `on_wake` to resume it.
        self.watch_paused = False
        self.on_wake: Callable[[], None] | None = None
        # Invariant (changed under `_lock`): `_listeners` counts the threads in
        # `_listen` (spinning, or blocked on the run queue), `_parked` those
        # blocked on the gate. `submit` reads both without the lock; see
        # `_wait` for why no cell is left queued with nobody woken.
        self._listeners = 0
        self._parked = 0
        self._spinning = False
        # Set by a timed ask, cleared by the spin it allows.
        self._hot = False
        # True while a timed asker spins in `settle`: a thread that ends a
        # turn yields the CPU and the GIL at once, so that the asker sees
        # its reply before the rest of this thread's way back to the queue.
        self._asker_spins = False
        # Adaptive spin budgets (rounds): doubled when a spin found what it
        # waited for, halved when it gave up.
        self._spin = _SPIN_MAX
        self._ask_spin = _SPIN_MAX
        prefix = "" if group == "default" else f"{group}-"
        self.threads = [
            threading.Thread(target=self._loop, name=f"troupe-{system_name}-{prefix}dispatcher-{i}", daemon=True)
            for i in range(size)
        ]

    def __repr__(self) -> str:
        return f"<DispatcherPool {self.group!r} size={self.size}>"

    def start(self) -> None:
        """Start the threads."""
        self._started = True
        for thread in self.threads:
            thread.start()

    def ensure_started(self) -> None:
        """Start the threads unless they are (a group other than the default starts on first use)."""
        if not self._started:
            with self._lock:
                if not self._started:
                    self.start()

    def is_idle(self) -> bool:
        """Return whether every thread waits for work (a racy read: a hint, for sampling)."""
        return self._listeners + self._parked >= self.size

    def submit(self, cell: Cell) -> None:
        """Queue ``cell.run()``; wake a parked thread if no thread listens."""
        self._put(cell)
        if not self._listeners and self._parked:
            self._wake_one()

    def shutdown(self, *, timeout: float | None = None) -> None:
        """Let each thread finish the turns queued before this call, then join them."""
        for _ in self.threads:
            self._runq.put(None)
        for _ in self.threads:
            self._gate.put(True)
        for thread in self.threads:
            if thread.is_alive() and thread is not threading.current_thread():
                thread.join(timeout)

    def wake(self, cell: Cell) -> None:
        """Nothing to do: a turn here is never suspended (see `Cell.post_system`).

        A cell whose event loop closed is finished off here (`AsyncioExecutor`),
        and its running turn takes every system message.
        """

    def warm(self) -> None:
        """Let the listener spin after its next turn: an asker spins for a reply (any thread; see `_listen`)."""
        self._hot = True

    def settle(self, future: Any) -> None:
        """Spin briefly (yielding the CPU) while `future` is not done, before its asker blocks on it.

        Called by a timed ask to a pooled actor: a reply that comes within the
        spin costs the asker no wake-up. The budget adapts: a handler that
        keeps its askers waiting longer than the spin soon costs them ~8
        yields, not 256. While it spins, a dispatcher that ends a turn
        yields at once (`_loop`): pinned to one CPU the asker then runs
        before that thread's way back to the queue, not after it (measured,
        timed ask pinned ~10.5 -> ~8 µs).
        """
        self._hot = True
        self._asker_spins = True
        budget = self._ask_spin
        for _ in range(budget):
            if future._done:  # noqa: SLF001 - read-only peek, the future is ours
                self._asker_spins = False
                if budget < _SPIN_MAX:
                    self._ask_spin = budget * 2
                return
            _yield()
        self._asker_spins = False
        if not future._done and budget > _SPIN_MIN:  # noqa: SLF001
            self._ask_spin = budget // 2

    def _loop(self) -> None:
        bind_executor(self)
        get, qsize = self._runq.get, self._runq.qsize
        while True:
            # A backlog needs no check here: whoever queued it woke a thread
            # if none listened, and each thread leaving `_listen` wakes the
            # next while cells are queued (see `_wait`). `qsize` first: a
            # `get(False)` that finds the queue empty raises `queue.Empty`,
            # ~0.5-1 µs of this thread holding the GIL on its way to wait,
            # just when an asker it replied to on another CPU wakes up and
            # wants it (timed pooled ask, unpinned, alternating fresh
            # processes at load 75-83: 8.3-10.5 -> 8.0-8.1 µs median).
            if qsize():
                try:
                    cell = get(False)
                except queue.Empty:  # another thread took it in between
                    cell = self._wait()
            else:
                cell = self._wait()
            if cell is None:
                return
            cell.run()
            if self._asker_spins:
                _yield()

    def _wait(self) -> Cell | None:
        """Wait for the next cell as the listener, or parked on the gate if there is one already."""
        # No cell is stranded: a submit puts its cell, then reads the counts;
        # a thread leaving `_listen` lowers `_listeners` (under the lock),
        # then looks at the queue. Whichever comes second sees the other, and
        # wakes a parked thread if the cell is queued with nobody listening.
        with self._lock:
            follower = self._listeners > 0
            if follower:
                self._parked += 1
            else:
                self._listeners += 1
        if follower:
            self._gate.get()  # `_wake_one` made this thread a listener
        cell = self._listen()
        with self._lock:
            self._listeners -= 1
        if cell is not None and self._parked and not self._listeners and self._runq.qsize():
            self._wake_one()
        if self.watch_paused:  # after lowering `_listeners`: see `HeldDispatcherWatch.tick`
            self.watch_paused = False
            on_wake = self.on_wake
            if on_wake is not None:
                on_wake()
        return cell

    def _wake_one(self) -> None:
        """Wake a parked thread to listen, unless another thread listens by now."""
        # The waker counts the woken thread as a listener at once: the submits
        # that follow, before it is even scheduled, wake nobody else (a token
        # per submit flooded the gate: ping-pong ran 30% slower).
        with self._lock:
            if self._listeners or not self._parked:
                return
            self._parked -= 1
            self._listeners += 1
        self._gate.put(True)

    def _listen(self) -> Cell | None:
        runq = self._runq
        # Spin only after a timed ask (`settle`), whose asker spins too: with
        # tells alone a spinner only steals the GIL from the threads doing the
        # work (measured: pinned tell throughput halved, ping-pong -40%).
        # One spinner is enough (a race may make two, briefly).
        if self._hot and not self._spinning:
            self._hot = False
            self._spinning = True
            budget = self._spin
            qsize = runq.qsize
            found = False
            for _ in range(budget):
                _yield()
                if qsize():
                    found = True
                    break
            self._spinning = False
            if found:
                if budget < _SPIN_MAX:
                    self._spin = budget * 2
            elif budget > _SPIN_MIN:
                self._spin = budget // 2
        return runq.get()


_yield = os.sched_yield


class HeldDispatcherWatch:
    """Logs, once per actor class, a turn that holds a dispatcher thread of the default group too long.

    A pooled handler that blocks (``time.sleep``, a blocking HTTP call) holds
    one of a few threads that every pooled actor shares. The watch names the
    first such actor of each class, the time held and the fixes: thread mode,
    asyncio, or a dispatcher group of its own (in which blocking is what the
    group is for, so other groups are not watched).

    Sampled, not timed: reading the clock around every turn would cost the
    hot path two clock reads (~0.5 µs each here, more than a whole tell).
    Every ``threshold / 2`` seconds of the system's clock (a timer on its
    scheduler), the watch looks at what each dispatcher thread runs
    (`sys._current_frames`, skipped while the pool is idle): a turn is the
    frame of ``Cell.run`` called from the dispatcher loop, and the same frame
    object (held here, so its identity cannot be reused) seen again at least
    `threshold` seconds after it was first seen is one turn that has held its
    thread that long, and is still holding it. A turn longer than 1.5 x
    `threshold` is always reported; one between 1x and 1.5x may not be.

    Thread contract: `tick` runs on the scheduler's thread (with a
    `ManualClock`, on the thread that calls ``advance``), one at a time.
    """

    def __init__(
        self, system_name: str, pool: DispatcherPool, threshold: float, now: Callable[[], float], scheduler: Scheduler
    ) -> None:
        self.system_name = system_name
        self.threshold = threshold
        self._pool = pool
        self._now = now
        self._scheduler = scheduler
        # A single-shot timer re-armed by each tick (not a periodic one): a
        # ManualClock jumping an hour ticks once, not 36,000 times.
        self._period = max(threshold / 2, _MIN_WATCH_PERIOD)
        # Invariant: thread ident -> (the frame of the turn it runs, when first
        # seen), for the threads seen in a turn at the last tick; only `tick` touches it.
        self._seen: dict[int | None, tuple[FrameType, float]] = {}
        # Invariant: the actor classes already reported (once each, per system).
        self.warned: set[type] = set()
        self._lock = threading.Lock()
        # Invariant (under `_lock`): True while a tick is scheduled.
        self._armed = False
        pool.on_wake = self.arm
        self.arm()

    def arm(self) -> None:
        """Schedule the next tick unless one is (called by a tick, and by the pool when it wakes up)."""
        with self._lock:
            if self._armed:
                return
            self._armed = True
        self._scheduler.call_later(self._period, self.tick, internal=True)

    def tick(self) -> None:
        """Sample the pool's threads, report a turn held too long, and schedule the next tick.

        An idle pool is not ticked for (measured: 20 ticks a second cost an
        idle system ~2 ms of CPU a second): the tick pauses the watch, and
        the first thread to wake in the pool arms it again (`DispatcherPool._wait`).
        """
        with self._lock:
            self._armed = False
        pool = self._pool
        if pool.is_idle():
            self._seen.clear()
            pool.watch_paused = True
            if pool.is_idle():  # checked again after pausing: a thread waking now sees the pause
                return
            pool.watch_paused = False
        try:
            self._sample()
        finally:
            self.arm()

    def _sample(self) -> None:
        pool = self._pool
        frames = sys._current_frames()  # noqa: SLF001 - the one way to see what another thread runs
        now = self._now()
        seen: dict[int | None, tuple[FrameType, float]] = {}
        for thread in pool.threads:
            ident = thread.ident
            turn = _turn_frame(frames.get(ident)) if ident is not None else None
            if turn is None:
                continue
            earlier = self._seen.get(ident)
            if earlier is None or earlier[0] is not turn:
                seen[ident] = (turn, now)
                continue
            seen[ident] = earlier
            held = now - earlier[1]
            if held >= self.threshold:
                self._report(turn, held, thread)
        self._seen = seen

    def _report(self, turn: FrameType, held: float, thread: threading.Thread) -> None:
        cell = turn.f_locals.get("self")  # Cell.run's own `self`
        actor_class = getattr(cell, "actor_class", None)
        if actor_class is None or actor_class in self.warned:
            return
        self.warned.add(actor_class)
        logger.warning(
            "{} has held dispatcher thread {} of system {!r} for {:.3f} s in one turn and still does "
            "(slow_callback_duration is {} s); the other pooled actors have one thread fewer meanwhile. "
            "A handler that blocks belongs elsewhere: spawn it with mode='thread', make it async (mode='asyncio', "
            "await instead of blocking), or give it a dispatcher group of its own: "
            "ActorSystem(dispatchers={{'default': N, 'blocking': 32}}) and spawn(..., dispatcher='blocking'). "
            "Logged once per actor class",
            cell.ref,  # type: ignore[union-attr]
            thread.name,
            self.system_name,
            held,
            self.threshold,
        )


_MIN_WATCH_PERIOD = 0.001
_LOOP_CODE = DispatcherPool._loop.__code__  # noqa: SLF001
_WAIT_CODE = DispatcherPool._wait.__code__  # noqa: SLF001


def _turn_frame(frame: FrameType | None) -> FrameType | None:
    """Return the frame of the turn a dispatcher thread runs (called from its loop), or None when idle."""
    below = None
    while frame is not None:
        if frame.f_code is _LOOP_CODE:
            return below if below is not None and below.f_code is not _WAIT_CODE else None
        below, frame = frame, frame.f_back
    return None


_thread_ids = itertools.count()


STOP_WAKE_WIDTH = 64
"""How many idle actor threads a system's `StopPacer` has woken and not yet seen start a turn."""


class StopPacer:
    """Wake idle actor threads for a turn at most `width` at a time (thread mode; one per system).

    Why: every thread woken while another holds the GIL waits for it in a
    5 ms timed wait (CPython's switch interval), waking on each timeout to
    look again and contending for the GIL's mutex. A sender that stops
    10,000 idle thread-mode actors with ``stop(block=False)`` wakes some 400
    of them per 5 ms slice of its own; each of those then times out again and
    again while the others run ahead of it, and that storm of wake-ups, not
    the stops, was most of the time: perf showed the futex and mutex paths
    at ~60% of the samples, and 10,000 stops cost 4.6-7.7 s of CPU where
    pykka (whose slower sends wake fewer threads per slice) took 5.8-8.5.
    Paced, at most `width` threads wait for the GIL at once and the same
    stops cost 1.9-2.8 s of CPU.

    Each woken thread lets the next deferred one go as soon as its turn
    starts (`started`), before it runs the stop, so a stop that blocks in
    ``on_stop`` (on another stopping actor, say) never holds up the others.
    Why 64 and not 1 or 2: a sender that goes on computing after its stops
    holds the GIL for whole 5 ms slices, and per slice it lets through the
    threads already waiting, so a width of 2 took 4-7 s for 2,000 stops
    that finish in ~0.5 s unpaced; at 64 it is ~0.5 s too.

    Stops (`ActorRef.stop` on an idle thread-mode actor) always go
    through the pacer. Messages only in a burst: one ask to each of
    10,000 idle actors woke them the same way, yet through the lock a
    single ask cost ~2 µs more (~12%). So `ThreadExecutor.submit` wakes
    the thread itself and counts it in `unpaced` (no lock; the thread
    lowers it as it takes the turn) while fewer than `width` threads so
    woken have not yet started; past that the pacer is `engaged` and
    takes the wake-ups, until every thread it woke has started. Measured
    interleaved in one process: a single thread-mode ask 16.6 -> 16.7 µs
    (pinned 16.5 -> 16.7), one ask to each of 3,000 idle thread actors
    0.29 -> 0.16 s wall and 0.38 -> 0.16 s CPU (median of 6, load 3). A
    turn the actor's own thread submits (its turn's re-check) goes
    straight to its queue. What is deferred here has its cell's `sched`
    held, so nothing else runs it meanwhile; mail sent to it queues as
    for any busy actor.

    Thread contract: `submit` and `started` may be called from any thread;
    `_lock` guards `_waking` and `_deferred` (a few operations each time);
    `engaged` and `unpaced` are hints, read and written without it.
    """

    __slots__ = ("_deferred", "_lock", "_waking", "engaged", "unpaced", "width")

    def __init__(self, width: int = STOP_WAKE_WIDTH) -> None:
        self.width = width
        self._lock = threading.Lock()
        # Invariant: threads woken by this pacer that have not yet called
        # `started`; at most `width`, and equal to it while `_deferred` is not empty.
        self._waking = 0
        self._deferred: deque[tuple[ThreadExecutor, Cell]] = deque()
        # Messages are paced only in a burst (`ThreadExecutor.submit`): a
        # wake-up while `unpaced` threads woken without the pacer have not
        # yet started engages it, and it lets go once every thread it woke
        # has started. `unpaced` is a hint, counted without the lock.
        self.engaged = False
        self.unpaced = 0

    def submit(self, executor: ThreadExecutor, cell: Cell) -> None:
        """Run `cell`'s turn on `executor`'s thread now, or once fewer than `width` threads are waking."""
        with self._lock:
            if self._waking >= self.width:
                self._deferred.append((executor, cell))
                return
            self._waking += 1
        executor.wake_paced(cell)

    def started(self) -> None:
        """A thread this pacer woke has started its turn: wake the next deferred one, if any."""
        with self._lock:
            if not self._deferred:
                self._waking -= 1
                if not self._waking:
                    self.engaged = False
                    self.unpaced = 0
                return
            executor, cell = self._deferred.popleft()  # its token passes on: `_waking` is unchanged
        executor.wake_paced(cell)


class ThreadExecutor:
    """One thread that runs one actor's turns until the actor terminates."""

    def __init__(
        self,
        label: str,
        *,
        daemon: bool,
        on_exit: Callable[[ThreadExecutor], None],
        pacer: StopPacer,
    ) -> None:
        self._runq: queue.SimpleQueue[Cell] = queue.SimpleQueue()
        self._on_exit = on_exit
        self.pacer = pacer
        # Invariant: True from `wake_paced` until the thread has taken that
        # turn (set before the put, read after the get: never two at once,
        # a cell is submitted at most once at a time).
        self._paced = False
        # Invariant: True from an unpaced `submit` until the thread has taken
        # that turn (as `_paced`); the thread then lowers the pacer's `unpaced`.
        self._counted = False
        self.thread = _ActorThread(target=self._loop, name=f"{label}-{next(_thread_ids)}", daemon=daemon)

    def start(self) -> None:
        """Start the thread, without waiting for it to run unless `START_WIDTH` started threads have not yet run.

        `threading.Thread.start` waits until the new thread has run (taken
        the GIL and set its ``_started`` event): two thread wake-ups per
        spawn, and on a loaded machine the spawner then waits for a CPU
        for the new thread and again for itself, each time. Here the
        spawner goes on at once (`_start_unwaited`) and only waits when
        `START_WIDTH` of its threads have not yet reached `_loop`: they
        start beside it, and at most that many wait for the GIL at once
        (an unbounded number of threads waiting for it time out and wake
        every 5 ms, the storm `StopPacer` avoids for stops). Mail sent to
        the actor meanwhile waits in its queue; `join` waits for the start.
        """
        _starting.acquire()
        try:
            _start_unwaited(self.thread)
        except BaseException:
            _starting.release()
            raise

    def join(self) -> None:
        """Wait until the thread has started, then until it has ended."""
        self.thread._started.wait()  # type: ignore[attr-defined]  # noqa: SLF001 - `threading.Thread.join` refuses a thread not yet run
        self.thread.join()

    def submit(self, cell: Cell) -> None:
        """Run `cell`'s turn on my thread: at once, unless a burst of wake-ups engaged the system's `StopPacer`."""
        pacer = self.pacer
        if not pacer.engaged and pacer.unpaced < pacer.width:
            pacer.unpaced += 1  # a hint: racy, and reset when the pacer lets go
            self._counted = True
            self._runq.put(cell)
            return
        if getattr(THREAD_STATE, "executor", None) is self:
            self._runq.put(cell)  # the actor's own thread: nothing to wake
            return
        pacer.engaged = True
        pacer.submit(self, cell)

    def submit_stop(self, cell: Cell) -> None:
        """Submit `cell` for a turn that will stop it, through the system's `StopPacer`."""
        self.pacer.submit(self, cell)

    def wake_paced(self, cell: Cell) -> None:
        """Submit `cell`; the thread tells the pacer once the turn starts (the pacer's)."""
        self._paced = True
        self._runq.put(cell)

    def wake(self, cell: Cell) -> None:
        """Nothing to do: a turn here is never suspended (see `Cell.post_system`)."""

    def _loop(self) -> None:
        _starting.release()  # this thread has run: the next start may go on (see `start`)
        bind_executor(self)
        get = self._runq.get
        try:
            while True:
                cell = get()
                if self._counted:
                    self._counted = False
                    self.pacer.unpaced -= 1
                elif self._paced:
                    self._paced = False
                    self.pacer.started()
                cell.run()
                if cell.executor is not self:  # terminated: its late mail drains on the sender's thread
                    return
        finally:
            try:
                self._on_exit(self)
            except Exception:  # noqa: BLE001
                logger.opt(exception=True).error("Exit hook of {} failed", self.thread.name)


class _ActorThread(threading.Thread):
    """A thread-mode actor's thread: joined at interpreter exit as any non-daemon thread, registered in O(1).

    On CPython 3.11-3.12, a non-daemon `threading.Thread` registers the lock
    that interpreter exit joins it by (``threading._shutdown_locks``) from
    its own first steps, under the GIL, and first sweeps that whole set for
    locks of threads that have ended (``_maintain_shutdown_locks``, called
    again from ``_stop`` on every join). With one thread per actor that is
    O(threads) per start: starting 10,000 non-daemon threads swept ~50M
    locks (a set walk and a ``locked()`` call each), ~2.5 s of GIL-held CPU
    that grew with every thread; perf put 23% of a 10,000-actor spawn in
    ``setiter_iternext`` alone, and 10,000 bare ``threading.Thread`` starts
    took 10.4-12.3 s of CPU (48-66 s of wall at a load of 14-42) against
    2.3 s (5.8-7.8 s) for daemon ones, whose start skips the sweep.
    Here the sweep runs only once the set has doubled since the last one
    (amortized O(1) a start; at most about twice the live non-daemon
    threads, plus `_SWEEP_MIN`, are kept), and a join discards its own lock.
    What exit joins is unchanged: every live non-daemon thread's lock is in
    the set. Daemon threads and other versions take `threading.Thread`'s
    own path (3.13 dropped the set).

    Thread contract: `_set_tstate_lock` runs on the new thread as it starts;
    `_stop` on whichever thread sees it ended (a join); both under
    ``threading._shutdown_locks_lock``, as threading's own.
    """

    def _set_tstate_lock(self) -> None:
        global _sweep_at  # noqa: PLW0603 - one threshold per process, guarded by threading's lock
        if not _REGISTER_O1 or self.daemon:
            super()._set_tstate_lock()  # type: ignore[misc]  # a private hook of 3.11-3.12
            return
        # threading rebinds both after a fork: read them at each call.
        lock = threading._set_sentinel()  # type: ignore[attr-defined]  # noqa: SLF001
        self._tstate_lock = lock
        lock.acquire()
        with threading._shutdown_locks_lock:  # type: ignore[attr-defined]  # noqa: SLF001
            locks = threading._shutdown_locks  # type: ignore[attr-defined]  # noqa: SLF001
            if len(locks) >= _sweep_at:
                threading._maintain_shutdown_locks()  # type: ignore[attr-defined]  # noqa: SLF001
                _sweep_at = max(2 * len(locks), _SWEEP_MIN)
            locks.add(lock)

    def _stop(self) -> None:
        if not _REGISTER_O1 or self.daemon:
            super()._stop()  # type: ignore[misc]  # a private hook of 3.11-3.12
            return
        lock = self._tstate_lock
        self._is_stopped = True
        self._tstate_lock = None  # last, as threading's own `_stop` (its `_wait_for_tstate_lock` relies on it)
        if lock is not None:
            with threading._shutdown_locks_lock:  # type: ignore[attr-defined]  # noqa: SLF001
                threading._shutdown_locks.discard(lock)  # type: ignore[attr-defined]  # noqa: SLF001


_REGISTER_O1 = sys.version_info < (3, 13) and all(
    hasattr(threading, name)
    for name in ("_set_sentinel", "_shutdown_locks", "_shutdown_locks_lock", "_maintain_shutdown_locks")
)
"""Whether `_ActorThread` registers itself for interpreter exit's join (CPython 3.11-3.12)."""

_SWEEP_MIN = 64
"""The fewest locks ``threading._shutdown_locks`` holds before `_ActorThread` sweeps it for ended threads."""

_sweep_at = _SWEEP_MIN
"""`_ActorThread` sweeps ``threading._shutdown_locks`` once it holds this many (under threading's lock)."""


START_WIDTH = 64
"""How many actor threads a process may have started that have not yet run (`ThreadExecutor.start`)."""

_starting = threading.BoundedSemaphore(START_WIDTH)
"""A permit per actor thread started and not yet in its `ThreadExecutor._loop`."""


def _start_unwaited(thread: threading.Thread) -> None:
    """Start `thread` as `threading.Thread.start` does, without waiting until it has run (CPython 3.11-3.12).

    The thread is in ``threading._limbo`` until it runs, as during
    `threading.Thread.start`'s own wait. On other versions (3.13 starts
    threads another way) this is `threading.Thread.start`.
    """
    limbo = getattr(threading, "_limbo", None)
    limbo_lock = getattr(threading, "_active_limbo_lock", None)
    start_new_thread = getattr(threading, "_start_new_thread", None)
    if sys.version_info >= (3, 13) or limbo is None or limbo_lock is None or start_new_thread is None:
        thread.start()
        return
    if thread._started.is_set():  # type: ignore[attr-defined]  # noqa: SLF001 - the check `Thread.start` makes
        msg = "threads can only be started once"
        raise RuntimeError(msg)
    _register_start_wait()
    with limbo_lock:
        limbo[thread] = thread
    try:
        start_new_thread(thread._bootstrap, ())  # type: ignore[attr-defined]  # noqa: SLF001
    except Exception:
        with limbo_lock:
            del limbo[thread]
        raise


def _register_start_wait() -> None:
    """Have interpreter exit wait, before it joins non-daemon threads, until every started actor thread has run."""
    global _start_wait_registered  # noqa: PLW0603 - once per process
    if _start_wait_registered:
        return
    _start_wait_registered = True
    register = getattr(threading, "_register_atexit", None)
    if register is not None:
        with contextlib.suppress(RuntimeError):  # the interpreter is exiting already
            register(_wait_for_starts)


def _wait_for_starts() -> None:
    # A thread that has not yet run is not among those exit joins: take every
    # permit (each thread gives its own back once it runs), then give them
    # back. Bounded: a thread that died before it ran never gives its back.
    deadline = time.monotonic() + _START_WAIT_AT_EXIT
    taken = 0
    while taken < START_WIDTH and _starting.acquire(timeout=max(deadline - time.monotonic(), 0.0)):
        taken += 1
    for _ in range(taken):
        _starting.release()


_START_WAIT_AT_EXIT = 10.0
"""Seconds interpreter exit waits, at most, for started actor threads to run (`_wait_for_starts`)."""


_start_wait_registered = False


# -- asyncio mode ------------------------------------------------------------------

DEFAULT_SLOW_CALLBACK_DURATION = 0.1
"""Seconds a callback or handler step may hold the loop before a warning (asyncio's debug default)."""


class AsyncioExecutor:
    """Runs cell turns and handler tasks on one event loop.

    Args:
        system_name: names the loop thread (``troupe-<system>-asyncio``).
        loop: a running loop to use; None: start one on a thread of our own
            when `ensure_running` is first called.
        clock: where the time each callback holds the loop is read.
        slow_callback_duration: seconds above which holding the loop logs a
            warning; None never warns.
        fallback: the executor that finishes off actors whose given loop has
            closed (the system's dispatcher pool).

    Thread contract: `submit`, `wake`, `ensure_running` and `shutdown` may
    be called from any thread; everything else runs on the loop's thread.
    """

    def __init__(
        self,
        system_name: str,
        *,
        loop: asyncio.AbstractEventLoop | None,
        clock: Clock,
        slow_callback_duration: float | None,
        fallback: Executor,
    ) -> None:
        if loop is not None and not isinstance(loop, asyncio.AbstractEventLoop):
            msg = f"loop must be an asyncio event loop (e.g. asyncio.get_running_loop()), got {loop!r}"
            raise TypeError(msg)
        if slow_callback_duration is not None and not slow_callback_duration >= 0:
            msg = f"slow_callback_duration must be None (never warn) or >= 0 seconds, got {slow_callback_duration!r}"
            raise ValueError(msg)
        self.system_name = system_name
        self.thread_name = f"troupe-{system_name}-asyncio"
        self.given = loop is not None
        # Invariant: None until an asyncio actor is first spawned (own loop);
        # never changes after that.
        self.loop: asyncio.AbstractEventLoop | None = loop
        self.slow_callback_duration = slow_callback_duration
        self._slow = math.inf if slow_callback_duration is None else slow_callback_duration
        self._now = clock.now
        self._fallback = fallback
        self._thread: threading.Thread | None = None
        self._stop_serving: asyncio.Event | None = None
        self._lock = threading.Lock()
        # Turns run in one context of their own, not in a copy of each sender's.
        self._context = contextvars.Context()
        # Cells submitted from other threads, drained on the loop by `_drain`.
        # Invariant: whenever `_drain_pending` is True, a `_drain` that has not
        # yet cleared it is scheduled, so a cell queued before it reads the
        # flag is run (see `submit`).
        self._inbox: deque[Cell] = deque()
        self._drain_pending = False

    def __repr__(self) -> str:
        return f"<AsyncioExecutor {self.thread_name} loop={self.loop!r}>"

    # -- the loop ----------------------------------------------------------------

    def ensure_running(self) -> asyncio.AbstractEventLoop:
        """Return the loop, starting our own thread on first use.

        Raises:
            EventLoopError: the given loop is closed or not running.
        """
        if self.given:
            loop = self._loop()
            if loop.is_closed() or not loop.is_running():
                state = "closed" if loop.is_closed() else "not running"
                msg = (
                    f"system {self.system_name!r} was given an event loop that is {state}; spawn asyncio actors "
                    "from code running on that loop (e.g. inside asyncio.run(main())), or create the system "
                    "without loop= so that it runs a loop of its own"
                )
                raise EventLoopError(msg)
            return loop
        with self._lock:
            if self.loop is None:
                loop = asyncio.new_event_loop() if sys.platform == "win32" else ParkingEventLoop()
                self._stop_serving = asyncio.Event()
                self._thread = threading.Thread(target=self._serve, args=(loop,), name=self.thread_name, daemon=True)
                self.loop = loop
                self._thread.start()
            return self.loop

    def _serve(self, loop: asyncio.AbstractEventLoop) -> None:
        bind_executor(self)
        stop = self._stop_serving
        try:
            if stop is None:
                msg = f"the event loop thread {self.thread_name} started before its stop event existed"
                raise TroupeInternalError(msg)  # noqa: TRY301 - logged below, as the thread's last words
            # The Runner cancels leftover tasks, shuts down async generators and
            # the default executor, and closes the loop when we stop serving.
            with asyncio.Runner(loop_factory=lambda: loop) as runner:
                runner.run(stop.wait())
        except BaseException as exc:  # noqa: BLE001 - a thread's last words go to the log
            # Nobody waits on this thread to hear it: logging is the one way out.
            err = TroupeInternalError(f"the event loop thread {self.thread_name} died: {exc!r}; please report it")
            err.__cause__ = exc
            logger.opt(exception=err).critical("{}", err)

    def _loop(self) -> asyncio.AbstractEventLoop:
        loop = self.loop
        if loop is None:  # an asyncio cell exists only once `ensure_running` made the loop
            msg = f"the asyncio executor of system {self.system_name!r} was used before its loop was started"
            raise TroupeInternalError(msg)
        return loop

    def on_loop_thread(self) -> bool:
        """Return whether the calling thread is running this executor's loop right now."""
        return self.loop is not None and _get_running_loop() is self.loop

    def shutdown(self) -> None:
        """Stop and join our own loop thread (no-op for a given loop or one never started)."""
        with self._lock:
            thread, loop, stop = self._thread, self.loop, self._stop_serving
        if thread is None or loop is None or stop is None:
            return
        with contextlib.suppress(RuntimeError):  # already closed
            loop.call_soon_threadsafe(stop.set)
        if thread is not threading.current_thread():
            thread.join()

    # -- running cells -------------------------------------------------------------

    def submit(self, cell: Cell) -> None:
        """Run ``cell.run()`` soon on the loop (the caller holds ``cell.sched``)."""
        loop = self.loop
        if loop is None:
            loop = self._loop()
        if _get_running_loop() is loop:
            loop.call_soon(self._run, cell, context=self._context)
            return
        self._inbox.append(cell)
        if not self._drain_pending:
            self._drain_pending = True
            try:
                loop.call_soon_threadsafe(self._drain, context=self._context)
            except RuntimeError:
                self._drain_lost()
        elif loop.is_closed():
            self._drain_lost()

    def _drain(self) -> None:
        # Clear the flag first: a cell queued from now on schedules another drain.
        self._drain_pending = False
        pop = self._inbox.popleft
        for _ in range(len(self._inbox)):  # only what is here now: fair to what else is ready
            self._run(pop())

    def _drain_lost(self) -> None:
        while True:
            try:
                cell = self._inbox.popleft()
            except IndexError:
                return
            self._lost(cell)

    def wake(self, cell: Cell) -> None:
        """Have a suspended turn of `cell` run its system messages now."""
        loop = self._loop()
        try:
            if _get_running_loop() is loop:
                loop.call_soon(self._wake, cell, context=self._context)
            else:
                loop.call_soon_threadsafe(self._wake, cell, context=self._context)
        except RuntimeError:
            self._lost(cell)

    def start_handler(self, cell: Cell, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[None]:
        """Run a handler's coroutine as a task; ``cell.deliver(driver, ...)`` is called when it ends.

        The task's first step runs in a loop pass to come, unless `step_now` runs it first.
        """
        loop = self._loop()
        driver = _Driver(coro, cell, self)
        driver.context = context = contextvars.copy_context()
        driver.task = task = loop.create_task(driver, context=context)
        return task

    def step_now(self, task: asyncio.Task[None]) -> tuple[Any, BaseException | None] | None:
        """Run the first step of a handler task made by `start_handler` right here, in the turn that made it.

        Return what its coroutine ended with, ``(value, exception)``, if it
        ended in that step: nothing is delivered (``cell.deliver`` is not
        called), the caller delivers it, and the task's own first step then
        only ends the task. Return None if the coroutine is suspended at an
        await (the task takes it from there), or if no step was run because
        another task is running (a turn run from a task's step: the task
        steps first in a pass to come, as without this).

        Why: a handler that ends without suspending (an echo, a cache hit,
        a state update) answers in the turn that received its message, not
        one loop pass later (measured: an awaited ask from another loop to
        an async echo handler, ~34 -> ~24 µs, the loop pass in between let
        the asker's thread take the GIL and hand it back). It runs as the
        task, as an eager task of Python 3.12 does: `asyncio.current_task()`
        is that task, so `asyncio.timeout`, task groups and cancellation
        behave as in any task, and its context is the task's.
        """
        loop = self._loop()
        if _current_task(loop) is not None:
            return None
        driver = cast("_Driver", task.get_coro())
        _enter_task(loop, task)
        try:
            return driver.context.run(driver.step_now)
        finally:
            _leave_task(loop, task)

    def _run(self, cell: Cell) -> None:
        now = self._now
        start = now()
        cell.run()  # never raises: it logs
        held = now() - start
        if held > self._slow:
            self.warn_slow(cell, held)

    def _wake(self, cell: Cell) -> None:
        now = self._now
        start = now()
        cell.run_system_messages()  # never raises: it reports a TroupeInternalError
        held = now() - start
        if held > self._slow:
            self.warn_slow(cell, held)

    def warn_slow(self, cell: Cell, held: float) -> None:
        """Log that `cell`'s actor held the loop for `held` seconds."""
        logger.warning(
            "{} held the event loop of system {!r} for {:.3f} s (slow_callback_duration is {} s); "
            "every asyncio actor stood still meanwhile. Await instead of blocking (e.g. asyncio.to_thread "
            "for a blocking call), or spawn the actor with mode='thread'",
            cell.ref,
            self.system_name,
            held,
            self.slow_callback_duration,
        )

    def _lost(self, cell: Cell) -> None:
        # The given loop has closed under live actors. Nothing can run on it
        # again: the actor fails, on the system's dispatcher pool, so that its
        # children stop, its askers hear why and shutdown does not hang. The
        # caller holds `sched` (or the dead turn did): hand it to the pool.
        msg = (
            f"the event loop that ran {cell.ref} in system {self.system_name!r} is closed; "
            "shut the system down (await system.ashutdown()) before its loop stops"
        )
        with self._lock:
            if not cell.hand_over(self, self._fallback, EventLoopError(msg)):
                return  # another thread got here first; its turn takes our system message too
        logger.error("{}", msg)
        self._fallback.submit(cell)


_NOTHING = object()
_EAGER = object()
_FINISHED = object()
_current_task = asyncio.current_task
_enter_task = asyncio.tasks._enter_task  # noqa: SLF001 - what a 3.12 eager task does; C in 3.11
_leave_task = asyncio.tasks._leave_task  # noqa: SLF001


class _Driver(Coroutine[Any, Any, None]):
    """What a handler task runs: an asyncio cell's coroutines, one after the other.

    The task drives this object; it drives the current handler coroutine and
    times each step. When that coroutine ends, the outcome is delivered right
    here, in the task's last step (`Cell.deliver`), instead of from a
    done-callback one loop iteration later; if the turn that goes on then
    meets another coroutine, it hands it to this driver (`next`) and the same
    task runs it: a busy actor costs one task, not one per message.

    asyncio re-raises SystemExit and KeyboardInterrupt out of the loop
    itself; they are delivered as `HandlerExit`, so the cell can apply
    pykka's rule. An asyncio future of another loop gets a clear
    `EventLoopError` thrown in instead of asyncio's bare RuntimeError.
    """

    __slots__ = ("_cell", "_coro", "_executor", "_stash", "context", "next", "outcome", "task")

    def __init__(self, coro: Coroutine[Any, Any, Any], cell: Cell, executor: AsyncioExecutor) -> None:
        self._coro = coro
        self._cell = cell
        self._executor = executor
        self.task: asyncio.Task[None] = None  # type: ignore[assignment]  # set as soon as the task exists
        self.context: contextvars.Context = None  # type: ignore[assignment]  # the task's, set with it
        # The coroutine to run once the current one has ended (set by `AsyncioState.run_handler`).
        self.next: Coroutine[Any, Any, Any] | None = None
        # Invariant: `_NOTHING`, unless the first step was run before the
        # task's (`step_now`): `_EAGER` while it runs, then what the
        # coroutine yielded there (handed to the task as its first step's
        # result), or `_FINISHED` if it ended there (`outcome` holds how).
        self._stash: Any = _NOTHING
        self.outcome: tuple[Any, BaseException | None] | None = None

    def __repr__(self) -> str:
        return f"<handler of {self._cell.ref}: {self._coro!r}>"

    # What asyncio reads to show a task (repr, get_stack, print_stack).
    @property
    def __name__(self) -> str:
        """The current coroutine's qualified name (``Agent.on_receive``)."""
        return getattr(self._coro, "__qualname__", type(self._coro).__qualname__)

    @property
    def cr_frame(self) -> Any:
        """The current coroutine's frame."""
        return getattr(self._coro, "cr_frame", None)

    @property
    def cr_code(self) -> Any:
        """The current coroutine's code."""
        return getattr(self._coro, "cr_code", None)

    @property
    def cr_running(self) -> bool:
        """Whether the current coroutine is running."""
        return bool(getattr(self._coro, "cr_running", False))

    @property
    def cr_await(self) -> Any:
        """What the current coroutine awaits."""
        return getattr(self._coro, "cr_await", None)

    def send(self, value: Any) -> Any:
        """Run the current coroutine to its next suspension point."""
        stash = self._stash
        if stash is not _NOTHING:  # the task's first step, after `step_now` ran it
            return self._replay()
        return self._step(None, value)

    def step_now(self) -> tuple[Any, BaseException | None] | None:
        """Run the first step before the task does (`AsyncioExecutor.step_now`, inside the task and its context)."""
        self._stash = _EAGER
        try:
            yielded = self._step(None, None)
        except StopIteration:  # ended: `_ended` kept the outcome
            return self.outcome
        self._stash = yielded
        return None

    def _replay(self) -> Any:
        stash, self._stash = self._stash, _NOTHING
        if stash is _FINISHED:
            raise StopIteration
        return stash  # what the coroutine awaits: the task waits on it, as if it had stepped itself

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:  # noqa: ARG002 - the coroutine protocol's signature
        """Raise an exception (a cancellation) at the current coroutine's suspension point."""
        exc = typ if val is None and isinstance(typ, BaseException) else (val if val is not None else typ())
        if type(exc) is RuntimeError and "attached to a different loop" in str(exc):
            wrong = EventLoopError(
                f"a handler of {self._cell.ref} awaited an asyncio future that belongs to another event loop "
                f"({exc}); actors of system {self._executor.system_name!r} run on its own loop. "
                "To cross loops, await troupe futures (ask/proxy), or use asyncio.run_coroutine_threadsafe / "
                "asyncio.wrap_future"
            )
            wrong.__cause__ = exc
            exc = wrong
        stash = self._stash
        if stash is not _NOTHING:  # cancelled before the task's first step, after `step_now` ran it
            self._stash = _NOTHING
            if stash is _FINISHED:
                raise StopIteration
            cancel = getattr(stash, "cancel", None)
            if cancel is not None and isinstance(exc, asyncio.CancelledError):
                cancel()  # as a task cancels the future it waits on
        return self._step(exc, None)

    def close(self) -> None:
        """Close the current coroutine."""
        self._coro.close()

    def __await__(self) -> Generator[Any, None, Any]:
        return self._coro.__await__()

    def _step(self, exc: BaseException | None, value: Any) -> Any:
        executor = self._executor
        now = executor._now  # noqa: SLF001
        start = now()
        try:
            while True:
                try:
                    if exc is None:
                        return self._coro.send(value)  # suspended at an await: the task waits on it
                    return self._coro.throw(exc)
                except StopIteration as stop:
                    value, exc = stop.value, None
                except (SystemExit, KeyboardInterrupt) as caught:
                    value, exc = None, HandlerExit(caught)
                except BaseException as caught:  # noqa: BLE001 - delivered like any outcome
                    value, exc = None, caught
                if not self._ended(value, exc):
                    raise StopIteration
                value, exc = None, None
        finally:
            held = now() - start
            # A first step run in the turn (`step_now`) is timed with that turn.
            if held > executor._slow and self._stash is _NOTHING:  # noqa: SLF001
                executor.warn_slow(self._cell, held)

    def _ended(self, value: Any, exc: BaseException | None) -> bool:
        """Deliver the current coroutine's outcome; return whether there is a next one to run."""
        if self._stash is _EAGER:  # ended in `step_now`: its caller delivers
            self._stash = _FINISHED
            self.outcome = (value, exc)
            self.task = None  # type: ignore[assignment]  # break the task <-> driver cycle
            return False
        if not self._cell.deliver(self, value, exc):  # the loop was lost: nothing to deliver to
            return False
        coro = self.next
        if coro is None:
            self.task = None  # type: ignore[assignment]  # the task ends: break the task <-> driver cycle
            return False
        self.next = None
        self._coro = coro
        return True
