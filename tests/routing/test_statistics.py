"""Routing's statistics snapshots are immutable all the way down, hashable, and equal when equal.

Every snapshot a router or pool answers with (`RouterStatistics`,
`RouteeStatistics`, `PoolStatistics`, `DrainResult`) is checked field by
field, recursively: only frozen attrs instances, tuples, frozensets and
scalars, so nothing a reader holds can change under it.
"""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from actors import (
    Actor,
    ActorRef,
    ActorSystem,
    AwaitStarted,
    ChildSpec,
    Drain,
    DrainResult,
    GetStatistics,
    Pool,
    PoolConfig,
    PoolStatistics,
    RouteeStatistics,
    Router,
    RouterStatistics,
)
from actors._core import FrozenDict
from tests.core.actors_for_tests import WAIT

_SCALARS = (int, float, str, bool, type(None))


class Echo(Actor):
    """Replies with the message."""

    def on_receive(self, message: Any) -> Any:
        return message


def mutable_parts(value: Any, where: str = "snapshot") -> list[str]:
    """Return where, inside `value`, something mutable is held (empty when it is immutable all the way down)."""
    if isinstance(value, (*_SCALARS, ActorRef)):
        return []
    if isinstance(value, (tuple, frozenset)):
        return [part for i, item in enumerate(value) for part in mutable_parts(item, f"{where}[{i}]")]
    if isinstance(value, FrozenDict):
        return [part for key, item in value.items() for part in mutable_parts(item, f"{where}[{key!r}]")]
    if attrs.has(type(value)):
        found = [] if _is_frozen(value) else [f"{where}: {type(value).__name__} is not frozen"]
        for field in attrs.fields(type(value)):
            found += mutable_parts(getattr(value, field.name), f"{where}.{field.name}")
        return found
    return [f"{where}: {type(value).__name__} {value!r}"]


def _is_frozen(value: Any) -> bool:
    field = attrs.fields(type(value))[0]
    try:
        setattr(value, field.name, getattr(value, field.name))
    except attrs.exceptions.FrozenInstanceError:
        return True
    return False


def test_the_checker_finds_a_list_or_dict_inside_a_snapshot() -> None:
    @attrs.define
    class Loose:
        items: list[int]
        by_name: dict[str, int]

    assert mutable_parts(Loose([1], {"a": 1})) == [
        "snapshot: Loose is not frozen",
        "snapshot.items: list [1]",
        "snapshot.by_name: dict {'a': 1}",
    ]


def test_a_routers_snapshots_are_immutable_hashable_and_equal_when_equal(system: ActorSystem, mode: str) -> None:
    refs = [system.spawn(Echo, mode=mode) for _ in range(3)]
    router = system.spawn(Router, refs, mode=mode, strategy="least_connections")
    for i in range(6):
        assert router.ask(i, timeout=WAIT) == i
    first = router.ask(GetStatistics(), timeout=WAIT)
    again = router.ask(GetStatistics(), timeout=WAIT)
    assert isinstance(first, RouterStatistics)
    assert mutable_parts(first) == []
    assert first == again
    assert hash(first) == hash(again)
    assert len({first, again}) == 1
    routee = first.routees[0]
    assert isinstance(routee, RouteeStatistics)
    assert hash(routee) == hash(again.routees[0])
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        routee.processed = 0  # type: ignore[misc]
    with pytest.raises(AttributeError):
        first.routees.append(routee)  # type: ignore[attr-defined]
    assert first != attrs.evolve(first, processed=first.processed + 1)


def test_a_pools_snapshot_is_an_immutable_hashable_router_snapshot(system: ActorSystem, mode: str) -> None:
    pool = system.spawn(Pool, ChildSpec(Echo, mode=mode), config=PoolConfig(min_size=2, max_size=2), mode=mode)
    pool.ask(AwaitStarted(), timeout=WAIT)
    for i in range(4):
        assert pool.ask(i, timeout=WAIT) == i
    first = pool.ask(GetStatistics(), timeout=WAIT)
    again = pool.proxy().statistics().get(timeout=WAIT)
    assert isinstance(first, PoolStatistics)
    assert isinstance(first, RouterStatistics)
    assert mutable_parts(first) == []
    assert first == again
    assert hash(first) == hash(again)
    assert (first.strategy, first.processed, first.size) == ("least_connections", 4, 2)
    assert first.average_response_time == first.average_operation_time
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        first.refused = 1  # type: ignore[misc]
    drained = pool.ask(Drain(timeout=WAIT), timeout=WAIT)
    assert drained == DrainResult(drained=True, abandoned=0)
    assert mutable_parts(drained) == []
    assert hash(drained) == hash(DrainResult(drained=True, abandoned=0))


def test_a_snapshot_built_from_a_list_of_routees_holds_a_tuple() -> None:
    snapshot = RouterStatistics(
        strategy="round_robin",
        routees=[],
        waiting=0,
        processed=0,
        failed=0,
        average_response_time=0.0,
        dead_routees_removed=0,
    )
    assert snapshot.routees == ()
    assert hash(snapshot) == hash(attrs.evolve(snapshot))
