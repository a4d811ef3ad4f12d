"""Tests for the agent message protocol and its JSON wire form."""

from __future__ import annotations

import copy
import inspect
import json
import math
import pickle
import sys
from typing import Any

import attrs
import cattrs
import pytest
from attrs.exceptions import FrozenError
from hypothesis import given

from actors import ProtocolError
from actors.protocol import (
    MAX_DEPTH,
    PROTOCOL_VERSION,
    AgentMessage,
    FrozenMapping,
    MessageType,
    Priority,
    from_json,
    structure,
    to_json,
    unstructure,
)
from tests.strategies import agent_messages


def _wire(**changes: Any) -> dict[str, Any]:
    """Return a valid wire-form message, with *changes* applied."""
    data: dict[str, Any] = {
        "message_id": "m-1",
        "sender": "planner",
        "recipient": "coder",
        "type": "task_request",
        "content": {"task": "lint", "paths": ["a.py", "b.py"]},
        "priority": "HIGH",
        "timestamp": 1700000000.25,
        "correlation_id": None,
        "protocol_version": "1.0",
    }
    data.update(changes)
    return data


def _is_plain_json(value: object) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain_json(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_is_plain_json(item) for item in value)
    return value is None or type(value) in (bool, int, float, str)


# Round trips


@given(agent_messages())
def test_a_message_survives_a_json_round_trip(message: AgentMessage) -> None:
    text = to_json(message)

    decoded = from_json(text)

    assert decoded == message
    # JSON text tells 1 from 1.0 and from true, which == does not.
    assert to_json(decoded) == text


@given(agent_messages())
def test_a_message_survives_an_unstructure_round_trip(message: AgentMessage) -> None:
    assert structure(unstructure(message)) == message


@given(agent_messages())
def test_the_wire_form_holds_only_plain_json_values(message: AgentMessage) -> None:
    data = unstructure(message)

    assert _is_plain_json(data)
    assert data["priority"] == message.priority.name
    assert data["type"] == message.type.value


def test_the_wire_form_names_the_priority_and_uses_the_message_type_value() -> None:
    message = AgentMessage(
        message_id="m-1",
        sender="planner",
        recipient="coder",
        type=MessageType.TASK_REQUEST,
        content={"task": "lint", "paths": ["a.py", "b.py"]},
        priority=Priority.HIGH,
        timestamp=1700000000.25,
    )

    assert unstructure(message) == _wire()
    assert json.loads(to_json(message)) == _wire()


def test_json_text_is_ascii_with_unicode_escaped() -> None:
    message = AgentMessage(sender="émile", type=MessageType.HEARTBEAT, content="日本")

    text = to_json(message)

    assert text.isascii()
    assert from_json(text) == message
    assert from_json(text.encode()) == message


# Construction and defaults


def test_defaults_fill_the_id_priority_timestamp_and_version() -> None:
    first = AgentMessage(sender="a", type=MessageType.HEARTBEAT)
    second = AgentMessage(sender="a", type=MessageType.HEARTBEAT)

    assert first.message_id != second.message_id
    assert len(first.message_id) == 32
    assert first.priority is Priority.MEDIUM
    assert isinstance(first.timestamp, float)
    assert first.recipient is None
    assert first.correlation_id is None
    assert first.content is None
    assert first.protocol_version == PROTOCOL_VERSION == "1.0"


def test_an_int_timestamp_becomes_a_float() -> None:
    message = AgentMessage(sender="a", type=MessageType.HEARTBEAT, timestamp=5)

    assert message.timestamp == 5.0
    assert type(message.timestamp) is float


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"message_id": ""}, "message_id"),
        ({"sender": ""}, "sender"),
        ({"recipient": ""}, "recipient"),
        ({"correlation_id": ""}, "correlation_id"),
        ({"timestamp": math.inf}, "timestamp"),
        ({"content": {"x": [math.nan]}}, "content.x.0"),
        ({"content": {1: "one"}}, "content"),
        ({"content": {"when": object()}}, "content.when"),
        ({"protocol_version": "2.0"}, "protocol_version"),
    ],
)
def test_building_a_message_the_protocol_forbids_raises_protocol_error(changes: dict[str, Any], field: str) -> None:
    arguments: dict[str, Any] = {
        "sender": "a",
        "type": MessageType.HEARTBEAT,
        **changes,
    }

    with pytest.raises(ProtocolError) as raised:
        AgentMessage(**arguments)

    assert raised.value.field == field
    assert repr(field) in str(raised.value)


