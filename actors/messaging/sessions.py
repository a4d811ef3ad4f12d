"""`SessionManager`: conversations between agents, kept in order and resumable from the history.

    sessions = system.spawn(SessionManager, history=history, broker=broker)
    sid = sessions.create("planner", metadata={"goal": "ship"})
    sessions.join(sid, "coder", coder_ref)
    sessions.broadcast(sid, message, sender="planner")   # every member but the sender
    sessions.members(sid)                                 # ("coder", "planner")
    sessions.leave(sid, "coder"); sessions.close(sid)
    # after a restart, with a new manager on the same history file:
    transcript = sessions.resume(sid, {"planner": planner_ref, "coder": coder_ref})

The owner is a member from the start. A member that stops leaves (the
manager watches it), except while the system shuts down: those members are
still members when the session is resumed.

Order. The manager is the only writer of a session's stream
(``session:<id>`` in the history), and appends to it in the order it handles
requests: creation, joins, leaves, messages and closing are one sequence, so
a resumed session replays its messages in the order they were broadcast and
rebuilds its membership from the same records.

Collaborating. With a broker, every join and leave is published on
``troupe.sessions.<id>`` as `SessionMemberJoined` / `SessionMemberLeft`:
the seam an agent registry subscribes to (``troupe.sessions.**``) to show
its members as Collaborating while they are in a session.

Bad requests raise to the asker (`SessionNotFoundError`,
`SessionClosedError` for joining or speaking in a closed session,
`NotASessionMemberError` for leaving a session never joined or speaking in
one as an outsider); told, they are ``REJECTED`` dead letters.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Mapping
from typing import Any, ClassVar, cast

import attrs
from pykka import ActorDeadError

from actors._core import ActorRef, FrozenDict, Terminated, check_ref
from actors.errors import NotASessionMemberError, SessionClosedError, SessionNotFoundError, TroupeError
from actors.messaging._service import Service, ServiceRef
from actors.messaging.history import Append, HistoryEntry, HistoryQuery, check_payload
from actors.messaging.topics import check_topic

__all__ = [
    "SessionInfo",
    "SessionManager",
    "SessionMemberJoined",
    "SessionMemberLeft",
    "SessionRef",
    "SessionTranscript",
]


@attrs.frozen
class SessionMemberJoined:
    """Published on ``troupe.sessions.<id>`` when an agent joins (the owner too, at creation)."""

    session: str
    agent: str


@attrs.frozen
class SessionMemberLeft:
    """Published on ``troupe.sessions.<id>`` when an agent leaves ("left", "stopped" or "closed")."""

    session: str
    agent: str
    reason: str


@attrs.frozen
class SessionInfo:
    """A session at one moment."""

    id: str
    owner: str
    metadata: FrozenDict[str, Any]
    members: tuple[str, ...]
    closed: bool
    messages: int


@attrs.frozen
class SessionTranscript:
    """A session rebuilt from the history: its state and its messages, in order."""

    info: SessionInfo
    messages: tuple[HistoryEntry, ...]


@attrs.frozen
class _Create:
    owner: str
    ref: ActorRef[Any] | None
    metadata: Any
    session_id: str | None


@attrs.frozen
class _Join:
    session: str
    agent: str
    ref: ActorRef[Any] | None


@attrs.frozen
class _Leave:
    session: str
    agent: str


@attrs.frozen
class _Broadcast:
    session: str
    message: Any
    sender: str


@attrs.frozen
class _Members:
    session: str


@attrs.frozen
class _Close:
    session: str


@attrs.frozen
class _Info:
    session: str | None


@attrs.frozen
class _Resume:
    session: str
    refs: Any


class _Session:
    __slots__ = ("closed", "id", "members", "messages", "metadata", "owner")

    def __init__(self, session_id: str, owner: str, metadata: Any) -> None:
        self.id = session_id
        self.owner = owner
        self.metadata = metadata
        # Invariant: agent id -> its ref, or None for a member not bound to a live actor (resumed without one).
        self.members: dict[str, ActorRef[Any] | None] = {}
        self.closed = False
        self.messages = 0

    def info(self) -> SessionInfo:
        return SessionInfo(
            self.id, self.owner, FrozenDict(self.metadata), tuple(sorted(self.members)), self.closed, self.messages
        )


class SessionRef(ServiceRef):
    """The address of a `SessionManager`, with its requests as methods."""

    __slots__ = ()

    def create(
        self,
        owner: str,
        ref: ActorRef[Any] | None = None,
        *,
        metadata: Mapping[str, Any] | None = None,
        session_id: str | None = None,
    ) -> str:
        """Create a session owned by agent `owner` (a member from the start); return its id."""
        return cast("str", self.ask(_Create(owner, ref, dict(metadata or {}), session_id)))

    def join(self, session: str, agent: str, ref: ActorRef[Any] | None = None) -> None:
        """Add agent `agent` (receiving at `ref`) to `session`; joining twice rebinds its ref."""
        self.ask(_Join(session, agent, ref))

    def leave(self, session: str, agent: str) -> None:
        """Remove `agent` from `session`."""
        self.ask(_Leave(session, agent))

    def broadcast(self, session: str, message: Any, *, sender: str) -> int:
        """Send `message` to every member but `sender` (a member); return how many it reached."""
        return cast("int", self.ask(_Broadcast(session, message, sender)))

    def members(self, session: str) -> tuple[str, ...]:
        """Return the members' agent ids, sorted."""
        return cast("tuple[str, ...]", self.ask(_Members(session)))

    def close(self, session: str) -> None:
        """Close `session`: its members leave; nobody may join or speak after. Closing twice is a no-op."""
        self.ask(_Close(session))

    def info(self, session: str) -> SessionInfo:
        """Return a snapshot of `session`."""
        return cast("SessionInfo", self.ask(_Info(session)))

    def sessions(self) -> tuple[SessionInfo, ...]:
        """Return a snapshot of every session this manager holds, by id."""
        return cast("tuple[SessionInfo, ...]", self.ask(_Info(None)))

    def resume(self, session: str, refs: Mapping[str, ActorRef[Any]] | None = None) -> SessionTranscript:
        """Rebuild `session` from the history, binding members to `refs`; return it with its messages in order."""
        return cast("SessionTranscript", self.ask(_Resume(session, dict(refs or {}))))


