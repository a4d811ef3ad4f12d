"""The message protocol agents speak: `AgentMessage` and its JSON wire form.

Messages are frozen, slotted attrs classes, and their ``content`` is frozen all
the way down when a message is built: dicts become `FrozenMapping`, lists
become tuples. pykka hands the receiver the very object the sender made, so
this is what lets a message cross an actor boundary without a copy.

Wire form. `to_json` writes one JSON object holding every field::

    {"message_id": "9f1c...", "sender": "planner", "recipient": "coder",
     "type": "task_request", "content": {"task": "lint", "paths": ["a.py"]},
     "priority": "HIGH", "timestamp": 1700000000.25, "correlation_id": null,
     "protocol_version": "1.0"}

- ``type`` is the `MessageType` value, in lowercase (``"task_request"``).
- ``priority`` is the `Priority` name, in capitals (``"HIGH"``), not its
  number: it reads well in logs and survives a renumbering of the enum.
- ``timestamp`` is seconds since the epoch; a JSON integer is accepted.
- ``content`` is any JSON value; non-finite floats are refused, as strict JSON
  cannot carry them.
- Every field must be present, with ``null`` for no recipient (a message to
  every agent) or no correlation id. Defaults exist for building messages in
  Python, not for filling gaps in received ones.
- Keys this runtime does not know are ignored, so a newer minor version of
  the protocol may add fields.

Decoding is strict: a value of the wrong JSON type is refused, never coerced
(``123`` is not a sender, ``"high"`` and ``2`` are not priorities).

Versions. A message carries ``"MAJOR.MINOR"``. A message of a supported
major version is accepted whatever its minor version, and keeps the version it
arrived with; any other major version is refused.

Depth. Content nests at most `MAX_DEPTH` (100) containers deep, on every
path in and out: building, decoding, encoding, comparing, storing.

Errors. `from_json` and `structure` raise `ProtocolError` whose message and
``field`` name the offending field (a dotted path inside ``content``). Building
a message in Python with a value the protocol forbids (an empty id, a
non-finite timestamp, content JSON cannot carry, an unsupported version) also
raises `ProtocolError`, a `ValueError`; a scalar field given a value of the
wrong Python type raises `TypeError`.

Threading: the functions here are pure, and the module's private converter is
fully configured at import, so any actor's thread may call them.
"""

from __future__ import annotations

import enum
import json
import math
import re
import reprlib
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final, NoReturn, TypeAlias, Union, final

import attrs
import cattrs
from attrs.exceptions import FrozenError
from attrs.validators import instance_of, optional
from cattrs.errors import ClassValidationError
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from actors.errors import ProtocolError

__all__ = [
    "MAX_DEPTH",
    "PROTOCOL_VERSION",
    "AgentMessage",
    "FrozenMapping",
    "JsonValue",
    "MessageType",
    "Priority",
    "freeze_json",
    "from_json",
    "structure",
    "to_json",
    "unstructure",
]

PROTOCOL_VERSION: Final = "1.0"
"""The protocol version this runtime writes, as ``"MAJOR.MINOR"``."""

_SUPPORTED_MAJOR_VERSIONS: Final = frozenset({1})
_MAJOR_DIGITS: Final = max(len(str(major)) for major in _SUPPORTED_MAJOR_VERSIONS)

# ASCII digits only (`\d` would take any Unicode digit), no leading zeros, so
# that every accepted version has one spelling.
MAX_DEPTH: Final = 100
"""How deeply containers may nest in content (a dict holding a list is depth 2).

One limit for building, decoding, encoding, comparing and storing a value
(the StateStore's values too): what is accepted can always be compared and
encoded again, whatever the caller's stack. Deeper content is refused with a
`ProtocolError` naming the field.
"""

_VERSION_PATTERN: Final = re.compile(r"(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)", re.ASCII)

JsonValue: TypeAlias = Union[bool, int, float, str, tuple["JsonValue", ...], "FrozenMapping", None]
"""A frozen JSON value, as held by `AgentMessage.content`."""


