"""An agent's status, derived from what the coordinator knows, and the legal moves between statuses.

Status is never set by hand (seed 000 lets it be set, so it can lie). The
coordinator computes it with `derive_status` from facts it holds itself:
whether the agent is reachable, what it declared (blocked, in a session), and
how many of its tasks are in flight. Each change is checked against `LEGAL`
and streamed with the agent's own sequence number.

Threading: pure functions and frozen values.
"""

from __future__ import annotations

import enum
from typing import Final

import attrs

from actors.coordination.identity import AgentId

__all__ = ["LEGAL", "AgentStatus", "StatusChange", "derive_status", "is_legal"]


class AgentStatus(enum.StrEnum):
    """The six statuses of seed 000, in the order `derive_status` tests them (last first)."""

    IDLE = "idle"
    """Registered, reachable, nothing in flight."""
    WORKING = "working"
    """At least one task in flight, and room for more."""
    BUSY = "busy"
    """In flight == max_concurrent_tasks: no credit left."""
    BLOCKED = "blocked"
    """The agent declared it waits (``with self.blocked(reason)``): it is given no new task."""
    COLLABORATING = "collaborating"
    """The agent declared it is in a session (``with self.collaborating(session)``)."""
    OFFLINE = "offline"
    """Stopped, or its heartbeat timed out: it is given no task; its tasks went elsewhere."""


def derive_status(*, offline: bool, blocked: bool, session: bool, in_flight: int, max_concurrent: int) -> AgentStatus:
    """Return the status these facts mean; the first that holds wins: offline, blocked, session, busy, working."""
    if offline:
        return AgentStatus.OFFLINE
    if blocked:
        return AgentStatus.BLOCKED
    if session:
        return AgentStatus.COLLABORATING
    if in_flight >= max_concurrent:
        return AgentStatus.BUSY
    if in_flight:
        return AgentStatus.WORKING
    return AgentStatus.IDLE


_S = AgentStatus
LEGAL: Final[frozenset[tuple[AgentStatus, AgentStatus]]] = frozenset(
    {(a, b) for a in _S for b in _S if a is not b}
    # An unreachable agent cannot declare anything: it comes back as it was
    # left (idle, working or busy: the coordinator kept its slots), and only
    # then may it declare that it is blocked or in a session.
    - {(_S.OFFLINE, _S.BLOCKED), (_S.OFFLINE, _S.COLLABORATING)}
)
"""The status changes that may happen. A change to the same status is no change."""


def is_legal(old: AgentStatus, new: AgentStatus) -> bool:
    """Return whether `old` -> `new` is a legal change."""
    return (old, new) in LEGAL


@attrs.frozen
class StatusChange:
    """One change of one agent's status, numbered per agent (1, 2, 3...: a gap means a lost change)."""

    agent: AgentId
    seq: int
    old: AgentStatus | None
    new: AgentStatus
    at: float
