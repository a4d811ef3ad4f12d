"""Test doubles and strategies for the state store tests."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from hypothesis import strategies as st

from actors import Actor, Entry, MemoryBackend, StateChanged
from actors.state.entry import freeze_metadata, freeze_value
from tests.strategies import json_values

if TYPE_CHECKING:
    from collections.abc import Sequence

    from actors.state.persistence import Record

WAIT = 10  # seconds: a hang guard, not a sleep


class Watcher(Actor):
    """A subscriber: records every `StateChanged` it is told; ``"get"`` answers them."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[StateChanged] = []

    def on_receive(self, message: Any) -> Any:
        if message == "get":
            return list(self.seen)
        self.seen.append(message)
        return None


class GatedBackend(MemoryBackend):
    """A memory backend that records each transaction and can hold one until released."""

    def __init__(self) -> None:
        super().__init__()
        self.transactions: list[list[str]] = []
        self.hold_next = threading.Event()
        self.entered = threading.Event()
        self.release = threading.Event()
        self.calls = 0
        self.failures: dict[int, BaseException] = {}  # apply call number (from 1) -> what it raises

    def apply(self, records: Sequence[Record]) -> None:
        self.calls += 1
        if self.hold_next.is_set():
            self.hold_next.clear()
            self.entered.set()
            assert self.release.wait(WAIT), "backend never released"
        error = self.failures.pop(self.calls, None)
        if error is not None:
            raise error
        self.transactions.append([record.key for record in records])
        super().apply(records)


def keys() -> st.SearchStrategy[str]:
    """Generate non-empty keys, Unicode included."""
    return st.text(min_size=1, max_size=12)


@st.composite
def entries(draw: st.DrawFn) -> Entry:
    """Generate valid entries, every field drawn."""
    created = draw(st.floats(min_value=-1e9, max_value=1e9, allow_nan=False))
    return Entry(
        key=draw(keys()),
        value=freeze_value(draw(json_values())),
        version=draw(st.integers(min_value=1, max_value=2**62)),
        created_at=created,
        updated_at=created + draw(st.floats(min_value=0, max_value=1e6, allow_nan=False)),
        writer=draw(st.none() | st.text(min_size=1, max_size=8)),
        metadata=freeze_metadata(draw(st.dictionaries(st.text(max_size=5), json_values(max_leaves=3), max_size=3))),
        expires_at=draw(st.none() | st.floats(min_value=-1e9, max_value=1e9, allow_nan=False)),
    )
