"""Every attrs class `actors` exports: a hypothesis strategy, frozen all the way down, equal when equal."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any, cast

import attrs
import pytest
from attrs.exceptions import FrozenError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors import Actor, ActorSystem
from actors._core import FrozenDict
from actors.protocol import FrozenMapping
from tests.strategies import public_attrs_classes, public_instances

CLASSES = public_attrs_classes()

# Configuration that holds callables (a strategy, a key function, a decider,
# a random source) compares by identity there, so it is not hashable by value.
_HOLDS_CALLABLES = {"Admission", "Backoff", "PriorityMailbox", "BoundedMailbox", "SupervisionPolicy", "PoolConfig"}


class _Idle(Actor):
    pass


@pytest.fixture(scope="module")
def refs() -> Iterator[st.SearchStrategy[Any]]:
    with ActorSystem(name="messages") as system:
        yield st.sampled_from([system.spawn(_Idle) for _ in range(2)])


def _mutable_parts(value: object, path: str = "") -> Iterator[str]:
    """Yield the path of every mutable container reachable through attrs fields, tuples and mappings."""
    if isinstance(value, (dict, list, set, bytearray)):
        yield path or "<root>"
    elif attrs.has(type(value)):
        for field in attrs.fields(cast("type[attrs.AttrsInstance]", type(value))):
            yield from _mutable_parts(getattr(value, field.name), f"{path}.{field.name}")
    elif isinstance(value, (tuple, frozenset)):
        for index, item in enumerate(value):
            yield from _mutable_parts(item, f"{path}[{index}]")
    elif isinstance(value, FrozenMapping | FrozenDict):
        for key, item in value.items():
            yield from _mutable_parts(item, f"{path}[{key!r}]")


def _rebuilt(instance: Any) -> Any:
    """Return a new instance with the same fields (`attrs.evolve`, typed for any attrs class)."""
    evolve: Callable[[Any], Any] = attrs.evolve
    return evolve(instance)


def test_there_are_public_attrs_classes_to_check() -> None:
    assert len(CLASSES) > 40


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
def test_every_public_attrs_class_has_a_strategy_and_is_frozen_all_the_way_down(
    cls: type, refs: st.SearchStrategy[Any]
) -> None:
    by_identity = cast("Any", cls).__eq__ is object.__eq__

    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(public_instances(cls, refs))
    def check(instance: Any) -> None:
        assert instance.__class__ is cls
        fields = attrs.fields(cast("type[attrs.AttrsInstance]", cls))
        if fields:
            with pytest.raises(FrozenError):
                setattr(instance, fields[0].name, None)
        assert list(_mutable_parts(instance)) == []
        if by_identity:  # a handle (it holds a future): equal only to itself
            assert instance == instance  # noqa: PLR0124
            assert _rebuilt(instance) != instance
            return
        assert _rebuilt(instance) == instance
        assert copy.copy(instance) == instance
        if cls.__name__ not in _HOLDS_CALLABLES:
            assert hash(_rebuilt(instance)) == hash(instance)
        assert repr(instance)

    check()
