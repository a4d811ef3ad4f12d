"""The state store as a shared service: one client's bad message cannot stop it.

Also: ``last_writer_wins`` merges in any order give one state; the access
rules guard themselves and the history; tombstones are purged after a
horizon without letting a stale compare-and-set through.
"""

from __future__ import annotations

import contextlib
import sqlite3
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors import (
    AccessDeniedError,
    AccessRule,
    ActorSystem,
    ConflictError,
    ConflictResolver,
    DeadLetterReason,
    DeleteEntry,
    Entry,
    GetEntry,
    ListParkedConflicts,
    ManualClock,
    MemoryBackend,
    MergeEntries,
    SetAccessRules,
    SetEntry,
    SqliteBackend,
    StateStore,
)
from tests.state.helpers import WAIT

if TYPE_CHECKING:
    from pathlib import Path


def _rejected(system: ActorSystem) -> list[Any]:
    return [d.message for d in system.dead_letters.recent() if d.reason is DeadLetterReason.REJECTED]


# -- a bad told request is a dead letter; the store serves on ---------------------------------------


def test_a_told_write_refused_by_a_conflict_is_a_rejected_dead_letter_and_the_store_serves_on(
    system: ActorSystem, mode: str
) -> None:
    store = system.spawn(StateStore, mode=mode)
    store.ask(SetEntry("k", 1))
    refused = SetEntry("k", 2, expected_version=9)
    store.tell(refused)
    assert store.ask(SetEntry("k", 3)).version == 2
    assert store.ask(GetEntry("k")).value == 3
    assert _rejected(system) == [refused]
    (letter,) = [d for d in system.dead_letters.recent() if d.message == refused]
    assert isinstance(letter.exception, ConflictError)


def test_a_told_write_denied_by_access_rules_is_a_rejected_dead_letter_and_the_store_serves_on(
    system: ActorSystem, mode: str
) -> None:
    guarded = system.spawn(StateStore, mode=mode, access_rules=[AccessRule("ana", "a:", write=True)])
    denied = SetEntry("b:1", 1, agent="bob")
    guarded.tell(denied)
    assert guarded.ask(SetEntry("a:1", 1, agent="ana")).version == 1
    (letter,) = [d for d in system.dead_letters.recent() if d.message == denied]
    assert letter.reason is DeadLetterReason.REJECTED
    assert isinstance(letter.exception, AccessDeniedError)


def test_a_message_the_store_does_not_understand_is_refused_and_it_serves_on(system: ActorSystem, mode: str) -> None:
    store = system.spawn(StateStore, mode=mode)
    store.tell("gibberish")
    with pytest.raises(TypeError, match="does not understand"):
        store.ask("gibberish")
    assert store.ask(SetEntry("k", 1)).version == 1
    assert _rejected(system) == ["gibberish"]


def test_a_message_the_resolver_does_not_understand_is_refused_and_it_serves_on(system: ActorSystem, mode: str) -> None:
    resolver = system.spawn(ConflictResolver, mode=mode)
    resolver.tell("gibberish")
    assert resolver.ask(ListParkedConflicts()) == ()
    assert _rejected(system) == ["gibberish"]


# -- LWW merges do not depend on their order -------------------------------------------------------

_writers = st.sampled_from(["ana", "bob", None])
_entries = st.lists(st.tuples(st.sampled_from(["k1", "k2"]), st.integers(0, 5), _writers), min_size=1, max_size=6).map(
    lambda rows: [Entry(key, {"n": n}, 1, float(at), float(at), writer) for n, (key, at, writer) in enumerate(rows)]
)


def _lww_state(system: ActorSystem, batches: list[list[Entry]]) -> dict[str, tuple[Any, Any, Any]]:
    store = system.spawn(StateStore, default_strategy="last_writer_wins")
    try:
        for batch in batches:
            store.ask(MergeEntries(batch), timeout=WAIT)
        state = {}
        for key in ("k1", "k2"):
            entry = store.ask(GetEntry(key), timeout=WAIT)
            if entry is not None:
                state[key] = (entry.value, entry.writer, entry.updated_at)
        return state
    finally:
        store.stop()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(entries=_entries, order=st.randoms(use_true_random=False))
def test_merging_the_same_entries_in_any_order_gives_the_same_state_under_last_writer_wins(
    system: ActorSystem, clock: ManualClock, entries: list[Entry], order: Any
) -> None:
    clock.advance(100)  # the importing store's clock is later than every write: it must not matter
    shuffled = list(entries)
    order.shuffle(shuffled)
    one_by_one = _lww_state(system, [[e] for e in entries])
    assert _lww_state(system, [[e] for e in shuffled]) == one_by_one
    assert _lww_state(system, [list(reversed(entries))]) == one_by_one


