"""What crosses an edge comes back equal: state types via their converter and SQLite, messages via history and inbox."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors import ActorSystem, state
from actors.errors import ProtocolError
from actors.messaging import DurableInbox, MessageHistory, spawn_service
from actors.protocol import MAX_DEPTH, AgentMessage, freeze_json
from actors.state import Entry, SetEntry, SqliteBackend, Tombstone
from actors.state.codec import structure, unstructure
from tests.strategies import agent_messages, json_values, names, public_instances

if TYPE_CHECKING:
    from pathlib import Path

# A subscription holds the subscriber's ref and a strategy may be a handler:
# neither is data, so neither crosses a process edge.
_NOT_DATA = {"SubscribeState", "SetConflictStrategy"}
STATE_CLASSES = [
    cls
    for name in sorted(state.__all__)
    if isinstance(cls := getattr(state, name), type) and attrs.has(cls) and name not in _NOT_DATA
]
_SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("cls", STATE_CLASSES, ids=lambda cls: cls.__name__)
def test_every_state_type_comes_back_equal_through_its_converter_and_json_text(cls: type) -> None:
    @_SETTINGS
    @given(public_instances(cls, st.nothing()))
    def check(instance: Any) -> None:
        text = json.dumps(unstructure(instance), allow_nan=False)
        assert structure(json.loads(text), cls) == instance

    check()


def test_a_state_type_built_from_bad_data_is_a_protocol_error_naming_the_field() -> None:
    with pytest.raises(ProtocolError, match="version"):
        structure({"key": "k", "version": "one", "removed_at": 1.0}, Tombstone)


def test_a_stored_value_nests_at_most_max_depth_containers_exactly_as_message_content() -> None:
    def nested(depth: int) -> Any:
        value: Any = 0
        for _ in range(depth):
            value = [value]
        return value

    deepest = freeze_json(nested(MAX_DEPTH))
    assert Entry("k", nested(MAX_DEPTH), 1, 0.0, 0.0).value == deepest
    assert SetEntry("k", nested(MAX_DEPTH)).value == deepest
    for build in (lambda value: Entry("k", value, 1, 0.0, 0.0), lambda value: SetEntry("k", value)):
        with pytest.raises(ProtocolError, match="MAX_DEPTH"):
            build(nested(MAX_DEPTH + 1))


def test_entries_and_tombstones_come_back_equal_from_sqlite(tmp_path: Path) -> None:
    records = st.one_of(public_instances(Entry, st.nothing()), public_instances(Tombstone, st.nothing()))
    counter = iter(range(10**6))

    @_SETTINGS
    @given(st.lists(records, min_size=1, max_size=5, unique_by=lambda record: record.key))
    def check(batch: list[Entry | Tombstone]) -> None:
        backend = SqliteBackend(tmp_path / f"s{next(counter)}.db", synchronous="NORMAL")
        backend.open()
        try:
            backend.apply(batch)
        finally:
            backend.close()
        try:
            assert sorted(backend.open(), key=lambda record: record.key) == sorted(batch, key=lambda r: r.key)
        finally:
            backend.close()

    check()


def test_a_message_or_json_value_comes_back_equal_from_the_history(system: ActorSystem, tmp_path: Path) -> None:
    history = spawn_service(system, MessageHistory, tmp_path / "h.db")
    counter = iter(range(10**6))

    @_SETTINGS
    @given(agent_messages() | json_values())
    def check(message: Any) -> None:
        stream = f"s{next(counter)}"
        history.append(stream, message).get(timeout=10)
        [entry] = history.query(stream=stream).entries
        assert entry.message == (message if isinstance(message, AgentMessage) else freeze_json(message))
        assert attrs.evolve(entry) == entry

    check()


def test_a_message_comes_back_equal_from_the_durable_inbox(system: ActorSystem, tmp_path: Path) -> None:
    inbox = spawn_service(system, DurableInbox, tmp_path / "i.db")

    @_SETTINGS
    @given(agent_messages(), names())
    def check(message: AgentMessage, recipient: str) -> None:
        sent = attrs.evolve(message, recipient=recipient)
        message_id = inbox.send(sent)
        [item] = [item for item in inbox.get_messages(recipient, limit=100) if item.message_id == message_id]
        assert item.message == sent
        inbox.mark_processed(message_id)

    check()
