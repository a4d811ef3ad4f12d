"""troupe: an in-process actor runtime for multi-agent systems, built on pykka.

Import everything from here::

    from actors import Actor, ActorSystem

The library logs through loguru and is silent by default (loguru's advice for
libraries); ``from loguru import logger; logger.enable("actors")`` turns it on.
"""

from loguru import logger as _logger

from actors.runtime.actor import MODES, Actor, PooledActor, ThreadActor
from actors.runtime.clock import Clock, ManualClock, MonotonicClock
from actors.runtime.deadletters import DeadLetter, DeadLetterReason, DeadLetters, DeadLetterStatistics
from actors.runtime.errors import (
    AccessDeniedError,
    ActorNameTakenError,
    ConflictError,
    ConflictNotFoundError,
    MailboxFullError,
    ModeError,
    NotAnActorError,
    PatternError,
    PoolExhaustedError,
    ProtocolError,
    SpawnContextError,
    StrategyError,
    SystemShutdownError,
    TroupeError,
)
from actors.runtime.future import Future
from actors.runtime.mailbox import BoundedMailbox, FifoMailbox, PriorityMailbox
from actors.runtime.ref import ActorRef
from actors.runtime.system import ActorSystem, default_system
from actors.runtime.timers import Timers
from actors.state import (
    AccessRule,
    Conflict,
    ConflictKind,
    ConflictOutcome,
    ConflictRecord,
    ConflictResolver,
    ConflictStatistics,
    ConflictStrategy,
    DeleteEntry,
    Entry,
    GetEntries,
    GetEntry,
    ListEntries,
    ListParkedConflicts,
    MemoryBackend,
    MergeEntries,
    Proposal,
    Resolution,
    ResolveConflict,
    SetAccessRules,
    SetConflictStrategy,
    SetEntry,
    SqliteBackend,
    StateBackend,
    StateChanged,
    StateEvent,
    StateEventKind,
    StateStore,
    StoreStatistics,
    SubscribeState,
    Tombstone,
    UnsubscribeState,
    WriteBatch,
    WriteOutcome,
    WriteResult,
    three_way_merge,
)

_logger.disable("actors")

__all__ = [
    "MODES",
    "AccessDeniedError",
    "AccessRule",
    "Actor",
    "ActorNameTakenError",
    "ActorRef",
    "ActorSystem",
    "BoundedMailbox",
    "Clock",
    "Conflict",
    "ConflictError",
    "ConflictKind",
    "ConflictNotFoundError",
    "ConflictOutcome",
    "ConflictRecord",
    "ConflictResolver",
    "ConflictStatistics",
    "ConflictStrategy",
    "DeadLetter",
    "DeadLetterReason",
    "DeadLetterStatistics",
    "DeadLetters",
    "DeleteEntry",
    "Entry",
    "FifoMailbox",
    "Future",
    "GetEntries",
    "GetEntry",
    "ListEntries",
    "ListParkedConflicts",
    "MailboxFullError",
    "ManualClock",
    "MemoryBackend",
    "MergeEntries",
    "ModeError",
    "MonotonicClock",
    "NotAnActorError",
    "PatternError",
    "PoolExhaustedError",
    "PooledActor",
    "PriorityMailbox",
    "Proposal",
    "ProtocolError",
    "Resolution",
    "ResolveConflict",
    "SetAccessRules",
    "SetConflictStrategy",
    "SetEntry",
    "SpawnContextError",
    "SqliteBackend",
    "StateBackend",
    "StateChanged",
    "StateEvent",
    "StateEventKind",
    "StateStore",
    "StoreStatistics",
    "StrategyError",
    "SubscribeState",
    "SystemShutdownError",
    "ThreadActor",
    "Timers",
    "Tombstone",
    "TroupeError",
    "UnsubscribeState",
    "WriteBatch",
    "WriteOutcome",
    "WriteResult",
    "default_system",
    "three_way_merge",
]
