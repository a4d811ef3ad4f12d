"""Traces across message chains: a span recorder, OpenTelemetry spans, and the trace context at the edges.

    recorder = record_spans(system)          # no OpenTelemetry needed
    with use_trace(new_trace()):             # or a traceparent from a request
        ref.tell(job)                        # ... tell -> ask -> tell, any modes
    {span.trace_id for span in recorder.spans()}   # one trace id

    enable_tracing(system)                   # the [otel] extra: the global TracerProvider

With tracing on, each tell and ask is carried with the sender's trace
context (`actors._core.tracing`: the runtime wraps the message, since
context variables do not cross thread pools), and makes two spans, named as
OpenTelemetry's messaging conventions name them:

- ``send <destination>``, kind PRODUCER, on the sender's thread, a child of
  the sender's current span (the handler it runs in, or `use_trace`'s);
- ``process <destination>``, kind CONSUMER, around the handler on the
  receiver's turn (an asyncio handler: until its coroutine ends), a child of
  the send span and linked to it (the conventions allow the parent for a
  single message; the link is there for tools that follow links).

``<destination>`` is the actor's name, or its class's ``__qualname__``: never
its URN (one span name per actor would be a name per id). Attributes:
``messaging.system`` (``"troupe"``), ``messaging.operation.type``
(``send``/``process``), ``messaging.operation.name``,
``messaging.destination.name``, ``troupe.actor.class``,
``troupe.message.type`` (the message's class) and, for an `AgentMessage`,
``messaging.message.id`` and ``messaging.message.conversation_id`` (its
correlation id). With tracing off nothing here runs, and no OpenTelemetry
module is imported. With OpenTelemetry on, no OpenTelemetry code runs on the
message path either: the spans are built by a thread of the tracer's own
(`OpenTelemetryTracer`); `OpenTelemetryTracer.flush` or `disable_tracing`
before reading an exporter.

At the edges: `correlate` fills an `AgentMessage`'s empty ``correlation_id``
with the current trace id (a message leaving the system), and `trace_of`
reads one back (a message coming in: ``with use_trace(trace_of(msg))``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import threading
import time
import traceback
import types
from typing import TYPE_CHECKING, Any

import attrs
from loguru import logger

from actors._core import (
    CURRENT_TRACE,
    FrozenDict,
    TraceContext,
    Traced,
    Tracer,
    handle_receive,
    in_trace,
    set_tracer,
)
from actors.errors import ObservabilityConfigError
from actors.protocol import AgentMessage

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from actors._core import ActorSystem, Cell

__all__ = [
    "OpenTelemetryTracer",
    "SpanRecord",
    "SpanRecorder",
    "correlate",
    "current_trace",
    "disable_tracing",
    "enable_tracing",
    "new_trace",
    "record_spans",
    "trace_of",
    "use_trace",
]

# Ids are drawn from the OS (os.urandom) in blocks of 1024 as hex text, split in C
# (``bytes.hex`` with a separator every id, then ``str.split``), and handed out by
# ``list.pop`` (one C call, atomic under the GIL, so threads may share the lists): ~0.08 µs
# a span id against ~0.18 µs for a seeded PRNG's block sliced in a comprehension and 0.48 µs
# for formatting a ``getrandbits`` each time, measured here; a message takes two or three.
# (Ints would not be cheaper on the message path: ``array("Q").pop`` is ~500 instructions
# a span id, against ~800 for a pop and its share of a block here, and a 128-bit trace id
# from two of them ~1,600.)
# The blocks are emptied in a forked child, which would otherwise hand out its parent's ids.
_BLOCK = 1024
_urandom = os.urandom
_span_ids: list[str] = []
_trace_ids: list[str] = []


_ZERO_SPAN = "0" * 16
"""An invalid span id (W3C): never a context's."""


