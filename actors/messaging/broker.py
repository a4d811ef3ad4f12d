"""`MessageBroker`: topics with glob subscriptions, broadcast, subscription groups and multicast.

    broker = system.spawn(MessageBroker, history=history)   # history optional
    sub = broker.subscribe("tasks.*", worker_ref, agent="coder")
    broker.subscribe("tasks.**", print_it)                   # a plain callable
    broker.subscribe("tasks.*", pool_member, group="reviewers")
    broker.publish("tasks.review", message, sender=my_ref)   # -> deliveries made
    broker.multicast(["coder", other_ref], message)
    broker.unsubscribe(sub)

Delivery. A publication goes to every matching subscription (broadcast),
except that the subscriptions sharing a `group` name get one copy between
them, to each member in turn (they share the load). The sender never
receives its own publication (matched by its ref, or by agent id: the
`sender` given, else an `AgentMessage`'s ``sender``) unless it passes
``include_self=True``. A publication that no subscription takes is a dead
letter with reason ``NO_SUBSCRIBER``.

The hot path runs on the sender's thread (the router's design): the
broker's ref (`BrokerRef`) reads the current subscription table, an
immutable snapshot, without a lock, and appends the message straight to each
subscriber's mailbox. The broker actor itself handles only subscription
changes, statistics and death watch, in its mailbox, one at a time; it
replaces the table (under a lock) on every change. Routes per topic name are
cached on each table, so a topic's patterns are matched once per table.

Subscribers. An actor ref receives the message itself (or a `Published`
envelope naming the topic and sender, with ``envelope=True``). A plain
callable is run by a small actor the broker spawns for it (its child), so a
slow or raising callable delays and breaks no one: a callable that raises is
logged, counted (``failed``) and its message recorded as a ``HANDLER_FAILED``
dead letter; it stays subscribed. A coroutine function is refused
(`CoroutineSubscriberError`): subscribe an asyncio actor instead. A
subscriber actor that stops is removed (the broker watches it).

Buffers. Each subscription has a bounded buffer: the subscriber's mailbox,
counted before every hand-off (``capacity`` messages waiting, default 1000).
When it is full, policy ``"drop_newest"`` (the default) drops this message
for that subscriber, ``"fail"`` drops it too and raises
`SubscriberOverflowError` to the publisher once every other subscriber has
had it. Each drop is counted on the subscription and recorded as a
``MAILBOX_OVERFLOW`` dead letter. (``"drop_oldest"`` and ``"block"`` are the
subscriber's own mailbox policies: spawn it with `BoundedMailbox`.)

Membership. Every subscription that starts or ends is published on
`MEMBERSHIP_TOPIC` (``troupe.membership``) as `MemberJoined` / `MemberLeft`:
the seam a coordinator subscribes to. Nobody subscribed to it is no dead
letter.

History. With a `MessageHistory`, every publication is appended to stream
``topic:<name>`` (and each multicast hand-off to ``direct:<sender>:<target>``)
on the history's own thread, with group commit; `publish_acked` returns a
future settled once the entry has committed. A payload the history cannot
store (neither an `AgentMessage` nor a JSON value) is refused before any
delivery with `HistoryPayloadError`.

Thread contract: every `BrokerRef` method may be called from any thread but
the broker's own (the management ones ask it). Messages published by one
thread to one subscriber arrive in the order they were published.
"""

from __future__ import annotations

import inspect
import itertools
import json
import queue
import sys
import threading
from typing import TYPE_CHECKING, Any, ClassVar, Literal, cast

import attrs
from loguru import logger
from pykka import ActorDeadError

from actors._core import (
    MODES,
    TRACING,
    ActorRef,
    AuditRecord,
    CheckHealth,
    DeadLetterReason,
    Envelope,
    Future,
    HealthReport,
    HealthStatus,
    Receipt,
    Terminated,
    check_ref,
    trace_message,
)
from actors.errors import CoroutineSubscriberError, ProtocolError, SubscriberOverflowError, TroupeError
from actors.messaging._service import Service, ServiceRef
from actors.messaging.history import Append, EntryColumns, HistoryRef, check_payload
from actors.messaging.topics import TopicPattern, check_topic, compile_pattern
from actors.protocol import AgentMessage, from_json

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from actors._core import AuditChannel, Cell

__all__ = [
    "MEMBERSHIP_TOPIC",
    "BrokerRef",
    "BrokerStatistics",
    "BufferOverflow",
    "MemberJoined",
    "MemberLeft",
    "MessageBroker",
    "Published",
    "SubscriberStatistics",
    "Subscription",
]

MEMBERSHIP_TOPIC = "troupe.membership"
"""Where the broker publishes `MemberJoined` and `MemberLeft`."""

BufferOverflow = Literal["drop_newest", "fail"]

_ROUTE_CACHE_LIMIT = 10_000
_COLUMNS_KEPT = 10_000  # publications' entry columns kept for the history (`_Core.record_publication`)
# The classes `check_payload` passes on their class alone (a float must also be finite): a publication's
# payload is checked with one set look-up before the call.
_STORABLE = frozenset((AgentMessage, str, int, bool, type(None), list, tuple, dict))
"""Topic names whose routes a table keeps; past it the cache starts over (names built per message)."""


# -- what subscribers and clients see ------------------------------------------------------------------


@attrs.frozen
class Published:
    """What a subscriber that asked for envelopes receives: the message and where it came from."""

    topic: str
    message: Any
    sender: Any


@attrs.frozen
class Subscription:
    """A subscription's handle (what `BrokerRef.subscribe` returns).

    Attributes:
        id: unique within the broker.
        pattern: the topic pattern.
        ref: the subscriber, or for a callable the actor that runs it.
        group: its subscription group, or None.
        agent: the agent id it speaks for (multicast and self-delivery), or None.
    """

    id: int
    pattern: str
    ref: ActorRef[Any]
    group: str | None = None
    agent: str | None = None


@attrs.frozen
class MemberJoined:
    """Published on `MEMBERSHIP_TOPIC` when a subscription starts."""

    subscription: Subscription


@attrs.frozen
class MemberLeft:
    """Published on `MEMBERSHIP_TOPIC` when a subscription ends (``reason``: "unsubscribed" or "terminated")."""

    subscription: Subscription
    reason: str


