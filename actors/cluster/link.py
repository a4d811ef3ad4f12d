"""The link layer: per-destination outboxes on the sender, re-ordering and dedup on the receiver.

Sender side (`Outbox`, one per destination node): items are appended by
whichever thread sends; a flush turns the pending items into one `Frame` with
the next sequence number, keeps it until the receiver acknowledges it, and
hands it to `Faults` and then to the transport. A flush happens when the
outbox holds `max_batch` items (on the sending thread) or when its oldest item
is `flush_after` seconds old (on the node's tick). Unacknowledged frames are
sent again after `retransmit_after` seconds, so dropped frames are not lost.

Receiver side (`Inbox`, one per source node): frames are accepted in sequence
order; a frame from the future is parked until the gap fills, a frame seen
before is dropped. A new sender epoch (the sender restarted) resets the state.

Ordering promised: items appended to one outbox by one thread reach the
receiving node in that order, once each, whatever drop, duplicate, reorder and
delay faults do, as long as the link heals before the receiver is declared DOWN.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import attrs

from actors.cluster.wire import Frame, encode_fields

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["Inbox", "LinkConfig", "Outbox", "TickerWait"]


@attrs.frozen
class LinkConfig:
    """Timing of the link layer and the failure detector, in seconds of the node clock."""

    max_batch: int = 1000
    """Items per frame; a full outbox is flushed at once on the sending thread (1,000: ~360k msg/s on Ray)."""
    flush_after: float = 0.001
    """Longest an item waits in an outbox before it is flushed."""
    idle_after: float = 0.0002
    """A link that sent nothing for this long is idle: an item appended to its empty outbox is
    flushed at once (a lone ask or reply does not wait for the tick; more than ~5,000 frames/s batch)."""
    retransmit_after: float = 0.2
    """An unacknowledged frame is sent again after this long."""
    heartbeat_every: float = 0.1
    """A node sends every peer at least one frame this often (a heartbeat if it has nothing else)."""
    suspect_after: float = 0.5
    """A peer not heard from for this long is SUSPECT: no new traffic is flushed to it."""
    down_after: float = 1.5
    """A peer not heard from for this long is DOWN (also caught by the transport when it reports the death)."""
    join_grace: float = 0.0
    """Extra silence allowed from a node that has just joined and not been heard from yet (a Ray
    node's process may take seconds to start after it is registered)."""
    tick: float = 0.001
    """How often a node with a real clock runs its tick (flush, retransmit, heartbeat, detector)."""
    snapshot_every: float | None = 1.0
    """How often a node saves the snapshot of each of its permanent actors that has `snapshot()` in
    the directory, to restart it from if the node goes DOWN (None: never; state since the last one is lost)."""
    forward_for: float = 10.0
    """How long the old home of a migrated actor forwards the stragglers sent to it (from nodes whose
    view of the move lags), from the move's end; after that it sends each one where the directory says
    the actor lives (one directory call a straggler), so old refs keep working and the table stays small."""


class TickerWait:
    """The wait of a transport's ticker thread: `tick` while it is busy, a long idle tick otherwise, woken by work.

    The idle tick is a quarter of the shortest periodic duty (heartbeat,
    retransmit, silence detector: 25 ms by default), so each is still done
    within a quarter of its period. `queued` (any thread: a node's
    `on_queued`) wakes a ticker that waits long; `wake` (any thread) wakes
    it whatever it waits. Measured: a ticker that ticked every 1 ms whatever
    its nodes held cost an idle two-node cluster 57-86 ms of CPU a second in
    memory and an idle Ray node process 74-82.
    """

    __slots__ = ("_event", "idle", "idle_tick", "tick")

    def __init__(self, config: LinkConfig) -> None:
        self.tick = config.tick
        self.idle_tick = max(
            config.tick, min(config.heartbeat_every, config.retransmit_after, config.suspect_after) / 4
        )
        # True while the ticker waits `idle_tick` (racy by design: a hint read by `queued`).
        self.idle = False
        self._event = threading.Event()

    def wait(self, busy: Callable[[], bool]) -> None:
        """Wait `tick` if `busy()`, else `idle_tick` or until work is queued (the ticker thread)."""
        self.idle = True  # first: work queued after the check below wakes this thread
        if busy():
            self.idle = False
            self._event.wait(self.tick)
        else:
            self._event.wait(self.idle_tick)
            self.idle = False
        self._event.clear()

    def queued(self) -> None:
        """Wake the ticker if it waits long: work was left for a tick (any thread)."""
        if self.idle:
            self.idle = False
            self._event.set()

    def wake(self) -> None:
        """Wake the ticker whatever it waits (any thread: a frame left in flight, a stop)."""
        self._event.set()


class Outbox:
    """The items bound for one destination node, and its frames not yet acknowledged."""

    def __init__(self, src: str, src_epoch: int, dst: str, config: LinkConfig) -> None:
        self.src = src
        self.src_epoch = src_epoch
        self.dst = dst
        self.config = config
        self.lock = threading.Lock()
        # Invariant (under lock): items appended and not yet put in a frame, in send order.
        self.items: list[tuple[Any, ...]] = []
        self.first_at = 0.0  # when the oldest pending item was appended
        self.seq = 0
        # Invariant (under lock): seq -> (frame bytes, last sent at) for every frame not yet acknowledged.
        self.unacked: dict[int, list[Any]] = {}
        self.last_sent = float("-inf")
        # When the receiver last acknowledged a frame new to it (or the first of the frames in flight was sent).
        self.progress_at = 0.0
        self.frames = 0
        self.retransmits = 0

    def append(self, item: tuple[Any, ...], now: float) -> bool:
        """Queue `item`; return True if the outbox should be flushed now, on the sending thread.

        That is when it is full, or when `item` is alone on an idle link (Nagle's
        rule): no frame in flight (every frame sent acknowledged: an ask's reply
        carries the ack of the ask, so sequential asks never wait for the tick),
        or nothing sent for `idle_after` since the last send *ended* (a lone
        one-way tell, whose acks come only with the peer's heartbeats). While
        frames are unacknowledged and sends keep coming, items accumulate up to
        `max_batch` or `flush_after`. The idle time counts from the end of the
        last send (`sent`), not its start: a send on Ray takes longer than
        `idle_after`, so counted from the start every item of a tell stream
        found the link "idle" and went in a frame of its own.
        """
        with self.lock:
            items = self.items
            if not items:
                self.first_at = now
                items.append(item)
                return not self.unacked or now - self.last_sent >= self.config.idle_after
            items.append(item)
            return len(items) >= self.config.max_batch

    def sent(self, now: float) -> None:
        """Note that a frame taken from this outbox has just been handed to the transport (the idle rule)."""
        with self.lock:
            self.last_sent = now

    def take(self, now: float, ack: int, *, force: bool = False) -> bytes | None:
        """Return the next frame's bytes (and keep it for retransmission), or None if nothing is due."""
        with self.lock:
            items = self.items
            if not items or (
                not force and now - self.first_at < self.config.flush_after and len(items) < self.config.max_batch
            ):
                return None
            self.items = []
            self.seq += 1
            data = encode_fields(self.src, self.src_epoch, self.dst, self.seq, ack, tuple(items))
            if not self.unacked:
                self.progress_at = now
            self.unacked[self.seq] = [data, now]
            self.last_sent = now
            self.frames += 1
            return data

    def heartbeat(self, now: float, ack: int) -> bytes | None:
        """Return a bare (unsequenced) frame if nothing was sent for `heartbeat_every`, else None."""
        with self.lock:
            if now - self.last_sent < self.config.heartbeat_every:
                return None
            self.last_sent = now
        return encode_fields(self.src, self.src_epoch, self.dst, 0, ack, ())

    def due_again(self, now: float) -> list[bytes]:
        """Return the frames to send again: unacknowledged for `retransmit_after`, with no ack progress as long.

        A receiver whose acks still advance is alive and only behind (a Ray
        actor's queue of frames; its acks ride on heartbeats): sending its
        frames again would double its work and its backlog, and the backlog
        then makes more frames late (measured: 1,204 retransmits and as many
        duplicates decoded and dropped for 2,825 frames in a 200,000-tell run).
        A lost frame stops the acks (they are cumulative), so it is sent again.
        """
        again: list[bytes] = []
        with self.lock:
            if now - self.progress_at < self.config.retransmit_after:
                return again
            for entry in self.unacked.values():
                if now - entry[1] >= self.config.retransmit_after:
                    entry[1] = now
                    again.append(entry[0])
            self.retransmits += len(again)
        return again

    def acked(self, upto: int, now: float) -> None:
        """Forget every frame up to sequence number `upto`: the receiver has it."""
        if not self.unacked:
            return  # read without the lock: a frame taken meanwhile was sent after this ack was made
        with self.lock:
            done = [s for s in self.unacked if s <= upto]
            if done:
                self.progress_at = now
                for seq in done:
                    del self.unacked[seq]

    def drain(self) -> list[tuple[Any, ...]]:
        """Remove and return every item not yet acknowledged (the destination is DOWN), oldest first."""
        sent, unsent = self.drain_parts()
        return sent + unsent

    def drain_parts(self) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """Remove every item not yet acknowledged; return (those sent in a frame, those never sent), oldest first.

        An item never sent cannot have reached the destination; one sent and
        not acknowledged may have (only its ack may be lost).
        """
        from actors.cluster.wire import decode  # noqa: PLC0415 - only on the rare DOWN path

        with self.lock:
            frames = [decode(entry[0]) for _, entry in sorted(self.unacked.items())]
            sent = [item for frame in frames for item in frame.items]
            unsent, self.items = self.items, []
            self.unacked.clear()
        return sent, unsent


class Inbox:
    """Sequence state of the frames from one source node."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.epoch = -1
        self.delivered = 0  # highest seq handed on, in order
        self.parked: dict[int, Frame] = {}
        self.duplicates = 0

    def accept(self, frame: Frame, deliver: Callable[[Frame], None]) -> None:
        """Hand `frame` and every parked frame it unblocks to `deliver`, in sequence order.

        Runs `deliver` under the inbox lock, so frames from one source are handled one at a time, in order.
        """
        with self.lock:
            if frame.src_epoch < self.epoch:
                return  # from an incarnation that is gone
            if frame.src_epoch > self.epoch:
                self.epoch, self.delivered, self.parked = frame.src_epoch, 0, {}
            if frame.seq == 0:
                return
            if frame.seq == self.delivered + 1 and not self.parked:  # in order, nothing parked: the common case
                self.delivered = frame.seq
                deliver(frame)
                return
            if frame.seq <= self.delivered or frame.seq in self.parked:
                self.duplicates += 1
                return
            self.parked[frame.seq] = frame
            while self.delivered + 1 in self.parked:
                self.delivered += 1
                deliver(self.parked.pop(self.delivered))
