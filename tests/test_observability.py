"""Observability (issue 15 §1, §2): metrics against a model, traces across modes and routers, bad input.

Every runtime test runs in every mode; the metrics model is driven by
hypothesis; nothing sleeps (replies and events with timeouts).
"""

from __future__ import annotations

import asyncio
import math
import pickle
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pykka import ActorDeadError

from actors import (
    MODES,
    Actor,
    ActorSystem,
    MetricsOffError,
    ObservabilityConfigError,
    Pool,
    PoolConfig,
    Router,
    UnknownMetricError,
)
from actors._core import ChildSpec, Future, TraceContext, Traced, set_tracer
from actors.messaging import MessageBroker, spawn_service
from actors.observability import (
    AUDIT_STREAMS,
    METRIC_NAMES,
    HandlerTime,
    SpanRecorder,
    correlate,
    current_trace,
    disable_metrics,
    disable_tracing,
    enable_audit_log,
    enable_metrics,
    is_metric_name,
    metrics_of,
    new_trace,
    record_spans,
    trace_of,
    use_trace,
)
from actors.protocol import AgentMessage, MessageType

if TYPE_CHECKING:
    from pathlib import Path

    from actors.observability import SpanRecord

WAIT = 10.0


def _rotated(mode: str) -> list[str]:
    """The three modes, starting with `mode`: each test sees every mode in every position."""
    modes = sorted(MODES)
    i = modes.index(mode)
    return modes[i:] + modes[:i]


# -- metrics ----------------------------------------------------------------------------


class Echo(Actor):
    def on_receive(self, message: Any) -> Any:
        if message == "boom":
            msg = "boom, as asked"
            raise ValueError(msg)
        return message


class Other(Echo):
    pass


class Tail(Actor):
    """Records the trace context its handler runs under, then sets `done`."""

    def __init__(self, seen: list[TraceContext | None], done: threading.Event) -> None:
        super().__init__()
        self.seen = seen
        self.done = done

    def on_receive(self, message: Any) -> None:
        self.seen.append(current_trace())
        self.done.set()


def test_metrics_are_off_by_default_and_say_how_to_turn_them_on(system: ActorSystem) -> None:
    with pytest.raises(MetricsOffError, match=r"enable_metrics\(system\)"):
        system.metrics()
    with pytest.raises(MetricsOffError, match="enable_metrics"):
        metrics_of(system)


def test_counts_failures_high_water_and_histogram_in_every_mode(system: ActorSystem, mode: str) -> None:
    enable_metrics(system, sample_every=1)
    gate = threading.Event()

    class Gated(Echo):
        def on_receive(self, message: Any) -> Any:
            if message == "wait":
                gate.wait(WAIT)
            return super().on_receive(message)

    ref = system.spawn(Gated, mode=mode)
    first = ref.ask("wait", block=False)
    for i in range(5):
        ref.tell(i)
    gate.set()
    assert first.get(timeout=WAIT) == "wait"
    with pytest.raises(ValueError, match="boom"):
        ref.ask("boom", timeout=WAIT)
    assert ref.ask("last", timeout=WAIT) == "last"
    snap = system.metrics()
    gated = snap.classes["test_counts_failures_high_water_and_histogram_in_every_mode.<locals>.Gated"]
    assert gated.messages_handled == 8
    assert gated.failures == 1
    assert gated.actors == 1
    assert gated.mailbox_depth == 0
    assert 5 <= gated.mailbox_high_water <= 6  # the five tells queued behind the gate (and the ask, maybe)
    assert gated.handler_time.count == 8
    assert sum(gated.handler_time.counts) == 8
    assert 0 < gated.handler_time.p50 <= gated.handler_time.p95 <= gated.handler_time.p99
    assert snap.system.actors_by_mode[mode] == 1
    assert snap.system.actors_by_state["running"] == 1
    flat = snap.flat()
    name = "class.test_counts_failures_high_water_and_histogram_in_every_mode.<locals>.Gated"
    assert flat[f"{name}.messages_handled"] == 8
    assert flat["system.messages_handled"] == 8
    assert flat[f"system.actors.mode.{mode}"] == 1
    assert all(is_metric_name(key) for key in flat)