@attrs.frozen
class SubscriberStatistics:
    """One subscription's counters.

    Attributes:
        queued: messages waiting in its buffer now.
        dropped: messages dropped because its buffer was full.
        failed: messages its callable raised on (0 for actor subscribers).
    """

    subscription: Subscription
    queued: int
    dropped: int
    failed: int


@attrs.frozen
class BrokerStatistics:
    """The broker's counters at one moment.

    Attributes:
        published: publications and multicasts accepted.
        delivered: hand-offs to subscribers' buffers.
        no_subscriber: publications nobody took (dead letters).
        dropped: hand-offs refused, by full buffers or stopped subscribers (dead letters).
        subscribers: each subscription's counters, by id.
    """

    published: int
    delivered: int
    no_subscriber: int
    dropped: int
    subscribers: tuple[SubscriberStatistics, ...]


# -- the broker's requests ---------------------------------------------------------------------------


@attrs.frozen
class _Subscribe:
    pattern: TopicPattern
    subscriber: Any
    group: str | None
    agent: str | None
    capacity: int
    overflow: BufferOverflow
    envelope: bool


@attrs.frozen
class _Unsubscribe:
    id: int


@attrs.frozen
class _List:
    pass


@attrs.frozen
class _Statistics:
    pass


@attrs.frozen
class Publish:
    """Publish through the broker's mailbox (for clients that can only send messages); asked, the reply is the count."""

    topic: str
    message: Any
    sender: Any = None
    include_self: bool = False


_new = object.__new__
"""An instance without its `__init__` call (the sampled publication's hot path)."""


# -- outlets: one per subscription -----------------------------------------------------------------


class _Outlet:
    """A subscription as the senders' threads see it. Read-only but for the counters."""

    __slots__ = (
        "audit",
        "capacity",
        "cell",
        "drop_lock",
        "dropped",
        "envelope",
        "failed",
        "lines",
        "overflow",
        "pattern",
        "plain",
        "sub",
        "who",
    )

    def __init__(
        self,
        sub: Subscription,
        pattern: TopicPattern,
        capacity: int,
        overflow: str,
        *,
        envelope: bool,
        audit: AuditChannel,
    ) -> None:
        self.sub = sub
        self.audit = audit  # the broker's system's: where its receipts queue their lines (`_Receipted`)
        self.pattern = pattern
        self.cell: Cell = sub.ref.actor_inbox
        self.plain = type(sub.ref) is ActorRef
        self.capacity = capacity
        self.overflow = overflow
        self.envelope = envelope
        # Invariant: dropped counts every hand-off refused for a full buffer; taken under drop_lock (rare path).
        self.drop_lock = threading.Lock()
        self.dropped = 0
        # Written only by the callable's own actor (one writer).
        self.failed = 0
        # The audit writer's thread only: the encoded ``subscriber`` and ``subscription`` fields
        # of this outlet's message_audit events (`_who`), made at its first one; and the constant
        # text of its successful ``processed`` lines (`_processed_ok`), by publication kind.
        self.who: str | None = None
        self.lines: dict[Any, Any] = {}

    def offer_audited(self, item: Any, sampled: _Sampled) -> int:
        """`offer` for a sampled publication: a tell whose receipt reports ``processed`` (see `_Sampled`)."""
        cell = self.cell
        if len(cell.queue) >= self.capacity or not cell.alive:
            return self.offer(item)  # refused as any: dropped and dead-lettered there
        # The first hand-off's receipt is the publication's record; its line is written when it is settled.
        delivery: _Receipted
        if sampled._outlet is None:  # noqa: SLF001 - the publication's own receipt
            delivery = sampled
            sampled._outlet = self  # noqa: SLF001
        else:
            delivery = _Delivery(sampled, self)
        try:
            if self.plain:
                # `ActorRef._post_tell` inlined (its liveness check made above), as `offer` inlines
                # `tell`: the envelope queued and the cell scheduled as `Cell.put` does, in every mode;
                # a subscriber stopping meanwhile settles the receipt as it drains its mailbox.
                # Two calls fewer; with the leaner `_Sampled`, the publisher's part of a sampled
                # hand-off went 9.1k -> 6.7k instructions (callgrind, subscriber held, writer asleep).
                envelope = _new(Envelope)  # `Envelope(message, delivery)` without its `__init__` frame
                envelope.message = trace_message(cell, item) if TRACING else item
                envelope.reply_to = delivery
                cell.queue.append(envelope)
                if cell.sched.acquire(False):
                    cell.executor.submit(cell)
            else:
                self.sub.ref._post_tell(item, delivery)  # noqa: SLF001 - a tell whose handling is reported
        except ActorDeadError as exc:  # stopped since the check: the ref dead-lettered it
            delivery.set_exception((type(exc), exc, None))  # so `processed` says it was not
            return 0
        except TroupeError as exc:  # its own bounded mailbox, policy "fail", refused it: as `offer` counts it
            with self.drop_lock:
                self.dropped += 1
            cell.system.dead_letters.record(item, self.sub.ref, DeadLetterReason.MAILBOX_OVERFLOW)
            delivery.set_exception((type(exc), exc, None))
            return 0
        return 1

    def offer(self, item: Any) -> int:
        """Hand `item` to the subscriber: 1 if it took it, 0 if its buffer was full or it has stopped."""
        cell = self.cell
        if len(cell.queue) >= self.capacity:
            with self.drop_lock:
                self.dropped += 1
            cell.system.dead_letters.record(item, self.sub.ref, DeadLetterReason.MAILBOX_OVERFLOW)
            return 0
        if self.plain:
            if not cell.alive:
                cell.system.dead_letters.record(item, self.sub.ref, DeadLetterReason.RECIPIENT_STOPPED)
                return 0
            try:
                # With tracing on somewhere, with the trace context it was published under (as `tell` sends it).
                cell.queue.append(trace_message(cell, item) if TRACING else item)
            except TroupeError:  # its own bounded mailbox, policy "fail", refused it
                with self.drop_lock:
                    self.dropped += 1
                cell.system.dead_letters.record(item, self.sub.ref, DeadLetterReason.MAILBOX_OVERFLOW)
                return 0
            if cell.sched.acquire(False):
                cell.executor.submit(cell)
            return 1
        try:
            self.sub.ref.tell(item)
        except (ActorDeadError, TroupeError):  # dead-lettered by the ref / the subscriber's own bounded mailbox
            return 0
        return 1


