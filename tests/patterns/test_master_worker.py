"""Master-worker: shares by map or splitter, results by worker, every failure re-raised, dead workers' work moved."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from actors import CoordinationInputError, TaskTimeoutError
from patterns.master_worker import master_worker
from tests.core.actors_for_tests import WAIT, Gate
from tests.patterns.agents import Echo

if TYPE_CHECKING:
    from actors import ActorSystem, ManualClock


def test_each_worker_gets_its_share_and_results_come_back_by_worker(system: ActorSystem, mode: str) -> None:
    workers = {name: system.spawn(Echo, lambda m, n=name: f"{n}:{m}", mode=mode) for name in ("hunter", "viz")}
    results = master_worker(workers, {"hunter": "insights", "viz": "charts"}).get(timeout=WAIT)
    assert results == {"hunter": "hunter:insights", "viz": "viz:charts"}


def test_a_splitter_shares_the_items_over_the_workers(system: ActorSystem, mode: str) -> None:
    workers = {i: system.spawn(Echo, sum, mode=mode) for i in range(3)}
    assert master_worker(workers, items=range(10)).get(timeout=WAIT) == {0: 0 + 3 + 6 + 9, 1: 1 + 4 + 7, 2: 2 + 5 + 8}


def test_every_failure_reaches_the_caller_in_an_exception_group(system: ActorSystem, mode: str) -> None:
    workers = {i: system.spawn(Echo, mode=mode) for i in range(4)}
    with pytest.raises(ExceptionGroup) as caught:
        master_worker(workers, {0: "ok", 1: "fail", 2: "fail", 3: "fine"}).get(timeout=WAIT)
    group = caught.value
    assert len(group.exceptions) == 2
    assert all(isinstance(e, ValueError) for e in group.exceptions)
    notes = sorted(n for e in group.exceptions for n in e.__notes__)
    assert "worker 1" in notes[0]
    assert "worker 2" in notes[1]
    assert group.results == {0: "ok", 3: "fine"}  # type: ignore[attr-defined]


def test_a_stopped_workers_share_goes_to_another_worker(system: ActorSystem, mode: str) -> None:
    log: list[Any] = []
    workers = {i: system.spawn(Echo, lambda m: m * 2, None, log, name=f"w{i}", mode=mode) for i in range(3)}
    workers[1].stop()
    assert master_worker(workers, {0: 1, 1: 2, 2: 3}).get(timeout=WAIT) == {0: 2, 1: 4, 2: 6}
    assert sorted(m for _, m in log) == [1, 2, 3]
    assert "w1" not in {name for name, _ in log}


def test_shares_still_out_at_the_timeout_fail_with_task_timeout_error(
    system: ActorSystem, mode: str, clock: ManualClock
) -> None:
    gate = Gate()
    try:
        workers = {0: system.spawn(Echo, mode=mode), 1: system.spawn(Echo, None, {"slow": gate}, mode="thread")}
        future = master_worker(workers, {0: "quick", 1: "slow"}, timeout=30.0)
        gate.wait_entered()
        workers[0].ask("ping", timeout=WAIT)  # its reply to "quick", and the master's callback on it, came first
        clock.advance(30.0)
        with pytest.raises(ExceptionGroup) as caught:
            future.get(timeout=WAIT)
        assert [type(e) for e in caught.value.exceptions] == [TaskTimeoutError]
        assert caught.value.results == {0: "quick"}  # type: ignore[attr-defined]
    finally:
        gate.released.set()


def test_bad_distributions_are_named(system: ActorSystem) -> None:
    workers = {"a": system.spawn(Echo)}
    with pytest.raises(CoordinationInputError, match="at least one worker"):
        master_worker({}, {})
    with pytest.raises(CoordinationInputError, match="exactly one"):
        master_worker(workers)
    with pytest.raises(CoordinationInputError, match=r"unknown worker\(s\) \['b'\]"):
        master_worker(workers, {"b": 1})
    with pytest.raises(CoordinationInputError, match="returned 2 shares for 1 workers"):
        master_worker(workers, items=[1, 2], splitter=lambda items, _n: [[i] for i in items])
    with pytest.raises(CoordinationInputError, match="timeout must be > 0"):
        master_worker(workers, {"a": 1}, timeout=0)
