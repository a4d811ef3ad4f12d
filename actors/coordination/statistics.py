"""Coordination statistics: mutable counters kept by the coordinator, frozen snapshots handed out.

Threading: `_Counters` belongs to the coordinator's turns; snapshots are frozen
and hold no dicts (`FrozenDict`), so any thread may read them.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

import attrs

from actors._core import FrozenDict

__all__ = ["CapabilityStatistics", "CoordinationStatistics", "percentile"]

SAMPLES_KEPT = 4096
"""How many recent wait and run times each counter keeps for its percentiles."""


def percentile(values: Sequence[float], q: float) -> float | None:
    """Return the `q`-quantile (0..1) of `values` by the nearest-rank method, or None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))]


@attrs.frozen
class CapabilityStatistics:
    """Task counters of one capability (a task counts under each capability it requires), or overall."""

    queued: int
    running: int
    submitted: int
    completed: int
    failed: int
    timed_out: int
    cancelled: int
    retries: int
    reassignments: int
    wait_p50: float | None
    wait_p95: float | None
    run_p50: float | None
    run_p95: float | None

    @property
    def completion_rate(self) -> float | None:
        """Completed over finished (completed, failed, timed out); None before any finished."""
        done = self.completed + self.failed + self.timed_out
        return self.completed / done if done else None


@attrs.frozen
class CoordinationStatistics:
    """A snapshot of a coordinator: agents by status and health, tasks overall and per capability."""

    agents: int
    by_status: FrozenDict[str, int]
    by_health: FrozenDict[str, int]
    tasks: CapabilityStatistics
    per_capability: FrozenDict[str, CapabilityStatistics]
    watchers: int


class _Counters:
    """The mutable counters of the tasks that require one set of capabilities.

    The coordinator keeps one per distinct ``requires`` set, so each counted
    event of a task touches one object; `merged` adds them up into the overall
    and per-capability figures when statistics are asked for (issue 12: a
    task counted under the overall counters and each of its capabilities was
    ~2x the bookkeeping on every event).
    """

    __slots__ = (
        "cancelled",
        "completed",
        "failed",
        "queued",
        "reassignments",
        "retries",
        "run_times",
        "running",
        "submitted",
        "timed_out",
        "wait_times",
    )

    def __init__(self) -> None:
        self.queued = self.running = self.submitted = 0
        self.completed = self.failed = self.timed_out = self.cancelled = 0
        self.retries = self.reassignments = 0
        self.wait_times: deque[float] = deque(maxlen=SAMPLES_KEPT)
        self.run_times: deque[float] = deque(maxlen=SAMPLES_KEPT)

    def snapshot(self) -> CapabilityStatistics:
        return merged((self,))


_COUNTS = (
    "queued",
    "running",
    "submitted",
    "completed",
    "failed",
    "timed_out",
    "cancelled",
    "retries",
    "reassignments",
)
"""The counts of `_Counters`, in the order of `CapabilityStatistics`' fields."""


def merged(counters: Sequence[_Counters]) -> CapabilityStatistics:
    """Return the statistics of `counters` together: counts added, percentiles over all their samples.

    Each `_Counters` keeps its own most recent `SAMPLES_KEPT` wait and run
    times, so a merged percentile is over the recent samples of every set.
    """
    waits: list[float] = []
    runs: list[float] = []
    totals = [0] * len(_COUNTS)
    for c in counters:
        waits.extend(c.wait_times)
        runs.extend(c.run_times)
        for i, name in enumerate(_COUNTS):
            totals[i] += getattr(c, name)
    queued, running, submitted, completed, failed, timed_out, cancelled, retries, reassignments = totals
    return CapabilityStatistics(
        queued,
        running,
        submitted,
        completed,
        failed,
        timed_out,
        cancelled,
        retries,
        reassignments,
        percentile(waits, 0.5),
        percentile(waits, 0.95),
        percentile(runs, 0.5),
        percentile(runs, 0.95),
    )