@pytest.mark.parametrize(
    "changes",
    [{"sender": 123}, {"type": "heartbeat"}, {"priority": 2}, {"timestamp": "now"}],
)
def test_building_a_message_with_a_wrong_python_type_raises_type_error(
    changes: dict[str, Any],
) -> None:
    arguments: dict[str, Any] = {
        "sender": "a",
        "type": MessageType.HEARTBEAT,
        **changes,
    }

    with pytest.raises(TypeError):
        AgentMessage(**arguments)


# Immutability


def test_a_message_is_frozen() -> None:
    message = AgentMessage(sender="a", type=MessageType.HEARTBEAT)

    with pytest.raises(FrozenError):
        message.sender = "b"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        message.extra = 1  # type: ignore[attr-defined]


def test_nested_content_cannot_be_mutated() -> None:
    message = AgentMessage(sender="a", type=MessageType.TASK_REQUEST, content={"steps": [{"name": "lint"}]})
    content = message.content
    assert isinstance(content, FrozenMapping)
    steps = content["steps"]
    assert isinstance(steps, tuple)
    step = steps[0]
    assert isinstance(step, FrozenMapping)

    with pytest.raises(TypeError):
        content["steps"] = ()  # type: ignore[index]
    with pytest.raises(TypeError):
        step["name"] = "test"  # type: ignore[index]
    with pytest.raises(AttributeError):
        steps.append("test")  # type: ignore[attr-defined]
    with pytest.raises(FrozenError):
        content._items = {}


def test_content_is_copied_so_the_senders_dict_stays_its_own() -> None:
    payload: dict[str, Any] = {"steps": ["lint"]}
    message = AgentMessage(sender="a", type=MessageType.TASK_REQUEST, content=payload)

    payload["steps"].append("test")
    payload["extra"] = True

    assert message.content == FrozenMapping({"steps": ["lint"]})


def test_enum_members_in_content_become_plain_values() -> None:
    message = AgentMessage(
        sender="a",
        type=MessageType.COORDINATION,
        content=[Priority.HIGH, MessageType.HEARTBEAT],
    )

    assert message.content == (2, "heartbeat")
    assert [type(item) for item in message.content] == [int, str]


def test_a_message_is_hashable_and_equal_messages_hash_alike() -> None:
    message = AgentMessage(sender="a", type=MessageType.STATUS_UPDATE, content={"load": [0.5, {"cpu": 1}]})
    twin = attrs.evolve(message)

    assert twin == message
    assert hash(twin) == hash(message)


def test_a_frozen_mapping_equals_a_dict_with_the_same_items() -> None:
    frozen = FrozenMapping({"a": 1, "b": [2]})

    assert frozen == {"a": 1, "b": (2,)}
    assert dict(frozen) == {"a": 1, "b": (2,)}
    assert repr(frozen) == "FrozenMapping({'a': 1, 'b': (2,)})"


def test_a_frozen_mapping_survives_copy_and_pickle() -> None:
    frozen = FrozenMapping({"a": [1, {"b": None}]})

    assert copy.deepcopy(frozen) == frozen
    assert pickle.loads(pickle.dumps(frozen)) == frozen


# Priority


def test_priorities_order_from_low_to_critical() -> None:
    shuffled = [Priority.HIGH, Priority.LOW, Priority.CRITICAL, Priority.MEDIUM]

    assert sorted(shuffled) == [
        Priority.LOW,
        Priority.MEDIUM,
        Priority.HIGH,
        Priority.CRITICAL,
    ]
    assert max(shuffled) is Priority.CRITICAL


def test_priorities_compare_with_plain_ints() -> None:
    assert [int(priority) for priority in Priority] == [0, 1, 2, 3]
    assert Priority.HIGH > 1
    assert Priority.MEDIUM < 2
    assert Priority(3) is Priority.CRITICAL
    assert sorted([3, Priority.LOW, 2]) == [0, 2, 3]


def test_message_type_values_are_lowercase_names() -> None:
    assert [member.value for member in MessageType] == [member.name.lower() for member in MessageType]


# Bad input


@pytest.mark.parametrize("text", ["", "{", '{"sender": }', "not json", b"\xff\xfe\xfa"], ids=repr)
def test_malformed_json_is_rejected(text: str | bytes) -> None:
    with pytest.raises(ProtocolError, match="malformed JSON") as raised:
        from_json(text)

    assert raised.value.field is None


