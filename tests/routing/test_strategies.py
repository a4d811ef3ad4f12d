"""Routing strategies as pure functions of their routees' load: hypothesis properties.

The strategies are exercised on `Routee` objects over stand-in refs, so that
each property is checked on thousands of routing decisions without actors;
`test_routing.py` checks the same strategies end to end through real routers.
"""

from __future__ import annotations

import math
import random
import threading
from collections import Counter
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors import (
    STRATEGIES,
    ConsistentHashRouting,
    FastestResponseRouting,
    LeastConnectionsRouting,
    ManualClock,
    NoRouteeError,
    RandomRouting,
    RoundRobinRouting,
    Routee,
    RoutingStrategy,
    SmallestMailboxRouting,
    StrategyError,
    TailChoppingRouting,
    WeightedCapabilitiesRouting,
    routing_strategy,
)


class _Cell:
    """What a strategy reads of a routee's cell: its queue, its scheduling lock, whether it lives."""

    def __init__(self, queued: int = 0, *, busy: bool = False) -> None:
        self.queue = [None] * queued
        self.sched = threading.Lock()
        if busy:
            self.sched.acquire()
        self.alive = True


class _Ref:
    def __init__(self, name: str, cell: _Cell | None = None) -> None:
        self.actor_urn = name
        self.actor_inbox = cell or _Cell()

    def __str__(self) -> str:
        return self.actor_urn


def make_routees(names: list[str], **declared: Any) -> tuple[Routee, ...]:
    capabilities = declared.get("capabilities") or [frozenset()] * len(names)
    weights = declared.get("weights") or [1.0] * len(names)
    return tuple(
        Routee(_Ref(name), frozenset(caps), weight, 0.0)  # type: ignore[arg-type]
        for name, caps, weight in zip(names, capabilities, weights, strict=True)
    )


def load(routee: Routee, count: int, since: float = 0.0) -> None:
    """Put `count` messages in flight on `routee`, handed over at clock time `since`."""
    for _ in range(count):
        routee.started[object()] = since  # type: ignore[index]


def attached(strategy: RoutingStrategy, *, seed: int = 0, clock: ManualClock | None = None) -> RoutingStrategy:
    table = SimpleNamespace(rng=random.Random(seed), ref="router-under-test", clock=clock or ManualClock())
    strategy.attach(table)  # type: ignore[arg-type]
    return strategy


def keyed(key: str) -> Any:
    return SimpleNamespace(hash_key=key)


routee_names = st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=16, unique=True)


# -- round robin --------------------------------------------------------------------------------


@given(n=st.integers(1, 20), k=st.integers(1, 40), already_routed=st.integers(0, 1000))
def test_round_robin_is_exactly_fair_over_k_times_n_messages(n: int, k: int, already_routed: int) -> None:
    strategy = attached(RoundRobinRouting())
    routees = make_routees([f"r{i}" for i in range(n)])
    for _ in range(already_routed):  # wherever the turn stands, any k*n consecutive messages are fair
        strategy.select(None, routees)
    counts = Counter(strategy.select(i, routees).key for i in range(k * n))
    assert counts == {r.key: k for r in routees}


