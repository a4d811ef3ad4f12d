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
module is imported.

At the edges: `correlate` fills an `AgentMessage`'s empty ``correlation_id``
with the current trace id (a message leaving the system), and `trace_of`
reads one back (a message coming in: ``with use_trace(trace_of(msg))``).
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from typing import TYPE_CHECKING, Any

import attrs

from actors._core import CURRENT_TRACE, FrozenDict, TraceContext, Traced, Tracer, set_tracer
from actors.errors import ObservabilityConfigError
from actors.protocol import AgentMessage

if TYPE_CHECKING:
    from collections.abc import Iterator

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

# Ids need be unique, not secret: a fast PRNG seeded from the OS (its getrandbits
# is one C call under the GIL, so threads may share it).
_bits = random.Random(random.SystemRandom().getrandbits(64)).getrandbits


def _trace_id() -> str:
    return f"{_bits(128) or 1:032x}"


def _span_id() -> str:
    return f"{_bits(64) or 1:016x}"


def _context(trace_id: str, span_id: str, *, sampled: bool = True) -> TraceContext:
    # Ids this module drew are valid: skip the constructor's hex check (~5 µs per message).
    context = object.__new__(TraceContext)
    object.__setattr__(context, "trace_id", trace_id)
    object.__setattr__(context, "span_id", span_id)
    object.__setattr__(context, "sampled", sampled)
    return context


def new_trace() -> TraceContext:
    """Return the context of a new trace's root (fresh trace and span ids), for `use_trace`."""
    return _context(_trace_id(), _span_id())


def current_trace() -> TraceContext | None:
    """Return the trace context messages sent here now would carry (a handler's, or `use_trace`'s), or None."""
    return CURRENT_TRACE.get()


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
    return attrs.evolve(message, correlation_id=context.trace_id)


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
    attributes: dict[str, Any] = {
        "messaging.system": "troupe",
        "messaging.operation.type": operation,
        "messaging.operation.name": operation,
        "messaging.destination.name": _destination(cell),
        "troupe.actor.class": cell.actor_class.__qualname__,
        "troupe.message.type": type(message).__qualname__,
    }
    if isinstance(message, AgentMessage):
        attributes["messaging.message.id"] = message.message_id
        if message.correlation_id is not None:
            attributes["messaging.message.conversation_id"] = message.correlation_id
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
        context = _context(parent.trace_id if parent is not None else _trace_id(), _span_id())
        self._raw.append(
            (
                "producer",
                cell,
                message,
                context,
                None if parent is None else parent.span_id,
                None,
                threading.current_thread().name,
                now,
                now,
            )
        )
        return Traced(message, context)

    def begin(self, cell: Cell, traced: Traced) -> tuple[Any, TraceContext]:
        """Start a ``process`` span, child of and linked to the send span (the receiver's turn)."""
        context = _context(traced.context.trace_id, _span_id())
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
                traced.context.span_id,
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

    Args:
        tracer_provider: where the spans go (default: OpenTelemetry's global provider).

    Raises:
        ObservabilityConfigError: opentelemetry-api is not installed.
    """

    def __init__(self, tracer_provider: Any = None) -> None:
        try:
            from opentelemetry import trace  # noqa: PLC0415 - the optional extra, imported only when turned on
        except ImportError as exc:  # pragma: no cover - the extra is in the test extra
            msg = "enable_tracing needs OpenTelemetry: pip install 'troupe[otel]' (or use record_spans)"
            raise ObservabilityConfigError(msg) from exc
        self._trace = trace
        self._tracer = trace.get_tracer("troupe", tracer_provider=tracer_provider)
        self._producer = trace.SpanKind.PRODUCER
        self._consumer = trace.SpanKind.CONSUMER

    def _parent(self) -> Any:
        """The OpenTelemetry context for a send: troupe's current trace, else OpenTelemetry's own current span."""
        current = CURRENT_TRACE.get()
        if current is None:
            return None  # OpenTelemetry's current context (the user's span, if any)
        trace = self._trace
        span_context = trace.SpanContext(
            trace_id=int(current.trace_id, 16),
            span_id=int(current.span_id, 16),
            is_remote=True,
            trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED if current.sampled else trace.TraceFlags.DEFAULT),
        )
        return trace.set_span_in_context(trace.NonRecordingSpan(span_context))

    def send(self, cell: Cell, message: Any) -> Traced:
        """Make a ``send`` PRODUCER span (ended at once) and carry its context (the sender's thread)."""
        span = self._tracer.start_span(
            f"send {_destination(cell)}",
            context=self._parent(),
            kind=self._producer,
            attributes=_attributes(cell, message, "send"),
        )
        span.end()
        span_context = span.get_span_context()
        context = _context(
            f"{span_context.trace_id:032x}", f"{span_context.span_id:016x}", sampled=span_context.trace_flags.sampled
        )
        return Traced(message, context, span_context)

    def begin(self, cell: Cell, traced: Traced) -> tuple[Any, TraceContext]:
        """Start a ``process`` CONSUMER span, child of the send span and linked to it (the receiver's turn)."""
        trace = self._trace
        producer = traced.data
        span = self._tracer.start_span(
            f"process {_destination(cell)}",
            context=trace.set_span_in_context(trace.NonRecordingSpan(producer)),
            kind=self._consumer,
            attributes=_attributes(cell, traced.message, "process"),
            links=[trace.Link(producer)],
        )
        span_context = span.get_span_context()
        context = _context(
            f"{span_context.trace_id:032x}", f"{span_context.span_id:016x}", sampled=span_context.trace_flags.sampled
        )
        return span, context

    def end(self, handle: Any, exc: BaseException | None) -> None:
        """End the ``process`` span; an exception is recorded on it with an ERROR status."""
        if exc is not None:
            handle.record_exception(exc)
            handle.set_status(self._trace.Status(self._trace.StatusCode.ERROR, repr(exc)))
        handle.end()


def record_spans(system: ActorSystem) -> SpanRecorder:
    """Turn tracing on in `system` with a new `SpanRecorder` (replacing any tracer), and return it. Any thread."""
    recorder = SpanRecorder()
    set_tracer(system, recorder)
    return recorder


def enable_tracing(system: ActorSystem, *, tracer_provider: Any = None) -> OpenTelemetryTracer:
    """Turn tracing on in `system` with OpenTelemetry spans (replacing any tracer). Any thread.

    Args:
        system: the system whose messages to trace.
        tracer_provider: an OpenTelemetry ``TracerProvider`` (default: the global one).

    Raises:
        ObservabilityConfigError: OpenTelemetry is not installed (``pip install 'troupe[otel]'``).
    """
    tracer = OpenTelemetryTracer(tracer_provider)
    set_tracer(system, tracer)
    return tracer


def disable_tracing(system: ActorSystem) -> None:
    """Turn tracing off in `system` (messages already queued are handled without a span). Any thread."""
    set_tracer(system, None)
