"""Reliable delivery between two actors: Akka's producer and consumer controllers.

    consumer = system.spawn(ConsumerController, handler_ref, window=50)
    producer = system.spawn(ProducerController, consumer)
    producer.tell(job)            # reaches handler_ref exactly once, in order

The guarantee, in one sentence: every message the producer controller
accepts reaches the handler at least once and, while both controllers live,
exactly once and in the order accepted (at-least-once, deduplicated); with
the durable outbox (``outbox=path``) what a killed producer had accepted is
sent by the next producer opened on the file, so with a consumer that lived
through it (or an idempotent handler) it is effectively once.

Protocol (Akka's, from akka-actor-typed's reliable delivery):

- The producer numbers each accepted message (`SequencedMessage`, seq 1, 2,
  3... per producer-consumer pair) and keeps it until it is confirmed.
- The consumer drives demand: it grants a window (default 50) with a
  `Request(confirmed, up_to)` and grants more when half of it is used, each
  request also confirming what it has delivered. The producer sends only up
  to ``up_to``; the rest waits in its buffer.
- A repeated confirmation while more is out means the next message was lost:
  the producer resends it at once (once per gap). It also resends what is
  unconfirmed when a resend tick passes without
  progress, the interval doubling from ``resend_interval`` to
  ``max_resend_interval`` (reset on progress); the consumer repeats its
  request on its own tick when it has news or hears nothing, and on every
  duplicate, so a lost request costs one tick.
- The consumer delivers seq n only after n - 1: an early message waits (up
  to a window's worth); a duplicate is dropped. The handler is told each
  message once, in order.

Links. What travels between the controllers goes through ``link``, a
function taking the destination's ``tell`` and returning the function to
send with: the default is the tell itself. `LossyLink` drops, duplicates and
reorders a seeded fraction of messages, for tests and benchmarks.

Where it runs. As the router and the broker do, the controllers' refs run
the protocol on the caller's thread: telling a `ProducerController` numbers
and sends the message at once, and a `ConsumerController`'s ref checks a
`SequencedMessage` and tells the handler on the thread that delivered it;
neither message waits for a turn of a controller actor. Each side's state
sits behind its own lock, held for a few dict operations and the handler's
mailbox append (which keeps delivery in order); what one side sends the
other is sent after its lock is released, so the two locks never nest. The
controller actors themselves handle the timer ticks, registration and
statistics, in their mailboxes. A producer whose consumer is local and has no
link hands it what it sends from its buffer (a refilled window, a resend) as
one run of (seq, message) pairs, taken under one hold of the consumer's lock
and answered with one request at most: the same steps as telling each item
(a hypothesis test holds the two paths equal), at a third less per message.

Local pairs. Such a producer without an outbox is also *paired* with its
consumer when it is spawned: both states then use the consumer's lock (so
one lock, not two, is taken per message; the rule that neither side calls
the other while holding a lock keeps it from nesting), and a tell whose
message is next in an open window, with nothing early or unsent, is handled
in one hold of it (`_ProducerState.pass_through`): the handler is told, the
message kept until confirmed, and at each half window the consumer's refill
and confirmation are applied to both sides at once instead of travelling as
a `Request`. Anything else (a gap, a closed window, a resend, a consumer
that stopped or restarted) takes the long way above. A hypothesis test
holds the paired and the long way equal, step by step. The handler's tell
runs under the shared lock, as it does under the consumer's in the long
way: a handler ref whose tell called back into the same pair would deadlock
either way.

Timers run on the system's clock (a `ManualClock` drives them in tests).
`LossyLink` may be called from any thread.
"""

from __future__ import annotations

import json
import os
import random
import threading
from collections import deque
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import attrs

from actors._core import MESSAGE_KINDS, Actor, ActorRef, check_ref, check_seconds
from actors.errors import HistoryPayloadError
from actors.protocol import AgentMessage, from_json, to_json

if TYPE_CHECKING:
    from collections.abc import Callable

    from actors._core import Cell

__all__ = [
    "ConsumerController",
    "ConsumerRef",
    "ConsumerStatistics",
    "LossyLink",
    "ProducerController",
    "ProducerRef",
    "ProducerStatistics",
    "Request",
    "SequencedMessage",
]


