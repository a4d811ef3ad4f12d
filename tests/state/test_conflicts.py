"""Conflicts: each strategy through a store, the resolver's history and statistics, and merge properties."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors import (
    ActorSystem,
    Conflict,
    ConflictError,
    ConflictKind,
    ConflictNotFoundError,
    ConflictOutcome,
    ConflictResolver,
    ConflictStrategy,
    DeleteEntry,
    Entry,
    GetEntry,
    ListEntries,
    ListParkedConflicts,
    ManualClock,
    MergeEntries,
    PatternError,
    Proposal,
    Resolution,
    ResolveConflict,
    SetConflictStrategy,
    SetEntry,
    StateStore,
    StrategyError,
    WriteOutcome,
    three_way_merge,
)
from actors.state.conflicts import ABSENT
from actors.state.entry import freeze_value
from actors.state.resolver import decide
from tests.strategies import json_values


def _stale_write(store: Any, key: str, base: Any, local: Any, remote: Any, **kwargs: Any) -> Any:
    """Write base, then local (by 'a'), then remote (by 'b') expecting the base's version."""
    version = store.ask(SetEntry(key, base, agent="a")).version
    store.ask(SetEntry(key, local, agent="a", expected_version=version))
    return store.ask(SetEntry(key, remote, agent="b", expected_version=version, **kwargs))


# -- strategies through a store ----------------------------------------------------------


def test_two_writers_racing_from_one_version_conflict_even_inside_one_commit(system: ActorSystem, mode: str) -> None:
    store = system.spawn(StateStore, mode=mode)
    store.ask(SetEntry("k", 0))
    first = store.ask(SetEntry("k", "a", agent="a", expected_version=1), block=False)
    second = store.ask(SetEntry("k", "b", agent="b", expected_version=1), block=False)
    assert first.get(timeout=10).version == 2
    with pytest.raises(ConflictError) as caught:
        second.get(timeout=10)
    assert (caught.value.local_version, caught.value.remote_version) == (2, 1)


def test_reject_is_the_default_and_names_both_versions(system: ActorSystem, mode: str) -> None:
    store = system.spawn(StateStore, mode=mode)
    with pytest.raises(ConflictError, match=r"expected version 1 but the store holds version 2 \(written by 'a'\)"):
        _stale_write(store, "k", 1, 2, 3)
    assert store.ask(GetEntry("k")).value == 2


def test_last_writer_wins_applies_the_later_write(system: ActorSystem, mode: str) -> None:
    store = system.spawn(StateStore, strategies={"k*": "last_writer_wins"}, mode=mode)
    result = _stale_write(store, "k", 1, 2, 3)
    assert (result.outcome, result.version, result.entry.value) == (WriteOutcome.APPLIED, 3, 3)
    assert result.conflict_id is not None


def test_first_writer_wins_keeps_the_earlier_write(system: ActorSystem, clock: ManualClock) -> None:
    store = system.spawn(StateStore, default_strategy="first_writer_wins")
    store.ask(SetEntry("k", 1, agent="a"))
    store.ask(SetEntry("k", 2, agent="a"))
    clock.advance(1)
    result = store.ask(SetEntry("k", 3, agent="b", expected_version=1))
    assert (result.outcome, result.version, result.entry.value) == (WriteOutcome.KEPT_LOCAL, 2, 2)


def test_a_blind_write_over_another_agents_fresh_write_is_a_race(system: ActorSystem, clock: ManualClock) -> None:
    store = system.spawn(StateStore, race_window=1.0)
    store.ask(SetEntry("k", 1, agent="a"))
    assert store.ask(SetEntry("k", 2, agent="a")).version == 2  # the same agent: no race
    with pytest.raises(ConflictError, match="raced with the write of version 2") as caught:
        store.ask(SetEntry("k", 3, agent="b"))
    assert caught.value.remote_version is None
    clock.advance(1)
    assert store.ask(SetEntry("k", 3, agent="b")).version == 3  # outside the window


def test_auto_merge_merges_disjoint_changes_against_the_base(system: ActorSystem, mode: str) -> None:
    store = system.spawn(StateStore, strategies={"doc:*": "auto_merge"}, mode=mode)
    base = {"title": "t", "tags": ["x"], "n": 1}
    result = _stale_write(
        store, "doc:1", base, {"title": "T", "tags": ["x", "a"], "n": 1}, {"title": "t", "tags": ["x", "b"], "n": 2}
    )
    assert result.outcome is WriteOutcome.MERGED
    assert result.entry.value == {"title": "T", "tags": ("x", "a", "b"), "n": 2}
    assert result.entry.writer == "b"


