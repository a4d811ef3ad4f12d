"""Pipeline: items flow through stages (actors, agents, pools) joined by bounded, credit-based buffers.

    result = pipeline([parse, enrich, score, store], rows, buffer=16).get(timeout=600)
    result.outputs           # in input order (ordered=True, the default)
    pipeline(stages, endless_source(), sink=write, on_error="channel", errors=log_failure)

Two hand-offs, chosen per pipeline:

- **Stage actors** (every stage a `Stage`: subclass it and override
  ``process(item)``): items travel by *tell*, in batches, each stage telling
  the next one directly. Credit per link: a stage sends the next one at most
  the next one's ``buffer`` items it has not forwarded yet, and gives that
  much credit back upstream as it forwards; a stage takes the batches and
  credits queued behind the one it handles in the same turn
  (`Actor.take_queued`), so a busy stage sends fewer, larger batches. A small
  driver actor (spawned per pipeline, gone when it ends) reads the source on
  its turn and takes the last stage's output. Measured on the 2-CPU machine
  under load: 6x the items/s of a chain of pykka actors unpinned, 23x pinned,
  15-20x the ask hand-off (``python -m benchmarks --only pipeline``).
- **Any other actor ref** (a plain actor, an agent, a Pool or Router for a
  parallel stage): each stage is asked with an item; its reply is the item
  for the next stage, moved on by the reply callbacks (no driver in the
  path): a stage gets a new item only when it has credit, i.e. fewer than
  ``buffer`` items in flight there plus waiting for the stage after it; the
  source is read on the thread of the stage whose reply freed credit, one
  reader at a time.

Either way the source (any iterable, read lazily) is read only when the
first stage has credit, and never more than the sum of the buffers ahead of
the oldest item not yet emitted. So a slow stage slows its producers instead
of growing memory: at most that sum of items is held, whatever the input's
length (Akka's work pulling and Streams' bounded buffers; the benchmark
measures it).

Output: in input order by default (a reorder buffer within that bound), in
completion order with ``ordered=False``. Into `sink` (called one item at a
time, on the driver's turn or the thread of the last stage's reply: keep it
quick) or, without one, collected in ``result.outputs``.

Errors, by ``on_error``: ``"fail"`` (default) ends the pipeline at the first
failing item: the future holds a `PipelineItemError` naming the item and
stage, caused by the stage's error; ``"channel"`` passes the
`PipelineItemError` to `errors` (a callable) or keeps it in
``result.errors``, and goes on without the item.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Literal

import attrs
from pykka import ActorDeadError

from actors import Actor, ActorRef, CoordinationInputError, Future, PipelineItemError, Terminated

__all__ = ["PipelineResult", "Stage", "pipeline"]


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
    if all(_is_stage(stage) for stage in stages):
        future: Future[PipelineResult] = Future()
        stages[0].actor_system.spawn(
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
    flow = _Flow(list(stages), iter(items), caps, ordered=ordered, on_error=on_error, sink=sink, errors=errors)
    return flow.start()


def _is_stage(ref: ActorRef[Any]) -> bool:
    cls = getattr(ref, "actor_class", None)
    return isinstance(cls, type) and issubclass(cls, Stage)


class _Emitting:
    """The output end of a pipeline run: items leave in input order (or as they end, unordered).

    Shared by `_Flow` and `_Driver`, which set these fields in their
    constructors; each calls `_emit` from the one thread or turn that owns
    its run (under `_Flow`'s lock, or in the `_Driver`'s turn).
    Invariant: every index below `next_emit` has left (to the sink or
    `outputs`, or dropped); `reorder` and `dropped` hold only indices above it.
    """

    ordered: bool
    sink: Callable[[Any], None] | None
    next_emit: int
    reorder: dict[int, Any]
    dropped: set[int]
    outputs: list[Any]
    count: int
    next_index: int
    exhausted: bool
    finished: bool
    collected_errors: list[PipelineItemError]
    high_water: int

    def _init_run(self) -> None:
        """Start the run's counters and output state (both kinds of run, in their constructors)."""
        self.next_index = 0
        self.next_emit = 0
        self.reorder = {}
        self.dropped = set()
        self.exhausted = False
        self.finished = False
        self.outputs = []
        self.collected_errors = []
        self.count = 0
        self.high_water = 0

    def _result(self) -> PipelineResult:
        return PipelineResult(self.count, tuple(self.outputs), tuple(self.collected_errors), self.high_water)

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


class _Flow(_Emitting):
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
        self._init_run()

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


