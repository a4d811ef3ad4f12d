"""Shared state for agents: the `StateStore` and `ConflictResolver` actors and their messages.

Everything public here is also exported from `actors`.
"""

from actors.state.access import AccessRule
from actors.state.conflicts import (
    ABSENT,
    Conflict,
    ConflictKind,
    ConflictOutcome,
    ConflictRecord,
    ConflictStatistics,
    ConflictStrategy,
    Proposal,
    Resolution,
)
from actors.state.entry import Entry, Tombstone
from actors.state.merge import three_way_merge
from actors.state.messages import (
    DeleteEntry,
    GetEntries,
    GetEntry,
    ListEntries,
    ListParkedConflicts,
    MergeEntries,
    ResolveConflict,
    SetAccessRules,
    SetConflictStrategy,
    SetEntry,
    StateChanged,
    StateEvent,
    StateEventKind,
    StoreStatistics,
    SubscribeState,
    UnsubscribeState,
    WriteBatch,
    WriteOutcome,
    WriteResult,
)
from actors.state.persistence import MemoryBackend, SqliteBackend, StateBackend
from actors.state.resolver import ConflictResolver
from actors.state.store import StateStore

__all__ = [
    "ABSENT",
    "AccessRule",
    "Conflict",
    "ConflictKind",
    "ConflictOutcome",
    "ConflictRecord",
    "ConflictResolver",
    "ConflictStatistics",
    "ConflictStrategy",
    "DeleteEntry",
    "Entry",
    "GetEntries",
    "GetEntry",
    "ListEntries",
    "ListParkedConflicts",
    "MemoryBackend",
    "MergeEntries",
    "Proposal",
    "Resolution",
    "ResolveConflict",
    "SetAccessRules",
    "SetConflictStrategy",
    "SetEntry",
    "SqliteBackend",
    "StateBackend",
    "StateChanged",
    "StateEvent",
    "StateEventKind",
    "StateStore",
    "StoreStatistics",
    "SubscribeState",
    "Tombstone",
    "UnsubscribeState",
    "WriteBatch",
    "WriteOutcome",
    "WriteResult",
    "three_way_merge",
]
