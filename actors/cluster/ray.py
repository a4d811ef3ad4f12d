"""`RayTransport`: troupe nodes on Ray, one node per Ray actor process.

Measured on a 2-CPU machine with Ray 2.60 (shared/research/scaleout-ray.md):
one Ray call per message gives 3-6k msg/s, one call carrying 1,000 messages
~360k msg/s, so frames carry whole outbox flushes. The layout:

- the directory is one named Ray actor (``<cluster>/directory``) wrapping
  `Directory`, on the Ray head node; it reads ``ray.nodes()`` every 200 ms
  and downs every node whose Ray node is dead (the Ray tier of the detector);
  nodes and drivers find it by name, and find nodes through it;
- each node is a named Ray actor (``<cluster>/node/<name>#<epoch>``) hosting a
  `Node`, created with ``max_restarts=0, max_task_retries=0`` (a retried call
  would break the per-submitter order the data path relies on);
- its data method `deliver` (and the driver's `client_tell`, `client_ask`) run
  in the default, synchronous group: Ray keeps per-submitter order there;
  control calls (spawn, migration steps, faults) run in the ``control``
  concurrency group and waiting for a driver ask in ``client``, so data never
  holds them up;
- a ticker thread in each node process runs the node's tick every
  `LinkConfig.tick`, polls the directory, and checks its last call to each
  peer: `ActorUnavailableError` makes the peer SUSPECT, `ActorDiedError` DOWN
  (with the directory's ``ray.nodes()``, tiers 1 and 2 of the detector; tier 3
  is troupe's own heartbeat timeout, which catches a hung process Ray still
  reports alive, and the quorum rule that makes a node cut off from the
  majority down itself: `Node.tick`).

The driver is a client-only member: it cannot receive Ray calls, so its asks
are two calls (submit in order with its tells, then wait in the client group).
Any driver can attach to a running cluster (same namespace and cluster name);
none is a hub: nodes talk to the directory and to each other directly.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import queue
import socket
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

try:
    import ray
    from ray.exceptions import ActorDiedError, ActorUnavailableError, GetTimeoutError, RayActorError
except ImportError as _exc:  # pragma: no cover - depends on the environment
    from actors.errors import ClusterUnavailableError

    _msg = "RayTransport needs Ray: pip install 'troupe-actors[ray]' (or use MemoryTransport)"
    raise ClusterUnavailableError(_msg) from _exc

from actors._core import Future, MonotonicClock
from actors.cluster.direct import Connection, DataAddress, DataPlane
from actors.cluster.directory import Directory, NodeStatus
from actors.cluster.faults import Faults
from actors.cluster.link import LinkConfig
from actors.cluster.node import Node, client_request
from actors.errors import ClusterUnavailableError, TroupeInternalError, UnknownNodeError

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["RayTransport"]


_RAY_NODES_EVERY = 0.2
"""Seconds between two reads of Ray's node table (``ray.nodes()``) by the directory: the Ray tier."""
_DIRECTORY_TIMEOUT = 10.0
"""Seconds a blocking call to the directory may take before it fails as unreachable."""
_NEWS_WAIT = 0.5
"""Longest a node's poll of the directory's change log waits there for news (seconds; `changes_after`).

A node learns of a change within a Ray leg of it, and an idle node makes two
polls a second. Its answer, news or not, counts as hearing from the directory
for the quorum rule (`Node.quorum_silence`), so it stays well under
`LinkConfig.down_after` (2 s on Ray)."""
_POLLERS = 64
"""Threads of the directory's ``poll`` concurrency group: this many nodes and drivers may wait for news at
once; a poll beyond them waits for a thread (a late answer, never a lost one)."""
_EXCHANGE_WAIT = 0.02
"""Longest an `exchange` call waits on the receiver for a frame to carry back as its return value (seconds)."""
_EXCHANGE_PARKED = 24
"""At most this many `exchange` calls wait at once on one node (its ``exchange`` group has more threads,
so a new exchange always finds a thread and its frame is never held up behind waiting ones)."""
_PART_BYTES = 64 * 1024
"""A frame longer than this goes to `deliver` in parts of this size, all arguments of one call.

Ray passes an argument under 100 KB (``max_direct_call_object_size``) inline in
the call's gRPC message (up to 10 MB of them a call), a larger one through the
object store: put on the sender's node, pulled by the receiver's. Measured for
a 1 MB frame node to node here: ~12 ms one way as one argument, ~3-5 ms as 16
parts of 64 KB (a migrated actor's 1 MB snapshot is such a frame)."""
_DIAL_TIMEOUT = 5.0
"""Longest the Ray call asking a peer for its `DataAddress` may take (on a dialing thread)."""
_REDIAL_AFTER = 0.5
"""Seconds after a failed dial or a broken socket before a node dials that peer again (Ray carries it meanwhile)."""


@attrs.define(eq=False)
class _Slot:
    """An `exchange` call waiting for a frame to carry back: `data` is set (under the node's lock), then `ready`."""

    data: bytes | None = None
    ready: threading.Event = attrs.field(factory=threading.Event)