def test_auto_merge_falls_back_on_overlapping_changes(system: ActorSystem) -> None:
    store = system.spawn(StateStore, strategies={"doc:*": "auto_merge"})
    with pytest.raises(ConflictError, match="both sides changed 'n'; fell back to reject"):
        _stale_write(store, "doc:1", {"n": 1, "m": 1}, {"n": 2, "m": 1}, {"n": 3, "m": 2})
    resolver = store.proxy().resolver.get()
    resolver.ask(SetConflictStrategy("doc:*", "auto_merge", fallback="keep_remote"))
    result = _stale_write(store, "doc:2", {"n": 1, "m": 1, "o": 1}, {"n": 2, "m": 1, "o": 2}, {"n": 3, "m": 2, "o": 1})
    assert result.entry.value == {"n": 3, "m": 2, "o": 2}  # only the overlap took the fallback


def test_auto_merge_without_a_known_base_falls_back(system: ActorSystem) -> None:
    store = system.spawn(StateStore, strategies={"*": "auto_merge"}, merge_fallback="keep_local", bases_kept=0)
    result = _stale_write(store, "k", {"a": 1}, {"a": 2}, {"a": 1, "b": 1})
    assert result.entry.value == {"a": 2, "b": 1}  # two-way: 'a' differs (kept local), 'b' only remote


def test_keep_local_and_keep_remote_settle_entries_merged_from_another_store(system: ActorSystem, mode: str) -> None:
    here = system.spawn(StateStore, strategies={"mine:*": "keep_local", "theirs:*": "keep_remote"}, mode=mode)
    there = system.spawn(StateStore, mode=mode)
    for store, value in ((here, "here"), (there, "there")):
        store.ask(SetEntry("mine:1", value))
        store.ask(SetEntry("theirs:1", value))
    there.ask(SetEntry("new", "there"))
    there.ask(SetEntry("same", 1))
    here.ask(SetEntry("same", 1))
    results = here.ask(MergeEntries(there.ask(ListEntries()), source="there"))
    assert {r.key: r.outcome for r in results} == {
        "mine:1": WriteOutcome.KEPT_LOCAL,
        "new": WriteOutcome.APPLIED,
        "same": WriteOutcome.UNCHANGED,
        "theirs:1": WriteOutcome.APPLIED,
    }
    assert {e.key: e.value for e in here.ask(ListEntries())} == {
        "mine:1": "here",
        "new": "there",
        "same": 1,
        "theirs:1": "there",
    }


def test_last_writer_wins_makes_two_stores_agree_whichever_merges_first(
    system: ActorSystem, clock: ManualClock
) -> None:
    left = system.spawn(StateStore, strategies={"*": "last_writer_wins"})
    right = system.spawn(StateStore, strategies={"*": "last_writer_wins"})
    left.ask(SetEntry("k", "left", agent="l"))
    clock.advance(1)
    right.ask(SetEntry("k", "right", agent="r"))
    left_entries, right_entries = left.ask(ListEntries()), right.ask(ListEntries())
    left.ask(MergeEntries(right_entries))
    right.ask(MergeEntries(left_entries))
    assert left.ask(GetEntry("k")).value == right.ask(GetEntry("k")).value == "right"


