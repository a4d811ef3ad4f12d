"""The ResourceManager: bundles, queue order, timeouts, leases, fencing, bad input, in every mode."""

from __future__ import annotations

import contextlib
from typing import Any

import attrs
import pykka
import pytest

from actors import (
    Acquire,
    ActorSystem,
    CancelRequest,
    CoordinationStoppedError,
    GetResourceStatistics,
    KeepAlive,
    Lease,
    LeaseNotHeldError,
    LeasePreempted,
    LeaseRequest,
    ManualClock,
    Release,
    ResourceDeadlockError,
    ResourceManager,
    ResourceRequestError,
    ResourceWaitTimeoutError,
    StaleFencingTokenError,
    ValidateLease,
)
from actors._core import FrozenDict, Future
from actors.testing import ActorTestKit

WAIT = 5.0


@pytest.fixture
def rm(actor_testkit: ActorTestKit, mode: str) -> Any:
    return actor_testkit.spawn(ResourceManager, {"gpu": 4, "llm-api": 100}, mode=mode)


def test_a_bundle_that_fits_is_granted_at_once_with_a_fencing_token(rm: Any) -> None:
    lease = rm.ask(Acquire("a", {"gpu": 1, "llm-api": 10})).future.get(timeout=WAIT)
    assert dict(lease.bundle) == {"gpu": 1, "llm-api": 10}
    assert lease.fencing_token == 1
    usage = rm.ask(GetResourceStatistics()).resources
    assert (usage["gpu"].in_use, usage["llm-api"].in_use) == (1, 10)
    assert usage["gpu"].utilization == 0.25
    assert rm.ask(Release(lease.lease_id, "a")) == 0
    assert rm.ask(GetResourceStatistics()).resources["gpu"].in_use == 0


def test_a_bundle_is_granted_whole_or_not_at_all(rm: Any) -> None:
    big = rm.ask(Acquire("a", {"gpu": 3})).future.get(timeout=WAIT)
    both = rm.ask(Acquire("b", {"gpu": 2, "llm-api": 50}))
    assert not both.future.done()
    assert rm.ask(GetResourceStatistics()).resources["llm-api"].in_use == 0  # nothing held while waiting
    rm.ask(Release(big.lease_id, "a"))
    assert dict(both.future.get(timeout=WAIT).bundle) == {"gpu": 2, "llm-api": 50}


def test_waiting_requests_are_served_by_priority_then_in_arrival_order(rm: Any) -> None:
    hog = rm.ask(Acquire("hog", {"gpu": 4})).future.get(timeout=WAIT)
    low1 = rm.ask(Acquire("low1", {"gpu": 4}, priority=0))
    low2 = rm.ask(Acquire("low2", {"gpu": 4}, priority=0))
    high = rm.ask(Acquire("high", {"gpu": 4}, priority=5))
    order = []
    for request in (low1, low2, high):
        request.future.add_done_callback(lambda f: order.append(f.get().owner))
    rm.ask(Release(hog.lease_id, "hog"))
    lease = high.future.get(timeout=WAIT)
    rm.ask(Release(lease.lease_id, "high"))
    lease = low1.future.get(timeout=WAIT)
    rm.ask(Release(lease.lease_id, "low1"))
    low2.future.get(timeout=WAIT)
    assert order == ["high", "low1", "low2"]


def test_a_waiting_request_holds_up_only_requests_for_the_same_resources(rm: Any) -> None:
    rm.ask(Acquire("hog", {"gpu": 3})).future.get(timeout=WAIT)
    big = rm.ask(Acquire("big", {"gpu": 2}))
    small_gpu = rm.ask(Acquire("small", {"gpu": 1}))  # would fit, but must not overtake "big"
    api = rm.ask(Acquire("api", {"llm-api": 1}))  # unrelated: granted at once
    assert api.future.done()
    assert not big.future.done()
    assert not small_gpu.future.done()