class _DirectoryActor:
    """The cluster's `Directory`, in a Ray actor, with the Ray tier of the failure detector.

    A thread (``troupe-directory-ray-nodes``) reads ``ray.nodes()`` every
    `_RAY_NODES_EVERY` and marks DOWN every node whose Ray node Ray reports
    dead: one read of Ray's node table for the whole cluster, and it catches
    a node nobody was sending to (a lone node, say), which no call error would.
    """

    def __init__(self, cluster: str) -> None:
        self._directory = Directory(cluster)
        # Notified after every call that may have changed the directory (`call`, the Ray tier), so
        # `changes_after` answers a waiting poll at once.
        self._news = threading.Condition()
        self._watcher = threading.Thread(target=self._watch_ray_nodes, name="troupe-directory-ray-nodes", daemon=True)
        self._watcher.start()

    def call(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        try:
            return getattr(self._directory, method)(*args, **kwargs)
        finally:
            self._announce()

    @ray.method(concurrency_group="poll")
    def changes_after(self, seen: int, wait: float) -> tuple[int, list[tuple[Any, ...]]]:
        """Return `Directory.changes(seen)` once the log holds more than `seen` events, or after `wait` seconds.

        A long poll (a thread of the ``poll`` group each): an idle node polls
        twice a second instead of every few ticks, and hears of a change as
        soon as it is made, not at its next poll.
        """
        deadline = time.monotonic() + wait
        with self._news:
            while True:
                version, events = self._directory.changes(seen)
                remaining = deadline - time.monotonic()
                if version > seen or remaining <= 0:
                    return version, events
                self._news.wait(remaining)

    def _announce(self) -> None:
        with self._news:
            self._news.notify_all()

    def _watch_ray_nodes(self) -> None:
        pause = threading.Event()
        failing = False
        while not pause.wait(_RAY_NODES_EVERY):
            try:
                dead = {str(n["NodeID"]) for n in ray.nodes() if not n.get("Alive", True)}
            except Exception:  # noqa: BLE001 - the GCS is briefly unreachable: the other tiers still work
                if not failing:
                    from loguru import logger  # noqa: PLC0415

                    logger.opt(exception=True).warning("troupe directory: ray.nodes() failed; retrying")
                failing = True
                continue
            failing = False
            if dead:
                self._directory.down_dead_ray_nodes(dead)
                self._announce()


class _DirectoryClient:
    """`Directory`'s methods as blocking calls to the directory actor (each within `_DIRECTORY_TIMEOUT`)."""

    def __init__(self, handle: Any, cluster: str) -> None:
        self._handle = handle
        self._cluster = cluster

    def __getattr__(self, method: str) -> Callable[..., Any]:
        handle = self._handle
        cluster = self._cluster

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return ray.get(handle.call.remote(method, args, kwargs), timeout=_DIRECTORY_TIMEOUT)
            except (GetTimeoutError, RayActorError) as exc:
                msg = (
                    f"the directory of troupe cluster {cluster!r} did not answer {method}() "
                    f"({type(exc).__name__}): its Ray actor is gone or hung"
                )
                raise ClusterUnavailableError(msg) from exc

        return call


class _NodeProcess:
    """A `Node` in a Ray actor process, with its ticker thread."""

    def __init__(  # noqa: PLR0917 - Ray actor constructors take positional arguments
        self,
        name: str,
        epoch: int,
        cluster: str,
        namespace: str,
        config: LinkConfig,
        dispatchers: int | None,
        direct: bool = True,  # noqa: FBT001, FBT002
    ) -> None:
        self._namespace = namespace
        self._cluster = cluster
        self._directory_handle = ray.get_actor(f"{cluster}/directory", namespace=namespace)
        self._directory = _DirectoryClient(self._directory_handle, cluster)
        # The Ray node this process runs on, for the directory's Ray tier (ray.nodes()).
        self._directory.set_ray_node(name, epoch, str(ray.get_runtime_context().get_node_id()))
        self._handles: dict[tuple[str, int], Any] = {}
        self._last_call: dict[str, tuple[int, Any]] = {}
        # Invariant (the ticker's own): peer -> its last call found to have succeeded (`_check_calls`).
        self._calls_ok: dict[str, Any] = {}
        self.faults = Faults()
        self._stop = threading.Event()
        # The ticker waits on `_wake` (see `_tick_forever`); `_ticker_idle` is True while it waits long.
        self._wake = threading.Event()
        self._ticker_idle = False
        self.node = Node(
            name,
            directory=self._directory,
            send=self._send,
            clock=MonotonicClock(),
            config=config,
            faults=self.faults,
            cluster=cluster,
            dispatchers=dispatchers,
            epoch=epoch,
            on_queued=self._queued,
        )
        # The exchange path (see `exchange`): frames back to a peer as the return value of its waiting call.
        self._back_lock = threading.Lock()
        # Invariant (under _back_lock): (peer, epoch) -> the exchanges of that peer waiting here, oldest first.
        self._parked: dict[tuple[str, int], list[_Slot]] = {}
        self._parked_count = 0
        self._closing = False
        self._exchanging: set[tuple[str, int]] = set()  # peers with an exchange of ours in flight
        self._returned: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._receiver = threading.Thread(
            target=self._receive_returned, name=f"troupe-node-{name}-returned", daemon=True
        )
        self._receiver.start()
        self._tickets = itertools.count(1)
        self._waiting: dict[int, Future[Any]] = {}
        # The direct data plane (`actors.cluster.direct`): sockets to peers, Ray calls while none is up.
        self._plane: DataPlane | None = None
        self._conn_lock = threading.Lock()
        # Invariant: (peer, epoch) -> its open connection; set under _conn_lock, read without it (the send path).
        self._conns: dict[tuple[str, int], Connection] = {}
        # Invariants (under _conn_lock): the peers being dialed; when a peer may be dialed again; their addresses.
        self._dialing: set[tuple[str, int]] = set()
        self._redial_at: dict[tuple[str, int], float] = {}
        self._addresses: dict[tuple[str, int], DataAddress] = {}
        self._plane_closing = False
        # Peers whose socket failed or whose last Ray call failed as unavailable (under _conn_lock for
        # writes; read without it): their frames go by Ray calls, the probes, until one succeeds
        # (`_check_calls`), as a successful socket write proves nothing (a kernel buffer took it).
        self._probing: set[str] = set()
        self._sent_direct = self._sent_ray = self._broken = 0
        if direct:
            ip = ray.util.get_node_ip_address()
            self._plane = DataPlane(name, epoch, ip, self.node.receive, self._peer_lost)
        self._news = 0  # answers to its polls of the directory's change log that brought news (`ticker`)
        self._ticker = threading.Thread(target=self._tick_forever, name=f"troupe-node-{name}-ticker", daemon=True)
        self._ticker.start()
        # Not joined at shutdown (it may wait `_NEWS_WAIT` in a poll): once `_stop` is set it applies nothing.
        self._poller = threading.Thread(target=self._poll_forever, name=f"troupe-node-{name}-news", daemon=True)
        self._poller.start()

    def ready(self) -> str:
        return str(ray.get_runtime_context().get_node_id())

    @ray.method(concurrency_group="control")
    def data_address(self) -> DataAddress | None:
        """Return where this node's data plane listens (None: it has none; peers send by Ray calls)."""
        return None if self._plane is None else self._plane.address

    @ray.method(concurrency_group="control")
    def ticker(self) -> dict[str, Any]:
        """Return the ticker's state: ``idle`` (it waits the long idle tick now), ``news`` (polls that brought news)."""
        return {"idle": self._ticker_idle, "news": self._news}

    @ray.method(concurrency_group="control")
    def data_plane(self) -> dict[str, Any]:
        """Return the data plane's state: frames sent by socket and by Ray, sockets broken, peers connected."""
        return {
            "sent_direct": self._sent_direct,
            "sent_ray": self._sent_ray,
            "broken": self._broken,
            "probing": sorted(self._probing),
            "connected": sorted(peer for peer, _ in self._conns),
            "inbound": sorted(peer for peer, _ in self._plane.inbound()) if self._plane is not None else [],
        }

    @ray.method(concurrency_group="control")
    def break_data_plane(self) -> int:
        """Cut every outbound socket as a network failure would (a test's fault); return how many it cut.

        The sockets are shut down under their senders: the next write fails,
        as on a connection reset, and the peer's reader sees the end of its
        stream, so both sides take the failure path (SUSPECT, frames by Ray,
        the unacknowledged ones sent again, a new socket after `_REDIAL_AFTER`).
        """
        conns = list(self._conns.values())
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)
        return len(conns)

    @ray.method(concurrency_group="control")
    def pid(self) -> int:
        import os  # noqa: PLC0415

        return os.getpid()

    # -- data path (default group: in order per submitter) ----------------------------

    def deliver(self, *parts: bytes) -> None:
        self.node.receive(parts[0] if len(parts) == 1 else b"".join(parts))

    @ray.method(concurrency_group="exchange")
    def exchange(self, src: str, epoch: int, data: bytes) -> bytes | None:
        """Take a frame from node `src` (incarnation `epoch`); return the next frame this node has for it.

        The fast path of a request and its reply: the frame is received as by
        `deliver` (the link's sequence numbers put it in order with the frames
        `deliver` brings, which it may overtake: another concurrency group),
        then the call waits up to `_EXCHANGE_WAIT` for a frame of at most
        `_PART_BYTES` to `src` (the reply to an ask in it, typically), which
        `_send` hands it instead of making a call: the frame rides back in
        the call's reply, about half a one-way call here (measured: an ask as
        two one-way Ray calls ~1.2-2.2 ms, as one round trip ~0.9-1.2 ms). It
        returns None if nothing came (or too many exchanges wait already).
        Runs in the ``exchange`` group; each frame goes exactly once, by a
        returning exchange or by a call, and a lost return is sent again by
        the link layer as any lost frame.
        """
        self.node.receive(data)
        slot = _Slot()
        key = (src, epoch)
        with self._back_lock:
            if self._closing or self._parked_count >= _EXCHANGE_PARKED:
                return None
            self._parked.setdefault(key, []).append(slot)
            self._parked_count += 1
        slot.ready.wait(_EXCHANGE_WAIT)
        with self._back_lock:
            if slot.data is None:  # not handed a frame (under the lock: none can come now)
                slots = self._parked.get(key, [])
                if slot in slots:
                    slots.remove(slot)
                    self._parked_count -= 1
                    if not slots:
                        del self._parked[key]
        return slot.data

    def refuse(self) -> None:
        """Fail as unavailable: the call a sender makes instead of `deliver` on an `unavailable` link (a fault)."""
        msg = f"node {self.node.name!r} refused the call (an injected `unavailable` fault)"
        raise ActorUnavailableError(msg, None)

    def client_tell(self, name: str, hint: str, payload: bytes) -> None:
        from actors.cluster import wire  # noqa: PLC0415

        client_request(self.node, wire.TELL, name, hint, payload)

    def client_ask(self, kind: int, name: str, hint: str, payload: bytes) -> int:
        future = client_request(self.node, kind, name, hint, payload)
        ticket = next(self._tickets)
        if future is None:
            msg = f"client_ask of kind {kind} is not a request with a reply"
            raise TroupeInternalError(msg)
        self._waiting[ticket] = future
        return ticket

    # -- the client and control groups --------------------------------------------------

    @ray.method(concurrency_group="client")
    def client_wait(self, ticket: int, timeout: float | None) -> tuple[bool, bytes]:
        future = self._waiting.pop(ticket)
        try:
            value, ok = future.get(timeout=timeout), True
        except BaseException as exc:  # noqa: BLE001 - goes to the asker
            value, ok = exc, False
        try:
            return ok, self.node._dumps(value, "reply")  # noqa: SLF001
        except Exception as exc:  # noqa: BLE001
            return False, self.node._dumps(RuntimeError(repr(exc)), "error")  # noqa: SLF001

    @ray.method(concurrency_group="control")
    def control(self, op: str, args: tuple[Any, ...]) -> Any:
        return getattr(self.node, op)(*args)

    @ray.method(concurrency_group="control")
    def migrate(  # noqa: PLR0917 - Ray actor methods take positional arguments
        self, name: str, to: str, token: str, spec: bytes, restart: str, timeout: float
    ) -> tuple[bool, Any]:
        """Move actor `name` from this node to `to`: (True, new incarnation) or (False, the error)."""
        try:
            future = self.node.migrate_out(name, to, token, spec, restart, timeout)
            return True, self.node.finish_out(name, future, timeout + 5.0)
        except Exception as exc:  # noqa: BLE001 - goes to the driver, which raises it
            return False, exc

    @ray.method(concurrency_group="control")
    def fault(self, op: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        getattr(self.faults, op)(*args, **kwargs)

    @ray.method(concurrency_group="control")
    def statistics(self) -> Any:
        return self.node.statistics()

    @ray.method(concurrency_group="control")
    def rss(self) -> int:
        import resource  # noqa: PLC0415

        return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize()

    @ray.method(concurrency_group="control")
    def spawn_many(self, cls: type, count: int) -> int:
        """Spawn `count` unnamed local actors of `cls` (the footprint benchmark)."""
        self._many = [self.node.system.spawn(cls) for _ in range(count)]
        return len(self._many)

    def shutdown(self) -> None:
        self._stop.set()
        self._wake.set()
        self._ticker.join()
        with self._back_lock:
            self._closing = True
            waiting = [slot for slots in self._parked.values() for slot in slots]
            self._parked.clear()
            self._parked_count = 0
        for slot in waiting:
            slot.ready.set()
        self._returned.put(None)
        self.node.shutdown()
        with self._conn_lock:
            self._plane_closing = True
            conns, self._conns = list(self._conns.values()), {}
        for conn in conns:
            conn.close()
        if self._plane is not None:
            self._plane.close()

    # -- sending and detecting -----------------------------------------------------------

    def _handle(self, dst: str, epoch: int) -> Any:
        handle = self._handles.get((dst, epoch))
        if handle is None:
            handle = ray.get_actor(f"{self._cluster}/node/{dst}#{epoch}", namespace=self._namespace)
            self._handles[dst, epoch] = handle
        return handle

    def _send(self, dst: str, epoch: int, data: bytes) -> None:
        try:
            handle = self._handle(dst, epoch)
        except ValueError:
            return  # its actor is gone: the detector will declare it DOWN
        if self.faults.refused(self.node.name, dst):  # an `unavailable` fault: the call fails as Ray's would
            self._last_call[dst] = (epoch, handle.refuse.remote())
            return
        if self._plane is not None and dst not in self._probing:
            conn = self._conns.get((dst, epoch))
            if conn is not None and conn.send(data):
                self._sent_direct += 1
                return
            if conn is None:
                self._dial(dst, epoch, handle)
        self._sent_ray += 1
        if len(data) <= _PART_BYTES:
            if self._hand_back(dst, epoch, data):
                return
            key = (dst, epoch)
            if key not in self._exchanging:  # one exchange in flight per peer; the rest go by `deliver`
                self._exchanging.add(key)
                call = handle.exchange.remote(self.node.name, self.node.epoch, data)
                call.future().add_done_callback(functools.partial(self._exchanged, key))
            else:
                call = handle.deliver.remote(data)
        else:  # inline in the call, not through the object store (see `_PART_BYTES`)
            view = memoryview(data)
            call = handle.deliver.remote(*(bytes(view[i : i + _PART_BYTES]) for i in range(0, len(data), _PART_BYTES)))
        self._last_call[dst] = (epoch, call)

    def _dial(self, dst: str, epoch: int, handle: Any) -> None:
        """Open a socket to `dst` on a thread of its own, unless one is being opened or it failed lately."""
        key = (dst, epoch)
        with self._conn_lock:
            if (
                self._plane_closing
                or key in self._dialing
                or key in self._conns
                or _now() < self._redial_at.get(key, 0.0)
            ):
                return
            self._dialing.add(key)
        name = f"troupe-direct-{self.node.name}-dial-{dst}"
        threading.Thread(target=self._dial_thread, args=(key, handle), name=name, daemon=True).start()

    def _dial_thread(self, key: tuple[str, int], handle: Any) -> None:
        """Find the peer's address (a Ray call, once per peer incarnation) and connect; on failure, retry later."""
        plane = self._plane
        assert plane is not None  # noqa: S101 - only dialed with a plane
        conn: Connection | None = None
        no_plane = False
        try:
            address = self._addresses.get(key)
            if address is None:
                call = handle.data_address.options(concurrency_group="control").remote()
                address = ray.get(call, timeout=_DIAL_TIMEOUT)
                no_plane = address is None
            if address is not None:
                conn = plane.connect(key[0], address, functools.partial(self._conn_broken, key))
        except Exception:  # noqa: BLE001 - the peer is unreachable by socket for now: Ray carries its frames
            address = None
        with self._conn_lock:
            self._dialing.discard(key)
            if address is not None:
                self._addresses[key] = address
            if conn is None:
                # A peer without a data plane (direct=False) is never dialed again.
                self._redial_at[key] = float("inf") if no_plane else _now() + _REDIAL_AFTER
                return
            if self._plane_closing:
                conn.close()
                return
            self._conns[key] = conn

    def _conn_broken(self, key: tuple[str, int], conn: Connection) -> None:
        """A socket to peer `key` failed (its own thread): the peer is SUSPECT, its frames go by Ray (`_probing`)."""
        self._lose_socket(key, conn)

    def _peer_lost(self, peer: str, epoch: int) -> None:
        """The peer's socket to this node ended without this node closing it (a reader thread): it crashed, or broke."""
        self._lose_socket((peer, epoch), None)

    def _lose_socket(self, key: tuple[str, int], broken: Connection | None) -> None:
        """Drop the socket to peer `key` and make the peer SUSPECT, its frames going by Ray (`_probing`).

        `broken` is the outbound connection that failed (only it is dropped:
        a newer one dialed since stays), or None when the peer's inbound stream
        ended (then any outbound connection to it is dropped and closed here).
        As a Ray call failing as unavailable: SUSPECT until a Ray call made
        after this succeeds (`_check_calls`; a socket write that succeeds
        proves nothing, a kernel buffer took it, and a process whose Ray node
        is gone may still read and write its sockets for a while).
        Runs on the broken connection's thread or the plane's reader thread.
        """
        with self._conn_lock:
            if broken is None:
                conn = self._conns.pop(key, None)
            elif self._conns.get(key) is broken:
                del self._conns[key]
                conn = None  # already closed by its break
            else:
                conn = None
            self._redial_at[key] = _now() + _REDIAL_AFTER
            closing = self._plane_closing
            if broken is not None or not closing:  # an outbound break counts even while the plane closes
                self._broken += 1
            if not closing:
                self._probing.add(key[0])
                self._last_call.pop(key[0], None)  # only a Ray call made from now on ends the probing
        if conn is not None:
            conn.close()
        if not closing:
            # The frames the socket lost are sent again by the link layer (by Ray, while probing).
            self.node.call_failed(*key)

    def _prune_plane(self) -> None:
        """Close the sockets of peers DOWN or restarted since (the ticker)."""
        live = {(info.name, info.epoch) for info in self.node.peers() if info.status is not NodeStatus.DOWN}
        with self._conn_lock:
            gone = [key for key in self._conns if key not in live]
            conns = [self._conns.pop(key) for key in gone]
            for key in [key for key in self._addresses if key not in live]:
                del self._addresses[key]
                self._redial_at.pop(key, None)
        for conn in conns:
            conn.close()
        if self._plane is not None:
            for key in self._plane.inbound():
                if key not in live:
                    self._plane.drop_inbound(*key)

    def _hand_back(self, dst: str, epoch: int, data: bytes) -> bool:
        """Give `data` to the oldest exchange of `dst` waiting here, if any: True if one took it."""
        with self._back_lock:
            slots = self._parked.get((dst, epoch))
            if not slots:
                return False
            slot = slots.pop(0)
            self._parked_count -= 1
            if not slots:
                del self._parked[dst, epoch]
            slot.data = data
        slot.ready.set()
        return True

    def _exchanged(self, key: tuple[str, int], future: Any) -> None:
        """An exchange of ours returned (a Ray callback thread, which must not block: the frame goes on a queue)."""
        self._exchanging.discard(key)
        try:
            data = future.result()
        except Exception:  # noqa: BLE001 - the failure is seen by `_check_calls` (the call is the last one)
            return
        if data is not None:
            try:
                taken = self.node.receive(data, may_block=False)
            except Exception:  # noqa: BLE001 - a Ray callback must not raise; the thread logs it
                taken = False
            if not taken:
                self._returned.put(data)

    def _receive_returned(self) -> None:
        """Hand the frames our exchanges brought back to the node (thread ``troupe-node-<name>-returned``).

        Not on Ray's callback thread: `Node.receive` may call the directory
        (fencing a frame from a peer not heard from lately), a blocking call.
        """
        while (data := self._returned.get()) is not None:
            try:
                self.node.receive(data)
            except Exception:  # noqa: BLE001 - the thread must go on
                from loguru import logger  # noqa: PLC0415

                logger.opt(exception=True).error("Node {} could not take a returned frame", self.node.name)

    def _tick_forever(self) -> None:
        # Every `tick` while the node has work a tick must do soon (`Node.idle`) or a peer is being
        # probed; else every `idle_tick` (a quarter of the shortest periodic duty: 25 ms with
        # RayTransport's defaults), woken at once by work queued for a tick (`_queued`, the node's
        # `on_queued`), as the memory transport's ticker. Every `poll_every` (20 ticks) it checks its
        # last Ray call to each peer (the detector's first tier) and prunes the data plane. The
        # directory's news comes by `_poll_forever`, whose applying it queues whatever mail it moves
        # (`on_queued` again). Ticking every 1 ms whatever the node held, and asking the directory
        # for its news every 40 ms, cost an idle node process 46-80 ms of CPU a second (load 5-11).
        node = self.node
        config = node.config
        clock = node.clock
        tick = config.tick
        idle_tick = max(tick, min(config.heartbeat_every, config.retransmit_after, config.suspect_after) / 4)
        poll_every = 20 * tick
        wake, stop = self._wake, self._stop
        next_poll = clock.now()
        while not stop.is_set():
            self._ticker_idle = True  # first: work queued after the check below wakes this thread
            if self._probing or not node.idle():
                self._ticker_idle = False
                wake.wait(tick)
            else:
                wake.wait(idle_tick)
                self._ticker_idle = False
            wake.clear()
            if stop.is_set():
                return
            try:
                now = clock.now()
                if now >= next_poll:
                    next_poll = now + poll_every
                    self._check_calls()
                    if self._plane is not None:
                        self._prune_plane()
                node.tick()
            except Exception:  # noqa: BLE001 - the ticker must go on
                from loguru import logger  # noqa: PLC0415

                logger.opt(exception=True).error("Node {} tick failed", node.name)

    def _poll_forever(self) -> None:
        # The directory's change log, by long polls (`_DirectoryActor.changes_after`): one waits there
        # up to `_NEWS_WAIT` for news, the next is sent once its answer is applied. A directory that
        # does not answer (hung, or an injected partition: `faults.DIRECTORY`) is not heard from,
        # and the node's quorum rule counts that silence (`Node.tick`).
        node = self.node
        stop = self._stop
        handle = self._directory_handle
        while not stop.is_set():
            try:
                if not node.reaches_directory():
                    stop.wait(_NEWS_WAIT)
                    continue
                poll: Any = handle.changes_after.remote(node.seen, _NEWS_WAIT)
                version, events = ray.get(poll, timeout=_DIRECTORY_TIMEOUT)
                if stop.is_set():
                    return
                seen = node.seen
                node.apply(version, events)
                if node.seen != seen:
                    self._news += 1
            except (GetTimeoutError, RayActorError):  # hung or gone: unreachable (the quorum rule's silence)
                stop.wait(_NEWS_WAIT)
            except Exception:  # noqa: BLE001 - the poller must go on
                from loguru import logger  # noqa: PLC0415

                logger.opt(exception=True).error("Node {} could not apply the directory's news", node.name)
                stop.wait(_NEWS_WAIT)

    def _queued(self) -> None:
        """Wake the ticker if it waits long: the node left work for a tick (any thread; the node's `on_queued`)."""
        if self._ticker_idle:
            self._ticker_idle = False
            self._wake.set()

    def _check_calls(self) -> None:
        """Check the last Ray call to each peer not yet found to have succeeded (the ticker)."""
        checked = self._calls_ok
        calls = {dst: call for dst, call in list(self._last_call.items()) if checked.get(dst) is not call[1]}
        if not calls:
            return
        refs = [call[1] for call in calls.values()]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        ready_set = set(ready)
        for dst, (epoch, ref) in calls.items():
            if ref not in ready_set:
                continue
            try:
                ray.get(ref)
            except ActorUnavailableError:
                if self._plane is not None and dst not in self._probing:
                    with self._conn_lock:
                        self._probing.add(dst)
                self.node.call_failed(dst, epoch)  # SUSPECT until a call succeeds
            except (ActorDiedError, RayActorError):
                self.node.report(dst, epoch, NodeStatus.DOWN)
            except Exception:  # noqa: BLE001, S110 - the receiver's own error; it is logged there
                pass
            else:
                if dst in self._probing:
                    with self._conn_lock:
                        self._probing.discard(dst)
                self.node.call_ok(dst)
                checked[dst] = ref  # not checked again (a failed one is, every `poll_every`)


_NodeActor: Any = ray.remote(  # type: ignore[call-overload]
    max_restarts=0,
    max_task_retries=0,
    concurrency_groups={"control": 4, "client": 8, "exchange": _EXCHANGE_PARKED + 8},
)(_NodeProcess)


class _RemoteFaults:
    """`Faults`' methods, applied in every node process (faults live on the sender side)."""

    def __init__(self, transport: RayTransport) -> None:
        self._transport = transport

    def __getattr__(self, op: str) -> Callable[..., None]:
        def call(*args: Any, **kwargs: Any) -> None:
            handles = self._transport.live_handles()
            ray.get([h.fault.remote(op, args, kwargs) for h in handles])

        return call


class RayTransport:
    """Run each troupe node in its own Ray actor; see the module doc.

    Args:
        address: the Ray cluster to join (``"auto"``, ``"ray://..."``); None:
            use the Ray already initialised in this process, or start a local one.
        namespace: the Ray namespace of the directory and node actors.
        config: link and failure-detector timing.
        dispatchers: dispatcher threads of each node's `ActorSystem`.
        direct: nodes send their data frames to each other over sockets
            (`actors.cluster.direct`), with Ray calls while no socket is up;
            False: every frame is a Ray call.
        detached: create the directory and the nodes this driver starts as
            detached Ray actors, so the cluster outlives this driver's process
            (another driver attaches with the same namespace and cluster name;
            `shutdown` of the driver that started them still stops them).

    The directory is a named Ray actor (``<cluster>/directory``) on the Ray
    head node, not on the driver's: nodes find it by name and talk to it
    directly, and find each other through it (each node's actor is named
    ``<cluster>/node/<name>#<epoch>``). A driver is a client like any other:
    a `Cluster` opened on a namespace and cluster name that exist attaches to
    them (it reaches every node through the directory, not only the ones it
    started), and its `shutdown` stops only what it started.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        namespace: str = "troupe",
        config: LinkConfig | None = None,
        dispatchers: int | None = 2,
        detached: bool = False,
        direct: bool = True,
    ) -> None:
        self.address = address
        self.direct = direct
        self.detached = detached
        self.namespace = namespace
        self.config = (
            config
            if config is not None
            else LinkConfig(suspect_after=1.0, down_after=2.0, join_grace=30.0, flush_after=0.002)
        )
        self.dispatchers = dispatchers
        self.manual = False
        self._handles: dict[str, Any] = {}  # the nodes this driver started
        self._attached: dict[str, tuple[int, Any]] = {}  # nodes others started: name -> (epoch, handle)
        self._owns_directory = False
        self._paused: dict[str, int] = {}
        self.faults = _RemoteFaults(self)

    def open(self, cluster: str) -> None:
        """Connect to Ray and find or start the cluster's directory actor."""
        self.cluster = cluster
        try:
            if not ray.is_initialized():
                ray.init(address=self.address, namespace=self.namespace, include_dashboard=False, log_to_driver=False)
        except Exception as exc:
            msg = f"cannot reach the Ray cluster at {self.address!r} for troupe cluster {cluster!r}: {exc}"
            raise ClusterUnavailableError(msg) from exc
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # noqa: PLC0415

        name = f"{cluster}/directory"
        try:
            self._directory_handle = ray.get_actor(name, namespace=self.namespace)
        except ValueError:
            actor: Any = ray.remote(  # type: ignore[call-overload]
                num_cpus=0, max_restarts=0, concurrency_groups={"poll": _POLLERS}
            )(_DirectoryActor)
            # On the head node (where Ray's own control store runs: if it goes, the Ray cluster goes),
            # not the driver's: it must outlive the nodes it watches, and any driver.
            head = NodeAffinitySchedulingStrategy(_head_node_id(), soft=False)
            options: dict[str, Any] = {"name": name, "namespace": self.namespace, "get_if_exists": True}
            if self.detached:
                options["lifetime"] = "detached"
            self._directory_handle = actor.options(scheduling_strategy=head, **options).remote(cluster)
            self._owns_directory = True
        self.directory = _DirectoryClient(self._directory_handle, cluster)

    def start_node(
        self,
        name: str,
        *,
        ray_node: str | None = None,
        resources: dict[str, float] | None = None,
        dispatchers: int | None = None,
    ) -> None:
        """Start node `name` in a new Ray actor (pinned to Ray node `ray_node` if given)."""
        epoch = self.directory.register(name, ray_node)
        options: dict[str, Any] = {
            "name": f"{self.cluster}/node/{name}#{epoch}",
            "namespace": self.namespace,
            "num_cpus": 0,
        }
        if self.detached:
            options["lifetime"] = "detached"
        if resources:
            options["resources"] = resources
        if ray_node is not None:
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # noqa: PLC0415

            options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(ray_node, soft=False)
        handle = _NodeActor.options(**options).remote(
            name, epoch, self.cluster, self.namespace, self.config, dispatchers or self.dispatchers, self.direct
        )
        try:
            ray.get(handle.ready.remote())
        except Exception:
            self.directory.leave(name)
            raise
        self._handles[name] = handle

    def _handle(self, name: str) -> Any:
        handle = self._handles.get(name)
        if handle is not None:
            return handle
        info = self.directory.node(name)  # UnknownNodeError if it never joined
        attached = self._attached.get(name)
        if attached is not None and attached[0] == info.epoch:
            return attached[1]
        try:
            handle = ray.get_actor(f"{self.cluster}/node/{name}#{info.epoch}", namespace=self.namespace)
        except ValueError as exc:
            msg = f"node {name!r} (epoch {info.epoch}) of cluster {self.cluster!r} is {info.status}: no Ray actor"
            raise UnknownNodeError(msg) from exc
        self._attached[name] = (info.epoch, handle)
        return handle

    def live_handles(self) -> list[Any]:
        """Return the Ray actor of every node not DOWN (started by this driver or another)."""
        handles = []
        for info in self.directory.nodes():
            if info.status is not NodeStatus.DOWN:
                with contextlib.suppress(UnknownNodeError):
                    handles.append(self._handle(info.name))
        return handles

    def stop_node(self, name: str) -> None:
        """Leave gracefully: DOWN in the directory at once, then the node's actors stop and its process ends."""
        handle = self._handle(name)
        self.directory.leave(name)
        try:
            ray.get(handle.shutdown.remote(), timeout=30)
        finally:
            ray.kill(handle)
            self._handles.pop(name, None)
            self._attached.pop(name, None)

    def pause(self, name: str) -> None:
        """Hang node `name`'s process (SIGSTOP; it must run on this machine): Ray still reports it alive."""
        import os  # noqa: PLC0415
        import signal  # noqa: PLC0415

        pid = self.node_call(name, "pid")
        os.kill(pid, signal.SIGSTOP)
        self._paused[name] = pid

    def resume(self, name: str) -> None:
        """Let a paused node's process run again (SIGCONT)."""
        import os  # noqa: PLC0415
        import signal  # noqa: PLC0415

        pid = self._paused.pop(name, None)
        if pid is not None:
            os.kill(pid, signal.SIGCONT)

    def crash(self, name: str) -> None:
        """Kill the node's process (SIGKILL, no handoff); the detector finds out."""
        ray.kill(self._handle(name), no_restart=True)
        self._handles.pop(name, None)
        self._attached.pop(name, None)

    def forget(self, name: str) -> None:
        """Drop the handle of a node whose Ray node was removed (a hard crash made by the caller)."""
        self._handles.pop(name, None)
        self._attached.pop(name, None)

    def control(self, node: str, op: str, *args: Any) -> Any:
        """Run control operation `op` on node `node` and return its result."""
        return ray.get(self._handle(node).control.remote(op, args))

    def migrate(  # noqa: PLR0917 - the transport interface
        self, src: str, name: str, to: str, token: str, spec: bytes, restart: str, timeout: float
    ) -> int:
        """Move actor `name` from node `src` to `to`: one call to the source, which does the rest node to node."""
        ok, value = ray.get(self._handle(src).migrate.remote(name, to, token, spec, restart, timeout))
        if not ok:
            raise value
        return int(value)

    def control_all(self, nodes: list[str], op: str, *args: Any) -> list[Any]:
        """Run control operation `op` on every node of `nodes`, in parallel."""
        return list(ray.get([self._handle(node).control.remote(op, args) for node in nodes]))

    def request(  # noqa: PLR0917 - the transport interface
        self, node: str, kind: int, name: str, hint: str, payload: bytes, timeout: float | None
    ) -> Any:
        """Send a driver request into `node`; for asks return a concurrent future of (ok, pickled value)."""
        from actors.cluster import wire  # noqa: PLC0415

        handle = self._handle(node)
        if kind == wire.TELL:
            handle.client_tell.remote(name, hint, payload)
            return None
        ticket = handle.client_ask.remote(kind, name, hint, payload)
        return handle.client_wait.remote(ticket, timeout).future()

    def wait(self, predicate: Callable[[], bool], *, timeout: float) -> bool:
        """Poll `predicate` every millisecond until true; False after `timeout` seconds."""
        deadline = _now() + timeout
        pause = threading.Event()
        while not predicate():
            if _now() > deadline:
                return False
            pause.wait(0.001)
        return True

    def node_call(self, node: str, method: str, *args: Any) -> Any:
        """Call a method of node `node`'s Ray actor (statistics, rss, spawn_many)."""
        return ray.get(getattr(self._handle(node), method).remote(*args))

    def shutdown(self) -> None:
        """Stop every node this driver started, then the directory if this driver created it."""
        for name in list(self._paused):
            self.resume(name)
        for name in list(self._handles):
            with contextlib.suppress(Exception):  # shutting down: the rest must stop too
                self.stop_node(name)
        if self._owns_directory:
            ray.kill(self._directory_handle)


def _head_node_id() -> str:
    """Return the id of the Ray head node (the driver's own node if none is marked as the head)."""
    for node in ray.nodes():
        if node.get("Alive") and "node:__internal_head__" in node.get("Resources", {}):
            return str(node["NodeID"])
    return str(ray.get_runtime_context().get_node_id())


def _now() -> float:
    import time  # noqa: PLC0415

    return time.monotonic()
