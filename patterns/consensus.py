"""Consensus vote: ask participants a question, decide by a threshold, as early as the outcome is fixed.

    result = consensus_vote(agents, Proposal("ship it?"), threshold=0.6, basis="cast", quorum=0.5,
                            deadline=30.0).get()
    result.decided, result.approved, result.yes, result.no, result.abstain, result.votes

Rules, stated explicitly (no default guesses; see `Tally`):

- **threshold** in (0, 1]: the motion passes when ``yes / denominator >= threshold``.
- **basis** is required: ``"cast"`` (the denominator is yes + no: abstentions
  are kept out of it, so abstaining never flips a vote) or ``"eligible"``
  (the denominator is every eligible voter's weight, voted or not).
- **quorum** in [0, 1]: the fraction of eligible weight that must take part
  (yes, no or abstain) for any decision to pass; quorum and threshold are
  separate rules (cw-plus #180).
- **weights**: voter -> weight > 0 (default 1 each).
- **early decision**: the vote ends as soon as no remaining ballot can change
  the outcome; once decided it never flips (a property test checks it).
- **deadline** (seconds of the voters' system clock): a vote still open then
  ends with ``decided=False`` and the tallies as they were.

A participant is asked the question (any message) and replies with a
`Ballot`, or True (yes), False (no) or None (abstain). A participant whose ask
fails, or who replies with anything else, casts no ballot; the result lists
it with the error. The result lists each ballot, in arrival order.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable, Mapping
from typing import Any, Literal

import attrs

from actors import ActorRef, CoordinationInputError, Future, TroupeInternalError

__all__ = ["Ballot", "Tally", "VoteResult", "consensus_vote"]

Basis = Literal["cast", "eligible"]

_EPSILON = 1e-12
"""Weight left below which every voter counts as heard (weights are floats)."""


class Ballot(enum.StrEnum):
    """What a participant votes."""

    YES = "yes"
    NO = "no"
    ABSTAIN = "abstain"

    @classmethod
    def of(cls, reply: Any) -> Ballot:
        """Return the ballot a reply stands for: a Ballot, True, False, None, or its name."""
        if isinstance(reply, Ballot):
            return reply
        if reply is True:
            return cls.YES
        if reply is False:
            return cls.NO
        if reply is None:
            return cls.ABSTAIN
        if isinstance(reply, str):
            return cls(reply)
        msg = f"a vote reply must be a Ballot, True (yes), False (no) or None (abstain), got {reply!r}"
        raise CoordinationInputError(msg)


@attrs.frozen
class VoteResult:
    """How a vote ended.

    Attributes:
        decided: whether the outcome was fixed (False: the deadline came first).
        approved: the outcome (False when undecided).
        reason: "threshold met", "threshold not met", "quorum not met" or "deadline".
        yes, no, abstain: weights of each ballot.
        eligible: the eligible voters' total weight.
        votes: (voter, ballot) in arrival order.
        failed: (voter, error) for participants whose ask failed or whose reply was not a ballot.
        missing: voters with no ballot and no error at the end.
    """

    decided: bool
    approved: bool
    reason: str
    yes: float
    no: float
    abstain: float
    eligible: float
    votes: tuple[tuple[str, Ballot], ...]
    failed: tuple[tuple[str, BaseException], ...]
    missing: tuple[str, ...]


def _check_rules(threshold: float, basis: str, quorum: float) -> None:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold <= 1:
        msg = f"consensus threshold must be in (0, 1], got {threshold!r}"
        raise CoordinationInputError(msg)
    if basis not in ("cast", "eligible"):
        msg = f"consensus basis must be 'cast' (yes / (yes + no)) or 'eligible' (yes / all voters), got {basis!r}"
        raise CoordinationInputError(msg)
    if isinstance(quorum, bool) or not isinstance(quorum, (int, float)) or not 0 <= quorum <= 1:
        msg = f"consensus quorum must be in [0, 1], got {quorum!r}"
        raise CoordinationInputError(msg)


class Tally:
    """The counting rules of a vote, without actors: add ballots, ask whether the outcome is fixed.

    Not thread-safe: `consensus_vote` guards it with a lock.
    """

    def __init__(self, weights: Mapping[str, float], *, threshold: float, basis: Basis, quorum: float = 0.0) -> None:
        _check_rules(threshold, basis, quorum)
        if not weights:
            msg = "a vote needs at least one eligible voter; got none"
            raise CoordinationInputError(msg)
        for voter, weight in weights.items():
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight > 0:
                msg = f"voter {voter!r} has weight {weight!r}; weights must be numbers > 0"
                raise CoordinationInputError(msg)
        self.weights = dict(weights)
        self.threshold = threshold
        self.basis = basis
        self.quorum = quorum
        self.eligible = float(sum(self.weights.values()))
        self.yes = self.no = self.abstain = 0.0
        # Invariant: the weight of eligible voters who have not voted (and not been written off).
        self.remaining = self.eligible
        self.votes: list[tuple[str, Ballot]] = []
        self._voted: set[str] = set()

    def add(self, voter: str, ballot: Ballot) -> None:
        """Count `voter`'s ballot (a second ballot from the same voter, or from a stranger, is refused)."""
        if voter not in self.weights:
            msg = f"{voter!r} is not an eligible voter"
            raise CoordinationInputError(msg)
        if voter in self._voted:
            msg = f"voter {voter!r} has voted already"
            raise CoordinationInputError(msg)
        self._voted.add(voter)
        weight = self.weights[voter]
        self.remaining -= weight
        if ballot is Ballot.YES:
            self.yes += weight
        elif ballot is Ballot.NO:
            self.no += weight
        else:
            self.abstain += weight
        self.votes.append((voter, ballot))

    def write_off(self, voter: str) -> None:
        """`voter` will cast no ballot (its ask failed): its weight can no longer change the outcome."""
        if voter in self.weights and voter not in self._voted:
            self._voted.add(voter)
            self.remaining -= self.weights[voter]

    def _passes(self, yes: float, no: float) -> bool:
        denominator = yes + no if self.basis == "cast" else self.eligible
        # A small tolerance: weights are floats, and 0.6 * 5 must pass with 3 of 5.
        return denominator > 0 and yes >= self.threshold * denominator - 1e-9

    def _quorum_met(self, participated: float) -> bool:
        return participated >= self.quorum * self.eligible - 1e-9

    def outcome(self) -> tuple[bool, str] | None:
        """Return (approved, reason) once no remaining ballot can change it, else None."""
        remaining = max(self.remaining, 0.0)
        participated = self.yes + self.no + self.abstain
        # The extremes of what the remaining voters can do: all yes, or all no.
        can_pass = self._passes(self.yes + remaining, self.no) and self._quorum_met(participated + remaining)
        must_pass = self._passes(self.yes, self.no + remaining) and self._quorum_met(participated)
        if self.basis == "cast" and remaining > 0 and self.yes + self.no == 0:
            must_pass = False  # everyone left may abstain: no ballot cast, nothing passes
        if must_pass:
            return True, "threshold met"
        if not can_pass:
            if not self._quorum_met(participated + remaining):
                return False, "quorum not met"
            return False, "threshold not met"
        if remaining <= _EPSILON:  # everyone has voted: both bounds agree (kept for float safety)
            return self._passes(self.yes, self.no) and self._quorum_met(participated), "all voted"
        return None