def test_a_request_that_waits_past_its_timeout_fails_clearly(actor_testkit: ActorTestKit, rm: Any) -> None:
    rm.ask(Acquire("hog", {"gpu": 4})).future.get(timeout=WAIT)
    waiting = rm.ask(Acquire("w", {"gpu": 1}, timeout=5))
    actor_testkit.advance(4.9)
    assert not waiting.future.done()
    actor_testkit.advance(0.1)
    with pytest.raises(ResourceWaitTimeoutError, match="not granted within 5 s"):
        waiting.future.get(timeout=WAIT)
    assert rm.ask(GetResourceStatistics()).timed_out == 1


def test_a_lease_expires_after_its_ttl_unless_kept_alive(actor_testkit: ActorTestKit, rm: Any) -> None:
    lease = rm.ask(Acquire("a", {"gpu": 4}, ttl=10)).future.get(timeout=WAIT)
    assert lease.expires_at == 10
    actor_testkit.advance(8)
    renewed = rm.ask(KeepAlive(lease.lease_id, "a"))
    assert renewed.expires_at == 18
    actor_testkit.advance(8)
    assert rm.ask(ValidateLease(lease.lease_id, lease.fencing_token)).owner == "a"
    waiting = rm.ask(Acquire("b", {"gpu": 1}))
    actor_testkit.advance(2)
    successor = waiting.future.get(timeout=WAIT)
    assert successor.fencing_token > lease.fencing_token
    with pytest.raises(StaleFencingTokenError, match="stale"):
        rm.ask(ValidateLease(lease.lease_id, lease.fencing_token))
    with pytest.raises(LeaseNotHeldError):
        rm.ask(KeepAlive(lease.lease_id, "a"))
    assert rm.ask(GetResourceStatistics()).expired == 1


def test_leases_with_ttls_expire_in_deadline_order_and_a_renewed_one_outlives_its_first_deadline(
    actor_testkit: ActorTestKit, rm: Any
) -> None:
    # One timer serves every lease's TTL: leases granted in any order of deadline, released
    # ones (their deadlines stale) and a renewal must each end at their own time.
    long = rm.ask(Acquire("long", {"gpu": 1}, ttl=30)).future.get(timeout=WAIT)
    short = rm.ask(Acquire("short", {"gpu": 1}, ttl=5)).future.get(timeout=WAIT)
    kept = rm.ask(Acquire("kept", {"gpu": 1}, ttl=10)).future.get(timeout=WAIT)
    for _ in range(1100):  # released before their deadline (enough stale entries to compact them)
        gone = rm.ask(Acquire("gone", {"llm-api": 1}, ttl=1)).future.get(timeout=WAIT)
        assert rm.ask(Release(gone.lease_id, "gone")) == 0
    actor_testkit.advance(5)
    with pytest.raises(StaleFencingTokenError):
        rm.ask(ValidateLease(short.lease_id, short.fencing_token))
    assert rm.ask(KeepAlive(kept.lease_id, "kept")).expires_at == 15
    actor_testkit.advance(5)  # t=10: kept's first deadline
    assert rm.ask(ValidateLease(kept.lease_id, kept.fencing_token)).owner == "kept"
    actor_testkit.advance(5)  # t=15
    with pytest.raises(StaleFencingTokenError):
        rm.ask(ValidateLease(kept.lease_id, kept.fencing_token))
    assert rm.ask(ValidateLease(long.lease_id, long.fencing_token)).owner == "long"
    actor_testkit.advance(15)  # t=30
    stats = rm.ask(GetResourceStatistics())
    assert (stats.expired, stats.released, stats.leases, stats.resources["gpu"].in_use) == (3, 1100, 0, 0)


