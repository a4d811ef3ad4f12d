"""Consensus vote: threshold over cast or eligible, quorum, abstentions, weights, early decision, deadline."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors import CoordinationInputError
from patterns.consensus import Ballot, Tally, consensus_vote
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


def voters(
    system: ActorSystem, mode: str, ballots: dict[str, Any], held: dict[str, Gate] | None = None
) -> dict[str, ActorRef[Any]]:
    held = held or {}
    refs = {}
    for name, ballot in ballots.items():
        gates = {"q": held[name]} if name in held else {}
        # A held voter gets a thread of its own: it must not hold a dispatcher the others need.
        refs[name] = system.spawn(Echo, lambda _m, b=ballot: b, gates, mode="thread" if gates else mode)
    return refs


def test_abstentions_stay_out_of_the_denominator_over_votes_cast(system: ActorSystem, mode: str) -> None:
    ballots = {"a": True, "b": True, "c": False, **{f"x{i}": None for i in range(5)}}
    cast = consensus_vote(voters(system, mode, ballots), "q", threshold=0.6, basis="cast").get(timeout=WAIT)
    # Both yes ballots are needed (1 of 2 could still become 1 of 3 < 0.6); the rest may not have come.
    assert (cast.decided, cast.approved, cast.yes) == (True, True, 2)
    assert cast.no <= 1
    assert cast.abstain <= 5
    eligible = consensus_vote(voters(system, mode, ballots), "q", threshold=0.6, basis="eligible").get(timeout=WAIT)
    assert (eligible.decided, eligible.approved, eligible.reason) == (True, False, "threshold not met")


def test_the_vote_is_decided_as_soon_as_the_outcome_cannot_change(
    system: ActorSystem, mode: str, gates: list[Gate]
) -> None:
    held = {"d": Gate(), "e": Gate()}
    gates.extend(held.values())
    refs = voters(system, mode, {"a": True, "b": True, "c": True, "d": False, "e": False}, held)
    result = consensus_vote(refs, "q", threshold=0.6, basis="cast").get(timeout=WAIT)
    assert (result.decided, result.approved, result.reason) == (True, True, "threshold met")
    assert sorted(v for v, _ in result.votes) == ["a", "b", "c"]
    assert sorted(result.missing) == ["d", "e"]


def test_a_vote_open_at_the_deadline_is_undecided_with_the_tallies(
    system: ActorSystem, mode: str, clock: ManualClock, gates: list[Gate]
) -> None:
    held = {"c": Gate(), "d": Gate()}
    gates.extend(held.values())
    refs = voters(system, mode, {"a": True, "b": False, "c": True, "d": False}, held)
    future = consensus_vote(refs, "q", threshold=0.5, basis="cast", deadline=10.0)
    held["c"].wait_entered()
    held["d"].wait_entered()
    for name in ("a", "b"):  # their ballots, and the vote's callbacks on them, came first
        refs[name].ask("ping", timeout=WAIT)
    clock.advance(9.9)
    assert not future.done()  # 1 yes, 1 no, and c and d could still go either way
    clock.advance(0.1)
    result = future.get(timeout=WAIT)
    assert (result.decided, result.approved, result.reason) == (False, False, "deadline")
    assert (result.yes, result.no) == (1, 1)
    assert sorted(result.missing) == ["c", "d"]


def test_without_quorum_nothing_passes_and_failed_voters_are_listed(system: ActorSystem, mode: str) -> None:
    refs = voters(system, mode, {"a": True, "b": True})
    for name in ("c", "d", "e"):
        refs[name] = system.spawn(Echo, lambda _m: "maybe", mode=mode)  # not a ballot
    result = consensus_vote(refs, "q", threshold=0.5, basis="cast", quorum=0.5).get(timeout=WAIT)
    assert (result.decided, result.approved, result.reason) == (True, False, "quorum not met")
    assert sorted(v for v, _ in result.failed) == ["c", "d", "e"]
    assert all(isinstance(e, ValueError) for _, e in result.failed)


def test_weights_count_instead_of_heads(system: ActorSystem, mode: str) -> None:
    refs = voters(system, mode, {"chair": True, "a": False, "b": False})
    result = consensus_vote(refs, "q", threshold=0.5, basis="cast", weights={"chair": 3, "a": 1, "b": 1})
    assert result.get(timeout=WAIT).approved


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"threshold": 0, "basis": "cast"}, r"threshold must be in \(0, 1\]"),
        ({"threshold": 1.5, "basis": "cast"}, r"threshold must be in \(0, 1\]"),
        ({"threshold": 0.5, "basis": "majority"}, "basis must be 'cast'"),
        ({"threshold": 0.5, "basis": "cast", "quorum": 2}, r"quorum must be in \[0, 1\]"),
        ({"threshold": 0.5, "basis": "cast", "weights": {"a": 0}}, "weights must be numbers > 0"),
        ({"threshold": 0.5, "basis": "cast", "weights": {"z": 1}}, "weights must name exactly the participants"),
        ({"threshold": 0.5, "basis": "cast", "deadline": 0}, "deadline must be > 0"),
    ],
)
def test_bad_vote_rules_are_named(system: ActorSystem, kwargs: dict[str, Any], match: str) -> None:
    refs = voters(system, "pooled", {"a": True})
    with pytest.raises(CoordinationInputError, match=match):
        consensus_vote(refs, "q", **kwargs)


def test_a_vote_with_no_participants_is_refused() -> None:
    with pytest.raises(CoordinationInputError, match="at least one participant"):
        consensus_vote({}, "q", threshold=0.5, basis="cast")


ballots = st.sampled_from([Ballot.YES, Ballot.NO, Ballot.ABSTAIN, None])  # None: the voter's ask fails


@given(
    weights=st.lists(st.integers(1, 5), min_size=1, max_size=9),
    votes=st.data(),
    threshold=st.sampled_from([0.1, 0.5, 0.6, 2 / 3, 0.75, 1.0]),
    basis=st.sampled_from(["cast", "eligible"]),
    quorum=st.sampled_from([0.0, 0.3, 0.5, 1.0]),
)
def test_an_early_decision_never_flips_and_the_end_is_always_decided(
    weights: list[int], votes: st.DataObject, threshold: float, basis: str, quorum: float
) -> None:
    names = [f"v{i}" for i in range(len(weights))]
    order = votes.draw(st.permutations(names))
    cast = {name: votes.draw(ballots) for name in names}
    tally = Tally(dict(zip(names, weights, strict=True)), threshold=threshold, basis=basis, quorum=quorum)  # type: ignore[arg-type]
    first: tuple[bool, str] | None = None
    for name in order:
        ballot = cast[name]
        if ballot is None:
            tally.write_off(name)
        else:
            tally.add(name, ballot)
        outcome = tally.outcome()
        if first is None:
            first = outcome
        if first is not None:
            assert outcome is not None
            assert outcome[0] == first[0]
    final = tally.outcome()
    assert final is not None
    yes = sum(w for n, w in zip(names, weights, strict=True) if cast[n] is Ballot.YES)
    no = sum(w for n, w in zip(names, weights, strict=True) if cast[n] is Ballot.NO)
    took_part = sum(w for n, w in zip(names, weights, strict=True) if cast[n] is not None)
    denominator = yes + no if basis == "cast" else sum(weights)
    expected = denominator > 0 and yes >= threshold * denominator - 1e-9 and took_part >= quorum * sum(weights) - 1e-9
    assert final[0] == expected


@given(
    yes=st.integers(0, 5), no=st.integers(0, 5), abstain=st.integers(0, 5), threshold=st.sampled_from([0.5, 0.6, 1.0])
)
def test_over_votes_cast_abstaining_never_changes_the_outcome(
    yes: int, no: int, abstain: int, threshold: float
) -> None:
    def run(abstainers: int) -> bool:
        names = [f"y{i}" for i in range(yes)] + [f"n{i}" for i in range(no)] + [f"a{i}" for i in range(abstainers)]
        if not names:
            return False
        tally = Tally(dict.fromkeys(names, 1), threshold=threshold, basis="cast")
        for name in names:
            tally.add(name, {"y": Ballot.YES, "n": Ballot.NO, "a": Ballot.ABSTAIN}[name[0]])
        outcome = tally.outcome()
        assert outcome is not None
        return outcome[0]

    assert run(abstain) == run(0)