class AwaitsGate(Actor):
    """An async handler that awaits `gate` (set by the test) after setting `started`."""

    def __init__(self, started: threading.Event, gate: Future[None]) -> None:
        super().__init__()
        self.started = started
        self.gate = gate

    async def on_receive(self, message: Any) -> Any:
        self.started.set()
        await self.gate
        return message


def test_an_async_handler_is_timed_to_its_end_awaits_included(system: ActorSystem) -> None:
    enable_metrics(system)
    started, gate = threading.Event(), Future[None]()
    ref = system.spawn(AwaitsGate, started, gate, mode="asyncio")
    reply = ref.ask("x", block=False)
    assert started.wait(WAIT)
    seen = time.perf_counter()  # the handler began before this
    # suspended on its await: not handled yet (it was counted at its first await before)
    assert system.metrics().classes["AwaitsGate"].messages_handled == 0
    released = time.perf_counter()
    gate.set(None)
    assert reply.get(timeout=WAIT) == "x"
    snap = system.metrics().classes["AwaitsGate"]
    assert snap.messages_handled == 1
    assert snap.handler_time.count == 1
    # it ended after `released`: its time covers at least the span the test saw it suspended
    assert snap.handler_time.sum >= released - seen


def test_restarts_and_dead_letters_are_counted_per_class(system: ActorSystem, mode: str) -> None:
    enable_metrics(system)

    class Crashy(Actor):
        def on_receive(self, message: Any) -> Any:
            if message == "crash":
                msg = "crash, as told"
                raise RuntimeError(msg)
            return message

    ref = system.spawn(Crashy, mode=mode, restart="permanent")
    ref.tell("crash")
    assert ref.ask("back?", timeout=WAIT) == "back?"  # queued behind the crash: handled by the new instance
    dead = system.spawn(Other, mode=mode)
    dead.stop()
    with pytest.raises(ActorDeadError):
        dead.tell("late")
    snap = system.metrics()
    crashy = snap.classes["test_restarts_and_dead_letters_are_counted_per_class.<locals>.Crashy"]
    assert crashy.restarts == 1
    assert crashy.failures == 1
    assert crashy.dead_letters == 1  # the crashing message itself (HANDLER_FAILED)
    assert snap.classes["Other"].dead_letters == 1
    assert snap.classes["Other"].actors == 0  # stopped: its counts stay, as a class total
    assert snap.system.restarts == 1
    assert snap.system.dead_letters == 2


_ops = st.lists(
    st.tuples(st.sampled_from(["tell", "ask", "fail", "dead"]), st.integers(0, 2)),
    max_size=30,
)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=_ops, sample_every=st.sampled_from([1, 1, 3, 16]))
def test_metrics_match_a_model_of_the_workload(mode: str, ops: list[tuple[str, int]], sample_every: int) -> None:
    with ActorSystem("model", dispatchers=2) as system:
        enable_metrics(system, sample_every=sample_every)
        classes = [Echo, Other, Echo]
        refs = [system.spawn(cls, mode=mode) for cls in classes]
        stopped = system.spawn(Other, mode=mode)
        stopped.stop()
        model = {"Echo": [0, 0, 0], "Other": [0, 0, 0]}  # handled, failures, dead letters
        for op, i in ops:
            name = classes[i].__qualname__
            if op == "tell":
                refs[i].tell(op)
                model[name][0] += 1
            elif op == "ask":
                assert refs[i].ask(op, timeout=WAIT) == op
                model[name][0] += 1
            elif op == "fail":
                with pytest.raises(ValueError, match="boom"):
                    refs[i].ask("boom", timeout=WAIT)
                model[name][0] += 1
                model[name][1] += 1
            else:
                with pytest.raises(ActorDeadError):
                    stopped.tell(op)
                model["Other"][2] += 1
        for i, ref in enumerate(refs):  # a last ask each: every tell before it has been handled
            assert ref.ask("sync", timeout=WAIT) == "sync"
            model[classes[i].__qualname__][0] += 1
        snap = system.metrics()
        for name, (handled, failures, dead) in model.items():
            got = snap.classes[name]
            assert (got.messages_handled, got.failures, got.dead_letters) == (handled, failures, dead)
            assert got.mailbox_depth == 0
            assert got.mailbox_high_water <= handled
            assert sum(got.handler_time.counts) == got.handler_time.count <= handled
            if sample_every == 1:
                assert got.handler_time.count == handled
        assert snap.system.messages_handled == sum(m[0] for m in model.values())
        assert snap.system.actors == 3
        assert snap.system.actors_by_mode[mode] == 3