def test_leases_are_reentrant_per_owner(rm: Any) -> None:
    first = rm.ask(Acquire("a", {"gpu": 2})).future.get(timeout=WAIT)
    again = rm.ask(Acquire("a", {"gpu": 2})).future.get(timeout=WAIT)
    assert (again.lease_id, again.fencing_token, again.holds) == (first.lease_id, first.fencing_token, 2)
    assert rm.ask(GetResourceStatistics()).resources["gpu"].in_use == 2
    assert rm.ask(Release(first.lease_id, "a")) == 2  # one hold left
    assert rm.ask(Release(first.lease_id, "a")) == 0
    assert rm.ask(GetResourceStatistics()).resources["gpu"].in_use == 0


def test_an_owner_holding_several_bundles_reenters_each_whatever_the_order_of_its_names(rm: Any) -> None:
    one = rm.ask(Acquire("a", {"gpu": 1, "llm-api": 10})).future.get(timeout=WAIT)
    two = rm.ask(Acquire("a", {"gpu": 2})).future.get(timeout=WAIT)
    again = rm.ask(Acquire("a", {"llm-api": 10, "gpu": 1})).future.get(timeout=WAIT)
    assert (again.lease_id, again.holds) == (one.lease_id, 2)
    assert rm.ask(Release(two.lease_id, "a")) == 0
    fresh = rm.ask(Acquire("a", {"gpu": 2})).future.get(timeout=WAIT)
    assert (fresh.holds, fresh.fencing_token > two.fencing_token) == (1, True)
    assert rm.ask(Acquire("a", {"gpu": 1, "llm-api": 10})).future.get(timeout=WAIT).holds == 3
    assert rm.ask(GetResourceStatistics()).resources["gpu"].in_use == 3


def test_a_lease_is_released_when_its_holder_stops(actor_testkit: ActorTestKit, rm: Any) -> None:
    holder = actor_testkit.probe()
    lease = rm.ask(Acquire("a", {"gpu": 4}, holder=holder.ref)).future.get(timeout=WAIT)
    waiting = rm.ask(Acquire("b", {"gpu": 4}))
    holder.ref.stop()
    assert waiting.future.get(timeout=WAIT).fencing_token > lease.fencing_token
    stats = rm.ask(GetResourceStatistics())
    assert (stats.revoked, stats.leases) == (1, 1)


def test_a_holder_that_released_everything_and_acquires_again_is_still_watched(
    actor_testkit: ActorTestKit, rm: Any
) -> None:
    # A holder left with nothing stays watched (no unwatch and watch again per grant): its
    # next lease must still die with it, and its watch must not count twice.
    holder = actor_testkit.probe()
    for _ in range(3):
        lease = rm.ask(Acquire("a", {"gpu": 4}, holder=holder.ref)).future.get(timeout=WAIT)
        assert rm.ask(Release(lease.lease_id, "a")) == 0
    lease = rm.ask(Acquire("a", {"gpu": 4}, holder=holder.ref)).future.get(timeout=WAIT)
    waiting = rm.ask(Acquire("b", {"gpu": 4}))
    holder.ref.stop()
    assert waiting.future.get(timeout=WAIT).fencing_token > lease.fencing_token
    stats = rm.ask(GetResourceStatistics())
    assert (stats.revoked, stats.released, stats.leases) == (1, 3, 1)


def test_a_waiting_request_is_withdrawn_when_its_holder_stops(actor_testkit: ActorTestKit, rm: Any) -> None:
    rm.ask(Acquire("hog", {"gpu": 4})).future.get(timeout=WAIT)
    holder = actor_testkit.probe()
    waiting = rm.ask(Acquire("a", {"gpu": 1}, holder=holder.ref))
    holder.ref.stop()
    with pytest.raises(pykka.ActorDeadError, match="holder"):
        waiting.future.get(timeout=WAIT)


