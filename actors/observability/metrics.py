"""Per-actor-class metrics: `enable_metrics`, the immutable `MetricsSnapshot` and its flat view.

    metrics = enable_metrics(system)          # off by default: a turn then pays one check
    snap = system.metrics()                   # a MetricsSnapshot (frozen attrs)
    snap.classes["Worker"].handler_time.p99   # seconds, from a fixed-bucket histogram
    snap.flat()["class.Worker.messages_handled"]

What is counted, and where (see `actors._core.observe`): every turn of a
running actor goes through the system's probe, which counts the messages its
turn loop takes, the mailbox length at the start of each turn (the high-water
mark) and, for one turn in `sample_every` (16 by default; 1: every message),
a message's handler time and the turn's (busy seconds count each such turn
`sample_every` times: an estimate, exact with 1). A
handler that raises counts as a failure; a restart is a new instance in the
same cell; dead letters are counted per recipient class by a dead-letter
subscriber. Counters run from `enable_metrics` on. Actors are aggregated per
class (``__qualname__``; two classes of one name are one row), never per
actor: a snapshot's size grows with the number of classes, not of actors.
The root guardian is not counted.

Flat names (`METRIC_NAMES`; ``<Class>`` is an actor class's ``__qualname__``):

===========================================  ==========================================
``system.actors``                            live actors (gauge)
``system.actors.mode.<mode>``                live actors per mode: pooled, thread, asyncio
``system.actors.state.<state>``              per state: starting, running, suspended, stopping
``system.messages_handled``                  messages handled, all classes (counter)
``system.failures`` / ``system.restarts``    handler exceptions / restarts, all classes
``system.dead_letters``                      dead letters since metrics were enabled
``system.dispatcher.threads``                threads of the pooled dispatcher
``system.dispatcher.busy_seconds``           seconds pooled turns ran (counter; from the sampled turns)
``system.dispatcher.utilization``            busy seconds / (threads x uptime), 0..1
``system.uptime_seconds``                    seconds since metrics were enabled
``system.tracing.spans_dropped``             spans the tracer dropped, its queue full (counter; 0: none)
``class.<Class>.actors``                     live actors of the class
``class.<Class>.messages_handled``           messages its actors took from their mailboxes
``class.<Class>.mailbox_depth``              messages queued now, summed over its actors
``class.<Class>.mailbox_high_water``         the longest mailbox one of its actors had
``class.<Class>.handler_seconds.count``      timed messages (all of them with sample_every=1)
``class.<Class>.handler_seconds.sum``        their total handler time
``class.<Class>.handler_seconds.p50``        (and ``.p95``, ``.p99``) quantiles; NaN if none
``class.<Class>.failures``                   its handlers' exceptions
``class.<Class>.restarts``                   its actors' restarts
``class.<Class>.dead_letters``               dead letters addressed to its actors
===========================================  ==========================================

An unknown name: `is_metric_name` says whether a name fits one of these
patterns (a rule on ``class.X.mesages_handled`` can be refused when it is
made); the flat view raises `UnknownMetricError` for a name it does not hold
(``view[name]``), which for a well-formed name means that class has no actor
and no count yet (``name in view`` and ``view.get(name)`` do not raise).
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

import attrs

from actors._core import (
    HANDLER_BUCKETS,
    CellStats,
    DeadLetter,
    FrozenDict,
    Probe,
    cell_mode,
    cell_state,
    check_count,
    live_cells,
    pool_size,
    set_observer,
)
from actors.errors import MetricsOffError, UnknownMetricError

if TYPE_CHECKING:
    from actors._core import ActorSystem

__all__ = [
    "CLASS_METRICS",
    "METRIC_NAMES",
    "MODES_COUNTED",
    "STATES_COUNTED",
    "ClassMetrics",
    "FlatMetrics",
    "HandlerTime",
    "Metrics",
    "MetricsSnapshot",
    "SystemMetrics",
    "disable_metrics",
    "enable_metrics",
    "is_metric_name",
    "metrics_of",
]

MODES_COUNTED = ("pooled", "thread", "asyncio")
STATES_COUNTED = ("starting", "running", "suspended", "stopping")

CLASS_METRICS = (
    "actors",
    "messages_handled",
    "mailbox_depth",
    "mailbox_high_water",
    "handler_seconds.count",
    "handler_seconds.sum",
    "handler_seconds.p50",
    "handler_seconds.p95",
    "handler_seconds.p99",
    "failures",
    "restarts",
    "dead_letters",
)
"""The metrics of each class, as they end its flat names (``class.<Class>.<metric>``)."""

_SYSTEM_NAMES = (
    "system.actors",
    *(f"system.actors.mode.{mode}" for mode in MODES_COUNTED),
    *(f"system.actors.state.{state}" for state in STATES_COUNTED),
    "system.messages_handled",
    "system.failures",
    "system.restarts",
    "system.dead_letters",
    "system.dispatcher.threads",
    "system.dispatcher.busy_seconds",
    "system.dispatcher.utilization",
    "system.uptime_seconds",
    "system.tracing.spans_dropped",
)

METRIC_NAMES: tuple[str, ...] = (*_SYSTEM_NAMES, *(f"class.<Class>.{metric}" for metric in CLASS_METRICS))
"""Every flat name a snapshot can hold; ``<Class>`` stands for an actor class's ``__qualname__``."""

