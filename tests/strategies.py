"""Hypothesis strategies for troupe's message types, shared by the tests."""

from __future__ import annotations

import enum
import re
import sys
from typing import Any

import attrs
import pykka
from hypothesis import strategies as st

import actors
from actors._core import FrozenDict
from actors.protocol import AgentMessage, MessageType, Priority, freeze_json

__all__ = [
    "agent_messages",
    "json_values",
    "message_types",
    "names",
    "priorities",
    "protocol_versions",
    "public_attrs_classes",
    "public_instances",
]


def names() -> st.SearchStrategy[str]:
    """Generate non-empty names (agent names, ids), Unicode included."""
    return st.text(min_size=1, max_size=20)


def message_types() -> st.SearchStrategy[MessageType]:
    """Generate every `MessageType`."""
    return st.sampled_from(MessageType)


def priorities() -> st.SearchStrategy[Priority]:
    """Generate every `Priority`."""
    return st.sampled_from(Priority)


def protocol_versions() -> st.SearchStrategy[str]:
    """Generate supported versions: major 1, any minor."""
    return st.integers(min_value=0, max_value=99).map(lambda minor: f"1.{minor}")


def json_values(*, max_leaves: int = 20) -> st.SearchStrategy[Any]:
    """Generate plain JSON values: nested dicts and lists, Unicode, finite floats."""
    scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
    return st.recursive(
        scalars,
        lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
        max_leaves=max_leaves,
    )


@st.composite
def agent_messages(draw: st.DrawFn, *, content: st.SearchStrategy[Any] | None = None) -> AgentMessage:
    """Generate valid `AgentMessage`s, every field drawn.

    Args:
        draw: supplied by hypothesis.
        content: a strategy for the content; `json_values` by default.
    """
    return AgentMessage(
        message_id=draw(names()),
        sender=draw(names()),
        recipient=draw(st.none() | names()),
        type=draw(message_types()),
        content=draw(content if content is not None else json_values()),
        priority=draw(priorities()),
        timestamp=draw(st.floats(allow_nan=False, allow_infinity=False)),
        correlation_id=draw(st.none() | names()),
        protocol_version=draw(protocol_versions()),
    )


# -- every public attrs class of `actors` -------------------------------------------------------------
#
# `public_instances(cls, refs)` generates valid instances of each attrs class
# that `actors` exports, so that a new class without a strategy fails
# tests/test_messages.py. Classes with an `ActorRef` field take their refs from
# *refs*, a strategy over live refs the test supplies.


def _counts() -> st.SearchStrategy[int]:
    return st.integers(min_value=0, max_value=10**6)


def _seconds() -> st.SearchStrategy[float]:
    return st.floats(min_value=1e-3, max_value=1e6, allow_nan=False, allow_infinity=False)


def _times() -> st.SearchStrategy[float]:
    return st.floats(min_value=0, max_value=2e9, allow_nan=False, allow_infinity=False)


def _keys() -> st.SearchStrategy[str]:
    return st.text(
        st.characters(min_codepoint=ord("a"), max_codepoint=ord("z")) | st.sampled_from("/._-"), min_size=1, max_size=12
    ).filter(lambda key: key.strip() == key and "*" not in key)


