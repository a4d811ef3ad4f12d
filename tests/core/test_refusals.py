"""`Actor.refusals`: a told request an actor refuses is a dead letter, not the actor's failure.

The shared-service rule (README, "Shared services"): a bad request is
answered with an error to an asker and, told, recorded as a ``REJECTED``
dead letter with the exception and a log line; the actor serves on. Any
other exception of a tell's handler still fails the actor, as in pykka.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import pytest
from pykka import ActorDeadError

from actors import Actor, ActorSystem, DeadLetterReason
from actors._core.future import Receipt
from tests.conftest import LogRecords
from tests.core.actors_for_tests import WAIT


class RefusedRequestError(LookupError):
    """What the test service raises to refuse a request."""


class _Service(Actor):
    refusals: ClassVar[tuple[type[BaseException], ...]] = (RefusedRequestError,)

    def __init__(self) -> None:
        super().__init__()
        self.handled: list[Any] = []

    def on_receive(self, message: Any) -> Any:
        if message == "refuse":
            msg = "this request is refused"
            raise RefusedRequestError(msg)
        if message == "bug":
            msg = "the service's own bug"
            raise ZeroDivisionError(msg)
        if message == "handled":
            return list(self.handled)
        self.handled.append(message)
        return message


class _AsyncService(_Service):
    async def _later(self, message: Any) -> Any:
        await asyncio.sleep(0)
        return super().on_receive(message)

    def on_receive(self, message: Any) -> Any:
        if message == "handled":
            return list(self.handled)
        return self._later(message)


def test_a_told_request_the_actor_refuses_is_a_rejected_dead_letter_and_it_serves_on(
    system: ActorSystem, mode: str, logs: LogRecords
) -> None:
    service = system.spawn(_Service, mode=mode)
    service.tell("before")
    service.tell("refuse")
    service.tell("after")
    assert service.ask("handled", timeout=WAIT) == ["before", "after"]
    (letter,) = system.dead_letters.recent()
    assert letter.message == "refuse"
    assert letter.reason is DeadLetterReason.REJECTED
    assert isinstance(letter.exception, RefusedRequestError)
    assert any("rejected told message" in line for line in logs.messages("WARNING"))


def test_an_asked_request_the_actor_refuses_reaches_the_asker_and_it_serves_on(system: ActorSystem, mode: str) -> None:
    service = system.spawn(_Service, mode=mode)
    with pytest.raises(RefusedRequestError):
        service.ask("refuse", timeout=WAIT)
    assert service.ask("x", timeout=WAIT) == "x"
    assert system.dead_letters.count == 0


def test_a_told_request_with_a_receipt_that_is_refused_reports_it_on_the_receipt(
    system: ActorSystem, mode: str
) -> None:
    service = system.spawn(_Service, mode=mode)
    receipt: Receipt[Any] = Receipt()
    service._post_tell("refuse", receipt)
    with pytest.raises(RefusedRequestError):
        receipt.get(timeout=WAIT)
    assert service.ask("x", timeout=WAIT) == "x"
    assert [d.reason for d in system.dead_letters.recent()] == [DeadLetterReason.REJECTED]


def test_any_other_exception_of_a_told_message_still_fails_the_actor(system: ActorSystem, mode: str) -> None:
    service = system.spawn(_Service, mode=mode)
    service.tell("bug")
    with pytest.raises(ActorDeadError):
        service.ask("x", timeout=WAIT)
    reasons = [letter.reason for letter in system.dead_letters.recent() if letter.message == "bug"]
    assert reasons == [DeadLetterReason.HANDLER_FAILED]


def test_a_coroutine_handler_of_a_tell_that_refuses_is_a_dead_letter_and_the_actor_serves_on(
    system: ActorSystem,
) -> None:
    service = system.spawn(_AsyncService, mode="asyncio")
    service.tell("refuse")
    service.tell("after")
    assert service.ask("handled", timeout=WAIT) == ["after"]
    (letter,) = system.dead_letters.recent()
    assert letter.reason is DeadLetterReason.REJECTED
    service.tell("bug")
    with pytest.raises(ActorDeadError):
        service.ask("x", timeout=WAIT)
