"""Prometheus exposition of ``system.metrics()`` (the ``[prometheus]`` extra: prometheus-client).

    registry = prometheus_registry(system)       # one CollectorRegistry per system
    with serve_metrics(system) as server:        # http://127.0.0.1:<port>/metrics
        ...

One custom collector per system, read at scrape time: a scrape takes one
`MetricsSnapshot` and turns it into metric families, so no message ever
calls into prometheus-client. Labels are ``system`` and ``actor_class``
(``__qualname__``), never an actor's id or name, so the number of series
grows with the classes, not with the actors (per-id labels are the
cardinality trap, knative #11248).

Duplicate registries: each system gets a `CollectorRegistry` of its own
(`prometheus_registry`, made once and then returned again), never the
process-wide default, so two systems in one process never clash ("Duplicated
timeseries", client_python #818). `register_metrics` puts the collector in a
registry you give instead: once per registry (again is a no-op); a second
system in the same registry is refused with `ObservabilityConfigError`,
since both would expose the same families.

Families (``troupe_`` prefix): ``actors`` {mode}, ``actors_by_state``
{state}, ``dispatcher_threads``, ``dispatcher_busy_seconds_total``,
``dispatcher_utilization``, and per {actor_class}: ``messages_handled_total``,
``mailbox_depth``, ``mailbox_high_water``, ``handler_seconds`` (a histogram,
the snapshot's buckets), ``handler_failures_total``, ``actor_restarts_total``,
``dead_letters_total``. With metrics off a scrape yields ``troupe_metrics_enabled 0``
and nothing else.
"""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING, Any, Self

from actors.errors import ObservabilityConfigError
from actors.observability.metrics import Metrics

if TYPE_CHECKING:
    from collections.abc import Iterator
    from types import TracebackType

    from actors._core import ActorSystem

__all__ = ["MetricsServer", "SystemCollector", "prometheus_registry", "register_metrics", "serve_metrics"]

_LOOPBACK = ("127.0.0.1", "::1", "localhost")


def _client() -> Any:
    try:
        import prometheus_client  # noqa: PLC0415 - the optional extra, imported only when used
        import prometheus_client.core  # noqa: PLC0415
    except ImportError as exc:  # pragma: no cover - the extra is in the test extra
        msg = "Prometheus exposition needs prometheus-client: pip install 'troupe[prometheus]'"
        raise ObservabilityConfigError(msg) from exc
    return prometheus_client


class SystemCollector:
    """A prometheus-client collector reading one system's `MetricsSnapshot` at each scrape.

    Thread contract: `collect` runs on the scraping thread (the HTTP
    server's); it takes a snapshot, which any thread may.
    """

    def __init__(self, system: ActorSystem) -> None:
        _client()
        self._system = weakref.ref(system)
        self.system_name = system.name

    def describe(self) -> list[Any]:
        """Return the families this collector yields, so a registry refuses a second one of them."""
        return list(self._families(None, describe=True))

    def collect(self) -> Iterator[Any]:
        """Yield the metric families of the snapshot taken now."""
        system = self._system()
        observer = None if system is None else system.observer
        yield from self._families(observer if isinstance(observer, Metrics) else None, describe=False)

    def _families(self, metrics: Metrics | None, *, describe: bool) -> Iterator[Any]:
        core = _client().core
        name = self.system_name
        enabled = core.GaugeMetricFamily(
            "troupe_metrics_enabled", "Whether the system's metrics are on (1) or off (0)", labels=["system"]
        )
        enabled.add_metric([name], 0 if metrics is None else 1)
        yield enabled
        if metrics is None and not describe:
            return
        snap = None if metrics is None else metrics.snapshot()
        system_labels = ["system"]
        class_labels = ["system", "actor_class"]
        actors = core.GaugeMetricFamily("troupe_actors", "Live actors per mode", labels=[*system_labels, "mode"])
        states = core.GaugeMetricFamily(
            "troupe_actors_by_state", "Live actors per state", labels=[*system_labels, "state"]
        )
        threads = core.GaugeMetricFamily(
            "troupe_dispatcher_threads", "Threads of the pooled dispatcher", labels=system_labels
        )
        busy = core.CounterMetricFamily(
            "troupe_dispatcher_busy_seconds",
            "Seconds pooled turns ran since metrics were enabled",
            labels=system_labels,
        )
        utilization = core.GaugeMetricFamily(
            "troupe_dispatcher_utilization", "Busy seconds / (threads x uptime), 0..1", labels=system_labels
        )
        handled = core.CounterMetricFamily(
            "troupe_messages_handled", "Messages taken from actors' mailboxes", labels=class_labels
        )
        depth = core.GaugeMetricFamily("troupe_mailbox_depth", "Messages queued now", labels=class_labels)
        high = core.GaugeMetricFamily(
            "troupe_mailbox_high_water", "Longest mailbox one actor of the class had", labels=class_labels
        )
        seconds = core.HistogramMetricFamily(
            "troupe_handler_seconds", "Handler time of the timed messages", labels=class_labels
        )
        failures = core.CounterMetricFamily("troupe_handler_failures", "Handler exceptions", labels=class_labels)
        restarts = core.CounterMetricFamily("troupe_actor_restarts", "Actor restarts", labels=class_labels)
        dead = core.CounterMetricFamily("troupe_dead_letters", "Dead letters per recipient class", labels=class_labels)
        if snap is not None:
            s = snap.system
            for mode, count in s.actors_by_mode.items():
                actors.add_metric([name, mode], count)
            for state, count in s.actors_by_state.items():
                states.add_metric([name, state], count)
            threads.add_metric([name], s.dispatcher_threads)
            busy.add_metric([name], s.dispatcher_busy_seconds)
            utilization.add_metric([name], s.dispatcher_utilization)
            for cls, c in snap.classes.items():
                labels = [name, cls]
                handled.add_metric(labels, c.messages_handled)
                depth.add_metric(labels, c.mailbox_depth)
                high.add_metric(labels, c.mailbox_high_water)
                h = c.handler_time
                cumulative, buckets = 0, []
                for bound, count in zip((*h.bounds, float("inf")), h.counts, strict=True):
                    cumulative += count
                    buckets.append((_bound(bound), cumulative))
                seconds.add_metric(labels, buckets, h.sum)
                failures.add_metric(labels, c.failures)
                restarts.add_metric(labels, c.restarts)
                dead.add_metric(labels, c.dead_letters)
        yield from (actors, states, threads, busy, utilization, handled, depth, high, seconds, failures, restarts, dead)


