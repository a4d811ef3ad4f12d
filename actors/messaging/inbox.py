"""`DurableInbox`: store-and-forward mail for agents, in SQLite (WAL); it survives kill -9.

    inbox = system.spawn(DurableInbox, tmp_path / "inbox.db", visibility_timeout=30.0)
    inbox.send(AgentMessage(sender="planner", recipient="coder", type=MessageType.TASK_REQUEST))
    items = inbox.get_messages("coder", limit=10)   # by priority, then first in first out
    inbox.mark_processed(items[0].message_id)       # retired for good
    inbox.register("coder", coder_ref)               # the backlog is told to coder_ref, in order

`send` returns once the message has committed (acknowledged means
committed; sends that arrive together share one transaction). A message
waits for its recipient (``message.recipient``) whether or not that agent
runs. `get_messages` hands out messages by priority (highest first), then in
the order they were sent, and leases each for ``visibility_timeout``
seconds: a message fetched but not marked processed within that time is
handed out again (its ``deliveries`` count goes up: a consumer sees that it
may be a redelivery). A registered agent is told its backlog at once, then
each new message as it commits, each under the same lease, and its expired
leases are told again every ``visibility_timeout`` (a timer on the system's
clock). An agent whose actor stops is unregistered; its mail keeps waiting.

Edges. `send` takes an `AgentMessage` or its JSON wire form (decoded by the
protocol's converter: a malformed message raises `ProtocolError` naming the
field, and the text is recorded as a ``REJECTED`` dead letter); a message
without a recipient is refused (`ValueError`: a broadcast has no inbox).
Marking an unknown id raises `UnknownMessageError`.

Times come from ``now`` (default `time.time`: leases carry across restarts).
Threading: a thread-mode actor; its connection is used only by its own turns.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any, ClassVar, cast

import attrs
from pykka import ActorDeadError

from actors._core import ActorRef, DeadLetterReason, Future, Terminated, ThreadActor, check_seconds
from actors.errors import ProtocolError, UnknownMessageError
from actors.messaging._service import Service, ServiceRef
from actors.messaging.history import Synchronous, _check_path, _open
from actors.protocol import AgentMessage, from_json, to_json

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["DurableInbox", "InboxItem", "InboxRef", "InboxStatistics"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS inbox (
    id INTEGER PRIMARY KEY,
    message_id TEXT NOT NULL UNIQUE,
    agent TEXT NOT NULL,
    priority INTEGER NOT NULL,
    payload TEXT NOT NULL,
    enqueued_at REAL NOT NULL,
    visible_at REAL NOT NULL,
    deliveries INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS inbox_next ON inbox (agent, priority DESC, id);
"""


@attrs.frozen
class InboxItem:
    """A message handed out: ``deliveries`` > 1 means it was handed out before and not marked processed."""

    message_id: str
    message: AgentMessage
    deliveries: int


@attrs.frozen
class InboxStatistics:
    """Counters: messages waiting (all agents), accepted, processed, handed out (redeliveries included)."""

    waiting: int
    sent: int
    processed: int
    handed_out: int
    registered: tuple[str, ...]


@attrs.frozen
class _Send:
    message: AgentMessage
    ack: Future[Any] = attrs.field(eq=False)


@attrs.frozen
class _Get:
    agent: str
    limit: int


@attrs.frozen
class _Processed:
    message_id: str


@attrs.frozen
class _Register:
    agent: str
    ref: ActorRef[Any] | None


@attrs.frozen
class _Redeliver:
    pass


@attrs.frozen
class _Stats:
    pass


class InboxRef(ServiceRef):
    """The address of a `DurableInbox`, with its requests as methods."""

    __slots__ = ()

    def send(self, message: AgentMessage | str | bytes, *, timeout: float | None = None) -> str:
        """Store `message` for its recipient; return its id once committed."""
        return self.send_nowait(message).get(timeout=timeout)

    def send_nowait(self, message: AgentMessage | str | bytes) -> Future[str]:
        """Store `message`; return a future of its id, settled once committed.

        Raises:
            ProtocolError: `message` is JSON that is not a valid `AgentMessage` (the field is named).
            TypeError: `message` is neither an `AgentMessage` nor JSON text.
            ValueError: the message has no recipient.
        """
        if isinstance(message, (str, bytes)):
            try:
                message = from_json(message)
            except ProtocolError as exc:
                # An edge: the refused text is recorded (with why), and the inbox serves on.
                self.actor_system.dead_letters.record(message, self, DeadLetterReason.REJECTED, exc)
                raise
        if not isinstance(message, AgentMessage):
            msg = f"a durable inbox stores AgentMessages (or their JSON), got {type(message).__name__} {message!r}"
            raise TypeError(msg)
        if message.recipient is None:
            msg = f"message {message.message_id} has no recipient, so no inbox to wait in; address it to an agent"
            raise ValueError(msg)
        ack: Future[str] = Future()
        try:
            self.tell(_Send(message, ack))
        except ActorDeadError:
            ack.set_exception()
        return ack

    def get_messages(self, agent: str, limit: int = 10) -> tuple[InboxItem, ...]:
        """Hand out up to `limit` of `agent`'s messages (priority, then FIFO), each leased for a while."""
        return cast("tuple[InboxItem, ...]", self.ask(_Get(agent, limit)))

    def mark_processed(self, message_id: str) -> None:
        """Retire a message for good."""
        self.ask(_Processed(message_id))

    def register(self, agent: str, ref: ActorRef[Any]) -> int:
        """Tell `ref` the backlog of `agent` in order, and each new message; return the backlog's size."""
        return cast("int", self.ask(_Register(agent, ref)))

    def unregister(self, agent: str) -> None:
        """Stop telling `agent`'s messages to its ref; they wait again."""
        self.ask(_Register(agent, None))

    def statistics(self) -> InboxStatistics:
        """Return a snapshot of the inbox's counters."""
        return cast("InboxStatistics", self.ask(_Stats()))


