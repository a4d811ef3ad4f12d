"""The coordinator and the resource manager are shared services: a bad told request cannot stop them."""

from __future__ import annotations

from typing import Any

from actors import (
    Acquire,
    AgentDescriptor,
    AgentRegistrationError,
    Coordinator,
    DeadLetterReason,
    GetCoordinationStatistics,
    GetResourceStatistics,
    LeaseNotHeldError,
    Register,
    Release,
    ResourceManager,
)
from actors.testing import ActorTestKit
from tests.coordination.agents_for_tests import Echo

WAIT = 5.0


def _rejected(kit: ActorTestKit) -> list[tuple[Any, type[BaseException]]]:
    return [
        (d.message, type(d.exception))
        for d in kit.system.dead_letters.recent()
        if d.reason is DeadLetterReason.REJECTED and d.exception is not None
    ]


def test_a_told_request_the_coordinator_refuses_is_a_rejected_dead_letter_and_it_serves_on(
    actor_testkit: ActorTestKit, mode: str
) -> None:
    coord = actor_testkit.spawn(Coordinator, mode=mode)
    ref = actor_testkit.spawn(Echo, "e1")
    coord.ask(Register(ref, AgentDescriptor("echo/a")), timeout=WAIT)
    twice = Register(ref, AgentDescriptor("echo/b"))
    coord.tell(twice)  # one actor cannot hold two agent ids: refused
    coord.tell("gibberish")
    assert coord.ask(GetCoordinationStatistics(), timeout=WAIT) is not None
    assert [m for m, _ in _rejected(actor_testkit)] == [twice, "gibberish"]
    assert _rejected(actor_testkit)[0][1] is AgentRegistrationError


def test_a_told_request_the_resource_manager_refuses_is_a_rejected_dead_letter_and_it_serves_on(
    actor_testkit: ActorTestKit, mode: str
) -> None:
    rm = actor_testkit.spawn(ResourceManager, {"gpu": 2}, mode=mode)
    bad = Release("no-such-lease", "nobody")
    rm.tell(bad)
    lease = rm.ask(Acquire("a", {"gpu": 1}), timeout=WAIT).future.get(timeout=WAIT)
    assert rm.ask(GetResourceStatistics(), timeout=WAIT).resources["gpu"].in_use == 1
    assert rm.ask(Release(lease.lease_id, "a"), timeout=WAIT) == 0
    assert _rejected(actor_testkit) == [(bad, LeaseNotHeldError)]