class MessageType(enum.StrEnum):
    """Say what a message asks for or reports; the value is its wire form."""

    TASK_REQUEST = "task_request"
    TASK_RESPONSE = "task_response"
    STATUS_UPDATE = "status_update"
    HEARTBEAT = "heartbeat"
    ERROR_REPORT = "error_report"
    COORDINATION = "coordination"
    BROADCAST = "broadcast"


class Priority(enum.IntEnum):
    """Rank how urgently a message should be handled; higher is more urgent.

    An `IntEnum`, so a priority mailbox can order messages by it and compare
    it with plain ints. On the wire a priority is its name (``"HIGH"``).
    """

    LOW = 0
    MEDIUM = 1
    HIGH = 2
    CRITICAL = 3


def _describe(value: object) -> str:
    """Name a received value and its type for an error message, shortened."""
    return f"{type(value).__name__} {reprlib.repr(value)}"


def _child_path(path: str, key: object) -> str:
    """Return the dotted path of *key* under *path* (which may be the root, "")."""
    return f"{path}.{key}" if path else str(key)


def _freeze(value: object, path: str, depth: int = 0) -> JsonValue:
    """Return *value* as a frozen JSON value, copying every container in it.

    Subclasses of the JSON scalars (a `Priority` or `MessageType` member, say)
    become the plain scalar, so frozen content holds exactly what JSON reads
    back and round trips compare equal.

    Args:
        value: a JSON-like value: dicts with str keys, lists, tuples, str,
            int, float, bool or None, nested to any depth.
        path: the dotted path of *value*, for error messages.
        depth: how many containers hold *value* already.

    Raises:
        ProtocolError: *value* holds something JSON cannot carry, or nests
            containers deeper than `MAX_DEPTH`; the error's ``field`` is the
            dotted path to it.
    """
    # Exact scalar types first: most content is made of them.
    if value is None or type(value) in (bool, int, str):
        return value  # type: ignore[return-value]  # mypy does not narrow on type()
    if isinstance(value, FrozenMapping):
        return value  # frozen all the way down when it was made
    if isinstance(value, float):
        if not math.isfinite(value):
            msg = f"field {path!r} holds {value!r}, which JSON cannot carry; send a finite number, or null"
            raise ProtocolError(msg, field=path)
        return float(value)
    if isinstance(value, int):  # bool cannot be subclassed, so this is not one
        return int(value)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, (Mapping, list, tuple)):
        # The limit is checked before going one level down, so the recursion
        # is bounded by MAX_DEPTH whatever the input, and whatever is accepted
        # here can be compared, encoded and decoded again.
        if depth >= MAX_DEPTH:
            msg = (
                f"field {path!r} nests containers deeper than MAX_DEPTH ({MAX_DEPTH}); "
                "flatten the structure, or send the deep part as a JSON string"
            )
            raise ProtocolError(msg, field=path)
        if isinstance(value, Mapping):
            return FrozenMapping._adopt(_freeze_items(value, path, depth + 1))
        return tuple(_freeze(item, _child_path(path, index), depth + 1) for index, item in enumerate(value))
    msg = (
        f"field {path!r} holds {_describe(value)}, which JSON cannot carry; "
        "use dicts with str keys, lists, str, int, float, bool or None"
    )
    raise ProtocolError(msg, field=path)


def _freeze_items(items: Mapping[Any, object], path: str, depth: int = 1) -> dict[str, JsonValue]:
    """Return a new dict of *items* with str keys and frozen values.

    *depth* counts the mapping that holds *items* (see `_freeze`).

    Raises:
        ProtocolError: a key is not a str, or a value is not JSON.
    """
    frozen: dict[str, JsonValue] = {}
    for key, value in items.items():
        if not isinstance(key, str):
            where = f"field {path!r}" if path else "the mapping"
            msg = f"{where} has the key {_describe(key)}, but JSON object keys are strings; convert the key to str"
            raise ProtocolError(msg, field=path or None)
        key_path = _child_path(path, key)
        frozen[str.__str__(key)] = _freeze(value, key_path, depth)
    return frozen


