"""Observability: per-actor-class metrics, traces across message chains, health checks, alerts, audit logs.

A service on the runtime's seams (``actors._core``: ``system.observer``, the
turn loop's probe). Everything is off by default and then costs a turn one
attribute check.

Metrics (`actors.observability.metrics`)::

    from actors.observability import enable_metrics
    enable_metrics(system)                 # one turn in 16 has a message timed
    snap = system.metrics()                # MetricsSnapshot, frozen attrs
    snap.classes["Worker"].messages_handled
    snap.flat()["system.dead_letters"]     # Mapping[str, float]

The flat names (`METRIC_NAMES`, ``<Class>`` an actor class's ``__qualname__``):

- ``system.actors``, ``system.actors.mode.{pooled,thread,asyncio}``,
  ``system.actors.state.{starting,running,suspended,stopping}``
- ``system.messages_handled``, ``system.failures``, ``system.restarts``,
  ``system.dead_letters``
- ``system.dispatcher.threads``, ``system.dispatcher.busy_seconds``,
  ``system.dispatcher.utilization``, ``system.uptime_seconds``
- ``class.<Class>.actors``, ``.messages_handled``, ``.mailbox_depth``,
  ``.mailbox_high_water``, ``.handler_seconds.count``, ``.handler_seconds.sum``,
  ``.handler_seconds.p50``, ``.handler_seconds.p95``, ``.handler_seconds.p99``,
  ``.failures``, ``.restarts``, ``.dead_letters``

`is_metric_name(name)` says whether a name fits one of them (for rules made
before the class has an actor); ``flat()[name]`` raises `UnknownMetricError`
for a name the snapshot does not hold; quantiles of a class with no timed
message are NaN.

Health checks (`actors.observability.health`): `HealthChecks` asks each
registered service actor `CheckHealth` and aggregates a `SystemHealth`.
Alert rules (`actors.observability.alerts`): an `AlertManager` actor
evaluates `AlertRule` s over the flat metrics on the system clock.
Audit logs (`actors.observability.audit`): `enable_audit_log(directory)`
writes the events of ``system.audit`` as daily JSONL files per stream.
Tracing (`actors.observability.tracing`): `record_spans(system)` (a
`SpanRecorder`, no OpenTelemetry needed) or `enable_tracing(system)` (the
``[otel]`` extra) make each tell and ask carry a W3C trace context from the
sender to the handler, in every mode, with ``send <dest>`` (PRODUCER) and
``process <dest>`` (CONSUMER) spans; `use_trace`, `current_trace`,
`new_trace` set and read it; `correlate` and `trace_of` map it to and from
an `AgentMessage`'s ``correlation_id`` at the edges.

Prometheus (`actors.observability.prometheus`, the ``[prometheus]`` extra):
`prometheus_registry(system)` (one registry and collector per system, read
at scrape time, labels per actor class), `serve_metrics(system)` (HTTP on
127.0.0.1).
"""

from actors._core import AUDIT_STREAMS, CheckHealth, HealthReport, HealthStatus
from actors.observability.alerts import (
    SEVERITIES,
    AlertEvent,
    AlertManager,
    AlertPhase,
    AlertRule,
    AlertState,
    AlertStatus,
    EvaluateAlerts,
    GetAlerts,
    SubscribeAlerts,
    UnsubscribeAlerts,
)
from actors.observability.audit import (
    DEFAULT_AUDIT_STREAMS,
    AuditLog,
    AuditStatistics,
    audit_log,
    disable_audit_log,
    enable_audit_log,
)
from actors.observability.health import CheckResult, HealthChecks, SystemHealth
from actors.observability.metrics import (
    CLASS_METRICS,
    METRIC_NAMES,
    ClassMetrics,
    FlatMetrics,
    HandlerTime,
    Metrics,
    MetricsSnapshot,
    SystemMetrics,
    disable_metrics,
    enable_metrics,
    is_metric_name,
    metrics_of,
)
from actors.observability.prometheus import (
    MetricsServer,
    SystemCollector,
    prometheus_registry,
    register_metrics,
    serve_metrics,
)
from actors.observability.tracing import (
    OpenTelemetryTracer,
    SpanRecord,
    SpanRecorder,
    correlate,
    current_trace,
    disable_tracing,
    enable_tracing,
    new_trace,
    record_spans,
    trace_of,
    use_trace,
)

__all__ = [
    "AUDIT_STREAMS",
    "CLASS_METRICS",
    "DEFAULT_AUDIT_STREAMS",
    "METRIC_NAMES",
    "SEVERITIES",
    "AlertEvent",
    "AlertManager",
    "AlertPhase",
    "AlertRule",
    "AlertState",
    "AlertStatus",
    "AuditLog",
    "AuditStatistics",
    "CheckHealth",
    "CheckResult",
    "ClassMetrics",
    "EvaluateAlerts",
    "FlatMetrics",
    "GetAlerts",
    "HandlerTime",
    "HealthChecks",
    "HealthReport",
    "HealthStatus",
    "Metrics",
    "MetricsServer",
    "MetricsSnapshot",
    "OpenTelemetryTracer",
    "SpanRecord",
    "SpanRecorder",
    "SubscribeAlerts",
    "SystemCollector",
    "SystemHealth",
    "SystemMetrics",
    "UnsubscribeAlerts",
    "audit_log",
    "correlate",
    "current_trace",
    "disable_audit_log",
    "disable_metrics",
    "disable_tracing",
    "enable_audit_log",
    "enable_metrics",
    "enable_tracing",
    "is_metric_name",
    "metrics_of",
    "new_trace",
    "prometheus_registry",
    "record_spans",
    "register_metrics",
    "serve_metrics",
    "trace_of",
    "use_trace",
]