def test_manual_conflicts_are_parked_listed_and_resolved_later(system: ActorSystem, mode: str) -> None:
    store = system.spawn(StateStore, strategies={"plan:*": "manual"}, mode=mode)
    resolver = store.proxy().resolver.get()
    parked = _stale_write(store, "plan:1", "v1", "local", "remote")
    assert parked.outcome is WriteOutcome.PARKED
    assert store.ask(GetEntry("plan:1")).value == "local"
    other = _stale_write(store, "plan:2", "v1", "local", "remote")
    records = resolver.ask(ListParkedConflicts())
    assert [r.id for r in records] == [parked.conflict_id, other.conflict_id]
    assert records[0].conflict.remote.value == "remote"
    assert [r.conflict.key for r in resolver.ask(ListParkedConflicts("plan:2"))] == ["plan:2"]

    taken = store.ask(ResolveConflict(parked.conflict_id, Resolution.take_remote(), agent="human"))
    assert (taken.outcome, taken.version, taken.entry.value) == (WriteOutcome.APPLIED, 3, "remote")
    merged = store.ask(ResolveConflict(other.conflict_id, Resolution.merged("both")))
    assert (merged.outcome, merged.entry.value) == (WriteOutcome.MERGED, "both")
    assert resolver.ask(ListParkedConflicts()) == ()
    with pytest.raises(ConflictNotFoundError, match=f"no parked conflict {parked.conflict_id}"):
        store.ask(ResolveConflict(parked.conflict_id, Resolution.keep_local()))
    settled = resolver.proxy().history(key="plan:1").get()[-1]
    assert (settled.outcome, settled.resolved_by, settled.strategy) == (ConflictOutcome.TOOK_REMOTE, "human", "manual")


def test_a_parked_delete_can_be_kept_local(system: ActorSystem) -> None:
    store = system.spawn(StateStore, default_strategy="manual")
    store.ask(SetEntry("k", 1))
    store.ask(SetEntry("k", 2))
    parked = store.ask(DeleteEntry("k", expected_version=1))
    kept = store.ask(ResolveConflict(parked.conflict_id, Resolution.keep_local()))
    assert (kept.outcome, kept.version) == (WriteOutcome.KEPT_LOCAL, 2)
    assert store.ask(GetEntry("k")).value == 2


def test_custom_handlers_are_registered_per_pattern(system: ActorSystem) -> None:
    def bigger(conflict: Conflict) -> Resolution:
        assert conflict.kind is ConflictKind.STALE
        assert conflict.local is not None
        return Resolution.merged(max(conflict.local.value, conflict.remote.value))

    def broken(conflict: Conflict) -> Resolution:
        msg = "handler bug"
        raise RuntimeError(msg)

    store = system.spawn(StateStore, strategies={"max:*": bigger, "broken:*": broken, "silly:*": lambda c: 42})
    assert _stale_write(store, "max:1", 1, 5, 3).entry.value == 5
    with pytest.raises(RuntimeError, match="handler bug"):
        _stale_write(store, "broken:1", 1, 2, 3)
    with pytest.raises(TypeError, match="return a Resolution"):
        _stale_write(store, "silly:1", 1, 2, 3)
    stats = store.proxy().resolver.get().proxy().statistics().get()
    assert stats.by_strategy == {"custom": 3}
    assert stats.by_outcome == {"merged": 1, "failed": 2}
    assert store.is_alive()


def test_the_most_specific_pattern_decides(system: ActorSystem) -> None:
    resolver = system.spawn(ConflictResolver, {"*": "keep_local", "a:*": "keep_remote", "a:b*": "reject"})
    proxy = resolver.proxy()
    assert proxy.rule_for("a:bc").get()[:2] == ("a:b*", ConflictStrategy.REJECT)
    assert proxy.rule_for("a:c").get()[:2] == ("a:*", ConflictStrategy.KEEP_REMOTE)
    assert proxy.rule_for("z").get()[:2] == ("*", ConflictStrategy.KEEP_LOCAL)
    assert system.spawn(ConflictResolver).proxy().rule_for("z").get()[:2] == ("*default*", ConflictStrategy.REJECT)


def test_one_resolver_serves_several_stores_and_keeps_history_and_statistics(
    system: ActorSystem, clock: ManualClock, mode: str
) -> None:
    # A store settles conflicts with a blocking ask, which one asyncio actor
    # may not make of another on the same loop (EventLoopError): stores on
    # the loop share a resolver that runs off it.
    resolver_mode = "pooled" if mode == "asyncio" else mode
    resolver = system.spawn(ConflictResolver, {"lww:*": "last_writer_wins", "m:*": "manual"}, mode=resolver_mode)
    first = system.spawn(StateStore, resolver=resolver, mode=mode)
    second = system.spawn(StateStore, resolver=resolver, mode=mode)
    _stale_write(first, "lww:1", 1, 2, 3)
    clock.advance(5)
    parked = _stale_write(second, "m:1", 1, 2, 3)
    with pytest.raises(ConflictError):
        _stale_write(second, "other", 1, 2, 3)
    with pytest.raises(ConflictNotFoundError):  # parked by the other store
        first.ask(ResolveConflict(parked.conflict_id, Resolution.take_remote()))
    proxy = resolver.proxy()
    stats = proxy.statistics().get()
    assert (stats.total, stats.parked) == (3, 1)
    assert stats.by_strategy == {"last_writer_wins": 1, "manual": 1, "reject": 1}
    assert stats.by_outcome == {"took_remote": 1, "parked": 1, "rejected": 1}
    assert [r.conflict.key for r in proxy.history(since=5).get()] == ["m:1", "other"]
    assert [r.conflict.key for r in proxy.history(pattern="lww:*").get()] == ["lww:1"]
    assert [r.conflict.key for r in proxy.history(outcome="rejected").get()] == ["other"]
    assert [r.conflict.key for r in proxy.history(limit=1).get()] == ["other"]