def _settle_exception(future: Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception((type(error), error, error.__traceback__))


# -- the tell hand-off: Stage actors -----------------------------------------------------------------


@attrs.frozen
class _Failed:
    """An item that failed in `stage`: later stages pass it on untouched, the driver reports it."""

    stage: int
    error: BaseException


@attrs.frozen
class _Batch:
    """Items ``(index, value)`` for stage `stage` (``len(route) - 1``: the driver) of flow `flow`, from `sender`."""

    flow: object
    stage: int
    items: list[tuple[int, Any]]
    sender: Any  # an ActorRef
    route: tuple[Any, ...]  # the stages' refs, then the driver's
    caps: tuple[int, ...]


@attrs.frozen
class _Credit:
    """`n` more items may be sent on flow `flow`'s link from stage `stage` (-1: the driver) to the next."""

    flow: object
    stage: int
    n: int


@attrs.frozen
class _End:
    """Flow `flow` is over: drop its link; passed down the stages, back to the driver."""

    flow: object
    stage: int
    route: tuple[Any, ...]


class _Link:
    """One stage's side of one flow: credit to the next stage, outputs waiting for it, who feeds it."""

    __slots__ = ("credit", "downstream", "flow", "pending", "route", "stage", "upstream")

    def __init__(self, batch: _Batch) -> None:
        self.flow = batch.flow
        self.stage = batch.stage
        self.credit = batch.caps[batch.stage + 1]
        self.pending: deque[tuple[int, Any]] = deque()
        self.upstream = batch.sender
        self.downstream = batch.route[batch.stage + 1]
        self.route = batch


_TAKE_LIMIT = 256
"""Messages a stage takes from behind the current one in one turn."""


class Stage(Actor):
    """A pipeline stage that takes items by tell, in batches, with credit (the fast hand-off).

    Override `process` (one item in, the item for the next stage out; raise
    to fail that item only). Spawn it in any mode; one stage actor may serve
    several pipelines at once (state per pipeline is kept apart). Asked an
    item directly (or as a Pool's routee, where the ask hand-off is used), it
    replies ``process(item)``; other messages go to `handle_message`.

    Thread contract: `process` runs on the stage's turn, one item at a time,
    in arrival order. Invariant per pipeline: the items the stage holds (queued
    in its mailbox plus processed and not yet forwarded) are at most its buffer.
    If you override ``on_receive``, pass what you do not handle to ``super()``'s.
    """

    _pipeline_links: dict[tuple[object, int], _Link] | None = None

    def process(self, item: Any) -> Any:
        """Return the item for the next stage (override)."""
        msg = f"{type(self).__name__} is a pipeline Stage without process(); override Stage.process"
        raise NotImplementedError(msg)

    def handle_message(self, message: Any) -> Any:
        """A message that is not the pipeline's: by default the item itself, asked (``process(message)``)."""
        return self.process(message)

    def on_receive(self, message: Any) -> Any:
        """Run batches, take credit, end flows; pass anything else to `handle_message`."""
        cls = message.__class__
        if cls is _Batch:
            self._pipeline_batch(message)
            return None
        if cls is _Credit:
            self._pipeline_credit(message)
            return None
        if cls is _End:
            links = self._pipeline_links
            if links is not None:
                links.pop((message.flow, message.stage), None)
            _quiet_tell(message.route[message.stage + 1], _End(message.flow, message.stage + 1, message.route))
            return None
        return self.handle_message(message)

    def _pipeline_batch(self, batch: _Batch) -> None:
        links = self._pipeline_links
        if links is None:
            links = self._pipeline_links = {}
        flow, stage = batch.flow, batch.stage
        key = (flow, stage)  # one actor may be two stages of one pipeline
        link = links.get(key)
        if link is None:
            link = links[key] = _Link(batch)
        items = batch.items
        more: list[_Batch] = []

        def ours(queued: Any) -> bool:
            message = queued.message
            cls = message.__class__
            return (cls is _Batch or cls is _Credit) and message.flow is flow and message.stage == stage

        with self.take_queued(ours, limit=_TAKE_LIMIT) as taken:
            for queued in taken:
                if queued.message.__class__ is _Credit:
                    link.credit += queued.message.n
                else:
                    more.append(queued.message)
        if more:
            items = list(items)
            for other in more:
                items.extend(other.items)
        process = self.process
        pending = link.pending
        for index, value in items:
            if value.__class__ is _Failed:
                pending.append((index, value))
                continue
            try:
                pending.append((index, process(value)))
            except Exception as exc:  # noqa: BLE001 - the item fails, by the pipeline's policy
                pending.append((index, _Failed(stage, exc)))
        self._pipeline_flush(link)

    def _pipeline_credit(self, credit: _Credit) -> None:
        links = self._pipeline_links
        link = links.get((credit.flow, credit.stage)) if links is not None else None
        if link is None:
            return  # a flow that has ended
        link.credit += credit.n
        if link.pending:
            self._pipeline_flush(link)

    def _pipeline_flush(self, link: _Link) -> None:
        """Forward what the credit allows downstream, and give as much credit back upstream."""
        pending = link.pending
        n = min(link.credit, len(pending))
        if n == 0:
            return
        if n == len(pending):
            out = list(pending)
            pending.clear()
        else:
            out = [pending.popleft() for _ in range(n)]
        link.credit -= n
        first = link.route
        _quiet_tell(link.downstream, _Batch(link.flow, link.stage + 1, out, self.actor_ref, first.route, first.caps))
        _quiet_tell(link.upstream, _Credit(link.flow, link.stage - 1, n))


def _quiet_tell(ref: ActorRef[Any], message: Any) -> None:
    """Tell `ref`; if it has stopped the message is a dead letter already, and the driver sees the stop."""
    with contextlib.suppress(ActorDeadError):
        ref.tell(message)


class _Driver(Actor, _Emitting):
    """Reads the source into the first stage as credit allows and takes the last stage's output.

    Runs on its own turn (pooled): the source is read there, the sink called
    there. Watches the stages: one that stops fails the pipeline.
    Invariant: next_index - next_emit <= window (the items held, at most the
    sum of the buffers); credit0 + the items stage 0 holds <= caps[0].
    """

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
        self.future = future
        self.ordered = ordered
        self.on_error = on_error
        self.sink = sink
        self.errors_sink = errors
        self.window = sum(caps)
        self.caps = (*caps, self.window)
        self.chunk = max(1, caps[0] // 1)
        self.credit0 = caps[0]
        self.flow = object()
        self.route: tuple[Any, ...] = ()
        self._init_run()

    def on_start(self) -> None:
        self.route = (*self.stages, self.actor_ref)
        for ref in self.stages:
            self.watch(ref)
        self._guarded(self._pump)

    def on_receive(self, message: Any) -> None:
        cls = message.__class__
        if self.finished:
            if cls is _End or cls is Terminated:
                self.stop()
            return
        if cls is _Batch:
            self._guarded(lambda: self._take(message))
        elif cls is _Credit:
            self.credit0 += message.n
            self._guarded(self._pump)
        elif cls is Terminated:
            stage = self.stages.index(message.ref) if message.ref in self.stages else -1
            msg = f"pipeline stage {stage} ({message.ref}) stopped with items in flight; the pipeline fails"
            error = PipelineItemError(msg, index=self.next_emit, stage=stage)
            self._fail(error)

    def on_failure(self, *_exc: object) -> None:
        if not self.future.done():
            msg = "the pipeline's driver failed"
            _settle_exception(self.future, PipelineItemError(msg, index=self.next_emit, stage=-1))

    def on_stop(self) -> None:
        if not self.future.done():  # stopped from outside (the system shutting down) before the end
            msg = f"the pipeline was stopped (its driver {self.actor_ref} stopped) after {self.count} items"
            _settle_exception(self.future, PipelineItemError(msg, index=self.next_emit, stage=-1))

    def _guarded(self, step: Callable[[], None]) -> None:
        try:
            step()
        except BaseException as exc:  # noqa: BLE001 - the source, a sink or a failing item ends the pipeline
            self._fail(exc)

    def _pump(self) -> None:
        """Read the source into stage 0 as far as its credit and the window allow."""
        while not self.exhausted and self.credit0 > 0:
            room = min(self.credit0, self.chunk, self.window - (self.next_index - self.next_emit))
            if room <= 0:
                break
            batch: list[tuple[int, Any]] = []
            index = self.next_index
            source = self.source
            try:
                for _ in range(room):
                    batch.append((index, next(source)))
                    index += 1
            except StopIteration:
                self.exhausted = True
            self.next_index = index
            if batch:
                self.credit0 -= len(batch)
                self.stages[0].tell(_Batch(self.flow, 0, batch, self.actor_ref, self.route, self.caps))
        held = self.next_index - self.next_emit
        self.high_water = max(self.high_water, held)
        if self.exhausted and held == 0:
            self._finish()

    def _take(self, batch: _Batch) -> None:
        items = batch.items
        if not self.reorder and not self.dropped and items and items[0][0] == self.next_emit:
            # The common case, in order from the first item: emit straight through until one is not.
            out = self.outputs.append if self.sink is None else self.sink
            expect = self.next_emit
            done = 0
            for index, value in items:
                if index != expect or value.__class__ is _Failed:
                    break
                out(value)
                expect += 1
                done += 1
            self.count += done
            self.next_emit = expect
            items = items[done:] if done < len(items) else []
        for index, value in items:
            if value.__class__ is _Failed:
                stage = value.stage
                msg = f"pipeline item {index} failed in stage {stage} ({self.stages[stage]}): {value.error!r}"
                error = PipelineItemError(msg, index=index, stage=stage)
                error.__cause__ = value.error
                if self.on_error == "fail":
                    raise error
                if self.errors_sink is not None:
                    self.errors_sink(error)
                else:
                    self.collected_errors.append(error)
                self._emit(index, None, dropped=True)
            else:
                self._emit(index, value, dropped=False)
        _quiet_tell(batch.sender, _Credit(self.flow, batch.stage - 1, len(batch.items)))
        self._pump()

    def _finish(self) -> None:
        self.finished = True
        self.future.set(self._result())
        self._end()

    def _fail(self, error: BaseException) -> None:
        self.finished = True
        _settle_exception(self.future, error)
        self._end()

    def _end(self) -> None:
        """Pass `_End` down the stages (they drop the flow); stop when it comes back, or when a stage stops."""
        _quiet_tell(self.stages[0], _End(self.flow, 0, self.route))
        if not all(ref.is_alive() for ref in self.stages):
            self.stop()  # the _End cannot come back
