"""Fault injection in the sender-side link layer: the same faults over any transport.

A `Faults` object sits between a node's outboxes and its transport. Each frame
a node sends passes `Faults.plan(src, dst, now)`, which says when (and how many
times) to hand it to the transport: never (dropped, or across a partition),
later (delayed; reordered frames are held back until after the next frame on
the link), or twice (duplicated). A link made `unavailable` makes the
transport fail each call on it as unavailable, which the sender's detector
sees (`Faults.refused`; on Ray the call raises `ActorUnavailableError`). Randomness comes from one seeded
`random.Random`, so a seeded run is reproducible.

The link layer above it retransmits unacknowledged frames and the receiver
re-orders and drops duplicates, so under drop, delay, duplication and reorder
every message still arrives once and in order; a partition holds traffic back
until `heal()` (or until the failure detector declares the far side DOWN).

Thread contract: every method may be called from any thread.
"""

from __future__ import annotations

import random
import threading
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from collections.abc import Collection

__all__ = ["DIRECTORY", "Faults", "LinkFaults"]

DIRECTORY = "@directory"
"""The directory's name in a partition: ``partition({"a", "b", DIRECTORY}, {"c"})`` also cuts node
c's membership traffic with the directory (its polls of the change log and its status reports),
as if the directory's process were out of its reach."""


_CLEAN = (1, 0.0, False)
"""The plan of a frame on a link without faults: send it once, now."""


@attrs.define
class LinkFaults:
    """The faults applied to frames from one node to another (fractions in [0, 1])."""

    drop: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    delay: float = 0.0
    """Seconds every frame is held before it is handed to the transport."""
    unavailable: bool = False
    """Every call on the link fails as unavailable (the frame is not delivered), as Ray's calls to a
    node whose process it cannot reach fail with `ActorUnavailableError`: the sender's detector sees it."""


class Faults:
    """Seeded fault plans per (source, destination) link, and partitions."""

    def __init__(self, *, seed: int = 0) -> None:
        self._lock = threading.Lock()
        self._random = random.Random(seed)
        self._links: dict[tuple[str, str], LinkFaults] = {}
        # Invariant: a frozenset of node names per side; a link is cut when its ends are on different sides.
        self._sides: list[frozenset[str]] = []
        self._refusing = False  # any link `unavailable` (the transports' send checks it for every frame)

    def set(
        self,
        src: str = "*",
        dst: str = "*",
        *,
        drop: float = 0.0,
        duplicate: float = 0.0,
        reorder: float = 0.0,
        delay: float = 0.0,
        unavailable: bool = False,
    ) -> None:
        """Apply faults to frames from `src` to `dst` (``"*"``: any node).

        Raises:
            ValueError: a fraction outside [0, 1] or a negative delay.
        """
        for what, value in (("drop", drop), ("duplicate", duplicate), ("reorder", reorder)):
            if not 0.0 <= value <= 1.0:
                msg = f"fault {what}={value!r} for link {src}->{dst} must be a fraction in [0, 1]"
                raise ValueError(msg)
        if delay < 0:
            msg = f"fault delay={delay!r} for link {src}->{dst} must be >= 0 seconds"
            raise ValueError(msg)
        with self._lock:
            self._links[src, dst] = LinkFaults(drop, duplicate, reorder, delay, unavailable)
            self._refusing = any(faults.unavailable for faults in self._links.values())

    def clear(self) -> None:
        """Remove every fault and partition."""
        with self._lock:
            self._links.clear()
            self._sides = []
            self._refusing = False

    def partition(self, *sides: Collection[str]) -> None:
        """Cut every link between nodes on different `sides` (nodes on no side are unaffected).

        A side may hold `DIRECTORY`: the nodes on the other sides then cannot
        poll or report to the directory (a node on no side reaches it).
        """
        with self._lock:
            self._sides = [frozenset(side) for side in sides]

    def heal(self) -> None:
        """Remove the partition (link faults stay)."""
        with self._lock:
            self._sides = []

    def cut(self, src: str, dst: str) -> bool:
        """Return whether a partition separates `src` from `dst`."""
        with self._lock:
            sides = self._sides
        a = next((i for i, side in enumerate(sides) if src in side), None)
        b = next((i for i, side in enumerate(sides) if dst in side), None)
        return a is not None and b is not None and a != b

    def refused(self, src: str, dst: str) -> bool:
        """Return whether calls from `src` to `dst` fail as unavailable (the transport checks it per frame)."""
        if not self._refusing:
            return False
        with self._lock:
            faults = self._link(src, dst)
        return faults is not None and faults.unavailable

    def _link(self, src: str, dst: str) -> LinkFaults | None:
        return (
            self._links.get((src, dst)) or self._links.get((src, "*")) or self._links.get(("*", dst))
        ) or self._links.get(("*", "*"))

    def plan(self, src: str, dst: str) -> tuple[int, float, bool]:
        """Return (copies to send, delay in seconds, hold back behind the next frame) for one frame."""
        if not self._sides and not self._links:
            # No fault set (the common case), read without the lock: a fault set meanwhile applies from the next frame.
            return _CLEAN
        if self.cut(src, dst):
            return 0, 0.0, False
        with self._lock:
            faults = self._link(src, dst)
            if faults is None:
                return 1, 0.0, False
            rand = self._random.random
            if faults.drop and rand() < faults.drop:
                return 0, 0.0, False
            copies = 2 if faults.duplicate and rand() < faults.duplicate else 1
            hold = bool(faults.reorder) and rand() < faults.reorder
            return copies, faults.delay, hold
