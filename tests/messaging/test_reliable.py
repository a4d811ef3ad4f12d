"""Reliable delivery over a lossy link: every message reaches the handler exactly once, in order."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors import ActorSystem, ManualClock
from actors.messaging import ConsumerController, LossyLink, ProducerController, spawn_service
from actors.messaging.reliable import GetStatistics, Request, _ConsumerState, _ProducerState
from tests.messaging.helpers import Recorder


def _run(system: ActorSystem, clock: ManualClock, mode: str, link: LossyLink | None, count: int) -> list[int]:
    handler = system.spawn(Recorder, mode=mode)
    consumer = spawn_service(system, ConsumerController, handler, window=10, link=link, mode=mode)
    producer = spawn_service(system, ProducerController, consumer, link=link, mode=mode)
    for i in range(count):
        producer.tell(i)
    got: list[int] = []
    for _ in range(200):  # rounds of the resend timers, each followed by barriers through both sides
        producer.ask(GetStatistics())
        consumer.ask(GetStatistics())
        got = handler.ask("get")
        if len(got) >= count and producer.ask(GetStatistics()).buffered == 0:
            break
        clock.advance(1.0)
    return got


def test_without_loss_every_message_arrives_once_in_order(system: ActorSystem, clock: ManualClock, mode: str) -> None:
    assert _run(system, clock, mode, None, 100) == list(range(100))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_over_a_lossy_link_every_message_reaches_the_handler_exactly_once_in_order(
    system: ActorSystem, clock: ManualClock, mode: str, seed: int
) -> None:
    link = LossyLink(drop=0.1, duplicate=0.1, reorder=0.1, seed=seed)
    assert _run(system, clock, mode, link, 200) == list(range(200))
    assert link.dropped
    assert link.duplicated
    assert link.reordered


def test_the_consumer_grants_a_window_and_refills_it_at_half(system: ActorSystem, clock: ManualClock) -> None:
    handler = system.spawn(Recorder)
    consumer = spawn_service(system, ConsumerController, handler, window=10)
    producer = spawn_service(system, ProducerController, consumer)
    producer.ask(GetStatistics())  # barriers: the producer has registered,
    consumer.ask(GetStatistics())  # and the consumer has granted its first window
    for i in range(25):  # one thread sends: nothing overtakes anything, nothing is resent
        producer.tell(i)
    producer.ask(GetStatistics())
    consumer.ask(GetStatistics())
    stats = producer.ask(GetStatistics())
    assert stats.sent == 25
    assert stats.resent == 0
    # 1 initial request, then one each time 5 of the window of 10 were used.
    assert consumer.ask(GetStatistics()).requests == 1 + 25 // 5
    assert handler.ask("get") == list(range(25))


def test_a_lossy_link_refuses_fractions_outside_zero_to_one() -> None:
    with pytest.raises(ValueError, match="fraction"):
        LossyLink(drop=1.0)


@given(
    window=st.integers(min_value=2, max_value=12),
    arrivals=st.lists(st.lists(st.integers(min_value=1, max_value=40), max_size=15), max_size=12),
)
def test_a_run_is_taken_exactly_as_its_items_told_one_by_one(window: int, arrivals: list[list[int]]) -> None:
    """`arrived_run` (a local producer's batches) delivers and requests what `arrived` per item would.

    Runs of arbitrary seqs (gaps, duplicates, beyond the window) against the
    one-by-one path: the same messages delivered in the same order, the same
    counters, and the last request the same (a run answers once, after its last item).
    """
    one: list[int] = []
    many: list[int] = []
    one_requests: list[Request] = []
    many_requests: list[Request] = []
    single = _ConsumerState(one.append, window)
    batched = _ConsumerState(many.append, window)
    single.register(one_requests.append, 1)
    batched.register(many_requests.append, 1)
    for run in arrivals:
        asked_one, asked_many = len(one_requests), len(many_requests)
        for seq in run:
            single.arrived(seq, seq)
        batched.arrived_run([(seq, seq) for seq in run])
        assert many == one
        assert (batched.delivered, batched.requested, batched.duplicates, batched.early_count) == (
            single.delivered,
            single.requested,
            single.duplicates,
            single.early_count,
        )
        # A run answers once, with the state after its last item, when one by one it would have answered
        # at all (the last answer one by one may have come earlier, with less).
        if len(one_requests) > asked_one:
            assert many_requests[asked_many:] == [Request(batched.delivered, batched.requested)]
        else:
            assert len(many_requests) == asked_many
    assert one == sorted(set(one))
    assert one == list(range(1, len(one) + 1))


_OPS = st.lists(st.sampled_from(["tell", "tell", "tell", "tell", "consumer_tick", "producer_tick"]), max_size=120)


def _pair(window: int, *, paired: bool) -> tuple[_ProducerState, _ConsumerState, list[int]]:
    """A producer and consumer state wired directly, as local controllers are (the long way, or paired)."""
    got: list[int] = []
    consumer = _ConsumerState(got.append, window)
    producer = _ProducerState(
        lambda item: consumer.arrived(item.seq, item.message),
        1.0,
        30.0,
        send_run=consumer.arrived_run,
        send_one=consumer.arrived,
    )
    if paired:
        producer.share(consumer)
    consumer.register(producer.requested, 1)
    return producer, consumer, got


@given(window=st.integers(min_value=2, max_value=12), ops=_OPS)
def test_a_paired_local_producer_delivers_and_counts_as_the_long_way_does(window: int, ops: list[str]) -> None:
    """`pass_through` (a local pair's short way) leaves both sides as accepting and sending each message would.

    The same tells and ticks on a pair that takes the long way (every message
    buffered, sent, arrived, a request for each refill) and on one paired
    under one lock: the handler gets the same messages in the same order, and
    both sides' counters agree after every step.
    """
    long_producer, long_consumer, long_got = _pair(window, paired=False)
    short_producer, short_consumer, short_got = _pair(window, paired=True)
    sent = 0
    for op in ops:
        sides = ((long_producer, long_consumer, False), (short_producer, short_consumer, True))
        for producer, consumer, short in sides:
            if op == "tell":
                if not (short and producer.pass_through(sent)):
                    producer.accept(sent)
            elif op == "consumer_tick":
                consumer.tick()
            else:
                producer.tick()
        sent += op == "tell"
        assert short_got == long_got == list(range(sent))
        assert short_producer.statistics() == long_producer.statistics()
        assert short_consumer.statistics() == long_consumer.statistics()
        assert (short_producer.up_to, short_consumer.requested, short_consumer.acked) == (
            long_producer.up_to,
            long_consumer.requested,
            long_consumer.acked,
        )


class _CrashingConsumer(ConsumerController):
    """A consumer controller that fails on ``"crash"`` (and is restarted by its supervisor)."""

    def on_receive(self, message: object) -> object:
        if message == "crash":
            raise RuntimeError("crash")
        return super().on_receive(message)


def test_a_restarted_consumer_is_registered_again_and_delivery_goes_on(
    system: ActorSystem, clock: ManualClock, mode: str
) -> None:
    """A restart loses the consumer's state; the producer's resend tick registers it again.

    What was delivered but not yet confirmed is delivered again (at least
    once across a consumer restart, as Akka's reliable delivery); nothing is
    lost and the first deliveries of each seq keep their order.
    """
    handler = system.spawn(Recorder, mode=mode)
    consumer = spawn_service(system, _CrashingConsumer, handler, window=10, mode=mode, restart="permanent")
    producer = spawn_service(system, ProducerController, consumer, mode=mode)
    for i in range(15):
        producer.tell(i)
    producer.ask(GetStatistics())
    consumer.tell("crash")
    consumer.ask(GetStatistics())  # the restarted instance answers: its new state is in place
    for i in range(15, 40):
        producer.tell(i)
    got: list[int] = []
    for _ in range(200):
        producer.ask(GetStatistics())
        consumer.ask(GetStatistics())
        got = handler.ask("get")
        if set(got) >= set(range(40)) and producer.ask(GetStatistics()).buffered == 0:
            break
        clock.advance(1.0)
    first_seen = list(dict.fromkeys(got))
    assert first_seen == list(range(40))