@attrs.frozen
class _Route:
    singles: tuple[_Outlet, ...]
    groups: tuple[tuple[str, tuple[_Outlet, ...]], ...]


_EMPTY_ROUTE = _Route((), ())


class _Table:
    """One immutable version of the subscriptions, with its cache of routes per topic."""

    __slots__ = ("agents", "cache", "literal", "outlets", "wild")

    def __init__(
        self,
        outlets: tuple[_Outlet, ...],
        literal: dict[str, tuple[_Outlet, ...]],
        wild: tuple[_Outlet, ...],
        agents: dict[str, _Outlet],
    ) -> None:
        # Invariant: outlets in subscription-id order (ids only grow), split into literal and wild.
        self.outlets = outlets
        self.literal = literal
        self.wild = wild
        self.agents = agents
        # Single dict operations only (atomic): senders fill it concurrently.
        self.cache: dict[str, _Route] = {}

    @classmethod
    def build(cls, outlets: tuple[_Outlet, ...]) -> _Table:
        """Build a table from scratch (after removals): O(n) in Python."""
        literal: dict[str, list[_Outlet]] = {}
        agents: dict[str, _Outlet] = {}
        for outlet in outlets:
            if outlet.pattern.literal:
                literal.setdefault(outlet.pattern.pattern, []).append(outlet)
            if outlet.sub.agent is not None:
                agents.setdefault(outlet.sub.agent, outlet)
        wild = tuple(o for o in outlets if not o.pattern.literal)
        return cls(outlets, {topic: tuple(found) for topic, found in literal.items()}, wild, agents)

    def added(self, outlet: _Outlet) -> _Table:
        """Return this table plus `outlet` (the newest id): copies at C speed, so 10,000 subscribes stay cheap."""
        literal, wild, agents = self.literal, self.wild, self.agents
        if outlet.pattern.literal:
            literal = dict(literal)
            literal[outlet.pattern.pattern] = (*literal.get(outlet.pattern.pattern, ()), outlet)
        else:
            wild = (*wild, outlet)
        agent = outlet.sub.agent
        if agent is not None and agent not in agents:
            agents = dict(agents)
            agents[agent] = outlet
        return _Table((*self.outlets, outlet), literal, wild, agents)

    def route(self, topic: str) -> _Route:
        route = self.cache.get(topic)
        if route is not None:
            return route
        matched = [*self.literal.get(topic, ()), *(o for o in self.wild if o.pattern.matches(topic))]
        matched.sort(key=lambda o: o.sub.id)
        singles = tuple(o for o in matched if o.sub.group is None)
        groups: dict[str, list[_Outlet]] = {}
        for outlet in matched:
            if outlet.sub.group is not None:
                groups.setdefault(outlet.sub.group, []).append(outlet)
        route = _Route(singles, tuple((name, tuple(members)) for name, members in groups.items()))
        if not matched:
            route = _EMPTY_ROUTE
        if len(self.cache) >= _ROUTE_CACHE_LIMIT:
            self.cache = {}
        self.cache[topic] = route
        return route


_quote = json.encoder.encode_basestring  # a str as JSON text, as the audit writer's encoder writes it


def _json(value: object) -> str:
    """`value` (a JSON scalar) as JSON text: what the audit writer's encoder would make of it."""
    if value is None:
        return "null"
    if isinstance(value, str):
        return _quote(value)
    return json.dumps(value, ensure_ascii=False, default=str)


_FIELDS_KEPT = 4096
"""Entries kept at most in `_FIELDS` (it starts over past that: many topics or publishers)."""

_FIELDS: dict[Any, Any] = {}
"""The audit writer's thread only: encoded common fields (`_Sampled.fields`) by topic, message class and sender."""


def _who(outlet: _Outlet) -> str:
    """The ``subscriber`` and ``subscription`` members of `outlet`, encoded once (the audit writer's thread)."""
    who = outlet.who
    if who is None:
        sub = outlet.sub
        name = sub.agent if sub.agent is not None else getattr(sub.ref, "actor_name", None)
        subscriber = name if name is not None else sub.ref.actor_urn
        who = outlet.who = f'"subscriber":{_json(subscriber)},"subscription":{_json(sub.id)}'
    return who


def _common(topic: str, message: Any, sender: Any) -> tuple[str, str]:
    """The members every line of a publication has, as ``(before, after)`` an `AgentMessage`'s encoded id.

    For any other message the id is ``null`` and all of it is in ``before``
    (``after`` is empty). Cached in `_FIELDS` by topic, message class and
    sender (an `AgentMessage`'s sender, recipient and type); the audit
    writer's thread only.
    """
    if message.__class__ is AgentMessage:
        key: Any = (topic, message.sender, message.recipient, message.type)
        parts = _FIELDS.get(key)
        if parts is None:
            parts = (
                f'"topic":{_json(topic)},"message_id":',
                (
                    f',"from_agent":{_json(message.sender)},"to_agent":{_json(message.recipient)},'
                    f'"message_type":{_json(str(message.type))}'
                ),
            )
            _remember(key, parts)
        return parts
    key = (topic, message.__class__, sender if isinstance(sender, str) else None)
    parts = _FIELDS.get(key)
    if parts is None:
        parts = (
            (
                f'"topic":{_json(topic)},"message_id":null,"from_agent":{_json(key[2])},"to_agent":null,'
                f'"message_type":{_json(type(message).__name__)}'
            ),
            "",
        )
        _remember(key, parts)
    return parts


def _processed_ok(outlet: _Outlet, sampled: _Sampled, offered: int, head: str, reading: float) -> str:
    """The ``processed`` line of a hand-off through `outlet` whose handler returned (the writer's thread).

    A line is its head, then text that is the same for every such hand-off
    of the publications with the same topic, message class and sender (an
    `AgentMessage`'s sender, recipient and type) and the same counts, then
    the latency (and an `AgentMessage`'s id in the middle). That text is
    made once per kind and outlet and kept in ``outlet.lines``, so a line
    costs a key, a look-up and one f-string. Measured (the writer's drain of
    2,500 settled lines, file writes skipped): 13.0k -> 10.1k instructions a
    line (callgrind), thread CPU 1.52-1.58 -> 1.24-1.29 µs (best of 15).
    """
    message = sampled.message
    latency = (reading - sampled.sent) * 1000.0
    if message.__class__ is AgentMessage:
        key: Any = (sampled.topic, message.sender, message.recipient, message.type, sampled.delivered, offered)
        parts = outlet.lines.get(key)
        if parts is None:
            parts = _keep_processed(outlet, key, sampled, offered)
        return f"{head}{parts[0]}{_json(message.message_id)}{parts[1]}{latency:.3f}}}\n"
    sender = sampled.sender
    key = (sampled.topic, message.__class__, sender if isinstance(sender, str) else None, sampled.delivered, offered)
    text = outlet.lines.get(key)
    if text is None:
        text = _keep_processed(outlet, key, sampled, offered)
    return f"{head}{text}{latency:.3f}}}\n"


