"""The broker: topics, broadcast, groups, multicast, self-delivery, dead letters, buffers, death watch."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from pykka import ActorDeadError

from actors import ActorSystem, BoundedMailbox, DeadLetterReason
from actors.errors import CoroutineSubscriberError, ProtocolError, SubscriberOverflowError, TopicError
from actors.messaging import (
    MEMBERSHIP_TOPIC,
    MemberJoined,
    MemberLeft,
    MessageBroker,
    Publish,
    Published,
    spawn_service,
)
from actors.protocol import AgentMessage, MessageType, to_json
from tests.core.actors_for_tests import WAIT, Gate
from tests.messaging.helpers import Recorder


def _reasons(system: ActorSystem, reason: DeadLetterReason) -> list[Any]:
    return [d.message for d in system.dead_letters.recent() if d.reason is reason]


def test_a_publication_reaches_every_subscriber_whose_pattern_matches(system: ActorSystem, mode: str) -> None:
    broker = spawn_service(system, MessageBroker, mode=mode)
    one, many, other = (system.spawn(Recorder, mode=mode) for _ in range(3))
    broker.subscribe("tasks.*", one)
    broker.subscribe("tasks.**", many)
    broker.subscribe("alerts", other)
    assert broker.publish("tasks.review", 1) == 2
    assert broker.publish("tasks.review.urgent", 2) == 1
    assert broker.publish("tasks", 3) == 1
    assert one.ask("get") == [1]
    assert many.ask("get") == [1, 2, 3]
    assert other.ask("get") == []


def test_a_plain_callable_subscriber_is_called_with_each_message(system: ActorSystem, mode: str) -> None:
    broker = spawn_service(system, MessageBroker, mode=mode)
    got: list[Any] = []
    done = threading.Event()

    def on_message(message: Any) -> None:
        got.append(message)
        if len(got) == 3:
            done.set()

    broker.subscribe("a.*", on_message)
    for i in range(3):
        broker.publish("a.b", i)
    assert done.wait(WAIT)
    assert got == [0, 1, 2]


def test_a_coroutine_function_is_refused_where_a_plain_callable_is_required(system: ActorSystem) -> None:
    broker = spawn_service(system, MessageBroker)

    async def handler(message: Any) -> None:
        pass

    with pytest.raises(CoroutineSubscriberError, match="coroutine function"):
        broker.subscribe("a", handler)
    assert broker.subscriptions() == ()


@pytest.mark.parametrize("topic", ["", "a..b", ".a", "a.", "a b", "a.*", 42, None])
def test_publishing_to_an_empty_or_malformed_topic_is_a_topic_error_and_the_broker_keeps_serving(
    system: ActorSystem, topic: Any
) -> None:
    broker = spawn_service(system, MessageBroker)
    sink = system.spawn(Recorder)
    broker.subscribe("ok", sink)
    with pytest.raises(TopicError):
        broker.publish(topic, "x")
    assert broker.publish("ok", "y") == 1
    assert sink.ask("get") == ["y"]


def test_a_publication_nobody_takes_is_a_dead_letter_with_its_own_reason(system: ActorSystem) -> None:
    broker = spawn_service(system, MessageBroker)
    assert broker.publish("nobody.home", "lost") == 0
    assert _reasons(system, DeadLetterReason.NO_SUBSCRIBER) == ["lost"]
    assert broker.statistics().no_subscriber == 1


def test_the_sender_does_not_receive_its_own_publication_unless_it_asks(system: ActorSystem, mode: str) -> None:
    broker = spawn_service(system, MessageBroker, mode=mode)
    me, you = system.spawn(Recorder, mode=mode), system.spawn(Recorder, mode=mode)
    broker.subscribe("chat", me, agent="me")
    broker.subscribe("chat", you, agent="you")
    assert broker.publish("chat", "by ref", sender=me) == 1
    assert broker.publish("chat", "by id", sender="me") == 1
    note = AgentMessage(sender="me", type=MessageType.STATUS_UPDATE, content="by message")
    assert broker.publish("chat", note) == 1
    assert broker.publish("chat", "echo", sender=me, include_self=True) == 2
    assert me.ask("get") == ["echo"]
    assert you.ask("get") == ["by ref", "by id", note, "echo"]


def test_only_the_sender_is_skipped_so_a_lone_self_subscriber_makes_it_a_dead_letter(system: ActorSystem) -> None:
    broker = spawn_service(system, MessageBroker)
    me = system.spawn(Recorder)
    broker.subscribe("chat", me)
    assert broker.publish("chat", "alone", sender=me) == 0
    assert _reasons(system, DeadLetterReason.NO_SUBSCRIBER) == ["alone"]


def test_a_subscription_group_gets_one_copy_shared_among_its_members_in_turn(system: ActorSystem, mode: str) -> None:
    broker = spawn_service(system, MessageBroker, mode=mode)
    workers = [system.spawn(Recorder, mode=mode) for _ in range(3)]
    audit = system.spawn(Recorder, mode=mode)
    for worker in workers:
        broker.subscribe("jobs.*", worker, group="workers")
    broker.subscribe("jobs.*", audit)
    for i in range(9):
        assert broker.publish("jobs.new", i) == 2
    got = [w.ask("get") for w in workers]
    assert sorted(x for g in got for x in g) == list(range(9))
    assert [len(g) for g in got] == [3, 3, 3]
    assert audit.ask("get") == list(range(9))


def test_multicast_reaches_exactly_the_named_agents_and_refs(system: ActorSystem, mode: str) -> None:
    broker = spawn_service(system, MessageBroker, mode=mode)
    a, b, c, d = (system.spawn(Recorder, mode=mode) for _ in range(4))
    broker.subscribe("x", a, agent="a")
    broker.subscribe("x", b, agent="b")
    broker.subscribe("x", c, agent="c")
    assert broker.multicast(["a", "c", d, "a", "ghost"], "hi") == 3
    assert [r.ask("get") for r in (a, b, c, d)] == [["hi"], [], ["hi"], ["hi"]]
    assert _reasons(system, DeadLetterReason.NO_SUBSCRIBER) == ["hi"]


def test_a_subscriber_that_stops_is_removed_by_death_watch(system: ActorSystem, mode: str) -> None:
    broker = spawn_service(system, MessageBroker, mode=mode)
    left: list[Any] = []
    seen = threading.Event()

    def membership(event: Any) -> None:
        left.append(event)
        if isinstance(event, MemberLeft):
            seen.set()

    broker.subscribe(MEMBERSHIP_TOPIC, membership)
    gone, stays = system.spawn(Recorder, mode=mode), system.spawn(Recorder, mode=mode)
    sub = broker.subscribe("t", gone)
    broker.subscribe("t", stays)
    gone.stop()
    assert seen.wait(WAIT)
    assert [s.ref for s in broker.subscriptions()][1:] == [stays]
    assert broker.publish("t", 1) == 1
    joined = [e.subscription for e in left if isinstance(e, MemberJoined)]
    assert sub in joined
    assert [(e.subscription, e.reason) for e in left if isinstance(e, MemberLeft)] == [(sub, "terminated")]


def test_a_raising_callable_subscriber_does_not_affect_the_others_and_stays_subscribed(
    system: ActorSystem, mode: str
) -> None:
    broker = spawn_service(system, MessageBroker, callback_mode=mode)
    calls: list[Any] = []
    done = threading.Event()

    def fragile(message: Any) -> None:
        calls.append(message)
        if len(calls) == 2:
            done.set()
        if message == "boom":
            raise RuntimeError("subscriber failed")

    sink = system.spawn(Recorder, mode=mode)
    broker.subscribe("t", fragile)
    broker.subscribe("t", sink)
    broker.publish("t", "boom")
    broker.publish("t", "fine")
    assert done.wait(WAIT)
    assert sink.ask("get") == ["boom", "fine"]
    stats = broker.statistics()
    assert [s.failed for s in stats.subscribers] == [1, 0]
    assert _reasons(system, DeadLetterReason.HANDLER_FAILED) == ["boom"]


def test_a_slow_subscriber_drops_what_overflows_its_buffer_and_delays_no_one(system: ActorSystem, mode: str) -> None:
    broker = spawn_service(system, MessageBroker, mode=mode)
    slow, fast = system.spawn(Recorder, mode=mode), system.spawn(Recorder, mode=mode)
    gate = Gate()
    slow.tell(("hold", gate))
    gate.wait_entered()
    broker.subscribe("t", slow, capacity=2)
    broker.subscribe("t", fast)
    counts = [broker.publish("t", i) for i in range(5)]
    assert fast.ask("get") == [0, 1, 2, 3, 4]  # while slow is still held
    gate.released.set()
    assert slow.ask("get") == [0, 1]
    assert counts == [2, 2, 1, 1, 1]
    assert broker.statistics().subscribers[0].dropped == 3
    assert _reasons(system, DeadLetterReason.MAILBOX_OVERFLOW) == [2, 3, 4]


def test_overflow_policy_fail_raises_to_the_publisher_after_the_others_got_it(system: ActorSystem) -> None:
    broker = spawn_service(system, MessageBroker)
    slow, fast = system.spawn(Recorder), system.spawn(Recorder)
    gate = Gate()
    slow.tell(("hold", gate))
    gate.wait_entered()
    broker.subscribe("t", slow, capacity=1, overflow="fail")
    broker.subscribe("t", fast)
    assert broker.publish("t", 0) == 2
    with pytest.raises(SubscriberOverflowError, match="full subscriber buffer"):
        broker.publish("t", 1)
    gate.released.set()
    assert fast.ask("get") == [0, 1]
    assert slow.ask("get") == [0]


def test_envelope_subscribers_receive_the_topic_and_sender(system: ActorSystem) -> None:
    broker = spawn_service(system, MessageBroker)
    sink = system.spawn(Recorder)
    broker.subscribe("a.*", sink, envelope=True)
    broker.publish("a.b", "m", sender="me")
    assert sink.ask("get") == [Published("a.b", "m", "me")]


def test_a_bad_told_request_is_a_rejected_dead_letter_and_an_asked_one_fails_only_its_asker(
    system: ActorSystem, logs: Any
) -> None:
    broker = spawn_service(system, MessageBroker)
    sink = system.spawn(Recorder)
    broker.subscribe("ok", sink)
    broker.tell(Publish("bad topic", 1))
    broker.tell("gibberish")
    with pytest.raises(TopicError):
        broker.ask(Publish("", 1))
    with pytest.raises(TypeError, match="does not understand"):
        broker.ask("gibberish")
    assert broker.ask(Publish("ok", 2)) == 1
    assert sink.ask("get") == [2]
    assert _reasons(system, DeadLetterReason.REJECTED) == [Publish("bad topic", 1), "gibberish"]
    assert any("rejected" in m for m in logs.messages())


def test_a_stopped_broker_refuses_publications_and_its_asks_resolve(system: ActorSystem) -> None:
    broker = spawn_service(system, MessageBroker)
    broker.stop()
    with pytest.raises(ActorDeadError):
        broker.publish("t", 1)
    with pytest.raises(ActorDeadError):
        broker.subscriptions()


def test_unsubscribing_stops_delivery(system: ActorSystem, mode: str) -> None:
    broker = spawn_service(system, MessageBroker, mode=mode)
    sink = system.spawn(Recorder, mode=mode)
    sub = broker.subscribe("t", sink)
    broker.publish("t", 1)
    assert broker.unsubscribe(sub) is True
    assert broker.unsubscribe(sub) is False
    broker.publish("t", 2)
    assert sink.ask("get") == [1]


def test_a_subscriber_whose_own_bounded_mailbox_refuses_is_counted_as_a_drop_not_an_error(system: ActorSystem) -> None:
    broker = spawn_service(system, MessageBroker)
    gate = Gate()
    slow = system.spawn(Recorder, mailbox=BoundedMailbox(1, overflow="fail"))
    fast = system.spawn(Recorder)
    slow.tell(("hold", gate))
    gate.wait_entered()
    broker.subscribe("t", slow)
    broker.subscribe("t", fast)
    assert broker.publish("t", 0) == 2
    assert broker.publish("t", 1) == 1  # slow's mailbox holds one already
    assert fast.ask("get") == [0, 1]
    assert broker.statistics().subscribers[0].dropped == 1
    assert _reasons(system, DeadLetterReason.MAILBOX_OVERFLOW) == [1]
    gate.released.set()


def test_a_malformed_or_unknown_version_json_message_is_rejected_naming_the_field_and_dead_lettered(
    system: ActorSystem,
) -> None:
    broker = spawn_service(system, MessageBroker)
    sink = system.spawn(Recorder)
    broker.subscribe("t", sink)
    good = AgentMessage(sender="a", type=MessageType.STATUS_UPDATE, content={"ok": True})
    future_version = to_json(good).replace('"1.0"', '"9.0"')
    with pytest.raises(ProtocolError) as caught:
        broker.publish_json("t", future_version)
    assert caught.value.field == "protocol_version"
    with pytest.raises(ProtocolError):
        broker.publish_json("t", "{not json")
    assert broker.publish_json("t", to_json(good)) == 1
    assert sink.ask("get") == [good]
    assert _reasons(system, DeadLetterReason.REJECTED) == [future_version, "{not json"]
