"""Pipeline: items flow through stages (actors, agents, pools) joined by bounded, credit-based buffers.

    result = pipeline([parse, enrich, score, store], rows, buffer=16).get(timeout=600)
    result.outputs           # in input order (ordered=True, the default)
    pipeline(stages, endless_source(), sink=write, on_error="channel", errors=log_failure)

Each stage is an actor ref asked with an item; its reply is the item for the
next stage. The stages' reply callbacks move the items (no coordinator actor
in the path): a stage gets a new item only
when it has credit, i.e. fewer than ``buffer`` items in flight there plus
waiting for the stage after it; the source (any iterable, read lazily) is
read only when the first stage has credit (on the thread of the stage whose
reply freed it, one reader at a time), and never more than the sum of the
buffers ahead of the oldest item not yet emitted. So a slow stage slows its
producers instead of growing memory: at most that sum of items is held,
whatever the input's length (Akka's work pulling and Streams' bounded
buffers; the benchmark measures it).

Output: in input order by default (a reorder buffer within that bound), in
completion order with ``ordered=False``. Into `sink` (called one item at a
time, on the thread of the last stage's reply: keep it quick) or, without
one, collected in ``result.outputs``.

Errors, by ``on_error``: ``"fail"`` (default) ends the pipeline at the first
failing item: the future holds a `PipelineItemError` naming the item and
stage, caused by the stage's error; ``"channel"`` passes the
`PipelineItemError` to `errors` (a callable) or keeps it in
``result.errors``, and goes on without the item.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Literal

import attrs

from actors import ActorRef, CoordinationInputError, Future, PipelineItemError

__all__ = ["PipelineResult", "pipeline"]


@attrs.frozen
class PipelineResult:
    """How a pipeline ended.

    Attributes:
        count: items that came out of the last stage.
        outputs: those items (empty when a sink took them).
        errors: the failed items' errors (``on_error="channel"`` without an `errors` callable).
        high_water: the most items the pipeline held at once (the memory bound at work).
    """

    count: int
    outputs: tuple[Any, ...]
    errors: tuple[PipelineItemError, ...]
    high_water: int


def pipeline(
    stages: Sequence[ActorRef[Any]],
    items: Iterable[Any],
    *,
    buffer: int | Sequence[int] = 16,
    ordered: bool = True,
    on_error: Literal["fail", "channel"] = "fail",
    sink: Callable[[Any], None] | None = None,
    errors: Callable[[PipelineItemError], None] | None = None,
) -> Future[PipelineResult]:
    """Run `items` through `stages`; return a future of the `PipelineResult` (see the module docs).

    Args:
        stages: actor refs (a Pool's ref runs a stage in parallel: give it a buffer as large as its routees).
        items: the source, read lazily, one reader at a time.
        buffer: credit per stage (one int for all, or one per stage), >= 1.
        ordered: emit in input order.
        on_error: ``"fail"`` or ``"channel"``.
        sink: takes each output (else they are collected).
        errors: takes each failed item's error with ``"channel"`` (else they are collected).

    Raises:
        CoordinationInputError: no stages, a stage that is not an actor ref,
            a buffer < 1 or of the wrong length, an unknown on_error.
    """
    if not stages:
        msg = "a pipeline needs at least one stage; got none"
        raise CoordinationInputError(msg)
    for i, stage in enumerate(stages):
        if not isinstance(stage, ActorRef):
            msg = f"pipeline stage {i} must be an actor ref (an agent, a Pool), got {stage!r}"
            raise CoordinationInputError(msg)
    caps = [buffer] * len(stages) if isinstance(buffer, int) else list(buffer)
    if len(caps) != len(stages) or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in caps):
        msg = f"pipeline buffer must be an int >= 1 or one per stage ({len(stages)}), got {buffer!r}"
        raise CoordinationInputError(msg)
    if on_error not in ("fail", "channel"):
        msg = f"pipeline on_error must be 'fail' or 'channel', got {on_error!r}"
        raise CoordinationInputError(msg)
    flow = _Flow(list(stages), iter(items), caps, ordered=ordered, on_error=on_error, sink=sink, errors=errors)
    return flow.start()


class _Flow:
    """One pipeline run: credit accounting under one lock, driven by the stages' reply callbacks.

    There is no coordinator in the path: when stage s replies, the callback
    (on the thread that set the reply, usually the stage's) records it, and
    under the same lock decides which items move next (into stage s + 1, into
    the stage that just freed credit, out of the source); it asks those
    stages after releasing the lock, so a reply that is already there when
    its callback is added re-enters without deadlock. Measured against a
    driver actor in the path: one thread hand-off less per item and stage.

    Invariant (under `_lock`): inflight[s] items are out at stage s; waiting[s]
    items wait to enter stage s; for s < last, inflight[s] + len(waiting[s + 1])
    <= caps[s]; next_index - next_emit <= window.
    """

    def __init__(
        self,
        stages: list[ActorRef[Any]],
        source: Iterator[Any],
        caps: list[int],
        *,
        ordered: bool,
        on_error: str,
        sink: Callable[[Any], None] | None,
        errors: Callable[[PipelineItemError], None] | None,
    ) -> None:
        self.stages = stages
        self.source = source
        self.caps = caps
        self.ordered = ordered
        self.on_error = on_error
        self.sink = sink
        self.errors_sink = errors
        self.future: Future[PipelineResult] = Future()
        self._lock = threading.Lock()
        n = len(stages)
        self.inflight = [0] * n
        self.waiting: list[deque[tuple[int, Any]]] = [deque() for _ in range(n)]
        self.window = sum(caps)
        self.next_index = 0
        self.next_emit = 0
        self.reorder: dict[int, Any] = {}
        self.dropped: set[int] = set()
        self.exhausted = False
        self.finished = False
        self.outputs: list[Any] = []
        self.collected_errors: list[PipelineItemError] = []
        self.count = 0
        self.high_water = 0

    def start(self) -> Future[PipelineResult]:
        self._step(None, -1, None)
        return self.future

    def _step(self, future: Any, stage: int, index: int | None) -> None:
        """Record a reply (unless starting), then move what can move; ask outside the lock."""
        outcome: tuple[bool, Any] | None = None
        if future is not None:
            try:
                outcome = (True, future.get())
            except Exception as exc:  # noqa: BLE001 - by policy
                outcome = (False, exc)
        with self._lock:
            if self.finished:
                return
            try:
                if outcome is not None and index is not None:
                    self._record(stage, index, outcome)
                sends = [] if self.finished else self._schedule()
            except BaseException as exc:  # noqa: BLE001 - the source or a sink failed: the pipeline fails
                self.finished = True
                error: BaseException | None = exc
                sends = []
            else:
                error = None
            done = self.finished
            result = self._result() if done and error is None and not self.future.done() else None
        for s, i, value in sends:
            reply = self.stages[s].ask(value, block=False)
            reply.add_done_callback(lambda f, s=s, i=i: self._step(f, s, i))
        if error is not None:
            _settle_exception(self.future, error)
        elif result is not None:
            self.future.set(result)

    def _record(self, stage: int, index: int, outcome: tuple[bool, Any]) -> None:
        self.inflight[stage] -= 1
        ok, value = outcome
        if not ok:
            msg = f"pipeline item {index} failed in stage {stage} ({self.stages[stage]}): {value!r}"
            error = PipelineItemError(msg, index=index, stage=stage)
            error.__cause__ = value
            if self.on_error == "fail":
                raise error
            if self.errors_sink is not None:
                self.errors_sink(error)
            else:
                self.collected_errors.append(error)
            self._emit(index, None, dropped=True)
        elif stage + 1 < len(self.stages):
            self.waiting[stage + 1].append((index, value))
        else:
            self._emit(index, value, dropped=False)

    def _emit(self, index: int, value: Any, *, dropped: bool) -> None:
        if not self.ordered:
            self.next_emit += 1  # the window counts items ended, in any order
            if not dropped:
                self._out(value)
            return
        if dropped:
            self.dropped.add(index)
        else:
            self.reorder[index] = value
        while True:
            if self.next_emit in self.reorder:
                self._out(self.reorder.pop(self.next_emit))
            elif self.next_emit in self.dropped:
                self.dropped.discard(self.next_emit)
            else:
                return
            self.next_emit += 1

    def _out(self, value: Any) -> None:
        self.count += 1
        if self.sink is not None:
            self.sink(value)
        else:
            self.outputs.append(value)

    def _schedule(self) -> list[tuple[int, int, Any]]:
        """Return the (stage, index, value) to send now, counting them in flight."""
        caps, inflight, waiting = self.caps, self.inflight, self.waiting
        last = len(self.stages) - 1
        sends: list[tuple[int, int, Any]] = []
        # Downstream first: what a later stage takes frees credit for the one before it.
        for s in range(last, 0, -1):
            queue = waiting[s]
            credit = caps[s] - inflight[s] - (len(waiting[s + 1]) if s < last else 0)
            while queue and credit > 0:
                index, value = queue.popleft()
                inflight[s] += 1
                sends.append((s, index, value))
                credit -= 1
        credit = caps[0] - inflight[0] - (len(waiting[1]) if last > 0 else 0)
        while credit > 0 and not self.exhausted and self.next_index - self.next_emit < self.window:
            try:
                item = next(self.source)
            except StopIteration:
                self.exhausted = True
                break
            inflight[0] += 1
            sends.append((0, self.next_index, item))
            self.next_index += 1
            credit -= 1
        held = self.next_index - self.next_emit
        self.high_water = max(self.high_water, held)
        if self.exhausted and held == 0:
            self.finished = True
        return sends

    def _result(self) -> PipelineResult:
        return PipelineResult(self.count, tuple(self.outputs), tuple(self.collected_errors), self.high_water)


def _settle_exception(future: Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception((type(error), error, error.__traceback__))
