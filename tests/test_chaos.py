"""The chaos suite: crashes, give-ups and shutdowns under load, seeded and bounded to seconds; nothing is lost.

Each case runs a scenario of `benchmarks.chaos` (the long version is
``python -m benchmarks --only chaos``) in every mode and checks the count:
every ask resolved (a result, the error, or ActorDeadError) and every tell
handled, refused to its sender, or a dead letter, none twice; for the
StateStore storm, every acknowledged write is in the database opened again.
"""

from __future__ import annotations

import pytest

from benchmarks.chaos import (
    Ledger,
    crashes_behind,
    kill9_storm,
    router_stop_with_management_asks,
    shutdown_under_load,
    state_storm,
)

SEEDS = (1, 2)


def assert_nothing_lost(ledger: Ledger) -> None:
    assert ledger.unresolved == 0
    assert ledger.lost_tells == 0
    assert ledger.twice == 0
    assert ledger.sent == ledger.resolved + len(ledger.sent_tells)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", ["pool", "router"])
def test_supervised_crashes_behind_a_pool_or_a_router_until_it_gives_up_lose_nothing(
    mode: str, kind: str, seed: int
) -> None:
    ledger = crashes_behind(kind, mode, tasks=2_000, crash_rate=0.02, seed=seed)
    assert ledger.crashes, "no task crashed: the scenario tested nothing"
    # The supervisor gave up part-way: some work was refused or dead-lettered, none lost.
    assert ledger.dead or ledger.refused
    assert_nothing_lost(ledger)


@pytest.mark.parametrize("seed", SEEDS)
def test_a_shutdown_while_8_threads_tell_and_ask_loses_nothing_round_after_round(mode: str, seed: int) -> None:
    ledger = shutdown_under_load(mode, rounds=3, per_thread=300, seed=seed)
    assert ledger.handled
    assert_nothing_lost(ledger)


@pytest.mark.parametrize("seed", SEEDS)
def test_a_router_stopped_with_management_asks_queued_answers_every_one(mode: str, seed: int) -> None:
    ledger = router_stop_with_management_asks(mode, rounds=3, per_thread=200, seed=seed)
    assert ledger.resolved == ledger.sent
    assert_nothing_lost(ledger)


def test_every_acknowledged_state_store_write_survives_a_shutdown_mid_storm(mode: str) -> None:
    result = state_storm(mode, rounds=2, per_writer=200, seed=5)
    assert result.acknowledged
    assert result.unresolved == 0
    assert result.missing == 0


def test_every_acknowledged_state_store_write_survives_kill_9_of_the_writer_process_again_and_again(
    mode: str,
) -> None:
    result = kill9_storm(mode, kills=2, acks=300, seed=7)
    assert result.kills == 2
    assert result.acknowledged >= 300
    assert result.missing == 0