def _bound(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


_registries: weakref.WeakKeyDictionary[ActorSystem, Any] = weakref.WeakKeyDictionary()
_registered: weakref.WeakKeyDictionary[Any, SystemCollector] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def register_metrics(system: ActorSystem, registry: Any) -> SystemCollector:
    """Register `system`'s collector in `registry` (once: again returns the same collector). Any thread.

    Raises:
        ObservabilityConfigError: `registry` already exposes another system's
            metrics (both would expose the same families), or prometheus-client
            is not installed.
    """
    with _lock:
        existing = _registered.get(registry)
        if existing is not None:
            if existing.system_name == system.name and existing._system() is system:  # noqa: SLF001
                return existing
            msg = (
                f"this Prometheus registry already exposes system {existing.system_name!r}; "
                f"give system {system.name!r} its own (prometheus_registry(system)), "
                "since two systems in one registry would expose the same families"
            )
            raise ObservabilityConfigError(msg)
        collector = SystemCollector(system)
        try:
            registry.register(collector)
        except ValueError as exc:  # "Duplicated timeseries": troupe_* families registered by someone else
            msg = f"the Prometheus registry already has troupe_* metrics ({exc}); give system {system.name!r} its own"
            raise ObservabilityConfigError(msg) from exc
        _registered[registry] = collector
    return collector


def prometheus_registry(system: ActorSystem) -> Any:
    """Return `system`'s own ``CollectorRegistry`` with its collector in it (made on first call). Any thread.

    Raises:
        ObservabilityConfigError: prometheus-client is not installed.
    """
    client = _client()
    with _lock:
        registry = _registries.get(system)
        if registry is None:
            registry = _registries[system] = client.CollectorRegistry(auto_describe=False)
    register_metrics(system, registry)
    return registry


class MetricsServer:
    """A running HTTP server exposing one system's metrics at ``/metrics`` (`serve_metrics`).

    Attributes:
        host: the loopback address it listens on.
        port: the port (the one the OS chose, if 0 was asked).
        url: ``http://<host>:<port>/metrics``.
    """

    def __init__(self, server: Any, thread: threading.Thread, host: str) -> None:
        self._server = server
        self._thread = thread
        self.host = host
        self.port: int = server.server_address[1]
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{self.port}/metrics"

    def close(self, *, timeout: float | None = 5.0) -> None:
        """Stop serving and join the server's thread (idempotent)."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def serve_metrics(system: ActorSystem, *, port: int = 0, host: str = "127.0.0.1") -> MetricsServer:
    """Serve `system`'s metrics over HTTP on a loopback address, on a thread of its own; close it when done.

    Args:
        system: whose metrics (its `prometheus_registry`).
        port: the TCP port (0: one the OS picks; see `MetricsServer.port`).
        host: ``127.0.0.1`` (default), ``::1`` or ``localhost``: this helper
            never listens on an outside interface (put a reverse proxy in front).

    Raises:
        ObservabilityConfigError: `host` is not a loopback address, `port` is
            not in 0..65535, or prometheus-client is not installed.
    """
    if host not in _LOOPBACK:
        msg = f"serve_metrics listens on a loopback address only ({', '.join(_LOOPBACK)}), got host={host!r}"
        raise ObservabilityConfigError(msg)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:  # noqa: PLR2004
        msg = f"serve_metrics: port must be an int in 0..65535 (0: any free port), got {port!r}"
        raise ObservabilityConfigError(msg)
    client = _client()
    registry = prometheus_registry(system)
    server, thread = client.start_http_server(port, addr=host, registry=registry)
    thread.name = f"troupe-{system.name}-metrics-http"
    return MetricsServer(server, thread, host)
