"""`Cluster`: nodes, placement, lookup and migration, over a transport.

    cluster = Cluster(MemoryTransport(clock=ManualClock()))     # or RayTransport(...)
    cluster.start_node("a"); cluster.start_node("b")
    ref = cluster.spawn(Greeter, "Hello", name="greeter", node="a", restart="permanent")
    ref.ask("Ada"); ref.tell("Grace")
    cluster.migrate(ref, to="b")                                  # needs snapshot()/restore(state)

The driver (the process holding the `Cluster`) is a client-only member: it
hosts no actors; its refs send through the transport's client path. Actors
on nodes get `RemoteRef`s in their messages and send node to node.

Thread contract: one thread drives a `Cluster` at a time (its operations are
the control plane); refs may be used from any thread.
"""

from __future__ import annotations

import pickle
import uuid
from typing import TYPE_CHECKING, Any

import pykka

from actors._core import Future, check_interface
from actors.cluster import wire
from actors.cluster.address import Address
from actors.cluster.directory import ActorEntry, NodeInfo, NodeStatus
from actors.cluster.node import fail, new_name
from actors.cluster.refs import RemoteRef, WatchPoint, decoding
from actors.errors import ActorNameTakenError, MigrationError, UnknownNodeError

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType

__all__ = ["Cluster"]


