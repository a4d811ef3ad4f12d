"""The messages a cell interprets itself, and how a turn tells them apart.

A turn looks a message's exact class up in `KINDS` (one dict lookup per
message on the hot path); a class not in it goes to ``on_receive``. A router
never routes these (`actors._core.MESSAGE_KINDS`).
"""

from __future__ import annotations

from pykka.messages import ProxyCall, ProxyGetAttr, ProxySetAttr

from actors._core._pykka import ActorStop
from actors._core.supervision import Terminated
from actors._core.timers import _TimerFired
from actors._core.tracing import Traced

__all__ = ["KINDS", "PROXY", "STOP_MESSAGE", "TERMINATED_MESSAGE", "TIMER", "TRACED", "SelfStop"]

PROXY, STOP_MESSAGE, TIMER, TERMINATED_MESSAGE, TRACED = 1, 2, 3, 4, 5


class SelfStop(ActorStop):
    """`Actor.stop()`: the actor ends itself, a normal exit (a permanent child is restarted)."""


KINDS: dict[type, int] = {
    ProxyCall: PROXY,
    ProxyGetAttr: PROXY,
    ProxySetAttr: PROXY,
    ActorStop: STOP_MESSAGE,
    SelfStop: STOP_MESSAGE,
    _TimerFired: TIMER,
    Terminated: TERMINATED_MESSAGE,
    Traced: TRACED,  # a message sent with tracing on (actors._core.tracing)
}