def test_conflict_history_is_bounded_but_keeps_parked_conflicts(system: ActorSystem) -> None:
    resolver = system.spawn(ConflictResolver, {"m:*": "manual"}, default="keep_local", history_limit=2)
    store = system.spawn(StateStore, resolver=resolver)
    _stale_write(store, "m:1", 1, 2, 3)
    for i in range(5):
        _stale_write(store, f"k{i}", 1, 2, 3)
    kept = resolver.proxy().history().get()
    assert [r.conflict.key for r in kept] == ["m:1", "k3", "k4"]


def test_unknown_strategies_and_bad_patterns_are_clear_errors(system: ActorSystem) -> None:
    with pytest.raises(StrategyError, match=r"unknown conflict strategy 'newest'.*'last_writer_wins'"):
        system.spawn(StateStore, strategies={"*": "newest"})
    with pytest.raises(StrategyError, match="default strategy"):
        system.spawn(ConflictResolver, default="nope")
    with pytest.raises(StrategyError, match="fallback of auto_merge"):
        system.spawn(StateStore, merge_fallback="auto_merge")
    with pytest.raises(PatternError, match="unclosed"):
        system.spawn(StateStore, strategies={"a[": "reject"})
    with pytest.raises(StrategyError):
        SetConflictStrategy("a:*", "nope")
    with pytest.raises(PatternError):
        SetConflictStrategy("", "reject")
    with pytest.raises(TypeError, match="Resolution"):
        ResolveConflict(1, "take_remote")  # type: ignore[arg-type]


# -- properties of the strategies ----------------------------------------------------------

_writers = st.none() | st.sampled_from(["a", "b", "c"])
_times = st.sampled_from([0.0, 1.0, 2.0])


@st.composite
def _two_writes(draw: st.DrawFn) -> tuple[Entry, Proposal, Entry, Proposal]:
    """Two writes of one key, each as the local entry and as the incoming proposal."""
    sides = []
    for _ in range(2):
        value = freeze_value(draw(json_values(max_leaves=4)))
        at, writer = draw(_times), draw(_writers)
        sides.append((Entry("k", value, 1, at, at, writer), Proposal(value, writer, at)))
    (entry_a, proposal_a), (entry_b, proposal_b) = sides
    return entry_a, proposal_a, entry_b, proposal_b


def _winner(resolution: Resolution, local: Entry, remote: Proposal) -> Any:
    return local.value if resolution.outcome is ConflictOutcome.KEPT_LOCAL else remote.value


@given(_two_writes())
def test_last_writer_wins_picks_the_same_write_whichever_side_is_local(writes: Any) -> None:
    entry_a, proposal_a, entry_b, proposal_b = writes
    one = Conflict("k", ConflictKind.IMPORT, entry_a, proposal_b)
    other = Conflict("k", ConflictKind.IMPORT, entry_b, proposal_a)
    for strategy in (ConflictStrategy.LAST_WRITER_WINS, ConflictStrategy.FIRST_WRITER_WINS):
        first = decide(one, strategy)
        assert decide(one, strategy) == first  # deterministic
        assert _winner(first, entry_a, proposal_b) == _winner(decide(other, strategy), entry_b, proposal_a)


_flat = st.dictionaries(st.sampled_from("abcdefgh"), st.integers(0, 3), max_size=8)