def test_round_robin_stays_exactly_fair_when_many_threads_route_at_once() -> None:
    strategy = attached(RoundRobinRouting())
    routees = make_routees([f"r{i}" for i in range(7)])
    picks: list[list[str]] = [[] for _ in range(4)]
    start = threading.Barrier(4)

    def route(out: list[str]) -> None:
        start.wait()
        out.extend(strategy.select(None, routees).key for _ in range(7 * 500))

    threads = [threading.Thread(target=route, args=(out,)) for out in picks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert Counter(key for out in picks for key in out) == {r.key: 4 * 500 for r in routees}


# -- consistent hash --------------------------------------------------------------------------------


_KEYS = [f"session-{i}" for i in range(2000)]


def _owners(strategy: ConsistentHashRouting, routees: tuple[Routee, ...]) -> dict[str, str]:
    strategy.routees_changed(routees)
    return {key: strategy.select(keyed(key), routees).key for key in _KEYS}


@settings(max_examples=40, deadline=None)
@given(names=st.lists(st.uuids().map(str), min_size=2, max_size=13, unique=True))
def test_consistent_hash_moves_about_one_nth_of_the_keys_when_a_routee_joins(names: list[str]) -> None:
    *old, newcomer = names
    strategy = ConsistentHashRouting()
    routees = make_routees(old)
    before = _owners(strategy, routees)
    after = _owners(strategy, (*routees, *make_routees([newcomer])))
    moved = [key for key in _KEYS if before[key] != after[key]]
    # Only keys that the newcomer now owns move, and about 1/n of them do
    # (160 points per routee: the share's spread is ~10% of it; bounds are ~5 sigma).
    assert all(after[key] == newcomer for key in moved)
    ideal = len(_KEYS) / len(names)
    assert 0.5 * ideal <= len(moved) <= 1.5 * ideal


@settings(max_examples=40, deadline=None)
@given(names=st.lists(st.uuids().map(str), min_size=2, max_size=13, unique=True), leaver=st.integers(0, 12))
def test_consistent_hash_moves_only_the_leavers_keys_about_one_nth_when_a_routee_leaves(
    names: list[str], leaver: int
) -> None:
    gone = names[leaver % len(names)]
    strategy = ConsistentHashRouting()
    routees = make_routees(names)
    before = _owners(strategy, routees)
    after = _owners(strategy, tuple(r for r in routees if r.key != gone))
    moved = [key for key in _KEYS if before[key] != after[key]]
    assert set(moved) == {key for key in _KEYS if before[key] == gone}
    ideal = len(_KEYS) / len(names)
    assert 0.5 * ideal <= len(moved) <= 1.5 * ideal


@given(names=routee_names, key=st.text())
def test_consistent_hash_sends_a_key_to_the_same_routee_every_time(names: list[str], key: str) -> None:
    strategy = ConsistentHashRouting()
    routees = make_routees(names)
    strategy.routees_changed(routees)
    assert len({strategy.select(keyed(key), routees).key for _ in range(5)}) == 1


def test_consistent_hash_given_part_of_the_routees_picks_the_next_one_along_the_ring() -> None:
    strategy = ConsistentHashRouting()
    routees = make_routees(["a", "b", "c", "d"])
    strategy.routees_changed(routees)
    for key in _KEYS[:200]:
        owner = strategy.select(keyed(key), routees)
        others = tuple(r for r in routees if r is not owner)
        assert strategy.select(keyed(key), others) in others
        assert strategy.select(keyed(key), (owner,)) is owner


# -- least connections, smallest mailbox, fastest response -----------------------------------------


@given(loads=st.lists(st.integers(0, 50), min_size=1, max_size=20), picks=st.integers(1, 30))
def test_least_connections_never_picks_a_routee_busier_than_the_least_busy(loads: list[int], picks: int) -> None:
    strategy = attached(LeastConnectionsRouting())
    routees = make_routees([f"r{i}" for i in range(len(loads))])
    for routee, count in zip(routees, loads, strict=True):
        load(routee, count)
    for _ in range(picks):
        assert strategy.select(None, routees).in_flight == min(loads)


@given(n=st.integers(1, 12))
def test_least_connections_spreads_ties_in_turn(n: int) -> None:
    strategy = attached(LeastConnectionsRouting())
    routees = make_routees([f"r{i}" for i in range(n)])
    assert Counter(strategy.select(None, routees).key for _ in range(3 * n)) == {r.key: 3 for r in routees}


@given(sizes=st.lists(st.tuples(st.integers(0, 30), st.booleans()), min_size=1, max_size=12))
def test_smallest_mailbox_picks_a_routee_with_the_fewest_waiting(sizes: list[tuple[int, bool]]) -> None:
    strategy = attached(SmallestMailboxRouting())
    routees = tuple(
        Routee(_Ref(f"r{i}", _Cell(queued, busy=busy)), frozenset(), 1.0, 0.0)  # type: ignore[arg-type]
        for i, (queued, busy) in enumerate(sizes)
    )
    smallest = min(queued + busy for queued, busy in sizes)
    assert strategy.select(None, routees).mailbox_size == smallest


@given(averages=st.lists(st.floats(0, 100, allow_nan=False), min_size=1, max_size=12))
def test_fastest_response_picks_the_lowest_moving_average(averages: list[float]) -> None:
    strategy = attached(FastestResponseRouting())
    routees = make_routees([f"r{i}" for i in range(len(averages))])
    for routee, average in zip(routees, averages, strict=True):
        routee.average_response_time = average
    assert strategy.select(None, routees).average_response_time == min(averages)


def test_fastest_response_stops_choosing_a_routee_whose_reply_is_overdue() -> None:
    clock = ManualClock()
    strategy = attached(FastestResponseRouting(), clock=clock)
    fast_but_stuck, steady = make_routees(["stuck", "steady"])
    fast_but_stuck.average_response_time, steady.average_response_time = 0.01, 0.5
    load(fast_but_stuck, 1, since=clock.now())
    assert strategy.select(None, (fast_but_stuck, steady)) is fast_but_stuck
    clock.advance(2.0)  # its one message in flight has now waited 2 s, far beyond its 10 ms average
    assert strategy.select(None, (fast_but_stuck, steady)) is steady


# -- weighted capabilities, random ----------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(weights=st.lists(st.floats(0.1, 10), min_size=2, max_size=6), seed=st.integers(0, 2**32))
def test_weighted_choice_converges_to_the_weights(weights: list[float], seed: int) -> None:
    draws = 20_000
    strategy = attached(WeightedCapabilitiesRouting(), seed=seed)
    routees = make_routees([f"r{i}" for i in range(len(weights))], weights=weights)
    counts = Counter(strategy.select(None, routees).key for _ in range(draws))
    total = sum(weights)
    for routee, weight in zip(routees, weights, strict=True):
        p = weight / total
        # A binomial count: within 5 standard deviations (a false alarm ~1 in 3.5 million).
        assert abs(counts[routee.key] / draws - p) <= 5 * math.sqrt(p * (1 - p) / draws)


@given(
    offers=st.lists(st.frozensets(st.sampled_from("abcde"), max_size=4), min_size=1, max_size=8),
    required=st.frozensets(st.sampled_from("abcde"), max_size=3),
    seed=st.integers(0, 2**32),
)
def test_weighted_capabilities_routes_only_to_routees_having_every_required_capability(
    offers: list[frozenset[str]], required: frozenset[str], seed: int
) -> None:
    strategy = attached(WeightedCapabilitiesRouting(), seed=seed)
    routees = make_routees([f"r{i}" for i in range(len(offers))], capabilities=offers)
    message = SimpleNamespace(required_capabilities=required)
    if any(required <= offer for offer in offers):
        for _ in range(20):
            assert required <= strategy.select(message, routees).capabilities
    else:
        with pytest.raises(NoRouteeError) as raised:
            strategy.select(message, routees)
        text = str(raised.value)
        assert "router-under-test" in text
        assert str(sorted(required)) in text
        for routee in routees:  # the error says what every routee offers
            assert f"{routee.key}: {sorted(routee.capabilities)}" in text


def test_weighted_capabilities_takes_the_requirement_from_a_function() -> None:
    strategy = attached(WeightedCapabilitiesRouting(requires=lambda message: message["needs"]))
    routees = make_routees(["py", "sql"], capabilities=[{"python"}, {"sql"}])
    assert strategy.select({"needs": ["sql"]}, routees).key == "sql"


@given(n=st.integers(1, 8), seed=st.integers(0, 2**32))
def test_random_routing_is_reproducible_from_its_seed(n: int, seed: int) -> None:
    routees = make_routees([f"r{i}" for i in range(n)])
    first = attached(RandomRouting(), seed=seed)
    second = attached(RandomRouting(), seed=seed)
    assert [first.select(None, routees).key for _ in range(50)] == [second.select(None, routees).key for _ in range(50)]


# -- names and instances -------------------------------------------------------------------------------


def test_every_strategy_name_builds_its_strategy() -> None:
    for name, cls in STRATEGIES.items():
        strategy = routing_strategy(name)
        assert isinstance(strategy, cls)
        assert strategy.name == name


def test_unknown_and_incomplete_strategy_names_say_what_to_do() -> None:
    with pytest.raises(StrategyError, match=r"unknown routing strategy 'fastest'.*round_robin"):
        routing_strategy("fastest")
    with pytest.raises(StrategyError, match=r"TailChoppingRouting\(interval="):
        routing_strategy("tail_chopping")
    with pytest.raises(TypeError, match="RoutingStrategy instance"):
        routing_strategy(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="interval"):
        TailChoppingRouting(interval=0)


def test_a_strategy_instance_cannot_serve_two_routers() -> None:
    strategy = attached(RoundRobinRouting())
    with pytest.raises(StrategyError, match="give each router its own instance"):
        attached(strategy)