def _thaw(value: JsonValue) -> Any:
    """Return a frozen JSON value as plain dicts and lists, for `json.dumps`."""
    if isinstance(value, FrozenMapping):
        return {key: _thaw(item) for key, item in value.items()}
    if isinstance(value, tuple):
        return [_thaw(item) for item in value]
    return value


@final
class FrozenMapping(Mapping[str, JsonValue]):
    """Hold a JSON object immutably: str keys, frozen JSON values.

    What a dict in `AgentMessage.content` becomes. It compares equal to any
    mapping with the same items, a plain dict included, and it is hashable.
    `unstructure` and `to_json` turn it back into a dict. ``dict(frozen)``
    makes a shallow mutable copy.

    Args:
        items: the keys and values to copy; nested dicts and lists are frozen
            too.

    Raises:
        ProtocolError: a key is not a str, or a value is not JSON.
    """

    __slots__ = ("_items",)

    # Invariant: never mutated after construction, and owned by this mapping
    # alone; every value in it is a frozen JSON value.
    _items: dict[str, JsonValue]

    def __init__(self, items: Mapping[str, object] | None = None) -> None:
        object.__setattr__(self, "_items", _freeze_items(items or {}, ""))

    @classmethod
    def _adopt(cls, items: dict[str, JsonValue]) -> FrozenMapping:
        """Wrap *items*, already frozen and referenced nowhere else, without a copy."""
        self = cls.__new__(cls)
        object.__setattr__(self, "_items", items)
        return self

    def __getitem__(self, key: str) -> JsonValue:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        # Every value is frozen, hence hashable.
        return hash(frozenset(self._items.items()))

    def __repr__(self) -> str:
        return f"FrozenMapping({self._items!r})"

    def __reduce__(self) -> tuple[type[FrozenMapping], tuple[dict[str, JsonValue]]]:
        # The default reduce restores slots with setattr, which is refused.
        return (FrozenMapping, (self._items,))

    # attrs' FrozenError takes no message, as in attrs' own frozen classes.
    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise FrozenError

    def __delattr__(self, name: str) -> NoReturn:
        raise FrozenError


def _new_message_id() -> str:
    """Return a fresh message id: a random UUID as 32 hex digits."""
    return uuid.uuid4().hex


def _non_empty(
    remedy: str,
) -> Callable[[object, attrs.Attribute[Any], str | None], None]:
    """Return an attrs validator refusing the empty string, suggesting *remedy*."""

    def validate(_instance: object, attribute: attrs.Attribute[Any], value: str | None) -> None:
        if value == "":
            msg = f"field {attribute.name!r} must be a non-empty string; {remedy}"
            raise ProtocolError(msg, field=attribute.name)

    return validate


def freeze_json(value: object, field: str = "content") -> JsonValue:
    """Return *value* frozen as message content is: dicts as `FrozenMapping`, lists as tuples.

    The one freezer behind `AgentMessage.content` and every other JSON value
    troupe keeps (the StateStore's values), with the same `MAX_DEPTH`.

    Args:
        value: a JSON-like value.
        field: the name to report in errors; paths inside extend it.

    Raises:
        ProtocolError: *value* holds something JSON cannot carry, or nests
            deeper than `MAX_DEPTH`; ``field`` is the dotted path to it.
    """
    return _freeze(value, field)


def _freeze_content(value: object) -> JsonValue:
    """Freeze a message's content (the attrs converter of `AgentMessage.content`)."""
    return _freeze(value, "content")