@st.composite
def _disjoint_changes(draw: st.DrawFn) -> tuple[dict[str, int], dict[str, Any], dict[str, Any]]:
    """A base dict and two change sets (key -> new value or ABSENT) touching different keys."""
    base = draw(_flat)
    keys = sorted(set(base) | set(draw(_flat)))
    mine = draw(st.sets(st.sampled_from(keys))) if keys else set()
    changes: list[dict[str, Any]] = [{}, {}]
    for key in keys:
        side = changes[0] if key in mine else changes[1]
        if draw(st.booleans()):
            side[key] = draw(st.integers(4, 6) | st.just(ABSENT))
    return base, changes[0], changes[1]


def _applied(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    result = {**base, **changes}
    return {k: v for k, v in result.items() if v is not ABSENT}


@given(_disjoint_changes())
def test_auto_merge_of_disjoint_changes_is_their_union(case: Any) -> None:
    base, mine, theirs = case
    local, remote = _applied(base, mine), _applied(base, theirs)
    assert three_way_merge(base, local, remote) == _applied(base, {**mine, **theirs})


@given(_disjoint_changes())
def test_merge_is_idempotent(case: Any) -> None:
    base, mine, theirs = case
    local, remote = _applied(base, mine), _applied(base, theirs)
    merged = three_way_merge(base, local, remote)
    assert three_way_merge(base, merged, merged) == merged
    assert three_way_merge(base, merged, remote) == merged
    assert three_way_merge(base, local, merged) == merged


@given(json_values(max_leaves=6), json_values(max_leaves=6))
def test_merging_a_value_with_itself_or_an_unchanged_side_is_exact(base: Any, value: Any) -> None:
    frozen = freeze_value(value)
    assert three_way_merge(base, value, value) == frozen
    assert three_way_merge(base, base, value) == frozen
    assert three_way_merge(base, value, base) == frozen


def test_list_merges_by_item_or_by_appends() -> None:
    assert three_way_merge([1, 2, 3], [9, 2, 3], [1, 2, 8]) == (9, 2, 8)
    assert three_way_merge([1], [1, 2, 3], [1, 3, 4]) == (1, 2, 3, 4)
    with pytest.raises(ConflictError, match="both sides changed '0'"):
        three_way_merge([1, 2], [5, 2], [6, 2])
    with pytest.raises(ConflictError, match="whole value"):
        three_way_merge([1, 2], [2], [1])


def test_merge_tells_true_from_one() -> None:
    with pytest.raises(ConflictError, match="'a'"):
        three_way_merge({"a": 0}, {"a": True}, {"a": 1})


def test_merge_overlaps_can_be_settled_per_field() -> None:
    merged = three_way_merge(
        {"a": 1, "b": {"c": 1}}, {"a": 2, "b": {"c": 2}}, {"a": 3, "b": {"c": 1, "d": 1}}, on_overlap=lambda p, m, t: t
    )
    assert merged == {"a": 3, "b": {"c": 2, "d": 1}}


def test_a_delete_cannot_be_merged_and_falls_back() -> None:
    local = Entry("k", 1, 2, 0.0, 0.0)
    conflict = Conflict("k", ConflictKind.STALE, local, Proposal(None, "b", 1.0, 1, delete=True), base=0)
    resolution = decide(conflict, ConflictStrategy.AUTO_MERGE, ConflictStrategy.KEEP_REMOTE)
    assert resolution.outcome is ConflictOutcome.TOOK_REMOTE
    assert "delete cannot be merged" in resolution.reason
    assert attrs.evolve(resolution, reason="") == Resolution.take_remote()


def test_resolver_statistics_are_immutable_all_the_way_down_hashable_and_equal_when_equal(
    system: ActorSystem,
) -> None:
    resolver = system.spawn(ConflictResolver, {"m:*": "manual"})
    store = system.spawn(StateStore, resolver=resolver)
    _stale_write(store, "m:1", 1, 2, 3)
    proxy = resolver.proxy()
    stats = proxy.statistics().get()
    for counts in (stats.by_strategy, stats.by_outcome):
        with pytest.raises((AttributeError, TypeError)):
            counts.clear()
        with pytest.raises(TypeError):
            counts["manual"] = 5
    assert hash(stats) == hash(proxy.statistics().get())
    assert stats == proxy.statistics().get()
    with pytest.raises(ConflictError):
        _stale_write(store, "other", 1, 2, 3)
    later = proxy.statistics().get()
    assert later != stats
    assert stats.by_outcome == {"parked": 1}  # the earlier snapshot did not change