def test_impossible_requests_are_rejected_at_once_and_the_manager_keeps_serving(rm: Any) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"gpu": 5}, "more than its capacity of 4"),
        ({"tpu": 1}, "no resource 'tpu'"),
        ({"gpu": 0}, "ask for an int > 0"),
        ({"gpu": -1}, "ask for an int > 0"),
        ({"gpu": True}, "ask for an int > 0"),  # equal to 1, and hashed alike: still not a number of units
        ({"gpu": 1.0}, "ask for an int > 0"),
        ({}, "empty"),
    ]
    for bundle, match in cases:
        rm.ask(Acquire("a", {"gpu": 1}))  # the same bundle with 1 unit, granted just before, changes nothing
        with pytest.raises(ResourceRequestError, match=match):
            rm.ask(Acquire("a", bundle))
    with pytest.raises(ResourceRequestError, match="timeout"):
        rm.ask(Acquire("a", {"gpu": 1}, timeout=0))
    with pytest.raises(ResourceRequestError, match="ttl"):
        rm.ask(Acquire("a", {"gpu": 1}, ttl=-1))
    assert rm.ask(GetResourceStatistics()).rejected == 9
    lease = rm.ask(Acquire("a", {"gpu": 1})).future.get(timeout=WAIT)  # reentrant: the one granted in the loop
    assert (lease.fencing_token, lease.holds) == (1, 8)


def test_releasing_twice_or_as_another_owner_is_refused(rm: Any) -> None:
    lease = rm.ask(Acquire("a", {"gpu": 1})).future.get(timeout=WAIT)
    with pytest.raises(LeaseNotHeldError, match="held by 'a'"):
        rm.ask(Release(lease.lease_id, "mallory"))
    rm.ask(Release(lease.lease_id, "a"))
    with pytest.raises(LeaseNotHeldError, match="not held"):
        rm.ask(Release(lease.lease_id, "a"))


def test_a_waiting_request_can_be_cancelled(rm: Any) -> None:
    rm.ask(Acquire("hog", {"gpu": 4})).future.get(timeout=WAIT)
    waiting = rm.ask(Acquire("a", {"gpu": 1}))
    assert rm.ask(CancelRequest(waiting.request_id)) is True
    assert rm.ask(CancelRequest(waiting.request_id)) is False
    with pytest.raises(LeaseNotHeldError, match="cancelled"):
        waiting.future.get(timeout=WAIT)


def test_bad_capacities_are_refused_when_the_manager_is_built(actor_testkit: ActorTestKit) -> None:
    for capacities in ({"gpu": 0}, {"gpu": -2}, {"": 1}, {"gpu": 1.5}):
        with pytest.raises(ResourceRequestError, match="ints > 0"):
            actor_testkit.spawn(ResourceManager, capacities)


def test_waiting_requests_fail_when_the_manager_stops(mode: str) -> None:
    with ActorSystem("rm-stop", clock=ManualClock(), dispatchers=2) as system:
        rm = system.spawn(ResourceManager, {"gpu": 1}, mode=mode)
        rm.ask(Acquire("hog", {"gpu": 1}))
        waiting = rm.ask(Acquire("a", {"gpu": 1}))
        rm.stop()
        with pytest.raises(CoordinationStoppedError):
            waiting.future.get(timeout=WAIT)


def test_a_bad_tell_becomes_a_dead_letter_and_the_manager_keeps_serving(actor_testkit: ActorTestKit, rm: Any) -> None:
    rm.tell("gibberish")
    assert rm.ask(Acquire("a", {"gpu": 1})).future.get(timeout=WAIT).owner == "a"
    assert [letter.message for letter in actor_testkit.system.dead_letters.recent()] == ["gibberish"]


# -- preemption ---------------------------------------------------------------------------------


def test_a_higher_priority_request_preempts_a_preemptible_lease_and_its_holder_is_told(
    rm: Any, actor_testkit: ActorTestKit
) -> None:
    probe = actor_testkit.probe()
    low = rm.ask(Acquire("batch", {"gpu": 3}, holder=probe.ref, preemptible=True)).future.get(timeout=WAIT)
    urgent = rm.ask(Acquire("urgent", {"gpu": 2}, priority=5)).future.get(timeout=WAIT)
    told = probe.expect_message(LeasePreempted)
    assert (told.lease, told.by_owner, told.priority) == (low, "urgent", 5)
    assert urgent.fencing_token > low.fencing_token
    with pytest.raises(StaleFencingTokenError):
        rm.ask(ValidateLease(low.lease_id, low.fencing_token))
    with pytest.raises(LeaseNotHeldError):
        rm.ask(Release(low.lease_id, "batch"))
    stats = rm.ask(GetResourceStatistics())
    assert (stats.preempted, stats.resources["gpu"].in_use) == (1, 2)