@pytest.mark.parametrize("mode", ["pooled", "thread"])  # asyncio cells time every message: the next test
def test_one_turn_in_sample_every_is_timed_and_every_message_counted(system: ActorSystem, mode: str) -> None:
    ref = system.spawn(Echo, mode=mode)
    assert ref.ask("ready", timeout=WAIT) == "ready"
    enable_metrics(system, sample_every=3)
    cell = ref._cell  # its turns run here, one at a time, to count them
    for turn in range(9):
        # Holding `sched`, no executor runs the cell and the tells only queue: the run is one turn.
        assert cell.sched.acquire(timeout=WAIT)
        ref.tell(turn)
        ref.tell(turn)
        cell.run()  # releases `sched`
    echo = system.metrics().classes["Echo"]
    assert echo.messages_handled == 18  # the unsampled turns (counted in Cell.run) and the sampled ones
    assert echo.handler_time.count == 3  # turns 3, 6 and 9: their first message, timed alone
    assert echo.mailbox_high_water == 2
    if mode == "pooled":
        assert system.metrics().system.dispatcher_busy_seconds > 0  # the sampled turns' time, times three


def test_an_asyncio_actor_times_every_message_whatever_sample_every_is(system: ActorSystem) -> None:
    enable_metrics(system, sample_every=16)
    ref = system.spawn(Echo, mode="asyncio")
    for i in range(20):
        assert ref.ask(i, timeout=WAIT) == i
    echo = system.metrics().classes["Echo"]
    assert echo.messages_handled == echo.handler_time.count == 20


def test_disabling_metrics_turns_them_off_again(system: ActorSystem) -> None:
    metrics = enable_metrics(system)
    assert enable_metrics(system) is metrics  # idempotent
    disable_metrics(system)
    with pytest.raises(MetricsOffError):
        system.metrics()
    ref = system.spawn(Echo)
    assert ref.ask(1, timeout=WAIT) == 1


def test_a_snapshot_is_immutable(system: ActorSystem) -> None:
    enable_metrics(system)
    system.spawn(Echo).ask(1, timeout=WAIT)
    snap = metrics_of(system)
    with pytest.raises(AttributeError):
        snap.system.actors = 5  # type: ignore[misc]
    with pytest.raises(TypeError):
        snap.classes["Echo"] = snap.classes["Echo"]  # type: ignore[index]
    flat = snap.flat()
    with pytest.raises(TypeError):
        flat["system.actors"] = 1.0  # type: ignore[index]


def test_an_unknown_metric_name_is_an_error_naming_the_known_ones(system: ActorSystem) -> None:
    enable_metrics(system)
    flat = system.metrics().flat()
    with pytest.raises(UnknownMetricError, match=r"unknown metric 'system\.dead_leters'.*system\.dead_letters"):
        flat["system.dead_leters"]
    with pytest.raises(UnknownMetricError, match="well formed but not in this snapshot"):
        flat["class.Nobody.messages_handled"]
    assert "class.Nobody.messages_handled" not in flat
    assert is_metric_name("class.Nobody.messages_handled")
    assert not is_metric_name("class.Nobody.mesages_handled")
    assert "system.dead_letters" in METRIC_NAMES


@pytest.mark.parametrize("value", [0, -1])
def test_sample_every_below_one_is_refused(system: ActorSystem, value: int) -> None:
    with pytest.raises(ValueError, match="sample_every"):
        enable_metrics(system, sample_every=value)


def test_a_histogram_quantile_outside_zero_to_one_is_refused() -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        HandlerTime().quantile(1.5)
    assert math.isnan(HandlerTime().p99)


# -- tracing -----------------------------------------------------------------------------


class Forward(Actor):
    """Asks `via` (a router) about the message, then tells `tail` the reply."""

    def __init__(self, via: Any, tail: Any) -> None:
        super().__init__()
        self.via = via
        self.tail = tail

    def on_receive(self, message: Any) -> None:
        self.tail.tell(self.via.ask(message, timeout=WAIT))


