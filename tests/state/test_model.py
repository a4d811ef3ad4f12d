"""The store against a dict model: set, get, delete, CAS, TTL on the fake clock, subscriptions.

A hypothesis `RuleBasedStateMachine` drives a real store (in each mode, on a
`ManualClock`) and a plain-Python model side by side; after every step the
two must agree on every key, and the subscriber must have heard exactly the
changes the model predicts, in order.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from actors import (
    ActorSystem,
    ConflictError,
    DeleteEntry,
    GetEntry,
    ListEntries,
    ManualClock,
    SetEntry,
    StateStore,
    SubscribeState,
)
from actors.state.entry import freeze_value
from tests.state.helpers import Watcher

KEYS = ("a:1", "a:2", "b:1", "b:22")
SWEEP = 2.0

_values = (
    st.integers(-3, 3)
    | st.text(max_size=3)
    | st.lists(st.integers(0, 2), max_size=2)
    | st.dictionaries(st.sampled_from("xy"), st.integers(0, 2), max_size=2)
)
_ttls = st.none() | st.sampled_from([0.5, 1.0, 2.5])


class _Model:
    """What the store should hold: key -> (value, version, expires_at), plus removed versions."""

    def __init__(self) -> None:
        self.now = 0.0
        self.next_sweep = SWEEP
        self.live: dict[str, tuple[Any, int, float | None]] = {}
        self.removed: dict[str, int] = {}
        self.events: list[tuple[str, str, int]] = []

    def version(self, key: str) -> int:
        if key in self.live:
            return self.live[key][1]
        return self.removed.get(key, 0)

    def visible(self, key: str) -> tuple[Any, int, float | None] | None:
        found = self.live.get(key)
        if found is None or (found[2] is not None and found[2] <= self.now):
            return None
        return found

    def _remove(self, key: str, kind: str) -> int:
        version = self.version(key) + 1
        del self.live[key]
        self.removed[key] = version
        self.events.append((kind, key, version))
        return version

    def expire_if_due(self, key: str) -> None:
        if key in self.live and self.visible(key) is None:
            self._remove(key, "expire")

    def set(self, key: str, value: Any, ttl: float | None) -> int:
        self.expire_if_due(key)
        version = self.version(key) + 1
        self.live[key] = (freeze_value(value), version, None if ttl is None else self.now + ttl)
        self.removed.pop(key, None)
        self.events.append(("set", key, version))
        return version

    def delete(self, key: str) -> int:
        self.expire_if_due(key)
        if key not in self.live:
            return self.version(key)
        return self._remove(key, "delete")

    def advance(self, seconds: float) -> None:
        self.now += seconds
        if self.now >= self.next_sweep:
            while self.next_sweep <= self.now:
                self.next_sweep += SWEEP
            due = sorted((expires_at, key) for key, (_, _, expires_at) in self.live.items() if expires_at is not None)
            for expires_at, key in due:
                if expires_at <= self.now:
                    self._remove(key, "expire")


class StoreMachine(RuleBasedStateMachine):
    mode = "pooled"

    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock()
        self.system = ActorSystem("model", clock=self.clock, dispatchers=2)
        self.store = self.system.spawn(StateStore, sweep_interval=SWEEP, mode=self.mode)
        self.watcher = self.system.spawn(Watcher, mode=self.mode)
        self.store.ask(SubscribeState("*", self.watcher))
        self.model = _Model()

    def teardown(self) -> None:
        self.system.shutdown()

    @rule(key=st.sampled_from(KEYS), value=_values, ttl=_ttls)
    def set(self, key: str, value: Any, ttl: float | None) -> None:
        result = self.store.ask(SetEntry(key, value, ttl=ttl))
        assert result.version == self.model.set(key, value, ttl)

    @rule(key=st.sampled_from(KEYS), value=_values, ttl=_ttls, data=st.data())
    def compare_and_set(self, key: str, value: Any, ttl: float | None, data: st.DataObject) -> None:
        visible = self.model.visible(key)
        current = 0 if visible is None else visible[1]
        expected = data.draw(st.just(current) | st.integers(0, 6), label="expected_version")
        if expected == current:
            result = self.store.ask(SetEntry(key, value, ttl=ttl, expected_version=expected))
            assert result.version == self.model.set(key, value, ttl)
        else:
            with pytest.raises(ConflictError) as caught:
                self.store.ask(SetEntry(key, value, ttl=ttl, expected_version=expected))
            assert (caught.value.local_version, caught.value.remote_version) == (current, expected)

    @rule(key=st.sampled_from(KEYS))
    def delete(self, key: str) -> None:
        assert self.store.ask(DeleteEntry(key)).version == self.model.delete(key)

    @rule(seconds=st.sampled_from([0.25, 0.5, 1.0, 2.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.model.advance(seconds)

    @rule(prefix=st.sampled_from(["", "a:", "b:2", "c"]))
    def list_entries(self, prefix: str) -> None:
        listed = [(e.key, e.value, e.version) for e in self.store.ask(ListEntries(prefix))]
        expected = []
        for key in sorted(self.model.live):
            visible = self.model.visible(key)
            if key.startswith(prefix) and visible is not None:
                expected.append((key, visible[0], visible[1]))
        assert listed == expected

    @invariant()
    def every_key_reads_as_the_model_says(self) -> None:
        for key in KEYS:
            entry = self.store.ask(GetEntry(key))
            visible = self.model.visible(key)
            if visible is None:
                assert entry is None, key
            else:
                value, version, expires_at = visible
                assert (entry.value, entry.version) == (value, version)
                assert entry.expires_at == expires_at  # sums of quarters: exact in binary

    @invariant()
    def the_subscriber_heard_every_change_in_order(self) -> None:
        seen = [(n.event.kind.value, n.event.key, n.event.version) for n in self.watcher.ask("get")]
        assert seen == self.model.events


@pytest.mark.parametrize("mode", ["pooled", "thread"])
def test_the_store_behaves_like_a_dict_with_versions_ttls_and_notifications(mode: str) -> None:
    machine = type(f"StoreMachine_{mode}", (StoreMachine,), {"mode": mode})
    run_state_machine_as_test(machine, settings=settings(max_examples=60, stateful_step_count=30, deadline=None))
