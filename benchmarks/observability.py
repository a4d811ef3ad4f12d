"""Observability benchmarks: what metrics and tracing cost a tell and an ask.

``python -m benchmarks --only observability``. Each function runs in its own
subprocess (see `benchmarks._harness`) for one implementation:

- ``pykka``: plain `pykka.ThreadingActor`s, which have neither metrics nor
  tracing: each of its figures is the plain one, so the report's "vs pykka"
  column reads as "troupe with this on, against plain pykka";
- ``thread`` / ``pooled``: troupe, the actor in that mode, measured in
  alternating rounds in one process with observability off, metrics on
  (the default, one turn in 16 timed, and ``sample_every=1``) and tracing on with the
  OpenTelemetry SDK (a ``TracerProvider`` with a ``SimpleSpanProcessor``
  into an ``InMemorySpanExporter``: two spans per message, built off the
  message path by the tracer's builder thread; ``tracing_exported`` stops
  the clock only once every span is in the exporter), and the same with
  head sampling (``tracing_sampled``: ``ParentBased(TraceIdRatioBased(0.01))``,
  each message here the root of a trace of its own, so ~1% are recorded;
  ``tracing_unsampled``: ``ParentBased(ALWAYS_OFF)``, trace contexts carried
  and nothing recorded), and observability off once more at the end of each
  round (``off_again``: the A/A row, the noise floor of every ratio), so each
  ratio compares figures taken milliseconds apart.

A round's ask loop times its own asks: a tracer's builder is flushed (not
timed) between the tell loop and the ask loop, so the asks do not share the
GIL with the building of the spans the tells queued (that building is in the
``tracing_exported`` tell row, and its CPU in the floor rows).

The ``*_ratio`` rows are on / off: 1.05 is 5% slower (tell: time per message;
ask: median latency). Targets: metrics on <= 1.05x on tell, tracing with the
OpenTelemetry SDK <= 2x (the issue's, on the SDK's default sampler: every
message recorded; the sampled rows have no target of their own).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from typing import TYPE_CHECKING, Any

import pykka

from actors import Actor, ActorSystem
from actors.observability import (
    AUDIT_STREAMS,
    audit_log,
    disable_audit_log,
    disable_metrics,
    disable_tracing,
    enable_audit_log,
    enable_metrics,
    enable_tracing,
)
from benchmarks._harness import Benchmark, Metric, Target

if TYPE_CHECKING:
    from collections.abc import Callable

    # An overhead configuration: (on, off, settle: what stops the tell loop's clock, or None,
    # idle: what runs untimed between the tell loop and the ask loop, or None).
    _Switch = tuple[Callable[[], None], Callable[[], None], Callable[[], Any] | None, Callable[[], Any] | None]

__all__ = ["BENCHMARKS", "audit_senders", "audit_write", "overhead"]

_WAIT_S = 600.0
"""Timeout of the waits that end a measurement: generous, they only guard against hangs."""


class Sink(Actor):
    """Reply with the message (troupe, mode chosen at spawn)."""

    def on_receive(self, message: Any) -> Any:
        return message


class PykkaSink(pykka.ThreadingActor):
    """Reply with the message (plain pykka)."""

    def on_receive(self, message: Any) -> Any:
        return message


def _tell_rate(ref: pykka.ActorRef[Any], messages: int, settle: Callable[[], Any] | None = None) -> float:
    tell = ref.tell
    start = time.perf_counter()
    for i in range(messages):
        tell(i)
    ref.ask(None, timeout=_WAIT_S)  # FIFO: this reply comes after every tell was handled
    if settle is not None:
        settle()  # e.g. every span built and exported
    return messages / (time.perf_counter() - start)


def _ask_us(ref: pykka.ActorRef[Any], asks: int) -> float:
    ask = ref.ask
    samples = []
    clock = time.perf_counter
    for i in range(asks):
        start = clock()
        ask(i)
        samples.append(clock() - start)
    return statistics.median(samples) * 1e6


SAMPLED_RATE = 0.01
"""The ``tracing_sampled`` rows' head sampling rate: ``ParentBased(TraceIdRatioBased(SAMPLED_RATE))``."""