def _check_agent(agent: object) -> str:
    if not isinstance(agent, str) or not agent:
        msg = f"an agent id must be a non-empty str, got {agent!r}"
        raise TypeError(msg)
    return agent


class SessionManager(Service):
    """The session actor (see the module docs).

    Args:
        history: where sessions are recorded (None: sessions live in memory only and cannot be resumed).
        broker: where membership changes are published (None: nowhere).
    """

    _troupe_ref_class: ClassVar[type[ActorRef[Any]]] = SessionRef

    def __init__(self, history: ActorRef[Any] | None = None, broker: Any = None) -> None:
        super().__init__()
        check_ref("history", history, optional=True, owner="SessionManager")
        check_ref("broker", broker, optional=True, owner="SessionManager")
        self.history = history
        self.broker = broker
        self.sessions: dict[str, _Session] = {}

    def handle(self, message: Any) -> Any:
        """Handle one session request, or a member's termination."""
        match message:
            case _Broadcast():
                return self._broadcast(message)
            case _Create():
                return self._create(message)
            case _Join(session=sid, agent=agent, ref=ref):
                session = self._open(sid)
                self._bind(session, _check_agent(agent), ref, record=True)
                return None
            case _Leave(session=sid, agent=agent):
                session = self._get(sid)
                if agent not in session.members:
                    msg = f"agent {agent!r} is not a member of session {sid!r}, so it cannot leave it; join first"
                    raise NotASessionMemberError(msg)
                self._unbind(session, agent, "left")
                return None
            case _Members(session=sid):
                return tuple(sorted(self._get(sid).members))
            case _Close(session=sid):
                session = self._get(sid)
                if not session.closed:
                    for agent in list(session.members):
                        self._unbind(session, agent, "closed")
                    session.closed = True
                    self._record(session, {"event": "closed"}, kind="event")
                return None
            case _Info(session=None):
                return tuple(self.sessions[s].info() for s in sorted(self.sessions))
            case _Info(session=sid):
                return self._get(sid).info()
            case _Resume():
                return self._resume(message)
            case Terminated(ref=gone):
                running = self.actor_system.is_running
                for session in self.sessions.values():
                    for agent, ref in list(session.members.items()):
                        if ref is not None and ref == gone:
                            if running:
                                self._unbind(session, agent, "stopped")
                            else:  # shutting down: it stays a member, for a resume
                                session.members[agent] = None
                return None
        return super().handle(message)

    # -- helpers, on the manager's thread ---------------------------------------------------------------------

    def _get(self, sid: object) -> _Session:
        session = self.sessions.get(sid)  # type: ignore[call-overload]
        if session is None:
            msg = f"no session {sid!r} in {self}; create it, or resume it from the history"
            raise SessionNotFoundError(msg)
        return cast("_Session", session)

    def _open(self, sid: object) -> _Session:
        session = self._get(sid)
        if session.closed:
            msg = f"session {sid!r} is closed; create a new session"
            raise SessionClosedError(msg)
        return session

    def _create(self, request: _Create) -> str:
        owner = _check_agent(request.owner)
        sid = request.session_id if request.session_id is not None else uuid.uuid4().hex
        check_topic(sid)  # an id is one topic segment (it names the session's membership topic)
        if "." in sid:
            msg = f"a session id is one segment (no dots), got {sid!r}"
            raise ValueError(msg)
        if sid in self.sessions:
            msg = f"session {sid!r} exists already in {self}; choose another id"
            raise ValueError(msg)
        if self.history is not None:
            check_payload(request.metadata)
        session = _Session(sid, owner, request.metadata)
        self.sessions[sid] = session
        self._record(session, {"event": "created", "owner": owner, "metadata": request.metadata}, kind="event")
        self._bind(session, owner, request.ref, record=True)
        return sid

    def _bind(self, session: _Session, agent: str, ref: ActorRef[Any] | None, *, record: bool) -> None:
        if ref is not None and not isinstance(ref, ActorRef):
            msg = f"a session member's ref must be a troupe ActorRef or None, got {ref!r}"
            raise TypeError(msg)
        new = agent not in session.members
        old = session.members.get(agent)
        session.members[agent] = ref
        if ref is not None:
            self.watch(ref)
        if old is not None and old != ref:
            self._maybe_unwatch(old)
        if new:
            if record:
                self._record(session, {"event": "joined", "agent": agent}, kind="event")
            self._announce(session, SessionMemberJoined(session.id, agent))

    def _unbind(self, session: _Session, agent: str, reason: str) -> None:
        ref = session.members.pop(agent)
        if ref is not None:
            self._maybe_unwatch(ref)
        self._record(session, {"event": "left", "agent": agent, "reason": reason}, kind="event")
        self._announce(session, SessionMemberLeft(session.id, agent, reason))

    def _maybe_unwatch(self, ref: ActorRef[Any]) -> None:
        if all(r != ref for s in self.sessions.values() for r in s.members.values()):
            self.unwatch(ref)

    def _announce(self, session: _Session, event: Any) -> None:
        if self.broker is not None:
            # A stopped broker, or a full "fail" buffer: membership itself is unaffected.
            with contextlib.suppress(ActorDeadError, TroupeError):
                self.broker.publish(f"troupe.sessions.{session.id}", event, sender=self.actor_ref, if_subscribed=True)

    def _record(self, session: _Session, message: Any, *, kind: str | None = None, sender: str | None = None) -> None:
        if self.history is not None:
            self.history.tell(Append(f"session:{session.id}", message, sender=sender, session=session.id, kind=kind))

    def _broadcast(self, request: _Broadcast) -> int:
        session = self._open(request.session)
        sender = request.sender
        if sender not in session.members:
            msg = f"agent {sender!r} is not a member of session {session.id!r}; join it before speaking in it"
            raise NotASessionMemberError(msg)
        if self.history is not None:
            check_payload(request.message)
        session.messages += 1
        self._record(session, request.message, sender=sender)
        delivered = 0
        for agent, ref in session.members.items():
            if agent == sender or ref is None:
                continue
            try:
                ref.tell(request.message)
                delivered += 1
            except ActorDeadError:
                pass  # dead-lettered by the ref; the Terminated on its way removes it
        return delivered

    def _resume(self, request: _Resume) -> SessionTranscript:
        if self.history is None:
            msg = f"{self} has no history to resume session {request.session!r} from; spawn it with history=..."
            raise SessionNotFoundError(msg)
        sid = request.session
        entries: list[HistoryEntry] = []
        cursor = None
        while True:
            page = self.history.ask(HistoryQuery(stream=f"session:{sid}", after=cursor, limit=10_000))
            entries.extend(page.entries)
            cursor = page.next_cursor
            if cursor is None:
                break
        if not entries:
            msg = f"the history holds no session {sid!r}"
            raise SessionNotFoundError(msg)
        first = entries[0].message
        if entries[0].kind != "event" or not isinstance(first, Mapping) or first.get("event") != "created":
            msg = (
                f"the history no longer holds the start of session {sid!r} (retention deleted it, or the stream "
                "was written by something else), so its members cannot be rebuilt"
            )
            raise SessionNotFoundError(msg)
        session = _Session(sid, first["owner"], dict(first["metadata"]))
        messages = []
        for entry in entries:
            if entry.kind == "event":
                event = entry.message
                if event["event"] == "joined":
                    session.members[event["agent"]] = None
                elif event["event"] == "left":
                    session.members.pop(event["agent"], None)
                elif event["event"] == "closed":
                    session.closed = True
            else:
                messages.append(entry)
        session.messages = len(messages)
        old = self.sessions.get(sid)
        self.sessions[sid] = session
        if old is not None:
            for ref in old.members.values():
                if ref is not None:
                    self._maybe_unwatch(ref)
        for agent, ref in request.refs.items():
            if agent in session.members and ref is not None:
                self._bind(session, agent, ref, record=False)
        return SessionTranscript(session.info(), tuple(messages))
