"""A plain `Router` under `Admission` limits (what a `Pool` builds on), in every execution mode.

The pool's tests cover growing, draining and failing routees; these cover
the limits alone: a router that cannot grow refuses what finds no room (or
lets it wait, in order, up to its queue), with the error that says what to do.
"""

from __future__ import annotations

from typing import Any

import pytest

from actors import Actor, ActorSystem, Admission, GetStatistics, NoRouteeError, Router
from tests.core.actors_for_tests import WAIT, Gate


class Holder(Actor):
    """Replies with the message; holds a `Gate` (then replies "held")."""

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Gate):
            return message.hold_then(lambda: "held")
        return message


def held_router(system: ActorSystem, mode: str, admission: Admission) -> tuple[Any, Gate, Any]:
    """A router over one routee, with that routee held at a gate (one message in flight)."""
    router = system.spawn(Router, [system.spawn(Holder, mode=mode)], mode=mode, admission=admission)
    gate = Gate()
    held = router.ask(gate, block=False)
    gate.wait_entered()
    return router, gate, held


def test_a_router_at_its_limit_refuses_asks_and_tells_with_what_to_do(system: ActorSystem, mode: str) -> None:
    router, gate, held = held_router(system, mode, Admission(max_concurrent=1))
    try:
        with pytest.raises(NoRouteeError, match=r"1 messages in flight and 0 wait; retry later or raise its limits"):
            router.ask("one too many")
        with pytest.raises(NoRouteeError):
            router.tell("told too")
        assert router.ask(GetStatistics(), timeout=WAIT).routees[0].active == 1
    finally:
        gate.released.set()
    assert held.get(timeout=WAIT) == "held"
    assert router.ask("room again", timeout=WAIT) == "room again"


def test_a_router_with_a_queue_keeps_waiting_messages_in_order_up_to_its_capacity(
    system: ActorSystem, mode: str
) -> None:
    router, gate, held = held_router(system, mode, Admission(max_concurrent=1, queue_capacity=2))
    try:
        waiting = [router.ask(f"queued-{i}", block=False) for i in range(2)]
        with pytest.raises(NoRouteeError, match="2 wait"):
            router.ask("third")
        assert router.ask(GetStatistics(), timeout=WAIT).waiting == 2
        assert not any(w.done() for w in waiting)
    finally:
        gate.released.set()
    assert held.get(timeout=WAIT) == "held"
    assert [w.get(timeout=WAIT) for w in waiting] == ["queued-0", "queued-1"]
    statistics = router.ask(GetStatistics(), timeout=WAIT)
    assert (statistics.waiting, statistics.processed) == (0, 3)