class AsyncForward(Forward):
    async def on_receive(self, message: Any) -> None:  # type: ignore[override]
        reply = await self.via.ask(message, block=False)
        await asyncio.sleep(0)
        self.tail.tell(reply)


class AsyncEcho(Actor):
    async def on_receive(self, message: Any) -> Any:
        await asyncio.sleep(0)
        return message


def _check_chain(spans: tuple[SpanRecord, ...], root: TraceContext) -> None:
    assert {span.trace_id for span in spans} == {root.trace_id}
    by_id = {span.span_id: span for span in spans}
    for span in spans:
        if span.kind == "consumer":
            producer = by_id[span.parent_id]  # type: ignore[index]
            assert producer.kind == "producer"
            assert span.links == (producer.span_id,)
            assert span.name == "process " + producer.name.removeprefix("send ")
            assert span.attributes["messaging.operation.type"] == "process"
        else:
            assert span.parent_id == root.span_id or by_id[span.parent_id].kind == "consumer"  # type: ignore[index]


def test_a_trace_id_survives_tell_ask_tell_across_modes_and_a_routed_ask(system: ActorSystem, mode: str) -> None:
    first, middle, last = _rotated(mode)
    recorder = record_spans(system)
    seen: list[TraceContext | None] = []
    done = threading.Event()
    tail = system.spawn(Tail, seen, done, mode=last)
    echo = AsyncEcho if middle == "asyncio" else Echo
    routees = [system.spawn(echo, mode=middle) for _ in range(2)]
    router = system.spawn(Router, routees)
    head = system.spawn(AsyncForward if first == "asyncio" else Forward, router, tail, mode=first)
    root = new_trace()
    with use_trace(root):
        head.tell("job")
    assert done.wait(WAIT)
    assert seen[0] is not None
    assert seen[0].trace_id == root.trace_id
    head.stop(timeout=WAIT)  # after the handler that started the chain: its span has ended
    tail.stop(timeout=WAIT)
    spans = recorder.spans()
    _check_chain(spans, root)
    # head, the routee, tail: each handler ran in a process span of the one trace
    processed = [span.attributes["troupe.actor.class"] for span in spans if span.kind == "consumer"]
    assert "Tail" in processed
    assert any(name.endswith("Echo") for name in processed)
    assert any(name.endswith("Forward") for name in processed)


def test_a_tell_routed_on_the_router_refs_fast_path_keeps_the_trace(system: ActorSystem, mode: str) -> None:
    recorder = record_spans(system)
    seen: list[TraceContext | None] = []
    done = threading.Event()
    router = system.spawn(Router, [system.spawn(Tail, seen, done, mode=mode)])  # round robin: the fast path
    root = new_trace()
    with use_trace(root):
        router.tell("job")
    assert done.wait(WAIT)
    (context,) = seen
    assert context is not None
    assert context.trace_id == root.trace_id
    router.stop(timeout=WAIT)  # the routee's handler has ended: its span too
    spans = tuple(span for span in recorder.spans() if span.trace_id == root.trace_id)
    _check_chain(spans, root)
    assert sorted((span.kind, span.name) for span in spans) == [("consumer", "process Tail"), ("producer", "send Tail")]


class Relay(Actor):
    """Records the trace context its handler runs under, then tells `to` the message."""

    def __init__(self, seen: list[TraceContext | None], to: Any) -> None:
        super().__init__()
        self.seen = seen
        self.to = to

    def on_receive(self, message: Any) -> None:
        self.seen.append(current_trace())
        self.to.tell(message)


BROKER_SUBSCRIBERS = ["actor", "envelope", "group", "callable", "router", "multicast", "audited"]