def _draw(ids: list[str], digits: int) -> str:
    """Refill `ids` with a block of fresh ids of `digits` hex digits and return one.

    No id ends in 16 zeros: not a span id (all zero is invalid), nor a trace
    id (its low half is its root's span id, `OpenTelemetryTracer.send`).
    """
    text = _urandom(digits // 2 * _BLOCK).hex(" ", digits // 2)
    fresh = text.split(" ")
    if _ZERO_SPAN + " " in text or text.endswith(_ZERO_SPAN):  # one block in ~2**54 (a C search)
        fresh = [chunk for chunk in fresh if not chunk.endswith(_ZERO_SPAN)]
    mine = fresh.pop()  # not ids.pop(): other threads may empty ids before this one pops
    ids.extend(fresh)
    return mine


def _forget_ids() -> None:
    _span_ids.clear()
    _trace_ids.clear()


os.register_at_fork(after_in_child=_forget_ids)


def _trace_id(pop: Callable[[], str] = _trace_ids.pop) -> str:
    try:
        return pop()
    except IndexError:
        return _draw(_trace_ids, 32)


def _span_id(pop: Callable[[], str] = _span_ids.pop) -> str:
    try:
        return pop()
    except IndexError:
        return _draw(_span_ids, 16)


_EXPORT_BATCH = 512
"""Spans per export a ``SimpleSpanProcessor``'s exporter is given at most (the SDK's ``BatchSpanProcessor`` default)."""

_MAX_NAMES = 4096
"""(actor, message type, operation) keys whose span name and attributes the OpenTelemetry builder keeps."""

# A TraceContext is a tuple (trace_id, span_id, sampled): one built from ids this module
# drew skips the constructor's hex check (~5 µs per message), built by tuple.__new__.
# The message path carries plain tuples (`CURRENT_TRACE`: ~300 instructions against
# ~1,400 for tuple.__new__ of a subclass) and writes the id draws and the `Traced`
# wrappers out inline: each Python call saved is ~500 instructions (callgrind; see
# `OpenTelemetryTracer.send`).
_new_context = tuple.__new__
_pop_span_id = _span_ids.pop
_pop_trace_id = _trace_ids.pop


_time_ns = time.time_ns
# CURRENT_TRACE's methods bound once: CPython 3.11 compiles a method call on an imported
# name as an attribute load (a bound method made and freed each call, ~150 instructions).
_current_get = CURRENT_TRACE.get
_current_set = CURRENT_TRACE.set
_current_reset = CURRENT_TRACE.reset

_ALWAYS = "~"
"""`OpenTelemetryTracer._below` for a root sampler that samples every trace (every hex digit sorts below it)."""


def _context(trace_id: str, span_id: str, *, sampled: bool = True) -> TraceContext:
    return _new_context(TraceContext, (trace_id, span_id, sampled))


_STRIDE = 8
"""Items per span record in `OpenTelemetryTracer._pending`.

A record is ``(cell, message, trace_id, span_id, parent_id, start, end,
exc)``: a `begin` handle, its end (None: a send span, at `start`) and what
the handler raised. The queue is a flat list each record is added to by one
``list.extend``: a queued span is no container of its own for the collector
to walk (a tuple each, holding objects, were walked and kept collections
running: ~40% of a traced ask once, ~1,300 instructions when they held only
strings), and the record holds the cell and the message as they are, so the
message path reads no names (``__qualname__`` is ~570 instructions a read,
callgrind): the builder does, off the message path.
"""


def new_trace() -> TraceContext:
    """Return the context of a new trace's root (fresh trace and span ids), for `use_trace`."""
    return _context(_trace_id(), _span_id())


def current_trace() -> TraceContext | None:
    """Return the trace context messages sent here now would carry (a handler's, or `use_trace`'s), or None."""
    context = CURRENT_TRACE.get()
    if context is None or context.__class__ is TraceContext:
        return context
    return _new_context(TraceContext, context)  # a tracer's plain tuple (`CURRENT_TRACE`)


@contextlib.contextmanager
def use_trace(context: TraceContext | str | None) -> Iterator[TraceContext | None]:
    """Send the messages of the block under `context` (a `TraceContext`, a ``traceparent`` header, or None).

    Raises:
        ObservabilityConfigError: a malformed ``traceparent``, or not a context.
    """
    if isinstance(context, str):
        context = TraceContext.from_traceparent(context)
    elif context is not None and not isinstance(context, TraceContext):
        msg = f"use_trace needs a TraceContext, a traceparent string or None, got {context!r}"
        raise ObservabilityConfigError(msg)
    token = CURRENT_TRACE.set(context)
    try:
        yield context
    finally:
        CURRENT_TRACE.reset(token)


def correlate(message: AgentMessage) -> AgentMessage:
    """Return `message` with its ``correlation_id`` set to the current trace id, if it has none and a trace is on."""
    context = CURRENT_TRACE.get()
    if context is None or message.correlation_id is not None:
        return message
    return attrs.evolve(message, correlation_id=context[0])


def trace_of(message: AgentMessage) -> TraceContext | None:
    """Return a trace context continuing the trace named by `message`'s ``correlation_id`` (32 hex digits), or None."""
    cid = message.correlation_id
    if cid is None:
        return None
    try:
        return TraceContext(cid, _span_id())
    except ObservabilityConfigError:
        return None


def _destination(cell: Cell) -> str:
    return cell.name if cell.name is not None else cell.actor_class.__qualname__


def _attributes(cell: Cell, message: Any, operation: str) -> dict[str, Any]:
    ids = (message.message_id, message.correlation_id) if isinstance(message, AgentMessage) else None
    return _named_attributes(cell.name, cell.actor_class.__qualname__, type(message).__qualname__, ids, operation)


def _named_attributes(
    name: str | None, actor_class: str, message_type: str, ids: tuple[str, str | None] | None, operation: str
) -> dict[str, Any]:
    """The messaging attributes of a span, from the actor's name and class, the message's type and ids."""
    attributes: dict[str, Any] = {
        "messaging.system": "troupe",
        "messaging.operation.type": operation,
        "messaging.operation.name": operation,
        "messaging.destination.name": name if name is not None else actor_class,
        "troupe.actor.class": actor_class,
        "troupe.message.type": message_type,
    }
    if ids is not None:  # an AgentMessage: (message_id, correlation_id)
        attributes["messaging.message.id"] = ids[0]
        if ids[1] is not None:
            attributes["messaging.message.conversation_id"] = ids[1]
    return attributes


@attrs.frozen
class SpanRecord:
    """One span the `SpanRecorder` saw, ended.

    Attributes:
        name: ``send <destination>`` or ``process <destination>``.
        kind: ``"producer"`` or ``"consumer"``.
        trace_id: 32 hex digits.
        span_id: 16 hex digits.
        parent_id: the parent span's id, or None for a root.
        links: span ids this span links to (a consumer: its producer).
        attributes: the messaging attributes (see the module).
        error: ``repr`` of what the handler raised, or None.
        thread: the name of the thread it ended on.
        start_ns: `time.monotonic_ns` at its start.
        end_ns: at its end.
    """

    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_id: str | None
    links: tuple[str, ...] = ()
    attributes: FrozenDict[str, Any] = attrs.field(factory=FrozenDict)
    error: str | None = None
    thread: str = ""
    start_ns: int = 0
    end_ns: int = 0


class SpanRecorder(Tracer):
    """A tracer that keeps every span in memory, for tests; needs no OpenTelemetry (`record_spans`).

    A span is kept as a tuple on the hot path (one ``list.append``, atomic
    under the GIL) and becomes a `SpanRecord` when read.

    Thread contract: every method may be called from any thread.
    """

    def __init__(self) -> None:
        self._raw: list[tuple[Any, ...]] = []

    def spans(self) -> tuple[SpanRecord, ...]:
        """Return the spans ended so far, in the order they ended."""
        return tuple(_record(raw) for raw in list(self._raw))

    def clear(self) -> None:
        """Forget the spans recorded so far."""
        self._raw.clear()

    def send(self, cell: Cell, message: Any) -> Traced:
        """Record a ``send`` span under the current context; carry its context (the sender's thread)."""
        parent = CURRENT_TRACE.get()
        now = time.monotonic_ns()
        context = _context(parent[0] if parent is not None else _trace_id(), _span_id())
        self._raw.append(
            (
                "producer",
                cell,
                message,
                context,
                None if parent is None else parent[1],
                None,
                threading.current_thread().name,
                now,
                now,
            )
        )
        return Traced.of(message, context)

    def begin(self, cell: Cell, traced: Traced) -> tuple[Any, TraceContext]:
        """Start a ``process`` span, child of and linked to the send span (the receiver's turn)."""
        context = _context(traced.context[0], _span_id())
        return (cell, traced, context, time.monotonic_ns()), context

    def end(self, handle: Any, exc: BaseException | None) -> None:
        """End the ``process`` span begun with `handle`."""
        cell, traced, context, start = handle
        self._raw.append(
            (
                "consumer",
                cell,
                traced.message,
                context,
                traced.context[1],
                exc,
                threading.current_thread().name,
                start,
                time.monotonic_ns(),
            )
        )


def _record(raw: tuple[Any, ...]) -> SpanRecord:
    kind, cell, message, context, parent_id, exc, thread, start, end = raw
    consumer = kind == "consumer"
    operation = "process" if consumer else "send"
    return SpanRecord(
        name=f"{operation} {_destination(cell)}",
        kind=kind,
        trace_id=context.trace_id,
        span_id=context.span_id,
        parent_id=parent_id,
        links=(parent_id,) if consumer else (),
        attributes=FrozenDict(_attributes(cell, message, operation)),
        error=None if exc is None else repr(exc),
        thread=thread,
        start_ns=start,
        end_ns=end,
    )


class OpenTelemetryTracer(Tracer):
    """A tracer that makes OpenTelemetry spans (the ``[otel]`` extra); built by `enable_tracing`.

    OpenTelemetry's SDK takes ~20-45 µs of CPU to start and end one span
    (measured here with its ``SimpleSpanProcessor``, 1.45), and a message
    makes two; a tell costs ~1 µs. So no OpenTelemetry code runs on the
    message path: `send` and `process` (`end`, for an asyncio handler's
    coroutine or a handler that raised) draw the span's ids (the ones the
    W3C ``traceparent`` carried with the message names), read the clock and
    append one record to a queue (`_STRIDE`); a builder thread
    (``troupe-otel-spans``) turns the queued records into finished spans
    (``ReadableSpan``s, ~4-7 µs each) and hands them to the provider's span
    processors, every `export_interval` seconds, sooner when `max_pending` /
    4 are queued, and at `flush` and `close` (`disable_tracing`, the
    system's shutdown), so every span reaches the exporter.

    What that changes against spans made by ``tracer.start_span``: the span
    processors see each span once, ended (``on_end``; ``on_start`` is not
    called, the span is built after it ended). The sampling decision is
    taken on the message path, once per trace, at its root: a message sent
    under a trace context follows its parent's ``sampled`` flag (as the
    SDK's default ``ParentBased`` sampler does); a root asks the provider's
    sampler, except for the SDK's own (``ALWAYS_ON``, the default,
    ``ALWAYS_OFF``, ``TraceIdRatioBased``, bare or as ``ParentBased``'s root),
    whose rule is applied without calling them (a ratio: the trace id's low
    64 bits below its bound, the same decision). In a trace not sampled no
    span is queued, and past its root no span id is drawn: each message
    carries the trace's context as it came and its handler runs under it (the trace id goes on).

    Thread contract: `send`, `process`, `begin` and `end` run on any thread,
    without a lock (``list.extend`` of a tuple is atomic under the GIL);
    spans are built on one thread at a time, in the order they ended, under
    the builder's lock.

    Args:
        tracer_provider: an OpenTelemetry SDK ``TracerProvider`` (default: OpenTelemetry's global one).
        export_interval: seconds between the builder's passes.
        max_pending: spans queued for the builder at most; past it a span is dropped and counted (`dropped`).

    Raises:
        ObservabilityConfigError: opentelemetry-sdk is not installed, the
            provider is not the SDK's, or an argument is out of range.
    """

    def __init__(
        self, tracer_provider: Any = None, *, export_interval: float = 1.0, max_pending: int = 1 << 18
    ) -> None:
        try:
            # The optional extra, imported only when turned on.
            from opentelemetry import context as otel_context  # noqa: PLC0415
            from opentelemetry import trace  # noqa: PLC0415
            from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext  # noqa: PLC0415
            from opentelemetry.sdk.trace import Event, ReadableSpan, SynchronousMultiSpanProcessor  # noqa: PLC0415
            from opentelemetry.sdk.trace import Tracer as SdkTracer  # noqa: PLC0415
            from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: PLC0415
            from opentelemetry.sdk.trace.sampling import (  # noqa: PLC0415
                ALWAYS_OFF,
                ALWAYS_ON,
                ParentBased,
                TraceIdRatioBased,
            )
            from opentelemetry.sdk.util.instrumentation import InstrumentationScope  # noqa: PLC0415
        except ImportError as exc:  # pragma: no cover - the extra is in the test extra
            msg = "enable_tracing needs the OpenTelemetry SDK: pip install 'troupe[otel]' (or use record_spans)"
            raise ObservabilityConfigError(msg) from exc
        if not (isinstance(export_interval, (int, float)) and 0 < export_interval < float("inf")):
            msg = f"enable_tracing: export_interval must be a positive number of seconds, got {export_interval!r}"
            raise ObservabilityConfigError(msg)
        if not (isinstance(max_pending, int) and max_pending >= 1):
            msg = f"enable_tracing: max_pending must be an int >= 1, got {max_pending!r}"
            raise ObservabilityConfigError(msg)
        provider = tracer_provider if tracer_provider is not None else trace.get_tracer_provider()
        sdk_tracer = provider.get_tracer("troupe")
        if not isinstance(sdk_tracer, SdkTracer):
            msg = (
                f"enable_tracing needs an OpenTelemetry SDK TracerProvider, got {provider!r} (its tracer is "
                f"{type(sdk_tracer).__qualname__}): pass tracer_provider=opentelemetry.sdk.trace.TracerProvider(...) "
                "or set one with trace.set_tracer_provider (or use record_spans)"
            )
            raise ObservabilityConfigError(msg)
        self._processor = sdk_tracer.span_processor
        self._producer = trace.SpanKind.PRODUCER
        self._consumer = trace.SpanKind.CONSUMER
        sampler = sdk_tracer.sampler
        # A root's decision. For the SDK's own samplers it is taken here without calling
        # them (`_root_sampled`): always (the default), never, or TraceIdRatioBased's rule
        # (the trace id's low 64 bits below its bound), the same decision as theirs.
        root = sampler._root if isinstance(sampler, ParentBased) else sampler  # noqa: SLF001 - the SDK's root
        self._sampler = sampler
        # A root is sampled iff its trace id's last 16 hex digits sort below this; None: ask _sampler.
        self._below: str | None = None
        if root is ALWAYS_ON:
            self._below = _ALWAYS
        elif root is ALWAYS_OFF:
            self._below = ""  # nothing sorts below ""
        elif type(root) is TraceIdRatioBased:
            bound = root.bound
            self._below = _ALWAYS if bound > root.TRACE_ID_LIMIT else f"{bound:016x}"
        self._current_span = trace.get_current_span
        # OpenTelemetry's current context, read by `send` as ``self._otel_current.get()``: a method
        # of a C type, a specialized call (an instance attribute's call through LOAD_METHOD is not).
        self._otel_current: Any = types.SimpleNamespace(get=otel_context.get_current)
        runtime = otel_context._RUNTIME_CONTEXT  # noqa: SLF001 - the API's own runtime context
        if type(runtime) is ContextVarsRuntimeContext:  # the default: its get_current is this one C call
            self._otel_current = runtime._current_context  # noqa: SLF001 - its ContextVar
        # What only the builder reads, in one attribute: an instance with more than 30 attributes
        # gets no shared-keys dict in CPython 3.11, and its attribute reads and method calls on
        # the message path are not specialized as well. `state`: a send span's context is built
        # without SpanContext.__new__'s range checks (a tuple of six, the trace state one of them):
        # the ids are valid by construction (drawn here, or checked by TraceContext).
        self._sdk = types.SimpleNamespace(
            trace=trace,
            readable=ReadableSpan,
            event=Event,
            resource=sdk_tracer.resource,
            scope=InstrumentationScope("troupe"),
            flags=(trace.TraceFlags(trace.TraceFlags.DEFAULT), trace.TraceFlags(trace.TraceFlags.SAMPLED)),
            error=trace.StatusCode.ERROR,
            unset=trace.Status(),
            state=trace.DEFAULT_TRACE_STATE,
            multi=SynchronousMultiSpanProcessor,
            simple=SimpleSpanProcessor,
            suppress=otel_context.set_value(otel_context._SUPPRESS_INSTRUMENTATION_KEY, True),  # noqa: SLF001
            attach=otel_context.attach,
            detach=otel_context.detach,
        )
        # Invariant: holds only sampled spans' records, flat (`_STRIDE` items each, extended
        # by one atomic list.extend), at most max_pending of them (appended on
        # any thread, taken from the left by the builder under _build_lock: a slice copied, then
        # deleted, so what other threads append meanwhile stays).
        self._pending: list[Any] = []
        self._max_pending = max_pending * _STRIDE  # in items, as len(self._pending) counts
        self._soon = max(1, max_pending // 4) * _STRIDE
        self._interval = float(export_interval)
        # Spans dropped: by any thread, the queue full (a count: next() is one C call, so none is lost
        # under a race), and by the builder (a processor raised; under _build_lock).
        self._overflowed = itertools.count()
        self._dropped = 0
        self._built = 0
        self._build_cpu_ns = 0
        self._names: dict[tuple[Any, ...], tuple[str, dict[str, Any]]] = {}
        self._build_lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._builder = threading.Thread(target=self._run, name="troupe-otel-spans", daemon=True)
        self._builder.start()

    @property
    def dropped(self) -> int:
        """Spans dropped since this tracer was made: `max_pending` were queued, or a span processor raised."""
        return int(repr(self._overflowed)[6:-1]) + self._dropped  # a count's repr shows its next value

    @property
    def built(self) -> int:
        """Spans built and handed to the span processors so far."""
        return self._built

    @property
    def build_cpu_seconds(self) -> float:
        """CPU time spent building spans and in the span processors' ``on_end`` so far (any thread)."""
        return self._build_cpu_ns / 1e9

    # -- the message path -------------------------------------------------------------------------

    def send(self, cell: Cell, message: Any) -> Traced:
        """Queue a ``send`` PRODUCER span under the current context; carry its context (the sender's thread)."""
        parent = _current_get()
        parent_id: str | None = None
        if parent is not None:
            trace_id, parent_id, sampled = parent
            if sampled:
                try:
                    span_id = _pop_span_id()
                except IndexError:
                    span_id = _draw(_span_ids, 16)
                context = (trace_id, span_id, True)
            else:  # a trace not sampled: nothing recorded, its context carried as it came
                context = parent
        elif not self._otel_current.get() or (user := self._under_user_span()) is None:
            # A new trace, decided inline: the usual root (OpenTelemetry's context empty, one C call).
            try:
                trace_id = _pop_trace_id()
            except IndexError:
                trace_id = _draw(_trace_ids, 32)
            # A root's span id is its trace id's low half (as random as a drawn one; Zipkin's
            # roots share their trace's id alike): one id drawn a root, not two.
            # (`_draw` gives no trace id whose low half is zero, an invalid span id.)
            span_id = trace_id[16:]
            below = self._below
            if below is _ALWAYS:  # the SDK's default sampler: no comparison
                sampled = True
            elif below is not None:
                sampled = span_id < below
            else:
                sampled = self._decide(cell, trace_id)
            context = (trace_id, span_id, sampled)
        else:  # under OpenTelemetry's current span (the user's)
            context, parent_id = user
            trace_id, span_id, sampled = context
        if sampled:
            pending = self._pending
            if len(pending) < self._soon or self._room():
                pending.extend((cell, message, trace_id, span_id, parent_id, _time_ns(), None, None))  # `_STRIDE`
                if self._closed:
                    self._drain()
        traced = Traced()  # Traced.of(message, context) written out: a Python call less
        traced.message = message
        traced.context = context
        return traced

    def process(self, cell: Cell, actor: Any, traced: Traced, proxy: bool) -> Any:  # noqa: FBT001 - as Tracer's
        """Run the handler under a ``process`` CONSUMER span, child of the send span and linked to it (the turn).

        `begin`, the handler and `end` in one call: the span's record is
        queued when the handler returns (an asyncio handler's coroutine:
        when it ends; an exception goes on the span with an ERROR status).
        In a trace not sampled nothing is recorded: the handler runs under
        the context that came.
        """
        producer = traced.context
        trace_id, parent_id, sampled = producer
        message = traced.message
        if sampled:
            try:
                span_id = _pop_span_id()
            except IndexError:
                span_id = _draw(_span_ids, 16)
            context = (trace_id, span_id, True)
            start = _time_ns()
        else:
            context = producer
        token = _current_set(context)
        try:
            result = handle_receive(actor, message) if proxy else actor.on_receive(message)
        except BaseException as exc:
            if sampled:
                self.end((cell, message, trace_id, span_id, parent_id, start), exc)
            raise
        finally:
            _current_reset(token)
        if cell.aio is not None and asyncio.iscoroutine(result):
            handle = (cell, message, trace_id, span_id, parent_id, start) if sampled else None
            return in_trace(result, self, handle, context)
        if sampled:
            pending = self._pending
            if len(pending) < self._soon or self._room():
                # `end` written out: a Python call less a recorded message's turn.
                pending.extend((cell, message, trace_id, span_id, parent_id, start, _time_ns(), None))
                if self._closed:  # a handler that ended after tracing was turned off
                    self._drain()
        return result

    def end(self, handle: Any, exc: BaseException | None) -> None:
        """Queue the ``process`` span `process` began (`handle`: its record's head); an exception goes on it as ERROR.

        Called by `process` for a handler that raised, and by
        ``in_trace`` when an asyncio handler's coroutine ends.
        """
        if handle is None:  # a trace not sampled
            return
        end = _time_ns()
        pending = self._pending
        if len(pending) < self._soon or self._room():
            pending.extend((*handle, end, exc))  # `_STRIDE`
            if self._closed:  # a handler that ended after tracing was turned off
                self._drain()

    def _under_user_span(self) -> tuple[tuple[str, str, bool], str] | None:
        """The root of a send under OpenTelemetry's current span (the user's): (context, parent span id).

        None if that context holds no valid span: `send` then starts a new
        trace, as it does when the context is empty.
        """
        current = self._current_span().get_span_context()
        if not current.is_valid:
            return None
        return (f"{current.trace_id:032x}", _span_id(), current.trace_flags.sampled), f"{current.span_id:016x}"

    def _decide(self, cell: Cell, trace_id: str) -> bool:
        """Whether a new trace is sampled, as the provider's sampler (not one of the SDK's own) decides."""
        decision = self._sampler.should_sample(None, int(trace_id, 16), f"send {_destination(cell)}", self._producer)
        return bool(decision.decision.is_sampled())

    def _room(self) -> bool:
        """A quarter of `max_pending` is queued: wake the builder; False (the span is dropped) past `max_pending`."""
        self._wake.set()
        if len(self._pending) < self._max_pending:
            return True
        next(self._overflowed)
        return False

    # -- the builder ------------------------------------------------------------------------------

    def _run(self) -> None:
        """The builder thread: build what is queued every `export_interval` s (or when woken) until closed."""
        while not self._closed:
            self._wake.wait(self._interval)
            self._wake.clear()
            self._drain()

    def _drain(self) -> None:
        """Build every queued span and hand it to the span processors, in the order they ended.

        The provider's processors, if its own multi-processor holds them
        (the SDK's default): a ``SimpleSpanProcessor`` is given the pass's
        spans in exports of at most `_EXPORT_BATCH` (what its ``on_end``
        does for one span, once per export: instrumentation suppressed
        around ``exporter.export``, errors logged); any other processor's
        ``on_end`` is called per span, as the SDK would.
        """
        with self._build_lock:
            cpu = time.thread_time_ns()
            pending = self._pending
            taken = len(pending)  # whole records: each was added by one atomic extend
            records = pending[:taken]
            del pending[:taken]
            build = self._build
            processor = self._processor
            simple: list[Any] = []
            if type(processor) is self._sdk.multi:
                ends = []
                for each in processor._span_processors:  # noqa: SLF001 - the SDK's own processor list
                    if type(each) is self._sdk.simple:
                        simple.append(each)
                    else:
                        ends.append(each.on_end)
            else:
                ends = [processor.on_end]
            # The SpanContext of each send span built in this pass, by span id, until its process
            # span (its child, linked to it) takes it: one SpanContext and two int() less a message.
            sends: dict[str, tuple[Any, int]] = {}
            batch: list[Any] = []
            built = 0
            try:
                for at in range(0, taken, _STRIDE):
                    span = build(records[at : at + _STRIDE], sends)
                    for on_end in ends:
                        on_end(span)
                    built += 1
                    if simple:
                        batch.append(span)
                        if len(batch) >= _EXPORT_BATCH:
                            self._export(simple, batch)
                            batch = []
            except Exception:  # noqa: BLE001 - a processor's or exporter's failure must not stop the builder
                logger.opt(exception=True).warning("troupe tracing: a span processor raised; the span was dropped")
                self._dropped += 1
            if batch:
                self._export(simple, batch)
            self._built += built
            self._build_cpu_ns += time.thread_time_ns() - cpu

    def _export(self, processors: list[Any], spans: list[Any]) -> None:
        """What each ``SimpleSpanProcessor``'s ``on_end`` does, for `spans` at once (the builder, under its lock)."""
        batch = tuple(spans)
        for processor in processors:
            if processor._shutdown:  # noqa: SLF001 - as its on_end: nothing after its shutdown
                continue
            token = self._sdk.attach(self._sdk.suppress)
            processor._metrics.finish_items(len(batch))  # noqa: SLF001 - its own counter, as on_end counts
            try:
                processor.span_exporter.export(batch)
            except Exception:  # noqa: BLE001 - as SimpleSpanProcessor: logged, the builder goes on
                logger.opt(exception=True).error("troupe tracing: exception while exporting spans")
            finally:
                self._sdk.detach(token)

    def _build(self, raw: list[Any], sends: dict[str, tuple[Any, int]]) -> Any:
        trace = self._sdk.trace
        # SpanContext(trace_id, span_id, False, flags) without its __new__'s checks: (..., trace state, valid).
        span_context, state, new = trace.SpanContext, self._sdk.state, tuple.__new__
        flags = self._sdk.flags[True]  # only sampled spans are queued
        cell, message, trace_hex, span_hex, parent_hex, start, end, exc = raw
        name, actor_class, message_type = cell.name, cell.actor_class.__qualname__, message.__class__.__qualname__
        ids = (message.message_id, message.correlation_id) if isinstance(message, AgentMessage) else None
        if end is None:  # a send span (see `send`)
            end, operation, kind = start, "send", self._producer
            trace_id = int(trace_hex, 16)
            parent = (
                None
                if parent_hex is None
                else new(span_context, (trace_id, int(parent_hex, 16), False, flags, state, True))
            )
            links: tuple[Any, ...] = ()
            context = new(span_context, (trace_id, int(span_hex, 16), False, flags, state, True))
            sends[span_hex] = context, trace_id
        else:  # a process span (see `process`)
            operation, kind = "process", self._consumer
            sent = sends.pop(parent_hex, None)
            if sent is None:  # its send span was built in an earlier pass
                trace_id = int(trace_hex, 16)
                parent = new(span_context, (trace_id, int(parent_hex, 16), False, flags, state, True))
            else:
                parent, trace_id = sent
            links = (trace.Link(parent),)
            context = new(span_context, (trace_id, int(span_hex, 16), False, flags, state, True))
        span_name, attributes = self._naming(name, actor_class, message_type, ids, operation)
        status = self._sdk.unset
        events: tuple[Any, ...] = ()
        if exc is not None:
            status = trace.Status(self._sdk.error, repr(exc))
            events = (self._exception_event(exc, end),)
        return self._sdk.readable(
            span_name,
            context,
            parent,
            self._sdk.resource,
            attributes,
            events,
            links,
            kind,
            None,
            status,
            start,
            end,
            self._sdk.scope,
        )

    def _naming(
        self, name: str | None, actor_class: str, message_type: str, ids: Any, operation: str
    ) -> tuple[str, dict[str, Any]]:
        """The span's name and attributes; the same dict for every span of one (actor, message type, operation)."""
        destination = name if name is not None else actor_class
        if ids is not None:  # an AgentMessage's attributes name it: not shared
            return f"{operation} {destination}", _named_attributes(name, actor_class, message_type, ids, operation)
        key = (name, actor_class, message_type, operation)
        named = self._names.get(key)
        if named is None:
            if len(self._names) >= _MAX_NAMES:
                self._names.clear()
            named = self._names[key] = (
                f"{operation} {destination}",
                _named_attributes(name, actor_class, message_type, None, operation),
            )
        return named

    def _exception_event(self, exc: BaseException, when: int) -> Any:
        """The ``exception`` event ``Span.record_exception`` would add (OpenTelemetry's exception conventions)."""
        return self._sdk.event(
            "exception",
            {
                "exception.type": type(exc).__qualname__,
                "exception.message": str(exc),
                "exception.stacktrace": "".join(traceback.format_exception(exc)),
                "exception.escaped": "False",
            },
            when,
        )

    def flush(self, *, timeout: float | None = None) -> bool:
        """Build every span queued so far and force-flush the span processors; return whether they did. Any thread."""
        self._drain()
        return bool(self._processor.force_flush(30_000 if timeout is None else max(0, int(timeout * 1000))))

    def close(self) -> None:
        """Tracing was turned off: stop the builder, build what is queued, flush (later spans are built at once)."""
        self._closed = True
        self._wake.set()
        if self._builder is not threading.current_thread():
            self._builder.join()
        self.flush()


def record_spans(system: ActorSystem) -> SpanRecorder:
    """Turn tracing on in `system` with a new `SpanRecorder` (replacing any tracer), and return it. Any thread."""
    recorder = SpanRecorder()
    set_tracer(system, recorder)
    return recorder


def enable_tracing(
    system: ActorSystem, *, tracer_provider: Any = None, export_interval: float = 1.0, max_pending: int = 1 << 18
) -> OpenTelemetryTracer:
    """Turn tracing on in `system` with OpenTelemetry spans (replacing any tracer). Any thread.

    Spans are built off the message path (see `OpenTelemetryTracer`): call
    its `OpenTelemetryTracer.flush` (or `disable_tracing`) before reading an
    in-memory exporter.

    Args:
        system: the system whose messages to trace.
        tracer_provider: an OpenTelemetry SDK ``TracerProvider`` (default: the global one).
        export_interval: seconds between the builder's passes.
        max_pending: spans queued for the builder at most (past it, dropped and counted).

    Raises:
        ObservabilityConfigError: the OpenTelemetry SDK is not installed (``pip install 'troupe[otel]'``),
            the provider is not the SDK's, or an argument is out of range.
    """
    tracer = OpenTelemetryTracer(tracer_provider, export_interval=export_interval, max_pending=max_pending)
    set_tracer(system, tracer)
    return tracer


def disable_tracing(system: ActorSystem) -> None:
    """Turn tracing off in `system` (messages already queued are handled without a span). Any thread.

    The tracer it had is closed: an OpenTelemetry tracer builds and flushes
    every span queued before this returns.
    """
    set_tracer(system, None)
