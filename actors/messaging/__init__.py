"""Messaging: the broker, sessions, history, durable inboxes and reliable delivery (see each module)."""

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
    HistoryRef,
    HistoryStatistics,
    MessageHistory,
    Query,
    Retention,
)
from actors.messaging.topics import TopicPattern, check_topic, compile_pattern

__all__ = [
    "DEFAULT_MAX_AGE",
    "MEMBERSHIP_TOPIC",
    "BrokerRef",
    "BrokerStatistics",
    "HistoryEntry",
    "HistoryPage",
    "HistoryRef",
    "HistoryStatistics",
    "MemberJoined",
    "MemberLeft",
    "MessageBroker",
    "MessageHistory",
    "Publish",
    "Published",
    "Query",
    "Retention",
    "SubscriberStatistics",
    "Subscription",
    "TopicPattern",
    "check_topic",
    "compile_pattern",
]