@pytest.mark.parametrize("document", ["[]", '"hello"', "null", "3"])
def test_a_json_document_that_is_not_an_object_is_rejected(document: str) -> None:
    with pytest.raises(ProtocolError, match="expected a JSON object") as raised:
        from_json(document)

    assert raised.value.field is None


@pytest.mark.parametrize("field", list(_wire()))
def test_a_missing_field_is_rejected_naming_it(field: str) -> None:
    data = _wire()
    del data[field]

    with pytest.raises(ProtocolError, match="missing") as raised:
        from_json(json.dumps(data))

    assert raised.value.field == field
    assert repr(field) in str(raised.value)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("message_id", 17),
        ("message_id", None),
        ("sender", 123),
        ("sender", ["planner"]),
        ("recipient", 5),
        ("type", 1),
        ("type", None),
        ("content", {1: "a"}),
        ("content", {"when": {1, 2}}),
        ("priority", 2),
        ("priority", 2.0),
        ("priority", None),
        ("timestamp", "1700000000"),
        ("timestamp", True),
        ("timestamp", None),
        ("correlation_id", 9),
        ("protocol_version", 1.0),
        ("protocol_version", None),
    ],
    ids=repr,
)
def test_a_value_of_the_wrong_type_is_rejected_not_coerced(field: str, value: object) -> None:
    with pytest.raises(ProtocolError) as raised:
        structure(_wire(**{field: value}))

    assert raised.value.field is not None
    assert raised.value.field.split(".")[0] == field
    assert repr(raised.value.field) in str(raised.value)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("type", "gossip"),
        ("type", "TASK_REQUEST"),
        ("priority", "URGENT"),
        ("priority", "high"),
    ],
)
def test_an_unknown_enum_value_is_rejected_naming_the_field(field: str, value: str) -> None:
    with pytest.raises(ProtocolError, match="must be one of") as raised:
        from_json(json.dumps(_wire(**{field: value})))

    assert raised.value.field == field
    assert repr(field) in str(raised.value)


@pytest.mark.parametrize(
    ("field", "value"),
    [("message_id", ""), ("sender", ""), ("recipient", ""), ("correlation_id", "")],
)
def test_an_empty_name_is_rejected_naming_the_field(field: str, value: str) -> None:
    with pytest.raises(ProtocolError, match="non-empty") as raised:
        from_json(json.dumps(_wire(**{field: value})))

    assert raised.value.field == field


def test_a_non_finite_timestamp_is_rejected() -> None:
    text = json.dumps(_wire(timestamp=math.nan))  # json writes NaN unless told not to

    with pytest.raises(ProtocolError, match="finite") as raised:
        from_json(text)

    assert raised.value.field == "timestamp"


def test_a_non_finite_float_in_content_is_rejected_naming_its_path() -> None:
    text = json.dumps(_wire(content={"load": [0.5, math.inf]}))

    with pytest.raises(ProtocolError, match="JSON cannot carry") as raised:
        from_json(text)

    assert raised.value.field == "content.load.1"
    assert "'content.load.1'" in str(raised.value)


def test_every_bad_field_is_named_and_the_first_is_the_errors_field() -> None:
    with pytest.raises(ProtocolError) as raised:
        structure(_wire(sender=1, priority="high"))

    assert raised.value.field == "sender"
    assert "'sender'" in str(raised.value)
    assert "'priority'" in str(raised.value)


def test_a_protocol_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="cannot decode AgentMessage"):
        structure(_wire(sender=1))


# Versions


def test_a_newer_minor_version_is_accepted() -> None:
    message = from_json(json.dumps(_wire(protocol_version="1.7")))

    assert message.protocol_version == "1.7"
    assert json.loads(to_json(message))["protocol_version"] == "1.7"


def test_fields_added_by_a_newer_minor_version_are_ignored() -> None:
    message = structure(_wire(protocol_version="1.3", trace_id="t-9"))

    assert message == structure(_wire(protocol_version="1.3"))


@pytest.mark.parametrize("version", ["2.0", "0.9", "10.1"])
def test_an_unknown_major_version_is_rejected(version: str) -> None:
    with pytest.raises(ProtocolError, match=r"supports major version\(s\) 1\.x") as raised:
        from_json(json.dumps(_wire(protocol_version=version)))

    assert raised.value.field == "protocol_version"
    assert version in str(raised.value)