def _keep_processed(outlet: _Outlet, key: Any, sampled: _Sampled, offered: int) -> Any:
    """Make the constant text of `outlet`'s successful ``processed`` lines of `key`'s kind, and keep it."""
    before, after = _common(sampled.topic, sampled.message, sampled.sender)
    delivered = sampled.delivered
    tail = (
        f'{after},"delivered":{delivered},"dropped":{offered - delivered},{outlet.who or _who(outlet)},'
        '"success":true,"error_type":null,"latency_ms":'
    )
    if sampled.message.__class__ is AgentMessage:  # its id goes between the two
        text: Any = (f',"event":"processed",{before}', tail)
    else:
        text = f',"event":"processed",{before}{tail}'
    lines = outlet.lines
    if len(lines) >= _FIELDS_KEPT:
        lines.clear()
    lines[key] = text
    return text


class _Receipted(Receipt[Any], AuditRecord):
    """The receipt of one sampled hand-off: settling it queues itself as the hand-off's one lifecycle line.

    ``processed`` folds the hand-off's sent / received / processed into one
    line, written once it is over: the subscriber's handler returned
    (``success`` true) or raised, or the message became a dead letter, or
    the hand-off was refused (``success`` false, ``error_type``); with
    ``latency_ms`` from the publication (sent, and received: the hand-off
    into the mailbox happens in the publish) to processed, on the system
    clock (the audit sink's readings), and the publication's ``delivered``
    and ``dropped``. The subscriber's side queues it, after the handler;
    the publisher queues a line only for a hand-off its mailbox refused
    at once (`_Outlet.offer_audited`) or a publication with no hand-off.

    Nobody waits on this receipt: `set` and `set_exception` only queue the
    event, without the future's value, waiters or callbacks
    (``Future.__init__`` is not run either; the one field the runtime reads
    of a reply future, ``_done``, is kept).

    Thread contract: whichever thread settles it (the subscriber's turn,
    its stop, the dead letters, or the publisher when the hand-off fails)
    queues the line (a failure's as a `_Failed`), which the audit writer's
    one thread renders; the line waits (`render` says
    not ready) until the publisher has finished the fan-out and set the
    publication's counts (`_Sampled.offered`).
    """

    __slots__ = ("_outlet",)

    _outlet: _Outlet | None  # None only while a publication's record has made no hand-off; set before it is settled

    def __repr__(self) -> str:
        outlet = self._outlet
        where = f" for subscription #{outlet.sub.id}" if outlet is not None else ""
        return f"<message_audit receipt {'done' if self._done else 'pending'}{where}>"

    def set(self, value: Any = None) -> None:  # noqa: ARG002 - nobody reads a delivery's value
        """Settle as handled (the cell calls it): queue ``processed``."""
        if self._done:
            raise queue.Full
        self._done = True
        # The sink read first, then called: ``audit.emit(...)`` of a slot holding a function takes
        # LOAD_METHOD's generic path on CPython 3.11; this is a specialized slot read and a call.
        emit = self._outlet.audit.emit  # type: ignore[union-attr]
        emit("message_audit", self)

    def set_exception(self, exc_info: Any = None) -> None:
        """Settle with the handler's (or the dead letter's) error: queue ``processed`` with ``success`` false."""
        if self._done:
            raise queue.Full
        self._done = True
        if exc_info is None:
            exc_info = sys.exc_info()
        exc_type, exc_value = exc_info[0], exc_info[1]
        error_type = (exc_type if exc_type is not None else type(exc_value)).__name__
        self._outlet.audit.emit("message_audit", _Failed(self, error_type))  # type: ignore[union-attr]

    def publication(self) -> _Sampled:
        """The sampled publication this receipt is a hand-off of."""
        raise NotImplementedError

    def processed(self, head: str, reading: float, out: list[str], error_type: str | None = None) -> bool:
        """Write ``processed`` (the writer's thread); False until the publisher has finished the fan-out."""
        sampled = self.publication()
        offered = sampled.offered
        if offered < 0:
            return False
        outlet = self._outlet
        assert outlet is not None  # noqa: S101 - a receipt is settled only after its hand-off was made
        if error_type is None:
            out.append(_processed_ok(outlet, sampled, offered, head, reading))
            return True
        delivered = sampled.delivered
        out.append(
            f'{head},"event":"processed",{sampled.fields()},"delivered":{delivered},'
            f'"dropped":{offered - delivered},{outlet.who or _who(outlet)},"success":false,'
            f'"error_type":{_json(error_type)},"latency_ms":{(reading - sampled.sent) * 1000.0:.3f}}}\n'
        )
        return True


class _Failed(AuditRecord):
    """A failed hand-off's ``processed`` line (`_Receipted.set_exception`): the receipt and what went wrong."""

    __slots__ = ("error_type", "receipt")

    def __init__(self, receipt: _Receipted, error_type: str) -> None:
        self.receipt = receipt
        self.error_type = error_type

    def render(self, head: str, reading: float, out: list[str]) -> bool:
        """Write the ``processed`` line with ``success`` false (the writer's thread)."""
        return self.receipt.processed(head, reading, out, self.error_type)


