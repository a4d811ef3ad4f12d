"""Dead letters: the statistics snapshot is immutable all the way down, hashable, equal when equal."""

from __future__ import annotations

import pytest
from pykka import ActorDeadError

from actors import ActorSystem, DeadLetterReason, DeadLetterStatistics
from actors._core import FrozenDict
from tests.core.actors_for_tests import Recorder


def test_dead_letter_statistics_are_immutable_hashable_and_equal_when_equal(system: ActorSystem, mode: str) -> None:
    dead = system.spawn(Recorder, mode=mode)
    dead.stop()
    with pytest.raises(ActorDeadError):
        dead.tell("lost")
    stats = system.dead_letters.statistics()

    assert isinstance(stats.by_reason, FrozenDict)
    assert stats.by_reason == {DeadLetterReason.RECIPIENT_STOPPED: 1}
    with pytest.raises(TypeError):
        stats.by_reason[DeadLetterReason.RECIPIENT_STOPPED] = 2  # type: ignore[index]  # immutable: the point
    with pytest.raises(AttributeError):
        stats.by_reason.clear()  # type: ignore[attr-defined]  # immutable: the point
    again = system.dead_letters.statistics()
    assert again == stats
    assert hash(again) == hash(stats)
    assert {stats, again} == {stats}

    with pytest.raises(ActorDeadError):
        dead.tell("lost again")
    later = system.dead_letters.statistics()
    assert later != stats
    assert later.by_reason == {DeadLetterReason.RECIPIENT_STOPPED: 2}
    assert stats.by_reason == {DeadLetterReason.RECIPIENT_STOPPED: 1}  # the old snapshot did not move


def test_a_snapshot_built_from_a_plain_dict_freezes_it() -> None:
    counts = {DeadLetterReason.MAILBOX_OVERFLOW: 3}
    stats = DeadLetterStatistics(total=3, by_reason=counts)
    counts[DeadLetterReason.MAILBOX_OVERFLOW] = 4
    assert isinstance(stats.by_reason, FrozenDict)
    assert stats == DeadLetterStatistics(total=3, by_reason=FrozenDict({DeadLetterReason.MAILBOX_OVERFLOW: 3}))
    assert hash(stats) == hash(DeadLetterStatistics(3, FrozenDict({DeadLetterReason.MAILBOX_OVERFLOW: 3})))