class _Client:
    """The driver's endpoint: refs held by the driver send through the transport's client path."""

    def __init__(self, cluster: Cluster) -> None:
        self._cluster = cluster

    def _entry_node(self, ref: RemoteRef) -> str:
        # The actor's own node if UP; else an UP node relays it (a SUSPECT or
        # DOWN node may be gone: the relay holds it for the failover, see
        # "Failover delivery" in `actors.cluster.node`).
        cluster = self._cluster
        entry = cluster.directory.actor(ref.address.name)
        node = ref.address.node if entry is None else entry.node
        if cluster.directory.node(node).status is NodeStatus.UP:
            return node
        up = [n.name for n in cluster.directory.nodes() if n.status is NodeStatus.UP]
        return up[0] if up else node

    def _request(self, ref: RemoteRef, kind: int, payload: bytes, timeout: float | None) -> Any:
        node = self._entry_node(ref)
        return self._cluster.transport.request(node, kind, ref.address.name, ref.address.node, payload, timeout)

    def send_tell(self, ref: RemoteRef, message: Any) -> None:
        payload = wire.dumps_payload(message, f"message to {ref.address.name!r}")
        self._request(ref, wire.TELL, payload, None)

    def send_ask(self, ref: RemoteRef, message: Any, *, inline: bool = False) -> Future[Any]:  # noqa: ARG002
        payload = wire.dumps_payload(message, f"ask to {ref.address.name!r}")
        return self._future(ref, wire.ASK, payload)

    def send_call(self, ref: RemoteRef, attribute: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Future[Any]:
        payload = wire.dumps_payload((attribute, args, kwargs), f"call {attribute}() on {ref.address.name!r}")
        return self._future(ref, wire.CALL, payload)

    def send_stop(self, ref: RemoteRef) -> Future[Any]:
        return self._future(ref, wire.CALL, pickle.dumps(("__stop__", (), {})))

    def _future(self, ref: RemoteRef, kind: int, payload: bytes) -> Future[Any]:
        outcome = self._request(ref, kind, payload, None)
        if isinstance(outcome, pykka.Future):
            return outcome  # type: ignore[return-value]
        future: Future[Any] = Future()
        name = ref.address.name

        def done(call: Any) -> None:  # a concurrent.futures.Future of (ok, pickled value)
            try:
                result = call.result()
            except Exception as exc:  # noqa: BLE001 - the node's process is gone
                msg = f"actor {name!r} cannot answer: its node's process is gone ({type(exc).__name__})"
                result = (False, pickle.dumps(pykka.ActorDeadError(msg)))
            _settle(future, result, self)

        outcome.add_done_callback(done)
        return future

    def watch_point(self, ref: RemoteRef) -> WatchPoint:
        msg = f"the driver cannot watch {ref}: only actors on cluster nodes watch (call self.watch(ref) in one)"
        raise TypeError(msg)

    def is_alive(self, ref: RemoteRef) -> bool:
        entry = self._cluster.directory.actor(ref.address.name)
        return entry is not None and self._cluster.directory.node(entry.node).status is not NodeStatus.DOWN


def _settle(future: Future[Any], outcome: Any, endpoint: Any) -> None:
    """Complete `future` from a transport's (ok, pickled value) outcome."""
    ok, payload = outcome
    with decoding(endpoint):
        value = pickle.loads(payload)  # noqa: S301 - bytes from the cluster's own nodes and directory
    if ok:
        future.set(value)
    else:
        fail(future, value)


class Cluster:
    """A cluster of troupe nodes over `transport` (`MemoryTransport` or `RayTransport`).

    Args:
        transport: carries frames and control calls between nodes.
        name: the cluster's name (a Ray namespace prefix; part of every `Address`).
    """

    def __init__(self, transport: Any, *, name: str = "troupe") -> None:
        check_interface(
            "transport",
            transport,
            ("open",),
            "a cluster transport (MemoryTransport(), RayTransport())",
            owner="Cluster",
        )
        self.name = name
        self.transport = transport
        transport.open(name)
        self.directory = transport.directory
        self._client = _Client(self)

    def __enter__(self) -> Cluster:  # noqa: PYI034 - Self would need typing_extensions on 3.11's mypy
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.shutdown()

    # -- nodes -------------------------------------------------------------------------

    def start_node(self, name: str, **options: Any) -> NodeInfo:
        """Start node `name` (an `ActorSystem`; on Ray, in its own Ray actor process) and return it.

        Options go to the transport (on Ray: ``ray_node=`` to pin it to a Ray
        node id, ``resources=``, ``dispatchers=``).

        Raises:
            NodeNameTakenError: a node of that name is UP or SUSPECT.
        """
        if not isinstance(name, str) or not name or "/" in name:
            msg = f"a node name must be a non-empty str without '/', got {name!r}"
            raise ValueError(msg)
        self.transport.start_node(name, **options)
        info: NodeInfo = self.directory.node(name)
        return info

    def stop_node(self, name: str) -> None:
        """Stop node `name` gracefully: it is DOWN at once; its actors stop (watchers get `Terminated`)."""
        self._node(name)
        self.transport.stop_node(name)

    def crash_node(self, name: str) -> None:
        """Kill node `name` abruptly (for tests and drills): the failure detector finds out."""
        self._node(name)
        self.transport.crash(name)

    def nodes(self) -> list[NodeInfo]:
        """Return every node (name, epoch, UP / SUSPECT / DOWN, its Ray node), in join order."""
        return list(self.directory.nodes())

    def _node(self, name: str, *, up: bool = False) -> NodeInfo:
        info: NodeInfo = self.directory.node(name)
        if up and info.status is not NodeStatus.UP:
            msg = f"node {name!r} is {info.status}: no new actors go there; pick an UP node or node=None"
            raise UnknownNodeError(msg)
        return info

    # -- actors -----------------------------------------------------------------------

    def spawn(
        self,
        actor_class: type[pykka.Actor],
        *args: Any,
        node: str | None = None,
        name: str | None = None,
        restart: str = "temporary",
        mode: str | None = None,
        **kwargs: Any,
    ) -> RemoteRef:
        """Start an actor on `node` (None: the node the hash ring gives its name) and return its ref.

        Raises:
            UnknownNodeError: `node` never joined, or is not UP; or no node is UP.
            ActorNameTakenError: `name` is taken in the cluster.
            MessageNotPicklableError: the class or an argument does not pickle.
        """
        name = name if name is not None else new_name(actor_class)
        if self.directory.actor(name) is not None:
            entry = self.directory.actor(name)
            msg = (
                f"an actor named {name!r} already runs in cluster {self.name!r} (on node {entry.node!r}); "
                "choose another name"
            )
            raise ActorNameTakenError(msg)
        if node is None:
            node = self.directory.place(name)
            if node is None:
                msg = f"cannot place {actor_class.__name__} {name!r}: no node of cluster {self.name!r} is UP"
                raise UnknownNodeError(msg)
        else:
            self._node(node, up=True)
        spec = wire.dumps_payload(
            (actor_class, args, kwargs, mode), f"{actor_class.__name__} with constructor arguments"
        )
        self.transport.control(node, "spawn", name, spec, restart, 0, None)
        self.directory.add_actor(ActorEntry(name, node, 0, spec, restart))
        return RemoteRef(Address(self.name, node, name, 0), self._client)

    def lookup(self, name: str) -> RemoteRef | None:
        """Return a ref to the actor named `name` anywhere in the cluster, or None."""
        entry = self.directory.actor(name)
        if entry is None:
            return None
        return RemoteRef(Address(self.name, entry.node, name, entry.incarnation), self._client)

    def where(self, ref: RemoteRef | str) -> str | None:
        """Return the node the actor lives on now, or None."""
        entry = self.directory.actor(ref if isinstance(ref, str) else ref.address.name)
        return None if entry is None else entry.node

    def migrate(self, ref: RemoteRef, *, to: str, timeout: float = 30.0) -> RemoteRef:
        """Move the actor behind `ref` to node `to`, with its state; old refs keep working.

        One request to the source node; the rest is node to node over the
        data links ("Migration" in `actors.cluster.node`): every UP node holds
        new mail for it and fences what it sent; the source finishes the
        message in hand, calls ``snapshot()``, and ships the state with the
        mail not yet handled to the target, which ``restore(state)``s it with
        the incarnation bumped and handles that mail first, in order; the
        source updates the directory once and every node sends what it held
        to the target. The source forwards any straggler (for
        `LinkConfig.forward_for`; then the directory routes them). If it
        cannot finish, the actor stays where it was, with all its mail (or,
        if the target died after it was sent there, from the move's snapshot
        without the mail it shipped: at most once).

        Raises:
            MigrationError: no such actor, it is already on `to`, its class
                has no ``snapshot()`` / ``restore(state)`` pair, or the handoff
                failed (the message says where the actor is then).
            UnknownNodeError: `to` is unknown or not UP (the source node checks).
        """
        name = ref.address.name
        entry = self.directory.actor(name)
        if entry is None:
            msg = f"cannot migrate {ref}: no such actor in cluster {self.name!r} (it has stopped?)"
            raise MigrationError(msg)
        if not isinstance(to, str):
            msg = f"cannot migrate {name!r}: `to` must be a node name (str), got {to!r}"
            raise TypeError(msg)
        if entry.node == to:
            msg = f"cannot migrate {name!r} to node {to!r}: it is already there"
            raise MigrationError(msg)
        cls = pickle.loads(entry.spec)[0]  # noqa: S301 - bytes from the cluster's own nodes and directory
        if not (callable(getattr(cls, "snapshot", None)) and callable(getattr(cls, "restore", None))):
            msg = (
                f"cannot migrate {name!r}: its class {cls.__qualname__} has no snapshot()/restore(state) pair; "
                "add `def snapshot(self) -> state` and `def restore(self, state) -> None` to move it with its state"
            )
            raise MigrationError(msg)
        incarnation = self.transport.migrate(entry.node, name, to, uuid.uuid4().hex, entry.spec, entry.restart, timeout)
        return RemoteRef(Address(self.name, to, name, incarnation), self._client)

    def stop(self, ref: RemoteRef) -> bool:
        """Stop the actor behind `ref` for good; return whether it was running."""
        node = self.where(ref)
        return bool(node is not None and self.transport.control(node, "stop_actor", ref.address.name))

    # -- time and shutting down ---------------------------------------------------------

    def wait(self, predicate: Callable[[], bool], *, timeout: float = 30.0) -> bool:
        """Drive the cluster until `predicate()` is true (ticking a manual clock); False on `timeout`."""
        return bool(self.transport.wait(predicate, timeout=timeout))

    def status(self, name: str) -> NodeStatus:
        """Return node `name`'s status."""
        return self._node(name).status

    def shutdown(self) -> None:
        """Stop every node and the transport."""
        self.transport.shutdown()