class _Sampled(_Receipted):
    """One sampled publication, and its first hand-off's receipt (most publications have one subscriber).

    The publisher makes it before the fan-out (reading the audit sink's
    clock: the publication's time) and queues nothing: the first hand-off
    uses it as its receipt, every further one a `_Delivery`, and each
    queues its own ``processed`` line when settled (`_Receipted`). The
    publisher sets `offered` and `delivered` when the fan-out is done (in a
    ``finally``), and only if no hand-off was made (no subscriber, every
    buffer full, every subscriber stopped) queues this record itself, as
    the publication's ``sent`` line (``delivered`` 0). Nothing is built or
    encoded on the publisher's or the subscriber's thread: the fields
    common to a publication's lines are encoded by the writer, from parts
    cached by topic, message class and sender (`_FIELDS`; an `AgentMessage`'s id encoded each time). It reads
    the topic, the message's class and an `AgentMessage`'s (frozen)
    attributes, and the sender, none of which change after the publish.
    """

    __slots__ = ("delivered", "message", "offered", "sender", "sent", "topic")

    # Made by the publisher (`_Core.fanout`) without an `__init__` call, every field set there:
    topic: str
    message: Any
    sender: Any
    sent: float  # the audit sink's clock reading of the publication
    offered: int  # -1 until the fan-out is done (the publisher's thread; then read by the writer)
    delivered: int  # set with `offered` when the fan-out is done, read only once `offered` is

    def fields(self) -> str:
        """The fields every line of this publication has, as JSON members ``"topic":...`` (the writer's thread)."""
        message = self.message
        before, after = _common(self.topic, message, self.sender)
        return f"{before}{_json(message.message_id)}{after}" if message.__class__ is AgentMessage else before

    def publication(self) -> _Sampled:
        """Itself: the first hand-off's receipt."""
        return self

    def render(self, head: str, reading: float, out: list[str]) -> bool:
        """Write the first hand-off's ``processed``, or (no hand-off made) the publication's ``sent``."""
        offered = self.offered
        if self._done:  # settled as handled (a failure comes as a `_Failed`): `processed`, inlined
            if offered < 0:
                return False
            outlet: _Outlet = self._outlet  # type: ignore[assignment]
            message = self.message
            if message.__class__ is AgentMessage:
                out.append(_processed_ok(outlet, self, offered, head, reading))
                return True
            # `_processed_ok` of any other message, inlined: one Python call fewer a line.
            sender = self.sender
            if sender is not None and not isinstance(sender, str):  # None (most) skips the isinstance call
                sender = None
            key = (self.topic, message.__class__, sender, self.delivered, offered)
            text = outlet.lines.get(key)
            if text is None:
                text = _keep_processed(outlet, key, self, offered)
            out.append(f"{head}{text}{(reading - self.sent) * 1000.0:.3f}}}\n")
            return True
        out.append(f'{head},"event":"sent",{self.fields()},"delivered":0,"dropped":{offered}}}\n')
        return True


def _remember(key: Any, value: Any) -> None:
    if len(_FIELDS) >= _FIELDS_KEPT:
        _FIELDS.clear()
    _FIELDS[key] = value


class _Delivery(_Receipted):
    """The receipt of a sampled publication's second (third, ...) hand-off (`_Receipted`, `_Sampled`)."""

    __slots__ = ("_sampled",)

    def __init__(self, sampled: _Sampled, outlet: _Outlet) -> None:
        self._done = False
        self._sampled = sampled
        self._outlet = outlet

    def publication(self) -> _Sampled:
        """The publication it is a hand-off of."""
        return self._sampled

    def render(self, head: str, reading: float, out: list[str]) -> bool:
        """Write ``processed`` (the writer's thread, once the publication's fan-out is done)."""
        return self.processed(head, reading, out)