_CLASS_NAME = re.compile(
    r"class\.(?P<cls>[A-Za-z_][\w.<>]*)\.(?P<metric>" + "|".join(map(re.escape, CLASS_METRICS)) + r")"
)
_SYSTEM_SET = frozenset(_SYSTEM_NAMES)


def is_metric_name(name: str) -> bool:
    """Return whether `name` is one of the documented flat names (`METRIC_NAMES`), for any class."""
    return name in _SYSTEM_SET or _CLASS_NAME.fullmatch(name) is not None


@attrs.frozen
class HandlerTime:
    """A fixed-bucket histogram of handler times, in seconds.

    Attributes:
        bounds: the buckets' upper bounds (inclusive); `counts` has one more, for the rest.
        counts: timed messages per bucket (not cumulative).
        count: timed messages in all.
        sum: their total time.
    """

    bounds: tuple[float, ...] = HANDLER_BUCKETS
    counts: tuple[int, ...] = (0,) * (len(HANDLER_BUCKETS) + 1)
    count: int = 0
    sum: float = 0.0

    def quantile(self, q: float) -> float:
        """Return the `q`-quantile (0 <= q <= 1), interpolated inside its bucket as Prometheus does; NaN if empty.

        Raises:
            ValueError: `q` outside [0, 1].
        """
        if not 0.0 <= q <= 1.0:
            msg = f"HandlerTime.quantile: q must be between 0 and 1, got {q!r}"
            raise ValueError(msg)
        if self.count == 0:
            return math.nan
        rank = q * self.count
        seen = 0
        for i, n in enumerate(self.counts):
            if n and seen + n >= rank:
                if i == len(self.bounds):
                    return self.bounds[-1]  # the overflow bucket: its lower bound, as histogram_quantile
                lower = self.bounds[i - 1] if i else 0.0
                return lower + (self.bounds[i] - lower) * ((rank - seen) / n)
            seen += n
        return self.bounds[-1]

    @property
    def p50(self) -> float:
        """The median handler time (seconds); NaN if none was timed."""
        return self.quantile(0.5)

    @property
    def p95(self) -> float:
        """The 95th percentile (seconds); NaN if none was timed."""
        return self.quantile(0.95)

    @property
    def p99(self) -> float:
        """The 99th percentile (seconds); NaN if none was timed."""
        return self.quantile(0.99)


@attrs.frozen
class ClassMetrics:
    """The metrics of one actor class, summed over its actors (live and terminated since enabling)."""

    name: str
    actors: int = 0
    messages_handled: int = 0
    mailbox_depth: int = 0
    mailbox_high_water: int = 0
    handler_time: HandlerTime = HandlerTime()
    failures: int = 0
    restarts: int = 0
    dead_letters: int = 0


@attrs.frozen
class SystemMetrics:
    """The system-wide metrics (see the module's table for each)."""

    actors: int = 0
    actors_by_mode: FrozenDict[str, int] = attrs.field(factory=FrozenDict)
    actors_by_state: FrozenDict[str, int] = attrs.field(factory=FrozenDict)
    messages_handled: int = 0
    failures: int = 0
    restarts: int = 0
    dead_letters: int = 0
    dispatcher_threads: int = 1
    dispatcher_busy_seconds: float = 0.0
    dispatcher_utilization: float = 0.0
    uptime_seconds: float = 0.0
    tracing_spans_dropped: int = 0