@pytest.mark.parametrize("kind", BROKER_SUBSCRIBERS)
def test_a_broker_publication_keeps_the_trace_through_the_subscriber_and_its_onward_tell(
    system: ActorSystem, mode: str, kind: str, tmp_path: Path
) -> None:
    # publish -> subscriber (any kind of hand-off the broker makes) -> tell: one trace id
    first, second, _ = _rotated(mode)
    recorder = record_spans(system)
    seen: list[TraceContext | None] = []
    done = threading.Event()
    tail = system.spawn(Tail, seen, done, mode=second)
    broker = spawn_service(system, MessageBroker, mode=mode, callback_mode=first)
    log = enable_audit_log(tmp_path, system=system, streams=AUDIT_STREAMS) if kind == "audited" else None
    relayed: list[TraceContext | None] = []
    if kind == "callable":

        def relay(message: Any) -> None:
            relayed.append(current_trace())
            tail.tell(message)

        broker.subscribe("jobs", relay)
    else:
        subscriber = system.spawn(Relay, relayed, tail, mode=first)
        if kind == "router":
            subscriber = system.spawn(Router, [subscriber])  # a RouterRef: not a plain ref
        broker.subscribe(
            "jobs",
            subscriber,
            envelope=kind == "envelope",
            group="g" if kind == "group" else None,
            agent="relay" if kind == "multicast" else None,
        )
    root = new_trace()
    with use_trace(root):
        took = broker.multicast(["relay"], "job") if kind == "multicast" else broker.publish("jobs", "job")
    assert took == 1
    assert done.wait(WAIT)
    assert [c.trace_id if c is not None else None for c in relayed] == [root.trace_id]
    assert [c.trace_id if c is not None else None for c in seen] == [root.trace_id]
    tail.stop(timeout=WAIT)  # after the subscriber's handler, whose tell it took: their spans have ended
    if log is not None:
        log.close()
    spans = tuple(span for span in recorder.spans() if span.trace_id == root.trace_id)
    _check_chain(spans, root)
    assert "Tail" in [span.attributes["troupe.actor.class"] for span in spans if span.kind == "consumer"]


def test_a_trace_id_survives_an_ask_routed_by_a_pool(system: ActorSystem, mode: str) -> None:
    recorder = record_spans(system)
    pool = system.spawn(Pool, ChildSpec(AsyncEcho if mode == "asyncio" else Echo, mode=mode), config=PoolConfig())
    root = new_trace()
    with use_trace(root):
        assert pool.ask("x", timeout=WAIT) == "x"
    # the pool's own start-up messages began traces of their own: look at the one of the ask
    spans = tuple(span for span in recorder.spans() if span.trace_id == root.trace_id)
    _check_chain(spans, root)
    assert any(span.kind == "consumer" and span.attributes["troupe.actor.class"].endswith("Echo") for span in spans)


def test_a_message_sent_outside_any_trace_starts_one(system: ActorSystem, mode: str) -> None:
    recorder = record_spans(system)
    assert system.spawn(Echo, mode=mode).ask("x", timeout=WAIT) == "x"
    send, process = sorted(recorder.spans(), key=lambda span: span.kind, reverse=True)
    assert send.parent_id is None
    assert process.trace_id == send.trace_id


def test_a_failing_handler_ends_its_span_with_the_error(system: ActorSystem, mode: str) -> None:
    recorder = record_spans(system)
    with pytest.raises(ValueError, match="boom"):
        system.spawn(Echo, mode=mode).ask("boom", timeout=WAIT)
    (process,) = [span for span in recorder.spans() if span.kind == "consumer"]
    assert process.error is not None
    assert "boom" in process.error


def test_with_tracing_off_no_span_is_made_and_messages_are_not_wrapped(system: ActorSystem, mode: str) -> None:
    recorder = record_spans(system)
    disable_tracing(system)
    ref = system.spawn(Echo, mode=mode)
    assert ref.ask("x", timeout=WAIT) == "x"
    assert recorder.spans() == ()


def test_correlation_ids_carry_the_trace_at_the_edges() -> None:
    message = AgentMessage(sender="a", recipient="b", type=MessageType.TASK_REQUEST)
    assert correlate(message) is message  # no trace: unchanged
    root = new_trace()
    with use_trace(root):
        stamped = correlate(message)
        assert correlate(stamped) is stamped  # one already set is kept
    assert stamped.correlation_id == root.trace_id
    continued = trace_of(stamped)
    assert continued is not None
    assert continued.trace_id == root.trace_id
    assert trace_of(message) is None
    assert trace_of(AgentMessage(sender="a", type=MessageType.TASK_REQUEST, correlation_id="not-a-trace")) is None


