"""FrozenDict: the immutable, hashable mapping statistics snapshots hold."""

from __future__ import annotations

import copy
import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors._core import FrozenDict

contents = st.dictionaries(st.text(max_size=5) | st.integers(), st.integers() | st.text(max_size=5) | st.none())


@given(contents)
def test_a_frozen_dict_equals_and_reads_as_the_dict_it_was_made_from(items: dict[object, object]) -> None:
    frozen = FrozenDict(items)
    assert frozen == items
    assert items == frozen
    assert dict(frozen) == items
    assert list(frozen) == list(items)
    assert len(frozen) == len(items)
    assert all(frozen[key] == value and key in frozen for key, value in items.items())
    assert FrozenDict(items.items()) == frozen


@given(contents)
def test_equal_frozen_dicts_hash_alike_whatever_their_order(items: dict[object, object]) -> None:
    reordered = dict(reversed(list(items.items())))
    assert FrozenDict(items) == FrozenDict(reordered)
    assert hash(FrozenDict(items)) == hash(FrozenDict(reordered))


@given(contents)
def test_a_frozen_dict_survives_pickle_and_copy(items: dict[object, object]) -> None:
    frozen = FrozenDict(items)
    for twin in (pickle.loads(pickle.dumps(frozen)), copy.copy(frozen), copy.deepcopy(frozen)):
        assert isinstance(twin, FrozenDict)
        assert twin == frozen
        assert hash(twin) == hash(frozen)


def test_a_frozen_dict_refuses_every_change_and_does_not_follow_its_source() -> None:
    source = {"a": 1}
    frozen = FrozenDict(source)
    source["a"] = 2
    assert frozen == {"a": 1}
    with pytest.raises(TypeError):
        frozen["a"] = 3  # type: ignore[index]  # immutable: the point
    with pytest.raises(TypeError):
        del frozen["a"]  # type: ignore[attr-defined]  # immutable: the point
    with pytest.raises(AttributeError, match="immutable"):
        frozen._items = {}
    assert frozen == {"a": 1}


def test_a_frozen_dict_is_not_equal_to_what_is_not_a_mapping() -> None:
    assert FrozenDict({1: 2}) != [(1, 2)]
    assert FrozenDict() == {}
    assert FrozenDict() != FrozenDict({1: 2})