def test_an_imported_entry_keeps_its_own_write_time_and_writer(system: ActorSystem, clock: ManualClock) -> None:
    clock.advance(50)
    store = system.spawn(StateStore, default_strategy="last_writer_wins")
    store.ask(MergeEntries([Entry("k", 1, 4, 1.0, 7.0, "ana")]))
    entry = store.ask(GetEntry("k"))
    assert (entry.value, entry.writer, entry.updated_at, entry.version) == (1, "ana", 7.0, 1)
    store.ask(MergeEntries([Entry("k", 2, 1, 1.0, 9.0, "bob")]))
    entry = store.ask(GetEntry("k"))
    assert (entry.value, entry.writer, entry.updated_at, entry.version) == (2, "bob", 9.0, 2)


# -- access control guards itself and the history ------------------------------------------------


def test_a_denied_agent_cannot_change_the_access_rules(system: ActorSystem, mode: str) -> None:
    rules = [AccessRule("admin", "", read=True, write=True), AccessRule("bob", "b:", read=True, write=True)]
    store = system.spawn(StateStore, mode=mode, access_rules=rules)
    with pytest.raises(AccessDeniedError, match="access rules"):
        store.ask(SetAccessRules(None, agent="bob"))
    with pytest.raises(AccessDeniedError):
        store.ask(SetAccessRules([AccessRule("bob", "", write=True)]))  # no identity at all
    with pytest.raises(AccessDeniedError):
        store.ask(SetEntry("a:1", 1, agent="bob"))  # the rules still hold
    store.ask(SetAccessRules([AccessRule("*", "", read=True, write=True)], agent="admin"))
    assert store.ask(SetEntry("a:1", 1, agent="bob")).version == 1


def test_history_shows_an_agent_only_the_keys_it_may_read(system: ActorSystem, mode: str) -> None:
    rules = [AccessRule("admin", "", read=True, write=True), AccessRule("bob", "b:", read=True)]
    store = system.spawn(StateStore, mode=mode, access_rules=rules)
    store.ask(SetEntry("a:secret", 1, agent="admin"))
    store.ask(SetEntry("b:open", 2, agent="admin"))
    proxy = store.proxy()
    assert [e.key for e in proxy.history(agent="bob").get()] == ["b:open"]
    assert [e.key for e in proxy.history(key="a:secret", agent="bob").get()] == []
    assert [e.key for e in proxy.history().get()] == []  # no identity: only "*" rules, none here
    assert [e.key for e in proxy.history(agent="admin").get()] == ["a:secret", "b:open"]


# -- tombstones are purged after a horizon ---------------------------------------------------------


def test_tombstones_are_purged_after_the_horizon_on_the_system_clock(system: ActorSystem, clock: ManualClock) -> None:
    backend = MemoryBackend()
    store = system.spawn(StateStore, backend, tombstone_horizon=60, sweep_interval=10)
    store.ask(SetEntry("gone", 1))
    store.ask(DeleteEntry("gone"))
    assert [r.key for r in backend.open()] == ["gone"]  # the tombstone, kept for now
    clock.advance(30)
    store.ask(GetEntry("gone"))  # a round trip: the sweep has run
    assert store.proxy().statistics().get().tombstones == 1
    clock.advance(40)
    store.ask(GetEntry("gone"))
    assert store.proxy().statistics().get().tombstones == 0
    assert "gone" not in [r.key for r in backend.open()]


@pytest.mark.parametrize("backend_kind", ["memory", "sqlite"])
def test_a_stale_compare_and_set_on_a_key_re_created_after_its_tombstone_was_purged_is_a_conflict(
    system: ActorSystem, clock: ManualClock, mode: str, backend_kind: str, tmp_path: Path
) -> None:
    backend = MemoryBackend() if backend_kind == "memory" else SqliteBackend(tmp_path / "state.db")
    store = system.spawn(StateStore, backend, mode=mode, tombstone_horizon=60, sweep_interval=10)
    old = store.ask(SetEntry("k", "old"))  # version 1
    store.ask(DeleteEntry("k"))  # version 2
    clock.advance(100)
    store.ask(GetEntry("k"))
    assert store.proxy().statistics().get().tombstones == 0
    created = store.ask(SetEntry("k", "new", expected_version=0))
    assert created.version > old.version + 1
    with pytest.raises(ConflictError):
        store.ask(SetEntry("k", "stale", expected_version=old.version))
    store.stop()
    if backend_kind == "sqlite":
        with contextlib.closing(sqlite3.connect(tmp_path / "state.db")) as db:
            keys = db.execute("SELECT key FROM entries ORDER BY key").fetchall()
        assert keys == [("",), ("k",)]  # the floor record and the live entry: no tombstone left
        backend = SqliteBackend(tmp_path / "state.db")
    again = system.spawn(StateStore, backend, mode=mode)  # the floor is durable
    again.ask(DeleteEntry("k"))
    clock.advance(100)
    renewed = again.ask(SetEntry("k", "newer"))
    assert renewed.version > created.version
    with pytest.raises(ConflictError):
        again.ask(SetEntry("k", "stale", expected_version=old.version))
