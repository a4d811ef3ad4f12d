"""`ActorSystem.call_later`: the public "call later on the system clock" the patterns' deadlines use."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import pytest

from actors import ActorSystem, ManualClock

if TYPE_CHECKING:
    from collections.abc import Callable


def test_fires_once_at_its_due_time_on_the_system_clock(system: ActorSystem, clock: ManualClock) -> None:
    fired: list[float] = []
    system.call_later(2.0, lambda: fired.append(clock.now()))
    clock.advance(1.999)
    assert fired == []
    clock.advance(0.001)
    assert fired == [pytest.approx(2.0)]
    clock.advance(10.0)
    assert len(fired) == 1


def test_cancel_before_it_fires_and_cancel_again_are_quiet(system: ActorSystem, clock: ManualClock) -> None:
    fired: list[str] = []
    cancel = system.call_later(1.0, lambda: fired.append("a"))
    system.call_later(1.0, lambda: fired.append("b"))
    cancel()
    cancel()
    clock.advance(1.0)
    assert fired == ["b"]


def test_cancel_after_it_fired_does_nothing(system: ActorSystem, clock: ManualClock) -> None:
    fired: list[int] = []
    cancel = system.call_later(0.0, lambda: fired.append(1))
    clock.advance(0.0)
    cancel()
    assert fired == [1]


def test_callbacks_run_in_deadline_order(system: ActorSystem, clock: ManualClock) -> None:
    fired: list[int] = []
    for delay in (3.0, 1.0, 2.0):
        system.call_later(delay, functools.partial(fired.append, int(delay)))
    clock.advance(5.0)
    assert fired == [1, 2, 3]


def test_a_raising_callback_does_not_stop_the_others(system: ActorSystem, clock: ManualClock) -> None:
    fired: list[str] = []

    def boom() -> None:
        raise RuntimeError("boom")

    system.call_later(1.0, boom)
    system.call_later(1.0, lambda: fired.append("after"))
    clock.advance(1.0)
    assert fired == ["after"]


def test_nothing_fires_after_shutdown() -> None:
    clock = ManualClock()
    fired: list[int] = []
    system = ActorSystem("call-later", clock=clock)
    system.call_later(1.0, lambda: fired.append(1))
    system.shutdown()
    clock.advance(2.0)
    assert fired == []
    system.call_later(1.0, lambda: fired.append(2))  # after shutdown: accepted, never fires
    clock.advance(2.0)
    assert fired == []


@pytest.mark.parametrize(
    ("delay", "callback", "error"),
    [(-1.0, lambda: None, ValueError), ("1", lambda: None, TypeError), (1.0, "not callable", TypeError)],
)
def test_bad_arguments_raise_named_errors(
    system: ActorSystem, delay: object, callback: Callable[[], None] | str, error: type[Exception]
) -> None:
    with pytest.raises(error, match=r"delay|callback"):
        system.call_later(delay, callback)  # type: ignore[arg-type]
