"""The observability extras: OpenTelemetry spans (``[otel]``) and Prometheus exposition (``[prometheus]``).

Both extras are in the ``test`` extra, so CI runs these; the Prometheus
server is scraped over 127.0.0.1.
"""

from __future__ import annotations

import threading
import time
import urllib.request
from typing import TYPE_CHECKING, Any

import pytest

from actors import Actor, ActorSystem, ObservabilityConfigError, Router
from actors._core import TraceContext
from actors.observability import (
    current_trace,
    disable_metrics,
    disable_tracing,
    enable_metrics,
    enable_tracing,
    new_trace,
    prometheus_registry,
    record_spans,
    register_metrics,
    serve_metrics,
    tracing,
    use_trace,
)
from actors.protocol import AgentMessage, MessageType

if TYPE_CHECKING:
    from collections.abc import Iterator

pytest.importorskip("opentelemetry.sdk")
pytest.importorskip("prometheus_client")

from opentelemetry import context as otel_context
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import NoOpTracerProvider, SpanKind, StatusCode
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from tests.test_observability import AsyncEcho, AsyncForward, Forward, Tail, _rotated

WAIT = 10.0


class Echo(Actor):
    def on_receive(self, message: Any) -> Any:
        if message == "boom":
            msg = "boom, as asked"
            raise ValueError(msg)
        return message


class Relay(Actor):
    def __init__(self, to: Any) -> None:
        super().__init__()
        self.to = to

    def on_receive(self, message: Any) -> Any:
        return self.to.ask(message, timeout=WAIT)