class FlatMetrics(Mapping[str, float]):
    """A snapshot as ``{flat name: value}`` (read-only); ``view[unknown]`` raises `UnknownMetricError`."""

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, float]) -> None:
        self._values = dict(values)

    def __getitem__(self, name: str) -> float:
        try:
            return self._values[name]
        except KeyError:
            if is_metric_name(name):
                msg = f"metric {name!r} is well formed but not in this snapshot: that class has no actor or count yet"
            else:
                msg = f"unknown metric {name!r}; the names are {', '.join(METRIC_NAMES)}"
            raise UnknownMetricError(msg) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"FlatMetrics({self._values!r})"


@attrs.frozen
class MetricsSnapshot:
    """What `ActorSystem.metrics()` returns: the system's metrics at one moment, immutable.

    Attributes:
        system: the system-wide figures.
        classes: per actor class (``__qualname__``), every class with a live
            actor or a count since metrics were enabled.
    """

    system: SystemMetrics = SystemMetrics()
    classes: FrozenDict[str, ClassMetrics] = attrs.field(factory=FrozenDict)

    def flat(self) -> FlatMetrics:
        """Return the snapshot as flat names (the module's table) to values, what alert rules read."""
        s = self.system
        values: dict[str, float] = {
            "system.actors": s.actors,
            "system.messages_handled": s.messages_handled,
            "system.failures": s.failures,
            "system.restarts": s.restarts,
            "system.dead_letters": s.dead_letters,
            "system.dispatcher.threads": s.dispatcher_threads,
            "system.dispatcher.busy_seconds": s.dispatcher_busy_seconds,
            "system.dispatcher.utilization": s.dispatcher_utilization,
            "system.uptime_seconds": s.uptime_seconds,
            "system.tracing.spans_dropped": s.tracing_spans_dropped,
        }
        for mode in MODES_COUNTED:
            values[f"system.actors.mode.{mode}"] = s.actors_by_mode.get(mode, 0)
        for state in STATES_COUNTED:
            values[f"system.actors.state.{state}"] = s.actors_by_state.get(state, 0)
        for name, c in self.classes.items():
            prefix = f"class.{name}."
            h = c.handler_time
            values.update(
                {
                    prefix + "actors": c.actors,
                    prefix + "messages_handled": c.messages_handled,
                    prefix + "mailbox_depth": c.mailbox_depth,
                    prefix + "mailbox_high_water": c.mailbox_high_water,
                    prefix + "handler_seconds.count": h.count,
                    prefix + "handler_seconds.sum": h.sum,
                    prefix + "handler_seconds.p50": h.p50,
                    prefix + "handler_seconds.p95": h.p95,
                    prefix + "handler_seconds.p99": h.p99,
                    prefix + "failures": c.failures,
                    prefix + "restarts": c.restarts,
                    prefix + "dead_letters": c.dead_letters,
                }
            )
        return FlatMetrics(values)


class _Row:
    """One class's figures while a snapshot is being built."""

    __slots__ = ("actors", "depth", "stats")

    def __init__(self) -> None:
        self.actors = 0
        self.depth = 0
        self.stats = CellStats()


