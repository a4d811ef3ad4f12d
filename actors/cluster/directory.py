"""The directory: which nodes are in the cluster, and where each named actor lives.

One `Directory` per cluster (an object in the process for `MemoryTransport`,
the state of one named Ray actor for `RayTransport`). Nodes register in it,
report the status of their peers to it, and read its changes as an append-only
event log (`changes(since)`), polled on their tick: that log is the topology
view every node keeps, and the way a join, a leave, a DOWN, an actor's new
location and a migration are announced.

When a node is first reported DOWN, the directory re-places at once every
``permanent`` actor it hosted on the UP node the hash ring picks, with the
incarnation bumped and the last snapshot saved for it; the chosen node sees
the event and starts it.

It is the membership authority (Orleans' membership table): a node is
``name#epoch``, DOWN is final for an epoch, a report from a node it holds
DOWN is refused (fencing), and SUSPECT is kept per suspecting member. It is
also one vote in every node's quorum (see `Node.tick`: the split-brain rule).
On Ray it reads ``ray.nodes()`` and downs the nodes of dead Ray nodes
(`down_dead_ray_nodes`).

Thread contract: every method may be called from any thread (one lock).
"""

from __future__ import annotations

import bisect
import enum
import hashlib
import threading
from typing import Any

import attrs

from actors.errors import NodeNameTakenError, UnknownNodeError

__all__ = ["ActorEntry", "Directory", "NodeInfo", "NodeStatus", "Ring"]


class NodeStatus(enum.StrEnum):
    """A node's place in the failure detector's tiers."""

    UP = "up"
    SUSPECT = "suspect"
    """Unreachable for now (calls fail as unavailable, or heartbeats late): no new traffic is flushed to it."""
    DOWN = "down"
    """Dead for the cluster (the transport reported its death, or it missed heartbeats): it never comes back."""


_RANK = {NodeStatus.UP: 0, NodeStatus.SUSPECT: 1, NodeStatus.DOWN: 2}


@attrs.frozen
class NodeInfo:
    """One node as the directory sees it."""

    name: str
    epoch: int
    status: NodeStatus
    ray_node: str | None = None
    """The id of the Ray node hosting it (None on `MemoryTransport`)."""


@attrs.frozen
class ActorEntry:
    """Where one named actor lives, and how to start it again."""

    name: str
    node: str
    incarnation: int
    spec: bytes
    """The pickled (class, args, kwargs, mode) it was spawned with."""
    restart: str
    snapshot: bytes | None = None
    moving: bool = False


class Ring:
    """A consistent-hash ring of node names (160 virtual nodes each, as troupe's router ring)."""

    def __init__(self, nodes: list[str], vnodes: int = 160) -> None:
        points = sorted((_hash(f"{node}#{i}"), node) for node in nodes for i in range(vnodes))
        self._keys = [p[0] for p in points]
        self._nodes = [p[1] for p in points]

    def pick(self, key: str) -> str | None:
        """Return the node that owns `key`, or None for an empty ring."""
        if not self._nodes:
            return None
        i = bisect.bisect(self._keys, _hash(key)) % len(self._keys)
        return self._nodes[i]


