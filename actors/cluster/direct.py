"""The direct data plane of `RayTransport`: frames node to node over a socket, with Ray as the fallback.

A Ray call's own tail is longer than troupe's ask target on this machine.
Measured here (2 CPUs, Ray 2.60, two Ray nodes of one ``ray.cluster_utils.Cluster``,
load 23-25, 1,000 round trips of 200 bytes between two Ray actors, each
answer waking a waiting thread as a troupe reply does):

- one Ray call and its return value: p50 0.87-1.04 ms, p99 3.9-6.1 ms
  (with the caller's garbage collector disabled no better: p99 2.4-15 ms,
  so the tail is Ray's, not the node's GC);
- the same over a Unix socket, a reader thread on each side: p50 26-35 µs,
  p99 0.10-0.14 ms; over TCP p50 38-41 µs, p99 0.11-0.24 ms.

So data frames go over one persistent socket per (sender, receiver) node
pair and direction, and Ray keeps the control plane: the directory, spawn,
the migration driver call, failure detection, and the data path itself
while no socket is up. A node learns a peer's `DataAddress` by a Ray call
to the peer (``data_address``, control group), and dials it off the hot path;
until the socket is up, and after it breaks, frames go by Ray calls as
before. Nothing else changes for the link layer: a frame on the socket is
the same bytes, with the same sequence numbers, acks, re-ordering and dedup
(`actors.cluster.link`), so a frame overtaking or overtaken by a Ray call
on a switch-over is put in order by the receiver's `Inbox`, and a frame
lost in a broken socket is sent again by the sender's retransmission (or,
if the peer goes DOWN, fails its asks with `ActorDeadError` and makes its
tells dead letters, as any unacknowledged frame).

Stream format: after a hello (the receiver's 32-byte token, then the
sender's name and epoch, length-prefixed), each frame is an 8-byte
big-endian length and the frame's bytes. The token is random per node
process and only travels through Ray: a connection that does not present it
is closed before anything on it is unpickled.

Same host (same kernel boot id and network namespace): a Unix socket in the
abstract namespace (no file to clean up); else TCP on the Ray node's IP,
with ``TCP_NODELAY``.

Threads (all daemons, in the node's process): ``troupe-direct-<node>-accept``
accepts connections; one ``troupe-direct-<node>-from-<peer>`` per inbound
connection reads frames and hands them to the node (`Node.receive`, which
may block), and reports the connection `lost` if the peer ended it; a
``troupe-direct-<node>-to-<peer>`` writer starts only when a socket's buffer
is full (the common send is a non-blocking write on the sending thread, no
hand-off).
"""

from __future__ import annotations

import contextlib
import hmac
import pickle
import secrets
import select
import selectors
import socket
import struct
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["Connection", "DataAddress", "DataPlane"]

_HEADER = struct.Struct("!Q")
_TOKEN_BYTES = 32
_HELLO_TIMEOUT = 5.0
"""Seconds a new connection has to present its hello (token, name, epoch)."""
_CONNECT_TIMEOUT = 2.0
_MAX_PENDING = 64 << 20
"""Bytes a connection may hold unwritten (its peer reads too slowly, or hangs); past that it breaks and the
frames go by Ray (the link layer sends the unacknowledged ones again)."""
_READ_BUFFER = 256 * 1024
_MAX_HELLO = 4096


@attrs.frozen
class DataAddress:
    """Where a node's data plane listens, and the token a connection must present."""

    host: str | None
    """The kernel and network namespace (boot id, net namespace): equal means a Unix socket reaches it."""
    unix: str | None
    """Its Unix socket's name in the abstract namespace (Linux), or None."""
    ip: str
    port: int
    token: bytes


def _host_key() -> str | None:
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        net = str(Path("/proc/self/ns/net").readlink())
    except OSError:
        return None
    return f"{boot}/{net}"