def test_traceparent_round_trips() -> None:
    root = new_trace()
    assert TraceContext.from_traceparent(root.traceparent) == root
    with use_trace(root.traceparent) as context:
        assert current_trace() == context == root
    assert current_trace() is None


@pytest.mark.parametrize(
    "header",
    [
        "garbage",
        "00-" + "0" * 32 + "-" + "1" * 16 + "-01",  # an all-zero trace id
        "00-" + "A" * 32 + "-" + "1" * 16 + "-01",  # upper case
        "01-" + "a" * 32 + "-" + "1" * 16 + "-01",  # an unknown version
    ],
)
def test_a_malformed_traceparent_is_refused(header: str) -> None:
    with pytest.raises(ObservabilityConfigError, match=r"traceparent|trace_id"), use_trace(header):
        pass


def test_a_trace_context_of_the_wrong_type_is_refused() -> None:
    with pytest.raises(ObservabilityConfigError, match="use_trace needs"), use_trace(42):  # type: ignore[arg-type]
        pass
    with pytest.raises(ObservabilityConfigError, match="span_id"):
        TraceContext("a" * 32, "xyz")


def test_a_trace_context_is_immutable_hashable_picklable_and_equal_only_to_contexts() -> None:
    root = new_trace()
    same = TraceContext(root.trace_id, root.span_id)
    assert same == root
    assert not same != root  # noqa: SIM202 - the __ne__ under test
    assert hash(same) == hash(root)
    assert {root: 1}[same] == 1
    assert pickle.loads(pickle.dumps(root)) == root
    as_tuple = (root.trace_id, root.span_id, root.sampled)
    assert root != as_tuple
    assert as_tuple != root
    assert TraceContext(root.trace_id, root.span_id, sampled=False) != root
    with pytest.raises(AttributeError, match="immutable"):
        root.trace_id = "0" * 32
    with pytest.raises(TypeError):
        assert root < same


def test_a_traced_item_shows_its_message_and_traceparent_whatever_form_its_context_takes() -> None:
    context = new_trace()
    plain = (context.trace_id, context.span_id, False)  # what a tracer's message path carries
    assert repr(Traced.of("job", context)) == f"Traced('job', {context.traceparent})"
    assert repr(Traced.of("job", plain)) == f"Traced('job', 00-{context.trace_id}-{context.span_id}-00)"


class _EndCounting(SpanRecorder):
    """A recorder that, for a context not sampled, carries it as it came and begins without a handle (as OTel's)."""

    def __init__(self) -> None:
        super().__init__()
        self.ended = 0

    def send(self, cell: Any, message: Any) -> Traced:
        parent = current_trace()
        if parent is not None and not parent.sampled:
            return Traced.of(message, parent)
        return super().send(cell, message)

    def begin(self, cell: Any, traced: Any) -> tuple[Any, TraceContext]:
        if not traced.context[2]:
            return None, traced.context
        return super().begin(cell, traced)

    def end(self, handle: Any, exc: BaseException | None) -> None:
        self.ended += 1
        super().end(handle, exc)


def test_a_handler_begun_without_a_handle_is_not_ended_and_keeps_its_trace(system: ActorSystem, mode: str) -> None:
    first, middle, last = _rotated(mode)
    tracer = _EndCounting()
    set_tracer(system, tracer)
    seen: list[TraceContext | None] = []
    done = threading.Event()
    tail = system.spawn(Tail, seen, done, mode=last)
    echo = system.spawn(AsyncEcho if middle == "asyncio" else Echo, mode=middle)
    head = system.spawn(AsyncForward if first == "asyncio" else Forward, echo, tail, mode=first)
    fresh = new_trace()
    root = TraceContext(fresh.trace_id, fresh.span_id, sampled=False)
    with use_trace(root):
        head.tell("job")
    assert done.wait(WAIT)
    assert seen == [root]  # carried as it came, through a tell, an ask and a tell
    assert tracer.ended == 0
    with pytest.raises(ValueError, match="boom"), use_trace(root):
        system.spawn(Echo, mode=mode).ask("boom", timeout=WAIT)  # a failing handler without a handle: not ended either
    assert tracer.ended == 0
    assert tracer.spans() == ()