def test_only_preemptible_leases_of_a_lower_priority_are_preempted(rm: Any) -> None:
    kept = rm.ask(Acquire("steady", {"gpu": 2}, priority=1)).future.get(timeout=WAIT)  # not preemptible
    peer = rm.ask(Acquire("peer", {"gpu": 2}, priority=5, preemptible=True)).future.get(timeout=WAIT)
    waiting = rm.ask(Acquire("urgent", {"gpu": 1}, priority=5))  # same priority as peer: no preemption
    assert not waiting.future.done()
    assert rm.ask(ValidateLease(kept.lease_id, kept.fencing_token)) == kept
    assert rm.ask(ValidateLease(peer.lease_id, peer.fencing_token)) == peer
    assert rm.ask(GetResourceStatistics()).preempted == 0
    rm.ask(Release(kept.lease_id, "steady"))
    assert dict(waiting.future.get(timeout=WAIT).bundle) == {"gpu": 1}


def test_preemption_revokes_nothing_when_it_would_not_make_the_request_fit(rm: Any) -> None:
    small = rm.ask(Acquire("small", {"gpu": 1}, preemptible=True)).future.get(timeout=WAIT)
    rm.ask(Acquire("big", {"gpu": 3})).future.get(timeout=WAIT)  # not preemptible
    waiting = rm.ask(Acquire("urgent", {"gpu": 2}, priority=9))  # freeing small's 1 gpu is not enough
    assert not waiting.future.done()
    assert rm.ask(ValidateLease(small.lease_id, small.fencing_token)) == small
    assert rm.ask(GetResourceStatistics()).preempted == 0


def test_preemption_takes_the_lowest_priority_then_the_newest_lease_first(rm: Any) -> None:
    old = rm.ask(Acquire("old", {"gpu": 1}, priority=1, preemptible=True)).future.get(timeout=WAIT)
    new = rm.ask(Acquire("new", {"gpu": 1}, priority=1, preemptible=True)).future.get(timeout=WAIT)
    lowest = rm.ask(Acquire("lowest", {"gpu": 1}, priority=0, preemptible=True)).future.get(timeout=WAIT)
    rm.ask(Acquire("fixed", {"gpu": 1})).future.get(timeout=WAIT)
    rm.ask(Acquire("urgent", {"gpu": 2}, priority=3)).future.get(timeout=WAIT)
    alive = []
    for lease in (old, new, lowest):
        with contextlib.suppress(StaleFencingTokenError):
            alive.append(rm.ask(ValidateLease(lease.lease_id, lease.fencing_token)).owner)
    assert alive == ["old"]


# -- wait-for cycles ------------------------------------------------------------------------------


def test_a_wait_for_cycle_fails_its_youngest_request_and_names_the_cycle(rm: Any) -> None:
    a_gpu = rm.ask(Acquire("a", {"gpu": 4})).future.get(timeout=WAIT)
    b_api = rm.ask(Acquire("b", {"llm-api": 100})).future.get(timeout=WAIT)
    a_wants_api = rm.ask(Acquire("a", {"llm-api": 10}))
    assert not a_wants_api.future.done()  # a waits for b: no cycle yet
    b_wants_gpu = rm.ask(Acquire("b", {"gpu": 1}))  # b waits for a: the cycle closes here
    with pytest.raises(ResourceDeadlockError, match=r"wait-for cycle .*owner 'a'.*owner 'b'|owner 'b'.*owner 'a'"):
        b_wants_gpu.future.get(timeout=WAIT)
    assert not a_wants_api.future.done()  # the older request goes on waiting, and is served
    stats = rm.ask(GetResourceStatistics())
    assert (stats.deadlocks, stats.waiting) == (1, 1)
    rm.ask(Release(b_api.lease_id, "b"))
    assert dict(a_wants_api.future.get(timeout=WAIT).bundle) == {"llm-api": 10}
    rm.ask(Release(a_gpu.lease_id, "a"))