def _as_timestamp(value: object) -> float:
    """Return *value* as a float timestamp, refusing what is not a number.

    Raises:
        TypeError: *value* is not an int or a float (a bool is not a number).
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        msg = (
            f"field 'timestamp' must be a number of seconds since the epoch, "
            f"got {_describe(value)}; leave it out to stamp the current time"
        )
        raise TypeError(msg)
    return float(value)


def _finite(_instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    """Refuse a non-finite float (an attrs validator)."""
    if not math.isfinite(value):
        msg = f"field {attribute.name!r} must be a finite number, got {value!r}; stamp the message with time.time()"
        raise ProtocolError(msg, field=attribute.name)


def _version_problem(version: object) -> str | None:
    """Say what is wrong with a protocol version, or return None if it is supported."""
    if not isinstance(version, str):
        return (
            f"field 'protocol_version' must be a string like {PROTOCOL_VERSION!r}, "
            f"got {_describe(version)}; send the version as a JSON string"
        )
    match = _VERSION_PATTERN.fullmatch(version)
    if match is None:
        return (
            f"field 'protocol_version' must be 'MAJOR.MINOR' in decimal digits, "
            f"like {PROTOCOL_VERSION!r}, got {version!r}; send the version the "
            "message was written for"
        )
    # A major of more digits than any supported one is unsupported: checked
    # before int(), which refuses over 4,300 digits with a ValueError.
    major = match[1]
    if len(major) > _MAJOR_DIGITS or int(major) not in _SUPPORTED_MAJOR_VERSIONS:
        supported = ", ".join(f"{major}.x" for major in sorted(_SUPPORTED_MAJOR_VERSIONS))
        return (
            f"field 'protocol_version' is {version!r}, but this runtime supports "
            f"major version(s) {supported} only; have the sender write "
            f"{PROTOCOL_VERSION}, or upgrade troupe-actors where it is received"
        )
    return None


def _supported_version(_instance: object, attribute: attrs.Attribute[Any], value: str) -> None:
    """Refuse a malformed or unsupported protocol version (an attrs validator)."""
    problem = _version_problem(value)
    if problem is not None:
        raise ProtocolError(problem, field=attribute.name)


@attrs.frozen(kw_only=True)
class AgentMessage:
    """Carry one message between agents: who sent it, to whom, and what it says.

    Frozen and slotted, with ``content`` frozen deeply on construction, so one
    message can be shared by actors without copying; `attrs.evolve` makes a
    changed copy. Fields are keyword-only. Messages are hashable.

    Attributes:
        message_id: unique id of this message; a random UUID's hex digits by
            default.
        sender: name of the sending agent.
        recipient: name of the receiving agent, or None to address every
            agent (a broadcast).
        type: what the message asks for or reports.
        content: the payload, any JSON value. Dicts become `FrozenMapping`,
            lists become tuples.
        priority: how urgently to handle the message; `Priority.MEDIUM` by
            default.
        timestamp: when the message was made, in seconds since the epoch;
            `time.time()` at construction by default. An int becomes a float.
        correlation_id: ``message_id`` of the message this one answers, or
            None.
        protocol_version: ``"MAJOR.MINOR"`` version the message was written
            for; `PROTOCOL_VERSION` by default. A received message keeps the
            version it arrived with.

    Raises:
        ProtocolError: a value the protocol forbids: an empty id or name,
            content JSON cannot carry, a non-finite timestamp, or a malformed
            or unsupported version. ``field`` names the field.
        TypeError: a field other than ``content`` has the wrong Python type.
    """

    message_id: str = attrs.field(
        factory=_new_message_id,
        validator=[
            instance_of(str),
            _non_empty("give every message a unique id (the default makes one)"),
        ],
    )
    sender: str = attrs.field(validator=[instance_of(str), _non_empty("name the sending agent")])
    recipient: str | None = attrs.field(
        default=None,
        validator=optional(
            [
                instance_of(str),
                _non_empty("use None (null in JSON) to address every agent"),
            ]
        ),
    )
    type: MessageType = attrs.field(validator=instance_of(MessageType))
    content: JsonValue = attrs.field(default=None, converter=_freeze_content)
    priority: Priority = attrs.field(default=Priority.MEDIUM, validator=instance_of(Priority))
    timestamp: float = attrs.field(factory=time.time, converter=_as_timestamp, validator=_finite)
    correlation_id: str | None = attrs.field(
        default=None,
        validator=optional(
            [
                instance_of(str),
                _non_empty("use None (null in JSON) when the message answers no other"),
            ]
        ),
    )
    protocol_version: str = attrs.field(default=PROTOCOL_VERSION, validator=[instance_of(str), _supported_version])


_FIELD_NAMES: Final = tuple(field.name for field in attrs.fields(AgentMessage))

# Structure hooks refuse what is not already of the right JSON type, where
# cattrs would coerce (its str hook calls str(), so 123 would become "123").
# Their messages complete "field 'x' ..." (see `_decode_error`).


def _structure_str(value: object, _: type) -> str:
    if not isinstance(value, str):
        msg = f"must be a string, got {_describe(value)}; send a JSON string"
        raise TypeError(msg)
    return value


def _structure_optional_str(value: object, _: type) -> str | None:
    if value is not None and not isinstance(value, str):
        msg = f"must be a string or null, got {_describe(value)}; send a JSON string or null"
        raise TypeError(msg)
    return value


def _structure_float(value: object, _: type) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        msg = f"must be a number, got {_describe(value)}; send a JSON number"
        raise TypeError(msg)
    return float(value)


def _structure_message_type(value: object, _: type) -> MessageType:
    if not isinstance(value, str) or value not in MessageType._value2member_map_:
        names = ", ".join(repr(member.value) for member in MessageType)
        msg = f"must be one of {names}, got {_describe(value)}; send a MessageType value"
        raise ValueError(msg)
    return MessageType(value)


def _structure_priority(value: object, _: type) -> Priority:
    if not isinstance(value, str) or value not in Priority.__members__:
        names = ", ".join(repr(member.name) for member in Priority)
        msg = f"must be one of {names}, got {_describe(value)}; send the priority's name, in capitals"
        raise ValueError(msg)
    return Priority[value]


def _structure_content(value: object, _: type) -> JsonValue:
    return _freeze(value, "content")


def _make_converter() -> cattrs.Converter:
    """Build the module's converter; hooks go here, never on cattrs' global one."""
    converter = cattrs.Converter(detailed_validation=True)
    converter.register_structure_hook(str, _structure_str)
    converter.register_structure_hook_func(lambda type_: type_ == (str | None), _structure_optional_str)
    converter.register_structure_hook(float, _structure_float)
    converter.register_structure_hook(MessageType, _structure_message_type)
    converter.register_structure_hook(Priority, _structure_priority)
    converter.register_unstructure_hook(MessageType, lambda type_: type_.value)
    converter.register_unstructure_hook(Priority, lambda priority: priority.name)
    converter.register_structure_hook(
        AgentMessage,
        make_dict_structure_fn(AgentMessage, converter, content=override(struct_hook=_structure_content)),
    )
    converter.register_unstructure_hook(
        AgentMessage,
        make_dict_unstructure_fn(AgentMessage, converter, content=override(unstruct_hook=_thaw)),
    )
    return converter


_converter: Final = _make_converter()


def _decode_error(error: ClassValidationError) -> ProtocolError:
    """Merge cattrs' per-field failures into one error naming the first bad field."""
    problems: list[tuple[str | None, str]] = []
    with_notes, without = error.group_exceptions()
    for failure, note in with_notes:
        if isinstance(failure, ProtocolError):  # a path inside content
            problems.append((failure.field, str(failure)))
        else:
            problems.append((note.name, f"field {note.name!r} {failure}"))
    # Failures without a note come from AgentMessage.__init__, that is, from
    # its validators, which raise ProtocolErrors naming their field.
    problems.extend((getattr(failure, "field", None), str(failure)) for failure in without)
    msg = "cannot decode AgentMessage: " + "; ".join(text for _, text in problems)
    return ProtocolError(msg, field=problems[0][0])