def _otel_switch(
    system: ActorSystem, built: list[tuple[int, float]], sampler: str = "default"
) -> tuple[Callable[[], None], Callable[[], None], Callable[[], Any]] | None:
    """Return (on, off, flush) for OpenTelemetry tracing with `sampler`.

    ``"default"``: the SDK's default, ``ParentBased(ALWAYS_ON)`` (every message
    recorded, two spans each); ``"ratio"``: ``ParentBased(TraceIdRatioBased(SAMPLED_RATE))``,
    each tell or ask here being a trace's root; ``"off"``: ``ParentBased(ALWAYS_OFF)``,
    the cost of carrying trace contexts with nothing recorded.
    """
    try:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, TraceIdRatioBased
    except ImportError:
        return None
    exporter = InMemorySpanExporter()
    samplers = {"ratio": ParentBased(TraceIdRatioBased(SAMPLED_RATE)), "off": ParentBased(ALWAYS_OFF)}
    provider = TracerProvider(sampler=samplers[sampler]) if sampler in samplers else TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))

    tracers = []

    def on() -> None:
        exporter.clear()
        tracers.append(enable_tracing(system, tracer_provider=provider))

    def off() -> None:
        disable_tracing(system)  # builds and exports what is still queued
        tracer = tracers.pop()
        if tracer.dropped or len(exporter.get_finished_spans()) != tracer.built:
            msg = f"tracing lost spans: {tracer.dropped} dropped, {tracer.built} built"
            raise RuntimeError(msg)
        if sampler == "default":
            built.append((tracer.built, tracer.build_cpu_seconds))
        exporter.clear()

    def flush() -> Any:
        return tracers[-1].flush(timeout=_WAIT_S)

    return on, off, flush


def _sdk_span_us(spans: int = 20_000) -> float | None:
    """CPU per span of OpenTelemetry's SDK alone (µs): ``start_span`` + ``end``, a send span's attributes.

    The floor of any tracer that makes SDK spans in this process: each traced
    message makes two, and their CPU (on whichever thread) is taken from the
    same GIL as the messages'. None without the SDK.
    """
    try:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from opentelemetry.trace import SpanKind
    except ImportError:
        return None
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("bench")
    attributes = {
        "messaging.system": "troupe",
        "messaging.operation.type": "send",
        "messaging.destination.name": "Sink",
        "troupe.message.type": "int",
    }
    try:
        start = time.process_time()
        for _ in range(spans):
            tracer.start_span("send Sink", kind=SpanKind.PRODUCER, attributes=attributes).end()
        cpu = time.process_time() - start
        if len(exporter.get_finished_spans()) != spans:
            msg = "the SDK exported fewer spans than were ended"
            raise RuntimeError(msg)
    finally:
        provider.shutdown()
    return cpu / spans * 1e6


