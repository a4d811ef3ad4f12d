"""Observability benchmarks: what metrics and tracing cost a tell and an ask.

``python -m benchmarks --only observability``. Each function runs in its own
subprocess (see `benchmarks._harness`) for one implementation:

- ``pykka``: plain `pykka.ThreadingActor`s, which have neither metrics nor
  tracing: each of its figures is the plain one, so the report's "vs pykka"
  column reads as "troupe with this on, against plain pykka";
- ``thread`` / ``pooled``: troupe, the actor in that mode, measured in
  alternating rounds in one process with observability off, metrics on
  (every handler timed, and ``sample_every=16``) and tracing on with the
  OpenTelemetry SDK (a ``TracerProvider`` with a ``SimpleSpanProcessor``
  into an ``InMemorySpanExporter``: two spans per message), so each ratio
  compares figures taken milliseconds apart.

The ``*_ratio`` rows are on / off: 1.05 is 5% slower (tell: time per message;
ask: median latency). Targets: metrics on <= 1.05x on tell, tracing with the
OpenTelemetry SDK <= 2x.
"""

from __future__ import annotations

import statistics
import time
from typing import TYPE_CHECKING, Any

import pykka

from actors import Actor, ActorSystem
from actors.observability import disable_metrics, disable_tracing, enable_metrics, enable_tracing
from benchmarks._harness import Benchmark, Metric, Target

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["BENCHMARKS", "overhead"]

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


def _tell_rate(ref: pykka.ActorRef[Any], messages: int) -> float:
    tell = ref.tell
    start = time.perf_counter()
    for i in range(messages):
        tell(i)
    ref.ask(None, timeout=_WAIT_S)  # FIFO: this reply comes after every tell was handled
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


def _otel_switch(system: ActorSystem) -> tuple[Callable[[], None], Callable[[], None]] | None:
    try:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    except ImportError:
        return None
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))

    def on() -> None:
        exporter.clear()
        enable_tracing(system, tracer_provider=provider)

    def off() -> None:
        disable_tracing(system)
        exporter.clear()

    return on, off


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
        figures = {"off_tell_per_s": tell, "off_ask_us": ask}
        for config in ("metrics", "metrics16", "tracing"):
            figures[f"{config}_tell_per_s"] = tell
            figures[f"{config}_ask_us"] = ask
            figures[f"{config}_tell_ratio"] = figures[f"{config}_ask_ratio"] = 1.0  # nothing to turn on
        return figures

    with ActorSystem(name="bench") as system:
        ref = system.spawn(Sink, mode=impl)
        ref.ask(None, timeout=_WAIT_S)

        def metrics_on(sample_every: int = 1) -> None:
            enable_metrics(system, sample_every=sample_every)

        def metrics_off() -> None:
            disable_metrics(system)

        switches: dict[str, tuple[Callable[[], None], Callable[[], None]]] = {
            "off": (lambda: None, lambda: None),
            "metrics": (metrics_on, metrics_off),
            "metrics16": (lambda: metrics_on(16), metrics_off),
        }
        otel = _otel_switch(system)
        if otel is not None:
            switches["tracing"] = otel
        tells: dict[str, list[float]] = {name: [] for name in switches}
        latencies: dict[str, list[float]] = {name: [] for name in switches}
        for _ in range(rounds):
            for name, (on, off) in switches.items():
                on()
                try:
                    tells[name].append(_tell_rate(ref, messages))
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
    return figures


BENCHMARKS = (
    Benchmark(
        name="overhead",
        func=overhead,
        metrics=(
            Metric("off_tell_per_s", "tell, observability off (msg/s)", higher_is_better=True),
            Metric("metrics_tell_per_s", "tell, metrics on (msg/s)", higher_is_better=True),
            Metric("metrics16_tell_per_s", "tell, metrics on, sample_every=16 (msg/s)", higher_is_better=True),
            Metric("tracing_tell_per_s", "tell, OTel SDK tracing (msg/s)", higher_is_better=True),
            Metric("metrics_tell_ratio", "tell, metrics on / off (time per message)"),
            Metric("metrics16_tell_ratio", "tell, metrics sample_every=16 / off"),
            Metric("tracing_tell_ratio", "tell, OTel SDK tracing / off"),
            Metric("off_ask_us", "ask median, observability off (µs)"),
            Metric("metrics_ask_us", "ask median, metrics on (µs)"),
            Metric("tracing_ask_us", "ask median, OTel SDK tracing (µs)"),
            Metric("metrics_ask_ratio", "ask, metrics on / off (median latency)"),
            Metric("tracing_ask_ratio", "ask, OTel SDK tracing / off"),
        ),
        params={"messages": 100_000, "asks": 5_000, "rounds": 5},
        quick_params={"messages": 2_000, "asks": 200, "rounds": 1},
        targets=(
            Target("metrics on: tell <= 1.05x off (pooled)", "metrics_tell_ratio", 1.05, unit="x"),
            Target("metrics on: tell <= 1.05x off (thread)", "metrics_tell_ratio", 1.05, impl="thread", unit="x"),
            Target("OTel SDK tracing: tell <= 2x off (pooled)", "tracing_tell_ratio", 2.0, unit="x"),
            Target("OTel SDK tracing: ask <= 2x off (pooled)", "tracing_ask_ratio", 2.0, unit="x"),
        ),
        timeout_s=600.0,
    ),
    # -- audit log rows (obs-ops, issue 15 §4) --------------------------------------------------
    # Add the audit log's Benchmark(...) entries here: events written per second
    # (target >= 100,000/s) and the sender's slowdown with the log on (<= 10%).
    # -- end of audit log rows ------------------------------------------------------------------------
)
"""The observability benchmarks, in report order."""
