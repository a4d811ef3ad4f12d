"""Sessions: membership, broadcast, closing, members that stop, resume from the history in order."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import pytest

from actors import ActorSystem
from actors.errors import NotASessionMemberError, SessionClosedError, SessionNotFoundError
from actors.messaging import (
    MessageBroker,
    MessageHistory,
    SessionManager,
    SessionMemberJoined,
    SessionMemberLeft,
    spawn_service,
)
from tests.core.actors_for_tests import WAIT
from tests.messaging.helpers import Recorder

if TYPE_CHECKING:
    from pathlib import Path


def test_members_join_hear_each_other_but_not_themselves_and_leave(system: ActorSystem, mode: str) -> None:
    sessions = spawn_service(system, SessionManager, mode=mode)
    planner, coder, tester = (system.spawn(Recorder, mode=mode) for _ in range(3))
    sid = sessions.create("planner", planner, metadata={"goal": "ship"})
    sessions.join(sid, "coder", coder)
    sessions.join(sid, "tester", tester)
    assert sessions.members(sid) == ("coder", "planner", "tester")
    assert sessions.broadcast(sid, "plan", sender="planner") == 2
    sessions.leave(sid, "tester")
    assert sessions.broadcast(sid, "code", sender="coder") == 1
    assert planner.ask("get") == ["code"]
    assert coder.ask("get") == ["plan"]
    assert tester.ask("get") == ["plan"]
    assert sessions.info(sid).metadata["goal"] == "ship"


def test_bad_session_requests_are_named_errors_and_the_manager_keeps_serving(system: ActorSystem) -> None:
    sessions = spawn_service(system, SessionManager)
    sid = sessions.create("owner")
    with pytest.raises(NotASessionMemberError, match="not a member"):
        sessions.leave(sid, "stranger")
    with pytest.raises(NotASessionMemberError):
        sessions.broadcast(sid, "hi", sender="stranger")
    with pytest.raises(SessionNotFoundError):
        sessions.join("nope", "a")
    sessions.close(sid)
    with pytest.raises(SessionClosedError):
        sessions.join(sid, "late")
    with pytest.raises(SessionClosedError):
        sessions.broadcast(sid, "hi", sender="owner")
    assert sessions.members(sid) == ()
    assert sessions.create("again")


def test_a_member_that_stops_leaves_the_session(system: ActorSystem, mode: str) -> None:
    broker = spawn_service(system, MessageBroker)
    events: list[Any] = []
    left = threading.Event()

    def on_event(event: Any) -> None:
        events.append(event)
        if isinstance(event, SessionMemberLeft):
            left.set()

    broker.subscribe("troupe.sessions.**", on_event)
    sessions = spawn_service(system, SessionManager, broker=broker, mode=mode)
    owner, member = system.spawn(Recorder, mode=mode), system.spawn(Recorder, mode=mode)
    sid = sessions.create("owner", owner)
    sessions.join(sid, "member", member)
    member.stop()
    assert left.wait(WAIT)
    assert sessions.members(sid) == ("owner",)
    assert events == [
        SessionMemberJoined(sid, "owner"),
        SessionMemberJoined(sid, "member"),
        SessionMemberLeft(sid, "member", "stopped"),
    ]


def test_a_session_resumes_from_the_history_with_its_members_and_messages_in_order(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    with ActorSystem("before") as system:
        history = spawn_service(system, MessageHistory, path)
        sessions = spawn_service(system, SessionManager, history=history)
        a, b, c = (system.spawn(Recorder) for _ in range(3))
        sid = sessions.create("a", a, metadata={"topic": "design"})
        sessions.join(sid, "b", b)
        sessions.join(sid, "c", c)
        for i in range(20):
            sessions.broadcast(sid, {"turn": i}, sender="ab"[i % 2])
        sessions.leave(sid, "c")
        history.flush()
    with ActorSystem("after") as system:
        history = spawn_service(system, MessageHistory, path)
        sessions = spawn_service(system, SessionManager, history=history)
        a, b = system.spawn(Recorder), system.spawn(Recorder)
        transcript = sessions.resume(sid, {"a": a, "b": b})
        assert transcript.info.members == ("a", "b")
        assert transcript.info.metadata["topic"] == "design"
        assert [e.message["turn"] for e in transcript.messages] == list(range(20))
        assert [e.sender for e in transcript.messages] == ["ab"[i % 2] for i in range(20)]
        assert sessions.broadcast(sid, "back", sender="a") == 1
        assert b.ask("get") == ["back"]
        with pytest.raises(SessionNotFoundError):
            sessions.resume("never-was")
