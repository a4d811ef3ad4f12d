"""`MemoryTransport`: several nodes in one process, on one clock, with fault injection.

Every node is a real `Node` (its own `ActorSystem`) and frames go through the
same link layer as on Ray; the transport only carries the bytes. With a
`ManualClock` nothing moves until `advance()` (or `Cluster.wait`): each advance
fires the systems' timers, runs every node's tick (flush, retransmit,
heartbeat, failure detector) and delivers the frames in flight, on the calling
thread, so a test is deterministic and never sleeps. With a real clock a
ticker thread does the same every `LinkConfig.tick` while a node has work a
tick must do soon (`Node.idle`), and about four times per `heartbeat_every`
when none has: see `_tick_forever`.

Faults (`faults`): drop, duplicate, reorder and delay a fraction of frames,
seeded; make a link's calls fail as unavailable (its sender's detector is
told on the next tick, as Ray's ticker sees a failed call); `partition` and
`heal` (`faults.DIRECTORY` on a side cuts the other sides off the directory);
`crash` a node (no handoff: its in-flight mail is lost), `pause` one (a hung
process: no tick, no frame in or out, until `resume`) and start new ones.

Placement (`colocate`, on a real clock, Linux): the threads the transport
and its nodes start (the ticker; each node's default dispatchers and timer
thread, started with its `ActorSystem`) share one CPU, and so do the threads
those start later (a thread inherits its creator's affinity); threads the
driver starts later (a dispatcher group or an asyncio loop first used by a
driver call) are left to the OS. Their Python work is serialized by the
GIL anyway, and a GIL hand-off to a thread asleep on another CPU costs a
cross-CPU wake-up, which on an idle VM is 15-40 µs: a timed cross-node ask
is two such hand-offs (the callee's dispatcher, then the asker), and both
threads slept on the GIL once per ask whatever they spun (see
`_colocation_cpu` for the measurements).
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from actors._core import ManualClock, MonotonicClock, check_count, check_interface
from actors.cluster.directory import Directory
from actors.cluster.faults import Faults
from actors.cluster.link import LinkConfig, TickerWait
from actors.cluster.node import Node, ReplySpin, client_request
from actors.errors import MigrationError, NodeNameTakenError, UnknownNodeError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from actors._core import Clock, Future

__all__ = ["MemoryTransport"]

_yield = os.sched_yield


def _colocation_cpu() -> int | None:
    """Return the CPU a real-clock transport's threads share: the lowest this thread may run on (None: no choice).

    None where there is nothing to choose (one CPU allowed) or no way to
    choose (no ``os.sched_setaffinity``: not Linux). Why one CPU, measured
    on this 2-vCPU VM under `chrt -f 1` (the idle machine's stand-in: a
    `sched_yield` returns at once, as when idle; the idle machine read 91 µs
    the same day), 1,000 timed asks from an actor on node a to one on node
    b: unpinned, median 120-135 µs, each of the two dispatcher threads
    sleeping ~1.1 times per ask, every sleep on the GIL (futex traces: ~1.0
    on its condition variable, ~0.1 on its mutex; the spins hold the GIL
    between their yields, so the thread with work to do waits for it, and
    nothing sleeps on a queue or a future); the transport's threads on one
    CPU, 27.7-28.1 µs and 0.02-0.03 sleeps per ask. A bare two-thread lock
    ping-pong under the same conditions: 32.8 µs round trip unpinned, 5.9 µs
    on one CPU.
    """
    if not hasattr(os, "sched_setaffinity"):
        return None
    allowed = os.sched_getaffinity(0)
    return min(allowed) if len(allowed) > 1 else None


class MemoryTransport:
    """Connect in-process nodes; see the module doc.

    Args:
        clock: a `ManualClock` (deterministic tests) or None for the monotonic clock and a ticker thread.
        config: link and failure-detector timing.
        seed: seeds the fault injection's random choices.
        dispatchers: dispatcher threads of each node's `ActorSystem`.
        colocate: on a real clock, run the threads the transport and its nodes start on one CPU
            (see the module doc; False leaves them to the OS). Ignored on a `ManualClock`.
    """

    def __init__(
        self,
        clock: Clock | None = None,
        *,
        config: LinkConfig | None = None,
        seed: int = 0,
        dispatchers: int = 2,
        colocate: bool = True,
    ) -> None:
        if clock is not None:
            check_interface("clock", clock, ("now",), "a Clock or None", owner="MemoryTransport")
        if config is not None and not isinstance(config, LinkConfig):
            msg = f"MemoryTransport: config must be a LinkConfig or None, got {config!r}"
            raise TypeError(msg)
        check_count("dispatchers", dispatchers, minimum=1, owner="MemoryTransport")
        if not isinstance(colocate, bool):
            msg = f"MemoryTransport: colocate must be True or False, got {colocate!r}"
            raise TypeError(msg)
        self.clock: Clock = clock if clock is not None else MonotonicClock()
        self.manual = isinstance(self.clock, ManualClock)
        self.config = config if config is not None else LinkConfig()
        self.faults = Faults(seed=seed)
        self.directory = Directory()
        self._dispatchers = dispatchers
        # Askers spin for replies on a real clock (see `ReplySpin`), one spin state for every node here.
        self._spin = None if self.manual else ReplySpin()
        # The CPU the threads started in `_placed` run on (None: left to the OS); see the module doc.
        self.cpu = _colocation_cpu() if colocate and not self.manual else None
        self._lock = threading.Lock()
        self._nodes: dict[str, Node] = {}
        self._paused: set[str] = set()
        self._inflight: deque[tuple[str, int, bytes]] = deque()
        # (src, dst, epoch, ok): calls on an `unavailable` link and the first after it, for src's detector on the tick
        self._calls: list[tuple[str, str, int, bool]] = []
        self._refused_links: set[tuple[str, str]] = set()
        self._deliver_lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self._wait = TickerWait(self.config)  # the ticker's wait (see `_tick_forever`)
        # Until then (the clock's time) the ticker ticks every `tick` whatever the nodes hold: a node
        # stopped, crashed, paused or resumed is detected (and its DOWN spread) at the tick's pace, as
        # before this ticker waited long when idle. (A node started needs no tick: a peer that sends to
        # it polls the directory; a migration is work a node's `idle` sees.)
        self._brisk_until = float("-inf")

    def open(self, cluster: str) -> None:
        """Bind to cluster `cluster` (and start the ticker on a real clock)."""
        self.directory.cluster = cluster
        self.cluster = cluster
        if not self.manual and self._ticker is None:
            self._ticker = threading.Thread(target=self._tick_forever, name="troupe-memory-ticker", daemon=True)
            with self._placed():
                self._ticker.start()

    @contextmanager
    def _placed(self) -> Iterator[None]:
        """Run the block with this thread on `cpu`, so that the threads it starts inherit it; then restore it.

        Linux gives a new thread its creator's CPU affinity; the calling
        thread's own is put back as it was, whatever the block raised. If the
        kernel refuses (a cpuset changed since `cpu` was chosen), the block
        runs where the OS puts it.
        """
        cpu = self.cpu
        if cpu is None:
            yield
            return
        saved: set[int] | None = os.sched_getaffinity(0)
        try:
            os.sched_setaffinity(0, {cpu})
        except OSError:
            saved = None
        try:
            yield
        finally:
            if saved is not None:
                os.sched_setaffinity(0, saved)

    def _tick_forever(self) -> None:
        # Woken by every frame left in flight (so it is delivered within a thread wake-up) and by work
        # queued for a tick while it waits long (`_queued`); else every `tick` while a node has work a tick
        # must do soon or a membership change is recent, every idle tick when none has (`TickerWait`). A ticker that
        # ticked every 1 ms whatever the nodes held cost an idle two-node cluster 57-86 ms of CPU per
        # second, and during a stream of asks woke 0.5-1.3 times per ask to fight their threads for the
        # GIL (voluntary context switches at real-time priority, the idle machine's stand-in).
        wait, busy = self._wait.wait, self._busy
        while not self._stop.is_set():
            wait(busy)
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - the ticker must go on (as Ray's): a dead one stops every node here
                from loguru import logger  # noqa: PLC0415

                logger.opt(exception=True).error("MemoryTransport: a tick failed")

    def _busy(self) -> bool:
        """Return whether the ticker must tick every `tick` (the ticker thread; racy reads, see `_tick_forever`)."""
        if self._inflight or self._calls or self.clock.now() < self._brisk_until:
            return True
        return not all(node.idle() for node in self.nodes())

    def _queued(self) -> None:
        """Wake the ticker if it waits long: a node left work for a tick (any thread; see `Node` `on_queued`)."""
        self._wait.queued()

    def _brisk(self) -> None:
        """Tick every `tick` for `down_after` from now (a node gone or back: its detection and spread)."""
        if not self.manual:
            self._brisk_until = self.clock.now() + self.config.down_after
            self._queued()

    # -- nodes -------------------------------------------------------------------------

    def start_node(self, name: str, **_options: Any) -> Node:
        """Start node `name` and return it."""
        with self._lock:
            if name in self._nodes:
                msg = f"a node named {name!r} is already running on this memory transport; choose another name"
                raise NodeNameTakenError(msg)
        with self._placed():  # the node's dispatchers and timer thread start here
            node = Node(
                name,
                directory=self.directory,
                send=lambda dst, epoch, data: self._send(dst, epoch, data, name),
                clock=self.clock,
                config=self.config,
                faults=self.faults,
                cluster=self.cluster,
                dispatchers=self._dispatchers,
                spin=self._spin,
                on_queued=None if self.manual else self._queued,
            )
        with self._lock:
            self._nodes[name] = node
        return node

    def node(self, name: str) -> Node:
        """Return the running node `name`."""
        with self._lock:
            node = self._nodes.get(name)
        if node is None:
            msg = f"node {name!r} is not running on this memory transport (running: {sorted(self._nodes)})"
            raise UnknownNodeError(msg)
        return node

    def stop_node(self, name: str) -> None:
        """Leave gracefully: the directory marks it DOWN at once, then its actors stop."""
        node = self.node(name)
        self.directory.leave(name)
        with self._lock:
            del self._nodes[name]
        self._brisk()
        node.shutdown()

    def crash(self, name: str) -> None:
        """Kill node `name` with no handoff: it stops answering, its mail in flight is lost."""
        node = self.node(name)
        with self._lock:
            del self._nodes[name]
        node.closed = True
        self._brisk()
        node.system.shutdown()

    def pause(self, name: str) -> None:
        """Freeze node `name` as a hung process (SIGSTOP) would be.

        It ticks and polls no more, and no frame reaches it or leaves it (they
        are lost; the link layer's retransmits cover what the others sent).
        """
        self.node(name)
        with self._lock:
            self._paused.add(name)
        self._brisk()

    def resume(self, name: str) -> None:
        """Let paused node `name` run again (as SIGCONT does): its next tick finds out what it missed."""
        with self._lock:
            self._paused.discard(name)
        self._brisk()

    def nodes(self) -> list[Node]:
        """Return the running nodes."""
        with self._lock:
            return list(self._nodes.values())

    # -- carrying frames --------------------------------------------------------------------

    def _send(self, dst: str, epoch: int, data: bytes, src: str = "") -> None:
        """Carry a frame: on a real clock, delivered on the sending thread when it can be; else by the ticker.

        On a real clock a frame is delivered at once, on the thread that sent
        it, if nothing is in flight before it and no delivery or tick is
        running (the delivery lock is free): a cross-node ask then costs two
        thread wake-ups (the callee's dispatcher, the asker) instead of four
        (the ticker's twice more). Otherwise, and a frame sent while this
        thread delivers (a reply run inline, say), it waits in flight for the
        ticker, which it wakes. The wait for the lock is never blocking, so
        no sender waits on a delivery (or a node's lock) here. On a
        `ManualClock` every frame waits for the next `tick`, as tests expect.
        A frame from or to a paused node is lost.
        """
        if self._paused and (src in self._paused or dst in self._paused):
            return
        if self._refused_links or self.faults.refused(src, dst):
            refused = self.faults.refused(src, dst)
            with self._lock:
                if refused:
                    self._refused_links.add((src, dst))
                    self._calls.append((src, dst, epoch, False))
                    return
                if (src, dst) in self._refused_links:  # the first call after the fault: it succeeds
                    self._refused_links.discard((src, dst))
                    self._calls.append((src, dst, epoch, True))
        if not self.manual and not self._inflight and self._deliver_lock.acquire(blocking=False):
            receiver = self._nodes.get(dst)
            try:
                if receiver is not None and receiver.epoch == epoch:
                    receiver.receive(data)
            finally:
                self._deliver_lock.release()
            if self._inflight:
                self._wait.wake()  # frames sent while this one was delivered
            if receiver is not None and receiver.asker_spins:
                # It completed a reply whose asker spins: let the asker run now, not after this
                # thread's way back to its queue (yielding under the lock made its next send wait).
                receiver.asker_spins = False
                _yield()
            return
        self._inflight.append((dst, epoch, data))
        if not self.manual:
            self._wait.wake()

    def tick(self) -> None:
        """Run every node's tick, then deliver every frame in flight (the calling thread)."""
        with self._deliver_lock:
            paused = self._paused
            with self._lock:
                calls, self._calls = self._calls, []
            for src, dst, epoch, ok in calls:  # as Ray's ticker checks each node's last call to each peer
                sender = self._nodes.get(src)
                if sender is not None and ok:
                    sender.call_ok(dst)
                elif sender is not None:
                    sender.call_failed(dst, epoch)
            nodes = [node for node in self.nodes() if node.name not in paused]
            for node in nodes:
                node.poll_directory()
                node.tick()
            inflight = self._inflight
            while inflight:
                dst, epoch, data = inflight.popleft()
                receiver = self._nodes.get(dst)
                if receiver is not None and receiver.epoch == epoch and dst not in paused:
                    receiver.receive(data)

    def advance(self, seconds: float) -> None:
        """Move a `ManualClock` forward, firing timers, then tick every node."""
        if self.manual:
            self.clock.advance(seconds)  # type: ignore[attr-defined]
        self.tick()

    def wait(self, predicate: Callable[[], bool], *, timeout: float) -> bool:
        """Drive the cluster (a manual clock: tick by tick) until `predicate()`; False after `timeout` real seconds."""
        # Between two ticks the loop pauses for a moment of real time: a loop
        # that only ticked would hold the GIL and run the manual clock ahead of
        # the actors (0.5 s of manual time in a few ms of real time, and the
        # failure detector would suspect nodes whose actors had no turn yet).
        deadline = time.monotonic() + timeout
        pause = threading.Event()
        while not predicate():
            if time.monotonic() > deadline:
                return False
            pause.wait(self.config.tick / 4)
            if self.manual and not predicate():
                self.advance(self.config.tick)
        return True

    # -- control plane ------------------------------------------------------------------

    def control(self, node: str, op: str, *args: Any) -> Any:
        """Run control operation `op` on node `node` (synchronously)."""
        return getattr(self.node(node), op)(*args)

    def control_all(self, nodes: list[str], op: str, *args: Any) -> list[Any]:
        """Run control operation `op` on every node of `nodes`."""
        return [self.control(node, op, *args) for node in nodes]

    def migrate(  # noqa: PLR0917 - the transport interface
        self, src: str, name: str, to: str, token: str, spec: bytes, restart: str, timeout: float
    ) -> int:
        """Move actor `name` from node `src` to `to` (one request to the source; see `Node.migrate_out`)."""
        node = self.node(src)
        future = node.migrate_out(name, to, token, spec, restart, timeout)
        if self.manual:
            # Ticks the clock (the node gives up at `timeout`); a source that crashed meanwhile ticks no more.
            self.wait(lambda: future.done() or node.closed, timeout=timeout + 5.0)
        if node.closed and not future.done():
            msg = f"migrating {name!r} from {src!r} to {to!r}: node {src!r} stopped before the move ended"
            raise MigrationError(msg)
        return node.finish_out(name, future, 0.0 if self.manual else timeout + 5.0)

    def request(  # noqa: PLR0917 - the transport interface
        self, node: str, kind: int, name: str, hint: str, payload: bytes, timeout: float | None
    ) -> Any:
        """Send a driver request into `node`; for asks return a future of the answer."""
        future = client_request(self.node(node), kind, name, hint, payload)
        if future is None:
            return None
        return _outcome(self, future, timeout)

    def shutdown(self) -> None:
        """Stop the ticker and every node."""
        self._stop.set()
        self._wait.wake()
        if self._ticker is not None:
            self._ticker.join()
        for node in self.nodes():
            node.shutdown()
        with self._lock:
            self._nodes.clear()


def _outcome(transport: MemoryTransport, future: Future[Any], timeout: float | None) -> Any:
    if transport.manual:
        transport.wait(future.done, timeout=timeout if timeout is not None else 30.0)
    return future