class Metrics(Probe):
    """A system's metrics (``system.observer`` while on): built by `enable_metrics`.

    Thread contract: the runtime calls its hooks on each actor's turn (see
    `actors._core.observe.Probe`); `snapshot` may be called from any thread,
    and costs O(live actors + classes).
    """

    def __init__(self, system: ActorSystem, *, sample_every: int = 16) -> None:
        super().__init__(system, sample_every=sample_every)
        self._dead_lock = threading.Lock()
        self._dead_letters: dict[str, int] = {}

    def _on_dead_letter(self, letter: DeadLetter) -> None:
        # Any thread that records a dead letter; a dict under a lock.
        cls = getattr(letter.recipient, "actor_class", None)
        name = cls.__qualname__ if cls is not None else "<unknown>"
        with self._dead_lock:
            self._dead_letters[name] = self._dead_letters.get(name, 0) + 1

    def snapshot(self) -> MetricsSnapshot:
        """Return the metrics now, as an immutable `MetricsSnapshot` (any thread)."""
        live, retired, busy = self.collect()
        cells = live_cells(self.system)
        guardian = cells[0]
        rows: dict[str, _Row] = {}

        def row(cls: type) -> _Row:
            name = cls.__qualname__
            found = rows.get(name)
            if found is None:
                found = rows[name] = _Row()
            return found

        by_mode = dict.fromkeys(MODES_COUNTED, 0)
        by_state = dict.fromkeys(STATES_COUNTED, 0)
        actors = 0
        for cell in cells[1:]:
            state = cell_state(cell)
            if state == "terminated":
                continue
            actors += 1
            by_mode[cell_mode(cell)] += 1
            by_state[state] += 1
            r = row(cell.actor_class)
            r.actors += 1
            r.depth += len(cell.queue)
        for cell, stats in live:
            if cell is guardian:
                continue
            r = row(cell.actor_class)
            r.stats.fold(stats)
            r.stats.restarts += cell.incarnation
            if cell_mode(cell) == "pooled":
                busy += stats.busy
        for cls, stats in retired.items():
            row(cls).stats.fold(stats)
        with self._dead_lock:
            dead = dict(self._dead_letters)
        for name in dead:
            if name not in rows:
                rows[name] = _Row()
        classes = {}
        totals = CellStats()
        for name in sorted(rows):
            r = rows[name]
            st = r.stats
            totals.fold(st)
            classes[name] = ClassMetrics(
                name=name,
                actors=r.actors,
                messages_handled=st.handled,
                mailbox_depth=r.depth,
                mailbox_high_water=max(st.high_water, r.depth),
                handler_time=HandlerTime(counts=tuple(st.buckets), count=st.timed, sum=st.time_sum),
                failures=st.failures,
                restarts=st.restarts,
                dead_letters=dead.get(name, 0),
            )
        uptime = time.perf_counter() - self.started
        threads = pool_size(self.system)
        system = SystemMetrics(
            actors=actors,
            actors_by_mode=FrozenDict(by_mode),
            actors_by_state=FrozenDict(by_state),
            messages_handled=totals.handled,
            failures=totals.failures,
            restarts=totals.restarts,
            dead_letters=sum(dead.values()),
            dispatcher_threads=threads,
            dispatcher_busy_seconds=busy,
            dispatcher_utilization=min(1.0, busy / (threads * uptime)) if uptime > 0 else 0.0,
            uptime_seconds=uptime,
            # The current tracer's (an OpenTelemetry one's builder queue full: `OpenTelemetryTracer.dropped`).
            tracing_spans_dropped=getattr(self.system.tracer, "dropped", 0),
        )
        return MetricsSnapshot(system=system, classes=FrozenDict(classes))


def enable_metrics(system: ActorSystem, *, sample_every: int = 16) -> Metrics:
    """Turn `system`'s metrics on (idempotent: metrics already on are returned as they are); any thread.

    Args:
        system: the system to measure.
        sample_every: time the first message of one turn in this many (16,
            the default: cheap on tell, see the README's table); 1: time
            every message, one at a time (exact quantiles, ~3x a tell's
            cost). Counts are exact whatever it is.

    Raises:
        TypeError: `sample_every` is not an int.
        ValueError: `sample_every` is below 1.
    """
    check_count("sample_every", sample_every, minimum=1, owner="enable_metrics")
    observer = system.observer
    if isinstance(observer, Metrics):
        return observer
    metrics = Metrics(system, sample_every=sample_every)
    system.dead_letters.subscribe(metrics._on_dead_letter)  # noqa: SLF001 - its own method
    set_observer(system, metrics)
    return metrics


def disable_metrics(system: ActorSystem) -> None:
    """Turn `system`'s metrics off (their counts are dropped); nothing if they are off. Any thread."""
    observer = system.observer
    if isinstance(observer, Metrics):
        set_observer(system, None)
        system.dead_letters.unsubscribe(observer._on_dead_letter)  # noqa: SLF001


def metrics_of(system: ActorSystem) -> MetricsSnapshot:
    """Return ``system.metrics()``, typed.

    Raises:
        MetricsOffError: metrics are off in `system`.
    """
    observer = system.observer
    if not isinstance(observer, Metrics):
        msg = f"metrics are off in system {system.name!r}; turn them on with enable_metrics(system)"
        raise MetricsOffError(msg)
    return observer.snapshot()