class DurableInbox(Service, ThreadActor):
    """The inbox actor (see the module docs).

    Args:
        path: the database file (created if missing).
        visibility_timeout: seconds a handed-out message stays leased before it is handed out again.
        now: where times come from (default `time.time`).
        synchronous: SQLite's ``PRAGMA synchronous`` (``"NORMAL"`` survives kill -9; ``"FULL"`` a power loss).
    """

    _troupe_ref_class: ClassVar[type[ActorRef[Any]]] = InboxRef

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        visibility_timeout: float = 30.0,
        now: Callable[[], float] = time.time,
        synchronous: Synchronous = "NORMAL",
    ) -> None:
        super().__init__()
        check_seconds("visibility_timeout", visibility_timeout, owner="DurableInbox")
        _check_path("DurableInbox", path)
        if not callable(now):
            msg = f"DurableInbox: now must be a callable returning seconds since the epoch, got {now!r}"
            raise TypeError(msg)
        self.visibility_timeout = visibility_timeout
        self.now = now
        self.db = _open(os.fspath(path), _SCHEMA, synchronous)
        self.pending: list[_Send] = []
        self.registered: dict[str, ActorRef[Any]] = {}
        self.sent = self.processed = self.handed_out = 0

    def on_start(self) -> None:
        """Arm the redelivery timer."""
        self.timers.start_periodic_timer("redeliver", _Redeliver(), self.visibility_timeout)

    def on_stop(self) -> None:
        """Commit the sends that wait (queued ones included) and close the database."""
        try:
            self.pending.extend(self.take_told(_Send))
            self._commit()
        finally:
            self.db.close()

    def handle(self, message: Any) -> Any:
        """Handle a send (group commit), a get, a mark, a registration, a redelivery tick or statistics."""
        if message.__class__ is _Send:
            self.pending.append(message)
            if not len(self.actor_inbox.queue):
                self._commit()
            return None
        self._commit()
        match message:
            case _Get(agent=agent, limit=limit):
                if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
                    msg = f"get_messages needs a limit >= 0, got {limit!r}"
                    raise ValueError(msg)
                return self._hand_out(agent, limit)
            case _Processed(message_id=message_id):
                if self.db.execute("DELETE FROM inbox WHERE message_id = ?", (message_id,)).rowcount == 0:
                    msg = f"no message {message_id!r} waits in {self}: never sent, or already processed"
                    raise UnknownMessageError(msg)
                self.processed += 1
                return None
            case _Register(agent=agent, ref=None):
                ref = self.registered.pop(agent, None)
                if ref is not None and ref not in self.registered.values():
                    self.unwatch(ref)
                return None
            case _Register(agent=agent, ref=ref):
                if not isinstance(ref, ActorRef):
                    msg = f"register needs a troupe ActorRef, got {ref!r}"
                    raise TypeError(msg)
                self.registered[agent] = ref
                self.watch(ref)
                return self._tell_backlog(agent)
            case _Redeliver():
                for agent in list(self.registered):
                    self._tell_backlog(agent)
                return None
            case _Stats():
                waiting = self.db.execute("SELECT COUNT(*) FROM inbox").fetchone()[0]
                return InboxStatistics(
                    waiting, self.sent, self.processed, self.handed_out, tuple(sorted(self.registered))
                )
            case Terminated(ref=gone):
                for agent in [a for a, r in self.registered.items() if r == gone]:
                    del self.registered[agent]
                return None
        return super().handle(message)

    def _commit(self) -> None:
        pending = self.pending
        if not pending:
            return
        self.pending = []
        now = self.now()
        rows = [
            (s.message.message_id, s.message.recipient, int(s.message.priority), to_json(s.message), now, now)
            for s in pending
        ]
        db = self.db
        try:
            db.execute("BEGIN IMMEDIATE")
            db.executemany(
                "INSERT INTO inbox (message_id, agent, priority, payload, enqueued_at, visible_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(message_id) DO NOTHING",
                rows,
            )
            db.execute("COMMIT")
        except Exception:
            if db.in_transaction:
                db.execute("ROLLBACK")
            for send in pending:
                send.ack.set_exception()
            raise
        self.sent += len(pending)
        for send in pending:
            send.ack.set(send.message.message_id)
        for agent in {s.message.recipient for s in pending if s.message.recipient in self.registered}:
            self._tell_backlog(agent)

    def _hand_out(self, agent: str, limit: int | None) -> tuple[InboxItem, ...]:
        now = self.now()
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            rows = db.execute(
                "SELECT id, message_id, payload, deliveries FROM inbox WHERE agent = ? AND visible_at <= ? "
                "ORDER BY priority DESC, id LIMIT ?",
                (agent, now, -1 if limit is None else limit),
            ).fetchall()
            db.executemany(
                "UPDATE inbox SET visible_at = ?, deliveries = deliveries + 1 WHERE id = ?",
                [(now + self.visibility_timeout, row[0]) for row in rows],
            )
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        self.handed_out += len(rows)
        return tuple(
            InboxItem(message_id, from_json(payload), deliveries + 1) for _, message_id, payload, deliveries in rows
        )

    def _tell_backlog(self, agent: str) -> int:
        ref = self.registered[agent]
        items = self._hand_out(agent, None)
        for item in items:
            try:
                ref.tell(item.message)
            except ActorDeadError:
                self.registered.pop(agent, None)  # its lease expires; it waits for the next registration
                break
        return len(items)
