"""A cluster of troupe nodes: location-transparent refs, failure detection, death watch, migration.

A node is one `ActorSystem` (on Ray: hosted in one Ray actor process) holding
many actors; `RemoteRef`s reach an actor wherever it lives; frames between
nodes are batched per destination, sequenced, acknowledged, re-ordered and
de-duplicated; a directory keeps membership and locations; a tiered failure
detector marks nodes SUSPECT and DOWN. `MemoryTransport` runs the same nodes
in one process on a manual clock, with fault injection; `RayTransport` runs
them on Ray (the optional extra ``troupe-actors[ray]``; ``import actors.cluster``
never imports ray).
"""

from actors.cluster.address import Address
from actors.cluster.cluster import Cluster
from actors.cluster.directory import ActorEntry, Directory, NodeInfo, NodeStatus
from actors.cluster.faults import Faults
from actors.cluster.link import LinkConfig
from actors.cluster.memory import MemoryTransport
from actors.cluster.node import Node
from actors.cluster.refs import RemoteProxy, RemoteRef
from actors.cluster.wire import WIRE_VERSION

__all__ = [
    "WIRE_VERSION",
    "ActorEntry",
    "Address",
    "Cluster",
    "Directory",
    "Faults",
    "LinkConfig",
    "MemoryTransport",
    "Node",
    "NodeInfo",
    "NodeStatus",
    "RayTransport",
    "RemoteProxy",
    "RemoteRef",
]


def __getattr__(name: str) -> object:
    if name == "RayTransport":
        from actors.cluster.ray import RayTransport  # noqa: PLC0415 - imports ray only when asked for

        return RayTransport
    raise AttributeError(name)