def unstructure(message: AgentMessage) -> dict[str, Any]:
    """Return the wire form of *message*: a dict of plain JSON values.

    Args:
        message: the message to convert.

    Returns:
        A new dict with every field; ``content`` as plain dicts and lists,
        ``type`` as its value and ``priority`` as its name.
    """
    result: dict[str, Any] = _converter.unstructure(message, unstructure_as=AgentMessage)
    return result


def structure(data: Mapping[str, Any]) -> AgentMessage:
    """Build a message from its wire form, a dict as `json.loads` returns it.

    Args:
        data: every field of the message, in the form `unstructure` returns.
            Unknown keys are ignored.

    Returns:
        The message, its content frozen.

    Raises:
        ProtocolError: *data* is not a mapping, misses a field, has a value of
            the wrong type or outside its enum, or has a malformed or
            unsupported ``protocol_version``. ``field`` names the (first) bad
            field; the message names every one.
    """
    if not isinstance(data, Mapping):
        msg = (
            f"cannot decode AgentMessage: expected a JSON object, got "
            f"{_describe(data)}; send one JSON object per message"
        )
        raise ProtocolError(msg)
    # The version says how to read the rest, so it is checked first: a
    # message of another major version may be shaped differently, and its
    # missing or retyped fields would hide the real problem.
    if "protocol_version" in data:
        problem = _version_problem(data["protocol_version"])
        if problem is not None:
            msg = f"cannot decode AgentMessage: {problem}"
            raise ProtocolError(msg, field="protocol_version")
    missing = [name for name in _FIELD_NAMES if name not in data]
    if missing:
        names = ", ".join(repr(name) for name in missing)
        msg = (
            f"cannot decode AgentMessage: missing field(s) {names}; send every "
            "field, with null for no recipient or no correlation_id"
        )
        raise ProtocolError(msg, field=missing[0])
    try:
        return _converter.structure(data, AgentMessage)
    except ClassValidationError as error:
        raise _decode_error(error) from error