def _hash(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")


class Directory:
    """Membership, node status and actor locations, with a change log."""

    def __init__(self, cluster: str = "troupe") -> None:
        self.cluster = cluster
        self._lock = threading.Lock()
        self._nodes: dict[str, NodeInfo] = {}
        self._actors: dict[str, ActorEntry] = {}
        # Invariant: append-only; changes(since=n) returns events[n:].
        self._events: list[tuple[Any, ...]] = []
        self._epochs = 0
        # Invariant (under _lock): a SUSPECT node -> the members that suspect it (None: an anonymous
        # report, cleared only by an anonymous UP). A node is SUSPECT while this set is not empty; a
        # member that goes DOWN stops suspecting anyone (its view no longer counts).
        self._suspects: dict[str, set[str | None]] = {}

    # -- nodes ---------------------------------------------------------------------

    def register(self, name: str, ray_node: str | None = None) -> int:
        """Add node `name` as UP and return its epoch (a name of a DOWN node may be reused).

        Raises:
            NodeNameTakenError: a node of that name is UP or SUSPECT.
        """
        with self._lock:
            old = self._nodes.get(name)
            if old is not None and old.status is not NodeStatus.DOWN:
                msg = (
                    f"a node named {name!r} is already {old.status} in cluster {self.cluster!r}; "
                    "choose another name, or stop that node first"
                )
                raise NodeNameTakenError(msg)
            self._epochs += 1
            info = NodeInfo(name, self._epochs, NodeStatus.UP, ray_node)
            self._nodes[name] = info
            self._events.append(("node", info))
            return info.epoch

    def report(self, name: str, epoch: int, status: NodeStatus, *, by: tuple[str, int] | None = None) -> bool:
        """Record that node `name` (incarnation `epoch`) is `status`; return whether that changed it.

        A status only moves towards DOWN, except SUSPECT back to UP; DOWN is final
        for that epoch. The first DOWN re-places the node's permanent actors.
        SUSPECT is kept per reporter: a node is UP again once every member that
        suspected it reported it UP or went DOWN itself.

        `by` is the reporting node's (name, epoch); a report from a node this
        directory holds DOWN (or from an epoch it does not know) is refused:
        a fenced incarnation cannot change anyone's status. Of the two sides
        of a partition that both reach the directory, the first to report the
        other DOWN wins, and the other side learns it is DOWN itself.
        """
        with self._lock:
            if by is not None:
                reporter = self._nodes.get(by[0])
                if reporter is None or reporter.epoch != by[1] or reporter.status is NodeStatus.DOWN:
                    return False
            info = self._nodes.get(name)
            if info is None or info.epoch != epoch or info.status is status or info.status is NodeStatus.DOWN:
                return False
            if _RANK[status] < _RANK[info.status] and status is not NodeStatus.UP:
                return False
            reporter_name = None if by is None else by[0]
            if status is NodeStatus.SUSPECT:
                self._suspects.setdefault(name, set()).add(reporter_name)
            elif status is NodeStatus.UP:
                suspects = self._suspects.get(name, set())
                if reporter_name is None:
                    suspects.clear()
                suspects.discard(reporter_name)
                if suspects:
                    return False
            self._set_status(info, status)
            if status is NodeStatus.DOWN:
                self._replace_actors_of(name)
            return True

    def _set_status(self, info: NodeInfo, status: NodeStatus) -> None:
        self._nodes[info.name] = attrs.evolve(info, status=status)
        self._events.append(("node", self._nodes[info.name]))
        if status is NodeStatus.UP:
            self._suspects.pop(info.name, None)
        if status is not NodeStatus.DOWN:
            return
        self._suspects.pop(info.name, None)
        for name, suspects in list(self._suspects.items()):
            suspects.discard(info.name)
            suspected = self._nodes.get(name)
            if not suspects and suspected is not None and suspected.status is NodeStatus.SUSPECT:
                self._set_status(suspected, NodeStatus.UP)

    def set_ray_node(self, name: str, epoch: int, ray_node: str) -> None:
        """Record the Ray node hosting node `name` (incarnation `epoch`), as its process found it."""
        with self._lock:
            info = self._nodes.get(name)
            if info is None or info.epoch != epoch or info.ray_node == ray_node:
                return
            info = attrs.evolve(info, ray_node=ray_node)
            self._nodes[name] = info
            self._events.append(("node", info))

    def down_dead_ray_nodes(self, dead: set[str]) -> list[str]:
        """Mark DOWN every node hosted on a Ray node of `dead` (ids Ray reports dead); return their names.

        The failure detector's Ray tier: ``ray.nodes()`` is the authority on a
        Ray node's death, so no quorum is needed to act on it.
        """
        downed = []
        with self._lock:
            for info in list(self._nodes.values()):
                if info.ray_node in dead and info.status is not NodeStatus.DOWN:
                    self._set_status(info, NodeStatus.DOWN)
                    self._replace_actors_of(info.name)
                    downed.append(info.name)
        return downed

    def leave(self, name: str) -> None:
        """Mark node `name` DOWN because it left on purpose (its actors were stopped)."""
        with self._lock:
            info = self._nodes.get(name)
            if info is None or info.status is NodeStatus.DOWN:
                return
            self._set_status(info, NodeStatus.DOWN)
            for entry in [e for e in self._actors.values() if e.node == name]:
                del self._actors[entry.name]
                self._events.append(("gone", entry.name, entry.node))

    def nodes(self) -> list[NodeInfo]:
        """Return every node that ever joined, in join order (the latest incarnation of each name)."""
        with self._lock:
            return list(self._nodes.values())

    def node(self, name: str) -> NodeInfo:
        """Return node `name`.

        Raises:
            UnknownNodeError: no node of that name ever joined.
        """
        with self._lock:
            info = self._nodes.get(name)
        if info is None:
            msg = f"no node named {name!r} in cluster {self.cluster!r}; known: {sorted(self._nodes)}"
            raise UnknownNodeError(msg)
        return info

    def place(self, key: str) -> str | None:
        """Return the UP node the hash ring gives `key`, or None if no node is UP."""
        with self._lock:
            return self._place(key)

    def _place(self, key: str) -> str | None:
        up = sorted(n.name for n in self._nodes.values() if n.status is NodeStatus.UP)
        return Ring(up).pick(key)

    # -- actors --------------------------------------------------------------------

    def add_actor(self, entry: ActorEntry) -> None:
        """Record a newly spawned actor (or its new incarnation) and announce it.

        A new incarnation without a snapshot (a migration's: the target saves
        a fresh one once it is released) keeps the one saved before, so a
        failover in between restarts it from that, not from its constructor.
        One recorded on a node already DOWN (its target died as the migration
        finished) is re-placed at once, as the DOWN re-placed that node's actors.
        """
        with self._lock:
            old = self._actors.get(entry.name)
            if entry.snapshot is None and old is not None and old.incarnation < entry.incarnation:
                entry = attrs.evolve(entry, snapshot=old.snapshot)
            self._actors[entry.name] = entry
            self._events.append(("actor", entry.name, entry.node, entry.incarnation, None))
            info = self._nodes.get(entry.node)
            if info is not None and info.status is NodeStatus.DOWN:
                self._replace_actors_of(entry.node, only=entry.name)

    def remove_actor(self, name: str, node: str, incarnation: int) -> None:
        """Forget actor `name` (it stopped for good), if it is still that incarnation on `node`."""
        with self._lock:
            entry = self._actors.get(name)
            if entry is not None and entry.node == node and entry.incarnation == incarnation:
                del self._actors[name]
                self._events.append(("gone", name, node))

    def actor(self, name: str) -> ActorEntry | None:
        """Return where actor `name` lives, or None."""
        with self._lock:
            return self._actors.get(name)

    def actors(self) -> list[ActorEntry]:
        """Return every live named actor's entry."""
        with self._lock:
            return list(self._actors.values())

    def set_moving(self, name: str, *, moving: bool) -> None:
        """Mark actor `name` as being migrated (or not)."""
        with self._lock:
            entry = self._actors.get(name)
            if entry is not None:
                self._actors[name] = attrs.evolve(entry, moving=moving)

    def save_snapshot(self, name: str, incarnation: int, snapshot: bytes) -> None:
        """Keep `snapshot` as actor `name`'s state to restart it from, if it is still that incarnation."""
        with self._lock:
            entry = self._actors.get(name)
            if entry is not None and entry.incarnation == incarnation:
                self._actors[name] = attrs.evolve(entry, snapshot=snapshot)

    def _replace_actors_of(self, down: str, only: str | None = None) -> None:
        for entry in [e for e in self._actors.values() if e.node == down and only in {None, e.name}]:
            target = self._place(entry.name) if entry.restart == "permanent" else None
            if target is None:
                del self._actors[entry.name]
                self._events.append(("gone", entry.name, down))
                continue
            moved = attrs.evolve(entry, node=target, incarnation=entry.incarnation + 1, moving=False)
            self._actors[entry.name] = moved
            self._events.append(("actor", entry.name, target, moved.incarnation, "restart"))

    # -- the change log ------------------------------------------------------------

    def changes(self, since: int) -> tuple[int, list[tuple[Any, ...]]]:
        """Return (the log's length, the events from index `since` on)."""
        with self._lock:
            return len(self._events), self._events[since:]