def overhead(impl: str, *, messages: int, asks: int, rounds: int) -> dict[str, float]:
    """Tell throughput and ask latency with observability off, metrics on and tracing on, in alternating rounds."""
    if impl == "pykka":
        try:
            ref = PykkaSink.start()
            ref.ask(None)
            tell = statistics.median(_tell_rate(ref, messages) for _ in range(rounds))
            ask = statistics.median(_ask_us(ref, asks) for _ in range(rounds))
        finally:
            pykka.ActorRegistry.stop_all()
        plain = {"off_tell_per_s": tell, "off_ask_us": ask}
        for config in ("metrics", "metrics_exact", "tracing", "tracing_exported"):
            plain[f"{config}_tell_per_s"] = tell
            plain[f"{config}_ask_us"] = ask
            plain[f"{config}_tell_ratio"] = plain[f"{config}_ask_ratio"] = 1.0  # nothing to turn on
        for config in ("tracing_sampled", "tracing_unsampled", "off_again"):
            plain[f"{config}_tell_per_s"] = tell
            plain[f"{config}_ask_us"] = ask
            plain[f"{config}_tell_ratio"] = plain[f"{config}_ask_ratio"] = 1.0
        plain["tracing_build_us"] = plain["otel_sdk_span_us"] = 0.0  # no span is built
        plain["tracing_floor_tell_ratio"] = plain["tracing_floor_ask_ratio"] = 1.0
        return plain

    with ActorSystem(name="bench") as system:
        ref = system.spawn(Sink, mode=impl)
        ref.ask(None, timeout=_WAIT_S)

        def metrics_on(sample_every: int = 16) -> None:
            enable_metrics(system, sample_every=sample_every)

        def metrics_off() -> None:
            disable_metrics(system)

        switches: dict[str, _Switch] = {
            "off": (lambda: None, lambda: None, None, None),
            "metrics": (metrics_on, metrics_off, None, None),
            "metrics_exact": (lambda: metrics_on(1), metrics_off, None, None),
        }
        built: list[tuple[int, float]] = []
        otel = _otel_switch(system, built)
        if otel is not None:
            on, off, flush = otel
            switches["tracing"] = (on, off, None, flush)
            # the same, the clock stopped once every span is built and in the exporter
            switches["tracing_exported"] = (on, off, flush, flush)
            for name, sampler in (("tracing_sampled", "ratio"), ("tracing_unsampled", "off")):
                switch = _otel_switch(system, built, sampler)
                if switch is not None:
                    switches[name] = (switch[0], switch[1], None, switch[2])
        switches["off_again"] = switches["off"]  # the A/A row: last in each round, the noise floor
        tells: dict[str, list[float]] = {name: [] for name in switches}
        latencies: dict[str, list[float]] = {name: [] for name in switches}
        for _ in range(rounds):
            for name, (on, off, settle, idle) in switches.items():
                on()
                try:
                    tells[name].append(_tell_rate(ref, messages, settle))
                    if idle is not None:
                        idle()  # the tells' spans built before the asks are timed (not timed)
                    latencies[name].append(_ask_us(ref, asks))
                finally:
                    off()
    figures: dict[str, float] = {}
    for name in switches:
        figures[f"{name}_tell_per_s"] = statistics.median(tells[name])
        figures[f"{name}_ask_us"] = statistics.median(latencies[name])
        if name != "off":
            figures[f"{name}_tell_ratio"] = statistics.median(
                off / on for off, on in zip(tells["off"], tells[name], strict=True)
            )
            figures[f"{name}_ask_ratio"] = statistics.median(
                on / off for off, on in zip(latencies["off"], latencies[name], strict=True)
            )
    if built:
        # What building the spans cost (off the message path): CPU per span on the builder.
        figures["tracing_build_us"] = statistics.median(cpu / count * 1e6 for count, cpu in built if count)
        sdk_us = _sdk_span_us()
        if sdk_us is not None:
            figures["otel_sdk_span_us"] = sdk_us
            # Two spans a message, built with the GIL held whichever thread builds them: a traced
            # tell costs at least the untraced one plus the cheaper of the two ways to build them.
            off_us = 1e6 / figures["off_tell_per_s"]
            figures["tracing_floor_tell_ratio"] = 1 + 2 * min(sdk_us, figures["tracing_build_us"]) / off_us
            # The same for the ask: its two spans' CPU against the untraced ask's median latency. A CPU
            # floor (the spans take the one GIL): an asker that keeps asking pays it in throughput; the
            # median can read below it, since the spans are built after the asks are timed.
            figures["tracing_floor_ask_ratio"] = (
                1 + 2 * min(sdk_us, figures["tracing_build_us"]) / figures["off_ask_us"]
            )
    return figures


# -- audit log functions (obs-ops, issue 15 §4) -------------------------------------------------------


def _audit_off_on(system: ActorSystem, directory: str, **kwargs: Any) -> tuple[Callable[[], None], Callable[[], int]]:
    """Return (on, off) for the audit log; off returns the events written (and checks none was dropped)."""

    def on() -> None:
        enable_audit_log(directory, system=system, max_bytes=None, **kwargs)

    def off() -> int:
        stats = disable_audit_log(system, timeout=_WAIT_S)
        if stats is None or stats.dropped:
            msg = f"the audit log dropped events: {stats}"
            raise RuntimeError(msg)
        return sum(stats.written.values())

    return on, off