_JSON_STRING: Final = re.compile(rb'"(?:[^"\\]|\\.)*"')
_JSON_BRACKET: Final = re.compile(rb"[\[\]{}]")


def _json_depth(text: str | bytes | bytearray) -> int:
    """Return how deeply *text*'s containers nest, without recursion (strings skipped)."""
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text)
    depth = deepest = 0
    for bracket in _JSON_BRACKET.findall(_JSON_STRING.sub(b"", raw)):
        depth += 1 if bracket in (b"[", b"{") else -1
        deepest = max(deepest, depth)
    return deepest


def to_json(message: AgentMessage) -> str:
    """Encode *message* as one compact JSON object (ASCII, non-ASCII escaped).

    Args:
        message: the message to encode.

    Returns:
        The JSON text, which `from_json` decodes to an equal message.
    """
    return json.dumps(unstructure(message), allow_nan=False, separators=(",", ":"))


def from_json(text: str | bytes | bytearray) -> AgentMessage:
    """Decode a message from JSON text, as `to_json` writes it.

    Args:
        text: one JSON object; bytes are decoded as UTF-8 (or UTF-16/32).

    Returns:
        The message, its content frozen.

    Raises:
        ProtocolError: *text* is not str or bytes, is not valid JSON
            (``field`` is None), nests deeper than `MAX_DEPTH`, or `structure`
            refuses the object it holds.
    """
    if not isinstance(text, (str, bytes, bytearray)):
        msg = f"cannot decode AgentMessage: expected JSON text as str or bytes, got {_describe(text)}"
        raise ProtocolError(msg)
    try:
        data = json.loads(text)
    except RecursionError as error:
        # json's decoder recurses once per level: either the text nests far
        # deeper than MAX_DEPTH, or the caller had little stack left.
        depth = _json_depth(text) - 1  # the message object itself is not content
        if depth > MAX_DEPTH:
            msg = f"cannot decode AgentMessage: its content nests {depth} deep, over MAX_DEPTH ({MAX_DEPTH})"
        else:
            msg = (
                f"cannot decode AgentMessage: its content nests {depth} deep, within MAX_DEPTH, but the "
                "calling thread's stack is nearly exhausted; decode it from a shallower call"
            )
        raise ProtocolError(msg) from error
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError
        msg = (
            f"cannot decode AgentMessage: malformed JSON ({error}); send one JSON object per message, encoded as UTF-8"
        )
        raise ProtocolError(msg) from error
    return structure(data)