class SequencedMessage(NamedTuple):
    """A message on its way from a producer controller to its consumer controller.

    Named tuples, here and in `Request`, for speed: one is built per message
    (an attrs instance costs ~3x as much to make).
    """

    seq: int
    message: Any


class Request(NamedTuple):
    """Demand from the consumer: everything up to `confirmed` was delivered; send up to `up_to`."""

    confirmed: int
    up_to: int


@attrs.frozen
class ProducerStatistics:
    """A producer controller's counters."""

    accepted: int
    sent: int
    resent: int
    confirmed: int
    buffered: int


@attrs.frozen
class ConsumerStatistics:
    """A consumer controller's counters."""

    delivered: int
    duplicates: int
    early: int
    requests: int


@attrs.frozen
class _Register:
    producer: ActorRef[Any]
    first: int = 1  # the producer's first unconfirmed seq (a producer resumed from its outbox starts past 1)
    registered: bool = False  # a local producer registered itself on the consumer's state already


@attrs.frozen
class _Tick:
    pass


@attrs.frozen
class GetStatistics:
    """Ask either controller for its statistics."""


_MIN_WINDOW = 2
"""The smallest window: refilled at half, a window of 1 would never be refilled."""

_CONTROL = frozenset({*MESSAGE_KINDS, _Register, _Tick, GetStatistics})
_NOT_ACCEPTED = _CONTROL | {Request}  # what a producer's tell does not number (one set look-up a tell)


# -- the producer side ---------------------------------------------------------------------------------


class _Outbox:
    """A producer's durable outbox: accepted, unconfirmed messages in SQLite (WAL), and the next seq.

    Used under the producer state's lock only. Each accept is one committed
    transaction (so a tell to a durable producer returns once its message is
    on disk); confirmations delete in bulk, once per request.
    """

    def __init__(self, path: str, synchronous: str) -> None:
        from actors.messaging.history import _open  # noqa: PLC0415 - the one WAL opener of the package

        self.db = _open(
            path,
            "CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY, payload TEXT NOT NULL);"
            "CREATE TABLE IF NOT EXISTS meta (one INTEGER PRIMARY KEY CHECK (one = 1), next_seq INTEGER NOT NULL);"
            "INSERT OR IGNORE INTO meta VALUES (1, 1);",
            synchronous,
        )

    def load(self) -> tuple[int, dict[int, Any]]:
        next_seq = self.db.execute("SELECT next_seq FROM meta").fetchone()[0]
        rows = self.db.execute("SELECT seq, payload FROM outbox ORDER BY seq").fetchall()
        return next_seq, {seq: _decode_payload(payload) for seq, payload in rows}

    def accept(self, seq: int, message: Any) -> None:
        payload = _encode_payload(message)
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("INSERT INTO outbox VALUES (?, ?)", (seq, payload))
            db.execute("UPDATE meta SET next_seq = ?", (seq + 1,))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def confirm(self, confirmed: int) -> None:
        self.db.execute("DELETE FROM outbox WHERE seq <= ?", (confirmed,))

    def close(self) -> None:
        self.db.close()


def _encode_payload(message: Any) -> str:
    """An outbox row: an `AgentMessage` in its wire form, or a JSON value (`HistoryPayloadError` otherwise)."""
    from actors.messaging.history import _JSON, check_payload  # noqa: PLC0415

    check_payload(message)
    if message.__class__ is AgentMessage:
        return "A" + to_json(message)
    try:
        return "J" + _JSON.encode(message)
    except (TypeError, ValueError) as exc:
        msg = f"a durable outbox stores AgentMessages and JSON values; cannot store {message!r}: {exc}"
        raise HistoryPayloadError(msg) from exc


def _decode_payload(payload: str) -> Any:
    return from_json(payload[1:]) if payload[0] == "A" else json.loads(payload[1:])


