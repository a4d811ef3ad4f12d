"""The publish benchmark's subscribers for autogen-core (an optional benchmark dependency).

A module of its own, imported only by the autogen cases (importing
autogen-core takes a while; its ``message_handler`` resolves the handler's
type hints from this module's globals).
"""

import asyncio
import time
from dataclasses import dataclass

from autogen_core import (
    MessageContext,
    RoutedAgent,
    SingleThreadedAgentRuntime,
    TopicId,
    TypeSubscription,
    message_handler,
)

__all__ = ["run_publish"]


@dataclass(frozen=True)
class Note:
    """One publication."""

    number: int


class Counter(RoutedAgent):
    """Counts the publications it receives."""

    received = 0

    def __init__(self) -> None:
        super().__init__("counts publications")

    @message_handler
    async def handle(self, message: Note, ctx: MessageContext) -> None:  # noqa: ARG002 - counts only
        Counter.received += 1


async def _publish(n: int, messages: int) -> float:
    Counter.received = 0
    runtime = SingleThreadedAgentRuntime()
    # n subscribers of one topic: n agent types, each subscribed to the topic (an agent per type and source).
    for i in range(n):
        await Counter.register(runtime, f"sink{i}", Counter)
        await runtime.add_subscription(TypeSubscription(topic_type="bench", agent_type=f"sink{i}"))
    runtime.start()
    topic = TopicId("bench", "default")
    start = time.perf_counter()
    for i in range(messages):
        await runtime.publish_message(Note(i), topic)
    await runtime.stop_when_idle()
    elapsed = time.perf_counter() - start
    await runtime.close()
    if Counter.received != n * messages:
        msg = f"autogen delivered {Counter.received} of {n * messages} publications"
        raise RuntimeError(msg)
    return elapsed


def run_publish(n: int, messages: int) -> float:
    """Publish `messages` to `n` subscribers through autogen-core's runtime; return the seconds taken."""
    return asyncio.run(_publish(n, messages))