class Connection:
    """One outbound socket to a peer node: frames written in the order `send` is called.

    Thread contract: `send` may be called from any thread (under `lock`, so
    frames never interleave); a frame the socket cannot take at once is
    queued in `pending` (under `lock`) and written by the connection's
    writer thread. Once `broken`, it never sends again.
    """

    def __init__(self, sock: socket.socket, name: str, on_broken: Callable[[Connection], None]) -> None:
        self.sock = sock
        self.name = name
        self.lock = threading.Lock()
        # Invariant (under lock): bytes accepted by `send` and not yet written, in order; empty when broken.
        self.pending = bytearray()
        self.broken = False
        self._wake = threading.Condition(self.lock)
        self._writer: threading.Thread | None = None
        self._on_broken = on_broken
        sock.setblocking(False)

    def send(self, data: bytes) -> bool:
        """Write (or queue) one frame; False if the connection is broken (the frame must go another way)."""
        header = _HEADER.pack(len(data))
        total = len(header) + len(data)
        with self.lock:
            if self.broken:
                return False
            if self.pending:
                if len(self.pending) + total > _MAX_PENDING:
                    self._break_locked()
                    return False
                self.pending += header
                self.pending += data
                return True
            try:
                written = self.sock.sendmsg((header, data))
            except (BlockingIOError, InterruptedError):
                written = 0
            except OSError:
                self._break_locked()
                return False
            if written < total:
                if written < len(header):
                    self.pending += header[written:]
                    self.pending += data
                else:
                    self.pending += memoryview(data)[written - len(header) :]
                self._start_writer()
                self._wake.notify()
            return True

    def _start_writer(self) -> None:
        if self._writer is None:
            self._writer = threading.Thread(target=self._write, name=f"{self.name}-writer", daemon=True)
            self._writer.start()

    def _write(self) -> None:
        """Write `pending` as the socket takes it (the writer thread, started when a send found the buffer full)."""
        while True:
            with self.lock:
                while not self.pending and not self.broken:
                    self._wake.wait()
                if self.broken:
                    return
            with contextlib.suppress(OSError, ValueError):  # closed meanwhile: seen under the lock below
                select.select([], [self.sock], [], 0.1)
            with self.lock:
                if self.broken:
                    return
                try:
                    written = self.sock.send(self.pending)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    self._break_locked()
                    return
                del self.pending[:written]

    def _close_locked(self) -> bool:
        """Mark it broken and close the socket (under `lock`); False if it already was."""
        if self.broken:
            return False
        self.broken = True
        self.pending = bytearray()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._wake.notify_all()
        return True

    def _break_locked(self) -> None:
        if self._close_locked():
            threading.Thread(target=self._on_broken, args=(self,), name=f"{self.name}-broken", daemon=True).start()

    def close(self) -> None:
        """Close it here (not a failure: no `on_broken`)."""
        with self.lock:
            self._close_locked()


