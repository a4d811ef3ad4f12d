"""Messaging: the broker, sessions, history, durable inboxes and reliable delivery (see each module).

The errors these raise live in `actors.errors`; they are re-exported here too.
"""

from actors.errors import (
    CoroutineSubscriberError,
    HistoryPayloadError,
    HistoryQueryError,
    NotASessionMemberError,
    SessionClosedError,
    SessionNotFoundError,
    SubscriberOverflowError,
    TopicError,
    UnknownMessageError,
)
from actors.messaging.broker import (
    MEMBERSHIP_TOPIC,
    BrokerRef,
    BrokerStatistics,
    MemberJoined,
    MemberLeft,
    MessageBroker,
    Publish,
    Published,
    SubscriberStatistics,
    Subscription,
)
from actors.messaging.history import (
    DEFAULT_MAX_AGE,
    HistoryEntry,
    HistoryPage,
    HistoryQuery,
    HistoryRef,
    HistoryRetention,
    HistoryStatistics,
    MessageHistory,
)
from actors.messaging.inbox import DurableInbox, InboxItem, InboxRef, InboxStatistics
from actors.messaging.reliable import (
    ConsumerController,
    ConsumerStatistics,
    LossyLink,
    ProducerController,
    ProducerStatistics,
    Request,
    SequencedMessage,
)
from actors.messaging.sessions import (
    SessionInfo,
    SessionManager,
    SessionMemberJoined,
    SessionMemberLeft,
    SessionRef,
    SessionTranscript,
)
from actors.messaging.spawning import spawn_service
from actors.messaging.topics import TopicPattern, check_topic, compile_pattern

__all__ = [
    "DEFAULT_MAX_AGE",
    "MEMBERSHIP_TOPIC",
    "BrokerRef",
    "BrokerStatistics",
    "ConsumerController",
    "ConsumerStatistics",
    "CoroutineSubscriberError",
    "DurableInbox",
    "HistoryEntry",
    "HistoryPage",
    "HistoryPayloadError",
    "HistoryQuery",
    "HistoryQueryError",
    "HistoryRef",
    "HistoryRetention",
    "HistoryStatistics",
    "InboxItem",
    "InboxRef",
    "InboxStatistics",
    "LossyLink",
    "MemberJoined",
    "MemberLeft",
    "MessageBroker",
    "MessageHistory",
    "NotASessionMemberError",
    "ProducerController",
    "ProducerStatistics",
    "Publish",
    "Published",
    "Request",
    "SequencedMessage",
    "SessionClosedError",
    "SessionInfo",
    "SessionManager",
    "SessionMemberJoined",
    "SessionMemberLeft",
    "SessionNotFoundError",
    "SessionRef",
    "SessionTranscript",
    "SubscriberOverflowError",
    "SubscriberStatistics",
    "Subscription",
    "TopicError",
    "TopicPattern",
    "UnknownMessageError",
    "check_topic",
    "compile_pattern",
    "spawn_service",
]