def test_a_cycle_through_the_queue_order_is_found_too(rm: Any) -> None:
    rm.ask(Acquire("a", {"gpu": 4})).future.get(timeout=WAIT)
    rm.ask(Acquire("c", {"llm-api": 100})).future.get(timeout=WAIT)
    b_first = rm.ask(Acquire("b", {"gpu": 1, "llm-api": 1}))  # waits for a and c
    a_next = rm.ask(Acquire("a", {"llm-api": 1}))  # queued behind b on llm-api; b needs a's gpu
    with pytest.raises(ResourceDeadlockError):
        a_next.future.get(timeout=WAIT)
    assert not b_first.future.done()


def test_an_owner_waiting_for_units_only_it_holds_is_a_deadlock(rm: Any) -> None:
    rm.ask(Acquire("solo", {"gpu": 4})).future.get(timeout=WAIT)
    with pytest.raises(ResourceDeadlockError, match="solo"):
        rm.ask(Acquire("solo", {"gpu": 1})).future.get(timeout=WAIT)


def test_a_wait_that_ends_by_itself_is_no_deadlock(actor_testkit: ActorTestKit, mode: str) -> None:
    rm = actor_testkit.spawn(ResourceManager, {"gpu": 4, "llm-api": 100}, mode=mode)
    rm.ask(Acquire("a", {"gpu": 4}, ttl=10)).future.get(timeout=WAIT)  # ends by its TTL
    b_api = rm.ask(Acquire("b", {"llm-api": 100})).future.get(timeout=WAIT)
    a_wants_api = rm.ask(Acquire("a", {"llm-api": 1}))
    b_wants_gpu = rm.ask(Acquire("b", {"gpu": 1}))
    c_api = rm.ask(Acquire("c", {"llm-api": 1}, timeout=5))  # timed: it ends by itself too
    assert rm.ask(GetResourceStatistics()).deadlocks == 0
    assert not a_wants_api.future.done()
    assert not b_wants_gpu.future.done()
    assert not c_api.future.done()
    actor_testkit.advance(10)
    assert dict(b_wants_gpu.future.get(timeout=WAIT).bundle) == {"gpu": 1}
    with pytest.raises(ResourceWaitTimeoutError):
        c_api.future.get(timeout=WAIT)
    rm.ask(Release(b_api.lease_id, "b"))
    assert dict(a_wants_api.future.get(timeout=WAIT).bundle) == {"llm-api": 1}


def test_leases_due_at_the_same_instant_all_expire_before_a_waiting_request_is_granted(
    rm: Any, actor_testkit: Any
) -> None:
    # The resource model found it: the first expiry granted the waiting request, which then
    # preempted a preemptible lease due at that same instant (an expiry counted as a preemption).
    rm.ask(Acquire("a", {"gpu": 3, "llm-api": 1}, ttl=5.0)).future.get(timeout=WAIT)
    rm.ask(Acquire("b", {"llm-api": 99}, ttl=5.0, preemptible=True)).future.get(timeout=WAIT)
    waiting = rm.ask(Acquire("c", {"gpu": 2, "llm-api": 3}, priority=1))
    assert not waiting.future.done()  # preempting b would free no gpu: nothing is preempted
    actor_testkit.advance(5)  # a (the older token) expires first, then b at the same instant
    assert dict(waiting.future.get(timeout=WAIT).bundle) == {"gpu": 2, "llm-api": 3}
    stats = rm.ask(GetResourceStatistics())
    assert (stats.expired, stats.preempted) == (2, 0)


