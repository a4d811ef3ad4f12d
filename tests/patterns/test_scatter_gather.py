"""Scatter-gather: all, first-k, quorum, timeout, tail-chopping backups; every result says what is missing."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from actors import CoordinationInputError
from patterns.scatter_gather import scatter_gather
from tests.core.actors_for_tests import WAIT, Gate
from tests.patterns.agents import Echo

if TYPE_CHECKING:
    from collections.abc import Iterator

    from actors import ActorRef, ActorSystem, ManualClock


@pytest.fixture
def gates() -> Iterator[list[Gate]]:
    made: list[Gate] = []
    yield made
    for g in made:
        g.released.set()


def targets(
    system: ActorSystem, mode: str, replies: list[Any], held: dict[int, Gate] | None = None
) -> list[ActorRef[Any]]:
    held = held or {}
    refs = []
    for i, reply in enumerate(replies):
        fn = (
            (lambda _m, r=reply: (_ for _ in ()).throw(ValueError(r)))
            if isinstance(reply, Exception)
            else (lambda _m, r=reply: r)
        )
        # A held target gets a thread of its own: it must not hold a dispatcher the others need.
        gates = {"q": held[i]} if i in held else {}
        refs.append(system.spawn(Echo, fn, gates, mode="thread" if gates else mode))
    return refs


def test_all_waits_for_every_reply(system: ActorSystem, mode: str) -> None:
    result = scatter_gather(targets(system, mode, [1, 2, 3]), "q").get(timeout=WAIT)
    assert (result.complete, result.reason, sorted(result.values), result.missing) == (True, "met", [1, 2, 3], ())


def test_first_k_ends_with_k_replies_and_names_the_missing(system: ActorSystem, mode: str, gates: list[Gate]) -> None:
    held = {0: Gate(), 3: Gate()}
    gates.extend(held.values())
    refs = targets(system, mode, [1, 2, 3, 4], held)
    result = scatter_gather(refs, "q", finish="first", k=2).get(timeout=WAIT)
    assert result.complete
    assert sorted(result.values) == [2, 3]
    assert set(result.missing) == {refs[0], refs[3]}


def test_quorum_needs_a_majority_by_default_and_ends_once_it_is_out_of_reach(system: ActorSystem, mode: str) -> None:
    ok = scatter_gather(targets(system, mode, [1, ValueError("x"), 3]), "q", finish="quorum").get(timeout=WAIT)
    assert (ok.complete, ok.needed, sorted(ok.values)) == (True, 2, [1, 3])
    bad = scatter_gather(targets(system, mode, [ValueError("a"), ValueError("b"), 3]), "q", finish="quorum")
    result = bad.get(timeout=WAIT)
    assert (result.complete, result.reason) == (False, "unreachable")
    assert all(isinstance(e, ValueError) for _, e in result.failures)


def test_the_timeout_ends_the_gather_with_what_arrived(
    system: ActorSystem, mode: str, clock: ManualClock, gates: list[Gate]
) -> None:
    held = {1: Gate(), 2: Gate()}
    gates.extend(held.values())
    refs = targets(system, mode, [1, 2, 3], held)
    future = scatter_gather(refs, "q", timeout=5.0)
    held[1].wait_entered()
    held[2].wait_entered()
    refs[0].ask("ping", timeout=WAIT)  # its reply to "q", and the gather's callback on it, came first
    clock.advance(5.0)
    result = future.get(timeout=WAIT)
    assert (result.complete, result.reason, result.values) == (False, "timeout", [1])
    assert set(result.missing) == {refs[1], refs[2]}


def test_a_backup_request_goes_to_the_next_target_after_the_delay(
    system: ActorSystem, mode: str, clock: ManualClock, gates: list[Gate]
) -> None:
    held = {0: Gate()}
    gates.extend(held.values())
    refs = targets(system, mode, ["primary", "backup", "spare"], held)
    future = scatter_gather(refs, "q", finish="first", backup_after=0.5)
    held[0].wait_entered()
    assert not future.done()
    clock.advance(0.5)
    result = future.get(timeout=WAIT)
    assert (result.values, result.backups_sent) == (["backup"], 1)
    assert set(result.missing) == {refs[0], refs[2]}


def test_a_failed_target_hands_its_turn_to_the_next_without_waiting_for_the_timer(
    system: ActorSystem, mode: str
) -> None:
    refs = targets(system, mode, [ValueError("down"), "second"])
    result = scatter_gather(refs, "q", finish="first", backup_after=60.0).get(timeout=WAIT)
    assert result.values == ["second"]
    assert len(result.failures) == 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"finish": "some"}, "finish must be"),
        ({"finish": "first", "k": 4}, r"k must be an int in 1\.\.3"),
        ({"finish": "all", "k": 2}, "takes no k"),
        ({"timeout": 0}, "timeout must be > 0"),
        ({"backup_after": -1}, "backup_after must be > 0"),
        ({"initial": 0}, r"initial must be an int in 1\.\.3"),
    ],
)
def test_bad_gathers_are_named(system: ActorSystem, kwargs: dict[str, Any], match: str) -> None:
    refs = targets(system, "pooled", [1, 2, 3])
    with pytest.raises(CoordinationInputError, match=match):
        scatter_gather(refs, "q", **kwargs)
    with pytest.raises(CoordinationInputError, match="at least one target"):
        scatter_gather([], "q")
