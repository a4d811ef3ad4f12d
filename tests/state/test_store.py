"""The state store: reads, writes, CAS, batches, TTL, subscriptions, history, statistics, access."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs
import pytest

from actors import (
    AccessDeniedError,
    AccessRule,
    ActorSystem,
    BoundedMailbox,
    ConflictError,
    DeleteEntry,
    FifoMailbox,
    GetEntries,
    GetEntry,
    ListEntries,
    ManualClock,
    PatternError,
    PriorityMailbox,
    ProtocolError,
    SetAccessRules,
    SetEntry,
    StateChanged,
    StateEventKind,
    StateStore,
    SubscribeState,
    UnsubscribeState,
    WriteBatch,
    WriteOutcome,
)
from actors.protocol import FrozenMapping
from tests.state.helpers import WAIT, GatedBackend, Watcher

if TYPE_CHECKING:
    from actors._core.mailbox import MailboxSpec


def _seen(watcher: Any) -> list[tuple[str, str, int]]:
    return [(n.event.kind.value, n.event.key, n.event.version) for n in watcher.ask("get")]


# -- reads and writes -----------------------------------------------------------------


def test_a_written_value_reads_back_with_its_version_times_writer_and_metadata(
    system: ActorSystem, clock: ManualClock, mode: str
) -> None:
    store = system.spawn(StateStore, mode=mode)
    clock.advance(10)
    first = store.ask(SetEntry("analysis:1", {"score": [1, 2]}, agent="ana", metadata={"run": 7}))
    assert first.outcome is WriteOutcome.APPLIED
    assert first.version == 1
    clock.advance(5)
    second = store.ask(SetEntry("analysis:1", {"score": [3]}, agent="bob"))
    entry = store.ask(GetEntry("analysis:1"))
    assert entry == second.entry
    assert entry.version == 2
    assert entry.value == {"score": (3,)}
    assert isinstance(entry.value, FrozenMapping)
    assert (entry.created_at, entry.updated_at) == (10.0, 15.0)
    assert entry.writer == "bob"
    assert entry.metadata == {}
    assert first.entry.metadata == {"run": 7}


def test_a_missing_key_reads_as_none_never_key_error(system: ActorSystem, mode: str) -> None:
    store = system.spawn(StateStore, mode=mode)
    assert store.ask(GetEntry("nope")) is None
    assert store.ask(GetEntries(["nope", "nada"])) == (None, None)


def test_values_are_frozen_when_the_message_is_built(system: ActorSystem) -> None:
    store = system.spawn(StateStore)
    value = {"items": [1, {"a": 2}]}
    store.ask(SetEntry("k", value))
    value["items"].append(3)  # the caller's object is not the stored one
    assert store.ask(GetEntry("k")).value == {"items": (1, {"a": 2})}


def test_delete_removes_the_key_and_versions_keep_counting_after_it(system: ActorSystem, mode: str) -> None:
    store = system.spawn(StateStore, mode=mode)
    store.ask(SetEntry("k", 1))
    deleted = store.ask(DeleteEntry("k"))
    assert (deleted.outcome, deleted.version, deleted.entry) == (WriteOutcome.APPLIED, 2, None)
    assert store.ask(GetEntry("k")) is None
    again = store.ask(DeleteEntry("k"))
    assert (again.outcome, again.version) == (WriteOutcome.UNCHANGED, 2)
    assert store.ask(SetEntry("k", 2)).version == 3


def test_list_by_prefix_returns_live_entries_sorted_by_key(system: ActorSystem, clock: ManualClock) -> None:
    store = system.spawn(StateStore, sweep_interval=1000)
    for key in ["b:2", "a:1", "b:1", "c"]:
        store.ask(SetEntry(key, key))
    store.ask(SetEntry("b:3", "short-lived", ttl=1))
    clock.advance(1)
    assert [e.key for e in store.ask(ListEntries("b:"))] == ["b:1", "b:2"]
    assert [e.key for e in store.ask(ListEntries())] == ["a:1", "b:1", "b:2", "c"]


def test_compare_and_set_applies_only_at_the_expected_version(system: ActorSystem, mode: str) -> None:
    store = system.spawn(StateStore, mode=mode)
    assert store.ask(SetEntry("k", "a", expected_version=0)).version == 1  # 0: must be absent
    assert store.ask(SetEntry("k", "b", expected_version=1)).version == 2
    with pytest.raises(ConflictError) as caught:
        store.ask(SetEntry("k", "c", expected_version=1, agent="late"))
    error = caught.value
    assert (error.key, error.local_version, error.remote_version) == ("k", 2, 1)
    assert "'late'" in str(error)
    assert "expected_version=2" in str(error)
    with pytest.raises(ConflictError):
        store.ask(SetEntry("k", "d", expected_version=0))
    with pytest.raises(ConflictError):
        store.ask(DeleteEntry("k", expected_version=5))
    assert store.ask(GetEntry("k")).value == "b"
    assert store.ask(DeleteEntry("k", expected_version=2)).version == 3


def test_a_batch_applies_all_its_writes_or_none(system: ActorSystem, mode: str) -> None:
    store = system.spawn(StateStore, mode=mode)
    results = store.ask(
        WriteBatch([SetEntry("a", 1), SetEntry("b", 2), SetEntry("a", 3, expected_version=1), DeleteEntry("b")])
    )
    assert [(r.key, r.version) for r in results] == [("a", 1), ("b", 1), ("a", 2), ("b", 2)]
    with pytest.raises(ConflictError):
        store.ask(WriteBatch([SetEntry("c", 1), SetEntry("a", 9, expected_version=1)]))
    assert store.ask(GetEntry("c")) is None
    assert store.ask(GetEntry("a")).value == 3
    assert store.proxy().statistics().get().ops["batch"] == 2


def test_bad_input_is_refused_when_the_message_is_built() -> None:
    with pytest.raises(ProtocolError, match=r"'value\.tags'.*set") as caught:
        SetEntry("k", {"tags": {1, 2}})
    assert caught.value.field == "value.tags"
    with pytest.raises(ProtocolError, match="finite"):
        SetEntry("k", float("nan"))
    with pytest.raises(ProtocolError, match="metadata"):
        SetEntry("k", 1, metadata={"when": object()})
    with pytest.raises(TypeError, match="key must be a non-empty str"):
        SetEntry(42, 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="key must be a non-empty str"):
        GetEntry("")
    with pytest.raises(ValueError, match="ttl must be > 0"):
        SetEntry("k", 1, ttl=0)
    with pytest.raises(TypeError, match="ttl must be seconds"):
        SetEntry("k", 1, ttl="5")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="expected_version must be >= 0"):
        SetEntry("k", 1, expected_version=-1)
    with pytest.raises(TypeError, match="single str"):
        GetEntries("abc")
    with pytest.raises(TypeError, match="SetEntry and DeleteEntry"):
        WriteBatch([GetEntry("k")])  # type: ignore[list-item]
    with pytest.raises(PatternError, match="unclosed"):
        SubscribeState("analysis:[a-z", None)  # type: ignore[arg-type]
    with pytest.raises(PatternError, match="non-empty"):
        SubscribeState("", None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "message",
    [
        GetEntry("k"),
        GetEntries(["k"]),
        ListEntries("p"),
        SetEntry("k", {"a": [1]}, ttl=1, expected_version=0, metadata={"m": 1}, agent="x"),
        DeleteEntry("k", expected_version=1),
        WriteBatch([SetEntry("k", 1)]),
        SetAccessRules([AccessRule("a")]),
        UnsubscribeState(1),
    ],
    ids=lambda message: type(message).__name__,
)
def test_messages_are_frozen_slotted_and_hashable(message: Any) -> None:
    assert attrs.has(type(message))
    assert not hasattr(message, "__dict__")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        message.agent = "someone else"
    assert hash(message) == hash(attrs.evolve(message))


def test_an_unknown_message_is_a_clear_error_to_the_asker(system: ActorSystem) -> None:
    store = system.spawn(StateStore)
    with pytest.raises(TypeError, match="does not understand 'hello'"):
        store.ask("hello")
    assert store.is_alive()


def test_bad_store_arguments_fail_spawn(system: ActorSystem) -> None:
    with pytest.raises(ValueError, match="sweep_interval"):
        system.spawn(StateStore, sweep_interval=0)
    with pytest.raises(ValueError, match="max_batch must be >= 1"):
        system.spawn(StateStore, max_batch=0)
    with pytest.raises(ValueError, match="not both"):
        system.spawn(StateStore, resolver=system.spawn(Watcher), strategies={"*": "manual"})


# -- group commit: acknowledged means committed -----------------------------------------


def test_writes_queued_behind_a_commit_share_the_next_one_and_are_acked_after_it(
    system: ActorSystem, mode: str
) -> None:
    backend = GatedBackend()
    store = system.spawn(StateStore, backend, mode=mode)
    backend.hold_next.set()
    first = store.ask(SetEntry("k0", 0), block=False)
    assert backend.entered.wait(WAIT)
    rest = [store.ask(SetEntry(f"k{i}", i), block=False) for i in range(1, 11)]
    assert not first.done()  # the commit has not returned: no acknowledgement yet
    assert not any(f.done() for f in rest)
    backend.release.set()
    assert [f.get(timeout=WAIT).version for f in [first, *rest]] == [1] * 11
    assert backend.transactions == [["k0"], [f"k{i}" for i in range(1, 11)]]
    stats = store.proxy().statistics().get()
    assert (stats.commits, stats.committed_records, stats.committed_changes) == (2, 11, 11)


@pytest.mark.parametrize(
    "mailbox",
    [FifoMailbox(), PriorityMailbox(), BoundedMailbox(16), BoundedMailbox(16, inner=PriorityMailbox())],
    ids=["fifo", "priority", "bounded", "bounded-priority"],
)
def test_group_commit_batches_the_queued_writes_on_every_mailbox_kind(
    system: ActorSystem, mode: str, mailbox: MailboxSpec
) -> None:
    backend = GatedBackend()
    store = system.spawn(StateStore, backend, mode=mode, mailbox=mailbox)
    backend.hold_next.set()
    first = store.ask(SetEntry("k0", 0), block=False)
    assert backend.entered.wait(WAIT)
    rest = [store.ask(SetEntry(f"k{i}", i), block=False) for i in range(1, 11)]
    store.tell(SetEntry("told", 1))
    backend.release.set()
    assert [f.get(timeout=WAIT).version for f in [first, *rest]] == [1] * 11
    assert store.ask(GetEntry("told"), timeout=WAIT).value == 1
    # Two commits: the held one, then one for every write queued behind it.
    assert backend.transactions == [["k0"], [*(f"k{i}" for i in range(1, 11)), "told"]]
    assert store.proxy().statistics().get().commits == 2


def test_group_commit_never_holds_more_than_max_batch_writes(system: ActorSystem) -> None:
    backend = GatedBackend()
    store = system.spawn(StateStore, backend, max_batch=4)
    backend.hold_next.set()
    first = store.ask(SetEntry("k", 0), block=False)
    assert backend.entered.wait(WAIT)
    rest = [store.ask(SetEntry("k", i), block=False) for i in range(1, 10)]
    backend.release.set()
    assert [f.get(timeout=WAIT).version for f in [first, *rest]] == list(range(1, 11))
    assert [len(t) for t in backend.transactions] == [1, 1, 1, 1]  # one record per key
    stats = store.proxy().statistics().get()
    assert (stats.commits, stats.committed_changes) == (4, 10)  # 1 + 4 + 4 + 1 writes


def test_a_failed_commit_fails_every_write_in_it_and_changes_nothing(system: ActorSystem, mode: str) -> None:
    backend = GatedBackend()
    store = system.spawn(StateStore, backend, mode=mode)
    store.ask(SetEntry("k", "kept"))
    backend.hold_next.set()
    backend.failures[3] = OSError("disk full")
    held = store.ask(SetEntry("h", "held"), block=False)
    assert backend.entered.wait(WAIT)
    first = store.ask(SetEntry("k", "lost"), block=False)
    second = store.ask(SetEntry("j", "lost too"), block=False)
    backend.release.set()
    assert held.get(timeout=WAIT).version == 1
    for future in (first, second):  # one transaction, which failed
        with pytest.raises(OSError, match="disk full"):
            future.get(timeout=WAIT)
    assert store.ask(GetEntry("k")).value == "kept"
    assert store.ask(GetEntry("j")) is None
    assert store.ask(SetEntry("k", "next")).version == 2
    assert store.proxy().history(key="k").get()[-1].version == 2


def test_an_asked_write_refused_inside_a_group_commit_fails_alone(system: ActorSystem) -> None:
    backend = GatedBackend()
    store = system.spawn(StateStore, backend)
    backend.hold_next.set()
    first = store.ask(SetEntry("k", 1), block=False)
    assert backend.entered.wait(WAIT)
    refused = store.ask(SetEntry("k", 2, expected_version=7), block=False)
    told = SetEntry("j", 3)
    store.tell(told)
    backend.release.set()
    assert first.get(timeout=WAIT).version == 1
    with pytest.raises(ConflictError):
        refused.get(timeout=WAIT)
    assert store.ask(GetEntry("j")).value == 3
    assert backend.transactions == [["k"], ["j"]]


def test_a_told_write_that_would_be_refused_is_left_out_of_the_group_commit(system: ActorSystem) -> None:
    backend = GatedBackend()
    store = system.spawn(StateStore, backend)
    backend.hold_next.set()
    held = store.ask(SetEntry("k", 1), block=False)
    assert backend.entered.wait(WAIT)
    before = store.ask(SetEntry("a", 1), block=False)
    refused = SetEntry("k", 2, expected_version=9)
    store.tell(refused)  # will be refused when handled: a dead letter, the store serves on
    after = store.ask(SetEntry("b", 1), block=False)
    backend.release.set()
    assert held.get(timeout=WAIT).version == 1
    assert before.get(timeout=WAIT).version == 1  # committed without the refused write
    assert after.get(timeout=WAIT).version == 1
    assert backend.transactions == [["k"], ["a"], ["b"]]
    assert [d.message for d in system.dead_letters.recent()] == [refused]


def test_a_told_write_that_is_refused_is_a_dead_letter_and_the_store_serves_on(system: ActorSystem, mode: str) -> None:
    store = system.spawn(StateStore, mode=mode)
    store.ask(SetEntry("k", 1))
    store.tell(SetEntry("k", 2, expected_version=9))
    assert store.ask(GetEntry("k"), timeout=WAIT).value == 1
    assert system.dead_letters.count == 1


# -- TTL ----------------------------------------------------------------------------------


def test_an_expired_entry_is_invisible_at_once_and_swept_by_the_timer(
    system: ActorSystem, clock: ManualClock, mode: str
) -> None:
    store = system.spawn(StateStore, sweep_interval=10, mode=mode)
    result = store.ask(SetEntry("temp", "x", ttl=3))
    assert result.entry.expires_at == 3.0
    clock.advance(2.999)
    assert store.ask(GetEntry("temp")).value == "x"
    clock.advance(0.001)
    assert store.ask(GetEntry("temp")) is None  # before any sweep
    assert store.ask(ListEntries()) == ()
    assert store.proxy().statistics().get().keys == 0
    assert store.proxy().statistics().get().expiries == 0
    clock.advance(7)  # the sweep at t=10
    stats = store.proxy().statistics().get()
    assert stats.expiries == 1
    events = store.proxy().history(key="temp").get()
    assert [(e.kind, e.version, e.at) for e in events] == [
        (StateEventKind.SET, 1, 0.0),
        (StateEventKind.EXPIRE, 2, 10.0),
    ]


def test_writing_an_expired_key_first_expires_it(system: ActorSystem, clock: ManualClock) -> None:
    store = system.spawn(StateStore, sweep_interval=1000)
    watcher = system.spawn(Watcher)
    store.ask(SubscribeState("*", watcher))
    store.ask(SetEntry("k", 1, ttl=1))
    clock.advance(1)
    result = store.ask(SetEntry("k", 2, expected_version=0))  # expired is absent
    assert result.version == 3
    assert result.entry.created_at == 1.0
    assert _seen(watcher) == [("set", "k", 1), ("expire", "k", 2), ("set", "k", 3)]


def test_a_rewrite_without_ttl_makes_the_key_permanent(system: ActorSystem, clock: ManualClock) -> None:
    store = system.spawn(StateStore)
    store.ask(SetEntry("k", 1, ttl=1))
    store.ask(SetEntry("k", 2))
    clock.advance(5)
    assert store.ask(GetEntry("k")).value == 2
    assert store.proxy().statistics().get().expiries == 0


# -- subscriptions -------------------------------------------------------------------------


def test_a_subscriber_hears_each_matching_set_delete_and_expiry_in_version_order(
    system: ActorSystem, clock: ManualClock, mode: str
) -> None:
    store = system.spawn(StateStore, mode=mode)
    watcher = system.spawn(Watcher, mode=mode)
    sub_id = store.ask(SubscribeState("analysis:*", watcher))
    store.ask(SetEntry("analysis:a", 1))
    store.ask(SetEntry("other", 1))
    store.ask(WriteBatch([SetEntry("analysis:a", 2), SetEntry("analysis:b", 1), DeleteEntry("analysis:a")]))
    store.ask(SetEntry("analysis:b", 2, ttl=0.5))
    clock.advance(1)
    store.ask(GetEntry("x"))  # the sweep ran before this was handled
    seen = watcher.ask("get")
    assert all(isinstance(n, StateChanged) and n.subscription_id == sub_id for n in seen)
    assert _seen(watcher) == [
        ("set", "analysis:a", 1),
        ("set", "analysis:a", 2),
        ("set", "analysis:b", 1),
        ("delete", "analysis:a", 3),
        ("set", "analysis:b", 2),
        ("expire", "analysis:b", 3),
    ]
    assert seen[0].event.entry.value == 1
    assert seen[0].key == "analysis:a"


def test_exact_and_wildcard_subscriptions_each_get_their_own_notification(system: ActorSystem) -> None:
    store = system.spawn(StateStore)
    watcher = system.spawn(Watcher)
    exact = store.ask(SubscribeState("a:1", watcher))
    wild = store.ask(SubscribeState("a:?", watcher))
    store.ask(SetEntry("a:1", 1))
    store.ask(SetEntry("a:22", 1))
    assert sorted(n.subscription_id for n in watcher.ask("get")) == sorted([exact, wild])
    assert store.ask(UnsubscribeState(wild)) is True
    assert store.ask(UnsubscribeState(wild)) is False
    store.ask(SetEntry("a:1", 2))
    assert [n.subscription_id for n in watcher.ask("get")][2:] == [exact]


def test_a_dead_subscriber_is_dropped(system: ActorSystem, mode: str) -> None:
    store = system.spawn(StateStore, mode=mode)
    dead = system.spawn(Watcher, mode=mode)
    alive = system.spawn(Watcher, mode=mode)
    store.ask(SubscribeState("*", dead))
    store.ask(SubscribeState("*", alive))
    dead.stop()
    store.ask(SetEntry("k", 1))
    assert store.proxy().statistics().get().subscribers == 1
    store.ask(SetEntry("k", 2))
    assert _seen(alive) == [("set", "k", 1), ("set", "k", 2)]


def test_notification_fans_out_to_many_subscribers(system: ActorSystem) -> None:
    store = system.spawn(StateStore)
    watchers = [system.spawn(Watcher) for _ in range(200)]
    for watcher in watchers:
        store.ask(SubscribeState("jobs:*", watcher))
    store.ask(SetEntry("jobs:1", "go"))
    assert all(_seen(w) == [("set", "jobs:1", 1)] for w in watchers)


# -- history and statistics ----------------------------------------------------------------


def test_store_statistics_are_immutable_all_the_way_down_hashable_and_equal_when_equal(
    system: ActorSystem, mode: str
) -> None:
    store = system.spawn(StateStore, mode=mode)
    store.ask(SetEntry("k", 1))
    proxy = store.proxy()
    stats = proxy.statistics().get()
    with pytest.raises((AttributeError, TypeError)):
        stats.ops.clear()
    with pytest.raises(TypeError):
        stats.ops["set"] = 5
    assert hash(stats) == hash(proxy.statistics().get())
    assert stats == proxy.statistics().get()
    store.ask(SetEntry("k", 2))
    later = proxy.statistics().get()
    assert later != stats
    assert (stats.ops["set"], later.ops["set"]) == (1, 2)  # the earlier snapshot did not change


def test_history_is_bounded_and_queryable_by_key_pattern_time_and_kind(system: ActorSystem, clock: ManualClock) -> None:
    store = system.spawn(StateStore, history_limit=5)
    for i in range(4):
        store.ask(SetEntry(f"a:{i}", i))
        clock.advance(1)
    store.ask(SetEntry("b", 0))
    store.ask(DeleteEntry("a:3"))
    proxy = store.proxy()
    kept = proxy.history().get()
    assert [(e.key, e.kind.value) for e in kept] == [
        ("a:1", "set"),
        ("a:2", "set"),
        ("a:3", "set"),
        ("b", "set"),
        ("a:3", "delete"),
    ]
    assert [e.seq for e in kept] == sorted(e.seq for e in kept)
    assert [e.key for e in proxy.history(pattern="a:*", since=2, until=4).get()] == ["a:2", "a:3"]
    assert [e.version for e in proxy.history(key="a:3").get()] == [1, 2]
    assert [e.key for e in proxy.history(kind="delete").get()] == ["a:3"]
    assert [e.key for e in proxy.history(limit=2).get()] == ["b", "a:3"]
    with pytest.raises(PatternError):
        proxy.history(pattern="[").get()


def test_statistics_count_keys_ops_conflicts_expiries_and_subscribers(system: ActorSystem, clock: ManualClock) -> None:
    store = system.spawn(StateStore)
    store.ask(SubscribeState("*", system.spawn(Watcher)))
    store.ask(SetEntry("a", 1))
    store.ask(SetEntry("b", 1, ttl=1))
    store.ask(SetEntry("a", 2, expected_version=1))
    with pytest.raises(ConflictError):
        store.ask(SetEntry("a", 3, expected_version=1))
    store.ask(GetEntry("a"))
    store.ask(ListEntries())
    clock.advance(1)
    stats = store.proxy().statistics().get()
    assert stats.keys == 1
    assert (stats.ops["set"], stats.ops["cas"], stats.ops["get"], stats.ops["list"]) == (2, 2, 1, 1)
    assert (stats.conflicts, stats.expiries, stats.subscribers) == (1, 1, 1)


# -- access control ---------------------------------------------------------------------


def test_access_control_is_off_by_default(system: ActorSystem) -> None:
    store = system.spawn(StateStore)
    assert store.ask(SetEntry("anything", 1, agent="anyone")).version == 1


def test_access_rules_grant_read_or_write_on_prefixes(system: ActorSystem, mode: str) -> None:
    rules = [
        AccessRule("analyst", "analysis:", read=True, write=True),
        AccessRule("viewer", "analysis:"),
        AccessRule("*", "public:", read=True, write=True),
    ]
    store = system.spawn(StateStore, access_rules=rules, mode=mode)
    store.ask(SetEntry("analysis:1", 1, agent="analyst"))
    assert store.ask(GetEntry("analysis:1", agent="viewer")).value == 1
    with pytest.raises(AccessDeniedError, match=r"agent 'viewer' may not write key 'analysis:1'"):
        store.ask(SetEntry("analysis:1", 2, agent="viewer"))
    with pytest.raises(AccessDeniedError, match=r"agent 'analyst' may not read key 'secret'"):
        store.ask(GetEntry("secret", agent="analyst"))
    with pytest.raises(AccessDeniedError, match="without an agent identity"):
        store.ask(DeleteEntry("analysis:1"))
    assert store.ask(SetEntry("public:x", 1)).version == 1  # '*' covers the anonymous too
    with pytest.raises(AccessDeniedError, match=r"agent .viewer. may not write key .analysis:2."):
        store.ask(WriteBatch([SetEntry("public:y", 1), SetEntry("analysis:2", 1, agent="viewer")]))
    assert store.ask(GetEntry("public:y")) is None
    assert store.is_alive()


def test_listing_and_subscribing_show_only_what_the_agent_may_read(system: ActorSystem) -> None:
    rules = [AccessRule("w", "", read=True, write=True), AccessRule("reader", "a:x")]
    store = system.spawn(StateStore, access_rules=rules)
    for key in ["a:x1", "a:y1", "b:1"]:
        store.ask(SetEntry(key, 1, agent="w"))
    assert [e.key for e in store.ask(ListEntries("a:", agent="reader"))] == ["a:x1"]
    with pytest.raises(AccessDeniedError, match="may not read any key under 'b:'"):
        store.ask(ListEntries("b:", agent="reader"))
    watcher = system.spawn(Watcher)
    store.ask(SubscribeState("a:*", watcher, agent="reader"))
    with pytest.raises(AccessDeniedError):
        store.ask(SubscribeState("b:*", watcher, agent="reader"))
    store.ask(SetEntry("a:y1", 2, agent="w"))
    store.ask(SetEntry("a:x1", 2, agent="w"))
    assert _seen(watcher) == [("set", "a:x1", 2)]
    store.ask(SetAccessRules(None, agent="w"))
    assert store.ask(GetEntry("b:1", agent="reader")).value == 1
