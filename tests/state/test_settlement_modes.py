"""Conflicts are settled in every combination of store mode and resolver mode, without blocking a loop.

Store mode x resolver mode (pooled, thread, asyncio) and the store's own
child resolver: 12 combinations. An asyncio store awaits the resolver's
answer: the loop runs other actors meanwhile, and a resolver on the same
loop is no deadlock.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from actors import (
    Actor,
    ActorSystem,
    ConflictError,
    ConflictResolver,
    DeadLetterReason,
    Entry,
    GetEntry,
    MergeEntries,
    Resolution,
    ResolveConflict,
    SetEntry,
    StateStore,
    WriteOutcome,
)
from tests.state.helpers import WAIT

RESOLVER_MODES = ["pooled", "thread", "asyncio", "child"]


def _take_remote(_conflict: Any) -> Resolution:
    return Resolution.take_remote("the test handler")


_STRATEGIES = {"r:*": "reject", "m:*": "manual", "i:*": "keep_remote", "*": _take_remote}


def _store(system: ActorSystem, mode: str, resolver_mode: str) -> Any:
    if resolver_mode == "child":
        return system.spawn(StateStore, mode=mode, strategies=_STRATEGIES)
    resolver = system.spawn(ConflictResolver, _STRATEGIES, mode=resolver_mode)
    return system.spawn(StateStore, mode=mode, resolver=resolver)


@pytest.mark.parametrize("resolver_mode", RESOLVER_MODES)
def test_conflicts_are_settled_in_every_combination_of_store_and_resolver_modes(
    system: ActorSystem, mode: str, resolver_mode: str
) -> None:
    store = _store(system, mode, resolver_mode)
    store.ask(SetEntry("k", 1), timeout=WAIT)
    settled = store.ask(SetEntry("k", 2, expected_version=7), timeout=WAIT)  # a custom handler takes it
    assert (settled.outcome, settled.version, settled.entry.value) == (WriteOutcome.APPLIED, 2, 2)

    store.ask(SetEntry("r:1", 1), timeout=WAIT)
    with pytest.raises(ConflictError):
        store.ask(SetEntry("r:1", 2, expected_version=7), timeout=WAIT)
    told = SetEntry("r:1", 3, expected_version=7)
    store.tell(told)  # refused: a dead letter, the store serves on

    imported = store.ask(MergeEntries([Entry("i:1", "a", 1, 0.0, 0.0), Entry("k", "b", 1, 0.0, 0.0)]), timeout=WAIT)
    assert [r.outcome for r in imported] == [WriteOutcome.APPLIED, WriteOutcome.APPLIED]
    assert store.ask(SetEntry("i:1", "c", expected_version=9), timeout=WAIT).entry.value == "c"

    store.ask(SetEntry("m:1", 1), timeout=WAIT)
    parked = store.ask(SetEntry("m:1", 2, expected_version=7), timeout=WAIT)
    assert parked.outcome is WriteOutcome.PARKED
    resolved = store.ask(ResolveConflict(parked.conflict_id, Resolution.take_remote()), timeout=WAIT)
    assert (resolved.version, resolved.entry.value) == (2, 2)

    assert store.ask(GetEntry("r:1"), timeout=WAIT).value == 1
    assert store.ask(GetEntry("k"), timeout=WAIT).value == "b"
    assert [d.message for d in system.dead_letters.recent() if d.reason is DeadLetterReason.REJECTED] == [told]
    assert store.proxy().statistics().get(timeout=WAIT).conflicts == 6


class _Echo(Actor):
    def on_receive(self, message: Any) -> Any:
        return message


@pytest.mark.parametrize("resolver_mode", ["pooled", "thread"])
def test_an_asyncio_store_settling_a_conflict_leaves_the_loop_to_other_actors(
    system: ActorSystem, resolver_mode: str
) -> None:
    entered, release = threading.Event(), threading.Event()

    def held(_conflict: Any) -> Resolution:
        entered.set()
        assert release.wait(WAIT), "never released"
        return Resolution.take_remote()

    resolver = system.spawn(ConflictResolver, {"*": held}, mode=resolver_mode)
    store = system.spawn(StateStore, mode="asyncio", resolver=resolver)
    neighbour = system.spawn(_Echo, mode="asyncio")
    store.ask(SetEntry("k", 1), timeout=WAIT)
    pending = store.ask(SetEntry("k", 2, expected_version=7), block=False)
    assert entered.wait(WAIT)
    assert neighbour.ask("still served", timeout=WAIT) == "still served"  # the loop is not blocked
    assert not pending.done()
    release.set()
    assert pending.get(timeout=WAIT).entry.value == 2
