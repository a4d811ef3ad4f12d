"""The runtime's side of observability: measured turns and the hooks a metrics service fills in.

Off by default, and then it costs a turn one attribute check
(``system.observer is None``, once per turn, not per message) and nothing
else: no clock read, no counter. A service (`actors.observability`) turns it
on by setting ``system.observer`` to a `Probe` (its subclass); from then on
every turn of a running actor is counted: the common one (unsampled, not
the cell's first) by `Cell.run` itself, inline (a Python call less a turn:
~500 instructions), and every other one by `Probe.run_turn`, which runs
the cell's own turn loop (`Cell._process`, or the asyncio cell's) and counts
around it. What it counts lives in one `CellStats` per cell, written only by
that cell's turn (so without a lock: a cell's turns never overlap), and read
by whoever takes a snapshot (a slightly stale read, never a torn one: each
field is one Python object).

Handler time is sampled: with ``sample_every=N`` (N > 1) one turn in N
times its first message alone, between two clock reads, into a fixed-bucket
histogram, and is timed as a whole; busy time (dispatcher utilization)
counts that turn N times, an estimate of every turn's; the other turns
read no clock, their messages are counted. With ``sample_every=1`` (and always for asyncio cells)
every message is run and timed one at a time: exact, and dearer. An
asyncio actor's coroutine handler is timed from the turn that starts it to
its end, awaits included (counted when it ends, on the loop thread).
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from functools import partial
from typing import TYPE_CHECKING, Any

from actors._core.cell import count_observing
from actors._core.executors import ThreadExecutor
from actors._core.lifecycle import RUNNING, STARTING, STOPPING, TERMINATED
from actors._core.ref import count_tracing, trace_message
from actors._core.tracing import TRACING

if TYPE_CHECKING:
    import pykka

    from actors._core.cell import Cell
    from actors._core.system import ActorSystem
    from actors._core.tracing import Tracer

__all__ = [
    "HANDLER_BUCKETS",
    "CellStats",
    "Probe",
    "cell_mode",
    "cell_state",
    "live_cells",
    "pool_size",
    "set_observer",
    "set_tracer",
    "trace_message",
]

_clock = time.perf_counter

HANDLER_BUCKETS: tuple[float, ...] = (
    1e-6,
    2.5e-6,
    5e-6,
    1e-5,
    2.5e-5,
    5e-5,
    1e-4,
    2.5e-4,
    5e-4,
    1e-3,
    2.5e-3,
    5e-3,
    1e-2,
    2.5e-2,
    5e-2,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
"""Upper bounds (seconds, inclusive) of the handler-time histogram; one more bucket holds the rest.

OpenTelemetry's messaging buckets start at 5 ms; an actor's handler is often
a microsecond, so these start at 1 µs and end at OTel's 10 s.
"""


class CellStats:
    """What the runtime counted for one cell (or, folded, for the terminated cells of one class).

    Written only by the cell's own turns (`Probe.run_turn`, the failure
    hooks), so no lock; `Probe.retire` folds it into its class's total under
    the probe's lock once the cell has terminated.
    """

    __slots__ = ("buckets", "busy", "countdown", "failures", "handled", "high_water", "restarts", "time_sum", "timed")

    def __init__(self, countdown: int = -1) -> None:
        self.handled = 0
        self.failures = 0
        self.restarts = 0  # only in a class's folded total: a live cell's is its `incarnation`
        # Invariant: the largest mailbox length seen at the start of a turn or message.
        self.high_water = 0
        # Invariant: the unsampled turns left before the next sampled one (0:
        # the next turn is sampled), or -1: every message is timed, one at a
        # time (sample_every=1, an asyncio cell). A small int counting down,
        # not a turn count taken modulo: no allocation and no division a turn.
        self.countdown = countdown
        # Seconds spent in measured turns (all of them, timed or not).
        self.busy = 0.0
        # The histogram: buckets[i] counts timed messages <= HANDLER_BUCKETS[i]; the last, the rest.
        self.buckets = [0] * (len(HANDLER_BUCKETS) + 1)
        self.timed = 0
        self.time_sum = 0.0

    def timed_one(self, elapsed: float) -> None:
        """Count one handled message whose handler took `elapsed` seconds (into the histogram)."""
        self.handled += 1
        self.timed += 1
        self.time_sum += elapsed
        self.buckets[bisect_left(HANDLER_BUCKETS, elapsed)] += 1

    def fold(self, other: CellStats) -> None:
        """Add `other`'s counts into this one (high-water: the larger)."""
        self.handled += other.handled
        self.failures += other.failures
        self.restarts += other.restarts
        self.high_water = max(self.high_water, other.high_water)
        self.busy += other.busy
        self.timed += other.timed
        self.time_sum += other.time_sum
        buckets = self.buckets
        for i, n in enumerate(other.buckets):
            buckets[i] += n