class _Core:
    """What the broker's ref and the broker actor share."""

    def __init__(self, ref: BrokerRef, history: ActorRef[Any] | None) -> None:
        self.ref = ref
        self.history = history
        # A `MessageHistory`'s ref takes an entry without an `Append` (its journal, on this thread); any
        # other ref is told Appends.
        self.journal = history.record if isinstance(history, HistoryRef) else None
        # Invariant: topic (no agent) or (topic, agent) -> the columns of its publications' entries, one
        # tuple each, so that the history finds a storm's run by identity; at most _COLUMNS_KEPT of them.
        self.columns: dict[Any, EntryColumns] = {}
        self.dead_letters = ref.actor_system.dead_letters
        self.audit = ref.actor_system.audit
        # The audit sink's clock (`AuditLog`'s): a sampled publication's reading, for its lines' latency.
        clock = ref.actor_system.clock
        self.now: Callable[[], float] = clock.now
        # Invariant: replaced, never mutated, and only by the broker actor's thread (under lock).
        self.table = _Table.build(())
        self.lock = threading.Lock()
        self.turns: dict[str, Callable[[], int]] = {}
        # Counters, under lock.
        self.published = 0
        self.delivered = 0
        self.no_subscriber = 0
        self.dropped_total = 0

    def turn(self, group: str) -> int:
        counter = self.turns.get(group)
        if counter is None:
            counter = self.turns.setdefault(group, itertools.count().__next__)
        return counter()

    def fanout(self, topic: str, message: Any, sender: Any, *, include_self: bool, quiet: bool = False) -> int:
        """Deliver one publication on this (the sender's) thread; return the hand-offs made."""
        route = self.table.route(topic)
        skip_cell = skip_agent = None
        if not include_self:
            if isinstance(sender, str):
                skip_agent = sender
            elif sender is not None:
                skip_cell = getattr(sender, "_cell", None)
            if skip_agent is None and message.__class__ is AgentMessage:
                skip_agent = message.sender
        envelope: Published | None = None
        delivered = offered = 0
        refused: list[Subscription] | None = None
        audit = self.audit
        # message_audit on and this publication sampled: each hand-off writes its one line when settled.
        sampled: _Sampled | None = None
        if audit.message_audit and not quiet and next(audit.sampling):
            # `_Sampled.__init__` inlined: on CPython 3.11 calling a class with an `__init__` goes
            # through type_call and a second frame (~1.2k instructions of the publisher's ~10k extra
            # for a sampled publication, callgrind, with the pykka Envelope made the same way).
            sampled = _new(_Sampled)
            sampled._done = False  # noqa: SLF001 - a receipt not settled yet
            sampled._outlet = None  # noqa: SLF001 - the first hand-off's, once made
            sampled.topic = topic
            sampled.message = message
            sampled.sender = sender
            sampled.sent = self.now()
            sampled.offered = -1
        try:
            for outlet in route.singles:
                if outlet.cell is skip_cell or (skip_agent is not None and outlet.sub.agent == skip_agent):
                    continue
                offered += 1
                if outlet.envelope:
                    if envelope is None:
                        envelope = Published(topic, message, sender)
                    item: Any = envelope
                else:
                    item = message
                took = outlet.offer(item) if sampled is None else outlet.offer_audited(item, sampled)
                delivered += took
                if not took and outlet.overflow == "fail":
                    refused = [*(refused or ()), outlet.sub]
            for name, members in route.groups:
                eligible = [
                    o
                    for o in members
                    if o.cell is not skip_cell and (skip_agent is None or o.sub.agent != skip_agent) and o.cell.alive
                ]
                if not eligible:
                    continue
                offered += 1
                start = self.turn(name)
                # The member whose turn it is; if its buffer is full, the next one with room.
                for step in range(len(eligible)):
                    outlet = eligible[(start + step) % len(eligible)]
                    if len(outlet.cell.queue) < outlet.capacity or step == len(eligible) - 1:
                        item = envelope or Published(topic, message, sender) if outlet.envelope else message
                        took = outlet.offer(item) if sampled is None else outlet.offer_audited(item, sampled)
                        delivered += took
                        if not took and outlet.overflow == "fail":
                            refused = [*(refused or ()), outlet.sub]
                        break
        finally:
            if sampled is not None:  # the writer waits for these (`_Receipted.processed`)
                sampled.delivered = delivered
                sampled.offered = offered
                if sampled._outlet is None:  # noqa: SLF001 - no hand-off made: the publication's `sent` line
                    audit.emit("message_audit", sampled)
        if quiet:  # the broker's own membership events: not counted, nobody listening is fine
            return delivered
        with self.lock:
            self.published += 1
            self.delivered += delivered
            self.dropped_total += offered - delivered
            if not offered:
                self.no_subscriber += 1
        if not offered:
            self.dead_letters.record(message, self.ref, DeadLetterReason.NO_SUBSCRIBER)
        if refused:
            names = ", ".join(f"#{s.id} {s.ref} ({s.pattern!r})" for s in refused)
            msg = (
                f"publication on {topic!r} was refused by full subscriber buffer(s) {names}; the other subscribers "
                "got it and the refused copies are dead letters; raise their capacity, or use overflow='drop_newest'"
            )
            raise SubscriberOverflowError(msg)
        return delivered

    def record_publication(self, topic: str, message: Any, sender: Any) -> None:
        """Tell the history a publication on `topic` (on the sender's thread): `record`'s path, cheaper.

        One dict look-up for the entry's columns and one journal append,
        where `record` builds the stream's name and an `Append` each time.
        """
        journal = self.journal
        if journal is None:
            self.record(f"topic:{topic}", topic, message, sender, None)
            return
        if sender is None and message.__class__ is not AgentMessage:
            key: Any = topic
            agent = None
        else:
            agent = _agent_of(sender, message)
            key = topic if agent is None else (topic, agent)
        columns = self.columns.get(key)
        if columns is None:
            if len(self.columns) >= _COLUMNS_KEPT:
                self.columns = {}  # many topics or publishers: start over rather than grow without bound
            columns = self.columns[key] = (f"topic:{topic}", agent, None, topic, None, None)
        try:  # noqa: SIM105 - contextlib.suppress costs ~0.3 us a publication
            journal(columns, message)
        except ActorDeadError:
            pass  # the history has stopped: the entry is a dead letter (the ref recorded it); delivery goes on

    def record(
        self, stream: str, topic: str | None, message: Any, sender: Any, recipient: str | None, *, acked: bool = False
    ) -> Future[Any] | None:
        """Tell the history one entry (on the sender's thread); with `acked`, return a future of its commit."""
        ack: Future[Any] | None = Future() if acked else None
        history = self.history
        assert history is not None  # noqa: S101 - record is called only when a history is set
        try:
            history.tell(Append(stream, message, _agent_of(sender, message), recipient, topic, None, None, ack))
        except ActorDeadError:
            # The history has stopped: the entry is a dead letter (the ref recorded it); delivery goes on,
            # and an acknowledged publication fails.
            if ack is not None:
                ack.set_exception()
        return ack


def _agent_of(sender: Any, message: Any) -> str | None:
    if isinstance(sender, str):
        return sender
    if message.__class__ is AgentMessage:
        return message.sender
    if sender is not None:
        name = getattr(sender, "actor_name", None)
        return name if name is not None else str(sender)
    return None


# -- the ref ----------------------------------------------------------------------------------------------


