"""Pipeline: items flow through stages (actors, agents, pools) joined by bounded, credit-based buffers.

    result = pipeline([parse, enrich, score, store], rows, buffer=16).get(timeout=600)
    result.outputs           # in input order (ordered=True, the default)
    pipeline(stages, endless_source(), sink=write, on_error="channel", errors=log_failure)

Each stage is an actor ref asked with an item; its reply is the item for the
next stage. A driver actor moves the items: a stage gets a new item only
when it has credit, i.e. fewer than ``buffer`` items in flight there plus
waiting for the stage after it; the source (any iterable, read lazily) is
read only when the first stage has credit, and never more than the sum of the
buffers ahead of the oldest item not yet emitted. So a slow stage slows its
producers instead of growing memory: at most that sum of items is held,
whatever the input's length (Akka's work pulling and Streams' bounded
buffers; the benchmark measures it).

Output: in input order by default (a reorder buffer within that bound), in
completion order with ``ordered=False``. Into `sink` (called on the driver's
turn, one item at a time) or, without one, collected in ``result.outputs``.

Errors, by ``on_error``: ``"fail"`` (default) ends the pipeline at the first
failing item: the future holds a `PipelineItemError` naming the item and
stage, caused by the stage's error; ``"channel"`` passes the
`PipelineItemError` to `errors` (a callable) or keeps it in
``result.errors``, and goes on without the item.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Literal

import attrs
import pykka
from pykka import ActorDeadError

from actors import Actor, ActorRef, CoordinationInputError, Future, PipelineItemError

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
        items: the source, read lazily on the driver's turns.
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
    future: Future[PipelineResult] = Future()
    system = stages[0].actor_system
    system.spawn(
        _Driver,
        list(stages),
        iter(items),
        caps,
        future,
        ordered=ordered,
        on_error=on_error,
        sink=sink,
        errors=errors,
    )
    return future


@attrs.frozen(eq=False)
class _Done:
    stage: int
    index: int
    future: Any


_START = object()


class _Driver(Actor):
    """Moves items between stages by credit; one per pipeline run; stops itself at the end."""

    def __init__(
        self,
        stages: list[ActorRef[Any]],
        source: Iterator[Any],
        caps: list[int],
        future: Future[PipelineResult],
        *,
        ordered: bool,
        on_error: str,
        sink: Callable[[Any], None] | None,
        errors: Callable[[PipelineItemError], None] | None,
    ) -> None:
        super().__init__()
        self.stages = stages
        self.source = source
        self.caps = caps
        self.future = future
        self.ordered = ordered
        self.on_error = on_error
        self.sink = sink
        self.errors_sink = errors
        n = len(stages)
        # Invariant: inflight[s] items are out at stage s; waiting[s] wait to enter stage s
        # (outputs of stage s - 1); for s < n - 1, inflight[s] + len(waiting[s + 1]) <= caps[s].
        self.inflight = [0] * n
        self.waiting: list[deque[tuple[int, Any]]] = [deque() for _ in range(n)]
        # Invariant: next_index - next_emit <= window: items read and not yet emitted or dropped.
        self.window = sum(caps)
        self.next_index = 0
        self.next_emit = 0
        self.reorder: dict[int, Any] = {}
        self.dropped: set[int] = set()
        self.exhausted = False
        self.outputs: list[Any] = []
        self.collected_errors: list[PipelineItemError] = []
        self.count = 0
        self.high_water = 0
        self.me: pykka.ActorRef[Any] | None = None

    def on_start(self) -> None:
        self.me = self.actor_ref
        self.actor_ref.tell(_START)

    def on_stop(self) -> None:
        if not self.future.done():
            error = ActorDeadError(f"the pipeline's driver {self} stopped before the pipeline ended")
            self.future.set_exception((ActorDeadError, error, None))

    def on_receive(self, message: Any) -> None:
        if self.future.done():
            return
        try:
            if message.__class__ is _Done:
                self._done(message)
            if not self.future.done():
                self._pump()
        except Exception as exc:  # noqa: BLE001 - the source or a sink failed: the pipeline fails
            self._fail(exc)

    def _done(self, message: _Done) -> None:
        stage, index = message.stage, message.index
        self.inflight[stage] -= 1
        try:
            value = message.future.get()
        except Exception as exc:  # noqa: BLE001 - by policy
            msg = f"pipeline item {index} failed in stage {stage} ({self.stages[stage]}): {exc!r}"
            error = PipelineItemError(msg, index=index, stage=stage)
            error.__cause__ = exc
            if self.on_error == "fail":
                self._fail(error)
                return
            if self.errors_sink is not None:
                self.errors_sink(error)
            else:
                self.collected_errors.append(error)
            self._emit(index, None, dropped=True)
            return
        if stage + 1 < len(self.stages):
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

    def _pump(self) -> None:
        stages, caps, inflight, waiting = self.stages, self.caps, self.inflight, self.waiting
        last = len(stages) - 1
        # Downstream first: what a later stage takes frees credit for the one before it.
        for s in range(last, 0, -1):
            queue = waiting[s]
            credit = caps[s] - inflight[s] - (len(waiting[s + 1]) if s < last else 0)
            while queue and credit > 0:
                index, value = queue.popleft()
                self._send(s, index, value)
                credit -= 1
        credit = caps[0] - inflight[0] - (len(waiting[1]) if last > 0 else 0)
        while credit > 0 and not self.exhausted and self.next_index - self.next_emit < self.window:
            try:
                item = next(self.source)
            except StopIteration:
                self.exhausted = True
                break
            self._send(0, self.next_index, item)
            self.next_index += 1
            credit -= 1
        held = self.next_index - self.next_emit
        self.high_water = max(self.high_water, held)
        if self.exhausted and held == 0:
            self.future.set(
                PipelineResult(self.count, tuple(self.outputs), tuple(self.collected_errors), self.high_water)
            )
            self.stop()

    def _send(self, stage: int, index: int, value: Any) -> None:
        self.inflight[stage] += 1
        future = self.stages[stage].ask(value, block=False)
        me = self.me
        assert me is not None
        done = _Done(stage, index, future)
        future.add_done_callback(lambda _f: _tell(me, done))

    def _fail(self, error: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception((type(error), error, error.__traceback__))
        self.stop()


def _tell(ref: pykka.ActorRef[Any], message: Any) -> None:
    # After the pipeline ended (failed), late replies become dead letters.
    with contextlib.suppress(ActorDeadError):
        ref.tell(message)