def audit_write(impl: str, *, events: int, rounds: int) -> dict[str, float]:
    """Events/s the JSONL writer puts on disk: `events` emitted flat out, the clock stopped by `flush`."""
    del impl  # one writer thread whatever the actors' mode
    rates, emit_ns, cpu = [], [], []
    with ActorSystem(name="bench") as system, tempfile.TemporaryDirectory() as directory:
        on, off = _audit_off_on(system, directory)
        for _ in range(rounds):
            on()
            log = audit_log(system)
            emit = system.audit.emit
            start = time.perf_counter()
            for n in range(events):
                emit("task_history", {"event": "completed", "task_id": f"t-{n}", "agent_id": "echo/e1", "attempt": 1})
            emitted = time.perf_counter()
            if log is None or not log.flush(timeout=_WAIT_S):
                msg = "the audit writer did not finish"
                raise RuntimeError(msg)
            done = time.perf_counter()
            cpu.append(log.statistics().writer_cpu_seconds / events * 1e6)
            off()
            rates.append(events / (done - start))
            emit_ns.append((emitted - start) / events * 1e9)
    return {
        "audit_written_per_s": statistics.median(rates),
        "audit_emit_ns": statistics.median(emit_ns),
        "audit_writer_cpu_us": statistics.median(cpu),
    }