def consensus_vote(
    participants: Mapping[str, ActorRef[Any]],
    question: Any,
    *,
    threshold: float,
    basis: Basis,
    quorum: float = 0.0,
    weights: Mapping[str, float] | None = None,
    deadline: float | None = None,
) -> Future[VoteResult]:
    """Ask every participant `question`; return a future of the `VoteResult` (see the module docs).

    Raises:
        CoordinationInputError: no participants, a threshold outside (0, 1],
            a basis other than "cast"/"eligible", a quorum outside [0, 1],
            a weight <= 0 or for a stranger, a deadline <= 0.
    """
    if not participants:
        msg = "consensus_vote needs at least one participant; got none"
        raise CoordinationInputError(msg)
    weights = dict(weights) if weights is not None else dict.fromkeys(participants, 1.0)
    strangers = [v for v in weights if v not in participants]
    unweighted = [v for v in participants if v not in weights]
    if strangers or unweighted:
        msg = f"consensus_vote weights must name exactly the participants: extra {strangers}, missing {unweighted}"
        raise CoordinationInputError(msg)
    if deadline is not None and not deadline > 0:
        msg = f"consensus_vote deadline must be > 0 seconds or None, got {deadline!r}"
        raise CoordinationInputError(msg)
    tally = Tally(weights, threshold=threshold, basis=basis, quorum=quorum)
    return _Vote(dict(participants), question, tally, deadline).start()


class _Vote:
    def __init__(
        self, participants: dict[str, ActorRef[Any]], question: Any, tally: Tally, deadline: float | None
    ) -> None:
        self.participants = participants
        self.question = question
        self.tally = tally
        self.deadline = deadline
        self.future: Future[VoteResult] = Future()
        self._lock = threading.Lock()
        self._failed: list[tuple[str, BaseException]] = []
        self._done = False
        self._timer: Callable[[], None] | None = None

    def start(self) -> Future[VoteResult]:
        if self.deadline is not None:
            system = next(iter(self.participants.values())).actor_system
            self._timer = system.call_later(self.deadline, self._expire)
        for voter, ref in self.participants.items():
            future = ref.ask(self.question, block=False)
            future.add_done_callback(lambda f, voter=voter: self._ballot(voter, f))
        return self.future

    def _ballot(self, voter: str, future: Any) -> None:
        try:
            ballot: Ballot | None = Ballot.of(future.get())
            error: BaseException | None = None
        except Exception as exc:  # noqa: BLE001 - listed in the result
            ballot, error = None, exc
        with self._lock:
            if self._done:
                return
            if error is None and ballot is not None:
                self.tally.add(voter, ballot)
            else:
                self.tally.write_off(voter)
                self._failed.append((voter, error or TroupeInternalError("a vote with neither ballot nor error")))
            outcome = self.tally.outcome()
            if outcome is None:
                return
            result = self._result(decided=True, approved=outcome[0], reason=outcome[1])
        self._settle(result)

    def _expire(self) -> None:
        with self._lock:
            if self._done:
                return
            result = self._result(decided=False, approved=False, reason="deadline")
        self._settle(result)

    def _result(self, *, decided: bool, approved: bool, reason: str) -> VoteResult:
        # Called with _lock held; ends the vote.
        self._done = True
        tally = self.tally
        answered = {v for v, _ in tally.votes} | {v for v, _ in self._failed}
        return VoteResult(
            decided=decided,
            approved=approved,
            reason=reason,
            yes=tally.yes,
            no=tally.no,
            abstain=tally.abstain,
            eligible=tally.eligible,
            votes=tuple(tally.votes),
            failed=tuple(self._failed),
            missing=tuple(v for v in self.participants if v not in answered),
        )

    def _settle(self, result: VoteResult) -> None:
        if self._timer is not None:
            self._timer()
        self.future.set(result)
