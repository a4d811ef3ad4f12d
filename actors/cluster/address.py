"""`Address`: what a location-transparent ref is, on the wire and in a directory."""

from __future__ import annotations

import attrs

__all__ = ["Address"]


@attrs.frozen
class Address:
    """Where an actor was when the ref was made: its cluster, node, name and incarnation.

    The name is the actor's identity in the cluster; the node is a hint (the
    directory knows where the actor lives now, after a migration or a failover),
    and the incarnation counts its placements (a new one per migration or restart elsewhere).
    """

    cluster: str
    node: str
    name: str
    incarnation: int = 0

    def __str__(self) -> str:
        return f"troupe://{self.cluster}/{self.node}/{self.name}#{self.incarnation}"