def test_statistics_count_each_lease_granted_once_however_it_ended(actor_testkit: ActorTestKit, rm: Any) -> None:
    # `granted` is derived (held + released + expired + revoked + preempted), not counted.
    probe = actor_testkit.probe()
    released = rm.ask(Acquire("r", {"llm-api": 1})).future.get(timeout=WAIT)
    rm.ask(Acquire("r", {"llm-api": 1})).future.get(timeout=WAIT)  # reentry: the same lease, not a grant
    rm.ask(Acquire("ttl", {"llm-api": 1}, ttl=5)).future.get(timeout=WAIT)
    rm.ask(Acquire("dies", {"llm-api": 1}, holder=probe.ref)).future.get(timeout=WAIT)
    rm.ask(Acquire("low", {"gpu": 4}, preemptible=True)).future.get(timeout=WAIT)
    queued = rm.ask(Acquire("high", {"gpu": 1}, priority=1))  # preempts "low"
    queued.future.get(timeout=WAIT)
    assert rm.ask(Release(released.lease_id, "r")) == 1
    assert rm.ask(Release(released.lease_id, "r")) == 0
    actor_testkit.advance(5)
    probe.ref.stop()
    waiter = rm.ask(Acquire("after", {"gpu": 4}))  # granted once "high" is released
    assert rm.ask(Release(queued.future.get(timeout=WAIT).lease_id, "high")) == 0
    waiter.future.get(timeout=WAIT)
    stats = rm.ask(GetResourceStatistics())
    assert (stats.granted, stats.leases) == (6, 1)
    assert (stats.released, stats.expired, stats.revoked, stats.preempted) == (2, 1, 1, 1)


def test_a_request_that_does_not_fit_now_is_checked_as_one_that_does(rm: Any) -> None:
    # The grant-at-once test of `_on_acquire` only looks at plain ints that fit: a request that
    # must wait, or asks for an int subclass, is still checked in full.
    class Units(int):
        pass

    hog = rm.ask(Acquire("hog", {"gpu": 4})).future.get(timeout=WAIT)
    with pytest.raises(ResourceRequestError, match="more than its capacity"):
        rm.ask(Acquire("a", {"gpu": 5}))
    with pytest.raises(ResourceRequestError, match="no resource 'cpu'"):
        rm.ask(Acquire("a", {"gpu": 1, "cpu": 1}))
    with pytest.raises(ResourceRequestError, match="int > 0"):
        rm.ask(Acquire("a", {"llm-api": True}))
    waiting = rm.ask(Acquire("a", {"gpu": Units(2)}))
    assert dict(rm.ask(Acquire("b", {"llm-api": Units(3)})).future.get(timeout=WAIT).bundle) == {"llm-api": 3}
    assert not waiting.future.done()
    rm.ask(Release(hog.lease_id, "hog"))
    assert waiting.future.get(timeout=WAIT).bundle["gpu"] == 2
    assert rm.ask(GetResourceStatistics()).rejected == 3


def test_leases_and_requests_are_attrs_classes_with_their_fields() -> None:
    # Their `__init__`s are written out (resources.py): `attrs.evolve`, equality and hashing hold.
    lease = Lease("lease-1", "a", FrozenDict({"gpu": 1}), 1, 0.0, None)
    assert lease.holds == 1
    again = attrs.evolve(lease, holds=2, expires_at=5.0)
    assert (again.lease_id, again.holds, again.expires_at, again.bundle) == ("lease-1", 2, 5.0, lease.bundle)
    assert lease == Lease(
        lease_id="lease-1", owner="a", bundle=FrozenDict({"gpu": 1}), fencing_token=1, granted_at=0.0, expires_at=None
    )
    assert hash(lease) == hash(attrs.evolve(lease))
    assert lease != again
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        lease.holds = 3  # type: ignore[misc]
    request = LeaseRequest(7, Future())
    assert request.request_id == 7
    assert [f.name for f in attrs.fields(LeaseRequest)] == ["request_id", "future"]