@pytest.fixture
def exporter() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def test_otel_spans_follow_the_messaging_conventions(
    system: ActorSystem, mode: str, exporter: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, spans = exporter
    tracer = enable_tracing(system, tracer_provider=provider)
    echo = system.spawn(Echo, mode=mode, name="echo")
    relay = system.spawn(Relay, echo)
    root = new_trace()
    with use_trace(root):
        assert relay.ask("x", timeout=WAIT) == "x"
    assert tracer.flush(timeout=WAIT)  # spans are built off the message path
    finished: tuple[ReadableSpan, ...] = spans.get_finished_spans()
    assert {f"{span.context.trace_id:032x}" for span in finished} == {root.trace_id}
    by_name = {span.name: span for span in finished}
    assert set(by_name) == {"send Relay", "process Relay", "send echo", "process echo"}
    for destination in ("Relay", "echo"):
        send, process = by_name[f"send {destination}"], by_name[f"process {destination}"]
        assert send.kind is SpanKind.PRODUCER
        assert process.kind is SpanKind.CONSUMER
        assert process.parent is not None
        assert process.parent.span_id == send.context.span_id
        assert [link.context.span_id for link in process.links] == [send.context.span_id]
        assert send.attributes is not None
        assert process.attributes is not None
        assert send.attributes["messaging.system"] == "troupe"
        assert send.attributes["messaging.operation.type"] == "send"
        assert process.attributes["messaging.operation.type"] == "process"
        assert process.attributes["messaging.destination.name"] == destination
    # the inner send was made inside the relay's handler: a child of its process span
    inner = by_name["send echo"]
    assert inner.parent is not None
    assert inner.parent.span_id == by_name["process Relay"].context.span_id
    assert by_name["send Relay"].parent is not None
    assert by_name["send Relay"].parent.span_id == int(root.span_id, 16)


def test_an_otel_span_records_the_handlers_error(
    system: ActorSystem, mode: str, exporter: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, spans = exporter
    tracer = enable_tracing(system, tracer_provider=provider)
    with pytest.raises(ValueError, match="boom"):
        system.spawn(Echo, mode=mode).ask("boom", timeout=WAIT)
    assert tracer.flush(timeout=WAIT)
    (process,) = [span for span in spans.get_finished_spans() if span.kind is SpanKind.CONSUMER]
    assert process.status.status_code is StatusCode.ERROR
    assert any(event.name == "exception" for event in process.events)


def test_an_agent_messages_otel_spans_carry_its_ids(
    system: ActorSystem, mode: str, exporter: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, spans = exporter
    tracer = enable_tracing(system, tracer_provider=provider)
    message = AgentMessage(sender="a", recipient="b", type=MessageType.STATUS_UPDATE, correlation_id="c" * 32)
    assert system.spawn(Echo, mode=mode).ask(message, timeout=WAIT) == message
    assert tracer.flush(timeout=WAIT)
    finished = spans.get_finished_spans()
    assert {span.kind for span in finished} == {SpanKind.PRODUCER, SpanKind.CONSUMER}
    for span in finished:
        assert span.attributes is not None
        assert span.attributes["messaging.message.id"] == message.message_id
        assert span.attributes["messaging.message.conversation_id"] == "c" * 32
        assert span.attributes["troupe.message.type"] == "AgentMessage"
        assert span.attributes["troupe.actor.class"] == "Echo"


def test_with_tracing_off_no_opentelemetry_code_is_called(
    system: ActorSystem, mode: str, exporter: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, spans = exporter
    calls: list[str] = []

    class Watching(SimpleSpanProcessor):
        def on_start(self, span: Any, parent_context: Any = None) -> None:
            calls.append(span.name)

        def on_end(self, span: Any) -> None:
            calls.append(span.name)

    provider.add_span_processor(Watching(spans))
    enable_tracing(system, tracer_provider=provider)
    disable_tracing(system)
    ref = system.spawn(Echo, mode=mode)
    for i in range(5):
        ref.tell(i)
    assert ref.ask("x", timeout=WAIT) == "x"
    assert calls == []
    assert spans.get_finished_spans() == ()


def _chain(system: ActorSystem, mode: str, root: TraceContext | None = None) -> tuple[TraceContext, TraceContext]:
    """Run head -> (routed ask) -> routee -> head -> (tell) -> tail, modes rotated from `mode`, under `root`.

    Return the root context (default: a new trace's) and the one tail's handler ran under.
    """
    first, middle, last = _rotated(mode)
    seen: list[TraceContext | None] = []
    done = threading.Event()
    tail = system.spawn(Tail, seen, done, mode=last)
    echo = AsyncEcho if middle == "asyncio" else Echo
    router = system.spawn(Router, [system.spawn(echo, mode=middle) for _ in range(2)])
    head = system.spawn(AsyncForward if first == "asyncio" else Forward, router, tail, mode=first)
    root = new_trace() if root is None else root
    with use_trace(root):
        head.tell("job")
    assert done.wait(WAIT)
    head.stop(timeout=WAIT)  # after the handler that started the chain: its span has ended
    tail.stop(timeout=WAIT)
    (context,) = seen
    assert context is not None
    return root, context


def _shape(spans: list[tuple[str, str, str, str | None, tuple[str, ...]]]) -> list[tuple[Any, ...]]:
    """(name, kind, the parent's name or "root", the linked spans' names), sorted: the chain without its ids."""
    names = {span_id: name for name, _kind, span_id, _parent, _links in spans}
    return sorted(
        (name, kind, "root" if parent is None else names.get(parent, "outside"), tuple(names[link] for link in links))
        for name, kind, _span_id, parent, links in spans
    )


def test_otel_spans_have_the_recorders_structure_and_the_carried_ids(
    system: ActorSystem, mode: str, exporter: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    recorder = record_spans(system)
    first, _ = _chain(system, mode)
    recorded = [
        (span.name, span.kind, span.span_id, None if span.parent_id == first.span_id else span.parent_id, span.links)
        for span in recorder.spans()
        if span.trace_id == first.trace_id
    ]
    provider, spans = exporter
    tracer = enable_tracing(system, tracer_provider=provider)
    root, tail_context = _chain(system, mode)
    assert tracer.flush(timeout=WAIT)
    kinds = {SpanKind.PRODUCER: "producer", SpanKind.CONSUMER: "consumer"}
    exported = []
    for span in spans.get_finished_spans():
        assert span.context is not None
        if f"{span.context.trace_id:032x}" != root.trace_id:
            continue
        exported.append(
            (
                span.name,
                kinds[span.kind],
                f"{span.context.span_id:016x}",
                None
                if span.parent is None or f"{span.parent.span_id:016x}" == root.span_id
                else f"{span.parent.span_id:016x}",
                tuple(f"{link.context.span_id:016x}" for link in span.links),
            )
        )
    assert _shape(exported) == _shape(recorded)
    assert len(exported) == 6  # head, the routee (the router ref routes on the sender), tail: a send and a process each
    # the context tail's handler ran under (carried as a traceparent) names its exported process span
    (tail_span,) = [span for span in exported if span[0] == "process Tail"]
    assert tail_span[2] == tail_context.span_id
    assert TraceContext.from_traceparent(tail_context.traceparent).trace_id == root.trace_id
    disable_tracing(system)
    assert tracer.dropped == 0


class TraceRelay(Actor):
    """Asks `to` about the message and returns the trace ids it and its own handler ran under."""

    def __init__(self, to: Any) -> None:
        super().__init__()
        self.to = to

    def on_receive(self, message: Any) -> Any:
        mine = current_trace()
        assert mine is not None
        return mine.trace_id, self.to.ask(message, timeout=WAIT)


class AsyncTraceRelay(TraceRelay):
    async def on_receive(self, message: Any) -> Any:
        mine = current_trace()
        assert mine is not None
        return mine.trace_id, await self.to.ask(message, block=False)


class TraceOf(Actor):
    def on_receive(self, message: Any) -> Any:
        context = current_trace()
        return None if context is None else context.trace_id


def _sampled_chains(system: ActorSystem, mode: str, sampler: Any, roots: int) -> tuple[list[str], dict[str, int]]:
    """Ask a relay `roots` times, each a trace of its own; return its trace ids and the spans exported per trace."""
    spans = InMemorySpanExporter()
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(SimpleSpanProcessor(spans))
    tracer = enable_tracing(system, tracer_provider=provider)
    relay = system.spawn(
        AsyncTraceRelay if mode == "asyncio" else TraceRelay, system.spawn(TraceOf, mode=mode), mode=mode
    )
    traces = []
    for i in range(roots):
        outer, inner = relay.ask(i, timeout=WAIT)
        assert outer == inner  # sampled or not, the chain keeps one trace id
        traces.append(outer)
    disable_tracing(system)
    assert tracer.dropped == 0
    exported: dict[str, int] = {}
    for span in spans.get_finished_spans():
        assert span.context is not None
        key = f"{span.context.trace_id:032x}"
        exported[key] = exported.get(key, 0) + 1
    provider.shutdown()
    return traces, exported


def test_a_ratio_sampler_decides_once_at_the_root_as_the_sdk_would(system: ActorSystem, mode: str) -> None:
    sampler = ParentBased(TraceIdRatioBased(0.5))
    traces, exported = _sampled_chains(system, mode, sampler, 64)
    chosen = {t for t in traces if sampler.should_sample(None, int(t, 16), "send TraceRelay").decision.is_sampled()}
    assert 0 < len(chosen) < len(traces)  # 64 coin flips: all alike once in 2**63 runs
    # a sampled trace has every span of its chain (two sends, two processes); the others none
    assert exported == dict.fromkeys(chosen, 4)


def test_a_roots_span_id_is_its_trace_ids_low_half_and_its_children_draw_their_own(
    system: ActorSystem, mode: str, exporter: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, spans = exporter
    tracer = enable_tracing(system, tracer_provider=provider)
    relay = system.spawn(
        AsyncTraceRelay if mode == "asyncio" else TraceRelay, system.spawn(TraceOf, mode=mode), mode=mode
    )
    for i in range(8):
        relay.ask(i, timeout=WAIT)
    assert tracer.flush(timeout=WAIT)
    finished = spans.get_finished_spans()
    assert len(finished) == 8 * 4
    roots = [span for span in finished if span.parent is None]
    assert len(roots) == 8
    for span in roots:
        assert span.context is not None
        assert span.context.span_id == span.context.trace_id & (1 << 64) - 1 != 0
    ids = [span.context.span_id for span in finished if span.context is not None]
    assert len(set(ids)) == len(ids)  # one span id per span, the roots' included
    disable_tracing(system)


def test_a_send_under_a_users_opentelemetry_span_is_its_child_and_an_empty_one_starts_a_trace(
    system: ActorSystem, mode: str, exporter: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, spans = exporter
    tracer = enable_tracing(system, tracer_provider=provider)
    echo = system.spawn(Echo, mode=mode)
    with provider.get_tracer("app").start_as_current_span("request") as request:
        assert echo.ask("under", timeout=WAIT) == "under"
    token = otel_context.attach(otel_context.set_value("unrelated", 1))  # a context, but no span in it
    try:
        assert echo.ask("beside", timeout=WAIT) == "beside"
    finally:
        otel_context.detach(token)
    assert tracer.flush(timeout=WAIT)
    user = request.get_span_context()
    under, beside = [span for span in spans.get_finished_spans() if span.kind == SpanKind.PRODUCER]
    assert under.context is not None
    assert beside.context is not None
    assert under.context.trace_id == user.trace_id
    assert under.parent is not None
    assert under.parent.span_id == user.span_id
    assert beside.parent is None  # a new trace's root: its span id is its trace id's low half
    assert beside.context.trace_id != user.trace_id
    assert beside.context.span_id == beside.context.trace_id & (1 << 64) - 1
    disable_tracing(system)


def test_no_drawn_id_ends_in_sixteen_zeros(monkeypatch: pytest.MonkeyPatch) -> None:
    """An id whose low 16 digits are zero is no span id (W3C), nor a trace id (its low half names its root)."""
    zero_low = bytes(range(1, 9)) + bytes(8)  # a 32-digit id ending in 16 zeros
    for digits, block in ((32, zero_low * 1023 + bytes(range(16, 32))), (16, bytes(8) * 1023 + b"\x01" * 8)):
        monkeypatch.setattr(tracing, "_urandom", lambda n, block=block: block[:n])
        ids: list[str] = []
        one = tracing._draw(ids, digits)
        assert ids == []  # the block's other ids were all refused
        assert len(one) == digits
        assert not one.endswith("0" * 16)


class _CountingSampler(Sampler):
    """Samples every other root it is asked about, and counts the questions."""

    def __init__(self) -> None:
        self.asked = 0

    def should_sample(self, *args: Any, **kwargs: Any) -> SamplingResult:
        self.asked += 1
        return SamplingResult(Decision.RECORD_AND_SAMPLE if self.asked % 2 else Decision.DROP)

    def get_description(self) -> str:
        return "CountingSampler"


def test_a_samplers_decision_is_asked_once_per_trace_at_its_root(system: ActorSystem, mode: str) -> None:
    sampler = _CountingSampler()
    traces, exported = _sampled_chains(system, mode, sampler, 10)
    assert sampler.asked == 10  # the chain's second message follows its parent's flag
    assert exported == {trace: 4 for n, trace in enumerate(traces) if n % 2 == 0}


def test_a_trace_not_sampled_exports_nothing_and_still_carries_its_id(system: ActorSystem, mode: str) -> None:
    traces, exported = _sampled_chains(system, mode, ParentBased(ALWAYS_OFF), 8)
    assert len(set(traces)) == 8
    assert exported == {}


def test_a_trace_come_in_unsampled_keeps_its_id_and_flag_across_modes_and_exports_nothing(
    system: ActorSystem, mode: str, exporter: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    """A traceparent with flag 00 from outside: tell -> routed ask -> tell over the three modes, nothing recorded."""
    provider, spans = exporter  # ALWAYS_ON: only the parent's flag can keep the chain unrecorded
    tracer = enable_tracing(system, tracer_provider=provider)
    fresh = new_trace()
    root = TraceContext.from_traceparent(f"00-{fresh.trace_id}-{fresh.span_id}-00")
    _, tail_context = _chain(system, mode, root)
    assert tracer.flush(timeout=WAIT)
    # the tail's handler ran under the root's context as it came in: no span was started on the way
    assert tail_context.traceparent == root.traceparent
    assert spans.get_finished_spans() == ()
    disable_tracing(system)
    assert tracer.dropped == 0


def test_every_span_reaches_the_exporter_by_the_time_tracing_is_off(
    system: ActorSystem, mode: str, exporter: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, spans = exporter
    tracer = enable_tracing(system, tracer_provider=provider, export_interval=3600.0)  # the builder never wakes
    ref = system.spawn(Echo, mode=mode)
    for i in range(50):
        ref.tell(i)
    assert ref.ask("x", timeout=WAIT) == "x"
    disable_tracing(system)
    assert len(spans.get_finished_spans()) == 2 * 51 == tracer.built
    assert tracer.dropped == 0


def test_spans_past_max_pending_are_dropped_and_counted(
    system: ActorSystem, exporter: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, spans = exporter
    tracer = enable_tracing(system, tracer_provider=provider, export_interval=3600.0, max_pending=4)
    ref = system.spawn(Echo, mode="pooled")
    with use_trace(new_trace()):
        for i in range(20):
            ref.tell(i)  # the builder is woken at 1 queued; how many it takes in time is up to the scheduler
        assert ref.ask("x", timeout=WAIT) == "x"
    disable_tracing(system)
    assert tracer.built + tracer.dropped == 2 * 21
    assert len(spans.get_finished_spans()) == tracer.built


def test_a_full_span_queue_drops_counts_and_reports_it_in_the_metrics(
    system: ActorSystem, mode: str, exporter: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, spans = exporter
    enable_metrics(system)
    tracer = enable_tracing(system, tracer_provider=provider, export_interval=3600.0, max_pending=4)
    ref = system.spawn(Echo, mode=mode)
    with tracer._build_lock:  # the builder held: nothing leaves the queue, so exactly 4 spans fit
        for i in range(20):
            ref.tell(i)
        assert ref.ask("x", timeout=WAIT) == "x"
        assert system.metrics().flat()["system.tracing.spans_dropped"] == tracer.dropped == 2 * 21 - 4
    disable_tracing(system)
    assert tracer.built == len(spans.get_finished_spans()) == 4
    assert system.metrics().flat()["system.tracing.spans_dropped"] == 0  # no tracer now
    disable_metrics(system)


class Clocked(Actor):
    """Reply with the wall clock read inside the handler (ns), as the process span's times are."""

    def on_receive(self, message: Any) -> Any:
        return time.time_ns()


class AsyncClocked(Actor):
    async def on_receive(self, message: Any) -> Any:
        return time.time_ns()


def test_otel_spans_carry_the_times_recorded_on_the_message_path_and_link_their_producer(
    system: ActorSystem, mode: str, exporter: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, spans = exporter
    tracer = enable_tracing(system, tracer_provider=provider, export_interval=3600.0)  # built only at the flush
    ref = system.spawn(AsyncClocked if mode == "asyncio" else Clocked, mode=mode, name="clocked")
    before = time.time_ns()
    inside = ref.ask("what time is it", timeout=WAIT)
    after = time.time_ns()
    assert spans.get_finished_spans() == ()  # nothing built yet
    assert tracer.flush(timeout=WAIT)
    by_name = {span.name: span for span in spans.get_finished_spans()}
    assert set(by_name) == {"send clocked", "process clocked"}
    send, process = by_name["send clocked"], by_name["process clocked"]
    assert send.kind == SpanKind.PRODUCER
    assert process.kind == SpanKind.CONSUMER
    assert send.start_time is not None
    assert send.end_time is not None
    assert process.start_time is not None
    assert process.end_time is not None
    # the times are the ones read when the message was sent and handled, not when the span was built
    assert before <= send.start_time == send.end_time <= process.start_time <= inside <= process.end_time <= after
    assert process.parent == send.context
    assert [link.context for link in process.links] == [send.context]
    disable_tracing(system)


def test_the_systems_shutdown_builds_and_exports_every_queued_span(
    mode: str, exporter: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, spans = exporter
    with ActorSystem("shut") as system:
        tracer = enable_tracing(system, tracer_provider=provider, export_interval=3600.0)  # the builder never wakes
        ref = system.spawn(Echo, mode=mode)
        for i in range(30):
            ref.tell(i)
        assert ref.ask("x", timeout=WAIT) == "x"
        assert spans.get_finished_spans() == ()
    # the shutdown removed the tracer and closed it: its builder built, exported and stopped
    assert system.tracer is None
    assert len(spans.get_finished_spans()) == 2 * 31 == tracer.built
    assert tracer.dropped == 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"export_interval": 0}, "export_interval"), ({"max_pending": 0}, "max_pending")],
)
def test_bad_tracing_arguments_are_refused(
    system: ActorSystem, exporter: tuple[TracerProvider, InMemorySpanExporter], kwargs: dict[str, Any], match: str
) -> None:
    with pytest.raises(ObservabilityConfigError, match=match):
        enable_tracing(system, tracer_provider=exporter[0], **kwargs)
    assert system.tracer is None


def test_a_provider_that_is_not_the_sdks_is_refused(system: ActorSystem) -> None:
    with pytest.raises(ObservabilityConfigError, match="SDK TracerProvider"):
        enable_tracing(system, tracer_provider=NoOpTracerProvider())


# -- Prometheus ----------------------------------------------------------------------


def _families(text: str) -> dict[str, Any]:
    return {family.name: family for family in text_string_to_metric_families(text)}


def test_prometheus_exposes_per_class_series_scraped_over_localhost(system: ActorSystem, mode: str) -> None:
    enable_metrics(system, sample_every=1)
    refs = [system.spawn(Echo, mode=mode) for _ in range(3)]
    for ref in refs:
        assert ref.ask("x", timeout=WAIT) == "x"
    with serve_metrics(system) as server:
        assert server.url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(server.url, timeout=WAIT) as response:  # noqa: S310 - our own loopback URL
            text = response.read().decode()
    families = _families(text)
    handled = families["troupe_messages_handled"]
    samples = [s for s in handled.samples if s.name == "troupe_messages_handled_total"]
    # one series for the three actors: labels per class, never per actor
    assert [(s.labels, s.value) for s in samples] == [({"system": "test", "actor_class": "Echo"}, 3.0)]
    histogram = families["troupe_handler_seconds"]
    count = [s for s in histogram.samples if s.name == "troupe_handler_seconds_count"]
    assert count[0].value == 3.0
    inf = [s for s in histogram.samples if s.name == "troupe_handler_seconds_bucket" and s.labels["le"] == "+Inf"]
    assert inf[0].value == 3.0
    actors = {s.labels["mode"]: s.value for s in families["troupe_actors"].samples}
    assert actors[mode] == 3.0
    assert families["troupe_metrics_enabled"].samples[0].value == 1.0


def test_a_scrape_reads_the_snapshot_of_the_moment(system: ActorSystem) -> None:
    from prometheus_client import generate_latest  # noqa: PLC0415

    registry = prometheus_registry(system)
    assert _families(generate_latest(registry).decode())["troupe_metrics_enabled"].samples[0].value == 0.0
    enable_metrics(system)
    ref = system.spawn(Echo)
    assert ref.ask(1, timeout=WAIT) == 1
    first = _families(generate_latest(registry).decode())["troupe_messages_handled"].samples[0].value
    assert ref.ask(2, timeout=WAIT) == 2
    second = _families(generate_latest(registry).decode())["troupe_messages_handled"].samples[0].value
    assert (first, second) == (1.0, 2.0)


def test_each_system_gets_its_own_registry_and_a_shared_one_refuses_a_second_system(system: ActorSystem) -> None:
    with ActorSystem("other", dispatchers=1) as other:
        assert prometheus_registry(system) is prometheus_registry(system)
        assert prometheus_registry(system) is not prometheus_registry(other)
        shared = CollectorRegistry()
        collector = register_metrics(system, shared)
        assert register_metrics(system, shared) is collector  # again: a no-op, no "Duplicated timeseries"
        with pytest.raises(ObservabilityConfigError, match="already exposes system 'test'"):
            register_metrics(other, shared)


@pytest.mark.parametrize(
    ("host", "port", "match"),
    [
        ("0.0.0.0", 0, "loopback"),  # noqa: S104 - refused, the point of the test
        ("example.com", 0, "loopback"),
        ("127.0.0.1", -1, "port"),
        ("127.0.0.1", 70000, "port"),
    ],
)
def test_serve_metrics_refuses_an_outside_address_or_a_bad_port(
    system: ActorSystem, host: str, port: int, match: str
) -> None:
    with pytest.raises(ObservabilityConfigError, match=match):
        serve_metrics(system, host=host, port=port)
    assert not [t for t in threading.enumerate() if t.name.endswith("-metrics-http")]
