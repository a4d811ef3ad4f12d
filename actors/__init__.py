"""troupe: an in-process actor runtime for multi-agent systems, built on pykka.

Import everything from here::

    from actors import Actor, ActorSystem

The library logs through loguru and is silent by default (loguru's advice for
libraries); ``from loguru import logger; logger.enable("actors")`` turns it on.
"""

from loguru import logger as _logger

from actors.runtime.actor import MODES, Actor, PooledActor, ThreadActor
from actors.runtime.clock import Clock, ManualClock, MonotonicClock
from actors.runtime.deadletters import DeadLetter, DeadLetterReason, DeadLetters, DeadLetterStatistics
from actors.runtime.errors import (
    AccessDeniedError,
    ActorNameTakenError,
    ConflictError,
    MailboxFullError,
    ModeError,
    NotAnActorError,
    PoolExhaustedError,
    ProtocolError,
    SpawnContextError,
    SystemShutdownError,
    TroupeError,
)
from actors.runtime.future import Future
from actors.runtime.mailbox import BoundedMailbox, FifoMailbox, PriorityMailbox
from actors.runtime.ref import ActorRef
from actors.runtime.system import ActorSystem, default_system
from actors.runtime.timers import Timers

_logger.disable("actors")

__all__ = [
    "MODES",
    "AccessDeniedError",
    "Actor",
    "ActorNameTakenError",
    "ActorRef",
    "ActorSystem",
    "BoundedMailbox",
    "Clock",
    "ConflictError",
    "DeadLetter",
    "DeadLetterReason",
    "DeadLetterStatistics",
    "DeadLetters",
    "FifoMailbox",
    "Future",
    "MailboxFullError",
    "ManualClock",
    "ModeError",
    "MonotonicClock",
    "NotAnActorError",
    "PoolExhaustedError",
    "PooledActor",
    "PriorityMailbox",
    "ProtocolError",
    "SpawnContextError",
    "SystemShutdownError",
    "ThreadActor",
    "Timers",
    "TroupeError",
    "default_system",
]
