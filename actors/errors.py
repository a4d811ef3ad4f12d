"""The one exceptions module of troupe.

Every error the package raises on purpose is a `TroupeError` and also the
standard exception it refines, so callers can catch either. pykka's own
`ActorDeadError` and `Timeout` keep their pykka types: a troupe actor is a
pykka actor, and code written against pykka catches them as it always has.

Messages say what failed, on which actor or key, and what to do about it.
"""

from __future__ import annotations

__all__ = [
    "AccessDeniedError",
    "ActorNameTakenError",
    "ClusterUnavailableError",
    "ConflictError",
    "ConflictNotFoundError",
    "CoroutineSubscriberError",
    "EventLoopError",
    "HistoryPayloadError",
    "HistoryQueryError",
    "MailboxFullError",
    "MessageNotPicklableError",
    "MigrationError",
    "ModeError",
    "NoRouteeError",
    "NodeDownError",
    "NodeNameTakenError",
    "NotASessionMemberError",
    "NotAnActorError",
    "PatternError",
    "PoolExhaustedError",
    "ProtocolError",
    "RestartIntensityError",
    "RouteeStartError",
    "SessionClosedError",
    "SessionNotFoundError",
    "SpawnContextError",
    "StrategyError",
    "SubscriberOverflowError",
    "SystemShutdownError",
    "TopicError",
    "TroupeError",
    "TroupeInternalError",
    "UnknownMessageError",
    "UnknownNodeError",
    "WireVersionError",
]


class TroupeError(Exception):
    """Root of every error troupe raises on purpose."""


class TroupeInternalError(TroupeError, RuntimeError):
    """A path that cannot happen did: a bug in troupe, never in the caller's code.

    It is raised, or delivered to the asker, instead of being logged and
    carried on past (trio's ``TrioInternalError``). Please report it, with its
    traceback, in the project's issue tracker.
    """


class ActorNameTakenError(TroupeError, ValueError):
    """A name given to `spawn` is already used by a live actor in the system."""


class ModeError(TroupeError, ValueError):
    """An execution mode name is unknown, or conflicts with the actor class."""


class NotAnActorError(TroupeError, TypeError):
    """Something that is not a pykka `Actor` subclass was given where one is needed."""


class SpawnContextError(TroupeError, RuntimeError):
    """A troupe actor was instantiated directly instead of being spawned."""


class SystemShutdownError(TroupeError, RuntimeError):
    """The actor system was asked to do work after it shut down."""


class EventLoopError(TroupeError, RuntimeError):
    """An asyncio event loop was used in a way that cannot work.

    Raised for a blocking call on an event loop's thread that this same loop
    would have to answer (it would deadlock: await instead), for an actor
    spawned on a loop that is not running or is closed, and, inside an
    asyncio handler, for awaiting an asyncio future that belongs to another
    loop.
    """


class MailboxFullError(TroupeError, RuntimeError):
    """A bounded mailbox refused a message (overflow policy `fail` or `block` timing out)."""


class RestartIntensityError(TroupeError, RuntimeError):
    """A supervisor restarted its children more often than its policy allows, and gave up."""


class PoolExhaustedError(TroupeError, RuntimeError):
    """Every routee of a pool is busy and the pool is at its maximum size."""


class RouteeStartError(TroupeError, RuntimeError):
    """A pool could not start a routee: its constructor or ``on_start`` raised, or it took too long."""


class NoRouteeError(TroupeError, LookupError):
    """A router has no routee able to take a message (none at all, or none with the capabilities it needs)."""


class ConflictError(TroupeError, RuntimeError):
    """A write lost a version conflict and the strategy for its key rejects it.

    Attributes:
        key: the key written, or ``None`` when not about one key.
        local_version: the version the store holds (0: the key is absent).
        remote_version: the version the refused write expected, or ``None``
            for a write that expected none (a race between blind writes).
    """

    def __init__(
        self,
        message: str,
        *,
        key: str | None = None,
        local_version: int | None = None,
        remote_version: int | None = None,
    ) -> None:
        super().__init__(message)
        self.key = key
        self.local_version = local_version
        self.remote_version = remote_version


class ConflictNotFoundError(TroupeError, LookupError):
    """No parked conflict has the id given to resolve it (unknown, or resolved already)."""


class PatternError(TroupeError, ValueError):
    """A key pattern (a glob such as ``analysis:*``) is malformed."""


class StrategyError(TroupeError, ValueError):
    """A conflict or routing strategy is unknown, or cannot be used where it was given."""


class AccessDeniedError(TroupeError, PermissionError):
    """An agent tried an operation its access rules do not grant."""


class ProtocolError(TroupeError, ValueError):
    """A message could not be decoded or validated at an edge (JSON, SQLite).

    Attributes:
        field: the dotted path of the offending field, or ``None`` when the
            input as a whole is malformed.
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class UnknownNodeError(TroupeError, LookupError):
    """A cluster operation named a node that never joined the cluster, or that is DOWN."""


class NodeNameTakenError(TroupeError, ValueError):
    """`Cluster.start_node` was given the name of a node that is UP or SUSPECT."""


class NodeDownError(TroupeError, ConnectionError):
    """A cluster node is DOWN: the reason in `Terminated` for its watched actors, and in its asks' failures."""


class MessageNotPicklableError(TroupeError, TypeError):
    """A message or constructor argument bound for another node does not pickle."""


class WireVersionError(TroupeError, ValueError):
    """A cluster frame came with a wire major version this node does not speak."""


class MigrationError(TroupeError, RuntimeError):
    """An actor cannot be migrated: no `snapshot`/`restore` pair, already on the target, or no such actor."""


class ClusterUnavailableError(TroupeError, ConnectionError):
    """The cluster's backend (Ray) cannot be reached or is not installed."""


# -- messaging (actors.messaging) ------------------------------------------------------------------


class TopicError(TroupeError, ValueError):
    """A topic name or subscription pattern is empty or malformed (the message names the segment)."""


class CoroutineSubscriberError(TroupeError, TypeError):
    """A coroutine function was given where a plain callable is required: nothing would await it."""


class SubscriberOverflowError(TroupeError, RuntimeError):
    """A subscriber with overflow policy ``"fail"`` had a full buffer; the others got the message."""


class HistoryPayloadError(TroupeError, TypeError):
    """A message bound for the history is neither an `AgentMessage` nor a JSON value."""


class HistoryQueryError(TroupeError, ValueError):
    """A history query is malformed: an inverted time range, a negative limit, an unknown cursor."""


class SessionNotFoundError(TroupeError, LookupError):
    """No session has the given id (never created, or not in the history being resumed)."""


class SessionClosedError(TroupeError, RuntimeError):
    """The session was closed: nobody may join it or broadcast to it any more."""


class NotASessionMemberError(TroupeError, LookupError):
    """The agent is not a member of the session it tried to leave or speak in."""


class UnknownMessageError(TroupeError, LookupError):
    """No message with that id waits in the durable inbox (never sent, or already processed)."""
