"""`Node`: one troupe `ActorSystem` in a cluster, with its router, links and failure detector.

A node hosts many actors in one `ActorSystem` (100,000 pooled actors fit in
one process). Actors elsewhere are reached through `RemoteRef`s whose sends
come here: the router finds the actor's node (the directory, cached; a hold
buffer while it migrates) and appends the item to that node's `Outbox`. The
node's tick (every `LinkConfig.tick` on a real clock, on every advance of a
`ManualClock`) flushes outboxes, retransmits, sends heartbeats, polls the
directory's change log and runs the failure detector. A transport may tick
less often while the node is `idle`, if it passes `on_queued` to hear of
work left for the tick (the memory transport does, on a real clock).

Ask replies travel back as one-way `REPLY` items with the ask's correlation
id, so a node never blocks waiting for another.

Membership: a node that cannot hear from a majority of the cluster (the
directory included) for the down bound downs itself, and frames from an epoch
declared DOWN are refused (see `tick` and `receive`; the README's cluster
section states the rule).

Which thread runs what: `receive` runs on the transport's delivery thread (the
memory transport's ticker, or Ray's data method), one frame at a time per
source; sends run on the sending actor's thread; `tick` on the ticker thread;
control operations (spawn, `migrate_out`, `finish_out`) on the caller's (the
driver's, or Ray's control concurrency group).

Migration is node to node (`migrate_out` on the source, one request from the
driver), over the data links, so each step is ordered with the mail:

1. The source parks what arrives for the actor from now on (it stays out of
   the mailbox, in arrival order), holds its own sends to it, and sends
   ``HOLD`` to every UP peer.
2. A peer holds its new mail for the actor and sends ``FENCE`` down the link
   it has been sending that mail on: once the source has every fence, every
   item any peer sent before its hold has arrived (parked or in the mailbox).
   An old home the peer still sends to forwards the fence after the mail.
3. At once, while the fences travel (everything that arrives from step 1 on
   is parked, so nothing enters the mailbox any more): on the actor's own
   thread, as a system message (after the message in hand, before the rest
   of the mailbox), the source takes ``snapshot()`` and the mailbox, stops
   the instance (its watchers are not told) and sends the state ahead to the
   target (``STATE``, held there by the move's token): the snapshot's bytes
   travel with the fences, not after them (1 MB is ~5-8 ms to submit and
   send on Ray here, about as long as the fences take).
4. Once it has every fence and the state is taken, it ships ``MOVE`` to the
   target: class, (the state sent ahead), the mail not yet handled
   (the mailbox, then what was parked; asks keep their askers: a parked ask
   is answered to its asker's node, an ask from the mailbox through the
   source) and its watchers. It forwards any straggler from now on, for
   `LinkConfig.forward_for` after the move; later ones go where the
   directory says.
5. The target starts the class, ``restore(state)``s it with the incarnation
   bumped and queues the shipped mail behind it, before anything new (its
   own sends are held too), then answers ``MOVED``.
6. The source updates the directory (once) and sends ``RELEASE``: every node
   sends what it held, in order, to the target.
7. A node that got no ``HOLD`` (it joined meanwhile) and sees the directory
   move the actor fences what it sent the old home (`_relocate`): it holds,
   and its ``FENCE`` follows its mail to wherever it was forwarded; the
   actor's home answers ``RELEASE`` (`_on_fence`).

A migration that cannot finish leaves the actor where it was, with every
message: fences missing after the timeout, the target unable to start it
or DOWN before the MOVE left, or ``snapshot()`` raising all undo the holds
(and the parked mail goes to the actor, in order; an instance stopped for
the move already is started again from the state it took, with its mailbox
first; the target drops the state sent ahead), and the driver gets
`MigrationError`. A target that goes DOWN after the MOVE left may have run
the shipped mail: the source restarts the actor from the move's snapshot
without it (its asks fail, its tells are dead letters: at most once).

An ask another node sent (parked on the source mid-move and shipped, or a
straggler forwarded) is answered by the new home straight to its asker,
whose pending entry names the node it sent it to. So the node that passes
it on sends the asker's node ``REPOINT`` (the ask's correlation id and the
node that holds it now): a forwarder at once, the source once ``MOVED``
came (before that the source answers for the shipped mail itself if the
target dies). The asker re-points the entry, or fails it at once if that
node is DOWN already; the target's DOWN then fails it (`ActorDeadError`,
at most once) instead of leaving it to its timeout. An ask passed on twice
(two moves in a row) gets two REPOINTs from different nodes, in either
order: each names the actor's incarnation where the ask went, which grows
along its way, so the stale one is ignored (`_repointed`).

A WATCH passed on the same way (a straggler at an old home) names its
watcher's node, which the actor's home registers (not the old home, which
may go away); a WATCH a dead old home had not acknowledged is sent again
where the actor lives (a watch is idempotent).

Failover delivery: an item queued for a peer that goes DOWN and never sent in
a frame cannot have reached it, so a tell, ask or call among them is routed
again once the directory events of the DOWN are applied: to the actor's new
incarnation if the directory restarted it elsewhere (a permanent actor),
else it fails as before. So is mail held for a migration out of that peer
(or a relocation to it), after that unsent mail; and what this node sends the
same actors meanwhile waits behind both (`_rerouting`), so no send of one
sender overtakes an earlier one. An item whose routing again raises fails
(its ask with `ActorDeadError`, its tell a dead letter); the rest goes on.
An item sent in a frame and not acknowledged may have been handled there:
its ask fails with `ActorDeadError` (at most once), its tell is a dead letter.
Asks whose request was acknowledged fail too. While a peer is SUSPECT nothing
is flushed to it, so mail sent in that window waits (at most `down_after`) and
reaches the new incarnation.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pickle
import threading
import uuid
from typing import TYPE_CHECKING, Any

import attrs
import pykka
from pykka import ActorDeadError

from actors._core import STOP, ActorRef, ActorSystem, DeadLetterReason, Future
from actors.cluster import wire
from actors.cluster.address import Address
from actors.cluster.directory import ActorEntry, NodeInfo, NodeStatus
from actors.cluster.faults import DIRECTORY
from actors.cluster.link import Inbox, LinkConfig, Outbox
from actors.cluster.refs import RemoteRef, WatchPoint, decoding
from actors.errors import (
    MessageNotPicklableError,
    MigrationError,
    NodeDownError,
    SystemShutdownError,
    UnknownNodeError,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from actors._core import Clock
    from actors.cluster.faults import Faults

__all__ = ["Node", "NodeStatistics", "ReplySpin"]

_ASK_LEN = 4
"""Fields of an ask or call item; a forwarded one carries the asker's node as a fifth."""
_REPOINT_1_2 = 3
"""Fields of a REPOINT item from a wire 1.2 node (1.3 adds the incarnation)."""
_STOP_ROUNDS, _STOP_ROUND_S = 50, 0.2
"""A node that downed itself waits for its actors to stop in rounds of 0.2 s, 10 s at most."""

_TO_ACTOR = frozenset({wire.TELL, wire.ASK, wire.CALL, wire.WATCH, wire.UNWATCH})
"""Item kinds addressed to an actor (what a migration parks and ships)."""

_REROUTE = frozenset({wire.TELL, wire.ASK, wire.CALL})
"""Item kinds routed again when their destination went DOWN before they were sent."""

_PASS_ON = _REROUTE | {wire.WATCH, wire.UNWATCH}
"""Item kinds an old home passes on to where the directory says the actor lives, after its forward ended."""
_WATCH_LEN = 2
"""Fields of a watch or unwatch item; a forwarded one carries the watcher's node as a third."""

_SETTLE_ROUNDS = 32
"""Most ``sched_yield`` rounds an inline ask waits for its actor's turn elsewhere to end (`Node._run_inline`)."""

_SPIN_MAX, _SPIN_MIN = 256, 8
"""Most and fewest ``sched_yield`` rounds an asker spins for a reply before it blocks (see `ReplySpin`)."""


class ReplySpin:
    """The adaptive spin of a node's askers, for transports whose replies come within microseconds.

    On the memory transport a cross-node ask is two thread hand-offs (the
    callee's dispatcher, then the asker), and a thread that blocks costs a
    wake-up at each: with the GIL, the woken thread also waits until the
    waker has unwound its whole way back (measured: two hops of ~20-40 µs of
    a ~70-140 µs ask). So the asker spins first, yielding the CPU and the GIL
    each round, and the callee's pool is warmed (its listener spins for the
    next ask: `Node._handle`), as the core does for a timed in-process ask
    (`DispatcherPool.settle`). The budget adapts as the core's: doubled
    when a spin found the reply, halved when it gave up, so an asker whose
    replies come late (a slow handler) soon spins ~8 rounds, not 256.

    One per transport, shared by its nodes. Never used on Ray (a reply
    takes ~0.6 ms there).

    Measured in one process, 300-ask blocks alternating with the spin off
    (load 5.5: other processes kept both CPUs busy): median 31-35 µs against
    43-47 µs. Stopping the spin for 50 ms after a yield that took over
    0.2 ms or 1 ms (another process had the CPU) made it 46-49 µs: it
    stopped when the spin still paid.

    On an idle machine (or under ``chrt -f 1``, where a yield returns at
    once) the spin alone saves no wake-up when the two threads are on two
    CPUs: the spinner holds the GIL between its yields, so the thread with
    the work sleeps on the GIL instead (futex traces: ~1.1 sleeps per ask
    on each side, all on the GIL). The memory transport therefore keeps its
    threads on one CPU (`MemoryTransport` ``colocate``), where a hand-off
    is a switch on that CPU.
    """

    __slots__ = ("budget",)

    def __init__(self) -> None:
        self.budget = _SPIN_MAX

    def settle(self, future: _SpunReply) -> None:
        """Spin (yielding) while `future` is not done, up to the budget (the asker's thread)."""
        budget = self.budget
        future.spinning = True  # the thread that completes it yields at once (`Node._complete`)
        for _ in range(budget):
            if future._done:  # noqa: SLF001 - a read-only peek at our own future
                future.spinning = False
                if budget < _SPIN_MAX:
                    self.budget = budget * 2
                return
            _yield()
        future.spinning = False
        if not future._done and budget > _SPIN_MIN:  # noqa: SLF001
            self.budget = budget // 2


_yield = os.sched_yield

_INLINE = threading.local()
"""Per thread: ``ask``, the (node, correlation id) of the untimed ask this thread blocks on and
is sending now; ``deferred``, that ask once delivered here (`Node.send_ask`, `Node._handle`)."""


class _SpunReply(Future[Any]):
    """The future of an ask or call sent from a node whose transport answers within microseconds.

    Its `get` spins for the reply first (`ReplySpin`), then blocks as any future's.
    """

    __slots__ = ("_spin", "spinning")

    def __init__(self, spin: ReplySpin) -> None:
        super().__init__()
        self._spin = spin
        self.spinning = False  # True while its asker spins for it

    def get(self, *, timeout: float | None = None) -> Any:
        if not self._done and timeout != 0:
            self._spin.settle(self)
        return super().get(timeout=timeout)


class _Migration:
    """One migration out of this node (its source), from `Node.migrate_out` to `Node.finish_out`.

    Stages: ``fencing`` (waiting for the peers' fences and, beside them,
    for the snapshot and mailbox taken on the actor's thread: `taken` is
    ``""``, ``"taking"`` once that began, ``"taken"`` once the instance is
    stopped, `snapshot` and `raw` set), ``aborting`` (given up while the take
    was under way: the take starts it here again), ``shipping`` (both done),
    ``shipped`` (MOVE sent, waiting for MOVED), ``moved`` (the target has
    it). Fields change under the node's lock.
    """

    __slots__ = (
        "deadline",
        "done",
        "failed",
        "fenced",
        "incarnation",
        "late",
        "mail",
        "name",
        "parked",
        "peers",
        "raw",
        "restart",
        "snapshot",
        "spec",
        "stage",
        "taken",
        "to",
        "token",
        "waiting",
    )

    def __init__(  # noqa: PLR0917 - private, one call site
        self, name: str, to: str, token: str, spec: bytes, restart: str, peers: list[str], deadline: float
    ) -> None:
        self.name, self.to, self.token, self.spec, self.restart = name, to, token, spec, restart
        self.peers = peers
        self.waiting = set(peers)
        self.deadline = deadline
        self.done: Future[int] = Future()
        self.parked: list[tuple[tuple[Any, ...], str]] = []
        self.stage = "fencing"
        self.taken = ""
        self.raw: list[tuple[Any, Any]] = []  # the mailbox taken with the snapshot: (message, reply future)
        self.incarnation = 0
        self.snapshot: bytes | None = None
        self.mail: list[tuple[tuple[Any, ...], str]] = []
        self.late = False
        self.failed: str | None = None  # why it was undone after the target had it (`finish_out` raises it)
        # (node, token, relayed) of each fence from a node not among `peers` (one that relocated the actor
        # itself: see `Node._relocate`); relayed: passed on to the target, which answers it unless it fails.
        self.fenced: list[tuple[str, str, bool]] = []


