"""A child process for the kill -9 tests: a publish storm (or inbox sends), printing each acknowledgement.

    python -m tests.messaging._storm history|inbox|outbox PATH

Each line on stdout is the id of an entry the store has acknowledged (committed).
The parent kills this process with SIGKILL mid-storm.
"""

from __future__ import annotations

import sys

from actors import Actor, ActorSystem
from actors.messaging import DurableInbox, MessageBroker, MessageHistory, ProducerController
from actors.protocol import AgentMessage, MessageType


class _Sink(Actor):
    def on_receive(self, message: object) -> None:
        pass


def main(kind: str, path: str) -> None:
    with ActorSystem("storm") as system:
        if kind == "history":
            history = system.spawn(MessageHistory, path)
            broker = system.spawn(MessageBroker, history=history)
            broker.subscribe("storm.*", system.spawn(_Sink))
            i = 0
            while True:
                futures = [broker.publish_acked("storm.x", {"n": i + k}) for k in range(50)]
                for k, future in enumerate(futures):
                    future.get(timeout=30)
                    print(i + k, flush=True)
                i += 50
        elif kind == "outbox":
            # A consumer that never grants credit: everything accepted stays in the outbox.
            producer = system.spawn(ProducerController, system.spawn(_Sink), outbox=path)
            i = 0
            while True:
                producer.tell({"n": i})  # returns once committed
                print(i, flush=True)
                i += 1
        else:
            inbox = system.spawn(DurableInbox, path)
            i = 0
            while True:
                message = AgentMessage(sender="s", recipient="r", type=MessageType.TASK_REQUEST, content=i)
                print(inbox.send(message, timeout=30), flush=True)
                i += 1


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