class Probe:
    """``system.observer``: runs every turn measured; subclassed by the metrics service.

    Args:
        system: the system it observes (it does not install itself: the
            service sets ``system.observer``).
        sample_every: time the first message of one turn in this many
            (1: every message, one at a time).

    Thread contract: `run_turn`, `handler_failed` run on the turn of the cell
    they name (a dispatcher thread, the actor's thread, the event loop);
    `retire` runs where the cell terminates (its last turn); `collect` on
    any thread.
    """

    def __init__(self, system: ActorSystem, *, sample_every: int = 16) -> None:
        self.system = system
        self.sample_every = sample_every
        self.pool = system.inline_executor
        # Invariant: the live cells that had a measured turn; a cell leaves it
        # (folded into `retired`) when it terminates. Guarded by `lock` for
        # removal and for `collect`; a cell's own turn inserts it (a dict
        # store is atomic).
        self.cells: dict[Cell, CellStats] = {}
        self.retired: dict[type, CellStats] = {}
        self.retired_pool_busy = 0.0  # busy seconds of terminated pooled cells (dispatcher utilization)
        self.lock = threading.Lock()
        self.started = time.perf_counter()

    def snapshot(self) -> Any:
        """Return the service's immutable snapshot (`ActorSystem.metrics`); overridden by the service."""
        raise NotImplementedError

    def collect(self) -> tuple[list[tuple[Cell, CellStats]], dict[type, CellStats], float]:
        """Return the live cells' stats, a copy of the retired totals and their pooled busy seconds (any thread)."""
        with self.lock:
            busy = self.retired_pool_busy
            live = list(self.cells.items())
            retired = {}
            for cls, stats in self.retired.items():
                copy = CellStats()
                copy.fold(stats)
                retired[cls] = copy
        return live, retired, busy

    # -- hooks the cell calls -------------------------------------------------------

    def run_turn(self, cell: Cell, until: pykka.Future[Any] | None) -> None:
        """Run the user-message part of a turn of `cell` (RUNNING, not suspended), counting it.

        `Cell.run` runs the common turn (countdown above 0) itself, the same
        way as the first branch here (keep the two alike); this runs it too,
        for a cell's first measured turn.
        """
        # The common turn (pooled or thread, not sampled) pays: a dict get, a
        # length and three counter updates (the countdown a small int); no
        # call but the cell's loop, and no clock read (two perf_counter calls
        # were ~0.1-0.3 µs a turn here, the most of what metrics cost a turn).
        # The sampled turn (one in `sample_every`) is timed as a whole, and its
        # first message alone; busy seconds count it `sample_every` times (an
        # estimate of every turn's; exact with sample_every=1).
        stats = self.cells.get(cell)
        if stats is None:
            stats = self._stats(cell)
        queue = cell.queue
        depth = len(queue)
        if depth > stats.high_water:  # noqa: PLR1730 - not max(): a builtin call per turn
            stats.high_water = depth
        countdown = stats.countdown
        if countdown > 0:
            stats.countdown = countdown - 1
            stats.handled += cell._process(cell.throughput, until)  # noqa: SLF001 - the cell's own loop
            return
        if not countdown:
            sample = self.sample_every
            stats.countdown = sample - 1
            clock = _clock
            start = clock()
            if not depth:
                stats.handled += cell._process(cell.throughput, until)  # noqa: SLF001
                stats.busy += (clock() - start) * sample
                return
            # A sampled turn: its first message timed alone, the rest as usual.
            taken = cell._process(1, until)  # noqa: SLF001
            elapsed = clock() - start
            if (
                taken
                and not cell.sysq
                and cell.state == RUNNING
                and not cell.suspended
                and (until is None or not until._done)  # type: ignore[attr-defined]  # noqa: SLF001
            ):
                stats.handled += cell._process(cell.throughput - 1, until)  # noqa: SLF001
            stats.busy += (clock() - start) * sample
            if taken:
                stats.timed_one(elapsed)
            return
        clock = _clock
        aio = cell.aio
        # Every message timed (sample_every=1, and asyncio cells): one at a time.
        # A coroutine handler runs as a task after the turn started it: it is
        # timed from then to its end (awaits included), by its in-flight entry's
        # `on_done` (the loop thread, so still one writer), and counted then.
        limit = cell.throughput
        while limit > 0 and not cell.sysq and len(queue) and cell.state == RUNNING and not cell.suspended:
            if until is not None and until._done:  # type: ignore[attr-defined]  # noqa: SLF001 - our futures
                return
            if aio is not None and (cell.awaiting is not None or cell.aio is not aio):
                return
            depth = len(queue)
            stats.high_water = max(stats.high_water, depth)
            limit -= 1
            start = clock()
            if aio is None:
                taken = cell._process(1, until)  # noqa: SLF001
            else:
                handling = aio.handling
                running = len(handling)
                aio.process(1)  # the only consumer: it takes the one message seen above
                if len(handling) > running:  # its handler is a coroutine, now a task (the newest entry)
                    handling[next(reversed(handling))].on_done = partial(_timed_since, stats, start)
                    stats.busy += clock() - start
                    continue
                taken = 1
            elapsed = clock() - start
            if not taken:
                return
            stats.busy += elapsed
            stats.timed_one(elapsed)

    def handler_failed(self, cell: Cell) -> None:
        """A handler of `cell` raised (a tell's or an ask's), on its turn."""
        self._stats(cell).failures += 1

    def _stats(self, cell: Cell) -> CellStats:
        """Return `cell`'s counts, made on its first turn (only its own turns call this)."""
        stats = self.cells.get(cell)
        if stats is None:
            sample = self.sample_every
            stats = self.cells[cell] = CellStats(sample - 1 if sample != 1 and cell.aio is None else -1)
        return stats

    def retire(self, cell: Cell) -> None:
        """`cell` has terminated: fold its counts (and restarts) into its class's total."""
        with self.lock:
            stats = self.cells.pop(cell, None)
            if stats is None:
                if not cell.incarnation:
                    return
                stats = CellStats()
            stats.restarts = cell.incarnation
            if cell_mode(cell) == "pooled":
                self.retired_pool_busy += stats.busy
            total = self.retired.get(cell.actor_class)
            if total is None:
                total = self.retired[cell.actor_class] = CellStats()
            total.fold(stats)