class _ProducerState:
    """The producer's protocol state; every method may run on any thread."""

    __slots__ = (
        "_send",
        "_send_one",
        "_send_run",
        "buffer",
        "confirmed",
        "fast_resent",
        "initial",
        "interval",
        "local",
        "lock",
        "maximum",
        "next_seq",
        "outbox",
        "peer",
        "peer_ref",
        "progress",
        "repeats",
        "resent",
        "sent",
        "sent_up_to",
        "up_to",
    )

    def __init__(
        self,
        send: Callable[[Any], None],
        initial: float,
        maximum: float,
        outbox: _Outbox | None = None,
        *,
        send_run: Callable[[list[tuple[int, Any]]], None] | None = None,
        send_one: Callable[[int, Any], None] | None = None,
    ) -> None:
        self.lock = threading.Lock()
        self._send = send
        self._send_run = send_run if send_run is not None else self._send_each
        self._send_one = send_one if send_one is not None else self._send_pair
        self.outbox = outbox
        # A local consumer's state this producer registered on at spawn, and its ref (see `share`).
        self.peer: _ConsumerState | None = None
        self.peer_ref: ConsumerRef | None = None
        self.local = threading.local()
        self.initial = initial
        self.maximum = maximum
        self.interval = initial
        # Invariant: buffer holds seq confirmed+1 .. next_seq-1; of those, up to sent_up_to went out at least once.
        self.buffer: dict[int, Any] = {}
        self.next_seq = 1
        self.confirmed = 0
        self.sent_up_to = 0
        self.up_to = 0
        self.progress = False
        self.fast_resent = -1
        self.repeats = 0
        self.sent = self.resent = 0
        if outbox is not None:
            # Resumed: what was accepted and never confirmed is sent again, under its own numbers.
            self.next_seq, self.buffer = outbox.load()
            self.confirmed = self.sent_up_to = min(self.buffer, default=self.next_seq) - 1

    def send(self, run: list[tuple[int, Any]]) -> None:
        """Send `run`, (seq, message) pairs, to the consumer, after what this thread is sending already.

        The consumer runs on the caller's thread too, and its request may
        come straight back here: sent at once, it would overtake the rest of
        the batch being sent (and each window's request would nest one call
        deeper). So a thread already sending queues the run (a trampoline).
        A local consumer without a link takes a whole run in one call and
        under one hold of its lock (`ConsumerRef.tell_run`); anything else is
        told the run's items one by one.
        """
        local = self.local
        queue = getattr(local, "queue", None)
        if queue is not None:
            queue.append(run)
            return
        local.queue = queue = deque((run,))
        send_run = self._send_run
        try:
            while queue:
                send_run(queue.popleft())
        finally:
            local.queue = None

    def share(self, peer: _ConsumerState, ref: ConsumerRef | None = None) -> None:
        """Pair with a local consumer's state reached without a link: one lock for both, `pass_through` on.

        Called by the controller's constructor before any sender sees this
        state (and before the consumer's first request). From then on the
        consumer's lock is this state's lock too; no method of either side
        calls the other while holding it (each sends after releasing), so
        sharing it nests nothing. `ref` is the consumer's address, whose
        current state `ProducerRef.tell` compares with `peer` (a restarted
        consumer has a new one).
        """
        self.lock = peer.lock
        self.peer = peer
        self.peer_ref = ref

    def pass_through(self, message: Any) -> bool:
        """Hand `message` to the paired consumer's handler if nothing else is due; return whether it was.

        The common case of a local pair, under the one shared lock: the window
        is open and everything accepted before was delivered, with nothing
        early. Then accepting, sending and arriving collapse into telling the
        handler and keeping the message until it is confirmed; when it uses
        half the window, the consumer's refill and confirmation are granted
        and heard on the spot (the request it would send carries nothing the
        producer does not see here). Both sides' state moves as the long way
        moves it (a hypothesis test holds the two equal).
        Otherwise nothing changes and the caller takes the long way
        (`accept`), which keeps every other case as it was.
        """
        peer = self.peer
        if peer is None:
            return False
        # acquire / release, not `with`: a with statement's enter and exit calls were a fifth of a
        # paired tell (measured in one process, alternating the two forms).
        lock = self.lock
        lock.acquire()
        try:
            seq = self.next_seq
            last = seq - 1
            if self.sent_up_to != last or seq > self.up_to or peer.delivered != last or peer.early:
                return False
            peer.deliver(message)  # raises before anything moved if the handler's mailbox refuses it
            peer.heard = True
            peer.delivered = self.sent_up_to = seq
            self.next_seq = seq + 1
            self.sent += 1
            if peer.requested - seq > peer.half:
                self.buffer[seq] = message  # kept until confirmed, as the long way keeps it
                return True
            # Half the window used: the consumer's refill and confirmation (`_ConsumerState._arrived`,
            # `_request`) and the producer hearing them (`requested`), without the request in between.
            peer.requested = seq + peer.window
            peer.requests += 1
            peer.acked = seq
            # Everything accepted is confirmed now: the buffer held confirmed+1 .. seq-1, and lets go of it.
            self.buffer.clear()
            self.confirmed = seq
            self.up_to = max(self.up_to, peer.requested)
            self.progress = True
            return True
        finally:
            lock.release()

    def _send_pair(self, seq: int, message: Any) -> None:
        self._send(SequencedMessage(seq, message))

    def _send_each(self, run: list[tuple[int, Any]]) -> None:
        send = self._send
        for seq, message in run:
            send(SequencedMessage(seq, message))

    def accept(self, message: Any) -> int:
        with self.lock:
            seq = self.next_seq
            if self.outbox is not None:
                self.outbox.accept(seq, message)  # committed before the tell returns
            self.next_seq = seq + 1
            self.buffer[seq] = message
            # Sent now only if everything before it is out and the window allows it.
            send_now = self.sent_up_to == seq - 1 and seq <= self.up_to
            if send_now:
                self.sent_up_to = seq
                self.sent += 1
        if send_now:
            # Straight out, without the trampoline: everything before it is out already, and a
            # request coming back during this call finds nothing of this thread's to overtake.
            self._send_one(seq, message)
        return seq

    def requested(self, request: Request) -> None:
        retry = 0
        with self.lock:
            if request.confirmed > self.confirmed:
                buffer = self.buffer
                for seq in range(self.confirmed + 1, min(request.confirmed, self.next_seq - 1) + 1):
                    buffer.pop(seq, None)
                self.confirmed = request.confirmed
                if self.outbox is not None:
                    self.outbox.confirm(request.confirmed)
                self.sent_up_to = max(self.sent_up_to, self.confirmed)
                self.progress = True
            elif request.confirmed == self.confirmed < self.sent_up_to:
                # A repeated confirmation while more is out: the next one was lost (TCP's fast
                # retransmit). Resent on the first repeat and every 8th after (the resend
                # may be lost too); the tick covers the rest.
                if self.fast_resent != self.confirmed:
                    self.fast_resent, self.repeats = self.confirmed, 0
                if self.repeats % 8 == 0:
                    retry = self.confirmed + 1
                self.repeats += 1
            self.up_to = max(self.up_to, request.up_to)
            first = self.sent_up_to + 1
            last = min(self.up_to, self.next_seq - 1)
            seqs = range(first, last + 1)
            out = list(zip(seqs, map(self.buffer.__getitem__, seqs), strict=True))
            if out:
                self.sent_up_to = last
                self.sent += len(out)
            if retry:
                self.resent += 1
                out.insert(0, (retry, self.buffer[retry]))
        if out:
            self.send(out)

    def tick(self) -> float:
        """Resend what is out if nothing was confirmed since the last tick; return the next interval."""
        with self.lock:
            if self.progress or self.sent_up_to == self.confirmed:
                self.interval = self.initial
                out = []
            else:
                seqs = range(self.confirmed + 1, self.sent_up_to + 1)
                out = list(zip(seqs, map(self.buffer.__getitem__, seqs), strict=True))
                self.resent += len(out)
                self.interval = min(self.interval * 2, self.maximum)
            self.progress = False
            interval = self.interval
        if out:
            self.send(out)
        return interval

    def statistics(self) -> ProducerStatistics:
        with self.lock:
            return ProducerStatistics(self.next_seq - 1, self.sent, self.resent, self.confirmed, len(self.buffer))