class BrokerRef(ServiceRef):
    """The address of a `MessageBroker`: publishing runs on the caller's thread (see the module docs)."""

    __slots__ = ("_core",)

    def __init__(self, cell: Cell) -> None:
        super().__init__(cell)
        # Installed by the broker's constructor (which runs before spawn returns).
        self._core: _Core | None = None

    def _live_core(self, message: Any) -> _Core:
        core = self._core
        if core is None or not self._cell.alive:
            self._dead(message)
        assert core is not None  # noqa: S101 - _dead raised otherwise
        return core

    def publish(
        self, topic: str, message: Any, *, sender: Any = None, include_self: bool = False, if_subscribed: bool = False
    ) -> int:
        """Publish `message` on `topic`; return how many subscribers' buffers took it.

        `sender` is the publisher's ref or agent id (default: an `AgentMessage`'s ``sender``).
        With `if_subscribed`, nobody subscribed is no dead letter (events nobody need hear).

        Raises:
            TopicError: `topic` is empty or malformed.
            HistoryPayloadError: the history is on and cannot store `message`.
            SubscriberOverflowError: a subscriber with overflow policy ``"fail"`` was full.
            ActorDeadError: the broker has stopped.
        """
        core = self._live_core(message)
        table = core.table
        if topic.__class__ is not str or topic not in table.cache:
            check_topic(topic)
        if core.history is not None:
            if message.__class__ not in _STORABLE:
                check_payload(message)
            core.record_publication(topic, message, sender)
        return core.fanout(topic, message, sender, include_self=include_self, quiet=if_subscribed)

    def publish_json(self, topic: str, text: str | bytes, *, sender: Any = None, include_self: bool = False) -> int:
        """Publish an `AgentMessage` given in its JSON wire form (an edge); return the deliveries made.

        Raises:
            ProtocolError: `text` is not a valid message of a supported version (the field is named);
                the text is recorded as a ``REJECTED`` dead letter and the broker serves on.
        """
        try:
            message = from_json(text)
        except ProtocolError as exc:
            self.actor_system.dead_letters.record(text, self, DeadLetterReason.REJECTED, exc)
            raise
        return self.publish(topic, message, sender=sender, include_self=include_self)

    def publish_acked(self, topic: str, message: Any, *, sender: Any = None, include_self: bool = False) -> Future[int]:
        """Publish as `publish` does; return a future of the count, settled once the history has committed it.

        Raises:
            TypeError: the broker has no history.
        """
        core = self._live_core(message)
        if core.history is None:
            msg = f"{self} has no history, so nothing can acknowledge a publication; spawn it with history=..."
            raise TypeError(msg)
        check_topic(topic)
        check_payload(message)
        committed = core.record(f"topic:{topic}", topic, message, sender, None, acked=True)
        assert committed is not None  # noqa: S101 - acked=True returns the future
        count = core.fanout(topic, message, sender, include_self=include_self)
        result: Future[int] = Future()

        def settle(done: Any) -> None:
            try:
                done.get(timeout=0)
            except Exception:  # noqa: BLE001 - the commit's error goes to the future
                result.set_exception()
            else:
                result.set(count)

        committed.add_done_callback(settle)
        return result

    def multicast(self, targets: Iterable[str | ActorRef[Any]], message: Any, *, sender: Any = None) -> int:
        """Send `message` to each target (an agent id, found among the subscriptions, or an actor ref).

        Returns the hand-offs made; an agent id nobody subscribed as is a ``NO_SUBSCRIBER`` dead letter.
        Each target gets one copy, through its subscription's buffer when it has one.
        """
        core = self._live_core(message)
        if core.history is not None:
            check_payload(message)
        table = core.table
        by_cell = {o.cell: o for o in table.outlets}
        delivered = 0
        sender_agent = _agent_of(sender, message)
        seen: set[object] = set()
        for target in targets:
            if isinstance(target, str):
                outlet = table.agents.get(target)
                if outlet is None:
                    with core.lock:
                        core.no_subscriber += 1
                    core.dead_letters.record(message, self, DeadLetterReason.NO_SUBSCRIBER)
                    continue
                key: object = outlet.cell
                name = target
            else:
                cell = getattr(target, "_cell", None)
                if cell is None:
                    msg = f"a multicast target must be an agent id (str) or an ActorRef, got {target!r}"
                    raise TypeError(msg)
                outlet = by_cell.get(cell)
                key = cell
                name = outlet.sub.agent if outlet is not None and outlet.sub.agent else str(target)
            if key in seen:
                continue
            seen.add(key)
            if core.history is not None:
                core.record(f"direct:{sender_agent}:{name}", None, message, sender, name)
            if outlet is not None:
                delivered += outlet.offer(message)
            else:
                try:
                    target.tell(message)  # type: ignore[union-attr]
                    delivered += 1
                except (ActorDeadError, TroupeError):
                    pass
        with core.lock:
            core.published += 1
            core.delivered += delivered
        return delivered

    def subscribe(
        self,
        pattern: str,
        subscriber: ActorRef[Any] | Callable[[Any], object],
        *,
        group: str | None = None,
        agent: str | None = None,
        capacity: int = 1000,
        overflow: BufferOverflow = "drop_newest",
        envelope: bool = False,
    ) -> Subscription:
        """Subscribe an actor ref or a plain callable to topics matching `pattern` (see the module docs).

        Raises:
            TopicError: `pattern` is malformed.
            CoroutineSubscriberError: `subscriber` is a coroutine function.
            TypeError / ValueError: any other argument is of the wrong kind.
        """
        compiled = compile_pattern(pattern)
        _check_subscriber(subscriber)
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            msg = f"a subscriber's buffer capacity must be an int >= 1, got {capacity!r}"
            raise ValueError(msg)
        if overflow not in ("drop_newest", "fail"):
            msg = (
                f"overflow must be 'drop_newest' or 'fail', got {overflow!r}; for 'drop_oldest' or 'block', "
                "spawn the subscriber with BoundedMailbox(capacity, overflow=...)"
            )
            raise ValueError(msg)
        for what, value in (("group", group), ("agent", agent)):
            if value is not None and (not isinstance(value, str) or not value):
                msg = f"{what} must be a non-empty str or None, got {value!r}"
                raise TypeError(msg)
        request = _Subscribe(compiled, subscriber, group, agent, capacity, overflow, envelope)
        return cast("Subscription", self.ask(request))

    def unsubscribe(self, subscription: Subscription | int) -> bool:
        """End a subscription; return whether it was one. Messages already in its buffer stay there."""
        sub_id = subscription.id if isinstance(subscription, Subscription) else subscription
        return cast("bool", self.ask(_Unsubscribe(sub_id)))

    def subscriptions(self) -> tuple[Subscription, ...]:
        """Return the current subscriptions, by id."""
        return cast("tuple[Subscription, ...]", self.ask(_List()))

    def statistics(self) -> BrokerStatistics:
        """Return a snapshot of the broker's counters."""
        return cast("BrokerStatistics", self.ask(_Statistics()))


def _check_subscriber(subscriber: object) -> None:
    if isinstance(subscriber, ActorRef):
        return
    if inspect.iscoroutinefunction(subscriber) or inspect.iscoroutinefunction(getattr(subscriber, "__call__", None)):  # noqa: B004
        msg = (
            f"subscriber {subscriber!r} is a coroutine function, which nothing would await; subscribe a plain "
            "function, or an actor (an asyncio actor with an async on_receive runs coroutines)"
        )
        raise CoroutineSubscriberError(msg)
    if not callable(subscriber):
        msg = f"a subscriber must be a troupe ActorRef or a plain callable, got {subscriber!r}"
        raise TypeError(msg)


# -- the actors ------------------------------------------------------------------------------------------


class _CallbackSubscriber(Service):
    """Runs one callable subscriber, one message at a time, on its own turns."""

    def __init__(self, function: Callable[[Any], object]) -> None:
        super().__init__()
        self.function = function
        self.outlet: _Outlet | None = None

    def handle(self, message: Any) -> Any:
        if message.__class__ is _Outlet:
            self.outlet = message
            return None
        try:
            self.function(message)
        except Exception as exc:  # noqa: BLE001 - one subscriber's failure must not reach the others
            if self.outlet is not None:
                self.outlet.failed += 1
            logger.opt(exception=exc).error(
                "Subscriber {!r} raised on {!r}; it stays subscribed", self.function, message
            )
            self.actor_system.dead_letters.record(message, self.actor_ref, DeadLetterReason.HANDLER_FAILED, exc)
        return None