def audit_senders(impl: str, *, messages: int, tasks: int, rounds: int) -> dict[str, float]:
    """What the audit log costs whoever emits: tell, ask, broker publish and coordinator tasks, off and on.

    Rounds alternate off / on in one process (the publish figures paired within each round,
    their order reversed every other round, each ratio the median of the rounds'). Tell and
    ask: the runtime emits no per-message event, so this is the cost of a system with the log
    on (all streams; the ask: median latency, a tenth as many asks as tells, paired in each
    round). Publish: ``message_audit`` on, an event per publication (``message_sample`` 1)
    and one in 10. Tasks: a coordinator and 4 agents, ~5 events per task (submitted,
    assigned, completed, two status changes).
    """
    from actors import Agent, Coordinator, MessageBroker, Submit, TaskSpec

    class Worker(Agent):
        agent_type = "bench"
        capabilities = frozenset({"work"})
        max_concurrent_tasks = 4

        def handle_task(self, task: Any) -> Any:
            return task.payload

    def run_tasks(coordinator: Any) -> float:
        start = time.perf_counter()
        handles = [coordinator.ask(Submit(TaskSpec("work", payload=n, requires={"work"}))) for n in range(tasks)]
        for handle in handles:
            handle.result(timeout=_WAIT_S)
        return tasks / (time.perf_counter() - start)

    samples: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        samples.setdefault(key, []).append(value)

    with ActorSystem(name="bench") as system, tempfile.TemporaryDirectory() as directory:
        sink = system.spawn(Sink, mode=impl)
        broker = system.spawn(MessageBroker)
        subscriber = system.spawn(Sink, mode=impl)
        broker.subscribe("bench.*", subscriber, capacity=messages + 1)  # type: ignore[attr-defined]
        coordinator = system.spawn(Coordinator, mode=impl)
        for key in range(4):
            system.spawn(Worker, f"w{key}", coordinator=coordinator, mode=impl)
        run_tasks(coordinator)  # warm up
        publish = broker.publish  # type: ignore[attr-defined]

        def publish_rate() -> float:
            start = time.perf_counter()
            for i in range(messages):
                publish("bench.x", i)
            subscriber.ask(None, timeout=_WAIT_S)
            return messages / (time.perf_counter() - start)

        everything = _audit_off_on(system, directory, streams=AUDIT_STREAMS)
        sampled = _audit_off_on(system, directory, streams=AUDIT_STREAMS, message_sample=10)
        asks = max(100, messages // 10)
        for round_ in range(rounds):
            add("tell_off", _tell_rate(sink, messages))
            ask_off = _ask_us(sink, asks)
            everything[0]()
            add("tell_on", _tell_rate(sink, messages))
            add("ask_ratio", _ask_us(sink, asks) / ask_off)
            everything[1]()
            # The publish figures are paired within the round, their order reversed every other round
            # (off, 1 in 10, every message; then every message, 1 in 10, off), and each ratio is the
            # median of the rounds' own: a drift of the machine's load within the run biases no side.
            publish_off = publish_every = publish_sampled = 0.0
            for step in ("off", "sampled", "every") if round_ % 2 == 0 else ("every", "sampled", "off"):
                if step == "off":
                    publish_off = publish_rate()
                elif step == "sampled":
                    sampled[0]()
                    publish_sampled = publish_rate()
                    sampled[1]()
                else:
                    everything[0]()
                    start = time.perf_counter()
                    publish_every = publish_rate()
                    add("publish_events_per_s", everything[1]() / (time.perf_counter() - start))
            add("publish_off", publish_off)
            add("publish_on", publish_every)
            add("publish_sampled", publish_sampled)
            add("publish_ratio", publish_off / publish_every)
            add("publish10_ratio", publish_off / publish_sampled)
            add("tasks_off", run_tasks(coordinator))
            everything[0]()
            start = time.perf_counter()
            add("tasks_on", run_tasks(coordinator))
            add("task_events", everything[1]() / tasks)
    med = {key: statistics.median(values) for key, values in samples.items()}
    return {
        "audit_tell_ratio": med["tell_off"] / med["tell_on"],
        "audit_ask_ratio": med["ask_ratio"],
        "audit_publish_ratio": med["publish_ratio"],
        "audit_publish10_ratio": med["publish10_ratio"],
        "audit_publish_events_per_s": med["publish_events_per_s"],
        "audit_tasks_off_per_s": med["tasks_off"],
        "audit_tasks_on_per_s": med["tasks_on"],
        "audit_tasks_ratio": med["tasks_off"] / med["tasks_on"],
        "audit_events_per_task": med["task_events"],
    }


# -- end of audit log functions ---------------------------------------------------------------------


BENCHMARKS = (
    Benchmark(
        name="overhead",
        func=overhead,
        metrics=(
            Metric("off_tell_per_s", "tell, observability off (msg/s)", higher_is_better=True),
            Metric("metrics_tell_per_s", "tell, metrics on (default, msg/s)", higher_is_better=True),
            Metric("metrics_exact_tell_per_s", "tell, metrics sample_every=1 (msg/s)", higher_is_better=True),
            Metric("tracing_tell_per_s", "tell, OTel SDK tracing (msg/s)", higher_is_better=True),
            Metric("metrics_tell_ratio", "tell, metrics on / off (time per message)"),
            Metric("metrics_exact_tell_ratio", "tell, metrics sample_every=1 / off"),
            Metric("tracing_tell_ratio", "tell, OTel SDK tracing / off"),
            Metric("tracing_exported_tell_ratio", "tell, OTel SDK tracing / off, until every span is exported"),
            Metric("tracing_sampled_tell_ratio", "tell, OTel SDK tracing 1% head-sampled / off"),
            Metric("tracing_unsampled_tell_ratio", "tell, OTel SDK tracing, no trace sampled / off"),
            Metric("tracing_build_us", "OTel span built off the message path: builder CPU per span (µs)"),
            Metric("otel_sdk_span_us", "OTel SDK alone: start_span + end, in-memory exporter (µs of CPU a span)"),
            Metric("tracing_floor_tell_ratio", "tell floor with OTel SDK tracing: (tell + 2 spans built) / tell"),
            Metric("off_again_tell_ratio", "tell, observability off again / off (A/A: the noise floor)"),
            Metric("off_ask_us", "ask median, observability off (µs)"),
            Metric("metrics_ask_us", "ask median, metrics on (µs)"),
            Metric("tracing_ask_us", "ask median, OTel SDK tracing (µs)"),
            Metric("metrics_ask_ratio", "ask, metrics on / off (median latency)"),
            Metric("tracing_ask_ratio", "ask, OTel SDK tracing / off"),
            Metric("tracing_sampled_ask_ratio", "ask, OTel SDK tracing 1% head-sampled / off"),
            Metric("tracing_unsampled_ask_ratio", "ask, OTel SDK tracing, no trace sampled / off"),
            Metric("tracing_floor_ask_ratio", "ask CPU floor with OTel SDK tracing: (ask + 2 spans built) / ask"),
            Metric("off_again_ask_ratio", "ask, observability off again / off (A/A: the noise floor)"),
        ),
        params={"messages": 100_000, "asks": 5_000, "rounds": 5},
        quick_params={"messages": 2_000, "asks": 200, "rounds": 1},
        quick_impls=("pykka", "pooled"),  # the smoke run's budget: thread mode runs in the full one
        targets=(
            Target("metrics on: tell <= 1.05x off (pooled)", "metrics_tell_ratio", 1.05, unit="x"),
            Target("metrics on: tell <= 1.05x off (thread)", "metrics_tell_ratio", 1.05, impl="thread", unit="x"),
            Target("OTel SDK tracing: tell <= 2x off (pooled)", "tracing_tell_ratio", 2.0, unit="x"),
            Target("OTel SDK tracing: ask <= 2x off (pooled)", "tracing_ask_ratio", 2.0, unit="x"),
        ),
        timeout_s=600.0,
    ),
    # -- audit log rows (obs-ops, issue 15 §4) --------------------------------------------------
    Benchmark(
        name="audit_write",
        func=audit_write,
        metrics=(
            Metric("audit_written_per_s", "audit log: events written to disk (events/s)", higher_is_better=True),
            Metric("audit_emit_ns", "audit log: emitting one event, writer running (ns)"),
            Metric("audit_writer_cpu_us", "audit log: writer thread CPU per event written (µs)"),
        ),
        params={"events": 200_000, "rounds": 5},
        quick_params={"events": 2_000, "rounds": 1},
        impls=("pooled",),
        targets=(Target("audit log writes >= 100,000 events/s", "audit_written_per_s", 100_000, at_most=False),),
        timeout_s=600.0,
    ),
    Benchmark(
        name="audit_senders",
        func=audit_senders,
        metrics=(
            Metric("audit_tell_ratio", "tell, audit log on (all streams) / off (time per message)"),
            Metric("audit_ask_ratio", "ask, audit log on (all streams) / off (median latency)"),
            Metric("audit_publish_ratio", "broker publish, message_audit every message / off"),
            Metric("audit_publish10_ratio", "broker publish, message_audit 1 in 10 / off"),
            Metric("audit_publish_events_per_s", "events written while publishing (events/s)", higher_is_better=True),
            Metric("audit_tasks_off_per_s", "coordinator tasks, audit log off (tasks/s)", higher_is_better=True),
            Metric("audit_tasks_on_per_s", "coordinator tasks, audit log on (tasks/s)", higher_is_better=True),
            Metric("audit_tasks_ratio", "coordinator tasks, audit log on / off (time per task)"),
            Metric("audit_events_per_task", "audit events per coordinator task"),
        ),
        params={"messages": 50_000, "tasks": 3_000, "rounds": 5},
        quick_params={"messages": 1_000, "tasks": 100, "rounds": 1},
        impls=("thread", "pooled"),
        targets=(
            Target("audit log on: tell <= 1.10x off (pooled)", "audit_tell_ratio", 1.10, unit="x"),
            Target("audit log on: ask <= 1.10x off (pooled)", "audit_ask_ratio", 1.10, unit="x"),
            Target("message_audit 1 in 10: publish <= 1.10x off (pooled)", "audit_publish10_ratio", 1.10, unit="x"),
        ),
        timeout_s=900.0,
    ),
    # -- end of audit log rows ------------------------------------------------------------------------
)
"""The observability benchmarks, in report order."""