class ProducerRef(ActorRef[Any]):
    """The address of a `ProducerController`: telling it a message sends it on the caller's thread."""

    __slots__ = ("_state",)

    def __init__(self, cell: Cell) -> None:
        super().__init__(cell)
        self._state: _ProducerState | None = None  # installed by the controller's constructor

    def tell(self, message: Any) -> None:
        """Accept `message` for reliable delivery (or hand a protocol message to the controller)."""
        state = self._state
        if state is None or message.__class__ in _NOT_ACCEPTED or not self._cell.alive:
            if state is not None and message.__class__ is Request and self._cell.alive:
                state.requested(message)
            else:
                super().tell(message)
            return
        peer = state.peer_ref
        # Paired with a local consumer that is alive and not restarted (a restart makes a new
        # state, registered by message): the short way if nothing else is due, else the long one.
        if peer is None or peer._state is not state.peer or not peer._cell.alive or not state.pass_through(message):  # noqa: SLF001
            state.accept(message)


class ProducerController(Actor):
    """The sending side (see the module docs): tell it messages; they reach the consumer's handler.

    Asked a message, the reply is its seq (the ask goes through the mailbox).

    Args:
        consumer: the `ConsumerController` ref.
        link: wraps the tell toward the consumer (default: none).
        resend_interval / max_resend_interval: the resend backoff, in seconds of the system's clock.
        outbox: a SQLite file (WAL) for the durable outbox: every accepted message is committed there
            before the tell returns, deleted once confirmed, and a producer opened on the same file
            after a crash sends what was never confirmed, under the same seqs (None: no outbox).
        synchronous: the outbox's ``PRAGMA synchronous`` (``"NORMAL"`` survives kill -9).
    """

    _troupe_ref_class: ClassVar[type[ActorRef[Any]]] = ProducerRef

    def __init__(
        self,
        consumer: ActorRef[Any],
        *,
        link: Callable[[Callable[[Any], None]], Callable[[Any], None]] | None = None,
        resend_interval: float = 1.0,
        max_resend_interval: float = 30.0,
        outbox: str | os.PathLike[str] | None = None,
        synchronous: str = "NORMAL",
    ) -> None:
        super().__init__()
        check_ref("consumer", consumer, owner="ProducerController")
        check_seconds("resend_interval", resend_interval, owner="ProducerController")
        check_seconds("max_resend_interval", max_resend_interval, owner="ProducerController")
        self.consumer = consumer
        send = link(consumer.tell) if link is not None else consumer.tell
        local = consumer if link is None and isinstance(consumer, ConsumerRef) else None
        send_run = local.tell_run if local is not None else None
        send_one = local.tell_one if local is not None else None
        self.outbox = _Outbox(os.fspath(outbox), synchronous) if outbox is not None else None
        self.state = _ProducerState(
            send, resend_interval, max_resend_interval, self.outbox, send_run=send_run, send_one=send_one
        )
        ref = self.actor_ref
        self.registered = False
        if isinstance(ref, ProducerRef):
            consumer_state = local._state if local is not None else None  # noqa: SLF001
            if consumer_state is not None and local is not None and local.is_alive():
                # A local consumer without a link: paired (module docs) unless the outbox must see
                # every accept, and registered here, on the spawning thread, so the first window is
                # granted before `spawn` returns and the first tells go straight out (registered by
                # a message, they would queue until the consumer's turn).
                if self.outbox is None:
                    self.state.share(consumer_state, local)
                ref._state = self.state  # noqa: SLF001 - from here on, senders run the protocol themselves
                consumer_state.register(ref.tell, self.state.confirmed + 1)
                self.registered = True
            else:
                ref._state = self.state  # noqa: SLF001

    def on_start(self) -> None:
        """Introduce this producer to the consumer (a local tell) and arm the resend tick."""
        self.consumer.tell(_Register(self.actor_ref, self.state.confirmed + 1, self.registered))  # type: ignore[arg-type]
        self.timers.start_single_timer("resend", _Tick(), self.state.interval)

    def on_stop(self) -> None:
        """Close the outbox, if any (what it holds is sent by the next producer opened on it)."""
        if self.outbox is not None:
            with self.state.lock:
                self.outbox.close()

    def on_receive(self, message: Any) -> Any:
        """Handle a tick, statistics, or a message that came through the mailbox."""
        cls = message.__class__
        if cls is _Tick:
            state = self.state
            resent = state.resent
            self.timers.start_single_timer("resend", _Tick(), state.tick())
            if state.resent != resent:
                # Nothing was confirmed for a whole interval: the consumer may have restarted (its
                # new state knows no producer and drops what it is sent). Registering again is
                # harmless to a consumer that did not: it answers with a request from its state.
                self.consumer.tell(_Register(self.actor_ref, state.confirmed + 1, False))  # type: ignore[arg-type]
        elif cls is GetStatistics:
            return self.state.statistics()
        elif cls is Request:
            self.state.requested(message)
        else:
            return self.state.accept(message)
        return None


