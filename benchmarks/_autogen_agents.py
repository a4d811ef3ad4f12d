"""The IO benchmark's agent for autogen-core (an optional benchmark dependency).

A module of its own, imported only by the autogen cases: importing
autogen-core takes a while, and its ``message_handler`` resolves the
handler's type hints from this module's globals.
"""

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from autogen_core import AgentId, MessageContext, RoutedAgent, SingleThreadedAgentRuntime, message_handler

__all__ = ["run_io_agents"]


@dataclass(frozen=True)
class Request:
    """One request; the reply is the request itself."""

    number: int


class IOAgent(RoutedAgent):
    """Awaits `io_s` of simulated IO per request."""

    io_s = 0.1

    def __init__(self) -> None:
        super().__init__("waits on simulated IO")

    @message_handler
    async def handle(self, message: Request, ctx: MessageContext) -> Request:
        await asyncio.sleep(self.io_s)
        return message


async def run_io_agents(n: int, io_s: float, clock: Callable[[], float]) -> tuple[float, float]:
    """Send one request to each of `n` agents at once; return (registration s, seconds until every reply)."""
    IOAgent.io_s = io_s
    runtime = SingleThreadedAgentRuntime()
    start = clock()
    await IOAgent.register(runtime, "io", IOAgent)  # agents are created on their first message
    registered = clock() - start
    runtime.start()
    try:
        start = clock()
        replies = await asyncio.gather(*(runtime.send_message(Request(i), AgentId("io", str(i))) for i in range(n)))
        elapsed = clock() - start
        if [reply.number for reply in replies] != list(range(n)):
            msg = f"the autogen agents replied {replies!r}, not each its own request number"
            raise RuntimeError(msg)
    finally:
        await runtime.stop_when_idle()
        await runtime.close()
    return registered, elapsed
