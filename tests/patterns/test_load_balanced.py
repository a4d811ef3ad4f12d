"""Load-balanced: through a Pool, by work pulling over refs, or a Submitter; results in order, failures re-raised."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import pytest

from actors import ChildSpec, CoordinationInputError, Future, Pool, PoolConfig
from patterns.load_balanced import load_balanced
from tests.core.actors_for_tests import WAIT, Gate
from tests.patterns.agents import Echo

if TYPE_CHECKING:
    from actors import ActorSystem


def test_a_pool_spreads_the_items_and_results_keep_input_order(system: ActorSystem, mode: str) -> None:
    pool = system.spawn(
        Pool,
        ChildSpec(Echo, args=(lambda x: x * x,), mode=mode),
        config=PoolConfig(min_size=3, max_size=3, overflow="queue"),
    )
    assert load_balanced(pool, range(20), max_in_flight=4).get(timeout=WAIT) == [x * x for x in range(20)]


def test_work_pulling_gives_more_to_whoever_is_free(system: ActorSystem, mode: str) -> None:
    gate = Gate()
    taken: list[int] = []
    nine = threading.Event()

    def fast_work(x: int) -> int:
        taken.append(x)
        if len(taken) == 9:
            nine.set()
        return x

    try:
        slow = system.spawn(Echo, None, {0: gate}, mode="thread")  # held: not on a dispatcher
        fast = system.spawn(Echo, fast_work, mode=mode)
        future = load_balanced([slow, fast], range(10))
        # The fast worker takes every other item while the slow one holds item 0.
        assert nine.wait(WAIT)
        assert not future.done()
        gate.released.set()
        assert future.get(timeout=WAIT) == list(range(10))
        assert sorted(taken) == list(range(1, 10))
    finally:
        gate.released.set()


def test_a_stopped_worker_s_item_goes_back_to_the_others(system: ActorSystem, mode: str) -> None:
    alive = system.spawn(Echo, lambda x: x + 100, mode=mode)
    dead = system.spawn(Echo, mode=mode)
    dead.stop()
    assert load_balanced([dead, alive], range(5)).get(timeout=WAIT) == [100, 101, 102, 103, 104]


def test_failed_items_are_re_raised_together_with_the_results_that_arrived(system: ActorSystem, mode: str) -> None:
    worker = system.spawn(Echo, mode=mode)
    with pytest.raises(ExceptionGroup) as caught:
        load_balanced([worker], ["a", "fail", "b", "fail"]).get(timeout=WAIT)
    assert len(caught.value.exceptions) == 2
    assert caught.value.results == ["a", None, "b", None]  # type: ignore[attr-defined]


class Direct:
    """A Submitter (the Coordinator's seam) that answers at once: the trampoline keeps the stack flat."""

    def submit(self, item: int) -> Future[int]:
        future: Future[int] = Future()
        future.set(item + 1)
        return future


def test_a_submitter_is_the_seam_for_a_coordinator() -> None:
    assert load_balanced(Direct(), range(5000)).get(timeout=WAIT) == list(range(1, 5001))


def test_bad_balancing_is_named(system: ActorSystem) -> None:
    with pytest.raises(CoordinationInputError, match="at least one worker"):
        load_balanced([], [1])
    with pytest.raises(CoordinationInputError, match="per_worker must be an int >= 1"):
        load_balanced([system.spawn(Echo)], [1], per_worker=0)
    with pytest.raises(CoordinationInputError, match="needs a Pool/Router ref"):
        load_balanced("nobody", [1])  # type: ignore[arg-type]