# -- the consumer side ---------------------------------------------------------------------------------


class _ConsumerState:
    """The consumer's protocol state; every method may run on any thread."""

    __slots__ = (
        "acked",
        "deliver",
        "delivered",
        "duplicates",
        "early",
        "early_count",
        "half",
        "heard",
        "lock",
        "reply",
        "requested",
        "requests",
        "window",
    )

    def __init__(self, deliver: Callable[[Any], None], window: int) -> None:
        self.lock = threading.Lock()
        self.deliver = deliver
        self.window = window
        self.half = window // 2
        self.reply: Callable[[Any], None] | None = None
        # Invariant: every seq <= delivered was told to the handler exactly once, in order;
        # early holds seqs in delivered + 2 .. requested.
        self.delivered = 0
        self.requested = 0
        self.acked = 0
        self.early: dict[int, Any] = {}
        self.heard = False
        self.duplicates = self.early_count = self.requests = 0

    def arrived(self, seq: int, message: Any) -> None:
        """Take message number `seq` (from any thread)."""
        with self.lock:
            self.heard = True
            if seq == self.delivered + 1 and not self.early and self.requested - seq > self.window // 2:
                # The common case: the next one, no gap, no request due.
                self.deliver(message)
                self.delivered = seq
                return
            request = self._request() if self._arrived(seq, message) else None
        if request is not None and self.reply is not None:
            self.reply(request)

    def arrived_run(self, run: list[tuple[int, Any]]) -> None:
        """Take a run of sequenced messages under one hold of the lock, answering with one request at most.

        The same steps as `arrived` for each item in turn; a request that any
        of them calls for is made once, after the last, from the state then
        (both of its numbers only grow, so the later request says no less).
        """
        half = self.window // 2
        deliver = self.deliver
        need = False
        with self.lock:
            self.heard = True
            for seq, message in run:
                if seq == self.delivered + 1 and not self.early and self.requested - seq > half:
                    deliver(message)
                    self.delivered = seq
                elif self._arrived(seq, message):
                    need = True
            request = self._request() if need else None
        if request is not None and self.reply is not None:
            self.reply(request)

    def _arrived(self, seq: int, message: Any) -> bool:
        """Take a message off the common path, under the lock; return whether a request is due."""
        if seq <= self.delivered or seq in self.early:
            self.duplicates += 1
            return True  # the producer did not hear our confirmation
        if seq != self.delivered + 1:
            if seq <= self.requested:
                self.early[seq] = message
                self.early_count += 1
                return True  # a gap: say where it starts (the producer resends)
            return False
        # Told under the lock: a mailbox append, and what keeps the handler's order.
        deliver = self.deliver
        deliver(message)
        self.delivered = seq
        early = self.early
        while early:
            following = early.pop(self.delivered + 1, None)
            if following is None:
                break
            deliver(following)
            self.delivered += 1
        if self.requested - self.delivered <= self.window // 2:
            self.requested = self.delivered + self.window
            return True
        return False

    def _request(self) -> Request | None:
        if self.reply is None:
            return None
        self.requests += 1
        self.acked = self.delivered
        return Request(self.delivered, self.requested)

    def register(self, reply: Callable[[Any], None], first: int) -> None:
        with self.lock:
            self.reply = reply
            if self.delivered < first - 1 and not self.early:
                # A producer resumed from its outbox: what precedes its first unconfirmed seq was
                # delivered by an earlier incarnation (or this consumer is new): start after it.
                self.delivered = first - 1
            self.requested = self.delivered + self.window
            request = self._request()
        if request is not None:
            reply(request)

    def tick(self) -> None:
        with self.lock:
            request = self._request() if self.delivered > self.acked or self.early or not self.heard else None
            self.heard = False
        if request is not None and self.reply is not None:
            self.reply(request)

    def statistics(self) -> ConsumerStatistics:
        with self.lock:
            return ConsumerStatistics(self.delivered, self.duplicates, self.early_count, self.requests)