def _frozen_counts(keys: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.dictionaries(keys, _counts(), max_size=4).map(FrozenDict)


def _public_strategies(refs: st.SearchStrategy[Any]) -> dict[type, st.SearchStrategy[Any]]:
    a = actors
    names_or_none = st.none() | names()
    payloads = json_values(max_leaves=3).map(freeze_json)  # what a user's message wrapped in ours would be
    entries = st.builds(
        a.Entry,
        key=_keys(),
        value=json_values(max_leaves=5),
        version=st.integers(min_value=1, max_value=10**6),
        created_at=_times(),
        updated_at=_times(),
        writer=names_or_none,
        expires_at=st.none() | _times(),
    )
    proposals = st.builds(
        a.Proposal, value=json_values(max_leaves=5), writer=names_or_none, at=_times(), delete=st.booleans()
    )
    conflicts = st.builds(
        a.Conflict, key=_keys(), kind=st.sampled_from(a.ConflictKind), local=st.none() | entries, remote=proposals
    )
    resolutions = st.builds(
        a.Resolution, outcome=st.sampled_from(a.ConflictOutcome), value=json_values(max_leaves=3), reason=st.text()
    )
    sets = st.builds(
        a.SetEntry,
        key=_keys(),
        value=json_values(max_leaves=5),
        ttl=st.none() | _seconds(),
        expected_version=st.none() | st.integers(min_value=0, max_value=100),
        agent=names_or_none,
    )
    deletes = st.builds(
        a.DeleteEntry, key=_keys(), expected_version=st.none() | st.integers(min_value=0, max_value=100)
    )
    rules = st.builds(a.AccessRule, agent=names(), prefix=st.text(max_size=8), read=st.booleans(), write=st.booleans())
    events = st.builds(
        a.StateEvent,
        seq=_counts(),
        kind=st.sampled_from(a.StateEventKind),
        key=_keys(),
        version=_counts(),
        at=_times(),
        writer=names_or_none,
        entry=st.none() | entries,
    )
    routee_stats = st.builds(
        a.RouteeStatistics,
        ref=refs,
        capabilities=st.frozensets(names(), max_size=3),
        weight=_seconds(),
        active=_counts(),
        queue_length=_counts(),
        average_response_time=st.none() | _seconds(),
        processed=_counts(),
        failed=_counts(),
        success_rate=st.floats(min_value=0, max_value=1),
        last_active=_times(),
    )
    policies = st.builds(
        a.SupervisionPolicy,
        strategy=st.sampled_from(a.SupervisionStrategy),
        max_restarts=st.integers(min_value=0, max_value=10),
        within_seconds=_seconds(),
    )
    return {
        a.AccessRule: rules,
        a.AddRoutee: st.builds(
            a.AddRoutee, ref=refs, capabilities=st.frozensets(names(), max_size=3), weight=_seconds()
        ),
        a.Admission: st.builds(a.Admission, max_concurrent=st.integers(min_value=1, max_value=8)),
        a.AwaitStarted: st.builds(a.AwaitStarted),
        a.Backoff: st.builds(
            a.Backoff, minimum=st.floats(1e-3, 1), maximum=st.floats(1, 100), factor=_seconds(), jitter=st.floats(0, 1)
        ),
        a.BoundedMailbox: st.builds(
            a.BoundedMailbox,
            capacity=st.integers(min_value=1, max_value=1000),
            overflow=st.sampled_from(["fail", "drop_oldest", "drop_newest"]),
        ),
        a.Broadcast: st.builds(a.Broadcast, message=payloads),
        a.ChildInfo: st.builds(
            a.ChildInfo, ref=refs, name=names_or_none, restart=st.sampled_from(a.RestartType), alive=st.booleans()
        ),
        a.ChildSpec: st.builds(
            a.ChildSpec, actor_class=st.just(a.Actor), name=names_or_none, restart=st.sampled_from(a.RestartType)
        ),
        a.Conflict: conflicts,
        a.ConflictRecord: st.builds(
            a.ConflictRecord,
            id=st.integers(min_value=1, max_value=10**6),
            conflict=conflicts,
            strategy=st.sampled_from(a.ConflictStrategy).map(str),
            outcome=st.sampled_from(a.ConflictOutcome),
            at=_times(),
        ),
        a.ConflictStatistics: st.builds(
            a.ConflictStatistics,
            total=_counts(),
            by_strategy=_frozen_counts(st.sampled_from(a.ConflictStrategy).map(str)),
            by_outcome=_frozen_counts(st.sampled_from(a.ConflictOutcome).map(str)),
            parked=_counts(),
        ),
        a.DeadLetter: st.builds(
            a.DeadLetter, message=payloads, recipient=refs, reason=st.sampled_from(a.DeadLetterReason)
        ),
        a.DeadLetterStatistics: st.builds(
            a.DeadLetterStatistics, total=_counts(), by_reason=_frozen_counts(st.sampled_from(a.DeadLetterReason))
        ),
        a.Decider: st.builds(a.Decider, default=st.sampled_from(a.Directive)),
        a.DeleteEntry: deletes,
        a.Drain: st.builds(a.Drain, timeout=_seconds()),
        a.DrainResult: st.builds(a.DrainResult, drained=st.booleans(), abandoned=_counts()),
        a.Entry: entries,
        a.FifoMailbox: st.builds(a.FifoMailbox),
        a.GetEntries: st.builds(a.GetEntries, keys=st.lists(_keys(), max_size=4).map(tuple), agent=names_or_none),
        a.GetEntry: st.builds(a.GetEntry, key=_keys(), agent=names_or_none),
        a.GetRoutees: st.builds(a.GetRoutees),
        a.GetStatistics: st.builds(a.GetStatistics),
        a.ListEntries: st.builds(a.ListEntries, prefix=st.text(max_size=8), agent=names_or_none),
        a.ListParkedConflicts: st.builds(a.ListParkedConflicts, pattern=st.none() | _keys()),
        a.MergeEntries: st.builds(
            a.MergeEntries, entries=st.lists(entries, max_size=3).map(tuple), source=names_or_none
        ),
        a.PoolConfig: st.builds(
            a.PoolConfig,
            min_size=st.integers(min_value=0, max_value=2),
            max_size=st.integers(min_value=2, max_value=10),
            warm_up=st.booleans(),
            max_concurrent=st.integers(min_value=1, max_value=4),
            overflow=st.sampled_from(["fail", "queue"]),
        ),
        a.PriorityMailbox: st.builds(a.PriorityMailbox),
        a.Proposal: proposals,
        a.RemoveRoutee: st.builds(a.RemoveRoutee, ref=refs),
        a.Resizer: st.builds(a.Resizer, pressure_threshold=st.integers(1, 5), backoff_threshold=st.floats(0, 1)),
        a.Resolution: resolutions,
        a.ResolveConflict: st.builds(
            a.ResolveConflict, conflict_id=st.integers(min_value=1, max_value=10**6), resolution=resolutions
        ),
        a.RouteeStatistics: routee_stats,
        a.RouterStatistics: st.builds(
            a.RouterStatistics,
            strategy=names(),
            routees=st.lists(routee_stats, max_size=2).map(tuple),
            waiting=_counts(),
            processed=_counts(),
            failed=_counts(),
            average_response_time=_seconds(),
            dead_routees_removed=_counts(),
        ),
        a.SetAccessRules: st.builds(a.SetAccessRules, rules=st.none() | st.lists(rules, max_size=3).map(tuple)),
        a.SetConflictStrategy: st.builds(
            a.SetConflictStrategy, pattern=_keys(), strategy=st.sampled_from(a.ConflictStrategy)
        ),
        a.SetEntry: sets,
        a.StateChanged: st.builds(a.StateChanged, subscription_id=_counts(), event=events),
        a.StateEvent: events,
        a.StoreStatistics: st.builds(
            a.StoreStatistics,
            keys=_counts(),
            ops=_frozen_counts(st.sampled_from(["set", "get", "delete", "batch", "merge"])),
            conflicts=_counts(),
            expiries=_counts(),
            subscribers=_counts(),
            history=_counts(),
            commits=_counts(),
            committed_records=_counts(),
            committed_changes=_counts(),
        ),
        a.SubscribeState: st.builds(a.SubscribeState, pattern=_keys(), subscriber=refs, agent=names_or_none),
        a.SupervisionPolicy: policies,
        a.Terminated: st.builds(a.Terminated, ref=refs, reason=st.none() | st.builds(ValueError, st.text())),
        a.Tombstone: st.builds(a.Tombstone, key=_keys(), version=_counts(), removed_at=_times()),
        a.UnsubscribeState: st.builds(a.UnsubscribeState, subscription_id=_counts()),
        a.WriteBatch: st.builds(a.WriteBatch, ops=st.lists(sets | deletes, min_size=1, max_size=3).map(tuple)),
        a.WriteResult: st.builds(
            a.WriteResult,
            key=_keys(),
            outcome=st.sampled_from(a.WriteOutcome),
            version=_counts(),
            entry=st.none() | entries,
        ),
    }


# Classes whose strategy is derived from their field annotations (each field's
# type read by `_for_annotation`), with per-class overrides where a field has a
# constraint its type does not say. A class listed nowhere raises KeyError.
_DERIVED = frozenset(
    {
        # coordination
        "Acquire",
        "AgentDeclared",
        "AgentDescriptor",
        "AgentHeartbeat",
        "AgentId",
        "AgentInfo",
        "CancelRequest",
        "CancelRun",
        "CancelTask",
        "CapabilityStatistics",
        "CoordinationStatistics",
        "Deregister",
        "FindAgents",
        "GetAgent",
        "GetCoordinationStatistics",
        "GetResourceStatistics",
        "GetTask",
        "HealthPolicy",
        "HealthSample",
        "KeepAlive",
        "Lease",
        "LeasePreempted",
        "LeaseRequest",
        "ListAgentTypes",
        "ListCapabilities",
        "Register",
        "RegistrationResult",
        "RegistryEvent",
        "RegistrySnapshot",
        "Release",
        "ResourceStatistics",
        "ResourceUsage",
        "RetryPolicy",
        "RunTask",
        "StatusChange",
        "Submit",
        "Task",
        "TaskFinished",
        "TaskHandle",
        "TaskInfo",
        "TaskProgress",
        "TaskSpec",
        "Timeouts",
        "UnwatchRegistry",
        "ValidateLease",
        "WatchRegistry",
        # messaging
        "BrokerStatistics",
        "ConsumerStatistics",
        "HistoryEntry",
        "HistoryPage",
        "HistoryQuery",
        "HistoryRetention",
        "HistoryStatistics",
        "InboxItem",
        "InboxStatistics",
        "MemberJoined",
        "MemberLeft",
        "ProducerStatistics",
        "Publish",
        "Published",
        "SessionInfo",
        "SessionMemberJoined",
        "SessionMemberLeft",
        "SessionTranscript",
        "SubscriberStatistics",
        "Subscription",
        # cluster and core
        "Address",
        "LinkConfig",
        "NodeInfo",
        "QueuedMessage",
        "PoolStatistics",
    }
)


def _idents() -> st.SearchStrategy[str]:
    """Names every service accepts (an agent type holds no ``/``)."""
    return st.text(st.characters(min_codepoint=ord("a"), max_codepoint=ord("z")), min_size=1, max_size=8)


def _split_top(text: str, sep: str) -> list[str]:
    """Split *text* on *sep* outside brackets."""
    parts, depth, start = [], 0, 0
    for index, char in enumerate(text):
        depth += (char == "[") - (char == "]")
        if char == sep and depth == 0:
            parts.append(text[start:index].strip())
            start = index + 1
    parts.append(text[start:].strip())
    return parts


def _for_annotation(annotation: str, namespace: dict[str, Any], refs: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Return a strategy of valid, frozen values for a field annotated *annotation* (a string)."""
    options = _split_top(annotation, "|")
    if len(options) > 1:
        return st.one_of(*(_for_annotation(option, namespace, refs) for option in options))
    text = options[0]
    match = re.fullmatch(r"([\w.]+)(?:\[(.*)\])?", text)
    if match is None:
        msg = f"no strategy for the annotation {text!r}: add an override in tests/strategies.py"
        raise KeyError(msg)
    head, inner = match.group(1).rsplit(".", 1)[-1], match.group(2)
    args = _split_top(inner, ",") if inner else []
    scalars: dict[str, st.SearchStrategy[Any]] = {
        "None": st.none(),
        "bool": st.booleans(),
        "int": st.integers(min_value=1, max_value=10**6),
        "float": _seconds(),
        "str": _idents(),
        "Any": json_values(max_leaves=3).map(freeze_json),
        "AgentMessage": agent_messages(content=json_values(max_leaves=3)),
        "BaseException": st.builds(ValueError, st.text(max_size=5)),
    }
    if head in scalars:
        return scalars[head]
    if head == "ActorRef":
        return refs
    if head == "Future":
        return st.builds(pykka.ThreadingFuture)
    if head == "Callable":
        return st.nothing()  # optional callables are drawn as None
    if head == "frozenset":
        return st.frozensets(_for_annotation(args[0], namespace, refs), max_size=3)
    if head == "tuple":
        if args[0].startswith("Callable"):
            return st.just(())
        if args[0].startswith("type["):
            return st.lists(st.sampled_from([ValueError, KeyError, TimeoutError]), max_size=2).map(tuple)
        if args[-1] == "...":
            return st.lists(_for_annotation(args[0], namespace, refs), max_size=2).map(tuple)
        return st.tuples(*(_for_annotation(arg, namespace, refs) for arg in args))
    if head in {"FrozenDict", "Mapping"}:
        keys, values = (_for_annotation(arg, namespace, refs) for arg in args)
        return st.dictionaries(keys, values, max_size=3).map(FrozenDict)
    target = namespace.get(head) or getattr(actors, head, None)
    if isinstance(target, type) and attrs.has(target):
        return st.deferred(lambda: _derived(target, refs))
    if isinstance(target, type) and issubclass(target, enum.Enum):
        return st.sampled_from(target)
    msg = f"no strategy for the annotation {text!r}: add an override in tests/strategies.py"
    raise KeyError(msg)


def _overrides(refs: st.SearchStrategy[Any]) -> dict[str, dict[str, st.SearchStrategy[Any]]]:
    """Fields whose valid values their annotation does not say, by class name."""
    return {
        "RetryPolicy": {
            "backoff": st.floats(min_value=1, max_value=10),
            "initial_delay": st.floats(min_value=0, max_value=1e6),
            "max_delay": st.none() | st.floats(min_value=0, max_value=1e6),
            "max_attempts": st.none() | st.integers(1, 100),
        },
        "HealthSample": {"error_rate": st.floats(min_value=0, max_value=1)},
        "TaskFinished": {"run_time": _times()},
        "PoolStatistics": {"hit_rate": st.floats(min_value=0, max_value=1), "strategy": names()},
    }


def _derived(cls: type, refs: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Build *cls* with every init field drawn from its annotation (or its override)."""
    namespace = vars(sys.modules[cls.__module__])
    overrides = _overrides(refs).get(cls.__name__, {})
    fields = {
        field.alias: overrides[field.name]
        if field.name in overrides
        else _for_annotation(str(field.type), namespace, refs)
        for field in attrs.fields(cls)
        if field.init
    }
    return st.builds(cls, **fields)


def public_instances(cls: type, refs: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Generate valid instances of *cls*, an attrs class `actors` exports.

    Raises:
        KeyError: *cls* has no strategy here yet: add one above (or list it
            in `_DERIVED` when its field annotations say what is valid).
    """
    if cls.__name__ in _DERIVED:
        return _derived(cls, refs)
    return _public_strategies(refs)[cls]


def public_attrs_classes() -> list[type]:
    """Return every attrs class `actors` exports, by name."""
    found = (getattr(actors, name) for name in sorted(actors.__all__))
    return [value for value in found if isinstance(value, type) and attrs.has(value)]
