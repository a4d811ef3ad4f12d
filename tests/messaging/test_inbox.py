"""The durable inbox: send, get by priority then FIFO, mark processed, visibility timeouts, backlog."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from actors import ActorSystem, ManualClock
from actors.errors import ProtocolError, UnknownMessageError
from actors.messaging import DurableInbox, spawn_service
from actors.protocol import AgentMessage, MessageType, Priority, to_json
from tests.messaging.helpers import Recorder

if TYPE_CHECKING:
    from pathlib import Path


def _to(agent: str, n: int, priority: Priority = Priority.MEDIUM) -> AgentMessage:
    return AgentMessage(sender="p", recipient=agent, type=MessageType.TASK_REQUEST, content=n, priority=priority)


def test_messages_come_out_by_priority_then_in_the_order_sent(system: ActorSystem, tmp_path: Path) -> None:
    inbox = spawn_service(system, DurableInbox, tmp_path / "i.db")
    for n, priority in [(1, Priority.LOW), (2, Priority.HIGH), (3, Priority.MEDIUM), (4, Priority.HIGH)]:
        inbox.send(_to("coder", n, priority))
    inbox.send(_to("other", 5))
    assert [i.message.content for i in inbox.get_messages("coder", limit=10)] == [2, 4, 3, 1]


def test_a_message_marked_processed_is_gone_and_marking_an_unknown_one_is_an_error(
    system: ActorSystem, tmp_path: Path
) -> None:
    inbox = spawn_service(system, DurableInbox, tmp_path / "i.db")
    message_id = inbox.send(_to("a", 1))
    inbox.mark_processed(message_id)
    with pytest.raises(UnknownMessageError, match="already processed"):
        inbox.mark_processed(message_id)
    assert inbox.statistics().waiting == 0


def test_a_message_fetched_but_not_marked_comes_back_after_the_visibility_timeout(
    system: ActorSystem, clock: ManualClock, tmp_path: Path
) -> None:
    inbox = spawn_service(system, DurableInbox, tmp_path / "i.db", visibility_timeout=30.0, now=clock.now)
    inbox.send(_to("a", 1))
    first = inbox.get_messages("a")
    assert [i.deliveries for i in first] == [1]
    assert inbox.get_messages("a") == ()
    clock.advance(29.9)
    assert inbox.get_messages("a") == ()
    clock.advance(0.1)
    again = inbox.get_messages("a")
    assert [(i.message_id, i.deliveries) for i in again] == [(first[0].message_id, 2)]


def test_a_registering_agent_gets_its_backlog_in_order_and_then_new_mail(system: ActorSystem, tmp_path: Path) -> None:
    inbox = spawn_service(system, DurableInbox, tmp_path / "i.db")
    for n in range(3):
        inbox.send(_to("coder", n))
    coder = system.spawn(Recorder)
    assert inbox.register("coder", coder) == 3
    inbox.send(_to("coder", 3))
    inbox.statistics()  # a barrier: the send committed and was told before this reply
    assert [m.content for m in coder.ask("get")] == [0, 1, 2, 3]


def test_the_inbox_survives_a_restart_and_keeps_what_was_not_processed(tmp_path: Path) -> None:
    path = tmp_path / "i.db"
    with ActorSystem("one") as system:
        inbox = spawn_service(system, DurableInbox, path)
        kept = inbox.send(_to("a", 1))
        inbox.mark_processed(inbox.send(_to("a", 2)))
    with ActorSystem("two") as system:
        inbox = spawn_service(system, DurableInbox, path)
        assert [i.message_id for i in inbox.get_messages("a")] == [kept]


def test_malformed_json_is_refused_naming_the_field_and_the_inbox_keeps_serving(
    system: ActorSystem, tmp_path: Path
) -> None:
    inbox = spawn_service(system, DurableInbox, tmp_path / "i.db")
    text = to_json(_to("a", 1)).replace('"TASK_REQUEST"', '"nonsense"').replace('"task_request"', '"nonsense"')
    with pytest.raises(ProtocolError) as caught:
        inbox.send(text)
    assert caught.value.field == "type"
    assert [d.message for d in system.dead_letters.recent()] == [text]
    with pytest.raises(ValueError, match="no recipient"):
        inbox.send(AgentMessage(sender="p", type=MessageType.STATUS_UPDATE))
    assert inbox.send(to_json(_to("a", 2)))