@attrs.frozen
class NodeStatistics:
    """A snapshot of one node's link-layer counters."""

    frames: int
    """Sequenced frames sent (retransmissions not counted)."""
    retransmits: int
    """Frames sent again because no ack came within `LinkConfig.retransmit_after`."""
    duplicates: int
    """Frames received twice and dropped."""
    pending_asks: int
    """Asks sent from this node still waiting for a reply."""
    actors: int
    """Cluster actors living on this node."""


class _Pickler(pickle.Pickler):
    """Pickle local `ActorRef`s inside a message as `RemoteRef`s of this node."""

    def __init__(self, file: Any, node: Node) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self._node = node

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, ActorRef):
            return self._node.export(obj).__reduce__()
        return NotImplemented


class Node:
    """One member of a cluster: an `ActorSystem` plus the link layer (see the module doc)."""

    def __init__(
        self,
        name: str,
        *,
        directory: Any,
        send: Callable[[str, int, bytes], None],
        clock: Clock,
        config: LinkConfig,
        faults: Faults | None = None,
        cluster: str = "troupe",
        ray_node: str | None = None,
        dispatchers: int | None = None,
        epoch: int | None = None,
        spin: ReplySpin | None = None,
        on_queued: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self.cluster = cluster
        self.config = config
        self.clock = clock
        self.faults = faults
        self._directory = directory
        self._send = send
        # Given when the caller registered the node already (Ray: to name the node's actor after its epoch).
        self.epoch: int = directory.register(name, ray_node) if epoch is None else epoch
        self.system = ActorSystem(name, clock=clock, dispatchers=dispatchers)
        self._lock = threading.RLock()
        self._corr = itertools.count(1)
        # Given when the transport answers within microseconds (the memory transport on a real clock): askers
        # spin for their replies, and the pool of a local actor asked from another node is warmed (`ReplySpin`).
        self._spin = spin
        self.asker_spins = False
        # Given by a transport whose ticker waits long while the node is `idle` (the memory transport on
        # a real clock): called on the sending thread when work is left for a tick (an item waiting in an
        # outbox, a frame delayed or held back by a fault), so that the ticker does it in time.
        self._on_queued = on_queued
        # Invariant (under _lock): correlation id -> (future, node the ask went to). Every key is one of
        # this node's own ids (`self._corr`): an ask passed on from another node keeps its asker's id and
        # is never entered here (`_pass_on`), so ids from two nodes cannot collide in this table.
        self._pending: dict[int, tuple[Future[Any], str]] = {}
        self._out: dict[str, Outbox] = {}
        self._in: dict[str, Inbox] = {}
        self._peers: dict[str, NodeInfo] = {}
        self._heard: dict[str, float] = {}
        self._locations: dict[str, str] = {}
        # name -> the incarnation `_locations` has it at: an older one (a late poll) never overwrites it
        self._located: dict[str, int] = {}
        # Invariant (under _lock): names being migrated -> items held back for them, in send order. Only
        # this node's own sends are held (`_route`); mail passed on for other nodes is never held here.
        self._holding: dict[str, list[tuple[Any, ...]]] = {}
        # Invariant (under _lock): names with mail of a peer gone DOWN still to be routed again -> (hint, item)
        # in send order: that mail first (its unsent, then what was held for a move out of it), then what this
        # node sent them since, so none overtakes it. Filled in the lock section that marks the peer DOWN
        # (`_node_event`), emptied by one drainer (`_drain_rerouting`) at the end of that directory batch,
        # even one that raised (`apply`).
        self._rerouting: dict[str, list[tuple[str, tuple[Any, ...]]]] = {}
        self._draining = False
        # names held -> (the migration's source node, its token)
        self._hold_src: dict[str, tuple[str, str]] = {}
        # name -> node to forward its stragglers to (this node's own name while it parks them)
        self._forward: dict[str, str] = {}
        # name -> the incarnation of the actor where `_forward` sends it (REPOINT: see `_repointed`)
        self._forward_at: dict[str, int] = {}
        # Invariant (under _lock): correlation id of a pending ask re-pointed -> the incarnation it names.
        self._repointed_at: dict[int, int] = {}
        # name -> when its forward ends (`LinkConfig.forward_for` after the move): then the directory routes stragglers
        self._forward_until: dict[str, float] = {}
        # Invariant (under _lock): migrations out of this node; names being migrated -> items parked, in arrival order.
        self._migrations: dict[str, _Migration] = {}
        self._parked: dict[str, list[tuple[tuple[Any, ...], str]]] = {}
        # Invariant (under _lock): name -> (token, snapshot, source node) sent ahead of its MOVE to this node
        # (STATE items). Each leaves with its MOVE, its source's drop notice, or its source's DOWN (`_peer_down`).
        self._states: dict[str, tuple[str, bytes, str]] = {}
        self._watchpoints: dict[str, WatchPoint] = {}
        # name of a local actor -> nodes watching it
        self._watchers: dict[str, set[str]] = {}
        self._local: dict[str, tuple[ActorRef[Any], int]] = {}  # cluster-spawned actors: ref, incarnation
        self._migrating: set[str] = set()
        self._restart_lock = threading.Lock()
        self._permanent: set[str] = set()  # local actors to snapshot for failover
        self._exports: dict[str, ActorRef[Any]] = {}
        self._delayed: list[tuple[float, str, bytes]] = []
        self._held_back: dict[str, list[bytes]] = {}
        self._seen = 0
        self._started_at = clock.now()
        self._last_snapshots = clock.now()
        self.closed = False
        # Membership (see `tick`): when the directory last answered a poll, why this node downed itself.
        self._directory_heard = clock.now()
        self._downed: str | None = None
        self._actors_stopped = False
        self._suspecting: set[str] = set()  # peers this node reported SUSPECT and has not reported UP since
        # Invariant (under _lock): peers whose last call failed as unavailable; SUSPECT until a call succeeds.
        self._unavailable: set[str] = set()
        self.poll_directory()

    def __repr__(self) -> str:
        return f"<Node {self.name!r} epoch {self.epoch}>"

    # -- refs ------------------------------------------------------------------------

    def ref(self, name: str, node: str | None = None, incarnation: int = 0) -> RemoteRef:
        """Return a `RemoteRef` to actor `name`, bound to this node."""
        return RemoteRef(Address(self.cluster, node or self.name, name, incarnation), self)

    def export(self, ref: ActorRef[Any]) -> RemoteRef:
        """Return a `RemoteRef` for a local actor (an unnamed one gets an exported name)."""
        name = ref.actor_name
        if name is None:
            name = f"~{ref.actor_urn.rsplit(':', 1)[-1]}@{self.name}"
            with self._lock:
                self._exports[name] = ref
        entry = self._local.get(name)
        return self.ref(name, self.name, entry[1] if entry else 0)

    def _dumps(self, value: Any, what: str, *args: Any) -> bytes:
        """Pickle `value`; `what`, formatted with `args` only when it does not pickle, names it in the error.

        Formatted lazily: an f-string per tell cost ~0.3 µs here (loaded), of a send path of ~2 µs.
        """
        try:
            return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # noqa: BLE001 - retried with local refs exported; that one raises a named error
            if args:
                what = what.format(*args)
            import io  # noqa: PLC0415

            buffer = io.BytesIO()
            try:
                _Pickler(buffer, self).dump(value)
            except Exception:  # noqa: BLE001
                return wire.dumps_payload(value, what)
            return buffer.getvalue()

    def _loads(self, data: bytes) -> Any:
        with decoding(self):
            return pickle.loads(data)  # noqa: S301 - bytes from the cluster's own nodes and directory

    # -- the endpoint interface (RemoteRef sends) ---------------------------------------

    def send_tell(self, ref: RemoteRef, message: Any) -> None:
        """Send a tell through this node (the `Endpoint` interface)."""
        address = ref.address
        name = address.name
        payload = self._dumps(message, "message to {!r}", name)
        self._route(name, address.node, (wire.TELL, name, payload), None)

    def send_ask(self, ref: RemoteRef, message: Any, *, inline: bool = False) -> Future[Any]:
        """Send an ask through this node; its reply comes back as a REPLY item.

        `inline`: the caller blocks on the reply with no timeout (`RemoteRef.ask`).
        On a transport that delivers a frame on the thread that sends it (the
        memory transport on a real clock), the handler of an idle pooled actor
        then runs on this thread once the delivery is over (see `_run_inline`).
        """
        payload = self._dumps(message, "ask to {!r}", ref.address.name)
        future: Future[Any] = Future() if self._spin is None else _SpunReply(self._spin)
        corr = next(self._corr)
        item = (wire.ASK, ref.address.name, payload, corr)
        if not inline or self._spin is None:
            self._route(ref.address.name, ref.address.node, item, future)
            return future
        marks = _INLINE.__dict__
        outer = marks.get("ask")
        marks["ask"] = (self.name, corr)  # `_handle` defers this ask if it is delivered on this thread
        try:
            self._route(ref.address.name, ref.address.node, item, future)
        finally:
            marks["ask"] = outer
            deferred = marks.pop("deferred", None)
            if deferred is not None:  # delivered here (it must run): every lock of the delivery is released by now
                deferred()
        return future

    def send_call(self, ref: RemoteRef, attribute: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Future[Any]:
        """Send a proxy method call through this node."""
        payload = self._dumps((attribute, args, kwargs), "call {}() on {!r}", attribute, ref.address.name)
        future: Future[Any] = Future() if self._spin is None else _SpunReply(self._spin)
        corr = next(self._corr)
        self._route(ref.address.name, ref.address.node, (wire.CALL, ref.address.name, payload, corr), future)
        return future

    def send_stop(self, ref: RemoteRef) -> Future[Any]:
        """Stop the actor behind `ref`."""
        return self.send_call(ref, "__stop__", (), {})

    def is_alive(self, ref: RemoteRef) -> bool:
        """Return whether the directory knows the actor on a node that is not DOWN."""
        entry = self._directory.actor(ref.address.name)
        if entry is None:
            local = self._exports.get(ref.address.name)
            return local is not None and local.is_alive()
        return self._status(entry.node) is not NodeStatus.DOWN

    def watch_point(self, ref: RemoteRef) -> WatchPoint:
        """Return this node's watch point for the actor behind `ref` (one per name while it is unfired)."""
        name = ref.address.name
        with self._lock:
            point = self._watchpoints.get(name)
            if point is None or point.fired:
                point = WatchPoint(ref, lambda _point: self._route(name, ref.address.node, (wire.WATCH, name), None))
                self._watchpoints[name] = point
            return point

    # -- routing -----------------------------------------------------------------------

    def _status(self, node: str) -> NodeStatus:
        if node == self.name:
            return NodeStatus.UP
        info = self._peers.get(node)
        if info is None:
            self.poll_directory()
            info = self._peers.get(node)
        return NodeStatus.DOWN if info is None else info.status

    def _locate(self, name: str, hint: str) -> str:
        node = self._locations.get(name)
        if node is not None:
            return node
        entry = self._directory.actor(name)
        node = hint if entry is None else entry.node
        if entry is not None:
            self._locate_at(name, node, entry.incarnation)
        return node

    def _locate_at(self, name: str, node: str, incarnation: int) -> None:
        """Cache that `name` is on `node` at `incarnation`, unless a newer one is known (with or without `_lock`)."""
        with self._lock:
            if incarnation >= self._located.get(name, -1):
                self._locations[name] = node
                self._located[name] = incarnation

    def _route(  # noqa: PLR0917 - positional flags: a keyword-only one unspecializes every tell's call
        self,
        name: str,
        hint: str,
        item: tuple[Any, ...],
        future: Future[Any] | None,
        rerouted: bool = False,  # noqa: FBT001, FBT002
        again: bool = False,  # noqa: FBT001, FBT002
    ) -> None:
        # Invariant: the hold check and the append to the outbox happen under
        # `_lock`, as `hold` sets the hold and appends its fence under it: so
        # no item sent after a fence overtakes it or slips past the hold.
        # Likewise the `_rerouting` check and the append, as `_node_event` marks a
        # peer DOWN and takes its unsent mail into `_rerouting` in one lock section.
        # `rerouted`: the item comes out of `_rerouting` (it is not queued again);
        # `again`: its destination went DOWN while it was being routed (routed once more).
        flush = None
        queued = False
        with self._lock:
            # `_rerouting` first: a hold that begins while mail waits there (a move of the actor's new
            # home) gets that mail first, from the drainer, then this.
            if self._rerouting and not rerouted:
                waiting = self._rerouting.get(name)
                if waiting is not None:
                    self._queue_behind(waiting, hint, item, future)  # behind the mail of a DOWN peer
                    return
            held = self._holding.get(name)
            if held is not None:
                if future is not None:
                    self._pending[item[3]] = (future, "")
                held.append(item)
                return
            # The common case: a known actor on an UP peer (one lock, no directory).
            dst = self._locations.get(name)
            if dst is not None and dst != self.name:
                info = self._peers.get(dst)
                outbox = self._out.get(dst)
                if info is not None and outbox is not None and info.status is NodeStatus.UP:
                    if future is not None:
                        self._pending[item[3]] = (future, dst)
                    if outbox.append(item, self.clock.now()):
                        flush = outbox
                    else:
                        queued = True  # it waits for the tick (or a fuller outbox)
        # `_appended`, written out: this is every tell's path.
        if flush is not None:
            self._flush(flush, force=True)
            return
        if queued:
            if self._on_queued is not None:
                self._on_queued()
            return
        dst = self._locate(name, hint)
        if self._status(dst) is not NodeStatus.UP:
            # The cache may be behind a failover the directory already made: ask it once. Not while
            # mail for `name` waits for `dst` (SUSPECT here): this goes behind it, and the DOWN this
            # node is yet to learn routes both again, in order (`_node_event`).
            entry = self._directory.actor(name)
            if entry is not None and entry.node != dst and not self._waits_for(dst, name):
                dst = entry.node
                self._locate_at(name, dst, entry.incarnation)
        if dst != self.name:
            with self._lock:  # the check and the append in one section with the DOWN (see above)
                waiting = self._rerouting.get(name) if self._rerouting and not rerouted else None
                if waiting is not None:
                    self._queue_behind(waiting, hint, item, future)
                    return
                info = self._peers.get(dst)
                outbox = self._out.get(dst)
                down = info is not None and info.status is NodeStatus.DOWN
                if not down and info is not None and outbox is not None:
                    if future is not None:
                        self._pending[item[3]] = (future, dst)
                    flush = outbox if outbox.append(item, self.clock.now()) and info.status is NodeStatus.UP else None
                    queued = flush is None
            if self._appended(flush, queued):
                return
            if down and not again and item[0] in _REROUTE:
                # It went DOWN since `dst` was chosen: its mail is routed again, and this behind it.
                self._route(name, dst, item, future, rerouted=rerouted, again=True)
                return
        self._send_item(dst, item, future)

    def _queue_behind(
        self, waiting: list[tuple[str, tuple[Any, ...]]], hint: str, item: tuple[Any, ...], future: Future[Any] | None
    ) -> None:
        """Queue `item` in `waiting`, a name's `_rerouting` list, its future pending (under `_lock`)."""
        if future is not None:
            self._pending[item[3]] = (future, "")
        waiting.append((hint, item))

    def _appended(self, flush: Outbox | None, queued: bool) -> bool:  # noqa: FBT001
        """After an append to an outbox: flush it now, or wake the ticker for it; False if neither was made."""
        if flush is not None:
            self._flush(flush, force=True)
            return True
        if queued:
            if self._on_queued is not None:
                self._on_queued()
            return True
        return False

    def _waits_for(self, dst: str, name: str) -> bool:
        """Return whether mail of this node for `name` waits unsent in the outbox to `dst` (slow path only)."""
        with self._lock:
            outbox = self._out.get(dst)
            if outbox is None:
                return False
            with outbox.lock:
                return any(item[1] == name and item[0] in _REROUTE for item in outbox.items)

    def _send_item(self, dst: str, item: tuple[Any, ...], future: Future[Any] | None) -> None:
        if future is not None:
            with self._lock:
                self._pending[item[3]] = (future, dst)
        if dst == self.name:
            self._handle(item, self.name)
            return
        status = self._status(dst)
        if status is NodeStatus.DOWN:
            self._undeliverable(item, dst)
            return
        # The append in the section that finds the outbox: a DOWN takes the outbox (and routes its unsent
        # mail again) in the lock section that marks the peer DOWN (`_node_event`), so an item appended
        # outside it could land in an outbox nobody sends or drains any more: lost, not even a dead letter.
        with self._lock:
            outbox = self._outbox(dst)
            flush = outbox is not None and outbox.append(item, self.clock.now()) and status is NodeStatus.UP
        if outbox is None:  # DOWN meanwhile: the item never reached an outbox
            self._undeliverable(item, dst)
            return
        if flush:
            self._flush(outbox, force=True)
        elif self._on_queued is not None:
            self._on_queued()  # it waits for the tick (or a fuller outbox, or the peer UP again)

    def _outbox(self, dst: str) -> Outbox | None:
        outbox = self._out.get(dst)
        if outbox is None:
            info = self._peers.get(dst)
            if info is None:
                self.poll_directory()  # a node that joined since the last tick
                info = self._peers.get(dst)
            if info is None or info.status is NodeStatus.DOWN:
                return None
            outbox = self._out.get(dst)
            if outbox is not None:
                return outbox
            outbox = self._out[dst] = Outbox(self.name, self.epoch, dst, self.config)
        return outbox

    def _undeliverable(self, item: tuple[Any, ...], dst: str) -> None:
        kind = item[0]
        if kind in (wire.ASK, wire.CALL):
            asker = self._asker(item)
            if asker == self.name:
                self._fail_ask(item[3], dst, item[1])
            else:  # passed on for another node: its correlation id is the asker's, not one of this node's
                text = f"actor {item[1]!r} on node {dst!r} cannot answer: the node is DOWN (the ask failed, not hung)"
                self._reply_error(asker, item[3], text)
        elif kind == wire.TELL:
            try:
                message = self._loads(item[2])
            except Exception:  # noqa: BLE001 - a dead letter must still be recorded
                message = item[2]
            self.system.dead_letters.record(message, self.ref(item[1], dst), DeadLetterReason.NODE_DOWN)  # type: ignore[arg-type]
        elif kind == wire.WATCH:
            home = self._locations.get(item[1])
            if not self.closed and home is not None and home != dst and self._status(home) is not NodeStatus.DOWN:
                # `dst` was only an old home (it may have passed the watch on, or not): watch it again where it
                # lives (a watch is idempotent), instead of reporting the death of a node it has left.
                self._send_item(home, item, None)
                return
            watcher = self._watcher(item, self.name)
            if watcher == self.name:
                self._terminated(item[1], self._node_down(dst))
            else:  # passed on for another node: it watches, and learns that the actor's node is DOWN
                self._send_item(watcher, (wire.TERMINATED, item[1], self._dumps(self._node_down(dst), "reason")), None)

    @staticmethod
    def _watcher(item: tuple[Any, ...], src: str) -> str:
        """The node that watches with WATCH or UNWATCH `item` from `src`: its watcher, if another node passed it on."""
        return str(item[2]) if len(item) > _WATCH_LEN else src

    def _asker(self, item: tuple[Any, ...]) -> str:
        """The node whose pending table has the ask or call `item`: its asker, if another node passed it on."""
        return str(item[4]) if len(item) > _ASK_LEN else self.name

    def _pass_on(self, dst: str, item: tuple[Any, ...], src: str, incarnation: int) -> None:
        """Forward `item` (from `src`) to `dst`, where the actor is at `incarnation`.

        An ask or call keeps its asker's node, and that node learns where it
        went (REPOINT); a watch or unwatch keeps its watcher's node, so the
        actor's home registers the real watcher, not this node (which may go
        away): `Terminated` reaches the watcher straight from it.
        """
        forwarded = item[0] in {wire.ASK, wire.CALL}
        first = len(item) == (_ASK_LEN if forwarded else _WATCH_LEN)  # not passed on before: name its sender
        if first and item[0] != wire.TELL:
            item = (*item, src)
        self._send_item(dst, item, None)
        if forwarded:
            self._repoint(item, dst, incarnation)

    def _repoint(self, item: tuple[Any, ...], dst: str, incarnation: int) -> None:
        """Tell the asker of ask `item` (if on another node) that node `dst` answers it now, at `incarnation`."""
        asker = self._asker(item)
        if asker != self.name:
            self._send_item(asker, (wire.REPOINT, item[3], dst, incarnation), None)

    def _repointed(self, corr: int, node: str, incarnation: int | None) -> None:
        """A REPOINT (delivery thread): `node` answers ask `corr` now; fail it at once if `node` is DOWN.

        An ask passed on twice (two moves in a row, or a forward to a home the
        actor has left since) gets two REPOINTs, from different nodes, so in
        either order: each names the incarnation of the actor at its node, which
        grows along the ask's way, so the one naming an older incarnation than
        an entry was re-pointed to is stale and ignored. One from a 1.2 node
        (no incarnation) is applied as 1.2 did.

        Against `_peer_down` of `node` on another thread: that node's status is
        DOWN in `_peers` before `_peer_down` collects the entries pointing at
        it, so an entry re-pointed after the collection sees DOWN here.
        """
        with self._lock:
            entry = self._pending.get(corr)
            if entry is None:
                return  # answered, failed or given up already
            if incarnation is not None:
                if incarnation <= self._repointed_at.get(corr, -1):
                    return  # stale: it has been passed on further since
                self._repointed_at[corr] = incarnation
            self._pending[corr] = (entry[0], node)
        if self._status(node) is NodeStatus.DOWN:
            self._fail_ask(corr, node, "?")

    def _node_down(self, node: str) -> NodeDownError:
        msg = f"node {node!r} of cluster {self.cluster!r} is DOWN"
        return NodeDownError(msg)

    def _fail_ask(self, corr: int, dst: str, name: str) -> None:
        with self._lock:
            entry = self._pending.pop(corr, None)
            if self._repointed_at:
                self._repointed_at.pop(corr, None)
        if entry is not None:
            who = "an actor" if name == "?" else f"actor {name!r}"
            msg = f"{who} on node {dst!r} cannot answer: the node is DOWN (the ask failed, it did not hang)"
            fail(entry[0], ActorDeadError(msg))

    # -- sending frames -------------------------------------------------------------------

    def _ack_for(self, dst: str) -> int:
        inbox = self._in.get(dst)
        return 0 if inbox is None else inbox.delivered

    def _flush(self, outbox: Outbox, *, force: bool = False) -> None:
        data = outbox.take(self.clock.now(), self._ack_for(outbox.dst), force=force)
        if data is not None:
            self._transmit(outbox.dst, data)
            outbox.sent(self.clock.now())

    def _transmit(self, dst: str, data: bytes) -> None:
        info = self._peers.get(dst)
        if info is None:
            return
        faults = self.faults
        if faults is None:
            self._send(dst, info.epoch, data)
            return
        copies, delay, hold = faults.plan(self.name, dst)
        if copies == 1 and not delay and not hold and not self._held_back.get(dst):
            self._send(dst, info.epoch, data)  # no fault on the link, nothing held back on it: no lock
            return
        if copies == 0:
            return
        with self._lock:
            held, self._held_back[dst] = self._held_back.get(dst, []), []
            if hold:
                self._held_back[dst] = [data] * copies
                copies = 0
            if delay:
                due = self.clock.now() + delay
                self._delayed.extend((due, dst, data) for _ in range(copies))
                self._delayed.extend((due, dst, d) for d in held)
        if delay or hold:
            if self._on_queued is not None:
                self._on_queued()  # the tick sends it when due, or after the next frame
            if delay:
                return
        for _ in range(copies):
            self._send(dst, info.epoch, data)
        for d in held:
            self._send(dst, info.epoch, d)

    # -- receiving ---------------------------------------------------------------------

    def receive(self, data: bytes, *, may_block: bool = True) -> bool:
        """Take one frame from the transport (the delivery thread); False if it was not taken.

        With `may_block` False (a thread that must not block, such as Ray's
        callback thread), a frame that would need the directory first (see the
        fencing below) is not taken: the caller passes it on to a thread that
        may block. Otherwise the frame is taken (or dropped as stale): True.
        """
        if self.closed:
            return True
        frame = wire.decode(data)
        src = frame.src
        with self._lock:
            info = self._peers.get(src)
            now = self.clock.now()
            fresh = (
                not self.closed
                and info is not None
                and info.epoch == frame.src_epoch
                and info.status is NodeStatus.UP
                and now - self._heard.get(src, 0.0) < self.config.suspect_after
            )
            if fresh:  # the common case, in one lock section: an UP peer heard from lately
                self._heard[src] = now
                outbox = self._out.get(src)
                inbox = self._in.get(src)
        if not fresh or inbox is None:
            # Fencing: a frame from a node unknown, SUSPECT or silent for a while is checked
            # against the directory's fresh view first (outside the lock: on Ray it is a call),
            # so a stale incarnation the cluster declared DOWN (a healed partition, a resumed
            # hung process) is never delivered from, even by a node whose view had not caught up.
            if not fresh:
                if not may_block:
                    return False
                self.poll_directory()
            with self._lock:
                info = self._peers.get(src)
                if self.closed or info is None or info.epoch != frame.src_epoch or info.status is NodeStatus.DOWN:
                    return True  # a node we do not know, or one declared DOWN: quarantined
                self._heard[src] = self.clock.now()
                outbox = self._out.get(src)
                inbox = self._in.get(src)
                if inbox is None:
                    inbox = self._in[src] = Inbox()
        if outbox is not None and frame.ack:
            outbox.acked(frame.ack, self.clock.now())
        inbox.accept(frame, self._deliver_frame)
        return True

    def _deliver_frame(self, frame: wire.Frame) -> None:
        src = frame.src
        handle = self._handle
        tell = wire.TELL
        lookup = self.system.lookup
        loads = pickle.loads
        forward = self._forward
        # One decoding context per frame, not per item; the common item (a
        # tell to a live local actor) takes the short path.
        with decoding(self):
            for item in frame.items:
                try:
                    if item[0] == tell and item[1] not in forward:
                        ref = lookup(item[1])
                        if ref is not None:
                            try:  # noqa: SIM105 - contextlib.suppress built an object per tell: ~0.3 µs of ~1
                                ref.tell(loads(item[2]))
                            except ActorDeadError:
                                pass  # a dead letter, recorded by the ref
                            continue
                    handle(item, src)
                except Exception:  # noqa: BLE001 - one bad item must not stop the link
                    self._log_bad_item(item)

    def _log_bad_item(self, item: tuple[Any, ...]) -> None:
        from loguru import logger  # noqa: PLC0415

        logger.opt(exception=True).error("Node {} could not handle item {!r:.100}", self.name, item)

    def _lookup_local(self, name: str) -> ActorRef[Any] | None:
        ref = self.system.lookup(name)
        if ref is None and name.startswith("~"):
            ref = self._exports.get(name)
        return ref

    def _handle(self, item: tuple[Any, ...], src: str) -> None:
        kind = item[0]
        if kind == wire.REPLY:
            self._complete(item[1], item[2], item[3])
            return
        if kind == wire.TERMINATED:
            self._terminated(item[1], self._loads(item[2]))
            return
        if kind not in _TO_ACTOR:
            self._handle_migration(item, src)
            return
        name = item[1]
        if name in self._parked:
            with self._lock:
                parked = self._parked.get(name)
                if parked is not None:  # it is being migrated from here: shipped with it, in order
                    parked.append((item, src))
                    return
        ref = self._lookup_local(name)
        if ref is None or name in self._migrating:
            forward = self._forward.get(name)
            if forward is not None and forward != self.name:
                # A straggler for an actor that moved: forward it (an ask's reply still goes to its asker).
                self._pass_on(forward, item, src, self._forward_at.get(name, 0))
                return
        if ref is None and not name.startswith("~"):
            # Placed here by the directory (a failover) before this node's poll saw it: start it now.
            entry = self._restart_here(name)
            ref = self._lookup_local(name)
            home = None if entry is None or entry.node == self.name else entry
            if ref is None and home is not None and kind in _PASS_ON and self._status(home.node) is not NodeStatus.DOWN:
                # A straggler after the forward's grace period: where the directory says it lives now.
                self._pass_on(home.node, item, src, home.incarnation)
                return
        if kind in (wire.ASK, wire.CALL) and len(item) == _ASK_LEN + 1:
            src = item[4]  # forwarded: the reply goes to the original asker
        if kind == wire.TELL:
            if ref is None:
                recipient: Any = self.ref(name)  # a RemoteRef stands for the recipient
                self.system.dead_letters.record(self._loads(item[2]), recipient, DeadLetterReason.RECIPIENT_STOPPED)
                return
            with contextlib.suppress(ActorDeadError):  # recorded as a dead letter by the ref
                ref.tell(self._loads(item[2]))
        elif kind in (wire.ASK, wire.CALL):
            corr = item[3]
            if ref is None:
                self._reply_error(src, corr, f"actor {name!r} is not running on node {self.name!r} (it has stopped)")
                return
            if kind == wire.ASK:
                if _INLINE.__dict__.get("ask") == (src, corr):
                    # Its asker blocks on this thread, untimed: run it here after the delivery (`send_ask`).
                    _INLINE.ask = None
                    _INLINE.deferred = lambda: self._run_inline(ref, item, src)
                    return
                future = ref.ask(self._loads(item[2]), block=False)
            else:
                attribute, args, kwargs = self._loads(item[2])
                if attribute == "__stop__":
                    future = ref.stop(block=False)
                else:
                    future = getattr(ref.proxy(), attribute)(*args, **kwargs)
            future.add_done_callback(lambda f: self._reply(src, corr, f))
            if self._spin is not None:
                # Its pool's listener spins after this turn: the asker's next ask costs it no wake-up.
                warm = getattr(ref.actor_inbox.executor, "warm", None)
                if warm is not None:
                    warm()
        elif kind == wire.WATCH:
            watcher = self._watcher(item, src)
            if ref is None:
                self._send_item(watcher, (wire.TERMINATED, name, self._dumps(None, "reason")), None)
                return
            self._add_watcher(name, ref, watcher)
        elif kind == wire.UNWATCH:
            with self._lock:
                self._watchers.get(name, set()).discard(self._watcher(item, src))

    def _run_inline(self, ref: ActorRef[Any], item: tuple[Any, ...], src: str) -> None:
        """Post ask `item` from `src`, deferred by `_handle`, running its handler on this thread if the actor is idle.

        The asker's thread, which blocks on the reply with no timeout (as the
        core's inline ask: a running handler cannot be abandoned, so a timed
        ask never runs inline), once the frame's delivery is over: no lock
        of the link is held, so a handler that asks another node itself is
        delivered as any sender's. An actor that is busy, not pooled, or
        nested too deep is posted to as usual (`ActorRef._post_ask`). Both
        threads' hand-offs of the cross-node ask go (the callee's dispatcher,
        then the asker's wake-up): on an idle 2-CPU machine each cost 40-70 µs.
        One that began migrating, or stopped, meanwhile takes `_handle`'s way.
        """
        name = item[1]
        if self.closed or name in self._forward or name in self._migrating or not ref.actor_inbox.alive:
            self._handle(item, src)
            return
        corr = item[3]
        try:
            message = self._loads(item[2])
        except Exception:  # noqa: BLE001 - the asker hears of it, and the log
            self._log_bad_item(item)
            self._reply_error(src, corr, f"the ask to actor {name!r} could not be decoded on node {self.name!r}")
            return
        cell = ref.actor_inbox
        if cell.sched.locked():
            # A turn ending on a dispatcher of its pool (the one that answered this asker's last ask
            # through the pool, say): let it end, then run this one here, or each ask would follow it there.
            for _ in range(_SETTLE_ROUNDS):
                _yield()
                if not cell.sched.locked():
                    break
        future: Future[Any] = Future()
        future.add_done_callback(lambda f: self._reply(src, corr, f))
        ref._post_ask(message, future, inline=True)  # noqa: SLF001 - the core's seam for inline asks

    def _reply_error(self, dst: str, corr: int, text: str) -> None:
        self._send_item(dst, (wire.REPLY, corr, False, self._dumps(ActorDeadError(text), "error")), None)

    def _reply(self, dst: str, corr: int, future: Any) -> None:
        try:
            value = future.get(timeout=0)
            ok = True
        except BaseException as exc:  # noqa: BLE001 - the asker gets it
            value, ok = exc, False
        try:
            payload = self._dumps(value, "reply to ask #{}", corr)
        except MessageNotPicklableError as exc:
            payload, ok = self._dumps(exc, "error"), False
        except Exception as exc:  # noqa: BLE001
            payload, ok = self._dumps(RuntimeError(repr(exc)), "error"), False
        self._send_item(dst, (wire.REPLY, corr, ok, payload), None)

    def _complete(self, corr: int, ok: bool, payload: bytes) -> None:  # noqa: FBT001 - the item's fields
        with self._lock:
            entry = self._pending.pop(corr, None)
            if self._repointed_at:
                self._repointed_at.pop(corr, None)
        if entry is None:
            return  # its asker gave up, or it was failed when its node went DOWN
        try:
            value = self._loads(payload)
        except Exception:  # noqa: BLE001
            entry[0].set_exception()
            return
        future = entry[0]
        if ok:
            future.set(value)
        else:
            fail(future, value)
        if type(future) is _SpunReply and future.spinning:
            self.asker_spins = True  # the transport yields once this delivery is over (a hint: any thread)

    # -- death watch --------------------------------------------------------------------

    def _add_watcher(self, name: str, ref: ActorRef[Any], node: str) -> None:
        with self._lock:
            watchers = self._watchers.setdefault(name, set())
            first = not watchers
            watchers.add(node)
        if first and name not in self._local:
            ref.actor_inbox.on_terminated(lambda cell: self._local_terminated(name, cell), key=("cluster-watch", self))

    def _local_terminated(self, name: str, cell: Any) -> None:
        if self.closed:
            return  # the node itself is going away: the directory hears of it through the detector or `leave`
        with self._lock:
            if name in self._migrating:
                self._migrating.discard(name)
                return  # it moves on: its watchers go with it
            entry = self._local.get(name)
            if entry is not None:
                if entry[0].actor_inbox is not cell:
                    return  # an older instance of it ending late: the one living here is another
                del self._local[name]
            watchers = self._watchers.pop(name, set())
        if entry is not None:
            self._directory.remove_actor(name, self.name, entry[1])
        if watchers:
            reason = cell.reason
            try:
                payload = pickle.dumps(reason)
            except Exception:  # noqa: BLE001
                payload = pickle.dumps(RuntimeError(repr(reason)))
            for node in watchers:
                self._send_item(node, (wire.TERMINATED, name, payload), None)

    def _terminated(self, name: str, reason: BaseException | None) -> None:
        with self._lock:
            point = self._watchpoints.pop(name, None)
        if point is not None:
            point.fire(reason)

    # -- the directory and the failure detector -------------------------------------------

    @property
    def seen(self) -> int:
        """How many directory events this node has applied."""
        return self._seen

    def poll_directory(self) -> None:
        """Apply the directory's new events (topology, locations); nothing if a fault cuts it off."""
        if not self.reaches_directory():
            return
        version, events = self._directory.changes(self._seen)
        self.apply(version, events)

    def reaches_directory(self) -> bool:
        """Return whether no injected partition cuts this node off the directory (`faults.DIRECTORY`)."""
        faults = self.faults
        return faults is None or not faults.cut(self.name, DIRECTORY)

    def apply(self, version: int, events: list[tuple[Any, ...]]) -> None:
        """Apply directory events from `self._seen` up to `version` (any thread): a fresh answer of the directory."""
        self._directory_heard = self.clock.now()
        with self._lock:
            if version <= self._seen:
                return
            events = events[len(events) - (version - self._seen) :]
            self._seen = version
        moved_from: dict[str, str] = {}  # name -> where this node located it before this batch moved it
        try:
            for event in events:
                if event[0] == "node":
                    self._node_event(event[1])
                elif event[0] == "actor":
                    _, name, node, incarnation, why = event
                    with self._lock:
                        if name not in self._holding:
                            before = self._locations.get(name)
                            # A poll may bring events older than a RELEASE already applied: never go back.
                            self._locate_at(name, node, incarnation)
                            if why is None and before not in {None, node} and self._locations.get(name) == node:
                                moved_from.setdefault(name, before)
                    if why == "restart" and node == self.name:
                        self._restart_here(name)
                elif event[0] == "gone":
                    with self._lock:
                        if self._locations.get(event[1]) == event[2]:
                            del self._locations[event[1]]
                            self._located.pop(event[1], None)  # the name may be spawned again, from incarnation 0
        finally:
            # After the whole batch: a DOWN and the failover it made come in one (see `Directory.report`).
            # Also after an event that raised (a directory call failing, say): this batch's events are
            # applied (`_seen`) and no later batch may come, and what waits here holds up later mail too.
            if self._rerouting:
                self._drain_rerouting()
        for name, old in moved_from.items():
            self._relocate(name, old)

    def _relocate(self, name: str, old: str) -> None:
        """`name` moved from `old` without this node holding for it: fence what it sent there first.

        A node that got no HOLD for a migration (it joined meanwhile, or the
        source did not know it yet) may have sent mail to the old home that
        is still on its way there, to be forwarded; mail sent straight to the
        new home could overtake it. So it holds its new mail for `name` and
        sends a FENCE to `old` behind that mail; `old` forwards the fence after
        the mail it forwarded, and the node where the actor lives answers
        RELEASE to this one (see `_on_fence`), which then sends what it held.
        """
        if old == self.name:
            return
        with self._lock:
            info = self._peers.get(old)
            if name in self._holding or info is None or info.status is NodeStatus.DOWN:
                return
            token = f"{self.name}#{self.epoch}:{next(self._corr)}"
            self._holding[name] = []
            self._hold_src[name] = (old, token)
            self._send_item(old, (wire.FENCE, name, token, self.name), None)  # under the hold (see `_route`)
        self._flush_to(old)

    def _reroute(self, down: str, item: tuple[Any, ...]) -> None:
        """Route again an item that never left for `down` (now DOWN): to the actor's new home, or it fails.

        An item whose routing raises (a directory call failing, on Ray) is logged and fails: its ask
        with `ActorDeadError` unless it went to another node before (its reply or that node's DOWN
        ends it), its tell as a dead letter, a held WATCH with `Terminated` (node down) to its watcher.
        """
        future = None
        if item[0] in {wire.ASK, wire.CALL} and self._asker(item) != self.name:
            self._undeliverable(item, down)  # its asker was told `down` holds it (REPOINT): it fails there too
            return
        if item[0] in {wire.ASK, wire.CALL}:
            with self._lock:
                entry = self._pending.pop(item[3], None)
            if entry is None:
                return  # its asker gave up
            future = entry[0]
        try:
            self._route(item[1], down, item, future, rerouted=True)
        except Exception:  # noqa: BLE001 - logged, and the item fails: the drain goes on with the rest
            self._log_bad_item(item)
            if future is not None:
                with self._lock:
                    entry = self._pending.get(item[3])
                    stuck = not future.done() and (entry is None or entry[1] in {"", self.name})
                    if stuck:
                        self._pending.pop(item[3], None)
                if stuck:
                    text = f"actor {item[1]!r}: its ask could not be routed again after node {down!r} went DOWN"
                    fail(future, ActorDeadError(text))
            else:  # a tell: a dead letter; a held WATCH (`_end_holds`): its watcher hears of the DOWN
                self._undeliverable(item, down)

    def _drain_rerouting(self) -> None:
        """Route again what waits in `_rerouting`, in order; a name leaves it when found empty (any thread).

        One thread drains at a time: another that comes meanwhile leaves it to
        the one draining, which takes one item at a time under `_lock` and so
        also routes what was queued while it ran.
        """
        with self._lock:
            if self._draining:
                return
            self._draining = True
        try:
            while True:
                with self._lock:
                    name = next(iter(self._rerouting), None)
                    if name is None:
                        self._draining = False
                        return
                    waiting = self._rerouting[name]
                    if not waiting:
                        del self._rerouting[name]  # what is sent to it from now on goes straight
                        continue
                    hint, item = waiting.pop(0)
                self._reroute(hint, item)
        except BaseException:
            with self._lock:
                self._draining = False
            raise

    def _node_event(self, info: NodeInfo) -> None:
        if info.name == self.name:
            if info.epoch == self.epoch and info.status is NodeStatus.DOWN:
                # The cluster declared this incarnation DOWN (Orleans: a silo that reads itself dead
                # in the membership table stops): its actors run again elsewhere, so these must stop.
                self._down_self("the cluster declared it DOWN", tell_directory=False)
            return
        taken: tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]] = ([], [])
        with self._lock:
            old = self._peers.get(info.name)
            self._peers[info.name] = info
            if info.status is NodeStatus.DOWN:
                # In the section that marks it DOWN: its unsent mail, then what was held for a move out
                # of it (sent after that mail), go to `_rerouting`, ahead of whatever this node sends the
                # same actors from now on (`_route`).
                if old is None or old.epoch == info.epoch:
                    outbox = self._out.pop(info.name, None)
                    taken = outbox.drain_parts() if outbox is not None else ([], [])
                    for item in taken[1]:
                        if item[0] in _REROUTE:
                            self._rerouting.setdefault(item[1], []).append((info.name, item))
                self._end_holds(info.name)
            if old is None or old.epoch != info.epoch:
                self._heard[info.name] = self.clock.now() + self.config.join_grace
                stale = self._out.pop(info.name, None)
                self._in.pop(info.name, None)
            else:
                stale = None
        if stale is not None:
            for item in stale.drain():
                self._undeliverable(item, info.name)
        if info.status is NodeStatus.DOWN:
            self._peer_down(info.name, taken)
        elif info.status is NodeStatus.UP:
            outbox = self._out.get(info.name)
            if outbox is not None:
                self._flush(outbox, force=True)

    def _end_holds(self, node: str) -> None:
        """End the holds whose RELEASE DOWN `node` will not send (under `_lock`, marking it DOWN).

        Held for a migration out of it, or for a relocation to it: what was held goes to
        `_rerouting` (every kind, in order, as a RELEASE would send it), behind the unsent mail
        of `node` for it (sent before the hold began).
        """
        mine = f"{self.name}#{self.epoch}:"
        for name in [
            n
            for n, (source, token) in self._hold_src.items()
            if source == node or (token.startswith(mine) and self._locations.get(n) == node)
        ]:
            del self._hold_src[name]
            held = self._holding.pop(name, [])
            if held:
                self._rerouting.setdefault(name, []).extend((node, item) for item in held)

    def _peer_down(self, node: str, taken: tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]) -> None:
        """Fail what `node` may have had; what never left for it is routed again (`_rerouting`).

        `taken`: (sent, unsent) of its outbox, taken when it was marked DOWN (`_node_event`),
        its unsent mail put in `_rerouting` then (an outbox of an older epoch of it is dead-lettered).
        """
        self._suspecting.discard(node)
        with self._lock:
            self._unavailable.discard(node)
            self._in.pop(node, None)
            # States sent ahead of a move from it: neither their MOVE nor their drop notice can come now.
            for name in [n for n, (_, _, src) in self._states.items() if src == node]:
                del self._states[name]
        sent, unsent = taken
        never_moved = {item[1] for item in unsent if item[0] == wire.MOVE}  # MOVEs that never left for it
        unsent_asks = {
            item[3]
            for item in unsent
            if item[0] in {wire.ASK, wire.CALL} and self._asker(item) == self.name  # in `_rerouting`
        }
        with self._lock:
            for name in [n for n, to in self._forward.items() if to == node]:
                del self._forward[name]  # an old home of an actor whose new one died: the directory has it
                self._forward_until.pop(name, None)
            migrations = list(self._migrations.values())
            failed = [corr for corr, (_, dst) in self._pending.items() if dst == node and corr not in unsent_asks]
            watched = [
                name
                for name in self._watchpoints
                if self._locations.get(name, self._watchpoints[name].ref.address.node) == node
            ]
            for watchers in self._watchers.values():
                watchers.discard(node)
        for item in sent + [item for item in unsent if item[0] not in _REROUTE]:
            self._undeliverable(item, node)
        for corr in failed:
            self._fail_ask(corr, node, "?")
        for name in watched:
            self._terminated(name, self._node_down(node))
        for m in migrations:
            self._migration_peer_down(m, node, moved=m.name not in never_moved)

    def _migration_peer_down(self, m: _Migration, node: str, *, moved: bool) -> None:
        """`node` went DOWN during migration `m`; `moved`: the MOVE may have reached it (it was sent in a frame)."""
        if node == m.to and m.stage == "fencing":
            self._abort(m, f"node {node!r} went DOWN")
        elif node == m.to and m.stage == "shipped" and not moved:
            self._recover(m, f"node {node!r} went DOWN before the actor was sent to it")
        elif node == m.to and m.stage in {"shipped", "moved"}:
            # It may have run the shipped mail (the MOVE left in a frame; MOVED maybe lost): at most once.
            self._recover(m, f"node {node!r} went DOWN after the actor was sent to it", delivered=True)
        elif m.stage == "fencing":
            with self._lock:
                m.waiting.discard(node)
                m.peers = [peer for peer in m.peers if peer != node]
                complete = m.stage == "fencing" and not m.waiting and m.taken == "taken"
                if complete:
                    m.stage = "shipping"
            if complete:
                self._ship(m)

    def tick(self) -> None:
        """Flush, retransmit, heartbeat, poll the directory, detect failures (the ticker thread).

        Membership, the split-brain rule (Akka's keep-majority, with the
        directory as a witness vote, as Akka's lease-majority and Orleans'
        membership table use one): the voters are the members not DOWN (this
        node included) and the directory. A node has quorum while it heard
        from a majority of them within `suspect_after`; only then may it report
        a silent peer DOWN. A node that has not heard from a majority for
        `down_after` less one `heartbeat_every` (so before the others' bound
        for declaring it DOWN runs out) downs itself: it stops its actors,
        refuses traffic, and reports itself DOWN if it reaches the directory.
        """
        if self.closed:
            if self._downed is not None and not self._actors_stopped:
                self._stop_actors_after_down()
            return
        now = self.clock.now()
        config = self.config
        with self._lock:
            peers = list(self._peers.values())
        quorum_silence = self.quorum_silence(now, peers)
        if quorum_silence >= config.down_after - config.heartbeat_every:
            self._down_self(f"it heard from no majority of the cluster for {quorum_silence:.3g} s", tell_directory=True)
            self._stop_actors_after_down()
            return
        quorum = quorum_silence < config.suspect_after
        with self._lock:
            due = [d for d in self._delayed if d[0] <= now]
            if due:
                self._delayed = [d for d in self._delayed if d[0] > now]
        for _, dst, data in due:
            info = self._peers.get(dst)
            if info is not None and info.status is not NodeStatus.DOWN:
                self._send(dst, info.epoch, data)
        for info in peers:
            if info.status is NodeStatus.DOWN or info.name == self.name:
                continue
            with self._lock:
                outbox = self._outbox(info.name)
            if outbox is None:
                continue
            ack = self._ack_for(info.name)
            if info.status is NodeStatus.UP:
                frame = outbox.take(now, ack)
                if frame is not None:
                    self._transmit(info.name, frame)
                    outbox.sent(self.clock.now())
                for again in outbox.due_again(now):
                    self._transmit(info.name, again)
                with self._lock:
                    held = self._held_back.pop(info.name, [])
                for data in held:
                    self._send(info.name, info.epoch, data)
            beat = outbox.heartbeat(now, ack)
            if beat is not None:
                self._transmit(info.name, beat)
            silent = now - self._heard.get(info.name, now)
            if silent >= config.down_after:
                if quorum:  # keep-majority: a node on the minority side downs nobody (it downs itself)
                    self.report(info.name, info.epoch, NodeStatus.DOWN)
            elif silent >= config.suspect_after and info.name not in self._suspecting:
                self.report(info.name, info.epoch, NodeStatus.SUSPECT)
            elif silent < config.suspect_after and info.name in self._suspecting and info.name not in self._unavailable:
                # Only a suspecter takes its suspicion back; one that suspects for failed calls, once one succeeds.
                self.report(info.name, info.epoch, NodeStatus.UP)
        if self._migrations:
            with self._lock:
                late = [m for m in self._migrations.values() if m.stage in {"fencing", "taking"} and now >= m.deadline]
            for m in late:
                waiting = f"the fences of nodes {sorted(m.waiting)}" if m.waiting else "its snapshot"
                self._abort(m, f"{waiting} did not come in time")
        if self._forward_until:
            self._end_forwards(now)
        if config.snapshot_every is not None and now - self._last_snapshots >= config.snapshot_every:
            self._last_snapshots = now
            self.save_snapshots()

    def idle(self) -> bool:
        """Return whether no tick is due soon: nothing waits in an outbox, no frame is delayed or held, no move runs.

        Then the tick has only periodic work (heartbeats, retransmits, the
        detector, snapshots), none of it due within a `heartbeat_every`, and a
        transport may tick less often (the memory transport's ticker, which
        `on_queued` wakes when work is left for it). Racy reads, any thread: a hint.
        """
        if self.closed:
            return self._downed is None or self._actors_stopped
        if self._delayed or self._migrations or any(self._held_back.values()):
            return False
        return not any(outbox.items for outbox in list(self._out.values()))

    def _end_forwards(self, now: float) -> None:
        """Drop the forwards whose grace period is over (the tick): a later straggler goes where the directory says."""
        with self._lock:
            for name in [n for n, until in self._forward_until.items() if until <= now]:
                del self._forward_until[name]
                if self._forward.get(name) not in {None, self.name}:  # not parking for a new move of it
                    del self._forward[name]
                    self._forward_at.pop(name, None)

    def forwarding(self) -> dict[str, str]:
        """Return the actors that moved away whose stragglers this node still forwards, and where to."""
        with self._lock:
            return {name: node for name, node in self._forward.items() if node != self.name}

    def migrations(self) -> dict[str, str]:
        """Return the migrations out of this node under way: actor name -> stage (see `_Migration`)."""
        with self._lock:
            return {name: m.stage for name, m in self._migrations.items()}

    def save_snapshots(self) -> None:
        """Save the snapshot of every local permanent actor that has one in the directory (without waiting)."""
        with self._lock:
            local = [(name, ref, inc) for name, (ref, inc) in self._local.items() if name in self._permanent]
        for name, ref, incarnation in local:
            self._save_snapshot(name, ref, incarnation)

    def _save_snapshot(self, name: str, ref: ActorRef[Any], incarnation: int) -> None:
        """Have the actor take its snapshot in its turn, and keep it in the directory (without waiting)."""

        def save(f: Any) -> None:
            try:
                data = self._dumps(f.get(timeout=0), f"snapshot of {name!r}")
            except Exception:  # noqa: BLE001 - logged; the last good snapshot stays
                from loguru import logger  # noqa: PLC0415

                logger.opt(exception=True).warning("Node {}: no snapshot of {!r}", self.name, name)
                return
            self._directory.save_snapshot(name, incarnation, data)

        ref.proxy().snapshot().add_done_callback(save)

    def dead_letter_count(self, reason: str) -> int:
        """Return how many dead letters this node recorded with `reason` (a `DeadLetterReason` value)."""
        return int(self.system.dead_letters.statistics().by_reason.get(DeadLetterReason(reason), 0))

    def call_failed(self, node: str, epoch: int) -> None:
        """A call to `node` (incarnation `epoch`) failed as unavailable (the transport's thread): it is SUSPECT.

        Tier 1 of the failure detector: nothing new is flushed to it, and it
        stays SUSPECT until a call to it succeeds (`call_ok`; the heartbeats
        still sent to a SUSPECT peer are the probes), even while its own
        frames still arrive (hearing from it is not reaching it).
        """
        with self._lock:
            info = self._peers.get(node)
            if info is None or info.epoch != epoch or info.status is NodeStatus.DOWN:
                return
            self._unavailable.add(node)
        self.report(node, epoch, NodeStatus.SUSPECT)

    def call_ok(self, node: str) -> None:
        """A call to `node` succeeded (the transport's thread): a suspicion for failed calls may end on the tick."""
        if self._unavailable:
            with self._lock:
                self._unavailable.discard(node)

    def report(self, node: str, epoch: int, status: NodeStatus) -> None:
        """Tell the directory what this node's detector concluded about a peer (and apply it here at once).

        The directory refuses it if it holds this node DOWN (fencing: see `Directory.report`).
        """
        if status is NodeStatus.SUSPECT:
            self._suspecting.add(node)
        elif status is NodeStatus.UP:
            self._suspecting.discard(node)
        if not self.reaches_directory():
            return
        if self._directory.report(node, epoch, status, by=(self.name, self.epoch)):
            self.poll_directory()

    def quorum_silence(self, now: float, peers: list[NodeInfo] | None = None) -> float:
        """Return how long ago this node last heard from a majority of the voters (see `tick`)."""
        if peers is None:
            with self._lock:
                peers = list(self._peers.values())
        heard = [now, self._directory_heard]
        heard.extend(self._heard.get(p.name, now) for p in peers if p.status is not NodeStatus.DOWN)
        heard.sort(reverse=True)
        return now - heard[len(heard) // 2]

    def location(self, name: str) -> str | None:
        """Return where this node sends mail for actor `name` now (cached), or None while it holds it or knows none."""
        with self._lock:
            return None if name in self._holding else self._locations.get(name)

    def peers(self) -> list[NodeInfo]:
        """Return this node's topology view: every other node it knows of, as it last heard."""
        with self._lock:
            return list(self._peers.values())

    def down_reason(self) -> str | None:
        """Return why this node downed itself (None while it has not)."""
        return self._downed

    def running_names(self) -> list[str]:
        """Return the names of the cluster actors running here (none once the node downed itself)."""
        with self._lock:
            local = list(self._local.items())
        return sorted(name for name, (ref, _) in local if ref.is_alive())

    def _down_self(self, why: str, *, tell_directory: bool) -> None:
        """Down this node (any thread): refuse traffic at once, fail its asks; its actors stop on the next tick.

        The actors are stopped on the tick, not here: this may run on one of
        their own threads (a poll made while sending), which cannot wait for
        its actor to stop.
        """
        with self._lock:
            if self.closed:
                return
            self.closed = True
            self._downed = why
            pending, self._pending = list(self._pending.values()), {}
            self._repointed_at.clear()
            outboxes, self._out = list(self._out.values()), {}
            self._in.clear()
            # Mail held or parked for a migration: its asks are in `pending` (ours) or fail at
            # their askers' nodes when this one is DOWN (theirs); its tells become dead letters.
            stranded = [item for items in self._holding.values() for item in items if item[0] == wire.TELL]
            stranded += [item for items in self._parked.values() for item, _ in items if item[0] == wire.TELL]
            self._holding.clear()
            self._parked.clear()
        for item in stranded:
            self._undeliverable(item, self.name)
        from loguru import logger  # noqa: PLC0415

        logger.error("Node {} (epoch {}) downed itself: {}; its actors stop", self.name, self.epoch, why)
        if tell_directory and self.reaches_directory():
            with contextlib.suppress(Exception):  # out of reach: the others find out by its silence
                self._directory.report(self.name, self.epoch, NodeStatus.DOWN, by=(self.name, self.epoch))
        self._abandon(pending, outboxes, why)

    def _abandon(self, pending: list[tuple[Future[Any], str]], outboxes: list[Outbox], why: str) -> None:
        for future, dst in pending:
            msg = f"an ask from node {self.name!r} to node {dst or '?'!r} was abandoned: the node downed itself ({why})"
            fail(future, ActorDeadError(msg))
        for outbox in outboxes:
            for item in outbox.drain():
                self._undeliverable(item, outbox.dst)

    def _stop_actors_after_down(self) -> None:
        # Asks its actors make while they stop are failed between rounds, so none of them waits
        # out its timeout (and the stop with it); an actor that never returns is given up on.
        self._actors_stopped = True
        why = self._downed or "stopped"
        for _ in range(_STOP_ROUNDS):
            with self._lock:
                pending, self._pending = list(self._pending.values()), {}
                outboxes, self._out = list(self._out.values()), {}
            self._abandon(pending, outboxes, why)
            try:
                self.system.shutdown(timeout=_STOP_ROUND_S)
            except SystemShutdownError:
                continue
            break
        else:
            from loguru import logger  # noqa: PLC0415

            logger.error("Node {}: actors still running {} s after it downed itself", self.name, _STOP_ROUNDS * 0.2)
        with self._lock:  # what its actors sent while they stopped
            pending, self._pending = list(self._pending.values()), {}
            outboxes, self._out = list(self._out.values()), {}
        self._abandon(pending, outboxes, why)

    # -- control operations (spawn, stop, migrate steps) --------------------------------

    def spawn(self, name: str, spec: bytes, restart: str, incarnation: int, snapshot: bytes | None) -> None:
        """Start actor `name` from its pickled spec (and snapshot) and record it in the directory."""
        _, restored = self._start(name, spec, restart, incarnation, snapshot)
        if restored is not None:
            restored.get()

    def _start(
        self, name: str, spec: bytes, restart: str, incarnation: int, snapshot: bytes | None
    ) -> tuple[ActorRef[Any], Future[Any] | None]:
        """Start actor `name`; return its ref and the future of its ``restore(state)`` (queued first), if any."""
        cls, args, kwargs, mode = self._loads(spec)
        ref = self.system.spawn(cls, *args, name=name, mode=mode, restart=restart, **kwargs)
        restored = None if snapshot is None else self._restore(ref, self._loads(snapshot))
        with self._lock:
            self._local[name] = (ref, incarnation)
            self._locations[name] = self.name
            self._located[name] = max(incarnation, self._located.get(name, -1))
            self._forward.pop(name, None)
            self._forward_until.pop(name, None)
            if restart == "permanent" and callable(getattr(cls, "snapshot", None)):
                self._permanent.add(name)
        ref.actor_inbox.on_terminated(lambda cell: self._local_terminated(name, cell), key=("cluster-watch", self))
        return ref, restored

    @staticmethod
    def _restore(ref: ActorRef[Any], state: Any) -> Future[Any]:
        """Run ``restore(state)`` on a new actor before any message (after ``on_start``); a future of its end."""
        cell = ref.actor_inbox
        if cell.aio is not None:  # its restore may be a coroutine: a proxy call awaits it
            future: Future[Any] = ref.proxy().restore(state)
            return future
        done: Future[Any] = Future()

        def restore(cell: Any) -> None:  # a system message: ahead of the mail queued behind it
            try:
                done.set(cell.actor.restore(state))
            except Exception:  # noqa: BLE001 - the caller hears of it
                done.set_exception()

        cell.post_system(restore)
        return done

    def _restart_here(self, name: str) -> ActorEntry | None:
        """Start `name` if the directory placed it here and it is not running; return the directory's entry."""
        with self._restart_lock:
            entry: ActorEntry | None = self._directory.actor(name)
            if entry is None or entry.node != self.name or name in self._local or entry.incarnation == 0:
                return entry
            self._restart_entry(name, entry)
            return entry

    def _restart_entry(self, name: str, entry: ActorEntry) -> None:
        try:
            self.spawn(name, entry.spec, entry.restart, entry.incarnation, entry.snapshot)
        except Exception:  # noqa: BLE001 - logged; the rest of the node goes on
            from loguru import logger  # noqa: PLC0415

            logger.opt(exception=True).error("Node {} could not restart {!r} after its node went DOWN", self.name, name)

    # -- migration, node to node (see the module doc) ------------------------------------

    def migrate_out(  # noqa: PLR0917 - a control operation, called with positional arguments over Ray
        self, name: str, to: str, token: str, spec: bytes, restart: str, timeout: float
    ) -> Future[int]:
        """Start moving local actor `name` to node `to`; return a future of its new incarnation.

        The future is set once the target has the actor (then call
        `finish_out`), or fails with `MigrationError` (the actor stays here,
        with all its mail). Steps 1-5 of the module doc run on the delivery
        and actor threads; this only starts them.
        """
        future: Future[int] = Future()
        if to not in self._peers:
            self.poll_directory()  # a node that joined since the last poll
        with self._lock:
            info = self._peers.get(to)
            problem: str | None = None
            error: type[Exception] = MigrationError
            if name not in self._local:
                problem = f"it is not on node {self.name!r}"
            elif name in self._migrations:
                problem = "it is being migrated already"
            elif info is None or info.status is not NodeStatus.UP:
                problem = f"node {to!r} is {'unknown' if info is None else info.status}: pick an UP node"
                error = UnknownNodeError
            if problem is not None:
                fail(future, error(f"cannot migrate {name!r} from {self.name!r} to {to!r}: {problem}"))
                return future
            peers = sorted(n for n, i in self._peers.items() if i.status is NodeStatus.UP and n != self.name)
            m = _Migration(name, to, token, spec, restart, peers, self.clock.now() + timeout)
            m.incarnation = self._local[name][1] + 1
            self._migrations[name] = m
            self._parked[name] = m.parked
            self._forward[name] = self.name  # off the tells' short path, into `_handle`, which parks
            self._holding.setdefault(name, [])  # this node's own sends to it wait too
            self._hold_src[name] = (self.name, token)
        for peer in peers:
            self._send_item(peer, (wire.HOLD, name, token, self.name), None)
            self._flush_to(peer)
        self._take(m)  # beside the fences (step 3)
        if not peers:
            self._fence(name, token, "")
        return m.done

    def finish_out(self, name: str, future: Future[int], timeout: float) -> int:
        """Wait up to `timeout` for `migrate_out`'s `future`, then finish: directory, then RELEASE; the incarnation.

        Raises:
            MigrationError: the migration failed (the actor is where the
                message says), or it did not end in time: then it is given
                up if not shipped yet, else finished when the target answers.
        """
        with self._lock:
            started = self._migrations.get(name)
        try:
            future.get(timeout=timeout)
        except pykka.Timeout:
            with self._lock:
                m = self._migrations.get(name)
                if m is not None and m.stage == "moved":
                    pass  # it came just now
                elif m is not None and m.stage in {"shipping", "shipped"}:
                    m.late = True  # `_moved` finishes it
                    msg = f"migrating {name!r} from {self.name!r} to {m.to!r}: node {m.to!r} has not answered yet"
                    raise MigrationError(msg) from None
                else:
                    m = None
            if m is None:
                self._abort_named(name, f"it did not end within {timeout} s")
                future.get(timeout=5.0)  # raises the abort's MigrationError (a take under way ends it first)
        with self._lock:
            m = self._migrations.get(name)
            if m is None or m.stage != "moved":
                failed = started.failed if started is not None else None
                msg = failed or f"node {self.name!r} has no finished migration of {name!r} to complete"
                raise MigrationError(msg)
        return self._finish(m)

    def _finish(self, m: _Migration) -> int:
        with self._lock:
            if self._migrations.get(m.name) is not m:
                if m.failed is not None:  # its target went DOWN as it finished: started again here
                    raise MigrationError(m.failed)
                return m.incarnation
            del self._migrations[m.name]
            m.snapshot, m.mail = None, []
            # Stragglers (from nodes whose view lags) are forwarded for a grace period, then routed by the directory.
            self._forward_until[m.name] = self.clock.now() + self.config.forward_for
        # Without the state (1 MB of it cost ~20 ms on Ray here): the target
        # saves a fresh snapshot of a permanent actor once it is released.
        self._directory.add_actor(ActorEntry(m.name, m.to, m.incarnation, m.spec, m.restart))
        self._release_all(m, m.to)
        return m.incarnation

    def _abort_named(self, name: str, why: str) -> None:
        with self._lock:
            m = self._migrations.get(name)
        if m is not None:
            self._abort(m, why)

    def _flush_to(self, dst: str) -> None:
        outbox = self._out.get(dst)
        if outbox is not None and self._status(dst) is NodeStatus.UP:
            self._flush(outbox, force=True)

    def _handle_migration(self, item: tuple[Any, ...], src: str) -> None:
        kind = item[0]
        if kind == wire.HOLD:
            self.hold(item[1], item[3], item[2])
        elif kind == wire.FENCE:
            self._on_fence(item)
        elif kind == wire.STATE:
            self._on_state(item[1], item[2], item[3], src)
        elif kind == wire.MOVE:
            self._move_in(item, src)
        elif kind == wire.MOVED:
            self._moved(item[1], item[2], ok=item[3], error=item[4])
        elif kind == wire.RELEASE:
            self.release(item[1], item[2], item[3], item[4])
        elif kind == wire.REPOINT:
            self._repointed(item[1], item[2], item[3] if len(item) > _REPOINT_1_2 else None)

    def hold(self, name: str, source: str, token: str) -> None:
        """Step 2 on a peer: buffer new mail for `name`, and fence the mail already sent to it."""
        with self._lock:  # RLock: the fence is appended under the same hold (see `_route`)
            self._holding.setdefault(name, [])
            self._hold_src[name] = (source, token)
            dst = self._locations.get(name, source)
            if dst == self.name:
                dst = source
            self._send_item(dst, (wire.FENCE, name, token, self.name), None)
        self._flush_to(dst)

    def _on_fence(self, item: tuple[Any, ...]) -> None:
        """A FENCE from `fencer`: every item it sent to `name` before it has arrived here.

        The fence of a migration's peer completes that migration's fencing.
        Another (a node that relocated the actor itself, see `_relocate`) is
        answered where the actor is, once the mail it fences is there: an old
        home passes it on to where it forwards (after that mail, on the same
        link); a source still parking keeps it for the migration's RELEASE;
        the actor's home answers RELEASE at once; a node that has it not asks
        the directory where it is and passes it on there (or answers RELEASE
        itself if it is nowhere: what was held comes here and is dead-lettered).
        """
        _, name, token, fencer = item
        with self._lock:
            m = self._migrations.get(name)
            ours = m is not None and m.token == token
            if not ours:
                forward = self._forward.get(name)
                if forward is not None and forward != self.name:
                    # An old home: the fence follows the mail it fences, which this node forwarded there.
                    if m is not None:
                        m.fenced.append((fencer, token, True))  # answered here if the move is undone
                    self._send_item(forward, item, None)
                    to: str | None = forward
                elif m is not None:
                    m.fenced.append((fencer, token, False))  # its mail is parked: it goes with the move
                    return
                elif name in self._local:
                    self._send_item(fencer, (wire.RELEASE, name, self.name, token, self._local[name][1]), None)
                    to = fencer
                else:
                    to = None
        if ours:
            self._fence(name, token, fencer)
            return
        if to is not None and to != fencer and self._status(to) is NodeStatus.DOWN:
            to = None  # forwarded to a node that died since: the directory knows where it restarted
        if to is None:
            entry = self._directory.actor(name)  # rare: a fence for an actor that moved on or stopped
            if entry is not None and entry.node != self.name and self._status(entry.node) is not NodeStatus.DOWN:
                self._send_item(entry.node, item, None)
                to = entry.node
            else:
                self._send_item(fencer, (wire.RELEASE, name, self.name, token, 0), None)
                to = fencer
        self._flush_to(to)

    def _fence(self, name: str, token: str, fencer: str) -> None:
        with self._lock:
            m = self._migrations.get(name)
            if m is None or m.token != token or m.stage != "fencing":
                return
            m.waiting.discard(fencer)
            if m.waiting or m.taken != "taken":
                return  # the take ships it when it ends, if the fences are in by then
            m.stage = "shipping"
        self._ship(m)

    def _take(self, m: _Migration) -> None:
        """Step 3: on the actor's thread, after the message in hand: snapshot, take the mailbox, stop; send the state.

        Runs beside the fences (from `migrate_out`); whichever of the two ends
        last ships the MOVE (`_ship`).
        """
        with self._lock:
            entry = self._local.get(m.name)
        if entry is None:
            self._abort(m, "it stopped before it could be moved")
            return
        ref, incarnation = entry
        m.incarnation = incarnation + 1

        def take(cell: Any) -> None:  # a system message: runs between two of the actor's messages
            with self._lock:
                if self._migrations.get(m.name) is not m or m.stage != "fencing" or m.taken:
                    return  # given up meanwhile: the actor stays
                m.taken = "taking"
            try:
                data = self._dumps(cell.actor.snapshot(), f"snapshot of {m.name!r}")
            except Exception as exc:  # noqa: BLE001 - the migration fails; the actor stays
                with self._lock:
                    m.taken = ""
                self._abort(m, f"its snapshot() raised {exc!r}")
                return
            mail = cell.take_mail()
            with self._lock:
                self._migrating.add(m.name)  # its end is a move: watchers and directory stay
            STOP(cell)
            # Ahead of the MOVE on the same link: the state travels while the fences come in.
            self._send_item(m.to, (wire.STATE, m.name, m.token, data), None)
            self._flush_to(m.to)
            with self._lock:
                m.snapshot, m.raw, m.taken = data, mail, "taken"
                aborting = m.stage == "aborting"
                ship = m.stage == "fencing" and not m.waiting
                if ship:
                    m.stage = "shipping"
            if aborting:
                self._abort(m, m.failed or "it was given up")
            elif ship:
                self._ship(m)

        cell = ref.actor_inbox
        if cell.aio is None:
            cell.post_system(take)
        else:
            # An asyncio actor's turn may be suspended in a handler, and a
            # system message runs beside it: its snapshot waits its turn
            # instead (the mail queued before is handled here, not shipped).
            ref.proxy().snapshot().add_done_callback(lambda _f: cell.post_system(take))

    def _mail_items(self, m: _Migration, mail: list[tuple[Any, Any]], node: str) -> list[tuple[tuple[Any, ...], str]]:
        """The mailbox `mail` taken from `m`'s actor as items; its asks are answered here, by way of `node`."""
        items: list[tuple[tuple[Any, ...], str]] = []
        for message, reply_to in mail:
            try:
                payload = self._dumps(message, f"message to {m.name!r} (shipped with it to {m.to!r})")
            except MessageNotPicklableError as exc:
                if reply_to is not None:
                    fail(reply_to, exc)
                else:
                    self.system.dead_letters.record(message, self.ref(m.name), DeadLetterReason.RECIPIENT_STOPPED, exc)  # type: ignore[arg-type]
                continue
            if reply_to is None:
                items.append(((wire.TELL, m.name, payload), self.name))
                continue
            corr = next(self._corr)  # the target answers here, and this node answers the asker
            with self._lock:
                self._pending[corr] = (reply_to, node)
            items.append(((wire.ASK, m.name, payload, corr, self.name), self.name))
        return items

    def _ship(self, m: _Migration) -> None:
        """Step 4 (stage ``shipping``): send MOVE with the mail not yet handled, in order (the state went ahead)."""
        items = self._mail_items(m, m.raw, m.to)
        with self._lock:
            for item, src in self._parked.pop(m.name, []):
                forwarded = item[0] in {wire.ASK, wire.CALL} and len(item) == _ASK_LEN
                items.append(((*item, src) if forwarded else item, src))
            watchers = sorted(self._watchers.pop(m.name, set()))
            self._local.pop(m.name, None)
            self._permanent.discard(m.name)
            self._forward[m.name] = m.to  # stragglers follow it, after the MOVE on the same link
            self._forward_at[m.name] = m.incarnation
            m.stage = "shipped"
            m.mail, m.raw = items, []  # to start it here again if the target cannot (from `m.snapshot`)
            # Under the lock that set the forward: a straggler forwarded meanwhile cannot overtake the MOVE.
            self._send_item(
                m.to, (wire.MOVE, m.name, m.spec, m.restart, m.incarnation, None, items, watchers, m.token), None
            )
        self._flush_to(m.to)
        if self._status(m.to) is NodeStatus.DOWN:  # it went DOWN while this was shipping
            self._recover(m, f"node {m.to!r} went DOWN")

    def _on_state(self, name: str, token: str, data: bytes | None, src: str) -> None:
        """A STATE from `src` (on the target): keep the state sent ahead of the MOVE of `token`, or drop it (None).

        The drop notice (None) comes when the move was given up; it is lost
        with its source if that node goes DOWN first (crashed, or downed
        itself on the minority side of a partition), and so is the MOVE: then
        `_peer_down` drops the state instead.
        """
        with self._lock:
            if data is not None:
                self._states[name] = (token, data, src)
            elif name in self._states and self._states[name][0] == token:
                del self._states[name]

    def held_states(self) -> list[str]:
        """Return the names whose state was sent ahead of a move to this node and is held for its MOVE."""
        with self._lock:
            return sorted(self._states)

    def _move_in(self, item: tuple[Any, ...], src: str) -> None:
        """Step 5 on the target: start it, queue its restore and the shipped mail behind that; answer MOVED."""
        _, name, spec, restart, incarnation, snapshot, mail, watchers, token = item
        if snapshot is None:  # sent ahead, in a STATE item on this link
            with self._lock:
                ahead = self._states.pop(name, None)
            snapshot = ahead[1] if ahead is not None and ahead[0] == token else None
        try:
            if snapshot is None:
                ref, restored = None, None
            else:
                ref, restored = self._start(name, spec, restart, incarnation, snapshot)
        except Exception as exc:  # noqa: BLE001 - the source starts it again
            ref, error = None, repr(exc)
        else:
            error = f"the state sent ahead of its move (token {token}) did not arrive"
        if ref is None:
            self._send_item(src, (wire.MOVED, name, token, False, error), None)
            self._flush_to(src)
            return
        for node in watchers:
            self._add_watcher(name, ref, node)
        for shipped, origin in mail:
            self._handle(shipped, origin)
        # At once, not after the restore has run (a thread hop: ~5 ms on a
        # loaded Ray node here): nothing can overtake it, it runs first.
        self._send_item(src, (wire.MOVED, name, token, True, None), None)
        self._flush_to(src)
        if restored is not None:
            restored.add_done_callback(lambda future: self._restored(name, future))

    def _restored(self, name: str, future: Any) -> None:
        try:
            future.get(timeout=0)
        except Exception:  # noqa: BLE001 - logged: the actor runs on, in the state its constructor gave it
            from loguru import logger  # noqa: PLC0415

            logger.opt(exception=True).error(
                "Node {}: restore(state) of {!r} raised after its migration here; it runs on from its constructor's "
                "state, with its mail",
                self.name,
                name,
            )

    def _moved(self, name: str, token: str, *, ok: bool, error: str | None) -> None:
        with self._lock:
            m = self._migrations.get(name)
            if m is None or m.token != token or m.stage != "shipped":
                return
            m.stage = "moved"
        if not ok:
            self._recover(m, f"node {m.to!r} could not start it ({error})")
            return
        for shipped, _src in m.mail:  # the target answers these askers itself now, and may die after the move
            if shipped[0] in {wire.ASK, wire.CALL}:
                self._repoint(shipped, m.to, m.incarnation)
        m.done.set(m.incarnation)
        if m.late:  # its driver gave up waiting: finish here
            with contextlib.suppress(MigrationError):  # undone meanwhile: nothing to finish
                self._finish(m)

    def _abort(self, m: _Migration, why: str) -> None:
        """Undo a migration not shipped yet: the actor stays, gets what was parked, in order; holds end.

        An instance stopped for the move already (`m.taken`) is started again
        here from the state it took, its mailbox first; one being taken is
        left to the take, which calls this again when it has stopped it.
        """
        with self._lock:
            if self._migrations.get(m.name) is not m or m.stage not in {"fencing", "aborting"}:
                return
            if m.taken == "taking":
                m.stage, m.failed = "aborting", why
                return
            del self._migrations[m.name]
            parked = self._parked.pop(m.name, [])
            if self._forward.get(m.name) == self.name:
                del self._forward[m.name]
            restart = m.taken == "taken"
        if restart:
            try:
                self._start(m.name, m.spec, m.restart, m.incarnation - 1, m.snapshot)
            except Exception:  # noqa: BLE001 - logged; its mail becomes dead letters below
                from loguru import logger  # noqa: PLC0415

                logger.opt(exception=True).error("Node {} could not start {!r} again", self.name, m.name)
            for item, src in self._mail_items(m, m.raw, self.name):
                self._handle(item, src)
            m.raw, m.snapshot = [], None
            if self._status(m.to) is not NodeStatus.DOWN:
                self._send_item(m.to, (wire.STATE, m.name, m.token, None), None)  # the target drops the state
                self._flush_to(m.to)
        for item, src in parked:
            self._handle(item, src)
        self._release_all(m, self.name)
        msg = f"migrating {m.name!r} from {self.name!r} to {m.to!r} failed: {why}; it stays on {self.name!r}"
        fail(m.done, MigrationError(msg))

    def _recover(self, m: _Migration, why: str, *, delivered: bool = False) -> None:
        """Undo a migration whose target cannot have it: start it here again from the snapshot taken for it.

        The shipped mail is handled again only if it cannot have reached the
        target (`delivered` False: the target refused it, or the MOVE never
        left). Else the target may have run it before it went DOWN, and it is
        settled as any mail that may have reached a dead node (at most once,
        as the failover): its asks fail with `ActorDeadError`, its tells are
        NODE_DOWN dead letters; the actor restarts from the snapshot, without them.
        """
        with self._lock:
            if self._migrations.get(m.name) is not m:
                return
            del self._migrations[m.name]
            if self._forward.get(m.name) == m.to:
                del self._forward[m.name]
        try:
            self._start(m.name, m.spec, m.restart, m.incarnation - 1, m.snapshot)
        except Exception:  # noqa: BLE001 - logged; its mail becomes dead letters below
            from loguru import logger  # noqa: PLC0415

            logger.opt(exception=True).error("Node {} could not start {!r} again", self.name, m.name)
        for item, src in m.mail:
            if delivered and item[0] in _REROUTE:
                self._settle_delivered(m, item)
            else:
                self._handle(item, src)
        self._release_all(m, self.name)
        if delivered:
            msg = (
                f"migrating {m.name!r} from {self.name!r} to {m.to!r} failed: {why}; it was started again on "
                f"{self.name!r} from the snapshot taken for the move, without the mail shipped with it (node {m.to!r} "
                "may have handled it: at most once, its asks failed and its tells are NODE_DOWN dead letters)"
            )
        else:
            msg = (
                f"migrating {m.name!r} from {self.name!r} to {m.to!r} failed: {why}; "
                f"it was started again on {self.name!r} from its snapshot, with its mail"
            )
        m.failed = msg
        if not m.done.done():
            fail(m.done, MigrationError(msg))

    def _settle_delivered(self, m: _Migration, item: tuple[Any, ...]) -> None:
        """Settle an item shipped to `m.to` (DOWN now, it may have run it): fail the ask, or dead-letter the tell."""
        if item[0] == wire.TELL:
            self._undeliverable(item, m.to)
            return
        corr, asker = item[3], item[4] if len(item) > _ASK_LEN else self.name
        if asker == self.name:
            self._fail_ask(corr, m.to, m.name)  # an ask from the mailbox, answered through this node
        else:
            text = (
                f"actor {m.name!r} may have handled this on node {m.to!r}, which went DOWN while it was migrated "
                "there; it is not run again (at most once)"
            )
            self._reply_error(asker, corr, text)

    def _release_all(self, m: _Migration, node: str) -> None:
        """Step 6: tell every node that held mail for `m.name` where it lives now (this one at once)."""
        incarnation = m.incarnation if node == m.to else m.incarnation - 1
        with self._lock:
            # A relayed fence is answered by the target, if it has the actor; here if it never will.
            late = [(fencer, token) for fencer, token, relayed in m.fenced if node == self.name or not relayed]
        for peer, token in [(peer, m.token) for peer in m.peers] + late:
            if self._status(peer) is not NodeStatus.DOWN:
                self._send_item(peer, (wire.RELEASE, m.name, node, token, incarnation), None)
                self._flush_to(peer)
        self.release(m.name, node, m.token, incarnation)

    def release(self, name: str, node: str, token: str | None = None, incarnation: int = 0) -> None:
        """`name` lives on `node` now: send what was held for it there, in order (a RELEASE, or its source DOWN).

        The hold stays while what it held is sent, in rounds: a send made
        meanwhile joins the hold and goes in the next round, never before an
        older one; the hold ends (under the lock) with a round found empty.
        """
        with self._lock:
            hold = self._hold_src.get(name)
            if token is not None and hold is not None and hold[1] != token:
                return  # the release of an earlier migration of it
            self._hold_src.pop(name, None)
            arrived = self._local.get(name) if node == self.name and name in self._permanent else None
            if name in self._forward and node != self.name and not self._migrations.get(name):
                self._forward[name] = node
                self._forward_at[name] = incarnation
        while True:
            with self._lock:
                held = self._holding.get(name)
                if not held:
                    self._holding.pop(name, None)
                    self._locations[name] = node
                    self._located[name] = max(incarnation, self._located.get(name, -1))
                    break
                self._holding[name] = []
                for item in held:
                    if item[0] in {wire.ASK, wire.CALL} and item[3] in self._pending:
                        self._pending[item[3]] = (self._pending[item[3]][0], node)
            for item in held:
                self._send_item(node, item, None)
        if arrived is not None and token is not None:
            self._save_snapshot(name, *arrived)  # migrated here: the directory has its entry, not its state

    def stop_actor(self, name: str) -> bool:
        """Stop local actor `name` for good; return whether it was running."""
        ref = self._lookup_local(name)
        return bool(ref is not None and ref.stop())

    def local_names(self) -> list[str]:
        """Return the names of the cluster actors living here."""
        with self._lock:
            return sorted(self._local)

    def statistics(self) -> NodeStatistics:
        """Return a snapshot of the link layer's counters."""
        with self._lock:
            return NodeStatistics(
                frames=sum(o.frames for o in self._out.values()),
                retransmits=sum(o.retransmits for o in self._out.values()),
                duplicates=sum(i.duplicates for i in self._in.values()),
                pending_asks=len(self._pending),
                actors=len(self._local),
            )

    def shutdown(self, *, timeout: float | None = None) -> None:
        """Stop every actor and the system; pending asks fail."""
        self.closed = True
        with self._lock:
            pending, self._pending = list(self._pending.items()), {}
            self._repointed_at.clear()
        for corr, (future, dst) in pending:
            msg = f"ask #{corr} to node {dst!r} abandoned: node {self.name!r} shut down"
            fail(future, ActorDeadError(msg))
        self.system.shutdown(timeout=timeout)


def fail(future: Future[Any], exc: BaseException) -> None:
    """Complete `future` with the exception `exc` (its asker's `get` raises it)."""
    future.set_exception((type(exc), exc, exc.__traceback__))


def new_name(cls: type) -> str:
    """Return a fresh cluster name for an actor of `cls` spawned without one."""
    return f"{cls.__name__}-{uuid.uuid4().hex[:8]}"


def client_request(node: Node, kind: int, name: str, hint: str, payload: bytes) -> Future[Any] | None:
    """Route a request from the driver's client as if sent on `node` (a future for asks and calls).

    A closed node (downed, crashed, shut down) refuses it: an ask fails at once, a tell is a dead letter.
    """
    if node.closed:
        if kind == wire.TELL:
            node._undeliverable((kind, name, payload), node.name)  # noqa: SLF001
            return None
        refused: Future[Any] = Future()
        why = node.down_reason() or "it is stopped"
        fail(refused, ActorDeadError(f"node {node.name!r} refused a request for {name!r}: {why}"))
        return refused
    if kind == wire.TELL:
        node._route(name, hint, (wire.TELL, name, payload), None)  # noqa: SLF001
        return None
    future: Future[Any] = Future()
    node._route(name, hint, (kind, name, payload, next(node._corr)), future)  # noqa: SLF001
    return future