class ConsumerRef(ActorRef[Any]):
    """The address of a `ConsumerController`: a `SequencedMessage` is handled on the caller's thread."""

    __slots__ = ("_state",)

    def __init__(self, cell: Cell) -> None:
        super().__init__(cell)
        self._state: _ConsumerState | None = None  # installed by the controller's constructor

    def tell(self, message: Any) -> None:
        """Take a sequenced message (or hand anything else to the controller's mailbox)."""
        state = self._state
        if state is not None and message.__class__ is SequencedMessage and self._cell.alive:
            state.arrived(message.seq, message.message)
        else:
            super().tell(message)

    def tell_one(self, seq: int, message: Any) -> None:
        """Take message number `seq`: a local producer's seam, the same as telling its `SequencedMessage`."""
        state = self._state
        if state is not None and self._cell.alive:
            state.arrived(seq, message)
        else:
            super().tell(SequencedMessage(seq, message))

    def tell_run(self, run: list[tuple[int, Any]]) -> None:
        """Take a run of (seq, message) pairs at once: a local producer's seam, the same as telling each."""
        state = self._state
        if state is not None and self._cell.alive:
            state.arrived_run(run)
        else:
            for seq, message in run:
                super().tell(SequencedMessage(seq, message))


class ConsumerController(Actor):
    """The receiving side (see the module docs): tells `deliver_to` each message once, in order.

    Args:
        deliver_to: the handler's ref.
        window: messages granted at a time (refilled at half).
        link: wraps the tell toward the producer (default: none).
        request_interval: seconds between repeated requests when it has news or hears nothing.
    """

    _troupe_ref_class: ClassVar[type[ActorRef[Any]]] = ConsumerRef

    def __init__(
        self,
        deliver_to: ActorRef[Any],
        *,
        window: int = 50,
        link: Callable[[Callable[[Any], None]], Callable[[Any], None]] | None = None,
        request_interval: float = 1.0,
    ) -> None:
        super().__init__()
        if isinstance(window, bool) or not isinstance(window, int) or window < _MIN_WINDOW:
            msg = f"the window must be an int >= 2 messages, got {window!r}"
            raise ValueError(msg)
        check_ref("deliver_to", deliver_to, owner="ConsumerController")
        check_seconds("request_interval", request_interval, owner="ConsumerController")
        self.link = link
        self.interval = request_interval
        self.state = _ConsumerState(deliver_to.tell, window)
        ref = self.actor_ref
        if isinstance(ref, ConsumerRef):
            ref._state = self.state  # noqa: SLF001 - from here on, senders run the protocol themselves

    def on_receive(self, message: Any) -> Any:
        """Handle registration, ticks, statistics, and sequenced messages that came through the mailbox."""
        cls = message.__class__
        if cls is SequencedMessage:
            self.state.arrived(message.seq, message.message)
        elif cls is _Tick:
            self.state.tick()
            self.timers.start_single_timer("request", _Tick(), self.interval)
        elif cls is _Register:
            if not message.registered:
                producer = message.producer
                reply = self.link(producer.tell) if self.link is not None else producer.tell
                self.state.register(reply, message.first)
            self.timers.start_single_timer("request", _Tick(), self.interval)
        elif cls is GetStatistics:
            return self.state.statistics()
        return None


