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
    "AgentRegistrationError",
    "AlertRuleError",
    "AuditLogError",
    "ClusterUnavailableError",
    "ConflictError",
    "ConflictNotFoundError",
    "CoordinationInputError",
    "CoordinationStoppedError",
    "CoroutineSubscriberError",
    "EventLoopError",
    "ExpectationError",
    "HistoryPayloadError",
    "HistoryQueryError",
    "LeaseNotHeldError",
    "MailboxFullError",
    "MessageNotPicklableError",
    "MessageNotUnderstoodError",
    "MetricsOffError",
    "MigrationError",
    "ModeError",
    "NoRouteeError",
    "NodeDownError",
    "NodeNameTakenError",
    "NotASessionMemberError",
    "NotAnActorError",
    "ObservabilityConfigError",
    "PatternError",
    "PipelineItemError",
    "PoolExhaustedError",
    "ProtocolError",
    "RemoteTaskError",
    "ResourceRequestError",
    "ResourceWaitTimeoutError",
    "RestartIntensityError",
    "RouteeStartError",
    "RoutingRequestError",
    "SessionClosedError",
    "SessionNotFoundError",
    "SpawnContextError",
    "StaleFencingTokenError",
    "StrategyError",
    "SubscriberOverflowError",
    "SystemShutdownError",
    "TaskCancelledError",
    "TaskSpecError",
    "TaskTimeoutError",
    "TopicError",
    "TroupeError",
    "TroupeInternalError",
    "UnknownAgentError",
    "UnknownMessageError",
    "UnknownMetricError",
    "UnknownNodeError",
    "UnknownTaskError",
    "WireVersionError",
    "WorkflowDefinitionError",
    "WorkflowNotFoundError",
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


class RoutingRequestError(TroupeError, ValueError):
    """A router or pool refused a management request: a routee that cannot be one, an `AddRoutee` to a pool."""


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


# -- coordination (actors.coordination) and its test kit (actors.testing) ---------


class AgentRegistrationError(TroupeError, ValueError):
    """A registration the coordinator cannot accept (one actor under two agent ids, a bad descriptor)."""


class UnknownAgentError(TroupeError, LookupError):
    """No agent with this id is registered with the coordinator."""


class TaskSpecError(TroupeError, ValueError):
    """A task, retry policy or timeout that cannot be valid (a zero or negative timeout, say)."""


class UnknownTaskError(TroupeError, LookupError):
    """No task with this id was ever submitted to the coordinator."""


class TaskTimeoutError(TroupeError, TimeoutError):
    """One of a task's timeouts passed: a coordinator task's (Temporal's four) or a workflow task's attempt.

    A late result of the attempt it ended, if one ever comes, is discarded.

    Attributes:
        timeout: which one: ``"schedule_to_start"``, ``"start_to_close"``,
            ``"schedule_to_close"`` or ``"heartbeat"``.
        task_id: the task it ended (or whose attempt it ended), or None
            where the caller named it in the message only.
    """

    def __init__(self, message: str, *, timeout: str = "start_to_close", task_id: str | None = None) -> None:
        super().__init__(message)
        self.timeout = timeout
        self.task_id = task_id


class TaskCancelledError(TroupeError, RuntimeError):
    """The task was cancelled before it finished; it is never retried."""


class CoordinationStoppedError(TroupeError, RuntimeError):
    """The coordinator or resource manager stopped before it could answer this task or request."""


class ResourceRequestError(TroupeError, ValueError):
    """A resource request that can never be granted (unknown resource, more than the capacity, no units)."""


class ResourceWaitTimeoutError(TroupeError, TimeoutError):
    """A resource request waited in the queue longer than its timeout and was withdrawn."""


class LeaseNotHeldError(TroupeError, LookupError):
    """The lease is not held by this owner: released already, expired, revoked, or someone else's."""


class StaleFencingTokenError(TroupeError, PermissionError):
    """A fencing token older than the resource's current grant: its lease ended; do not act on it."""


class RemoteTaskError(TroupeError, RuntimeError):
    """A task's error as it came over the protocol (an ERROR_REPORT): its type is named, not rebuilt.

    Attributes:
        error_type: the name of the remote exception's type.
    """

    def __init__(self, message: str, *, error_type: str) -> None:
        super().__init__(message)
        self.error_type = error_type


class ExpectationError(TroupeError, AssertionError):
    """A test-kit expectation failed (a message that did not come, or one that should not have)."""


class UnknownNodeError(TroupeError, LookupError):
    """A cluster operation named a node that never joined the cluster, or that is DOWN."""


class NodeNameTakenError(TroupeError, ValueError):
    """`Cluster.start_node` was given the name of a node that is UP or SUSPECT."""


class NodeDownError(TroupeError, ConnectionError):
    """A cluster node is DOWN: the reason in `Terminated` for its watched actors, and in its asks' failures."""


class MessageNotUnderstoodError(TroupeError, TypeError):
    """A shared service was sent a message it does not handle: a bad request, refused (see `Actor.refusals`)."""


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


class WorkflowDefinitionError(TroupeError, ValueError):
    """A workflow or one of its tasks is malformed: an unknown dependency, a duplicate id, a cycle, a bad target.

    Also raised for an execution asked with settings that cannot work (a
    parallel limit below 1, an unknown failure policy) and for a resume whose
    definition no longer matches the journal.
    """


class WorkflowNotFoundError(TroupeError, LookupError):
    """No workflow or execution has the id given (never defined, or not in this orchestrator's journal)."""


class CoordinationInputError(TroupeError, ValueError):
    """A coordination pattern got input it cannot work with.

    A vote threshold outside (0, 1], a pipeline with no stages, a
    scatter-gather asking for more replies than it has targets, and the like:
    the message names the pattern, the argument and the accepted range.
    """


class PipelineItemError(TroupeError, RuntimeError):
    """An item failed in a pipeline stage; the cause is chained (``__cause__``).

    Attributes:
        index: the item's position in the input.
        stage: the index of the stage that failed on it.
    """

    def __init__(self, message: str, *, index: int, stage: int) -> None:
        super().__init__(message)
        self.index = index
        self.stage = stage


class MetricsOffError(TroupeError, RuntimeError):
    """`ActorSystem.metrics()` was called on a system whose metrics are off.

    Turn them on first with ``actors.observability.enable_metrics(system)``
    (they cost nothing until then, so they are off by default).
    """


class UnknownMetricError(TroupeError, KeyError):
    """A flat metric name (``MetricsSnapshot.flat()``) that the snapshot does not define.

    The message names the metric and the documented name patterns
    (`actors.observability.METRIC_NAMES`); a name of an actor class that has
    not handled a message yet is unknown until it has.
    """

    def __str__(self) -> str:
        # KeyError's str() is the repr of its argument; ours is a sentence.
        return str(self.args[0]) if self.args else ""


class ObservabilityConfigError(TroupeError, ValueError):
    """Observability was given a setting it cannot use.

    A `sample_every` below 1, a malformed W3C ``traceparent``, a metrics
    server address that is not a loopback one, an optional extra
    (``[otel]``, ``[prometheus]``) that is not installed: the message names
    the setting, what it got, and what it accepts.
    """


class AuditLogError(TroupeError, OSError):
    """The audit log cannot be enabled: its directory cannot be created or written, or it is on already.

    Raised by `enable_audit_log` at once, never later inside a runtime thread
    (a write that fails later is counted and logged; see `AuditStatistics`).
    """


class AlertRuleError(TroupeError, ValueError):
    """An alert rule cannot be evaluated: an unknown metric, a negative ``for``, a bad threshold or severity.

    The message names the rule, the field and what it accepts.
    """
