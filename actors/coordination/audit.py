"""The coordinator's audit events (``agent_activity`` and ``task_history``), built only when recorded.

Each function returns one flat event for `actors._core.AuditChannel.emit`;
the coordinator calls it behind the stream's flag, so with the audit log off
a site costs one attribute read. Field names are the README's (Audit logs).

Threading: called on the coordinator's turn only.
"""

from __future__ import annotations

from typing import Any

from actors.coordination.identity import AgentDescriptor

__all__ = ["agent_event", "task_event"]


def agent_event(event: str, descriptor: AgentDescriptor, **fields: object) -> dict[str, object]:
    """Return an ``agent_activity`` event: registered, deregistered, status_changed."""
    return {
        "event": event,
        "agent_id": str(descriptor.id),
        "agent_type": descriptor.id.type,
        "capabilities": ",".join(sorted(descriptor.capabilities)),
        **fields,
    }


def task_event(
    event: str,
    task_id: str,
    kind: str,
    *,
    agent: Any = None,
    attempt: int = 0,
    duration_ms: float | None = None,
    error: BaseException | None = None,
) -> dict[str, object]:
    """Return a ``task_history`` event: submitted, assigned, completed, failed, timed_out, cancelled, retrying."""
    return {
        "event": event,
        "task_id": task_id,
        "kind": kind,
        "agent_id": None if agent is None else str(agent),
        "attempt": attempt,
        "duration_ms": duration_ms,
        "success": None if event not in ("completed", "failed", "timed_out", "cancelled") else event == "completed",
        "error_type": None if error is None else type(error).__name__,
        "error": None if error is None else str(error),
    }