class MessageBroker(Service):
    """The broker actor (see the module docs). Spawn it; use its `BrokerRef`.

    Args:
        history: a `MessageHistory` ref every publication is appended to, or None.
        callback_mode: the execution mode of the actors that run callable subscribers (default pooled).
    """

    _troupe_ref_class: ClassVar[type[ActorRef[Any]]] = BrokerRef

    def __init__(self, history: ActorRef[Any] | None = None, *, callback_mode: str | None = None) -> None:
        super().__init__()
        ref = self.actor_ref
        if not isinstance(ref, BrokerRef):
            msg = f"{type(self).__name__} must be spawned with its BrokerRef; do not override _troupe_ref_class"
            raise TypeError(msg)
        check_ref("history", history, optional=True, owner="MessageBroker")
        if callback_mode is not None and callback_mode not in MODES:
            msg = f"MessageBroker: callback_mode must be one of {sorted(MODES)} or None, got {callback_mode!r}"
            raise ValueError(msg)
        self.core = _Core(ref, history)
        self.callback_mode = callback_mode
        self.ids = itertools.count(1)
        # Invariant: outlets in id order; by_cell maps each subscriber's cell to its subscription ids;
        # dirty: some were removed and the table still lists them (rebuilt before any other request).
        self.outlets: dict[int, _Outlet] = {}
        self.by_cell: dict[Cell, list[int]] = {}
        self.dirty = False
        ref._core = self.core  # noqa: SLF001 - from here on, senders publish themselves

    def handle(self, message: Any) -> Any:
        """Handle a subscription change, a query, a mailbox publication or a subscriber's termination."""
        if self.dirty and message.__class__ is not Terminated:
            self._install(_Table.build(tuple(self.outlets.values())))
        match message:
            case _Subscribe():
                return self._subscribe(message)
            case _Unsubscribe(id=sub_id):
                return self._remove(sub_id, "unsubscribed")
            case _List():
                return tuple(o.sub for o in sorted(self.outlets.values(), key=lambda o: o.sub.id))
            case _Statistics():
                return self._statistics()
            case CheckHealth():
                return self._health()
            case Publish(topic=topic, message=payload, sender=sender, include_self=include_self):
                return self.core.ref.publish(topic, payload, sender=sender, include_self=include_self)
            case Terminated(ref=gone):
                self._terminated(gone)
                return None
        return super().handle(message)

    def _subscribe(self, request: _Subscribe) -> Subscription:
        subscriber = request.subscriber
        if isinstance(subscriber, ActorRef):
            ref = subscriber
            if not ref.is_alive():
                msg = f"cannot subscribe {ref}: it has stopped"
                raise ActorDeadError(msg)
        else:
            ref = self.spawn(_CallbackSubscriber, subscriber, mode=self.callback_mode)
        sub = Subscription(next(self.ids), request.pattern.pattern, ref, request.group, request.agent)
        outlet = _Outlet(
            sub,
            request.pattern,
            request.capacity,
            request.overflow,
            envelope=request.envelope,
            audit=self.actor_system.audit,
        )
        if not isinstance(subscriber, ActorRef):
            ref.tell(outlet)
        ids = self.by_cell.get(outlet.cell)
        if ids is None:
            self.by_cell[outlet.cell] = ids = []
            self.watch(ref)
        ids.append(sub.id)
        self.outlets[sub.id] = outlet
        self._install(self.core.table.added(outlet))
        self.core.fanout(MEMBERSHIP_TOPIC, MemberJoined(sub), self.actor_ref, include_self=False, quiet=True)
        return sub

    def _remove(self, sub_id: int, reason: str, *, install: bool = True) -> bool:
        outlet = self.outlets.pop(sub_id, None)
        if outlet is None:
            return False
        ref = outlet.sub.ref
        ids = self.by_cell.get(outlet.cell)
        if ids is not None:
            ids.remove(sub_id)
            if not ids:
                del self.by_cell[outlet.cell]
                if install:  # not terminated: stop watching; a callback's actor is ours to stop
                    self.unwatch(ref)
                    if issubclass(ref.actor_class, _CallbackSubscriber):
                        ref.stop(block=False)
        if install:
            self._install(_Table.build(tuple(self.outlets.values())))
        else:
            self.dirty = True
        self.core.fanout(
            MEMBERSHIP_TOPIC, MemberLeft(outlet.sub, reason), self.actor_ref, include_self=False, quiet=True
        )
        return True

    def _terminated(self, gone: ActorRef[Any]) -> None:
        for sub_id in list(self.by_cell.get(gone.actor_inbox, ())):
            self._remove(sub_id, "terminated", install=False)
        # Batched like a group commit: many subscribers stopping at once (a shutdown) cost one
        # rebuild. Until then the table still lists them; a hand-off to one is a dead letter.
        if self.dirty and not len(self.actor_inbox.queue):
            self._install(_Table.build(tuple(self.outlets.values())))

    def _install(self, table: _Table) -> None:
        self.dirty = False
        with self.core.lock:
            self.core.table = table

    def _health(self) -> HealthReport:
        """Answer a health check: healthy while it serves; ``dropped`` (hand-offs refused, total) and more."""
        core = self.core
        with core.lock:
            published, delivered, nobody, dropped = (
                core.published,
                core.delivered,
                core.no_subscriber,
                core.dropped_total,
            )
        return HealthReport(
            HealthStatus.HEALTHY,
            f"{published} published, {dropped} dropped, {len(self.outlets)} subscriptions",
            {
                "dropped": dropped,
                "published": published,
                "delivered": delivered,
                "no_subscriber": nobody,
                "subscriptions": len(self.outlets),
            },
        )

    def _statistics(self) -> BrokerStatistics:
        core = self.core
        with core.lock:
            published, delivered, nobody = core.published, core.delivered, core.no_subscriber
            dropped = core.dropped_total
        subscribers = []
        for sub_id in sorted(self.outlets):
            outlet = self.outlets[sub_id]
            with outlet.drop_lock:
                outlet_dropped = outlet.dropped
            subscribers.append(SubscriberStatistics(outlet.sub, len(outlet.cell.queue), outlet_dropped, outlet.failed))
        return BrokerStatistics(published, delivered, nobody, dropped, tuple(subscribers))