class DataPlane:
    """A node process's listening sockets and inbound readers; it dials peers (`connect`) for the node.

    Args:
        name, epoch: the node, as hellos name it.
        ip: the address its TCP socket listens on (the Ray node's IP).
        receive: hands a frame to the node (a reader thread; may block).
        lost: called with (peer, epoch) when an inbound connection ended
            without this side closing it (the peer crashed, or its side
            broke): on that connection's reader thread, after the last
            frame read from it was handed to `receive`.
    """

    def __init__(
        self,
        name: str,
        epoch: int,
        ip: str,
        receive: Callable[[bytes], Any],
        lost: Callable[[str, int], None],
    ) -> None:
        self.name = name
        self.epoch = epoch
        self._receive = receive
        self._lost = lost
        self._lock = threading.Lock()
        self._closed = False
        # Invariant (under _lock): inbound connections being read, by (peer, epoch); closed ones removed.
        self._inbound: dict[tuple[str, int], list[socket.socket]] = {}
        self._token = secrets.token_bytes(_TOKEN_BYTES)
        self._listeners: list[socket.socket] = []
        tcp = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM)
        tcp.bind((ip, 0))
        tcp.listen(64)
        self._listeners.append(tcp)
        host, unix = _host_key(), None
        if host is not None:
            unix = f"\0troupe-{name}-{epoch}-{secrets.token_hex(8)}"
            try:
                local = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                local.bind(unix)
                local.listen(64)
                self._listeners.append(local)
            except OSError:
                unix = None
        self.address = DataAddress(host, unix, ip, tcp.getsockname()[1], self._token)
        self._wake_r, self._wake_w = socket.socketpair()
        self._acceptor = threading.Thread(target=self._accept, name=f"troupe-direct-{name}-accept", daemon=True)
        self._acceptor.start()

    # -- dialing (the sender's side) ------------------------------------------------------

    def connect(self, peer: str, address: DataAddress, on_broken: Callable[[Connection], None]) -> Connection:
        """Open a connection to `peer`'s data plane (blocking, up to a few seconds); raise OSError if it fails."""
        sock: socket.socket | None = None
        if address.unix is not None and address.host == _host_key():
            unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            unix.settimeout(_CONNECT_TIMEOUT)
            try:
                unix.connect(address.unix)
                sock = unix
            except OSError:
                unix.close()
        if sock is None:
            sock = socket.create_connection((address.ip, address.port), timeout=_CONNECT_TIMEOUT)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            hello = pickle.dumps((self.name, self.epoch))
            sock.sendall(address.token + _HEADER.pack(len(hello)) + hello)
        except OSError:
            sock.close()
            raise
        return Connection(sock, f"troupe-direct-{self.name}-to-{peer}", on_broken)

    # -- accepting and reading (the receiver's side) --------------------------------------

    def _accept(self) -> None:
        with selectors.DefaultSelector() as selector:
            for listener in self._listeners:
                selector.register(listener, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while not self._closed:
                for key, _ in selector.select():
                    if key.fileobj is self._wake_r:
                        return
                    try:
                        sock, _ = key.fileobj.accept()  # type: ignore[union-attr]
                    except OSError:
                        continue
                    threading.Thread(
                        target=self._read, args=(sock,), name=f"troupe-direct-{self.name}-from", daemon=True
                    ).start()

    def _hello(self, sock: socket.socket, reader: Any) -> tuple[str, int] | None:
        sock.settimeout(_HELLO_TIMEOUT)
        token = reader.read(_TOKEN_BYTES)
        if len(token) != _TOKEN_BYTES or not hmac.compare_digest(token, self._token):
            return None
        header = reader.read(_HEADER.size)
        if len(header) != _HEADER.size:
            return None
        (size,) = _HEADER.unpack(header)
        if size > _MAX_HELLO:
            return None
        peer, epoch = pickle.loads(reader.read(size))  # noqa: S301 - after the token: one of the cluster's nodes
        sock.settimeout(None)
        return str(peer), int(epoch)

    def _read(self, sock: socket.socket) -> None:
        """Read one inbound connection's frames into the node (its reader thread) until it ends."""
        key: tuple[str, int] | None = None
        ended_here = False
        try:
            with sock, sock.makefile("rb", buffering=_READ_BUFFER) as reader:
                try:
                    key = self._hello(sock, reader)
                except (OSError, ValueError, pickle.UnpicklingError, EOFError):
                    key = None
                if key is None:
                    return
                with self._lock:
                    if self._closed:
                        return
                    self._inbound.setdefault(key, []).append(sock)
                threading.current_thread().name = f"troupe-direct-{self.name}-from-{key[0]}"
                receive, header_size, unpack = self._receive, _HEADER.size, _HEADER.unpack
                while True:
                    header = reader.read(header_size)
                    if len(header) != header_size:
                        break
                    (size,) = unpack(header)
                    data = reader.read(size)
                    if len(data) != size:
                        break
                    try:
                        receive(data)
                    except Exception:  # noqa: BLE001 - one bad frame must not end the link
                        from loguru import logger  # noqa: PLC0415

                        logger.opt(exception=True).error("Node {} could not take a frame from {}", self.name, key[0])
        except OSError:
            pass
        finally:
            if key is not None:
                with self._lock:
                    socks = self._inbound.get(key, [])
                    ended_here = self._closed or sock not in socks
                    if sock in socks:
                        socks.remove(sock)
                        if not socks:
                            del self._inbound[key]
            if key is not None and not ended_here:
                self._lost(*key)

    def drop_inbound(self, peer: str, epoch: int) -> None:
        """Close the inbound connections of `peer` at `epoch` (it is DOWN: nothing from it is taken any more)."""
        with self._lock:
            socks = self._inbound.pop((peer, epoch), [])
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def inbound(self) -> list[tuple[str, int]]:
        """Return the (peer, epoch) of every inbound connection being read."""
        with self._lock:
            return list(self._inbound)

    def close(self) -> None:
        """Stop accepting and close every inbound connection (their readers end; `lost` is not called)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            socks = [sock for group in self._inbound.values() for sock in group]
            self._inbound.clear()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        self._acceptor.join(timeout=5)
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for listener in self._listeners:
            listener.close()
        self._wake_r.close()
        self._wake_w.close()
