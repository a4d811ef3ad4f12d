"""Routers and pools are shared services: a told management message they refuse cannot stop them."""

from __future__ import annotations

from actors import ActorSystem, AddRoutee, DeadLetterReason, GetRoutees, Router
from tests.core.actors_for_tests import WAIT
from tests.routing.test_pool import spawn_pool
from tests.routing.test_router import workers


def test_a_told_management_message_a_router_refuses_is_a_rejected_dead_letter_and_it_serves_on(
    system: ActorSystem, mode: str
) -> None:
    routees = workers(system, mode, 1)
    router = system.spawn(Router, routees, mode=mode)
    bad = AddRoutee(router)  # a router cannot be its own routee
    router.tell(bad)
    assert router.ask(GetRoutees(), timeout=WAIT) == tuple(routees)
    (letter,) = [d for d in system.dead_letters.recent() if d.message == bad]
    assert letter.reason is DeadLetterReason.REJECTED
    assert isinstance(letter.exception, ValueError)


def test_a_told_management_message_a_pool_refuses_is_a_rejected_dead_letter_and_it_serves_on(
    system: ActorSystem, mode: str
) -> None:
    pool = spawn_pool(system, mode, min_size=1)
    (routee,) = workers(system, mode, 1)
    bad = AddRoutee(routee)  # a pool makes its own routees
    pool.tell(bad)
    assert len(pool.ask(GetRoutees(), timeout=WAIT)) == 1
    (letter,) = [d for d in system.dead_letters.recent() if d.message == bad]
    assert letter.reason is DeadLetterReason.REJECTED