class LossyLink:
    """A seeded unreliable link: drops, duplicates and reorders a fraction of what passes.

    ``link = LossyLink(drop=0.1, duplicate=0.05, reorder=0.05, seed=1)`` is given
    as ``link=`` to a controller. Reordering holds a message back until the next
    one has passed. Thread-safe; the counters say what it did.
    """

    def __init__(self, *, drop: float = 0.0, duplicate: float = 0.0, reorder: float = 0.0, seed: int = 0) -> None:
        for name, value in (("drop", drop), ("duplicate", duplicate), ("reorder", reorder)):
            if not 0.0 <= value < 1.0:
                msg = f"{name} must be a fraction in [0, 1), got {value!r}"
                raise ValueError(msg)
        self.drop, self.duplicate, self.reorder = drop, duplicate, reorder
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.held: dict[int, tuple[Callable[[Any], None], Any]] = {}
        self.passed = self.dropped = self.duplicated = self.reordered = 0

    def __call__(self, tell: Callable[[Any], None]) -> Callable[[Any], None]:
        """Return the lossy version of `tell`."""
        key = id(tell)

        def send(item: Any) -> None:
            with self.lock:
                roll = self.rng.random()
                held = self.held.pop(key, None)
                if roll < self.drop:
                    self.dropped += 1
                    out: list[Any] = []
                elif roll < self.drop + self.duplicate:
                    self.duplicated += 1
                    out = [item, item]
                elif roll < self.drop + self.duplicate + self.reorder and held is None:
                    self.reordered += 1
                    self.held[key] = (tell, item)
                    out = []
                else:
                    out = [item]
                self.passed += len(out)
            for each in out:
                tell(each)
            if held is not None:
                held[0](held[1])

        return send