def test_an_unknown_major_version_is_reported_before_other_problems() -> None:
    data = {"protocol_version": "2.0", "from": "planner", "kind": "task"}

    with pytest.raises(ProtocolError) as raised:
        structure(data)

    assert raised.value.field == "protocol_version"


@pytest.mark.parametrize(
    "version",
    [
        "1",
        "1.0.0",
        "v1.0",
        "",
        "1.x",
        "01.0",
        " 1.0",
        "\u0661.\u0660",
    ],  # Arabic-Indic "1.0"
    ids=repr,
)
def test_a_malformed_version_is_rejected(version: str) -> None:
    with pytest.raises(ProtocolError, match=r"MAJOR\.MINOR") as raised:
        from_json(json.dumps(_wire(protocol_version=version)))

    assert raised.value.field == "protocol_version"


# Converter hygiene


def test_cattrs_global_converter_is_left_alone() -> None:
    structure(_wire())

    # The global converter still coerces, as it does out of the box.
    assert cattrs.structure(123, str) == "123"


# The edges: every bad input is a ProtocolError, whatever its shape


def _nested(depth: int) -> Any:
    """Return a list nested *depth* containers deep (depth 1 is ``[0]``)."""
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


def _wire_text_nested(depth: int) -> str:
    """Return a wire message whose content is an empty list nested *depth* deep, as text."""
    text = json.dumps(_wire(content=0), separators=(",", ":"))
    return text.replace('"content":0', '"content":' + "[" * depth + "]" * depth)


def _deep_stack(frames_left: int, call: Any) -> Any:
    """Run *call* with about *frames_left* frames left before the recursion limit."""

    def down(n: int) -> Any:
        return call() if n <= 0 else down(n - 1)

    return down(sys.getrecursionlimit() - len(inspect.stack()) - frames_left)


def test_a_protocol_version_with_thousands_of_digits_is_a_protocol_error_not_a_value_error() -> None:
    with pytest.raises(ProtocolError, match="supports major version") as raised:
        structure(_wire(protocol_version="1" * 5000 + ".0"))
    assert raised.value.field == "protocol_version"
    with pytest.raises(ProtocolError, match="supports major version"):
        from_json(json.dumps(_wire(protocol_version="9" * 5000 + ".0")))


@pytest.mark.parametrize("text", [5, None, 1.5, ["{}"], {"a": 1}, object()])
def test_from_json_refuses_what_is_not_text_with_a_protocol_error(text: Any) -> None:
    with pytest.raises(ProtocolError, match="expected JSON text as str or bytes"):
        from_json(text)


def test_from_json_accepts_bytearray() -> None:
    text = json.dumps(_wire()).encode()
    assert from_json(bytearray(text)) == from_json(text)


def test_content_nested_to_max_depth_round_trips_and_compares() -> None:
    first = AgentMessage(sender="a", type=MessageType.TASK_REQUEST, content=_nested(MAX_DEPTH))
    second = from_json(to_json(first))
    assert second == first
    assert from_json(to_json(second)) == second


@pytest.mark.parametrize("depth", [101, 500, 5_000])
def test_content_nested_past_max_depth_is_refused_on_every_path_in(depth: int) -> None:
    assert depth > MAX_DEPTH
    with pytest.raises(ProtocolError, match="MAX_DEPTH"):
        AgentMessage(sender="a", type=MessageType.TASK_REQUEST, content=_nested(depth))
    with pytest.raises(ProtocolError, match="MAX_DEPTH"):
        structure(_wire(content=_nested(depth)))
    text = _wire_text_nested(depth)
    with pytest.raises(ProtocolError, match="MAX_DEPTH"):
        from_json(text)


def test_the_depth_limit_does_not_depend_on_how_deep_the_callers_stack_is() -> None:
    text = _wire_text_nested(300)
    for frames_left in (5_000, 400):
        with pytest.raises(ProtocolError, match="MAX_DEPTH"):
            _deep_stack(frames_left, lambda: from_json(text))
    ok = json.dumps(_wire(content=_nested(MAX_DEPTH)))
    assert _deep_stack(400, lambda: from_json(ok)).content == from_json(ok).content


def test_a_depth_error_names_the_path_to_the_deep_value() -> None:
    with pytest.raises(ProtocolError) as raised:
        AgentMessage(sender="a", type=MessageType.TASK_REQUEST, content={"plan": _nested(200)})
    assert raised.value.field is not None
    assert raised.value.field.startswith("content.plan.0.0")
