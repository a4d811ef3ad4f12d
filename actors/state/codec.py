"""The converter of the state types: entries, tombstones and the store's messages, to plain data and back.

`unstructure` turns any state attrs class (`Entry`, `Tombstone`, `SetEntry`,
`WriteBatch`, `StateEvent`, `ConflictRecord`...) into dicts, lists and JSON
scalars (enums by value, `FrozenMapping` and `FrozenDict` as dicts);
`structure` builds the class again from that form, as ``json.loads`` returns
it, through the class's own converters (so a value comes back frozen and
checked against `actors.protocol.MAX_DEPTH`). The SQLite backend persists
entries and tombstones through it (`actors.state.persistence`).

Threading: pure functions over a private converter built at import.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from typing import Any, Final, TypeVar

import cattrs
from cattrs.errors import ClassValidationError
from cattrs.gen import make_dict_unstructure_fn, override

from actors._core import FrozenDict
from actors.errors import ProtocolError
from actors.protocol import FrozenMapping
from actors.state.conflicts import Conflict
from actors.state.entry import Entry, freeze_metadata

__all__ = ["structure", "unstructure"]

T = TypeVar("T")


def _thaw(value: Any) -> Any:
    """Return a frozen JSON value as plain dicts and lists (JSON's own shapes)."""
    if isinstance(value, Mapping):
        return {key: _thaw(item) for key, item in value.items()}
    if isinstance(value, tuple):
        return [_thaw(item) for item in value]
    return value


def _structure_frozen_mapping(value: object, _: type) -> FrozenMapping:
    return freeze_metadata(value)


def _is_frozen_dict(type_: Any) -> bool:
    return typing.get_origin(type_) is FrozenDict or type_ is FrozenDict


def _structure_frozen_dict(value: object, type_: Any) -> FrozenDict[Any, Any]:
    if not isinstance(value, Mapping):
        msg = f"expected a mapping, got {value!r}"
        raise TypeError(msg)
    args = typing.get_args(type_) or (Any, Any)
    return FrozenDict({_converter.structure(k, args[0]): _converter.structure(v, args[1]) for k, v in value.items()})


def _unstructure_frozen_dict(mapping: FrozenDict[Any, Any]) -> dict[Any, Any]:
    return {_converter.unstructure(key): _converter.unstructure(item) for key, item in mapping.items()}


def _make_converter() -> cattrs.Converter:
    converter = cattrs.Converter(detailed_validation=True)
    converter.register_unstructure_hook(FrozenMapping, _thaw)
    converter.register_structure_hook(FrozenMapping, _structure_frozen_mapping)
    converter.register_unstructure_hook_func(_is_frozen_dict, _unstructure_frozen_dict)
    converter.register_structure_hook_func(_is_frozen_dict, _structure_frozen_dict)
    converter.register_structure_hook(typing.Any, lambda value, _: value)  # the class's converter freezes it
    # A conflict's unknown merge base (ABSENT) is left out, and structures back to the default, ABSENT.
    converter.register_unstructure_hook(
        Conflict, make_dict_unstructure_fn(Conflict, converter, base=override(omit_if_default=True))
    )
    # An entry's value is frozen JSON: thawed directly, without dispatching on its type.
    converter.register_unstructure_hook(
        Entry,
        make_dict_unstructure_fn(
            Entry, converter, value=override(unstruct_hook=_thaw), metadata=override(unstruct_hook=_thaw)
        ),
    )
    return converter


_converter: Final = _make_converter()


def unstructure(value: Any) -> Any:
    """Return *value* (a state attrs class) as plain data: dicts, JSON scalars, lists or tuples (JSON arrays)."""
    return _converter.unstructure(value)


def structure(data: Any, cls: type[T]) -> T:
    """Build a *cls* from the plain data `unstructure` gave (or ``json.loads`` of it).

    Raises:
        ProtocolError: *data* is not a valid *cls*; the message names the class
            and every bad field.
    """
    try:
        return _converter.structure(data, cls)
    except ClassValidationError as error:
        problems = "; ".join(f"{note.name}: {failure}" for failure, note in error.group_exceptions()[0])
        others = "; ".join(str(failure) for failure in error.group_exceptions()[1])
        msg = f"cannot build {cls.__name__} from {data!r}: {problems or others}"
        first = error.group_exceptions()[0]
        raise ProtocolError(msg, field=first[0][1].name if first else None) from error