def _timed_since(stats: CellStats, start: float) -> None:
    """A coroutine handler begun at `start` (``perf_counter``) has ended: count it, timed (the loop thread)."""
    stats.timed_one(time.perf_counter() - start)


def live_cells(system: ActorSystem) -> list[Cell]:
    """Return every cell of `system` that has not terminated, the root guardian first (any thread)."""
    return system._live_cells()  # noqa: SLF001


def pool_size(system: ActorSystem) -> int:
    """Return the number of threads of `system`'s pooled dispatcher."""
    return system._pool.size  # noqa: SLF001


def cell_mode(cell: Cell) -> str:
    """Return the mode `cell` runs in: ``"pooled"``, ``"thread"`` or ``"asyncio"``."""
    if cell.aio is not None or cell.executor is cell.system._asyncio:  # noqa: SLF001
        return "asyncio"
    if isinstance(cell.executor, ThreadExecutor):
        return "thread"
    return "pooled"


def cell_state(cell: Cell) -> str:
    """Return `cell`'s state: ``"starting"``, ``"running"``, ``"suspended"``, ``"stopping"`` or ``"terminated"``."""
    state = cell.state
    if state == STARTING:
        return "starting"
    if state == RUNNING:
        return "suspended" if cell.suspended else "running"
    if state == STOPPING:
        return "stopping"
    if state == TERMINATED:
        return "terminated"
    return str(state)


_tracer_lock = threading.Lock()


def set_observer(system: ActorSystem, observer: Probe | None) -> Probe | None:
    """Make `observer` the probe every turn of `system` runs through (None: off); return the previous one. Any thread.

    A turn already under way finishes as it began (counted or not).
    """
    with _tracer_lock:
        previous = system.observer
        system.observer = observer
        count_observing((observer is not None) - (previous is not None))
    return previous


def set_tracer(system: ActorSystem, tracer: Tracer | None) -> Tracer | None:
    """Make `tracer` the one `system`'s refs send through (None: tracing off); return the previous one. Any thread.

    Messages already queued keep the context they were sent with; one queued
    traced and handled after tracing is off runs without a span. The previous
    tracer, if another, is closed (`Tracer.close`) on this thread after the swap.
    """
    with _tracer_lock:
        previous = system.tracer
        system.tracer = tracer
        count_tracing((tracer is not None) - (previous is not None))
        if tracer is not None and previous is None:
            TRACING.append(None)
        elif tracer is None and previous is not None:
            TRACING.pop()
    if previous is not None and previous is not tracer:
        previous.close()
    return previous
